//! The app over real HTTP: a reqwest client with a cookie jar per "device", the app on
//! a loopback port. Every scenario runs twice (`embedded::…` and `on_redis::…`): with
//! the sessions in a durable store in a temporary directory, and in a redis-server of
//! its own (Debian's, on a free loopback port; skipped with a message if it is not
//! installed, unless `SESSIONDB_REQUIRE_REDIS=1`). The app's code is the same.

#[path = "../../../tests/support/redis_server.rs"]
mod redis_server;
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use redis_server::{NO_PERSISTENCE, RedisServer};
use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_TYPE, COOKIE, HeaderMap, HeaderValue, LOCATION, SET_COOKIE, USER_AGENT,
};
use reqwest::redirect::Policy;
use sessiondb::{NewSession, SignIn, Token};
use sessiondb_axum_app::{Config, pages};
use support::{Backend, Running, csrf_in, test_config};

const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36";

/// One answer: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn set_cookie(&self) -> Option<String> {
        self.headers
            .get(SET_COOKIE)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The session token a `Set-Cookie: sid=...` hands out.
    fn cookie_token(&self) -> String {
        let c = self.set_cookie().expect("a Set-Cookie header");
        c.split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_owned())
            .expect("name=value")
    }
}

async fn answer(r: reqwest::Response) -> Answer {
    Answer {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

/// A browser-like client: its own cookie jar and User-Agent, redirects not followed
/// (the tests check each one).
struct Device {
    client: reqwest::Client,
    base: String,
}

impl Device {
    fn new(app: &Running, user_agent: &str) -> Device {
        Device::with_headers(app, user_agent, HeaderMap::new())
    }

    /// A device that sends `headers` with every request too.
    fn with_headers(app: &Running, user_agent: &str, headers: HeaderMap) -> Device {
        Device {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(Policy::none())
                .user_agent(user_agent)
                .default_headers(headers)
                .build()
                .unwrap(),
            base: app.base.clone(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        answer(
            self.client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        answer(
            self.client
                .post(format!("{}{path}", self.base))
                .form(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Fills and sends the sign-up or login form; returns the POST's answer.
    async fn credentials(&self, page: &str, user: &str, password: &str) -> Answer {
        let form = self.get(page).await;
        assert_eq!(form.status, StatusCode::OK, "{page}: {}", form.body);
        let csrf = csrf_in(&form.body);
        self.post(
            page,
            &[("csrf", &csrf), ("username", user), ("password", password)],
        )
        .await
    }

    async fn sign_up(&self, user: &str, password: &str) {
        let a = self.credentials("/signup", user, password).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "sign-up: {}", a.body);
        assert_eq!(a.location(), "/devices");
    }

    async fn log_in(&self, user: &str, password: &str) {
        let a = self.credentials("/login", user, password).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "login: {}", a.body);
        assert_eq!(a.location(), "/devices");
    }

    /// The devices page, which must be served (signed in).
    async fn devices(&self) -> Answer {
        let a = self.get("/devices").await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "devices: {} {}",
            a.status,
            a.location()
        );
        a
    }

    /// Whether `/devices` sends this device to the login page.
    async fn is_signed_out(&self) -> bool {
        let a = self.get("/devices").await;
        a.status == StatusCode::SEE_OTHER && a.location() == "/login"
    }
}

async fn start(backend: &Backend, config: Config) -> (tempfile::TempDir, Running) {
    let dir = tempfile::tempdir().unwrap();
    let app = Running::start_on(backend, dir.path(), config).await;
    (dir, app)
}

async fn sign_up_lists_this_device_with_its_label_and_both_deadlines(backend: Backend) {
    let config = Config {
        idle_timeout: std::time::Duration::from_secs(2 * 3_600),
        ..test_config()
    };
    let lifetime = config.lifetime;
    let (_dir, app) = start(&backend, config).await;
    let laptop = Device::new(&app, FIREFOX_LINUX);
    laptop.sign_up("alice", "correct horse battery").await;
    let page = laptop.devices().await;

    let sessions = app.store.sessions_of("alice").await.unwrap();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.label(), Some("Firefox 140 on Linux"));
    // The absolute lifetime counts from sign-in.
    let signed_in = s.authenticated_at().expect("authenticated");
    assert_eq!(s.absolute_deadline(), signed_in.saturating_add(lifetime));
    let idle_deadline = s.last_seen().saturating_add(s.idle_timeout().unwrap());
    // Browser and system from the User-Agent, the address as kept (the test client
    // connects from 127.0.0.1: its /24), and how it signed in.
    assert_eq!(s.user_agent(), Some(FIREFOX_LINUX));
    assert_eq!(s.address(), Some("127.0.0.0".parse().unwrap()));
    assert_eq!(s.factors().len(), 1);
    assert_eq!((s.factors()[0].method(), s.level()), ("password", 1));
    for needle in [
        "Signed in as <b>alice</b>",
        "Firefox 140 on Linux",
        r#"<dd class="browser">Firefox 140</dd>"#,
        r#"<dd class="system">Linux</dd>"#,
        r#"<dd class="address">127.0.0.0</dd>"#,
        "</span> with password</dd>",
        &pages::utc(signed_in),
        "this device",
        &s.id().to_string(),
        "Ends if idle",
        &pages::utc(idle_deadline),
        "Ends at the latest",
        &pages::utc(s.absolute_deadline()),
        "Sessions last 30 days from sign-in and end after 2 hours without activity",
        "Sign out everywhere",
    ] {
        assert!(page.body.contains(needle), "{needle:?} not on the page");
    }
    // This device has no "sign out this device" button: it has "Sign out".
    assert!(!page.body.contains(&format!("/devices/{}/sign-out", s.id())));
}

/// Every request with a session reports its device: a session that has none yet (made
/// here straight in the store) gets the User-Agent and address of its first request,
/// and the page shows them; a different User-Agent within the touch interval (a
/// minute) changes nothing stored.
async fn each_request_reports_its_device_at_most_once_per_touch_interval(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    let (token, s) = app
        .store
        .create(NewSession::for_user("alice").signed_in(SignIn::with("password")))
        .await
        .unwrap();
    assert_eq!((s.user_agent(), s.address()), (None, None));
    let raw = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let get = |ua: &'static str| {
        raw.get(app.url("/devices"))
            .header(COOKIE, format!("sid={token}"))
            .header(USER_AGENT, ua)
            .send()
    };
    let page = answer(get(CHROME_ANDROID).await.unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    let s = app.store.get(&token).await.unwrap().unwrap();
    assert_eq!(s.user_agent(), Some(CHROME_ANDROID));
    assert_eq!(s.address(), Some("127.0.0.0".parse().unwrap()));
    let seen = s.device_seen_at().expect("recorded");
    for needle in [
        "Chrome 156 on Android",
        r#"<dd class="browser">Chrome 156</dd>"#,
        r#"<dd class="system">Android</dd>"#,
        r#"<dd class="address">127.0.0.0</dd>"#,
        " with password</dd>",
    ] {
        assert!(page.body.contains(needle), "{needle:?} not on the page");
    }

    // Another browser on the same cookie within the minute: nothing written.
    let page = answer(get(FIREFOX_LINUX).await.unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Chrome 156 on Android"));
    assert!(!page.body.contains("Firefox"));
    let s = app.store.get(&token).await.unwrap().unwrap();
    assert_eq!(s.user_agent(), Some(CHROME_ANDROID));
    assert_eq!(s.device_seen_at(), Some(seen));
}

/// The address comes from the connection, unless the app trusts `X-Forwarded-For`
/// (`--trust-forwarded-for`, behind a proxy that sets it): then from its first address.
/// Either way it is kept as its network.
async fn the_address_is_the_peers_unless_forwarded_for_is_trusted(backend: Backend) {
    let mut forwarded = HeaderMap::new();
    forwarded.insert(
        "x-forwarded-for",
        HeaderValue::from_static("203.0.113.77, 10.1.2.3"),
    );
    for trust in [false, true] {
        let config = Config {
            trust_forwarded_for: trust,
            ..test_config()
        };
        let (_dir, app) = start(&backend, config).await;
        let laptop = Device::with_headers(&app, FIREFOX_LINUX, forwarded.clone());
        // Another user each time: on Redis both apps share the server.
        let user = if trust { "trusting" } else { "untrusting" };
        laptop.sign_up(user, "correct horse battery").await;
        let want = if trust { "203.0.113.0" } else { "127.0.0.0" };
        let s = app.store.sessions_of(user).await.unwrap().remove(0);
        assert_eq!(s.address(), Some(want.parse().unwrap()), "trust: {trust}");
        let page = laptop.devices().await.body;
        let shown = format!(r#"<dd class="address">{want}</dd>"#);
        assert!(
            page.contains(&shown),
            "trust {trust}: {shown} not on the page"
        );
        assert!(
            !page.contains("203.0.113.77"),
            "the full address is not kept"
        );
    }
}

async fn login_rotates_the_cookie_and_the_old_cookie_stops_working(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    Device::new(&app, FIREFOX_LINUX)
        .sign_up("alice", "correct horse battery")
        .await;

    // By hand, to see each cookie: a visitor's session first.
    let raw = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let form = answer(raw.get(app.url("/login")).send().await.unwrap()).await;
    let before = form.cookie_token();
    let csrf = csrf_in(&form.body);
    let visitor = app
        .store
        .get(&Token::parse(&before).unwrap())
        .await
        .unwrap()
        .expect("a visitor session");
    assert!(visitor.user().is_none());

    let login = answer(
        raw.post(app.url("/login"))
            .header(COOKIE, format!("sid={before}"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", "alice"),
                ("password", "correct horse battery"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", login.body);
    let after = login.cookie_token();
    assert_ne!(after, before, "login must hand out a new token");

    // Same session (same public id), now bound to alice, under the new token only.
    let session = app
        .store
        .get(&Token::parse(&after).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.id(), visitor.id());
    assert_eq!(session.user().map(|u| u.as_str()), Some("alice"));
    assert!(
        app.store
            .get(&Token::parse(&before).unwrap())
            .await
            .unwrap()
            .is_none(),
        "the pre-login token still resolves (the tests run with zero rotation grace)"
    );
    let with = |token: String| {
        let raw = raw.clone();
        let url = app.url("/devices");
        async move {
            answer(
                raw.get(url)
                    .header(COOKIE, format!("sid={token}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    assert_eq!(with(after).await.status, StatusCode::OK);
    let old = with(before).await;
    assert_eq!(old.status, StatusCode::SEE_OTHER);
    assert_eq!(old.location(), "/login");
}

async fn a_wrong_password_and_an_unknown_user_get_the_same_generic_answer(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    Device::new(&app, FIREFOX_LINUX)
        .sign_up("alice", "correct horse battery")
        .await;
    let other = Device::new(&app, CHROME_ANDROID);
    let wrong = other.credentials("/login", "alice", "wrong password").await;
    let unknown = other
        .credentials("/login", "mallory", "wrong password")
        .await;
    for a in [&wrong, &unknown] {
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(a.body.contains("Wrong username or password."), "{}", a.body);
        assert!(a.set_cookie().is_none(), "no new session cookie on failure");
    }
    assert_eq!(app.store.sessions_of("alice").await.unwrap().len(), 1);
    assert!(other.is_signed_out().await);
    // The right password still works afterwards from the same form session.
    other.log_in("alice", "correct horse battery").await;
    assert_eq!(app.store.sessions_of("alice").await.unwrap().len(), 2);
}

async fn a_post_with_a_missing_or_wrong_csrf_token_is_403_and_changes_nothing(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    let laptop = Device::new(&app, FIREFOX_LINUX);
    laptop.sign_up("alice", "correct horse battery").await;
    let phone = Device::new(&app, CHROME_ANDROID);
    phone.log_in("alice", "correct horse battery").await;
    let phone_page = phone.devices().await;
    let phone_csrf = csrf_in(&phone_page.body);
    let laptop_csrf = csrf_in(&laptop.devices().await.body);
    assert_ne!(phone_csrf, laptop_csrf, "each session has its own token");
    let phone_id = app.store.sessions_of("alice").await.unwrap()[1].id();

    let device_path = format!("/devices/{phone_id}/sign-out");
    for (path, form) in [
        ("/sign-out", vec![]),
        ("/sign-out", vec![("csrf", "")]),
        ("/sign-out", vec![("csrf", "00")]),
        ("/sign-out-everywhere", vec![]),
        // Another session's valid token is still the wrong one.
        ("/sign-out-everywhere", vec![("csrf", phone_csrf.as_str())]),
        (device_path.as_str(), vec![("csrf", &phone_csrf[..63])]),
    ] {
        let a = laptop.post(path, &form).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path} {form:?}");
        assert!(a.body.contains("This form has expired"));
    }
    assert_eq!(app.store.sessions_of("alice").await.unwrap().len(), 2);
    laptop.devices().await;
    phone.devices().await;

    // The login and sign-up forms too, for a visitor.
    let visitor = Device::new(&app, FIREFOX_LINUX);
    visitor.get("/signup").await;
    let signup = visitor
        .post(
            "/signup",
            &[("username", "bob"), ("password", "correct horse battery")],
        )
        .await;
    assert_eq!(signup.status, StatusCode::FORBIDDEN);
    let login = visitor
        .post(
            "/login",
            &[
                ("csrf", laptop_csrf.as_str()),
                ("username", "alice"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);
    // With no session at all there is no token to match.
    let cookieless = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let bare = cookieless
        .post(app.url("/login"))
        .form(&[("csrf", "x"), ("username", "alice"), ("password", "p")])
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.store.sessions_of("alice").await.unwrap().len(), 2);
    assert!(app.store.sessions_of("bob").await.unwrap().is_empty());
    assert!(visitor.is_signed_out().await);
}

async fn sign_out_ends_this_session_and_clears_the_cookie(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    let laptop = Device::new(&app, FIREFOX_LINUX);
    laptop.sign_up("alice", "correct horse battery").await;
    let csrf = csrf_in(&laptop.devices().await.body);
    let out = laptop.post("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/login");
    let cleared = out.set_cookie().unwrap();
    assert!(
        cleared.starts_with("sid=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert!(app.store.sessions_of("alice").await.unwrap().is_empty());
    assert!(laptop.is_signed_out().await);
}

async fn one_device_signs_out_another_which_then_lands_on_the_login_page(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    let laptop = Device::new(&app, FIREFOX_LINUX);
    laptop.sign_up("alice", "correct horse battery").await;
    let phone = Device::new(&app, CHROME_ANDROID);
    phone.log_in("alice", "correct horse battery").await;

    let sessions = app.store.sessions_of("alice").await.unwrap();
    assert_eq!(sessions.len(), 2);
    let phone_id = sessions
        .iter()
        .find(|s| s.label() == Some("Chrome 156 on Android"))
        .unwrap()
        .id();
    let page = laptop.devices().await;
    assert!(page.body.contains("2 signed-in devices"));
    assert!(page.body.contains("Chrome 156 on Android"));
    let button = format!("/devices/{phone_id}/sign-out");
    assert!(
        page.body.contains(&button),
        "a sign-out button for the phone"
    );

    let a = laptop
        .post(&button, &[("csrf", &csrf_in(&page.body))])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/devices");
    assert!(app.store.get_by_id(phone_id).await.unwrap().is_none());
    assert!(phone.is_signed_out().await);
    let page = laptop.devices().await;
    assert!(page.body.contains("1 signed-in device."));
    assert!(!page.body.contains("Chrome 156 on Android"));
}

async fn sign_out_everywhere_ends_every_device_of_that_user_only(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    let laptop = Device::new(&app, FIREFOX_LINUX);
    laptop.sign_up("alice", "correct horse battery").await;
    let phone = Device::new(&app, CHROME_ANDROID);
    phone.log_in("alice", "correct horse battery").await;
    let bob = Device::new(&app, FIREFOX_LINUX);
    bob.sign_up("bob", "another good password").await;

    let csrf = csrf_in(&phone.devices().await.body);
    let a = phone.post("/sign-out-everywhere", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/login");
    assert!(laptop.is_signed_out().await);
    assert!(phone.is_signed_out().await);
    assert!(app.store.sessions_of("alice").await.unwrap().is_empty());
    bob.devices().await;
}

async fn sign_out_others_keeps_this_device_and_ends_the_users_others(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    let laptop = Device::new(&app, FIREFOX_LINUX);
    laptop.sign_up("alice", "correct horse battery").await;
    let phone = Device::new(&app, CHROME_ANDROID);
    phone.log_in("alice", "correct horse battery").await;
    let tablet = Device::new(&app, CHROME_ANDROID);
    tablet.log_in("alice", "correct horse battery").await;
    let bob = Device::new(&app, FIREFOX_LINUX);
    bob.sign_up("bob", "another good password").await;

    let page = phone.devices().await.body;
    assert!(
        page.contains(r#"id="sign-out-others""#),
        "offered with others"
    );
    let csrf = csrf_in(&page);
    let a = phone.post("/sign-out-others", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/devices");
    assert!(laptop.is_signed_out().await);
    assert!(tablet.is_signed_out().await);
    let page = phone.devices().await.body;
    assert!(page.contains("1 signed-in device."), "{page}");
    assert!(
        !page.contains(r#"id="sign-out-others""#),
        "not offered when alone"
    );
    assert_eq!(app.store.sessions_of("alice").await.unwrap().len(), 1);
    bob.devices().await;
    // Without the form's token it changes nothing.
    laptop.log_in("alice", "correct horse battery").await;
    let a = laptop.post("/sign-out-others", &[("csrf", "00")]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(app.store.sessions_of("alice").await.unwrap().len(), 2);
}

async fn changing_the_password_asks_for_it_unless_recent_and_ends_every_older_session(
    backend: Backend,
) {
    let config = Config {
        reauth_window: std::time::Duration::from_millis(1500),
        ..test_config()
    };
    let (_dir, app) = start(&backend, config).await;
    let laptop = Device::new(&app, FIREFOX_LINUX);
    laptop.sign_up("alice", "correct horse battery").await;
    let phone = Device::new(&app, CHROME_ANDROID);
    phone.log_in("alice", "correct horse battery").await;
    let bob = Device::new(&app, FIREFOX_LINUX);
    bob.sign_up("bob", "another good password").await;
    assert!(laptop.devices().await.body.contains(r#"href="/password""#));

    // Just signed in: the current password is not asked for.
    let page = laptop.get("/password").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(r#"id="reauth""#), "{}", page.body);
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    // A while later it is; a wrong one, a missing form token or a short new password
    // change nothing.
    let page = laptop.get("/password").await;
    assert!(page.body.contains(r#"id="reauth""#), "{}", page.body);
    let csrf = csrf_in(&page.body);
    let new = "a brand new password";
    let a = laptop
        .post(
            "/password",
            &[
                ("csrf", &csrf),
                ("current", "not my password"),
                ("new", new),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.contains("Wrong password."), "{}", a.body);
    let a = laptop
        .post("/password", &[("csrf", &csrf), ("new", new)])
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "no current password");
    let a = laptop
        .post(
            "/password",
            &[
                ("csrf", "00"),
                ("current", "correct horse battery"),
                ("new", new),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = laptop
        .post(
            "/password",
            &[
                ("csrf", &csrf),
                ("current", "correct horse battery"),
                ("new", "short"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    // The right current password was a step-up ("sudo mode"): a new token, and the
    // form does not ask for it again within the window.
    assert!(a.set_cookie().is_some(), "a step-up rotates the token");
    assert!(!a.body.contains(r#"id="reauth""#), "{}", a.body);
    let page = laptop.devices().await.body;
    assert!(page.contains("; confirmed "), "{page}");
    assert!(
        !laptop
            .get("/password")
            .await
            .body
            .contains(r#"id="reauth""#)
    );
    phone.devices().await;
    assert_eq!(app.store.sessions_of("alice").await.unwrap().len(), 2);

    // The right one: the password changes, this device is signed in afresh (a new
    // cookie) and every other session of alice's ends.
    let before = laptop.devices().await;
    let a = laptop
        .post(
            "/password",
            &[
                ("csrf", &csrf),
                ("current", "correct horse battery"),
                ("new", new),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.location(), "/devices");
    assert!(a.set_cookie().is_some(), "signed in afresh: a new token");
    assert!(phone.is_signed_out().await);
    let page = laptop.devices().await.body;
    assert!(page.contains("1 signed-in device."), "{page}");
    assert_ne!(before.body, page);
    bob.devices().await;
    assert_eq!(app.store.sessions_of("alice").await.unwrap().len(), 1);
    // And so recently signed in that changing it again asks for nothing.
    assert!(
        !laptop
            .get("/password")
            .await
            .body
            .contains(r#"id="reauth""#)
    );
    // The old password no longer works; the new one does.
    let tablet = Device::new(&app, CHROME_ANDROID);
    let a = tablet
        .credentials("/login", "alice", "correct horse battery")
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    tablet.log_in("alice", new).await;
}

async fn a_user_cannot_sign_out_another_users_device(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    let alice = Device::new(&app, FIREFOX_LINUX);
    alice.sign_up("alice", "correct horse battery").await;
    let bob = Device::new(&app, CHROME_ANDROID);
    bob.sign_up("bob", "another good password").await;
    let bob_id = app.store.sessions_of("bob").await.unwrap()[0].id();

    let csrf = csrf_in(&alice.devices().await.body);
    for id in [bob_id.to_string(), "not-an-id".into(), "0".repeat(36)] {
        let a = alice
            .post(&format!("/devices/{id}/sign-out"), &[("csrf", &csrf)])
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{id}");
    }
    bob.devices().await;
    assert!(!alice.devices().await.body.contains(&bob_id.to_string()));
}

async fn sign_up_refuses_taken_usernames_and_short_passwords_and_binds_nothing(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    Device::new(&app, FIREFOX_LINUX)
        .sign_up("alice", "correct horse battery")
        .await;
    let other = Device::new(&app, CHROME_ANDROID);
    let taken = other
        .credentials("/signup", "ALICE", "some other password")
        .await;
    assert_eq!(taken.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        taken.body.contains("That username is taken"),
        "{}",
        taken.body
    );
    let short = other.credentials("/signup", "carol", "short").await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        short.body.contains("at least 8 characters"),
        "{}",
        short.body
    );
    let bad = other
        .credentials("/signup", "<script>", "long enough password")
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.body.contains("value=\"&lt;script&gt;\""),
        "escaped back into the form"
    );
    assert_eq!(app.store.sessions_of("alice").await.unwrap().len(), 1);
    assert!(other.is_signed_out().await);
    // The password file holds argon2id hashes, never the password.
    let users = std::fs::read_to_string(app.dir.join("users.json")).unwrap();
    assert!(users.contains("$argon2id$"));
    assert!(!users.contains("correct horse battery"));
}

async fn cookies_are_httponly_lax_path_root_and_secure_unless_insecure_http(backend: Backend) {
    let (_dir, secure) = start(&backend, Config::default()).await;
    let raw = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let form = answer(raw.get(secure.url("/login")).send().await.unwrap()).await;
    let visitor = form.set_cookie().unwrap();
    let attrs = |c: &str| c.split("; ").map(str::to_owned).collect::<Vec<_>>();
    let v = attrs(&visitor);
    assert!(v[0].starts_with("__Host-sid="), "{visitor}");
    for flag in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(v.iter().any(|a| a == flag), "{flag} missing: {visitor}");
    }
    // Sign up by hand (reqwest's jar rightly keeps a Secure cookie off plain http).
    let token = form.cookie_token();
    let users_csrf = csrf_in(&form.body);
    let signup = answer(
        raw.post(secure.url("/signup"))
            .header(COOKIE, format!("__Host-sid={token}"))
            .form(&[
                ("csrf", users_csrf.as_str()),
                ("username", "alice"),
                ("password", "correct horse battery"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(signup.status, StatusCode::SEE_OTHER, "{}", signup.body);
    let signed_in = signup.set_cookie().unwrap();
    let s = attrs(&signed_in);
    for flag in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(s.iter().any(|a| a == flag), "{flag} missing: {signed_in}");
    }
    let max_age: u64 = s
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("a signed-in cookie lasts until the absolute deadline")
        .parse()
        .unwrap();
    let lifetime = Config::default().lifetime.as_secs();
    assert!((lifetime - 5..=lifetime).contains(&max_age), "{max_age}");

    let (_dir2, plain) = start(&backend, test_config()).await;
    let form = answer(raw.get(plain.url("/login")).send().await.unwrap()).await;
    let c = form.set_cookie().unwrap();
    let a = attrs(&c);
    assert!(a[0].starts_with("sid="), "{c}");
    assert!(!a.iter().any(|x| x == "Secure"), "{c}");
    for flag in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(a.iter().any(|x| x == flag), "{flag} missing: {c}");
    }
}

async fn a_cookie_that_is_not_a_token_is_no_session_and_gets_a_fresh_one(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    let raw = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    for junk in ["garbage", "", &"A".repeat(32), &"é".repeat(40)] {
        let r = raw
            .get(app.url("/devices"))
            .header(COOKIE, format!("sid={junk}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{junk}");
        let r = answer(
            raw.get(app.url("/login"))
                .header(COOKIE, format!("sid={junk}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_ne!(r.cookie_token(), junk);
    }
}

async fn every_response_forbids_caching_framing_and_scripts(backend: Backend) {
    let (_dir, app) = start(&backend, test_config()).await;
    let d = Device::new(&app, FIREFOX_LINUX);
    for path in ["/login", "/nowhere", "/app.css"] {
        let a = d.get(path).await;
        let h = |n: &str| {
            a.headers
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(h("cache-control"), "no-store", "{path}");
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
        let csp = h("content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
    }
    assert_eq!(d.get("/nowhere").await.status, StatusCode::NOT_FOUND);
}

async fn accounts_and_signed_in_sessions_survive_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = Running::start_on(&backend, dir.path(), test_config()).await;
    let mut laptop = Device::new(&app, FIREFOX_LINUX);
    laptop.sign_up("alice", "correct horse battery").await;
    let id = app.store.sessions_of("alice").await.unwrap()[0].id();
    app.stop().await;

    // A new process on the same data directory (on another port: cookies do not care).
    let app = Running::start_on(&backend, dir.path(), test_config()).await;
    laptop.base = app.base.clone();
    let page = laptop.devices().await;
    assert!(
        page.body.contains(&id.to_string()),
        "the old cookie still works"
    );
    // And the account logs in again from another device.
    let phone = Device::new(&app, CHROME_ANDROID);
    phone.log_in("alice", "correct horse battery").await;
    let sessions = app.store.sessions_of("alice").await.unwrap();
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().any(|s| s.id() == id));
}

/// A crawler requesting `/` gets no session; a flood of cookieless visitors to the
/// login page far past the budget evicts visitors only: every signed-in device stays
/// signed in, and the store never holds more than the budget.
async fn a_flood_of_cookieless_requests_leaves_the_signed_in_sessions_untouched(backend: Backend) {
    const BUDGET: u64 = 40;
    let config = Config {
        max_sessions: BUDGET,
        ..test_config()
    };
    let (_dir, app) = start(&backend, config).await;
    let mut signed_in = Vec::new();
    for (i, ua) in [FIREFOX_LINUX, CHROME_ANDROID, FIREFOX_LINUX]
        .iter()
        .enumerate()
    {
        let d = Device::new(&app, ua);
        d.sign_up(&format!("user{i}"), "correct horse battery")
            .await;
        signed_in.push(d);
    }
    let crawler = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let home = answer(crawler.get(app.url("/")).send().await.unwrap()).await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert!(
        home.set_cookie().is_none(),
        "a request for / made a session"
    );
    // 400 visitors that never send their cookie back, 8 at a time.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, url) = (crawler.clone(), app.url("/login"));
        set.spawn(async move {
            for _ in 0..50 {
                let a = answer(client.get(&url).send().await.unwrap()).await;
                assert_eq!(a.status, StatusCode::OK);
                assert!(a.set_cookie().is_some(), "a visitor session for the form");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    assert!(app.store.len().await.unwrap() as u64 <= BUDGET);
    if let Some(embedded) = app.store.as_embedded() {
        let stats = embedded.stats();
        assert!(stats.sessions as u64 <= BUDGET, "{stats:?}");
        assert!(stats.evictions >= 400 - BUDGET, "{stats:?}");
        embedded.verify().unwrap();
    }
    for d in &signed_in {
        d.devices().await;
    }
    // And a visitor who does come back with the form logs in.
    let late = Device::new(&app, CHROME_ANDROID);
    late.log_in("user1", "correct horse battery").await;
}

/// A test config with `--metrics` on and a `store` label of its own: the recorder is the
/// process's, shared by every test running beside this one, so each app reads only its
/// own series (and compares values before and after, never absolutes).
fn metrics_config() -> Config {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    Config {
        metrics: true,
        metrics_label: format!("http-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        ..test_config()
    }
}

/// One `GET /metrics` as Prometheus makes it (no cookie), parsed: each series of the
/// store labelled `store` by its name and its other labels.
struct Scrape {
    series: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    /// The series `name` with these labels besides `store` (0 if absent: a counter
    /// never touched yet).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.series
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// `sessiondb_sessions_ended_total{reason}`.
    fn ended(&self, reason: &str) -> f64 {
        self.get("sessiondb_sessions_ended_total", &[("reason", reason)])
    }

    /// How many times the Redis script ran `op` (its histogram's count).
    fn script_calls(&self, op: &str) -> f64 {
        self.get("sessiondb_redis_script_seconds_count", &[("op", op)])
    }

    fn live(&self) -> f64 {
        self.get("sessiondb_sessions_live", &[])
    }
}

async fn scrape(app: &Running, store: &str) -> Scrape {
    let r = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers().get(CONTENT_TYPE).unwrap(),
        "text/plain; version=0.0.4"
    );
    let text = r.text().await.unwrap();
    let mut series = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line.rsplit_once(' ').expect("name{labels} value");
        let (name, labels) = match key.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
            None => (key, ""),
        };
        // No label value here holds a comma or a quote.
        let mut labels: Vec<(String, String)> = labels
            .split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("label=value");
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        let Some(at) = labels.iter().position(|(k, v)| k == "store" && v == store) else {
            continue;
        };
        labels.remove(at);
        labels.sort();
        series.insert((name.to_owned(), labels), value.parse().unwrap());
    }
    assert!(
        !series.is_empty(),
        "no series labelled store={store:?}:\n{text}"
    );
    Scrape { series }
}

/// With `--metrics`, a scrape sees a sign-up and a login as two logins and a sign-out
/// as a session ended by logout. On Redis, `RedisStore::publish_metrics` publishes
/// only what Redis itself knows (the live sessions, from its registry) and this
/// process's dropped events; the lifetime counters (logins, sessions ended by reason)
/// are the embedded store's own tallies and are not published there. So on Redis the
/// test checks the live gauge and the timed script calls (`op="login"`, `op="end"`)
/// instead.
async fn metrics_count_a_login_and_a_sign_out(backend: Backend) {
    let config = metrics_config();
    let store = config.metrics_label.clone();
    let (_dir, app) = start(&backend, config).await;
    let before = scrape(&app, &store).await;
    let laptop = Device::new(&app, FIREFOX_LINUX);
    laptop.sign_up("alice", "correct horse battery").await;
    let phone = Device::new(&app, CHROME_ANDROID);
    phone.log_in("alice", "correct horse battery").await;
    let signed_in = scrape(&app, &store).await;
    assert_eq!(signed_in.live() - before.live(), 2.0, "two sessions");

    let csrf = csrf_in(&phone.devices().await.body);
    let out = phone.post("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let after = scrape(&app, &store).await;
    assert_eq!(after.live() - signed_in.live(), -1.0, "one signed out");

    match backend {
        Backend::Embedded => {
            let logins = "sessiondb_logins_total";
            assert_eq!(signed_in.get(logins, &[]) - before.get(logins, &[]), 2.0);
            assert_eq!(after.get(logins, &[]), signed_in.get(logins, &[]));
            let created = "sessiondb_sessions_created_total";
            assert_eq!(signed_in.get(created, &[]) - before.get(created, &[]), 2.0);
            assert_eq!(signed_in.ended("logout"), before.ended("logout"));
            assert_eq!(after.ended("logout") - signed_in.ended("logout"), 1.0);
            assert_eq!(after.ended("expired"), before.ended("expired"));
            assert_eq!(after.ended("revoked"), before.ended("revoked"));
            // The histograms registered when the store opened, under its label.
            assert_eq!(after.get("sessiondb_recovery_seconds_count", &[]), 1.0);
        }
        Backend::Redis { .. } => {
            assert_eq!(
                signed_in.script_calls("login") - before.script_calls("login"),
                2.0
            );
            assert_eq!(after.script_calls("login"), signed_in.script_calls("login"));
            assert_eq!(
                after.script_calls("end") - signed_in.script_calls("end"),
                1.0
            );
            assert_eq!(after.get("sessiondb_redis_errors_total", &[]), 0.0);
        }
    }
    laptop.devices().await;
}

/// A session left idle past its timeout ends as expired, which a scrape shows (the
/// embedded store's reaper ends it within a second; Redis's registry stops counting
/// it as live at its deadline — as above, Redis publishes no ended counters).
async fn metrics_count_a_session_that_expires(backend: Backend) {
    let config = Config {
        idle_timeout: Duration::from_secs(2),
        ..metrics_config()
    };
    let store = config.metrics_label.clone();
    let (_dir, app) = start(&backend, config).await;
    let before = scrape(&app, &store).await;
    let laptop = Device::new(&app, FIREFOX_LINUX);
    laptop.sign_up("alice", "correct horse battery").await;
    let signed_in = scrape(&app, &store).await;
    assert_eq!(signed_in.live() - before.live(), 1.0);
    assert_eq!(signed_in.ended("expired"), before.ended("expired"));

    // No request touches the session meanwhile: only the scrapes, without cookies.
    let give_up = Instant::now() + Duration::from_secs(15);
    let expired = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = scrape(&app, &store).await;
        let done = match backend {
            Backend::Embedded => now.ended("expired") > signed_in.ended("expired"),
            Backend::Redis { .. } => now.live() < signed_in.live(),
        };
        if done {
            break now;
        }
        assert!(Instant::now() < give_up, "the session never expired");
    };
    assert_eq!(expired.live(), before.live(), "no longer live");
    if let Backend::Embedded = backend {
        assert_eq!(expired.ended("expired") - signed_in.ended("expired"), 1.0);
        assert_eq!(expired.ended("logout"), before.ended("logout"));
    }
    assert!(laptop.is_signed_out().await);
}

/// `/metrics` exists only with `--metrics`, and answers only a loopback peer that did
/// not come through a proxy, unless `--metrics-public`.
async fn metrics_are_404_without_the_flag_and_refused_to_other_peers(backend: Backend) {
    let plain = reqwest::Client::new();
    let (_dir, off) = start(&backend, test_config()).await;
    let r = plain.get(off.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let config = metrics_config();
    let store = config.metrics_label.clone();
    let (_dir, on) = start(&backend, config).await;
    scrape(&on, &store).await;
    // A reverse proxy on this machine connects from loopback too.
    let proxied = plain
        .get(on.url("/metrics"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::FORBIDDEN);

    // A peer elsewhere (the app sees 203.0.113.9 as every connection's address).
    let elsewhere: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    for public in [false, true] {
        let config = Config {
            metrics_public: public,
            ..metrics_config()
        };
        let store = config.metrics_label.clone();
        let dir = tempfile::tempdir().unwrap();
        let app = Running::start_seen_from(&backend, dir.path(), config, Some(elsewhere)).await;
        if public {
            scrape(&app, &store).await;
        } else {
            let r = plain.get(app.url("/metrics")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
            let body = r.text().await.unwrap();
            assert!(!body.contains("sessiondb_"), "{body}");
        }
        // The rest of the app is served to it as ever.
        let page = plain.get(app.url("/login")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "public: {public}");
    }
}

/// Each scenario as two tests: `embedded::NAME` on the embedded durable store and
/// `on_redis::NAME` on a redis-server started for it (stopped by pid at its end).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Embedded).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(redis) = super::RedisServer::start(super::NO_PERSISTENCE) else {
                        return;
                    };
                    let backend = super::Backend::Redis {
                        url: redis.url(),
                        prefix: "sessiondb-app-test:".into(),
                    };
                    super::$name(backend).await;
                }
            )*
        }
    };
}

on_both_backends!(
    sign_up_lists_this_device_with_its_label_and_both_deadlines,
    each_request_reports_its_device_at_most_once_per_touch_interval,
    the_address_is_the_peers_unless_forwarded_for_is_trusted,
    login_rotates_the_cookie_and_the_old_cookie_stops_working,
    a_wrong_password_and_an_unknown_user_get_the_same_generic_answer,
    a_post_with_a_missing_or_wrong_csrf_token_is_403_and_changes_nothing,
    sign_out_ends_this_session_and_clears_the_cookie,
    one_device_signs_out_another_which_then_lands_on_the_login_page,
    sign_out_everywhere_ends_every_device_of_that_user_only,
    sign_out_others_keeps_this_device_and_ends_the_users_others,
    changing_the_password_asks_for_it_unless_recent_and_ends_every_older_session,
    a_user_cannot_sign_out_another_users_device,
    sign_up_refuses_taken_usernames_and_short_passwords_and_binds_nothing,
    cookies_are_httponly_lax_path_root_and_secure_unless_insecure_http,
    a_cookie_that_is_not_a_token_is_no_session_and_gets_a_fresh_one,
    every_response_forbids_caching_framing_and_scripts,
    accounts_and_signed_in_sessions_survive_a_restart,
    a_flood_of_cookieless_requests_leaves_the_signed_in_sessions_untouched,
    metrics_count_a_login_and_a_sign_out,
    metrics_count_a_session_that_expires,
    metrics_are_404_without_the_flag_and_refused_to_other_peers,
);
