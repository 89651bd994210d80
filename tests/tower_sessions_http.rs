//! The tower-sessions store over real HTTP: an axum app with `SessionManagerLayer` over
//! `SessionDbStore`, served on 127.0.0.1, driven by reqwest.
//!
//! Part one reproduces tower-sessions' own route tests (its repository runs the same
//! `route_tests!` against every store: `tests/common/mod.rs`), on each of our backends.
//! Part two pins what only sessiondb does: login rotates and binds, "log out everywhere"
//! ends another client's session and stays final against its in-flight request, the
//! devices page, expiry, and sessions surviving a restart.

#[path = "support/tower_app.rs"]
mod tower_app;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use sessiondb::tower_sessions::SessionDbStore;
use tower_app::{
    Backend, Held, Server, body, client, client_with, helper_routes, open, reopen, store_on,
    tower_routes,
};
use tower_sessions::Expiry;

/// Returns from the test (skipped, with a message) when its backend is Redis and
/// redis-server is not installed.
macro_rules! or_skip {
    ($opened:expr) => {
        match $opened {
            Some(opened) => opened,
            None => return,
        }
    };
}

/// A server running tower-sessions' route-test app over a store on `backend`.
async fn tower_app(
    backend: Backend,
    max_age: Option<time::Duration>,
    domain: Option<&str>,
) -> Option<(Server, Held)> {
    let (store, held) = store_on(backend).await?;
    let app = tower_routes(store.clone(), max_age, domain.map(str::to_owned));
    Some((Server::start(app, store).await, held))
}

async fn len(store: &SessionDbStore) -> usize {
    store.sessions().len().await.unwrap()
}

async fn sessions_of(store: &SessionDbStore, user: &str) -> usize {
    store.sessions().sessions_of(user).await.unwrap().len()
}

/// A plain client: tower-sessions' route tests send cookies by hand.
fn plain() -> reqwest::Client {
    reqwest::Client::new()
}

/// The session cookie a response set, parsed.
struct SetCookie {
    value: String,
    http_only: bool,
    secure: bool,
    same_site_strict: bool,
    path: Option<String>,
    domain: Option<String>,
    max_age: Option<Duration>,
}

fn session_cookie(res: &reqwest::Response) -> Option<SetCookie> {
    res.cookies().find(|c| c.name() == "id").map(|c| SetCookie {
        value: c.value().to_owned(),
        http_only: c.http_only(),
        secure: c.secure(),
        same_site_strict: c.same_site_strict(),
        path: c.path().map(str::to_owned),
        domain: c.domain().map(str::to_owned),
        max_age: c.max_age(),
    })
}

async fn get_with(url: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = plain().get(url);
    if let Some(value) = cookie {
        req = req.header(COOKIE, format!("id={value}"));
    }
    req.send().await.expect("request")
}

fn within_a_second(actual: Option<Duration>, expected: Duration) -> bool {
    actual.is_some_and(|a| a.abs_diff(expected) <= Duration::from_secs(1))
}

const HOUR: time::Duration = time::Duration::hours(1);

// ---------------------------------------------------------------------------------
// Part one: tower-sessions' route tests, per backend.

async fn no_session_set(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, Some(HOUR), None).await);
    let res = get_with(&srv.url("/"), None).await;
    assert!(res.headers().get(SET_COOKIE).is_none());
}

async fn bogus_session_cookie(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, Some(HOUR), None).await);
    let res = get_with(&srv.url("/insert"), Some("AAAAAAAAAAAAAAAAAAAAAA")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = session_cookie(&res).expect("a session cookie");
    assert_ne!(cookie.value, "AAAAAAAAAAAAAAAAAAAAAA");
}

async fn malformed_session_cookie(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, Some(HOUR), None).await);
    let res = get_with(&srv.url("/"), Some("malformed")).await;
    // The session stays empty, so the answer is a removal cookie.
    let cookie = session_cookie(&res).expect("a session cookie");
    assert_ne!(cookie.value, "malformed");
    assert_eq!(res.status(), StatusCode::OK);
}

async fn insert_session(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, Some(HOUR), None).await);
    let res = get_with(&srv.url("/insert"), None).await;
    let c = session_cookie(&res).expect("a session cookie");
    assert!(c.http_only);
    assert!(c.same_site_strict);
    assert!(c.max_age.is_some_and(|d| d <= Duration::from_secs(3600)));
    assert!(c.secure);
    assert_eq!(c.path.as_deref(), Some("/"));
}

async fn session_max_age(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, None, None).await);
    let res = get_with(&srv.url("/insert"), None).await;
    let c = session_cookie(&res).expect("a session cookie");
    assert!(c.http_only && c.same_site_strict && c.secure);
    assert!(c.max_age.is_none());
    assert_eq!(c.path.as_deref(), Some("/"));
}

async fn get_session(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, Some(HOUR), None).await);
    let res = get_with(&srv.url("/insert"), None).await;
    let c = session_cookie(&res).expect("a session cookie");
    let res = get_with(&srv.url("/get"), Some(&c.value)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "42");
}

async fn get_no_value(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, Some(HOUR), None).await);
    let res = get_with(&srv.url("/get_value"), None).await;
    assert_eq!(res.text().await.unwrap(), "None");
}

async fn remove_last_value(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, Some(HOUR), None).await);
    let res = get_with(&srv.url("/insert"), None).await;
    let c = session_cookie(&res).expect("a session cookie");
    get_with(&srv.url("/remove_value"), Some(&c.value)).await;
    let res = get_with(&srv.url("/get_value"), Some(&c.value)).await;
    assert_eq!(res.text().await.unwrap(), "None");
}

async fn cycle_session_id(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, Some(HOUR), None).await);
    let res = get_with(&srv.url("/insert"), None).await;
    let first = session_cookie(&res).expect("a session cookie");
    let res = get_with(&srv.url("/cycle_id"), Some(&first.value)).await;
    let second = session_cookie(&res).expect("a new session cookie");
    let res = get_with(&srv.url("/get"), Some(&second.value)).await;
    assert_ne!(first.value, second.value);
    assert_eq!(res.text().await.unwrap(), "42");
    // Beyond tower-sessions' test: the old id is dead.
    let res = get_with(&srv.url("/get_value"), Some(&first.value)).await;
    assert_eq!(res.text().await.unwrap(), "None");
}

async fn flush_session(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, Some(HOUR), None).await);
    let res = get_with(&srv.url("/insert"), None).await;
    let c = session_cookie(&res).expect("a session cookie");
    let res = get_with(&srv.url("/flush"), Some(&c.value)).await;
    let removal = session_cookie(&res).expect("a removal cookie");
    assert_eq!(removal.value, "");
    assert_eq!(removal.max_age, Some(Duration::ZERO));
    assert_eq!(removal.path.as_deref(), Some("/"));
    let res = get_with(&srv.url("/get_value"), Some(&c.value)).await;
    assert_eq!(res.text().await.unwrap(), "None");
}

async fn flush_with_domain(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, Some(HOUR), Some("localhost")).await);
    let res = get_with(&srv.url("/insert"), None).await;
    let c = session_cookie(&res).expect("a session cookie");
    let res = get_with(&srv.url("/flush"), Some(&c.value)).await;
    let removal = session_cookie(&res).expect("a removal cookie");
    assert_eq!(removal.value, "");
    assert_eq!(removal.max_age, Some(Duration::ZERO));
    assert_eq!(removal.domain.as_deref(), Some("localhost"));
    assert_eq!(removal.path.as_deref(), Some("/"));
}

async fn set_expiry(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, Some(HOUR), Some("localhost")).await);
    let res = get_with(&srv.url("/insert"), None).await;
    let c = session_cookie(&res).expect("a session cookie");
    assert!(within_a_second(c.max_age, Duration::from_secs(3600)));
    let res = get_with(&srv.url("/set_expiry"), Some(&c.value)).await;
    let c2 = session_cookie(&res).expect("a session cookie");
    assert!(within_a_second(c2.max_age, Duration::from_secs(86_400)));
    // Beyond tower-sessions' test: the store took the new expiry.
    let id: tower_sessions::session::Id = c2.value.parse().unwrap();
    let s = srv
        .store
        .sessions()
        .peek(&SessionDbStore::token(id))
        .await
        .unwrap()
        .expect("live");
    let left = s
        .expires_at()
        .to_system_time()
        .duration_since(std::time::SystemTime::now());
    assert!(within_a_second(left.ok(), Duration::from_secs(86_400)));
}

async fn change_expiry_type(b: Backend) {
    let (srv, _held) = or_skip!(tower_app(b, None, Some("localhost")).await);
    let res = get_with(&srv.url("/insert"), None).await;
    let c = session_cookie(&res).expect("a session cookie");
    assert_eq!(c.max_age, None);
    let res = get_with(&srv.url("/set_expiry"), Some(&c.value)).await;
    let c = session_cookie(&res).expect("a session cookie");
    assert!(within_a_second(c.max_age, Duration::from_secs(86_400)));

    let (srv2, _held2) = or_skip!(tower_app(b, Some(HOUR), Some("localhost")).await);
    let res = get_with(&srv2.url("/insert"), None).await;
    let c = session_cookie(&res).expect("a session cookie");
    assert!(within_a_second(c.max_age, Duration::from_secs(3600)));
    let res = get_with(&srv2.url("/remove_expiry"), Some(&c.value)).await;
    let c = session_cookie(&res).expect("a session cookie");
    assert_eq!(c.max_age, None);
}

macro_rules! per_backend {
    ($backend:ident, $variant:expr, [$($test:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($variant).await;
                }
            )*
        }
    };
}

macro_rules! route_tests {
    ($backend:ident, $variant:expr) => {
        per_backend!(
            $backend,
            $variant,
            [
                no_session_set,
                bogus_session_cookie,
                malformed_session_cookie,
                insert_session,
                session_max_age,
                get_session,
                get_no_value,
                remove_last_value,
                cycle_session_id,
                flush_session,
                flush_with_domain,
                set_expiry,
                change_expiry_type,
            ]
        );
    };
}

route_tests!(route_memory, Backend::Memory);
route_tests!(route_log, Backend::Log);
route_tests!(route_log_sync, Backend::LogSync);
#[cfg(feature = "sled")]
route_tests!(route_sled, Backend::Sled);
#[cfg(feature = "redis")]
route_tests!(route_redis, Backend::Redis);
#[cfg(feature = "postgres")]
route_tests!(route_postgres, Backend::Postgres);

// ---------------------------------------------------------------------------------
// Part two: the per-user helpers, over HTTP with cookie jars.

async fn helper_app(backend: Backend, expiry: Option<Expiry>) -> Option<(Server, Held)> {
    let (store, held) = store_on(backend).await?;
    let app = helper_routes(store.clone(), expiry);
    Some((Server::start(app, store).await, held))
}

/// The session cookie value `jar` holds for `srv`.
fn cookie_in(jar: &reqwest::cookie::Jar, srv: &Server) -> Option<String> {
    use reqwest::cookie::CookieStore;
    let url = srv.url("/").parse().unwrap();
    let header = jar.cookies(&url)?;
    header
        .to_str()
        .unwrap()
        .split("; ")
        .find_map(|kv| kv.strip_prefix("id="))
        .map(str::to_owned)
}

async fn data_lives_across_requests_and_clients_do_not_share_it(b: Backend) {
    let (srv, _held) = or_skip!(helper_app(b, None).await);
    let (c1, _) = client();
    let (c2, _) = client();
    body(&c1, &srv.url("/put/apple")).await;
    body(&c2, &srv.url("/put/pear")).await;
    assert_eq!(body(&c1, &srv.url("/get")).await, "apple");
    assert_eq!(body(&c2, &srv.url("/get")).await, "pear");
    assert_eq!(len(&srv.store).await, 2);
}

async fn login_rotates_the_cookie_keeps_the_data_and_binds_the_user(b: Backend) {
    let (srv, _held) = or_skip!(helper_app(b, None).await);
    let (c, jar) = client();
    body(&c, &srv.url("/put/cart")).await;
    let before = cookie_in(&jar, &srv).expect("a cookie");
    assert_eq!(body(&c, &srv.url("/login/alice")).await, "ok");
    let after = cookie_in(&jar, &srv).expect("a cookie");
    assert_ne!(before, after, "login must change the cookie");
    assert_eq!(body(&c, &srv.url("/whoami")).await, "alice");
    assert_eq!(body(&c, &srv.url("/get")).await, "cart");
    // Whoever held the old cookie (a fixation attacker) has nothing.
    let res = get_with(&srv.url("/whoami"), Some(&before)).await;
    assert_eq!(res.text().await.unwrap(), "anonymous");
    let res = get_with(&srv.url("/get"), Some(&before)).await;
    assert_eq!(res.text().await.unwrap(), "none");
    assert_eq!(sessions_of(&srv.store, "alice").await, 1);
}

async fn login_of_a_new_visitor_stores_and_binds_the_session(b: Backend) {
    let (srv, _held) = or_skip!(helper_app(b, None).await);
    let (c, jar) = client();
    assert_eq!(body(&c, &srv.url("/login/alice")).await, "ok");
    assert!(cookie_in(&jar, &srv).is_some());
    assert_eq!(body(&c, &srv.url("/whoami")).await, "alice");
}

async fn login_with_a_bad_user_id_changes_nothing(b: Backend) {
    let (srv, _held) = or_skip!(helper_app(b, None).await);
    let (c, jar) = client();
    body(&c, &srv.url("/put/x")).await;
    let before = cookie_in(&jar, &srv).unwrap();
    let long = "u".repeat(300);
    let answer = body(&c, &srv.url(&format!("/login/{long}"))).await;
    assert!(answer.starts_with("error: "), "{answer}");
    assert_eq!(
        cookie_in(&jar, &srv).unwrap(),
        before,
        "no rotation on bad input"
    );
    assert_eq!(body(&c, &srv.url("/whoami")).await, "anonymous");
}

async fn logout_everywhere_from_one_client_ends_the_others_session(b: Backend) {
    let (srv, _held) = or_skip!(helper_app(b, None).await);
    let (laptop, _) = client();
    let (phone, _) = client();
    body(&laptop, &srv.url("/login/alice")).await;
    body(&phone, &srv.url("/login/alice")).await;
    body(&phone, &srv.url("/put/draft")).await;
    let (bob, _) = client();
    body(&bob, &srv.url("/login/bob")).await;
    assert_eq!(body(&laptop, &srv.url("/logout_everywhere")).await, "2");
    assert_eq!(body(&phone, &srv.url("/whoami")).await, "anonymous");
    assert_eq!(body(&phone, &srv.url("/get")).await, "none");
    assert_eq!(body(&laptop, &srv.url("/whoami")).await, "anonymous");
    assert_eq!(
        body(&bob, &srv.url("/whoami")).await,
        "bob",
        "other users untouched"
    );
    assert_eq!(sessions_of(&srv.store, "alice").await, 0);
}

async fn a_request_in_flight_cannot_save_a_revoked_session_back(b: Backend) {
    let (srv, _held) = or_skip!(helper_app(b, None).await);
    let (laptop, _) = client();
    let (phone, _) = client();
    body(&laptop, &srv.url("/login/alice")).await;
    body(&phone, &srv.url("/login/alice")).await;
    let slow = {
        let phone = phone.clone();
        let url = srv.url("/slow_put/late/600");
        tokio::spawn(async move { phone.get(url).send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(body(&laptop, &srv.url("/logout_everywhere")).await, "2");
    assert!(
        slow.await.unwrap().is_success(),
        "the late save is accepted, not a 500"
    );
    assert_eq!(body(&phone, &srv.url("/get")).await, "none");
    assert_eq!(body(&phone, &srv.url("/whoami")).await, "anonymous");
    assert_eq!(sessions_of(&srv.store, "alice").await, 0);
}

async fn devices_lists_the_users_sessions_and_ends_one(b: Backend) {
    let (srv, _held) = or_skip!(helper_app(b, None).await);
    let (laptop, _) = client();
    let (phone, _) = client();
    let (bob, _) = client();
    body(&laptop, &srv.url("/login/alice")).await;
    body(&laptop, &srv.url("/label/laptop")).await;
    body(&phone, &srv.url("/login/alice")).await;
    body(&phone, &srv.url("/label/phone")).await;
    body(&bob, &srv.url("/login/bob")).await;
    let listing = body(&laptop, &srv.url("/devices")).await;
    let rows: Vec<Vec<&str>> = listing.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(rows.len(), 2, "{listing}");
    assert_eq!(rows[0][1..], ["laptop", "current"]);
    assert_eq!(rows[1][1..], ["phone", "other"]);
    // Bob cannot end Alice's phone; Alice can.
    let phone_id = rows[1][0];
    assert_eq!(
        body(&bob, &srv.url(&format!("/end_device/{phone_id}"))).await,
        "false"
    );
    assert_eq!(body(&phone, &srv.url("/whoami")).await, "alice");
    assert_eq!(
        body(&laptop, &srv.url(&format!("/end_device/{phone_id}"))).await,
        "true"
    );
    assert_eq!(body(&phone, &srv.url("/whoami")).await, "anonymous");
    assert_eq!(body(&laptop, &srv.url("/whoami")).await, "alice");
    assert_eq!(body(&laptop, &srv.url("/devices")).await.lines().count(), 1);
    assert!(
        body(&phone, &srv.url("/devices"))
            .await
            .starts_with("error: ")
    );
}

async fn rotate_keeps_the_user_and_public_id_while_tower_cycle_id_drops_the_user(b: Backend) {
    let (srv, _held) = or_skip!(helper_app(b, None).await);
    let (c, jar) = client();
    body(&c, &srv.url("/login/alice")).await;
    body(&c, &srv.url("/put/kept")).await;
    let sid = body(&c, &srv.url("/sid")).await;
    let before = cookie_in(&jar, &srv).unwrap();
    body(&c, &srv.url("/rotate")).await;
    let after = cookie_in(&jar, &srv).unwrap();
    assert_ne!(before, after);
    assert_eq!(
        body(&c, &srv.url("/sid")).await,
        sid,
        "public id survives rotate"
    );
    assert_eq!(body(&c, &srv.url("/whoami")).await, "alice");
    assert_eq!(body(&c, &srv.url("/get")).await, "kept");
    let res = get_with(&srv.url("/get"), Some(&before)).await;
    assert_eq!(
        res.text().await.unwrap(),
        "none",
        "the old id is dead at once"
    );

    // tower-sessions' own cycle_id: the data moves, the binding does not (fails closed).
    body(&c, &srv.url("/cycle_id")).await;
    assert_ne!(cookie_in(&jar, &srv).unwrap(), after);
    assert_eq!(body(&c, &srv.url("/get")).await, "kept");
    assert_eq!(body(&c, &srv.url("/whoami")).await, "anonymous");
    assert_eq!(sessions_of(&srv.store, "alice").await, 0);
}

async fn a_session_expires_after_its_inactivity_lifetime(b: Backend) {
    let expiry = Expiry::OnInactivity(time::Duration::seconds(2));
    let (srv, _held) = or_skip!(helper_app(b, Some(expiry)).await);
    let (c, jar) = client();
    body(&c, &srv.url("/put/short")).await;
    let cookie = cookie_in(&jar, &srv).expect("a cookie");
    // The cookie is sent by hand from here on: the jar would drop it at its Max-Age,
    // and this is about the server forgetting the session.
    let get = |cookie: String| {
        let url = srv.url("/get");
        async move { get_with(&url, Some(&cookie)).await.text().await.unwrap() }
    };
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // A write is activity: it moves the expiry to 2 s from now.
    let res = plain()
        .get(srv.url("/put/again"))
        .header(COOKIE, format!("id={cookie}"))
        .send()
        .await
        .unwrap();
    assert!(session_cookie(&res).is_some_and(|c| c.value == cookie));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(get(cookie.clone()).await, "again", "extended by the write");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(get(cookie).await, "none");
    // The reaper removes it from the engine too, within a tick of its timing wheel
    // (about a second).
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    while len(&srv.store).await > 0 && std::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        len(&srv.store).await == 0,
        "the reaper removed the expired session"
    );
}

async fn logout_ends_only_this_session_and_removes_the_cookie(b: Backend) {
    let (srv, _held) = or_skip!(helper_app(b, None).await);
    let (laptop, jar) = client();
    let (phone, _) = client();
    body(&laptop, &srv.url("/login/alice")).await;
    body(&phone, &srv.url("/login/alice")).await;
    body(&laptop, &srv.url("/logout")).await;
    assert!(cookie_in(&jar, &srv).is_none(), "the cookie is removed");
    assert_eq!(body(&laptop, &srv.url("/whoami")).await, "anonymous");
    assert_eq!(body(&phone, &srv.url("/whoami")).await, "alice");
}

per_backend!(
    helpers_memory,
    Backend::Memory,
    [
        data_lives_across_requests_and_clients_do_not_share_it,
        login_rotates_the_cookie_keeps_the_data_and_binds_the_user,
        login_of_a_new_visitor_stores_and_binds_the_session,
        login_with_a_bad_user_id_changes_nothing,
        logout_everywhere_from_one_client_ends_the_others_session,
        a_request_in_flight_cannot_save_a_revoked_session_back,
        devices_lists_the_users_sessions_and_ends_one,
        rotate_keeps_the_user_and_public_id_while_tower_cycle_id_drops_the_user,
        a_session_expires_after_its_inactivity_lifetime,
        logout_ends_only_this_session_and_removes_the_cookie,
    ]
);

per_backend!(
    helpers_log_sync,
    Backend::LogSync,
    [
        login_rotates_the_cookie_keeps_the_data_and_binds_the_user,
        logout_everywhere_from_one_client_ends_the_others_session,
        a_request_in_flight_cannot_save_a_revoked_session_back,
        rotate_keeps_the_user_and_public_id_while_tower_cycle_id_drops_the_user,
        a_session_expires_after_its_inactivity_lifetime,
    ]
);

#[cfg(feature = "redis")]
per_backend!(
    helpers_redis,
    Backend::Redis,
    [
        data_lives_across_requests_and_clients_do_not_share_it,
        login_rotates_the_cookie_keeps_the_data_and_binds_the_user,
        login_of_a_new_visitor_stores_and_binds_the_session,
        login_with_a_bad_user_id_changes_nothing,
        logout_everywhere_from_one_client_ends_the_others_session,
        a_request_in_flight_cannot_save_a_revoked_session_back,
        devices_lists_the_users_sessions_and_ends_one,
        rotate_keeps_the_user_and_public_id_while_tower_cycle_id_drops_the_user,
        a_session_expires_after_its_inactivity_lifetime,
        logout_ends_only_this_session_and_removes_the_cookie,
    ]
);

#[cfg(feature = "postgres")]
per_backend!(
    helpers_postgres,
    Backend::Postgres,
    [
        data_lives_across_requests_and_clients_do_not_share_it,
        login_rotates_the_cookie_keeps_the_data_and_binds_the_user,
        login_of_a_new_visitor_stores_and_binds_the_session,
        login_with_a_bad_user_id_changes_nothing,
        logout_everywhere_from_one_client_ends_the_others_session,
        a_request_in_flight_cannot_save_a_revoked_session_back,
        devices_lists_the_users_sessions_and_ends_one,
        rotate_keeps_the_user_and_public_id_while_tower_cycle_id_drops_the_user,
        a_session_expires_after_its_inactivity_lifetime,
        logout_ends_only_this_session_and_removes_the_cookie,
    ]
);

#[cfg(feature = "sled")]
per_backend!(
    helpers_sled,
    Backend::Sled,
    [
        login_rotates_the_cookie_keeps_the_data_and_binds_the_user,
        logout_everywhere_from_one_client_ends_the_others_session,
        rotate_keeps_the_user_and_public_id_while_tower_cycle_id_drops_the_user,
    ]
);

// ---------------------------------------------------------------------------------
// A restart: the session, its data and its user survive the server and the store.

async fn a_restart_of_the_store_keeps_the_session(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SessionDbStore::new(open(b, dir.path()));
    let srv = Server::start(helper_routes(store.clone(), None), store).await;
    let jar = {
        let (c, jar) = client();
        body(&c, &srv.url("/put/survives")).await;
        body(&c, &srv.url("/login/alice")).await;
        body(&c, &srv.url("/label/laptop")).await;
        jar
    }; // the client, and its kept-alive connections, go here
    let sid = {
        let c = client_with(jar.clone());
        body(&c, &srv.url("/sid")).await
    };
    // Make buffered writes durable, as a planned shutdown does.
    srv.store.sessions().as_embedded().unwrap().flush().unwrap();
    srv.stop().await;

    let store = SessionDbStore::new(reopen(b, dir.path()).await);
    let srv = Server::start(helper_routes(store.clone(), None), store).await;
    let c = client_with(jar);
    assert_eq!(body(&c, &srv.url("/get")).await, "survives");
    assert_eq!(body(&c, &srv.url("/whoami")).await, "alice");
    assert_eq!(body(&c, &srv.url("/sid")).await, sid);
    assert!(
        body(&c, &srv.url("/devices"))
            .await
            .contains(" laptop current")
    );
    // And "log out everywhere" still reaches it after the restart.
    assert_eq!(body(&c, &srv.url("/logout_everywhere")).await, "1");
    drop(c);
    srv.stop().await;
}

per_backend!(
    restart_log,
    Backend::Log,
    [a_restart_of_the_store_keeps_the_session]
);
per_backend!(
    restart_log_sync,
    Backend::LogSync,
    [a_restart_of_the_store_keeps_the_session]
);
#[cfg(feature = "sled")]
per_backend!(
    restart_sled,
    Backend::Sled,
    [a_restart_of_the_store_keeps_the_session]
);

// ---------------------------------------------------------------------------------
// Several nodes sharing one Redis: what issue #7 is for.

/// Two app servers ("nodes"), each with its own `SessionDbStore` and its own connection,
/// over one Redis; `None` if redis-server is not installed.
#[cfg(feature = "redis")]
async fn two_nodes() -> Option<(Server, Server, Held)> {
    let (a, held) = store_on(Backend::Redis).await?;
    let url = held.shared_config().expect("a Redis URL");
    let b = SessionDbStore::new(
        sessiondb::Sessions::open(&url, tower_app::test_options())
            .await
            .expect("the second node connects"),
    );
    let node_a = Server::start(helper_routes(a.clone(), None), a).await;
    let node_b = Server::start(helper_routes(b.clone(), None), b).await;
    Some((node_a, node_b, held))
}

/// GETs `path` on `srv` with the session cookie `cookie` sent by hand (the jar would
/// send it too, cookies are not per port, but this says which cookie goes where).
#[cfg(feature = "redis")]
async fn on(srv: &Server, path: &str, cookie: &str) -> String {
    get_with(&srv.url(path), Some(cookie))
        .await
        .text()
        .await
        .unwrap()
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_from_one_node_works_on_another_and_logout_everywhere_reaches_both() {
    let Some((node_a, node_b, _held)) = two_nodes().await else {
        return;
    };
    // Log in through node A (rotates, binds, labels).
    let (laptop, jar) = client();
    body(&laptop, &node_a.url("/put/cart")).await;
    assert_eq!(body(&laptop, &node_a.url("/login/alice")).await, "ok");
    body(&laptop, &node_a.url("/label/laptop")).await;
    let cookie = cookie_in(&jar, &node_a).expect("a cookie");

    // The next request lands on node B: same session, data, user, public id.
    assert_eq!(on(&node_b, "/whoami", &cookie).await, "alice");
    assert_eq!(on(&node_b, "/get", &cookie).await, "cart");
    assert_eq!(
        on(&node_b, "/sid", &cookie).await,
        on(&node_a, "/sid", &cookie).await
    );
    let listing = on(&node_b, "/devices", &cookie).await;
    assert!(listing.ends_with(" laptop current"), "{listing}");

    // A second device logs in through node B; node A lists both.
    let (phone, phone_jar) = client();
    assert_eq!(body(&phone, &node_b.url("/login/alice")).await, "ok");
    let phone_cookie = cookie_in(&phone_jar, &node_b).expect("a cookie");
    assert_eq!(on(&node_a, "/devices", &cookie).await.lines().count(), 2);
    assert_eq!(on(&node_a, "/whoami", &phone_cookie).await, "alice");

    // "Log out everywhere" through node B ends the session node A issued.
    assert_eq!(on(&node_b, "/logout_everywhere", &cookie).await, "2");
    assert_eq!(on(&node_a, "/whoami", &cookie).await, "anonymous");
    assert_eq!(on(&node_a, "/get", &cookie).await, "none");
    assert_eq!(on(&node_a, "/whoami", &phone_cookie).await, "anonymous");
    assert_eq!(sessions_of(&node_a.store, "alice").await, 0);
    assert_eq!(sessions_of(&node_b.store, "alice").await, 0);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_one_node_kills_the_old_cookie_on_the_other() {
    let Some((node_a, node_b, _held)) = two_nodes().await else {
        return;
    };
    let (c, jar) = client();
    body(&c, &node_a.url("/login/alice")).await;
    body(&c, &node_a.url("/put/kept")).await;
    let before = cookie_in(&jar, &node_a).unwrap();
    let sid = on(&node_a, "/sid", &before).await;
    // The privilege change is served by node B.
    body(&c, &node_b.url("/rotate")).await;
    let after = cookie_in(&jar, &node_b).unwrap();
    assert_ne!(before, after);
    assert_eq!(
        on(&node_a, "/get", &before).await,
        "none",
        "old id dead on A"
    );
    assert_eq!(on(&node_a, "/whoami", &after).await, "alice");
    assert_eq!(on(&node_a, "/get", &after).await, "kept");
    assert_eq!(on(&node_a, "/sid", &after).await, sid, "same public id");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_on_one_node_cannot_save_back_a_session_revoked_on_another() {
    let Some((node_a, node_b, _held)) = two_nodes().await else {
        return;
    };
    let (laptop, _) = client();
    let (phone, phone_jar) = client();
    body(&laptop, &node_a.url("/login/alice")).await;
    body(&phone, &node_a.url("/login/alice")).await;
    let phone_cookie = cookie_in(&phone_jar, &node_a).unwrap();
    // The phone's slow request is on node A; the laptop revokes through node B.
    let slow = {
        let url = node_a.url("/slow_put/late/600");
        let cookie = phone_cookie.clone();
        tokio::spawn(async move { get_with(&url, Some(&cookie)).await.status() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(body(&laptop, &node_b.url("/logout_everywhere")).await, "2");
    assert!(slow.await.unwrap().is_success(), "accepted, not a 500");
    assert_eq!(on(&node_b, "/get", &phone_cookie).await, "none");
    assert_eq!(on(&node_a, "/whoami", &phone_cookie).await, "anonymous");
    assert_eq!(sessions_of(&node_b.store, "alice").await, 0);
}

/// A node restarting (its store dropped, a new one connected) loses nothing: the
/// sessions are in Redis.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_a_node_keeps_the_session_on_redis() {
    let Some((srv, held)) = helper_app(Backend::Redis, None).await else {
        return;
    };
    let (c, jar) = client();
    body(&c, &srv.url("/put/survives")).await;
    body(&c, &srv.url("/login/alice")).await;
    let cookie = cookie_in(&jar, &srv).unwrap();
    let sid = body(&c, &srv.url("/sid")).await;
    drop(c);
    srv.stop().await;

    let url = held.shared_config().unwrap();
    let store = SessionDbStore::new(
        sessiondb::Sessions::open(&url, tower_app::test_options())
            .await
            .unwrap(),
    );
    let srv = Server::start(helper_routes(store.clone(), None), store).await;
    assert_eq!(on(&srv, "/get", &cookie).await, "survives");
    assert_eq!(on(&srv, "/whoami", &cookie).await, "alice");
    assert_eq!(on(&srv, "/sid", &cookie).await, sid);
    assert_eq!(on(&srv, "/logout_everywhere", &cookie).await, "1");
    srv.stop().await;
}
