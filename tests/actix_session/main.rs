//! The actix-session store (`sessiondb::actix_session`), on a real store in a tempdir:
//!
//! - the behaviour actix-session's own acceptance suite asks of every backend (basic
//!   workflow, TTL refreshed on changes / on every request, the login-logout workflow
//!   with invalidation, a session-reading guard), under both cookie content-security
//!   policies, in-process and over HTTP with a real bound server and client;
//! - the store methods themselves, as actix-session's Redis and cookie stores test
//!   theirs (missing keys, bad state, updates of gone sessions), plus what sessiondb adds:
//!   ending is final, TTLs are exact, data is durable;
//! - the helpers over HTTP: login with rotation, devices, ending one device, "log out
//!   everywhere", labels, and the failure modes around `renew`.

use std::time::{Duration, Instant};

use actix_session::config::{
    BrowserSession, CookieContentSecurity, PersistentSession, TtlExtensionPolicy,
};
use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_session::{Session, SessionExt, SessionMiddleware};
use actix_web::cookie::{Cookie, Key, time};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, guard, test, web};
use serde::{Deserialize, Serialize};
use sessiondb::actix_session::{Error, KEY_ENTRY, SessionDbStore};
use sessiondb::{Durability, Limits, ManualClock, Options, SessionId, Store, Timestamp, Token};
use tempfile::TempDir;

const POLICIES: [CookieContentSecurity; 2] = [
    CookieContentSecurity::Signed,
    CookieContentSecurity::Private,
];

/// A store on disk in a tempdir, on a manual clock.
struct Fixture {
    _dir: TempDir,
    store: SessionDbStore,
    clock: ManualClock,
}

fn fixture_with(opts: impl FnOnce(Options) -> Options) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let engine =
        Store::open_with(dir.path(), opts(Options::default().clock(clock.clone()))).unwrap();
    Fixture {
        _dir: dir,
        store: SessionDbStore::new(engine),
        clock,
    }
}

fn fixture() -> Fixture {
    fixture_with(|o| o)
}

fn key(s: &str) -> SessionKey {
    s.to_owned().try_into().unwrap()
}

fn state(entries: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn cookie_named(res: &ServiceResponse, name: &str) -> Option<Cookie<'static>> {
    res.response()
        .cookies()
        .find(|c| c.name() == name)
        .map(Cookie::into_owned)
}

fn awc_cookie<S>(res: &actix_test::ClientResponse<S>, name: &str) -> Option<Cookie<'static>> {
    res.cookies()
        .unwrap()
        .iter()
        .find(|c| c.name() == name)
        .cloned()
}

// ----------------------------------------------------------------------------------
// The acceptance behaviour every actix-session backend must show

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Counter {
    user_id: Option<String>,
    counter: i32,
}

fn counter_of(session: &Session) -> Counter {
    Counter {
        user_id: session.get("user_id").unwrap(),
        counter: session.get("counter").unwrap_or(None).unwrap_or(0),
    }
}

async fn index(session: Session) -> HttpResponse {
    HttpResponse::Ok().json(counter_of(&session))
}

async fn do_something(session: Session) -> actix_web::Result<HttpResponse> {
    let mut c = counter_of(&session);
    c.counter += 1;
    session.insert("counter", c.counter)?;
    Ok(HttpResponse::Ok().json(c))
}

#[derive(Deserialize)]
struct Identity {
    user_id: String,
}

/// actix-session's own login: an app-level user id, and `renew`.
async fn renew_login(
    who: web::Json<Identity>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    session.insert("user_id", &who.user_id)?;
    session.renew();
    Ok(HttpResponse::Ok().json(counter_of(&session)))
}

async fn purge_logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().finish()
}

#[actix_web::test]
async fn basic_workflow_sets_a_scoped_cookie_and_reads_the_state_back() {
    for policy in POLICIES {
        let f = fixture();
        let app = test::init_service(
            App::new()
                .wrap(
                    SessionMiddleware::builder(f.store.clone(), Key::generate())
                        .cookie_path("/test/".into())
                        .cookie_name("actix-test".into())
                        .cookie_domain(Some("localhost".into()))
                        .cookie_content_security(policy)
                        .session_lifecycle(
                            PersistentSession::default().session_ttl(time::Duration::seconds(100)),
                        )
                        .build(),
                )
                .route(
                    "/",
                    web::get().to(|s: Session| async move {
                        s.insert("counter", 100).unwrap();
                        "set"
                    }),
                )
                .route(
                    "/test/",
                    web::get().to(|s: Session| async move {
                        format!("counter: {}", s.get::<usize>("counter").unwrap().unwrap())
                    }),
                ),
        )
        .await;
        let res = app
            .call(test::TestRequest::get().to_request())
            .await
            .unwrap();
        let cookie = cookie_named(&res, "actix-test").expect("a session cookie");
        assert_eq!(cookie.path(), Some("/test/"));
        assert_eq!(cookie.domain(), Some("localhost"));
        let req = test::TestRequest::with_uri("/test/")
            .cookie(cookie)
            .to_request();
        assert_eq!(test::call_and_read_body(&app, req).await, "counter: 100");
        assert_eq!(f.store.engine().len(), 1);
    }
}

fn ttl_app_store(
    store: SessionDbStore,
    policy: CookieContentSecurity,
    ttl: time::Duration,
    every_request: bool,
) -> SessionMiddleware<SessionDbStore> {
    let mut lifecycle = PersistentSession::default().session_ttl(ttl);
    if every_request {
        lifecycle = lifecycle.session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest);
    }
    SessionMiddleware::builder(store, Key::generate())
        .cookie_content_security(policy)
        .session_lifecycle(lifecycle)
        .build()
}

#[actix_web::test]
async fn expiry_is_refreshed_on_changes_only_by_default() {
    for policy in POLICIES {
        let f = fixture();
        let ttl = time::Duration::seconds(60);
        let app = test::init_service(
            App::new()
                .wrap(ttl_app_store(f.store.clone(), policy, ttl, false))
                .route("/", web::get().to(do_something))
                .route("/test/", web::get().to(|| async { "no changes" })),
        )
        .await;
        let res = app
            .call(test::TestRequest::get().to_request())
            .await
            .unwrap();
        let c1 = cookie_named(&res, "id").expect("cookie set");
        assert_eq!(c1.max_age(), Some(ttl));
        let deadline = only_deadline(&f.store);
        assert_eq!(
            deadline,
            f.clock_now().saturating_add(Duration::from_secs(60))
        );

        f.clock.advance(Duration::from_secs(10));
        let req = test::TestRequest::with_uri("/test/")
            .cookie(c1.clone())
            .to_request();
        let res = app.call(req).await.unwrap();
        assert!(res.response().cookies().next().is_none());
        assert_eq!(only_deadline(&f.store), deadline);

        let res = app
            .call(test::TestRequest::get().cookie(c1).to_request())
            .await
            .unwrap();
        let c2 = cookie_named(&res, "id").expect("cookie set again");
        assert_eq!(c2.max_age(), Some(ttl));
        assert_eq!(
            only_deadline(&f.store),
            deadline.saturating_add(Duration::from_secs(10)),
            "a change moves the deadline to now + TTL"
        );
    }
}

#[actix_web::test]
async fn expiry_is_refreshed_on_every_request_when_configured() {
    for policy in POLICIES {
        let f = fixture();
        let ttl = time::Duration::seconds(60);
        let app = test::init_service(
            App::new()
                .wrap(ttl_app_store(f.store.clone(), policy, ttl, true))
                .route("/", web::get().to(do_something))
                .route("/test/", web::get().to(|| async { "no changes" })),
        )
        .await;
        let res = app
            .call(test::TestRequest::get().to_request())
            .await
            .unwrap();
        let c1 = cookie_named(&res, "id").expect("cookie set");
        assert_eq!(c1.max_age(), Some(ttl));

        // 50 s later a request that changes nothing pushes the deadline to now + 60 s.
        f.clock.advance(Duration::from_secs(50));
        let req = test::TestRequest::with_uri("/test/")
            .cookie(c1.clone())
            .to_request();
        let res = app.call(req).await.unwrap();
        let c2 = cookie_named(&res, "id").expect("cookie refreshed");
        assert_eq!(c2.max_age(), Some(ttl));
        assert_eq!(
            only_deadline(&f.store),
            f.clock_now().saturating_add(Duration::from_secs(60))
        );
        // Past the original deadline, the session still loads.
        f.clock.advance(Duration::from_secs(50));
        let req = test::TestRequest::with_uri("/").cookie(c2).to_request();
        let body: Counter = test::call_and_read_body_json(&app, req).await;
        assert_eq!(body.counter, 2);
    }
}

/// The app of actix-session's "complex workflow" and "guard" checks, on a real server.
fn workflow_server(store: SessionDbStore, policy: CookieContentSecurity) -> actix_test::TestServer {
    let key = Key::generate();
    actix_test::start(move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_name("test-session".into())
                    .cookie_content_security(policy)
                    .session_lifecycle(
                        PersistentSession::default().session_ttl(time::Duration::days(7)),
                    )
                    .build(),
            )
            .route("/", web::get().to(index))
            .route("/do_something", web::post().to(do_something))
            .route("/login", web::post().to(renew_login))
            .route("/logout", web::post().to(purge_logout))
            .service(
                web::scope("/protected")
                    .guard(guard::fn_guard(|g| {
                        g.get_session().get::<String>("user_id").unwrap().is_some()
                    }))
                    .route("/count", web::get().to(index)),
            )
    })
}

#[actix_web::test]
async fn login_logout_workflow_over_http_invalidates_old_cookies() {
    for policy in POLICIES {
        let f = fixture();
        let srv = workflow_server(f.store.clone(), policy);

        // No state, no cookie, nothing stored.
        let mut r = srv.get("/").send().await.unwrap();
        assert!(r.cookies().unwrap().is_empty());
        assert_eq!(
            r.json::<Counter>().await.unwrap(),
            Counter {
                user_id: None,
                counter: 0
            }
        );
        assert_eq!(f.store.engine().len(), 0);

        let mut r = srv.post("/do_something").send().await.unwrap();
        assert_eq!(r.json::<Counter>().await.unwrap().counter, 1);
        let c1 = awc_cookie(&r, "test-session").unwrap();
        assert_eq!(c1.max_age(), Some(time::Duration::days(7)));

        let mut r = srv.get("/").cookie(c1.clone()).send().await.unwrap();
        assert!(
            r.cookies().unwrap().is_empty(),
            "an unchanged session sets no cookie"
        );
        assert_eq!(r.json::<Counter>().await.unwrap().counter, 1);

        let mut r = srv
            .post("/do_something")
            .cookie(c1.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Counter>().await.unwrap().counter, 2);
        let c2 = awc_cookie(&r, "test-session").unwrap();
        assert_eq!(c2.max_age(), c1.max_age());

        // actix-session's login: renew. A new key, the state carried over.
        let mut r = srv
            .post("/login")
            .cookie(c2.clone())
            .send_json(&serde_json_value("ferris"))
            .await
            .unwrap();
        let c3 = awc_cookie(&r, "test-session").unwrap();
        assert_ne!(c2.value(), c3.value());
        assert_eq!(
            r.json::<Counter>().await.unwrap(),
            Counter {
                user_id: Some("ferris".into()),
                counter: 2
            }
        );

        let mut r = srv.get("/").cookie(c3.clone()).send().await.unwrap();
        assert_eq!(r.json::<Counter>().await.unwrap().counter, 2);
        let mut r = srv
            .post("/do_something")
            .cookie(c3.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.json::<Counter>().await.unwrap(),
            Counter {
                user_id: Some("ferris".into()),
                counter: 3
            }
        );
        let mut r = srv
            .get("/protected/count")
            .cookie(c3.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Counter>().await.unwrap().counter, 3);

        // The pre-login cookie is dead (invalidation is supported).
        let mut r = srv.get("/").cookie(c2.clone()).send().await.unwrap();
        assert!(r.cookies().unwrap().is_empty());
        assert_eq!(
            r.json::<Counter>().await.unwrap(),
            Counter {
                user_id: None,
                counter: 0
            }
        );

        // Logout: a removal cookie, and the cookie is dead.
        let r = srv.post("/logout").cookie(c3.clone()).send().await.unwrap();
        let removal = awc_cookie(&r, "test-session").unwrap();
        assert_eq!(removal.max_age().map(|t| t.whole_seconds()), Some(0));
        assert_eq!(removal.path(), Some("/"));
        let mut r = srv.get("/").cookie(c3.clone()).send().await.unwrap();
        assert!(r.cookies().unwrap().is_empty());
        assert_eq!(
            r.json::<Counter>().await.unwrap(),
            Counter {
                user_id: None,
                counter: 0
            }
        );
        let r = srv.get("/protected/count").cookie(c3).send().await.unwrap();
        assert!(!r.status().is_success());
        assert_eq!(f.store.engine().len(), 0, "every session ended");
    }
}

#[actix_web::test]
async fn a_guard_reads_the_session_loaded_by_the_store() {
    for policy in POLICIES {
        let f = fixture();
        let srv = workflow_server(f.store.clone(), policy);
        let r = srv.get("/protected/count").send().await.unwrap();
        assert!(!r.status().is_success());
        let r = srv
            .post("/login")
            .send_json(&serde_json_value("ferris"))
            .await
            .unwrap();
        let c1 = awc_cookie(&r, "test-session").unwrap();
        let mut r = srv.post("/do_something").cookie(c1).send().await.unwrap();
        assert_eq!(
            r.json::<Counter>().await.unwrap(),
            Counter {
                user_id: Some("ferris".into()),
                counter: 1
            }
        );
        let c2 = awc_cookie(&r, "test-session").unwrap();
        let mut r = srv.get("/protected/count").cookie(c2).send().await.unwrap();
        assert!(r.status().is_success());
        assert_eq!(r.json::<Counter>().await.unwrap().counter, 1);
    }
}

fn serde_json_value(user: &str) -> std::collections::HashMap<&'static str, String> {
    [("user_id", user.to_owned())].into_iter().collect()
}

#[actix_web::test]
async fn browser_session_cookies_carry_the_configured_attributes_and_purge_removes_them() {
    let f = fixture();
    let app = test::init_service(
        App::new()
            .wrap(
                SessionMiddleware::builder(f.store.clone(), Key::generate())
                    .cookie_path("/test".into())
                    .cookie_domain(Some("localhost".into()))
                    .cookie_secure(true)
                    .cookie_http_only(true)
                    .session_lifecycle(BrowserSession::default())
                    .build(),
            )
            .route("/test/login", web::post().to(do_something))
            .route("/test/logout", web::post().to(purge_logout)),
    )
    .await;
    let res = app
        .call(test::TestRequest::post().uri("/test/login").to_request())
        .await
        .unwrap();
    let c = cookie_named(&res, "id").unwrap();
    assert_eq!(c.path(), Some("/test"));
    assert_eq!(c.domain(), Some("localhost"));
    assert_eq!(c.secure(), Some(true));
    assert_eq!(c.http_only(), Some(true));
    assert_eq!(
        c.max_age(),
        None,
        "a browser session's cookie has no max-age"
    );
    assert_eq!(f.store.engine().len(), 1);

    let res = app
        .call(
            test::TestRequest::post()
                .uri("/test/logout")
                .cookie(c)
                .to_request(),
        )
        .await
        .unwrap();
    let removal = cookie_named(&res, "id").unwrap();
    assert_eq!(removal.max_age(), Some(time::Duration::ZERO));
    assert_eq!(removal.path(), Some("/test"));
    assert_eq!(f.store.engine().len(), 0);
}

#[actix_web::test]
async fn a_value_past_the_limit_fails_the_response_opaquely_and_stores_nothing() {
    let f = fixture_with(|o| {
        o.limits(Limits {
            max_value_bytes: 64,
            ..Limits::default()
        })
    });
    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::new(f.store.clone(), Key::generate()))
            .route(
                "/",
                web::get().to(|s: Session| async move {
                    s.insert("big", "x".repeat(100)).unwrap();
                    "ok"
                }),
            ),
    )
    .await;
    // The middleware fails the request; actix-web renders its error as a bare 500.
    let err = app
        .call(test::TestRequest::get().to_request())
        .await
        .unwrap_err();
    let res = err.error_response();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
    assert!(body.is_empty(), "no detail leaks: {body:?}");
    assert_eq!(f.store.engine().len(), 0);
}

// ----------------------------------------------------------------------------------
// The store's methods

impl Fixture {
    fn clock_now(&self) -> Timestamp {
        sessiondb::Clock::now(&self.clock)
    }
}

/// The deadline of the only session in the store (read through `export`: the engine
/// keeps token hashes only, and the cookie is signed or encrypted).
fn only_deadline(store: &SessionDbStore) -> Timestamp {
    let mut deadlines = Vec::new();
    store
        .engine()
        .export(|r| {
            deadlines.push(r.absolute);
            Ok(())
        })
        .unwrap();
    assert_eq!(deadlines.len(), 1, "one session");
    deadlines[0]
}

#[actix_web::test]
async fn loading_a_missing_or_foreign_key_finds_no_session() {
    let f = fixture();
    let fresh = Token::generate().unwrap().as_string();
    assert!(f.store.load(&key(&fresh)).await.unwrap().is_none());
    // actix-session's own key format (64 alphanumerics), garbage, and a near-token.
    let actix_style = "a".repeat(64);
    assert!(f.store.load(&key(&actix_style)).await.unwrap().is_none());
    assert!(f.store.load(&key("")).await.unwrap().is_none());
    let mut near = fresh.clone();
    near.push('A');
    assert!(f.store.load(&key(&near)).await.unwrap().is_none());
}

#[actix_web::test]
async fn a_saved_state_loads_back_with_the_key_entry_added_and_nothing_else() {
    let f = fixture();
    let s = state(&[
        ("counter", "100"),
        ("user", "\"ferris\""),
        ("nested", "{\"a\":[1,null]}"),
    ]);
    let k = f
        .store
        .save(s.clone(), &time::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(k.as_ref().len(), sessiondb::TOKEN_STR_LEN);
    let token = Token::parse(k.as_ref()).unwrap();
    let mut loaded = f.store.load(&k).await.unwrap().unwrap();
    assert_eq!(
        loaded.remove(KEY_ENTRY),
        Some(format!("\"{}\"", k.as_ref()))
    );
    assert_eq!(loaded, s);
    // In the engine: one data key per entry, and never the key entry.
    let engine = f.store.engine().peek(&token).unwrap();
    let mut keys: Vec<&str> = engine.data().keys().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["a:counter", "a:nested", "a:user"]);
    assert!(engine.user().is_none());
}

#[actix_web::test]
async fn a_state_that_is_not_text_is_a_deserialization_error() {
    let f = fixture();
    let k = f
        .store
        .save(state(&[("k", "1")]), &time::Duration::hours(1))
        .await
        .unwrap();
    let token = Token::parse(k.as_ref()).unwrap();
    f.store
        .engine()
        .put_raw(&token, "a:k", b"\xff\xfe")
        .unwrap();
    assert!(matches!(
        f.store.load(&k).await.unwrap_err(),
        LoadError::Deserialization(_)
    ));
}

#[actix_web::test]
async fn an_update_replaces_the_whole_state_and_keeps_the_key() {
    let f = fixture();
    let k = f
        .store
        .save(state(&[("a", "1"), ("b", "2")]), &time::Duration::hours(1))
        .await
        .unwrap();
    let k2 = f
        .store
        .update(
            key(k.as_ref()),
            state(&[("b", "3"), ("c", "4")]),
            &time::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(k2, k);
    let mut loaded = f.store.load(&k).await.unwrap().unwrap();
    loaded.remove(KEY_ENTRY);
    assert_eq!(loaded, state(&[("b", "3"), ("c", "4")]));
}

#[actix_web::test]
async fn deleting_is_final_a_later_update_or_ttl_refresh_does_not_resurrect() {
    let f = fixture();
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::hours(1))
        .await
        .unwrap();
    f.store.delete(&k).await.unwrap();
    assert!(f.store.load(&k).await.unwrap().is_none());
    let back = f
        .store
        .update(
            key(k.as_ref()),
            state(&[("a", "2")]),
            &time::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(back, k, "nothing new is created for a gone session");
    f.store
        .update_ttl(&k, &time::Duration::hours(1))
        .await
        .unwrap();
    assert!(f.store.load(&k).await.unwrap().is_none());
    assert_eq!(f.store.engine().len(), 0);
    // Deleting twice, or a key that was never issued, is fine.
    f.store.delete(&k).await.unwrap();
    f.store.delete(&key("not a token")).await.unwrap();
}

#[actix_web::test]
async fn an_update_of_an_expired_session_is_handled_gracefully_and_stores_nothing() {
    let f = fixture();
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::seconds(10))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(10));
    let back = f
        .store
        .update(
            key(k.as_ref()),
            state(&[("a", "2")]),
            &time::Duration::seconds(10),
        )
        .await
        .unwrap();
    assert_eq!(back, k);
    assert!(f.store.load(&k).await.unwrap().is_none());
    assert_eq!(
        f.store.engine().reap_expired(),
        1,
        "still the expired one, unrevived"
    );
    assert_eq!(f.store.engine().len(), 0);
    let never = Token::generate().unwrap().as_string();
    let back = f
        .store
        .update(
            key(&never),
            state(&[("a", "1")]),
            &time::Duration::seconds(10),
        )
        .await
        .unwrap();
    assert_eq!(back.as_ref(), never);
    assert_eq!(f.store.engine().len(), 0);
}

#[actix_web::test]
async fn the_ttl_is_the_exact_deadline_and_update_ttl_extends_it() {
    let f = fixture();
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::seconds(10))
        .await
        .unwrap();
    f.clock.advance(Duration::from_millis(9_999));
    assert!(f.store.load(&k).await.unwrap().is_some());
    f.store
        .update_ttl(&k, &time::Duration::seconds(10))
        .await
        .unwrap();
    f.clock.advance(Duration::from_millis(9_999));
    assert!(
        f.store.load(&k).await.unwrap().is_some(),
        "extended to now + 10 s"
    );
    f.clock.advance(Duration::from_millis(1));
    assert!(
        f.store.load(&k).await.unwrap().is_none(),
        "gone at the deadline"
    );
    // An update may also shorten it, as Redis' EX would.
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::hours(1))
        .await
        .unwrap();
    f.store
        .update(
            key(k.as_ref()),
            state(&[("a", "2")]),
            &time::Duration::seconds(1),
        )
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(1));
    assert!(f.store.load(&k).await.unwrap().is_none());
}

#[actix_web::test]
async fn a_ttl_of_zero_or_less_is_refused() {
    let f = fixture();
    assert!(matches!(
        f.store
            .save(state(&[("a", "1")]), &time::Duration::ZERO)
            .await,
        Err(SaveError::Other(_))
    ));
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::hours(1))
        .await
        .unwrap();
    assert!(matches!(
        f.store
            .update(key(k.as_ref()), state(&[]), &time::Duration::seconds(-1))
            .await,
        Err(UpdateError::Other(_))
    ));
    assert!(f.store.update_ttl(&k, &time::Duration::ZERO).await.is_err());
    assert_eq!(f.store.engine().len(), 1);
    assert!(
        f.store.load(&k).await.unwrap().is_some(),
        "unchanged by the refusals"
    );
}

#[actix_web::test]
async fn a_state_past_the_limits_is_a_serialization_error() {
    let f = fixture_with(|o| {
        o.limits(Limits {
            max_value_bytes: 64,
            ..Limits::default()
        })
    });
    let big = "x".repeat(100);
    assert!(matches!(
        f.store
            .save(state(&[("big", &big)]), &time::Duration::hours(1))
            .await,
        Err(SaveError::Serialization(_))
    ));
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::hours(1))
        .await
        .unwrap();
    assert!(matches!(
        f.store
            .update(
                key(k.as_ref()),
                state(&[("big", &big)]),
                &time::Duration::hours(1)
            )
            .await,
        Err(UpdateError::Serialization(_))
    ));
    let mut loaded = f.store.load(&k).await.unwrap().unwrap();
    loaded.remove(KEY_ENTRY);
    assert_eq!(loaded, state(&[("a", "1")]));
}

#[actix_web::test]
async fn sessions_survive_a_reopen_under_sync_durability() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options::default().durability(Durability::Sync);
    let k = {
        let store = SessionDbStore::new(Store::open_with(dir.path(), opts()).unwrap());
        let k = store
            .save(state(&[("a", "1")]), &time::Duration::hours(1))
            .await
            .unwrap();
        store
            .update(
                key(k.as_ref()),
                state(&[("a", "2")]),
                &time::Duration::hours(1),
            )
            .await
            .unwrap();
        drop(store);
        k
    };
    let store = SessionDbStore::new(Store::open_with(dir.path(), opts()).unwrap());
    let mut loaded = store.load(&k).await.unwrap().unwrap();
    loaded.remove(KEY_ENTRY);
    assert_eq!(loaded, state(&[("a", "2")]));
}

// ----------------------------------------------------------------------------------
// The helpers, over HTTP

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Me {
    user: Option<String>,
    counter: i32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Row {
    id: String,
    label: Option<String>,
    current: bool,
}

type Db = web::Data<SessionDbStore>;

async fn me(store: Db, session: Session) -> HttpResponse {
    HttpResponse::Ok().json(Me {
        user: store.user(&session).map(|u| u.to_string()),
        counter: counter_of(&session).counter,
    })
}

async fn login(
    store: Db,
    session: Session,
    user: web::Path<String>,
) -> actix_web::Result<&'static str> {
    store.login(&session, &user).await?;
    Ok("welcome")
}

async fn devices(store: Db, session: Session) -> actix_web::Result<HttpResponse> {
    let rows: Vec<Row> = store
        .devices(&session)?
        .into_iter()
        .map(|d| Row {
            id: d.id.to_string(),
            label: d.label,
            current: d.current,
        })
        .collect();
    Ok(HttpResponse::Ok().json(rows))
}

async fn end_device(
    store: Db,
    session: Session,
    id: web::Path<String>,
) -> actix_web::Result<String> {
    let id: SessionId = id.parse().map_err(actix_web::error::ErrorBadRequest)?;
    Ok(store.end_device(&session, id).await?.to_string())
}

async fn everywhere(store: Db, session: Session) -> actix_web::Result<String> {
    Ok(store.logout_everywhere(&session).await?.to_string())
}

async fn label(
    store: Db,
    session: Session,
    label: web::Path<String>,
) -> actix_web::Result<&'static str> {
    store.set_label(&session, &label).await?;
    Ok("labelled")
}

async fn renew_then_login(store: Db, session: Session) -> actix_web::Result<&'static str> {
    session.renew();
    store.login(&session, "alice").await?;
    Ok("unreachable")
}

/// Changes the state, and meanwhile (as another request would) the user is revoked.
async fn count_while_revoked(store: Db, session: Session) -> actix_web::Result<HttpResponse> {
    let user = store.user(&session).expect("logged in");
    session.insert("counter", 99)?;
    store.engine().revoke_user(user.as_str()).unwrap();
    Ok(HttpResponse::Ok().finish())
}

fn helper_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/me", web::get().to(me))
        .route("/count", web::post().to(do_something))
        .route("/login/{user}", web::post().to(login))
        .route(
            "/renew",
            web::post().to(|s: Session| async move {
                s.renew();
                "renewed"
            }),
        )
        .route("/renew-then-login", web::post().to(renew_then_login))
        .route("/devices", web::get().to(devices))
        .route("/devices/{id}/end", web::post().to(end_device))
        .route("/logout-everywhere", web::post().to(everywhere))
        .route("/label/{label}", web::post().to(label))
        .route("/count-while-revoked", web::post().to(count_while_revoked));
}

fn helper_server(store: SessionDbStore) -> actix_test::TestServer {
    let key = Key::generate();
    actix_test::start(move || {
        App::new()
            .app_data(web::Data::new(store.clone()))
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_name("sid".into())
                    .build(),
            )
            .configure(helper_routes)
    })
}

/// Client side of one browser: sends its cookie, keeps the one a response sets.
struct Browser<'a> {
    srv: &'a actix_test::TestServer,
    cookie: Option<Cookie<'static>>,
}

impl<'a> Browser<'a> {
    fn new(srv: &'a actix_test::TestServer) -> Self {
        Browser { srv, cookie: None }
    }

    async fn call(&mut self, post: bool, path: &str) -> (StatusCode, web::Bytes) {
        let mut req = if post {
            self.srv.post(path)
        } else {
            self.srv.get(path)
        };
        if let Some(c) = &self.cookie {
            req = req.cookie(c.clone());
        }
        let mut res = req.send().await.unwrap();
        if let Some(c) = awc_cookie(&res, "sid") {
            self.cookie = (c.max_age() != Some(time::Duration::ZERO)).then_some(c);
        }
        (res.status(), res.body().await.unwrap())
    }

    async fn post(&mut self, path: &str) -> (StatusCode, String) {
        let (s, b) = self.call(true, path).await;
        (s, String::from_utf8(b.to_vec()).unwrap())
    }

    async fn me(&mut self) -> Me {
        let (s, b) = self.call(false, "/me").await;
        assert_eq!(s, StatusCode::OK);
        serde_json_from(&b)
    }

    async fn devices(&mut self) -> (StatusCode, Vec<Row>) {
        let (s, b) = self.call(false, "/devices").await;
        (
            s,
            if s == StatusCode::OK {
                serde_json_from(&b)
            } else {
                Vec::new()
            },
        )
    }
}

fn serde_json_from<T: for<'de> Deserialize<'de>>(b: &[u8]) -> T {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(b)))
}

#[actix_web::test]
async fn login_rotates_the_cookie_keeps_the_data_and_binds_the_user() {
    for durability in [Durability::default(), Durability::Sync] {
        let f = fixture_with(|o| o.durability(durability));
        let srv = helper_server(f.store.clone());
        let mut b = Browser::new(&srv);
        b.post("/count").await;
        let before = b.cookie.clone().unwrap();
        assert_eq!(
            b.me().await,
            Me {
                user: None,
                counter: 1
            }
        );
        let id_before = only_id(&f.store);

        assert_eq!(
            b.post("/login/alice").await,
            (StatusCode::OK, "welcome".into())
        );
        let after = b.cookie.clone().unwrap();
        assert_ne!(before.value(), after.value(), "a new key at login");
        assert_eq!(
            b.me().await,
            Me {
                user: Some("alice".into()),
                counter: 1
            }
        );
        assert_eq!(only_id(&f.store), id_before, "the same session, rotated");

        // The pre-login cookie works during the grace period (parallel requests), then
        // stops; the new one goes on.
        let mut old = Browser {
            srv: &srv,
            cookie: Some(before),
        };
        assert_eq!(old.me().await.user.as_deref(), Some("alice"));
        f.clock.advance(Duration::from_secs(6));
        assert_eq!(
            old.me().await,
            Me {
                user: None,
                counter: 0
            }
        );
        assert_eq!(
            b.me().await,
            Me {
                user: Some("alice".into()),
                counter: 1
            }
        );
    }
}

/// The public id of the only session in the store.
fn only_id(store: &SessionDbStore) -> SessionId {
    let mut ids = Vec::new();
    store
        .engine()
        .export(|r| {
            ids.push(r.id);
            Ok(())
        })
        .unwrap();
    assert_eq!(ids.len(), 1, "one session");
    ids[0]
}

#[actix_web::test]
async fn login_of_a_new_visitor_stores_one_bound_session() {
    let f = fixture();
    let srv = helper_server(f.store.clone());
    let mut b = Browser::new(&srv);
    assert_eq!(b.post("/login/alice").await.0, StatusCode::OK);
    assert!(
        b.cookie.is_some(),
        "the response carries the new session's cookie"
    );
    assert_eq!(b.me().await.user.as_deref(), Some("alice"));
    assert_eq!(f.store.engine().len(), 1);
    assert_eq!(f.store.engine().sessions_of("alice").unwrap().len(), 1);
}

#[actix_web::test]
async fn a_pre_login_cookie_is_never_handed_the_new_key() {
    let f = fixture();
    let srv = helper_server(f.store.clone());
    let mut b = Browser::new(&srv);
    b.post("/count").await;
    // The pre-login cookie, as an attacker who planted it would hold it.
    let mut planted = Browser {
        srv: &srv,
        cookie: b.cookie.clone(),
    };
    b.post("/login/alice").await;
    // During the grace period it still reaches the session (a parallel request's write
    // is kept), but what it gets back is the old key, not the new one.
    planted.post("/count").await;
    assert_eq!(
        b.me().await,
        Me {
            user: Some("alice".into()),
            counter: 2
        }
    );
    let cookie = planted.cookie.clone().unwrap();
    let mut with_new_key = Browser {
        srv: &srv,
        cookie: Some(cookie),
    };
    f.clock.advance(Duration::from_secs(6));
    assert_eq!(
        with_new_key.me().await,
        Me {
            user: None,
            counter: 0
        },
        "the cookie it was sent is the retired key's, dead after the grace"
    );
    assert_eq!(b.me().await.user.as_deref(), Some("alice"));
}

#[actix_web::test]
async fn devices_lists_each_browser_and_ends_one_by_its_public_id() {
    let f = fixture();
    let srv = helper_server(f.store.clone());
    let (mut laptop, mut phone, mut mallory) =
        (Browser::new(&srv), Browser::new(&srv), Browser::new(&srv));
    laptop.post("/label/laptop").await;
    laptop.post("/login/alice").await;
    f.clock.advance(Duration::from_secs(1)); // devices are listed oldest first
    phone.post("/login/alice").await;
    phone.post("/label/phone").await;
    mallory.post("/login/mallory").await;

    let (status, rows) = laptop.devices().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].label.as_deref(), Some("laptop"));
    assert!(rows[0].current && !rows[1].current);
    assert_eq!(rows[1].label.as_deref(), Some("phone"));
    let phone_id = rows[1].id.clone();

    // Another user cannot end it (and cannot tell it exists).
    let (_, said) = mallory.post(&format!("/devices/{phone_id}/end")).await;
    assert_eq!(said, "false");
    assert_eq!(phone.me().await.user.as_deref(), Some("alice"));

    let (_, said) = laptop.post(&format!("/devices/{phone_id}/end")).await;
    assert_eq!(said, "true");
    assert_eq!(phone.me().await.user, None, "signed out on the phone");
    let (_, rows) = laptop.devices().await;
    assert_eq!(rows.len(), 1);

    // Ending the current device logs this browser out.
    let own = rows[0].id.clone();
    assert_eq!(laptop.post(&format!("/devices/{own}/end")).await.1, "true");
    assert!(laptop.cookie.is_none(), "the removal cookie came back");
    assert_eq!(f.store.engine().sessions_of("alice").unwrap().len(), 0);
}

#[actix_web::test]
async fn logout_everywhere_ends_every_session_of_the_user_and_only_theirs() {
    let f = fixture();
    let srv = helper_server(f.store.clone());
    let (mut a, mut b, mut bob) = (Browser::new(&srv), Browser::new(&srv), Browser::new(&srv));
    a.post("/login/alice").await;
    b.post("/login/alice").await;
    bob.post("/login/bob").await;
    let (status, n) = b.post("/logout-everywhere").await;
    assert_eq!((status, n.as_str()), (StatusCode::OK, "2"));
    assert!(b.cookie.is_none(), "the removal cookie came back");
    assert_eq!(a.me().await.user, None);
    assert_eq!(bob.me().await.user.as_deref(), Some("bob"));
    assert_eq!(f.store.engine().len(), 1);
}

#[actix_web::test]
async fn a_request_in_flight_during_a_revocation_cannot_write_its_session_back() {
    let f = fixture();
    let srv = helper_server(f.store.clone());
    let mut b = Browser::new(&srv);
    b.post("/count").await;
    b.post("/login/alice").await;
    let (status, _) = b.post("/count-while-revoked").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        b.me().await,
        Me {
            user: None,
            counter: 0
        },
        "not resurrected"
    );
    f.store.engine().reap_expired();
    assert_eq!(f.store.engine().len(), 0);
}

#[actix_web::test]
async fn helpers_refuse_without_a_user_and_validate_user_ids() {
    let f = fixture();
    let srv = helper_server(f.store.clone());
    let mut b = Browser::new(&srv);
    assert_eq!(b.devices().await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        b.post("/logout-everywhere").await.0,
        StatusCode::UNAUTHORIZED
    );
    b.post("/count").await;
    let long = "u".repeat(300);
    assert_eq!(
        b.post(&format!("/login/{long}")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        b.me().await,
        Me {
            user: None,
            counter: 1
        },
        "nothing changed"
    );
    assert_eq!(f.store.engine().len(), 1);
}

#[actix_web::test]
async fn renew_drops_the_binding_and_login_after_renew_is_refused() {
    let f = fixture();
    let srv = helper_server(f.store.clone());
    let mut b = Browser::new(&srv);
    b.post("/login/alice").await;
    // actix-session's renew after our login: delete + save, so the session comes back
    // anonymous (fails closed), with the state moved over.
    b.post("/count").await;
    let (status, _) = b.post("/renew").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        b.me().await,
        Me {
            user: None,
            counter: 1
        }
    );
    assert_eq!(f.store.engine().sessions_of("alice").unwrap().len(), 0);
    // Our login after renew in the same request is an error, not a silent no-op.
    let (status, _) = b.post("/renew-then-login").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(f.store.engine().sessions_of("alice").unwrap().len(), 0);
}

#[actix_web::test]
async fn a_login_whose_response_never_reaches_the_middleware_is_ended_later() {
    let f = fixture();
    // No session middleware: the handler's login is never picked up, as when the
    // request is dropped between the handler and the response.
    let store = f.store.clone();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(store))
            .route("/login/{user}", web::post().to(login)),
    )
    .await;
    let req = test::TestRequest::post().uri("/login/alice").to_request();
    assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
    assert_eq!(f.store.engine().sessions_of("alice").unwrap().len(), 1);
    f.clock.advance(Duration::from_secs(61));
    let req = test::TestRequest::post().uri("/login/bob").to_request();
    test::call_service(&app, req).await;
    assert_eq!(
        f.store.engine().sessions_of("alice").unwrap().len(),
        0,
        "the unclaimed session nobody holds was ended"
    );
    assert_eq!(f.store.engine().sessions_of("bob").unwrap().len(), 1);
}

#[actix_web::test]
async fn rotate_keeps_user_and_public_id_and_needs_a_stored_session() {
    let f = fixture();
    let req = test::TestRequest::default().to_srv_request();
    let session = req.get_session();
    assert!(
        !f.store.rotate(&session).await.unwrap(),
        "nothing stored: nothing to rotate"
    );
    f.store.login(&session, "alice").await.unwrap();
    let id = f.store.session_id(&session).unwrap();
    assert!(f.store.rotate(&session).await.unwrap());
    assert_eq!(f.store.session_id(&session), Some(id));
    assert_eq!(f.store.user(&session).unwrap().as_str(), "alice");
    session.purge();
    assert!(matches!(
        f.store.rotate(&session).await,
        Err(Error::Discarded)
    ));
}

/// Throughput of the store under the middleware's pattern (save, then update) on one
/// actix worker, writes called directly vs offloaded. Prints; asserts nothing but that
/// the work was done. Run: `cargo test --release --features actix-session --test
/// actix_session measure_offload -- --ignored --nocapture`.
#[actix_web::test]
#[ignore = "a measurement, not a check"]
async fn measure_offload() {
    for durability in [Durability::Memory, Durability::Sync] {
        for offload in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let engine =
                Store::open_with(dir.path(), Options::default().durability(durability)).unwrap();
            let store = SessionDbStore::new(engine).offload_writes(offload);
            let per_task = if matches!(durability, Durability::Sync) {
                1_000
            } else {
                2_000
            };
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..64 {
                let store = store.clone();
                tasks.push(actix_web::rt::spawn(async move {
                    for i in 0..per_task {
                        let k = store
                            .save(state(&[("n", "1")]), &time::Duration::hours(1))
                            .await
                            .unwrap();
                        let n = i.to_string();
                        store
                            .update(k, state(&[("n", &n)]), &time::Duration::hours(1))
                            .await
                            .unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let ops = 64 * per_task * 2;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{durability:?} offload={offload}: {ops} store calls in {secs:.2} s = {:.0}/s",
                f64::from(ops) / secs
            );
            assert_eq!(store.engine().len(), 64 * per_task as usize);
        }
    }
}
