//! The store's helpers over HTTP, through a server whose handlers call them and a
//! [`Browser`] per client: login with rotation, devices, ending one device, "log out
//! everywhere", labels, and the failure modes around `renew`.

use std::time::Duration;

use actix_session::{Session, SessionExt, SessionMiddleware};
use actix_web::cookie::{Cookie, Key, time};
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, test, web};
use serde::{Deserialize, Serialize};
use sessiondb::actix_session::{Error, SessionDbStore};
use sessiondb::{Device as ClientDevice, Durability, SessionId, SignIn};

use crate::helpers::{awc_cookie, counter_of, do_something, fixture, fixture_with};

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

async fn others(store: Db, session: Session) -> actix_web::Result<String> {
    Ok(store.logout_others(&session).await?.to_string())
}

async fn password_changed(store: Db, session: Session) -> actix_web::Result<String> {
    Ok(store.password_changed(&session).await?.to_string())
}

async fn login_with_password(store: Db, session: Session) -> actix_web::Result<&'static str> {
    store
        .login_with(&session, "alice", SignIn::with("password"))
        .await?;
    Ok("welcome")
}

async fn step_up(store: Db, session: Session) -> actix_web::Result<&'static str> {
    store
        .step_up(&session, SignIn::with("otp").level(2))
        .await?;
    Ok("stepped up")
}

async fn seen(store: Db, session: Session) -> actix_web::Result<String> {
    let firefox = ClientDevice::new()
        .user_agent("Firefox/140")
        .address("192.0.2.7".parse().unwrap());
    Ok(store.seen_from(&session, &firefox).await?.to_string())
}

/// A device's methods (and their levels), level, user agent and address.
type HowRow = (Vec<(String, u8)>, u8, Option<String>, Option<String>);

/// Each device's methods, level, user agent and address, as JSON.
async fn how(store: Db, session: Session) -> actix_web::Result<HttpResponse> {
    let rows: Vec<HowRow> = store
        .devices(&session)?
        .into_iter()
        .map(|d| {
            (
                d.factors
                    .iter()
                    .map(|f| (f.method().to_owned(), f.level()))
                    .collect(),
                d.level,
                d.user_agent,
                d.address.map(|a| a.to_string()),
            )
        })
        .collect();
    Ok(HttpResponse::Ok().json(rows))
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
        .route("/logout-others", web::post().to(others))
        .route("/password-changed", web::post().to(password_changed))
        .route("/label/{label}", web::post().to(label))
        .route("/login-with-password", web::post().to(login_with_password))
        .route("/step-up", web::post().to(step_up))
        .route("/seen", web::post().to(seen))
        .route("/how", web::get().to(how))
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
async fn logout_others_keeps_this_browser_signed_in_and_ends_the_users_others() {
    let f = fixture();
    let srv = helper_server(f.store.clone());
    let (mut a, mut b, mut c, mut bob) = (
        Browser::new(&srv),
        Browser::new(&srv),
        Browser::new(&srv),
        Browser::new(&srv),
    );
    a.post("/login/alice").await;
    b.post("/login/alice").await;
    c.post("/login/alice").await;
    bob.post("/login/bob").await;
    let (status, n) = b.post("/logout-others").await;
    assert_eq!((status, n.as_str()), (StatusCode::OK, "2"));
    assert!(b.cookie.is_some(), "this browser keeps its cookie");
    assert_eq!(b.me().await.user.as_deref(), Some("alice"));
    assert_eq!(a.me().await.user, None);
    assert_eq!(c.me().await.user, None);
    assert_eq!(bob.me().await.user.as_deref(), Some("bob"));
    assert_eq!(f.store.engine().sessions_of("alice").unwrap().len(), 1);
    let mut visitor = Browser::new(&srv);
    visitor.post("/count").await;
    assert_eq!(
        visitor.post("/logout-others").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn password_changed_signs_this_browser_in_afresh_and_ends_the_older_sessions() {
    let f = fixture();
    let srv = helper_server(f.store.clone());
    let (mut a, mut b, mut bob) = (Browser::new(&srv), Browser::new(&srv), Browser::new(&srv));
    a.post("/login/alice").await;
    b.post("/login/alice").await;
    bob.post("/login/bob").await;
    let cookie = b.cookie.clone();
    f.clock.advance(std::time::Duration::from_secs(1));
    let (status, n) = b.post("/password-changed").await;
    assert_eq!((status, n.as_str()), (StatusCode::OK, "1"));
    assert_ne!(b.cookie, cookie, "a new key");
    assert_eq!(b.me().await.user.as_deref(), Some("alice"));
    assert_eq!(a.me().await.user, None);
    assert_eq!(bob.me().await.user.as_deref(), Some("bob"));
    assert_eq!(f.store.engine().sessions_of("alice").unwrap().len(), 1);
    let mut visitor = Browser::new(&srv);
    visitor.post("/count").await;
    assert_eq!(
        visitor.post("/password-changed").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn login_with_step_up_and_seen_from_show_on_the_devices_page() {
    let f = fixture();
    let srv = helper_server(f.store.clone());
    let mut a = Browser::new(&srv);
    // A visitor has nothing to step up, and a session not stored has no device.
    assert_eq!(a.post("/seen").await.1, "false");
    a.post("/count").await;
    assert_eq!(a.post("/step-up").await.0, StatusCode::UNAUTHORIZED);
    a.post("/login-with-password").await;
    assert_eq!(a.post("/seen").await.1, "true");
    assert_eq!(a.post("/seen").await.1, "false", "unchanged");
    let cookie = a.cookie.clone();
    assert_eq!(a.post("/step-up").await.0, StatusCode::OK);
    assert_ne!(a.cookie, cookie, "a step-up gives a new key");
    let (status, body) = a.call(false, "/how").await;
    assert_eq!(status, StatusCode::OK);
    let rows: Vec<HowRow> = serde_json_from(&body);
    assert_eq!(
        rows,
        [(
            vec![("password".to_owned(), 1), ("otp".to_owned(), 2)],
            2,
            Some("Firefox/140".to_owned()),
            Some("192.0.2.0".to_owned())
        )]
    );
    assert_eq!(a.me().await.counter, 1, "the data stayed");
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
