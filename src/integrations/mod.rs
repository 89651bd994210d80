//! What the web-framework stores ([`crate::tower_sessions`], [`crate::actix_session`])
//! share: the [`Device`] rows of a "your devices" page and the ownership check before
//! ending one (over the embedded [`crate::Store`] for actix-session, over either
//! backend's [`crate::Sessions`] for tower-sessions), and, for actix-session, running
//! a write on the async runtime's blocking pool when the store's durability makes a
//! write wait for an fsync ([`crate::Sessions`] does that itself).

#[cfg(feature = "actix-session")]
pub mod actix_session;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "tower-sessions")]
pub mod tower_sessions;

/// The `Retry-After` (seconds) a store answers with when it is at its memory budget
/// ([`crate::Error::Full`]): long enough for the reaper and the trial lifetimes to free
/// room, short enough that a real visitor tries again soon.
#[cfg(feature = "actix-session")]
pub(crate) const RETRY_AFTER_SECS: &str = "30";

use std::net::IpAddr;

use crate::clock::Timestamp;
use crate::model::session::{Session, UserId};
use crate::model::signin::Factor;
use crate::model::token::SessionId;
#[cfg(feature = "tower-sessions")]
use crate::sessions::Sessions;
#[cfg(feature = "actix-session")]
use crate::store::Store;

/// One of a user's sessions, for a "your devices" page (each store's `devices`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Device {
    /// The session's public id: safe to show, and what each store's `end_device`
    /// takes. Stable across the stores' `rotate` and `login`.
    pub id: SessionId,
    /// Its device label (each store's `set_label`), if one was set.
    pub label: Option<String>,
    /// When it was created.
    pub created: Timestamp,
    /// Its last activity.
    pub last_seen: Timestamp,
    /// When the user last logged in on it.
    pub authenticated: Option<Timestamp>,
    /// When it expires.
    pub expires: Timestamp,
    /// Whether it is the session of the request that asked.
    pub current: bool,
    /// How its user signed in: each method, the level its step reached, and when
    /// (empty if the login said nothing of how).
    pub factors: Vec<Factor>,
    /// Its assurance level now ([`crate::Session::level`]).
    pub level: u8,
    /// The client's user agent as last recorded (each store's `seen_from`): parse it
    /// for "Firefox on Linux" as the app sees fit.
    pub user_agent: Option<String>,
    /// The client's address as last recorded, as the store keeps it (by default its
    /// /24 or /48 network: [`crate::Options::address_privacy`]).
    pub address: Option<IpAddr>,
}

/// `s` as a row of a devices page.
fn device(s: Session, current: Option<SessionId>) -> Device {
    Device {
        id: s.id(),
        label: s.label().map(str::to_owned),
        created: s.created_at(),
        last_seen: s.last_seen(),
        authenticated: s.authenticated_at(),
        expires: s.expires_at(),
        current: Some(s.id()) == current,
        factors: s.factors().to_vec(),
        level: s.level(),
        user_agent: s.user_agent().map(str::to_owned),
        address: s.address(),
    }
}

/// True if `s` is a live session of `user` (so `user` may end it).
fn owns(s: Option<Session>, user: &UserId) -> bool {
    s.is_some_and(|s| s.user() == Some(user))
}

/// The live sessions of `user` in the embedded `engine` as devices, oldest first,
/// `current` marked.
#[cfg(feature = "actix-session")]
pub(crate) fn devices(
    engine: &Store,
    user: &UserId,
    current: Option<SessionId>,
) -> crate::error::Result<Vec<Device>> {
    Ok(engine
        .sessions_of(user.as_str())?
        .into_iter()
        .map(|s| device(s, current))
        .collect())
}

/// True if `device` is a live session of `user` in the embedded `engine`.
#[cfg(feature = "actix-session")]
pub(crate) fn owned_by(engine: &Store, device: SessionId, user: &UserId) -> bool {
    owns(engine.get_by_id(device), user)
}

/// [`devices`] over either backend.
#[cfg(feature = "tower-sessions")]
pub(crate) async fn devices_in(
    sessions: &Sessions,
    user: &UserId,
    current: Option<SessionId>,
) -> crate::error::Result<Vec<Device>> {
    Ok(sessions
        .sessions_of(user.as_str())
        .await?
        .into_iter()
        .map(|s| device(s, current))
        .collect())
}

/// [`owned_by`] over either backend.
#[cfg(feature = "tower-sessions")]
pub(crate) async fn owned_in(
    sessions: &Sessions,
    device: SessionId,
    user: &UserId,
) -> crate::error::Result<bool> {
    Ok(owns(sessions.get_by_id(device).await?, user))
}

/// Runs the write `f` on the engine: on tokio's blocking pool when `offload` is set
/// and a runtime is there; otherwise directly, and under [`crate::Durability::Sync`]
/// inside [`Store::deferred`], awaiting its commit, so the fsync holds no thread and
/// every task writing meanwhile shares it. `store` names the adapter in the error if
/// the runtime shuts down first.
#[cfg(feature = "actix-session")]
pub(crate) async fn write<T, F>(
    engine: &Store,
    offload: bool,
    store: &'static str,
    f: F,
) -> crate::error::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> crate::error::Result<T> + Send + 'static,
{
    if offload && let Ok(rt) = tokio::runtime::Handle::try_current() {
        let engine = engine.clone();
        return match rt.spawn_blocking(move || f(&engine)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(crate::error::Error::Io {
                context: format!("{store} store: the runtime shut down during a write"),
                source: std::io::Error::from(std::io::ErrorKind::Interrupted),
            }),
        };
    }
    if matches!(
        engine.options().durability,
        crate::options::Durability::Sync
    ) {
        let (r, commit) = engine.deferred(f);
        return commit.settle(r).await;
    }
    f(engine)
}
