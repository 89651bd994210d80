//! sessiondb as the store behind actix-session, with the per-user helpers: log in,
//! list devices, log out everywhere.
//!
//! `cargo run --example actix_session --features actix-session` serves on
//! <http://127.0.0.1:8080> (try `curl -c jar -b jar -X POST localhost:8080/login/alice`,
//! then `curl -b jar localhost:8080/devices`); with `-- --smoke` it serves on a free
//! port, walks through login, devices and "log out everywhere" with a client, checks
//! the answers and exits (CI runs that).

use actix_web::cookie::Cookie;
use std::net::TcpListener;

// README snippet begins
use actix_session::{Session, SessionMiddleware};
use actix_web::{App, HttpResponse, HttpServer, cookie::Key, web};
use sessiondb::Store;
use sessiondb::actix_session::SessionDbStore;

/// `POST /login/{user}` (check the password first in a real app): a new session key,
/// and the user bound in sessiondb's per-user index.
async fn login(
    store: web::Data<SessionDbStore>,
    session: Session,
    user: web::Path<String>,
) -> actix_web::Result<String> {
    store.login(&session, &user).await?;
    Ok(format!("welcome, {user}"))
}

/// `GET /devices`: every live session of the logged-in user.
async fn devices(store: web::Data<SessionDbStore>, session: Session) -> actix_web::Result<String> {
    let devices = store.devices(&session)?; // 401 if not logged in
    Ok(devices
        .iter()
        .map(|d| format!("{}{}\n", d.id, if d.current { " (this one)" } else { "" }))
        .collect())
}

/// `POST /logout-everywhere`: ends every session of the user, this one included.
async fn logout_everywhere(
    store: web::Data<SessionDbStore>,
    session: Session,
) -> actix_web::Result<String> {
    let ended = store.logout_everywhere(&session).await?;
    Ok(format!("{ended} sessions ended"))
}

fn server(
    store: SessionDbStore,
    key: Key,
    listener: TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(store.clone()))
            // The one line that puts sessiondb behind actix-session:
            .wrap(SessionMiddleware::new(store.clone(), key.clone()))
            .route("/login/{user}", web::post().to(login))
            .route("/devices", web::get().to(devices))
            .route("/logout-everywhere", web::post().to(logout_everywhere))
            .route(
                "/",
                web::get().to(|| async { HttpResponse::Ok().body("hello") }),
            )
    })
    .listen(listener)?
    .run())
}
// README snippet ends

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let dir = tempfile::tempdir()?;
    let store = SessionDbStore::new(Store::open(dir.path())?);
    let key = Key::generate(); // a real app loads a fixed key from its configuration
    if !smoke {
        println!(
            "serving on http://127.0.0.1:8080 (sessions in {})",
            dir.path().display()
        );
        return Ok(server(store, key, TcpListener::bind("127.0.0.1:8080")?)?.await?);
    }

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    let srv = server(store.clone(), key, listener)?;
    let handle = srv.handle();
    actix_web::rt::spawn(srv);

    let client = actix_test::Client::default();
    let mut laptop: Option<Cookie<'static>> = None;
    let mut phone: Option<Cookie<'static>> = None;
    for jar in [&mut laptop, &mut phone] {
        let mut res = client.post(format!("{base}/login/alice")).send().await?;
        let body = res.body().await?;
        assert_eq!(&body[..], b"welcome, alice");
        *jar = res.cookies()?.iter().find(|c| c.name() == "id").cloned();
    }
    let laptop = laptop.ok_or("no cookie after login")?;
    let mut res = client
        .get(format!("{base}/devices"))
        .cookie(laptop.clone())
        .send()
        .await?;
    let listed = String::from_utf8(res.body().await?.to_vec())?;
    print!("alice's devices:\n{listed}");
    assert_eq!(listed.lines().count(), 2);
    let mut res = client
        .post(format!("{base}/logout-everywhere"))
        .cookie(phone.ok_or("no cookie after login")?)
        .send()
        .await?;
    println!("{}", String::from_utf8(res.body().await?.to_vec())?);
    let res = client
        .get(format!("{base}/devices"))
        .cookie(laptop)
        .send()
        .await?;
    assert_eq!(res.status(), 401, "the laptop was logged out too");
    assert_eq!(store.engine().len(), 0);
    println!("smoke test passed");
    handle.stop(true).await;
    Ok(())
}
