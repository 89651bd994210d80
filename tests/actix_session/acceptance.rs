//! The behaviour actix-session's own acceptance suite asks of every backend: the basic
//! workflow, TTL refreshed on changes / on every request, the login-logout workflow
//! with invalidation, a session-reading guard, browser-session cookies and a value past
//! the limits; under both cookie content-security policies, in-process and over HTTP
//! with a real bound server and client.

use std::time::Duration;

use actix_session::config::{
    BrowserSession, CookieContentSecurity, PersistentSession, TtlExtensionPolicy,
};
use actix_session::{Session, SessionExt, SessionMiddleware};
use actix_web::cookie::{Cookie, Key, time};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, guard, test, web};
use serde::Deserialize;
use sessiondb::actix_session::SessionDbStore;
use sessiondb::{Limits, Timestamp};

use crate::helpers::{Counter, awc_cookie, counter_of, do_something, fixture, fixture_with};

const POLICIES: [CookieContentSecurity; 2] = [
    CookieContentSecurity::Signed,
    CookieContentSecurity::Private,
];

fn cookie_named(res: &ServiceResponse, name: &str) -> Option<Cookie<'static>> {
    res.response()
        .cookies()
        .find(|c| c.name() == name)
        .map(Cookie::into_owned)
}

async fn index(session: Session) -> HttpResponse {
    HttpResponse::Ok().json(counter_of(&session))
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
