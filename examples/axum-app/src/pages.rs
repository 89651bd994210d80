//! The HTML: server-rendered pages with plain forms and one small stylesheet, no
//! script. Everything that comes from a visitor or the store (usernames, device
//! labels, user agents, sign-in methods) is escaped.

use std::fmt::Write as _;
use std::time::Duration;

use axum::response::Html;
use sessiondb::{Factor, Session, Timestamp};

use crate::Config;
use crate::device::{Client, label_from_user_agent};
use crate::session::SignedIn;

/// The stylesheet, served at `/app.css`.
pub const CSS: &str = r#"
:root { --ink: #1d2330; --muted: #5f6b7a; --line: #dde3ea; --accent: #2457d6; --bad: #b42318; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #f4f6f9; }
header { background: #1d2330; color: #fff; padding: 14px 32px; display: flex; align-items: center;
         justify-content: space-between; }
header .brand { font-weight: 700; letter-spacing: .2px; }
header .who { color: #c9d2de; font-size: 14px; }
main { max-width: 920px; margin: 28px auto; padding: 0 24px; }
h1 { font-size: 24px; margin: 0 0 6px; }
p.lead { color: var(--muted); margin: 0 0 20px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px;
        margin-bottom: 14px; }
.card.narrow { max-width: 400px; margin: 40px auto; }
.device { display: flex; justify-content: space-between; gap: 18px; align-items: flex-start; }
.device.current { border-color: var(--accent); box-shadow: 0 0 0 1px var(--accent) inset; }
.device h2 { font-size: 17px; margin: 0 0 4px; }
.badge { display: inline-block; font-size: 12px; font-weight: 600; color: #fff; background: var(--accent);
         border-radius: 999px; padding: 1px 9px; margin-left: 8px; vertical-align: 2px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0 0;
     font-size: 14px; }
dt { color: var(--muted); }
dd { margin: 0; }
.rel { color: var(--muted); }
code { font: 13px ui-monospace, "DejaVu Sans Mono", monospace; background: #eef1f5; padding: 1px 5px;
       border-radius: 4px; }
form.inline { display: inline; margin: 0; }
button, a.button { font: inherit; font-size: 14px; border-radius: 7px; padding: 7px 14px;
         cursor: pointer; border: 1px solid var(--line); background: #fff; color: var(--ink);
         white-space: nowrap; text-decoration: none; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; width: 100%;
                 padding: 9px 14px; }
button.danger { color: var(--bad); border-color: #f0c6c2; }
.actions { display: flex; gap: 10px; margin: 18px 0 8px; }
label { display: block; font-size: 14px; color: var(--muted); margin: 12px 0 4px; }
input[type=text], input[type=password] { width: 100%; font: inherit; padding: 8px 10px;
         border: 1px solid #c5cdd8; border-radius: 7px; }
.error { color: var(--bad); background: #fdf0ef; border: 1px solid #f0c6c2; border-radius: 7px;
         padding: 8px 12px; margin: 10px 0; font-size: 14px; }
.foot { color: var(--muted); font-size: 14px; margin-top: 16px; text-align: center; }
.settings { font-size: 14px; color: var(--muted); }
"#;

/// `s` with `&`, `<`, `>`, `"` and `'` escaped, safe in text and in quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body`; `who` is the signed-in user shown in the header.
fn layout(title: &str, who: Option<&str>, body: &str) -> Html<String> {
    let who = who
        .map(|u| {
            format!(
                r#"<span class="who">Signed in as <b>{}</b></span>"#,
                escape(u)
            )
        })
        .unwrap_or_default();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · sessiondb example</title>
<link rel="stylesheet" href="/app.css"></head>
<body><header><span class="brand">sessiondb example app</span>{who}</header>
<main>{body}</main></body></html>"#,
        title = escape(title),
    ))
}

/// A page with a heading and one sentence (errors, 403, 404).
pub fn message(title: &str, text: &str) -> Html<String> {
    let body = format!(
        r#"<div class="card narrow"><h1>{}</h1><p>{}</p><p><a href="/">Home</a></p></div>"#,
        escape(title),
        escape(text)
    );
    layout(title, None, &body)
}

/// The login form.
pub fn login(csrf: &str, error: Option<&str>, username: &str) -> Html<String> {
    credentials_page(
        "Log in",
        "/login",
        csrf,
        error,
        username,
        r#"No account yet? <a href="/signup">Sign up</a>"#,
    )
}

/// The sign-up form.
pub fn signup(csrf: &str, error: Option<&str>, username: &str) -> Html<String> {
    credentials_page(
        "Sign up",
        "/signup",
        csrf,
        error,
        username,
        r#"Have an account? <a href="/login">Log in</a>"#,
    )
}

fn credentials_page(
    title: &str,
    action: &str,
    csrf: &str,
    error: Option<&str>,
    username: &str,
    foot: &str,
) -> Html<String> {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e)))
        .unwrap_or_default();
    let autocomplete = if action == "/signup" {
        "new-password"
    } else {
        "current-password"
    };
    let body = format!(
        r#"<div class="card narrow"><h1>{title}</h1>{error}
<form method="post" action="{action}" id="credentials">
<input type="hidden" name="csrf" value="{csrf}">
<label for="username">Username</label>
<input type="text" id="username" name="username" value="{username}" autocomplete="username" required>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="{autocomplete}" required>
<p><button class="primary" type="submit" id="submit">{title}</button></p>
</form><p class="foot">{foot}</p></div>"#,
        title = escape(title),
        csrf = escape(csrf),
        username = escape(username),
    );
    layout(title, None, &body)
}

/// The change-password form. `ask`: the session did not sign in recently, so the
/// current password is asked for too.
pub fn password(me: &SignedIn, csrf: &str, ask: bool, error: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e)))
        .unwrap_or_default();
    let current = if ask {
        r#"<p class="lead" id="reauth">You signed in a while ago: confirm it is you.</p>
<label for="current">Current password</label>
<input type="password" id="current" name="current" autocomplete="current-password" required>
"#
    } else {
        ""
    };
    let body = format!(
        r#"<div class="card narrow"><h1>Change password</h1>{error}
<form method="post" action="/password" id="change-password">
<input type="hidden" name="csrf" value="{csrf}">
{current}<label for="new">New password</label>
<input type="password" id="new" name="new" autocomplete="new-password" required>
<p><button class="primary" type="submit" id="submit">Change password</button></p>
</form><p class="foot">Every other device is signed out when it is changed.
<a href="/devices">Back to your devices</a></p></div>"#,
        csrf = escape(csrf),
    );
    layout("Change password", Some(me.user.as_str()), &body)
}

/// The devices page: the signed-in user's sessions, this one first and marked.
pub fn devices(
    config: &Config,
    me: &SignedIn,
    sessions: &[Session],
    csrf: &str,
    now: Timestamp,
) -> Html<String> {
    let csrf = escape(csrf);
    let mut ordered: Vec<&Session> = sessions.iter().collect();
    // This device first, then the others newest first.
    ordered.sort_by_key(|s| (s.id() != me.session.id(), std::cmp::Reverse(s.created_at())));
    let mut cards = String::new();
    for s in ordered {
        let this = s.id() == me.session.id();
        // Browser and system from the User-Agent the device last reported; a session
        // without one (made before devices were recorded) shows its label.
        let client = s.user_agent().map(Client::parse).unwrap_or_default();
        let label = escape(&match s.user_agent() {
            Some(ua) => label_from_user_agent(Some(ua)),
            None => s.label().unwrap_or("Unknown device").to_owned(),
        });
        let or_dash = |v: Option<String>| v.map_or_else(|| "—".to_owned(), |v| escape(&v));
        let badge = if this {
            r#"<span class="badge">this device</span>"#
        } else {
            ""
        };
        let action = if this {
            String::new()
        } else {
            format!(
                r#"<form class="inline" method="post" action="/devices/{id}/sign-out">
<input type="hidden" name="csrf" value="{csrf}">
<button class="danger" type="submit" data-device="{id}">Sign out</button></form>"#,
                id = s.id()
            )
        };
        let idle = match s.idle_timeout() {
            Some(idle) => when(s.last_seen().saturating_add(idle), now),
            None => "never (no idle timeout)".to_owned(),
        };
        let _ = write!(
            cards,
            r#"<section class="card device{current}" data-session="{id}">
<div><h2>{label}{badge}</h2><dl>
<dt>Browser</dt><dd class="browser">{browser}</dd>
<dt>System</dt><dd class="system">{system}</dd>
<dt>Address</dt><dd class="address">{address}</dd>
<dt>Signed in</dt><dd class="signed-in">{signed_in}</dd>
<dt>Last seen</dt><dd>{last_seen}</dd>
<dt>Public id</dt><dd><code>{id}</code></dd>
<dt>Created</dt><dd>{created}</dd>
<dt>Ends if idle</dt><dd>{idle}</dd>
<dt>Ends at the latest</dt><dd>{absolute}</dd>
</dl></div><div>{action}</div></section>"#,
            current = if this { " current" } else { "" },
            id = s.id(),
            browser = or_dash(client.browser),
            system = or_dash(client.system),
            address = or_dash(s.address().map(|a| a.to_string())),
            created = when(s.created_at(), now),
            signed_in = signed_in(s, now),
            last_seen = when(s.last_seen(), now),
            absolute = when(s.absolute_deadline(), now),
        );
    }
    let count = sessions.len();
    let idle = if config.idle_timeout.is_zero() {
        "have no idle timeout".to_owned()
    } else {
        format!("end after {} without activity", span(config.idle_timeout))
    };
    let body = format!(
        r#"<h1>Your devices</h1>
<p class="lead">{count} signed-in {devices}. Sessions last {lifetime} from sign-in and {idle}.</p>
{cards}
<div class="actions">
<form class="inline" method="post" action="/sign-out"><input type="hidden" name="csrf" value="{csrf}">
<button type="submit" id="sign-out">Sign out</button></form>
{others}<form class="inline" method="post" action="/sign-out-everywhere"><input type="hidden" name="csrf" value="{csrf}">
<button class="danger" type="submit" id="sign-out-everywhere">Sign out everywhere</button></form>
<a class="button" href="/password" id="change-password">Change password</a>
</div>
<p class="settings">Times are UTC. “Last seen”, the browser and the address are updated at
most once a minute. An address is shown as its network: the rest of it is not kept.</p>"#,
        devices = if count == 1 { "device" } else { "devices" },
        lifetime = span(config.lifetime),
        // Only when there is another device to sign out.
        others = if count > 1 {
            format!(
                r#"<form class="inline" method="post" action="/sign-out-others"><input type="hidden" name="csrf" value="{csrf}">
<button class="danger" type="submit" id="sign-out-others">Sign out all other devices</button></form>
"#
            )
        } else {
            String::new()
        },
    );
    layout("Your devices", Some(me.user.as_str()), &body)
}

/// How and when the session signed in, from its factors: "2026-11-23 18:57 (2 min ago)
/// with password", then each later step-up ("confirmed … with otp (level 2)"). Methods
/// recorded within a second of the sign-in came with it; methods recorded together
/// are one step. A session that said nothing of how shows only when.
fn signed_in(s: &Session, now: Timestamp) -> String {
    let mut factors: Vec<&Factor> = s.factors().iter().collect();
    factors.sort_by_key(|f| f.at());
    let Some(at) = s
        .authenticated_at()
        .or_else(|| factors.first().map(|f| f.at()))
    else {
        return "—".to_owned();
    };
    // (when, methods) per step, oldest first; the sign-in's own step first of all.
    let mut steps: Vec<(Timestamp, Vec<String>)> = Vec::new();
    for f in factors {
        let step_at = if f.at() <= at.saturating_add(Duration::from_secs(1)) {
            at
        } else {
            f.at()
        };
        let method = match f.level() {
            0 | 1 => escape(f.method()),
            level => format!("{} (level {level})", escape(f.method())),
        };
        match steps.last_mut() {
            Some((t, methods)) if *t == step_at => methods.push(method),
            _ => steps.push((step_at, vec![method])),
        }
    }
    let mut out = when(at, now);
    for (t, methods) in steps {
        if t == at {
            let _ = write!(out, " with {}", methods.join(" and "));
        } else {
            let _ = write!(
                out,
                "; confirmed {} with {}",
                when(t, now),
                methods.join(" and ")
            );
        }
    }
    out
}

/// `t` as a UTC date and time, with how far it is from `now`.
fn when(t: Timestamp, now: Timestamp) -> String {
    if t == Timestamp::MAX {
        return "never".to_owned();
    }
    // To the nearest minute: a deadline 29 days 23 h 59 min 55 s away reads "in 30 days".
    let nearest = |d: Duration| Duration::from_secs((d.as_secs() + 30) / 60 * 60);
    let rel = if t >= now {
        let d = t.saturating_since(now);
        if d.as_secs() < 60 {
            "in under a minute".to_owned()
        } else {
            format!("in {}", span(nearest(d)))
        }
    } else {
        let d = now.saturating_since(t);
        if d.as_secs() < 60 {
            "just now".to_owned()
        } else {
            format!("{} ago", span(nearest(d)))
        }
    };
    format!(r#"{} <span class="rel">({rel})</span>"#, utc(t))
}

/// A duration in its largest whole unit or two: "30 days", "1 h 5 min", "42 s".
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    match (days, hours, mins) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => plural(h, "hour", "hours"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => plural(d, "day", "days"),
        (d, h, _) => format!("{} {h} h", plural(d, "day", "days")),
    }
}

/// `YYYY-MM-DD HH:MM` in UTC (days to civil date after H. Hinnant's algorithm).
pub fn utc(t: Timestamp) -> String {
    let secs = t.as_millis() / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(Timestamp(0)), "1970-01-01 00:00");
        // 2000-02-29 12:34:56 UTC, a leap day.
        assert_eq!(utc(Timestamp(951_827_696_000)), "2000-02-29 12:34");
        // 2026-11-23 18:57:00 UTC.
        assert_eq!(utc(Timestamp(1_795_460_220_000)), "2026-11-23 18:57");
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(Duration::from_secs(42)), "42 s");
        assert_eq!(span(Duration::from_secs(300)), "5 min");
        assert_eq!(span(Duration::from_secs(3_600)), "1 hour");
        assert_eq!(span(Duration::from_secs(3_900)), "1 h 5 min");
        assert_eq!(span(Duration::from_secs(86_400)), "1 day");
        assert_eq!(span(Duration::from_secs(30 * 86_400)), "30 days");
        assert_eq!(span(Duration::from_secs(86_400 + 7_200)), "1 day 2 h");
    }

    #[test]
    fn signed_in_says_when_and_with_what_then_each_later_step_up() {
        use sessiondb::{ManualClock, NewSession, Options, SignIn, Store};
        let start = Timestamp(1_795_460_220_000);
        let clock = ManualClock::new(start);
        let store = Store::in_memory_with(Options::default().clock(clock.clone())).unwrap();
        let (visitor, bare) = store.create(NewSession::anonymous()).unwrap();
        assert_eq!(signed_in(&bare, start), "—");
        let token = store
            .login_with(&visitor, "alice", SignIn::with("password"))
            .unwrap();
        let s = store.get(&token).unwrap();
        assert_eq!(
            signed_in(&s, start),
            format!("{} with password", when(start, start))
        );
        clock.advance(Duration::from_secs(300));
        let now = Timestamp(start.0 + 300_000);
        let token = store
            .step_up(&token, SignIn::with("otp").and("webauthn").level(2))
            .unwrap();
        let s = store.get(&token).unwrap();
        assert_eq!(
            signed_in(&s, now),
            format!(
                "{} with password; confirmed {} with otp (level 2) and webauthn (level 2)",
                when(start, now),
                when(now, now)
            )
        );
        // A plain login records no method: only when.
        let (other, _) = store.create(NewSession::anonymous()).unwrap();
        let plain = store.login(&other, "bob").unwrap();
        assert_eq!(signed_in(&store.get(&plain).unwrap(), now), when(now, now));
    }

    #[test]
    fn when_says_past_and_future_relative_to_now() {
        let now = Timestamp(1_795_460_220_000);
        assert!(when(now, now).contains("in under a minute"));
        assert!(when(Timestamp(now.0 - 120_000), now).contains("2 min ago"));
        assert!(when(Timestamp(now.0 + 86_400_000), now).contains("in 1 day"));
        let almost_30_days = Timestamp(now.0 + 30 * 86_400_000 - 5_000);
        assert!(when(almost_30_days, now).contains("(in 30 days)"));
        assert_eq!(when(Timestamp::MAX, now), "never");
    }
}
