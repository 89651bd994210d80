//! sessiondb as the store behind tower-sessions in an axum app, with the per-user index:
//! login (rotate + bind), "who am I", the devices page, "log out everywhere".
//!
//! `cargo run --example tower_sessions --features tower-sessions` serves the app on
//! 127.0.0.1, drives it with two HTTP clients (a laptop and a phone of one user), prints
//! what they see, and exits.

use std::sync::Arc;

// README snippet start
use axum::{Router, extract::State, routing::get};
use sessiondb::Store;
use sessiondb::tower_sessions::SessionDbStore;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

fn app(store: SessionDbStore) -> Router {
    let sessions = SessionManagerLayer::new(store.clone())
        .with_secure(false) // plain HTTP on localhost; keep the default in production
        .with_expiry(Expiry::OnInactivity(time::Duration::days(7)));
    Router::new()
        .route("/login", get(login))
        .route("/me", get(me))
        .route("/devices", get(devices))
        .route("/logout-everywhere", get(logout_everywhere))
        .layer(sessions)
        .with_state(store)
}

async fn login(State(store): State<SessionDbStore>, session: Session) -> String {
    // ... check the password first ...
    store.login(&session, "alice").await.unwrap(); // new cookie id, user bound
    store.set_label(&session, "Firefox on Linux").await.unwrap();
    "welcome".into()
}

async fn me(State(store): State<SessionDbStore>, session: Session) -> String {
    match store.user(&session).await {
        Ok(Some(user)) => format!("you are {user}"),
        Ok(None) => "not logged in".into(),
        Err(e) => e.to_string(),
    }
}

async fn devices(State(store): State<SessionDbStore>, session: Session) -> String {
    match store.devices(&session).await {
        Ok(list) => format!("{} device(s)", list.len()),
        Err(e) => e.to_string(),
    }
}

async fn logout_everywhere(State(store): State<SessionDbStore>, session: Session) -> String {
    match store.logout_everywhere(&session).await {
        Ok(n) => format!("ended {n} session(s)"),
        Err(e) => e.to_string(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?; // a real app: Store::open("sessions")
    let store = SessionDbStore::new(Store::open(dir.path())?);
    // On several nodes, the same app over Redis (features `tower-sessions,redis`):
    // SessionDbStore::new(Sessions::open("redis://127.0.0.1:6379/", Options::default()).await?)
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(axum::serve(listener, app(store)).into_future());
    // README snippet end

    let url = |path: &str| format!("http://{addr}{path}");
    let client = || {
        reqwest::Client::builder()
            .cookie_provider(Arc::new(reqwest::cookie::Jar::default()))
            .build()
    };
    let (laptop, phone) = (client()?, client()?);
    for (who, c, path) in [
        ("laptop", &laptop, "/login"),
        ("phone", &phone, "/login"),
        ("phone", &phone, "/me"),
        ("laptop", &laptop, "/devices"),
        ("laptop", &laptop, "/logout-everywhere"),
        ("phone", &phone, "/me"),
    ] {
        let answer = c.get(url(path)).send().await?.text().await?;
        println!("{who:>6} GET {path:<19} -> {answer}");
    }
    Ok(())
}
