//! The commands that only read: `stats`, `list`, `show` and `verify`, and the JSON a
//! session is shown as. Reading counts as no session's activity (like `Store::peek`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use indicatif::{HumanBytes, HumanCount, HumanDuration};
use serde_json::json;
use sessiondb::{Session, SessionId, UserId};

use crate::human::{self, redact};
use crate::output::{Fail, ms, say, say_json};
use crate::target::{Ctx, Target};

pub fn stats(ctx: &Ctx, json: bool, prometheus: Option<&str>) -> Result<(), Fail> {
    let dir = match &ctx.target {
        Target::Dir(dir) => dir,
        Target::Redis { url, prefix } => {
            let server = Server {
                kind: "redis",
                url,
                within: ("prefix", prefix),
                shown_within: format!("keys {prefix}:*"),
            };
            return server_stats(ctx, &server, json, prometheus);
        }
        Target::Postgres { url, schema } => {
            let server = Server {
                kind: "postgres",
                url,
                within: ("schema", schema),
                shown_within: format!("schema {schema}"),
            };
            return server_stats(ctx, &server, json, prometheus);
        }
    };
    let store = ctx.open(dir, false)?;
    let st = store.stats();
    let rep = store.recovery_report();
    drop(store);
    if let Some(label) = prometheus {
        return say(st.gauges_to_prometheus(label).trim_end());
    }
    if json {
        return say_json(&json!({
            "dir": dir,
            "backend": st.backend,
            "sessions": st.sessions,
            "users": st.users,
            "aliases": st.aliases,
            "disk_bytes": st.disk_bytes,
            "estimated_live_bytes": st.estimated_live_bytes,
            "dead_ratio": st.dead_ratio,
            "resident_bytes": st.resident_bytes,
            "recovery": {
                "files": rep.files,
                "records": rep.records,
                "bytes_read": rep.bytes_read,
                "bytes_truncated": rep.bytes_truncated,
                "expired_dropped": rep.expired_dropped,
                "duration_ms": ms(rep.duration),
            },
        }));
    }
    let rows = [
        (
            "store",
            format!("{} ({} backend)", dir.display(), st.backend),
        ),
        (
            "sessions",
            format!(
                "{} live, {} old tokens in their rotation grace",
                HumanCount(st.sessions as u64),
                HumanCount(st.aliases as u64)
            ),
        ),
        ("users", HumanCount(st.users as u64).to_string()),
        (
            "in memory",
            format!("≈ {} once opened", HumanBytes(st.resident_bytes)),
        ),
        (
            "on disk",
            format!(
                "{}; live sessions ≈ {}; dead history ≈ {:.0}%{}",
                HumanBytes(st.disk_bytes),
                HumanBytes(st.estimated_live_bytes),
                st.dead_ratio * 100.0,
                if st.dead_ratio >= 0.5 && st.backend == "log" {
                    " (`compact` reclaims it)"
                } else {
                    ""
                }
            ),
        ),
        (
            "opened in",
            format!(
                "{:.2} s: {} records from {} files ({}), {} bytes of torn tail cut off, \
                 {} expired sessions dropped",
                rep.duration.as_secs_f64(),
                HumanCount(rep.records),
                rep.files,
                HumanBytes(rep.bytes_read),
                rep.bytes_truncated,
                rep.expired_dropped
            ),
        ),
    ];
    let text: Vec<String> = rows.iter().map(|(k, v)| format!("{k:<10} {v}")).collect();
    say(&text.join("\n"))
}

/// A store on a server, as `stats` shows it.
struct Server<'a> {
    /// "redis" or "postgres": the backend, and the JSON key of the URL.
    kind: &'static str,
    url: &'a str,
    /// Where on the server: ("prefix", the key prefix) or ("schema", the schema).
    within: (&'static str, &'a str),
    /// The same, for a person: "keys PREFIX:*", "schema SCHEMA".
    shown_within: String,
}

/// Stats of a store on Redis or PostgreSQL: what the server can say cheaply, the live
/// sessions. Users, rotation aliases, bytes and recovery are the embedded store's
/// (the server reports its memory and disk itself: Redis's INFO, PostgreSQL's
/// pg_total_relation_size).
fn server_stats(
    ctx: &Ctx,
    server: &Server<'_>,
    json: bool,
    prometheus: Option<&str>,
) -> Result<(), Fail> {
    let store = ctx.handle(false)?;
    let sessions = store.len()?;
    drop(store);
    if let Some(label) = prometheus {
        // What the server says cheaply: the live sessions; the rest is the embedded
        // store's.
        let mut st = sessiondb::Stats::default();
        st.sessions = sessions;
        let text = st.gauges_to_prometheus(label);
        let live: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("sessiondb_sessions_live"))
            .collect();
        return say(&live.join("\n"));
    }
    if json {
        let (key, within) = server.within;
        return say_json(&json!({
            server.kind: redact(server.url),
            key: within,
            "backend": server.kind,
            "sessions": sessions,
        }));
    }
    say(&format!(
        "store      {} ({} backend, {})\nsessions   {} live",
        redact(server.url),
        server.kind,
        server.shown_within,
        HumanCount(sessions as u64)
    ))
}

fn data_json(s: &Session) -> serde_json::Value {
    s.data()
        .iter()
        .map(|(k, v)| (k.to_owned(), json!(BASE64.encode(v))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn session_json(s: &Session) -> serde_json::Value {
    json!({
        "id": s.id().to_string(),
        "user": s.user().map(UserId::as_str),
        "label": s.label(),
        "created_ms": s.created_at().as_millis(),
        "authenticated_ms": s.authenticated_at().map(|t| t.as_millis()),
        "last_seen_ms": s.last_seen().as_millis(),
        "absolute_ms": s.absolute_deadline().as_millis(),
        "expires_ms": s.expires_at().as_millis(),
        "idle_timeout_ms": s.idle_timeout().map(ms),
        "version": s.version(),
        "data": data_json(s),
        "factors": s.factors().iter().map(|f| json!({
            "method": f.method(),
            "level": f.level(),
            "at_ms": f.at().as_millis(),
        })).collect::<Vec<_>>(),
        "level": s.level(),
        "user_agent": s.user_agent(),
        "address": s.address().map(|a| a.to_string()),
        "device_ms": s.device_seen_at().map(|t| t.as_millis()),
    })
}

/// How the session signed in, for a person: "password, otp (level 2) 5 minutes ago".
fn signed_in_with(s: &Session) -> Option<String> {
    let methods: Vec<String> = s
        .factors()
        .iter()
        .map(|f| {
            let level = if f.level() > 1 {
                format!(" (level {})", f.level())
            } else {
                String::new()
            };
            format!("{}{level} {}", f.method(), human::when(f.at()))
        })
        .collect();
    (!methods.is_empty()).then(|| format!("{}; level now {}", methods.join(", "), s.level()))
}

/// The client it was last seen from, for a person.
fn device_of(s: &Session) -> Option<String> {
    let at = s.device_seen_at()?;
    let ua = s.user_agent().map(|u| format!("{u:?}"));
    let addr = s.address().map(|a| a.to_string());
    let what: Vec<String> = ua.into_iter().chain(addr).collect();
    Some(format!(
        "{} (recorded {})",
        what.join(" from "),
        human::when(at)
    ))
}

pub fn list(ctx: &Ctx, user: &str, json: bool) -> Result<(), Fail> {
    let store = ctx.handle(false)?;
    let sessions = store.sessions_of(user)?;
    drop(store);
    if json {
        return say_json(&sessions.iter().map(session_json).collect());
    }
    if sessions.is_empty() {
        return say(&format!("user {user:?} has no live sessions"));
    }
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.id().to_string(),
                s.label().unwrap_or("-").to_owned(),
                match s.factors() {
                    [] => "-".to_owned(),
                    f => f
                        .iter()
                        .map(|f| f.method())
                        .collect::<Vec<_>>()
                        .join(",")
                        .chars()
                        .take(24)
                        .collect(),
                },
                s.address().map_or("-".into(), |a| a.to_string()),
                s.created_at().to_string(),
                s.last_seen().to_string(),
                s.expires_at().to_string(),
            ]
        })
        .collect();
    say(&format!(
        "{} live session{} of user {user:?}, oldest first:\n{}",
        sessions.len(),
        if sessions.len() == 1 { "" } else { "s" },
        human::table(
            &[
                "ID",
                "LABEL",
                "SIGNED IN WITH",
                "ADDRESS",
                "CREATED",
                "LAST SEEN",
                "EXPIRES"
            ],
            &rows
        )
    ))
}

pub fn show(ctx: &Ctx, id: SessionId, json: bool) -> Result<(), Fail> {
    let store = ctx.handle(false)?;
    let session = store.get_by_id(id)?;
    drop(store);
    let Some(s) = session else {
        return Err(Fail(format!(
            "no live session has id {id} in {}",
            ctx.shown()
        )));
    };
    if json {
        return say_json(&session_json(&s));
    }
    let user = match (s.user(), s.authenticated_at()) {
        (Some(u), Some(at)) => format!("{:?}, authenticated {}", u.as_str(), human::when(at)),
        (Some(u), None) => format!("{:?}", u.as_str()),
        (None, _) => "none (anonymous)".into(),
    };
    let idle = s.idle_timeout().map_or("none".into(), |d| {
        format!("{} after the last activity", HumanDuration(d))
    });
    let mut lines = vec![
        format!("id          {}", s.id()),
        format!("user        {user}"),
        format!(
            "label       {}",
            s.label().map_or("-".into(), |l| format!("{l:?}"))
        ),
        format!(
            "signed in   {}",
            signed_in_with(&s).unwrap_or_else(|| "-".into())
        ),
        format!(
            "device      {}",
            device_of(&s).unwrap_or_else(|| "-".into())
        ),
        format!("created     {}", human::when(s.created_at())),
        format!("last seen   {}", human::when(s.last_seen())),
        format!("expires     {}", human::when(s.expires_at())),
        format!("  absolute  {}", human::when(s.absolute_deadline())),
        format!("  idle      {idle}"),
        format!("version     {}", s.version()),
        format!(
            "data        {} key{}, {} bytes",
            s.data().len(),
            if s.data().len() == 1 { "" } else { "s" },
            s.data().encoded_len()
        ),
    ];
    let width = s
        .data()
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in s.data().iter() {
        lines.push(format!(
            "  {:<width$}  {} bytes  {}",
            format!("{k:?}"),
            v.len(),
            human::preview(v),
            width = width + 2
        ));
    }
    say(&lines.join("\n"))
}

pub fn verify(ctx: &Ctx, json: bool) -> Result<(), Fail> {
    let checked = ctx
        .dir_for(
            "verify",
            "it checks a log's records and the indexes rebuilt from them; Redis keeps \
             neither (each operation is one atomic script)",
            "it checks a log's records and the indexes rebuilt from them; PostgreSQL \
             keeps neither of sessiondb's (each operation is one transaction, its \
             indexes are the database's)",
        )
        .and_then(|dir| Ok((dir, ctx.open(dir, false)?)))
        .and_then(|(dir, store)| {
            store.verify()?;
            Ok((dir, store.recovery_report(), store.len()))
        });
    let (dir, rep, live) = match checked {
        Ok(v) => v,
        Err(fail) => {
            if json {
                say_json(&json!({ "ok": false, "error": fail.0 }))?;
            }
            return Err(fail);
        }
    };
    if json {
        return say_json(&json!({
            "ok": true,
            "backend": rep.backend,
            "files": rep.files,
            "records": rep.records,
            "bytes_read": rep.bytes_read,
            "bytes_truncated": rep.bytes_truncated,
            "sessions": live,
            "expired_dropped": rep.expired_dropped,
            "duration_ms": ms(rep.duration),
        }));
    }
    let torn = if rep.bytes_truncated == 0 {
        "none".to_owned()
    } else {
        format!(
            "{} bytes cut off (a write a crash interrupted; any open does this)",
            rep.bytes_truncated
        )
    };
    say(&format!(
        "ok: {} ({} backend)\n\
         records    {} from {} files ({}), every one checksummed and valid, in {:.2} s\n\
         torn tail  {torn}\n\
         sessions   {} live; {} past their deadline (dropped, as any open does)\n\
         indexes    sessions, public ids, users and timers agree",
        dir.display(),
        rep.backend,
        HumanCount(rep.records),
        rep.files,
        HumanBytes(rep.bytes_read),
        rep.duration.as_secs_f64(),
        HumanCount(live as u64),
        rep.expired_dropped
    ))
}
