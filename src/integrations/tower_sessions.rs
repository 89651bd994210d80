//! A [tower-sessions] store backed by sessiondb (cargo feature `tower-sessions`), and the
//! helpers that give a tower-sessions app what only sessiondb has: the per-user index
//! (bind the session to a user at login, list that user's sessions as devices, end one,
//! "log out everywhere").
//!
//! This module owns the mapping between tower-sessions' [`Record`] and sessiondb's
//! sessions, the [`SessionStore`] and [`ExpiredDeletion`] implementations, and the
//! helpers on [`SessionDbStore`] that a handler calls with its
//! [`tower_sessions_core::Session`]. It runs over [`Sessions`], so the same store and
//! helpers work on the embedded [`crate::Store`] (one process) and, with the `redis`
//! feature, on Redis or Valkey (several nodes sharing the sessions): which one is
//! configuration ([`Sessions::open`]), not code.
//!
//! ```no_run
//! use sessiondb::{Options, Sessions, Store};
//! use sessiondb::tower_sessions::SessionDbStore;
//! use tower_sessions::{Expiry, Session, SessionManagerLayer};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // One process: the embedded store.
//! let store = SessionDbStore::new(Store::open("sessions")?);
//! // Or from configuration: "memory:", a directory, or "redis://host:6379/".
//! let config = std::env::var("SESSIONS").unwrap_or_else(|_| "sessions".into());
//! let store = SessionDbStore::new(Sessions::open(&config, Options::default()).await?);
//! let layer = SessionManagerLayer::new(store.clone())
//!     .with_expiry(Expiry::OnInactivity(time::Duration::days(7)));
//!
//! // In a login handler, once the password checked out:
//! async fn login(store: &SessionDbStore, session: &Session) -> Result<(), sessiondb::tower_sessions::Error> {
//!     store.login(session, "alice").await // new cookie id, user bound
//! }
//! # let _ = layer; Ok(()) }
//! ```
//!
//! # The mapping
//!
//! - **Ids.** tower-sessions picks the session id (an `i128` from a CSPRNG). It becomes
//!   a sessiondb [`Token`]: its 16 bytes plus an 8-byte domain tag
//!   ([`SessionDbStore::token`]). The store keys the session by that token's BLAKE3
//!   hash, as every sessiondb session, so the cookie value never reaches the disk
//!   (nor Redis). `create` resolves a collision by drawing a new id, as the trait asks
//!   ([`Sessions::create_with_token`] answers [`crate::Error::Exists`]).
//! - **Data.** Each entry of the record's map is one key of the session's
//!   [`SessionData`] — `t:` + the tower key, holding the value as JSON — so sessiondb's
//!   limits apply as documented ([`crate::Limits`]: per key, per value, per session),
//!   and the exact `expiry_date` (nanoseconds, which sessiondb's millisecond deadline
//!   cannot hold) is kept under `m:expiry`, so a record loads exactly as it was saved.
//!   One data write carries both, so a load never sees the data of one save with the
//!   expiry of another. The alternative, the whole map as one JSON value under one
//!   key, is faster but would put the whole map under the per-value limit (64 KiB by
//!   default) and hide the keys from sessiondb's tools; it costs well under twice
//!   as much (`measure_data_layout` in `tests/tower_sessions_store.rs`; figures in
//!   `docs/performance.md#framework-stores`). The map is built in one pass, not key by key through
//!   [`SessionData::insert_raw`] (each insert copies the map). The session's data
//!   belongs to tower-sessions: a save replaces all of it.
//! - **Expiry.** The session's absolute deadline is `expiry_date` rounded *down* to
//!   the millisecond ([`Sessions::set_expiry`] after each save that moves it), and its
//!   idle timeout is off: tower-sessions' `Expiry::OnInactivity` moves `expiry_date`
//!   at each save itself. ([`crate::Options::auth_lifetime`], if set, still ends a
//!   logged-in session that long after its login, and
//!   [`crate::Options::max_sessions_per_user`] applies at login.) A save writes the
//!   data only if it changed and the deadline only if it moved; under
//!   `Expiry::OnInactivity` it moves at every save, so such a save is two backend
//!   writes (two fsyncs under [`crate::Durability::Sync`], two round trips on Redis).
//!   Rounding down means the store never keeps a session past the instant
//!   tower-sessions gave, and [`SessionStore::load`] also checks the exact instant (two
//!   saves racing with different expiries may leave the earlier deadline in force,
//!   never a later one). tower-sessions dates everything by this process's clock:
//!   open the embedded store with the system clock (the default); on Redis, where
//!   deadlines are the Redis server's clock, keep the nodes' clocks in sync (NTP) with
//!   it. The reaper removes expired sessions in the background, so
//!   [`ExpiredDeletion::delete_expired`] only runs one reaper pass now and
//!   `continuously_delete_expired` is never needed.
//!
//! # Ending is final: how `save` is reconciled with it
//!
//! tower-sessions documents `save` as an upsert. sessiondb's sessions are final once
//! ended (deleted, revoked, expired): a **`save` for a session that is not live is
//! accepted and ignored** — it returns `Ok(())` (so the response is not turned into a
//! 500 by the middleware) and stores nothing; the next request with that cookie loads
//! nothing and starts a fresh session. This is what makes "log out everywhere" stick
//! when another of the user's requests is still in flight, and a rotated-away id stay
//! dead (tower-sessions' own `MemoryStore` brings both back: see
//! `sessiondb::conformance`). `load` never returns an expired record; `delete` of an
//! unknown id is `Ok`.
//!
//! # Users, rotation and the per-user index
//!
//! tower-sessions' own [`Session::cycle_id`] is a delete followed by a create. A
//! store cannot tell that pair from a logout and an unrelated new session, so a
//! session cycled that way comes back **anonymous**: the data moves to the new id, the
//! user binding does not. That fails closed (the user must log in again; a binding never
//! outlives a revocation). To rotate and keep the binding, call
//! [`SessionDbStore::rotate`] (privilege changes) or [`SessionDbStore::login`] (which
//! rotates, then binds): they move the session to the new id in one step of the
//! backend ([`Sessions::rotate_to`]), keeping its public [`SessionId`], user, creation
//! and login times, so a concurrent [`Sessions::revoke_user`] (from any node) finds it
//! under one id or the other.
//!
//! On Redis every operation is one atomic script, so all of this holds across nodes:
//! a cookie issued by one node loads on any other, a save arriving at any node for a
//! session revoked from another stores nothing, and the rotation's id reservation
//! (kept by the node serving the request, which is where tower-sessions' `create`
//! for it runs) needs nothing shared.
//!
//! Use the binding as the source of truth for "who is logged in"
//! ([`SessionDbStore::user`]), not a user id of your own in the session data: the
//! index only knows what was bound, and only bound sessions are reached by
//! [`SessionDbStore::logout_everywhere`], [`SessionDbStore::logout_others`] and
//! [`SessionDbStore::password_changed`], and listed by [`SessionDbStore::devices`].
//!
//! # Blocking
//!
//! Redis calls are async network round trips. The embedded store is synchronous
//! ([`Sessions`] decides how to call it). Reads, and writes under
//! [`crate::Durability::Memory`] and [`crate::Durability::Buffered`], return in
//! microseconds, so they are called directly on the async task (tokio's guidance: well
//! under the ~100 µs between awaits). Under [`crate::Durability::Sync`] a write waits
//! for its fsync, which as a blocking call would hold a runtime worker and, with few
//! workers, starve group commit of concurrent writers (about one fsync per worker at a
//! time). So the write is made directly inside [`crate::Store::deferred`] and the task
//! awaits its [`crate::Commit`]: no thread waits, and every task writing meanwhile
//! shares the fsync. Calls made directly beat `spawn_blocking` in memory (the hand-off
//! costs more than the write) and awaited commits beat it several times over under
//! `Sync` (`measure_offload` in `tests/tower_sessions_store.rs`; figures in
//! `docs/performance.md#framework-stores`). [`SessionDbStore::offload_writes`] sends writes to
//! `spawn_blocking` instead. Outside a tokio runtime, a commit is still a future: any
//! executor can await it.
//!
//! On Redis a `save` is two or three round trips (read the session, write the data,
//! move the deadline: each write one atomic script that refuses a session that is not
//! live) and a `create` one or two: the price of sharing sessions between nodes is
//! network round trips, not the store (`measure_redis` in
//! `tests/tower_sessions_store.rs`; figures in `docs/performance.md#framework-stores`).
//!
//! [tower-sessions]: https://docs.rs/tower-sessions

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use time::OffsetDateTime;
use tower_sessions_core::Session;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, ExpiredDeletion, SessionStore};

use crate::clock::Timestamp;
use crate::model::data::SessionData;
use crate::model::device::Device as ClientDevice;
use crate::model::session::{NewSession, UserId};
use crate::model::signin::SignIn;
use crate::model::token::{SessionId, Token};
use crate::sessions::Sessions;

/// The 8 bytes after the 16 id bytes in a token derived from a tower-sessions id: a
/// domain tag, so such a token can never equal one sessiondb generated for another
/// purpose by design rather than by chance.
const ID_TAG: [u8; 8] = *b"tower-s1";
/// Prefix of the data keys holding tower-sessions' entries.
const ENTRY_PREFIX: &str = "t:";
/// The data key holding the exact `expiry_date` (i128 Unix nanoseconds, little-endian).
const EXPIRY_KEY: &str = "m:expiry";
/// A transient key of the tower-sessions record (never stored) by which
/// [`SessionDbStore::rotate`] tells `create` which id it reserved for the record.
const SUCCESSOR_KEY: &str = "__sessiondb.successor";
/// Collisions on a 128-bit random id are not expected in the life of the universe;
/// this many in a row means the id source is broken.
const MAX_CREATE_ATTEMPTS: usize = 16;

/// A tower-sessions [`SessionStore`] over sessiondb's [`Sessions`] — the embedded
/// [`crate::Store`] or Redis, whichever the configuration names — plus the helpers for the
/// per-user index. Cheap to clone (clones share everything): give one clone to
/// `SessionManagerLayer::new` and keep another in your app state for the helpers.
#[derive(Clone)]
pub struct SessionDbStore {
    sessions: Sessions,
    /// Ids [`SessionDbStore::rotate`] has moved a session to and whose record `create`
    /// has not received yet.
    successors: Arc<Mutex<HashSet<i128>>>,
}

impl fmt::Debug for SessionDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionDbStore")
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

/// What the helpers of [`SessionDbStore`] can fail with.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The backend refused or could not be reached (see [`crate::Error`]): e.g. an
    /// invalid user id, a user at their session limit, a write that could not be made
    /// durable, or Redis unavailable ([`crate::Error::Unavailable`]).
    Store(crate::error::Error),
    /// tower-sessions failed to load, save or delete the session, or to encode a value.
    Session(tower_sessions_core::session::Error),
    /// The operation needs a session bound to a user, and this one is not (never
    /// logged in, logged out, revoked or expired).
    NotLoggedIn,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Store(e) => write!(f, "session store: {e}"),
            Error::Session(e) => write!(f, "tower-sessions: {e}"),
            Error::NotLoggedIn => write!(f, "the session is not bound to a user"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Store(e) => Some(e),
            Error::Session(e) => Some(e),
            Error::NotLoggedIn => None,
        }
    }
}

impl From<crate::error::Error> for Error {
    fn from(e: crate::error::Error) -> Self {
        Error::Store(e)
    }
}

impl From<tower_sessions_core::session::Error> for Error {
    fn from(e: tower_sessions_core::session::Error) -> Self {
        Error::Session(e)
    }
}

pub use crate::integrations::Device;

impl SessionDbStore {
    /// Wraps `sessions`: a [`crate::Store`] (`SessionDbStore::new(Store::open("sessions")?)`)
    /// or a [`Sessions`] from [`Sessions::open`] (`"redis://…"` for sessions shared by
    /// several nodes). On the embedded store, writes are called directly on the task, and
    /// under [`crate::Durability::Sync`] the task then awaits the fsync without holding a
    /// thread (see the module docs, and `docs/performance.md#framework-stores`).
    pub fn new(sessions: impl Into<Sessions>) -> SessionDbStore {
        SessionDbStore {
            sessions: sessions.into(),
            successors: Arc::default(),
        }
    }

    /// Overrides whether the embedded store's writes run on tokio's blocking pool
    /// (`true`) or directly on the calling task (`false`): [`Sessions::offload_writes`].
    /// No effect on Redis.
    pub fn offload_writes(mut self, on: bool) -> SessionDbStore {
        self.sessions = self.sessions.offload_writes(on);
        self
    }

    /// The sessions, for everything this adapter does not wrap (events, admin tools;
    /// [`Sessions::as_embedded`] for what only the embedded store has). Writing a
    /// tower-sessions session's data through it is pointless: the next save from
    /// tower-sessions replaces the data.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The sessiondb token a tower-sessions id maps to (see the module docs).
    pub fn token(id: Id) -> Token {
        let mut bytes = [0u8; 24];
        bytes[..16].copy_from_slice(&id.0.to_le_bytes());
        bytes[16..].copy_from_slice(&ID_TAG);
        Token::from_bytes(bytes)
    }

    // ------------------------------------------------------------------------------
    // Helpers for handlers

    /// The user bound to this request's session, if it is live and has one. This is
    /// the answer to "who is logged in": a revoked, expired or ended session has none.
    ///
    /// # Errors
    /// [`Error::Store`] if the backend cannot be reached (Redis).
    pub async fn user(&self, session: &Session) -> Result<Option<UserId>, Error> {
        match session.id() {
            Some(id) => Ok(self.sessions.user_of(&Self::token(id)).await?),
            None => Ok(None),
        }
    }

    /// The public id of this request's session, if it is stored and live (for logs,
    /// and to mark the current row of a devices page).
    ///
    /// # Errors
    /// [`Error::Store`] if the backend cannot be reached (Redis).
    pub async fn session_id(&self, session: &Session) -> Result<Option<SessionId>, Error> {
        match session.id() {
            Some(id) => Ok(self.sessions.peek(&Self::token(id)).await?.map(|s| s.id())),
            None => Ok(None),
        }
    }

    /// Logs `user` in on this request's session: rotates its id (the session-fixation
    /// defence: the cookie the client came with stops working at once), keeping its
    /// data, then binds the user and records the login time. A visitor whose session
    /// was not stored yet gets it stored first (a fresh id needs no rotation). Saves
    /// the session; the response carries the new cookie.
    ///
    /// ```no_run
    /// # use sessiondb::tower_sessions::{Error, SessionDbStore};
    /// # async fn handler(store: SessionDbStore, session: tower_sessions::Session) -> Result<(), Error> {
    /// // ... the password checked out ...
    /// store.login(&session, "alice").await?;
    /// assert_eq!(store.user(&session).await?.map(|u| u.to_string()), Some("alice".into()));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Store`] with [`crate::Error::InvalidUserId`] / [`crate::Error::TooLarge`]
    /// for a bad user id (checked before anything changes), or
    /// [`crate::Error::UserSessionLimit`] if the user is at the limit and the policy
    /// refuses (the session is then rotated but anonymous); [`Error::Session`] if
    /// tower-sessions cannot load or save the session.
    pub async fn login(&self, session: &Session, user: &str) -> Result<(), Error> {
        self.login_inner(session, user, None).await
    }

    /// [`SessionDbStore::login`] that also records how the user proved who they are
    /// (the methods and the level: [`crate::Sessions::login_with`]), shown on the
    /// devices page and asked by [`crate::Session::authenticated_within`].
    ///
    /// # Errors
    /// [`Error::Store`] with [`crate::Error::InvalidSignIn`] for a malformed `how`
    /// (before anything changes); otherwise as [`SessionDbStore::login`].
    pub async fn login_with(
        &self,
        session: &Session,
        user: &str,
        how: SignIn,
    ) -> Result<(), Error> {
        how.check()?;
        self.login_inner(session, user, Some(how)).await
    }

    /// A step-up on this request's session ("sudo mode": the user proved their
    /// password again, or a second factor): rotates its id, as a privilege change
    /// should, then adds `how`'s methods at its level ([`crate::Sessions::step_up`]).
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user; [`Error::Store`] with
    /// [`crate::Error::InvalidSignIn`] for a malformed `how`; as
    /// [`SessionDbStore::rotate`].
    pub async fn step_up(&self, session: &Session, how: SignIn) -> Result<(), Error> {
        how.check()?;
        self.user(session).await?.ok_or(Error::NotLoggedIn)?;
        self.rotate(session).await?;
        let id = session.id().ok_or(Error::NotLoggedIn)?;
        self.sessions.add_sign_in(&Self::token(id), how).await?;
        Ok(())
    }

    /// Records the client this request came from for the devices page
    /// ([`crate::Sessions::seen_from`]: a write only when it changed, at most once per
    /// touch interval). Returns whether it wrote; false for a session not stored yet.
    ///
    /// # Errors
    /// [`Error::Store`] with [`crate::Error::Ended`] if the session ended meanwhile.
    pub async fn seen_from(&self, session: &Session, device: &ClientDevice) -> Result<bool, Error> {
        match session.id() {
            Some(id) => Ok(self.sessions.seen_from(&Self::token(id), device).await?),
            None => Ok(false),
        }
    }

    async fn login_inner(
        &self,
        session: &Session,
        user: &str,
        how: Option<SignIn>,
    ) -> Result<(), Error> {
        UserId::new(user, &self.sessions.options().limits)?;
        self.rotate(session).await?;
        if session.id().is_none() {
            session.save().await?;
        }
        let id = session
            .id()
            .ok_or(Error::Store(crate::error::Error::Ended))?;
        match how {
            Some(how) => {
                self.sessions
                    .bind_user_with(&Self::token(id), user, how)
                    .await?;
            }
            None => self.sessions.bind_user(&Self::token(id), user).await?,
        }
        // tower-sessions sends the cookie only for a modified session; a visitor's
        // first request may have changed nothing else.
        session.set_expiry(session.expiry());
        Ok(())
    }

    /// Gives this request's session a new id, keeping its data, user and public id (for
    /// privilege changes; [`SessionDbStore::login`] calls it). The old id stops
    /// resolving at once. A session that is not stored (a new visitor) or no longer live
    /// is left to tower-sessions, which gives it a fresh id when it is saved.
    ///
    /// Unlike tower-sessions' [`Session::cycle_id`], this keeps the user binding: the
    /// backend moves the session to the new id in one step ([`Sessions::rotate_to`]), then
    /// tower-sessions' own `cycle_id` and `save` run, and `create` hands the record
    /// the reserved id. If the request is dropped half-way, the session is ended rather
    /// than left under an id no client holds.
    ///
    /// # Errors
    /// [`Error::Session`] if tower-sessions cannot load or save the session;
    /// [`Error::Store`] if the backend cannot make the change (durably).
    pub async fn rotate(&self, session: &Session) -> Result<(), Error> {
        // Load the record now: once the backend has moved the session, the old id
        // loads nothing.
        session.get_value(SUCCESSOR_KEY).await?;
        let Some(old) = session.id() else {
            return Ok(());
        };
        let mut attempts = 0;
        let new = loop {
            let new = Id::default();
            match self
                .sessions
                .rotate_to(&Self::token(old), &Self::token(new))
                .await
            {
                Ok(()) => break new,
                Err(crate::error::Error::Exists { .. }) if attempts < MAX_CREATE_ATTEMPTS => {
                    attempts += 1;
                }
                Err(crate::error::Error::Ended) => {
                    // Ended since it was loaded: tower-sessions mints a fresh id, and
                    // the data moves to a new, anonymous session.
                    session.cycle_id().await?;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut guard = Successor::reserve(self, new);
        session
            .insert_value(SUCCESSOR_KEY, Value::String(new.0.to_string()))
            .await?;
        session.cycle_id().await?;
        session.save().await?;
        guard.disarm();
        Ok(())
    }

    /// Ends this request's session and clears it, so the response removes the cookie
    /// (tower-sessions' [`Session::flush`]).
    ///
    /// # Errors
    /// [`Error::Session`] if the store cannot delete it.
    pub async fn logout(&self, session: &Session) -> Result<(), Error> {
        session.flush().await?;
        Ok(())
    }

    /// "Log out everywhere": ends every session of the user bound to this request's
    /// session, this one included, and clears this one so the response removes the
    /// cookie. Returns how many sessions were ended. Final: a request of that user
    /// still in flight (on any node sharing the backend) cannot save its session back.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user; [`Error::Store`] if the
    /// revocation cannot be made (durably).
    pub async fn logout_everywhere(&self, session: &Session) -> Result<usize, Error> {
        let user = self.user(session).await?.ok_or(Error::NotLoggedIn)?;
        let n = self.sessions.revoke_user(user.as_str()).await?;
        session.flush().await?;
        Ok(n)
    }

    /// "Sign out all other devices": ends every other session of the user bound to
    /// this request's session and keeps this one (after a password change, or a "that's
    /// not me" on the devices page). One step of the backend
    /// ([`Sessions::revoke_others`]): a login on another device racing it is ended or
    /// comes after. Returns how many sessions were ended.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user; [`Error::Store`] if the
    /// revocation cannot be made (durably), or this session ended meanwhile.
    pub async fn logout_others(&self, session: &Session) -> Result<usize, Error> {
        self.user(session).await?.ok_or(Error::NotLoggedIn)?;
        let id = session.id().ok_or(Error::NotLoggedIn)?;
        Ok(self.sessions.revoke_others(&Self::token(id)).await?)
    }

    /// After the user changed their password on this request's session (what Django's
    /// `update_session_auth_hash` is for): signs this session in afresh — a new id,
    /// authenticated now ([`SessionDbStore::login`]) — then ends every session of the
    /// user that signed in before that, for good ([`Sessions::revoke_user_before`]):
    /// none of them comes back, not even through an import of an older backup. Returns
    /// how many ended.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user; as [`SessionDbStore::login`];
    /// [`Error::Store`] if the revocation cannot be made (durably), or this session
    /// ended meanwhile.
    pub async fn password_changed(&self, session: &Session) -> Result<usize, Error> {
        let user = self.user(session).await?.ok_or(Error::NotLoggedIn)?;
        self.login(session, user.as_str()).await?;
        let id = session.id().ok_or(Error::NotLoggedIn)?;
        let signed_in = self
            .sessions
            .peek(&Self::token(id))
            .await?
            .and_then(|s| s.authenticated_at())
            .ok_or(Error::Store(crate::error::Error::Ended))?;
        Ok(self
            .sessions
            .revoke_user_before(user.as_str(), signed_in)
            .await?)
    }

    /// The live sessions of the user bound to this request's session, oldest first,
    /// the current one marked. O(that user's sessions).
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user; [`Error::Store`] if the
    /// backend cannot be reached (Redis).
    pub async fn devices(&self, session: &Session) -> Result<Vec<Device>, Error> {
        let user = self.user(session).await?.ok_or(Error::NotLoggedIn)?;
        let current = self.session_id(session).await?;
        Ok(crate::integrations::devices_in(&self.sessions, &user, current).await?)
    }

    /// Ends one session of the user bound to this request's session ("sign out that
    /// device"), by its public id. Returns false if there is no such live session of
    /// this user — a session of another user is never ended, and not told apart from
    /// an unknown one. Ending the current session also clears it, as
    /// [`SessionDbStore::logout`].
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user; [`Error::Store`] if the end
    /// cannot be made (durably).
    pub async fn end_device(&self, session: &Session, device: SessionId) -> Result<bool, Error> {
        let user = self.user(session).await?.ok_or(Error::NotLoggedIn)?;
        if !crate::integrations::owned_in(&self.sessions, device, &user).await? {
            return Ok(false);
        }
        let current = self.session_id(session).await? == Some(device);
        let ended = self.sessions.end_by_id(device).await?;
        if current {
            session.flush().await?;
        }
        Ok(ended)
    }

    /// Sets this request's session's device label (e.g. "Firefox on Linux", from the
    /// User-Agent), shown by [`SessionDbStore::devices`]. Stores the session first if
    /// it is new.
    ///
    /// # Errors
    /// [`Error::Store`] with [`crate::Error::TooLarge`] past the label limit, or
    /// [`crate::Error::Ended`] if the session is no longer live; [`Error::Session`] if
    /// tower-sessions cannot save it.
    pub async fn set_label(&self, session: &Session, label: &str) -> Result<(), Error> {
        if session.id().is_none() {
            session.save().await?;
        }
        let id = session
            .id()
            .ok_or(Error::Store(crate::error::Error::Ended))?;
        self.sessions
            .set_label(&Self::token(id), Some(label))
            .await?;
        session.set_expiry(session.expiry()); // so the response carries the cookie
        Ok(())
    }

    // ------------------------------------------------------------------------------
    // Internals

    /// Stores `record` under its id, which must address a live session: the data (with
    /// the exact expiry) and the deadline. A session that is not live is left alone.
    async fn save_live(
        &self,
        id: Id,
        data: &SessionData,
        deadline: Timestamp,
    ) -> crate::error::Result<()> {
        let token = Self::token(id);
        loop {
            let Some(s) = self.sessions.peek(&token).await? else {
                return Ok(()); // ended: a save never brings it back
            };
            let current = s.absolute_deadline();
            // Order the two writes so that the backend's deadline is never earlier
            // than the stored expiry: a later deadline first, an earlier one last.
            if deadline > current {
                match self.sessions.set_expiry(&token, deadline).await {
                    Ok(_) => {}
                    Err(crate::error::Error::Ended) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            if s.data() != data {
                match self.sessions.save(&token, s.version(), data).await {
                    Ok(_) => {}
                    Err(crate::error::Error::VersionConflict { .. }) => continue,
                    Err(crate::error::Error::Ended) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            if deadline < current {
                match self.sessions.set_expiry(&token, deadline).await {
                    Ok(_) | Err(crate::error::Error::Ended) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        }
    }

    /// Creates a session for `record`, drawing a new id on a collision.
    async fn create_new(
        &self,
        mut id: Id,
        data: SessionData,
        deadline: Timestamp,
    ) -> crate::error::Result<Option<Id>> {
        let now = now_ms();
        if deadline <= now {
            return Ok(None); // dead at birth: nothing to keep
        }
        let lifetime = Duration::from_millis(deadline.0 - now.0);
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let token = Self::token(id);
            let new = NewSession::anonymous()
                .lifetime(lifetime)
                .idle_timeout(Duration::ZERO)
                .data(data.clone());
            match self.sessions.create_with_token(&token, new).await {
                Ok(s) => {
                    // The backend counted the lifetime from its own clock reading.
                    if s.absolute_deadline() != deadline {
                        match self.sessions.set_expiry(&token, deadline).await {
                            Ok(_) | Err(crate::error::Error::Ended) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    return Ok(Some(id));
                }
                Err(crate::error::Error::Exists { .. }) => id = Id::default(),
                Err(e) => return Err(e),
            }
        }
        Err(crate::error::Error::Entropy(format!(
            "{MAX_CREATE_ATTEMPTS} session ids in a row collided with live sessions"
        )))
    }
}

/// A reservation made by [`SessionDbStore::rotate`]: until disarmed, dropping it (the
/// request was cancelled half-way) ends the session the backend moved to the reserved
/// id, which no client holds.
struct Successor<'a> {
    store: &'a SessionDbStore,
    id: Id,
    armed: bool,
}

impl<'a> Successor<'a> {
    fn reserve(store: &'a SessionDbStore, id: Id) -> Successor<'a> {
        store.successors.lock().insert(id.0);
        Successor {
            store,
            id,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Successor<'_> {
    fn drop(&mut self) {
        let unclaimed = self.store.successors.lock().remove(&self.id.0);
        if !(self.armed && unclaimed) {
            return;
        }
        // Best effort, from a destructor: an error here (or no runtime to reach Redis
        // from) leaves a session nobody can address, which its deadline removes.
        let token = SessionDbStore::token(self.id);
        match self.store.sessions.as_embedded() {
            Some(engine) => {
                let _ = engine.end(&token);
            }
            None => {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let sessions = self.store.sessions.clone();
                    rt.spawn(async move {
                        let _ = sessions.end(&token).await;
                    });
                }
            }
        }
    }
}

#[async_trait]
impl SessionStore for SessionDbStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let successor = take_successor(&mut record.data);
        let data = encode(record)?;
        let deadline = deadline_of(record.expiry_date);
        if let Some(id) = successor.filter(|id| self.successors.lock().remove(&id.0)) {
            // The session is already there under this id (SessionDbStore::rotate).
            record.id = id;
            let saved = self.save_live(id, &data, deadline).await;
            if saved.is_err() {
                // The record cannot be stored (e.g. past a limit): the session must
                // not stay behind under an id whose record tower-sessions will drop.
                let _ = self.sessions.end(&Self::token(id)).await;
            }
            return saved.map_err(backend);
        }
        if let Some(id) = self
            .create_new(record.id, data, deadline)
            .await
            .map_err(backend)?
        {
            record.id = id;
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = encode(record)?;
        self.save_live(record.id, &data, deadline_of(record.expiry_date))
            .await
            .map_err(backend)
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let Some(s) = self
            .sessions
            .get(&Self::token(*session_id))
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let record = decode(*session_id, s.data(), s.expires_at())?;
        Ok((record.expiry_date > OffsetDateTime::now_utc()).then_some(record))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.sessions
            .end(&Self::token(*session_id))
            .await
            .map(|_| ())
            .map_err(backend)
    }
}

/// The backend already removes expired sessions in the background (the embedded
/// store's reaper, on a timing wheel, without a scan; Redis's reaper task and key
/// expiry); this runs one pass of the reaper now. There is no need for
/// `continuously_delete_expired`.
#[async_trait]
impl ExpiredDeletion for SessionDbStore {
    async fn delete_expired(&self) -> session_store::Result<()> {
        self.sessions.reap_expired().await.map_err(backend)?;
        Ok(())
    }
}

/// Removes [`SUCCESSOR_KEY`] from the record's data, returning the id it names.
fn take_successor(data: &mut HashMap<String, Value>) -> Option<Id> {
    match data.remove(SUCCESSOR_KEY)? {
        Value::String(s) => s.parse().ok().map(Id),
        _ => None,
    }
}

/// The record's map and exact expiry as session data: one key per entry (`t:` + key,
/// JSON value) and [`EXPIRY_KEY`], built in one pass.
fn encode(record: &Record) -> session_store::Result<SessionData> {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::with_capacity(record.data.len() + 1);
    for (k, v) in &record.data {
        let json = serde_json::to_vec(v).map_err(|e| {
            session_store::Error::Encode(format!("session value {k:?} as JSON: {e}"))
        })?;
        entries.push((format!("{ENTRY_PREFIX}{k}"), json));
    }
    entries.push((
        EXPIRY_KEY.to_owned(),
        record
            .expiry_date
            .unix_timestamp_nanos()
            .to_le_bytes()
            .to_vec(),
    ));
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut buf = Vec::with_capacity(entries.iter().map(|(k, v)| 6 + k.len() + v.len()).sum());
    for (k, v) in &entries {
        let klen = u16::try_from(k.len()).map_err(|_| too_large("key", k.len()))?;
        let vlen = u32::try_from(v.len()).map_err(|_| too_large("value", v.len()))?;
        buf.extend_from_slice(&klen.to_le_bytes());
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(&vlen.to_le_bytes());
        buf.extend_from_slice(v);
    }
    SessionData::from_slice(&buf)
        .ok_or_else(|| session_store::Error::Encode("session data did not encode".into()))
}

/// The tower-sessions record stored in `data` (keys this module did not write are
/// ignored). Without a stored expiry (a session created through the engine), the
/// session's deadline stands in.
fn decode(id: Id, data: &SessionData, deadline: Timestamp) -> session_store::Result<Record> {
    let mut map = HashMap::new();
    let mut expiry = None;
    for (k, v) in data.iter() {
        if let Some(key) = k.strip_prefix(ENTRY_PREFIX) {
            let value: Value = serde_json::from_slice(v)
                .map_err(|e| session_store::Error::Decode(format!("session value {key:?}: {e}")))?;
            map.insert(key.to_owned(), value);
        } else if k == EXPIRY_KEY {
            let nanos = <[u8; 16]>::try_from(v)
                .map(i128::from_le_bytes)
                .map_err(|_| {
                    session_store::Error::Decode("stored expiry is not 16 bytes".into())
                })?;
            expiry = Some(
                OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|e| {
                    session_store::Error::Decode(format!("stored expiry out of range: {e}"))
                })?,
            );
        }
    }
    Ok(Record {
        id,
        data: map,
        expiry_date: expiry.unwrap_or_else(|| offset_of(deadline)),
    })
}

fn too_large(what: &str, len: usize) -> session_store::Error {
    session_store::Error::Encode(format!("session {what} of {len} bytes is too large"))
}

/// `expiry` rounded down to the millisecond, clamped to the store's range.
fn deadline_of(expiry: OffsetDateTime) -> Timestamp {
    let ms = expiry.unix_timestamp_nanos().div_euclid(1_000_000);
    Timestamp(u64::try_from(ms.max(0)).unwrap_or(u64::MAX))
}

/// A store deadline as a date ([`Timestamp::MAX`], "never", as the latest date).
fn offset_of(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0) * 1_000_000)
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

fn now_ms() -> Timestamp {
    deadline_of(OffsetDateTime::now_utc())
}

/// Maps an engine error to the store error tower-sessions expects: refused input is an
/// encoding failure; everything else is the backend's.
fn backend(e: crate::error::Error) -> session_store::Error {
    match e {
        crate::error::Error::TooLarge { .. } | crate::error::Error::Codec { .. } => {
            session_store::Error::Encode(e.to_string())
        }
        other => session_store::Error::Backend(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(data: &[(&str, Value)], expiry: OffsetDateTime) -> Record {
        Record {
            id: Id::default(),
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            expiry_date: expiry,
        }
    }

    #[test]
    fn encode_then_decode_gives_back_the_record_exactly() {
        let expiry = OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_123_456_789).unwrap();
        let r = record(
            &[
                ("b", serde_json::json!({"nested": [1, 2.5, null, "x"]})),
                ("a", serde_json::json!(u64::MAX)),
                ("", serde_json::json!("empty key")),
            ],
            expiry,
        );
        let data = encode(&r).unwrap();
        assert_eq!(data.len(), 4);
        let back = decode(r.id, &data, Timestamp(0)).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn decode_refuses_a_value_that_is_not_json() {
        let mut data = SessionData::new();
        data.insert_raw("t:k", b"\xff not json").unwrap();
        assert!(matches!(
            decode(Id::default(), &data, Timestamp(0)),
            Err(session_store::Error::Decode(_))
        ));
    }

    #[test]
    fn decode_ignores_keys_it_did_not_write_and_falls_back_to_the_deadline() {
        let mut data = SessionData::new();
        data.insert_raw("native", b"1").unwrap();
        let r = decode(Id::default(), &data, Timestamp(1_000)).unwrap();
        assert!(r.data.is_empty());
        assert_eq!(r.expiry_date.unix_timestamp_nanos(), 1_000_000_000);
    }

    #[test]
    fn deadlines_round_down_and_clamp() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_999_999).unwrap();
        assert_eq!(deadline_of(t), Timestamp(1));
        let before_epoch = OffsetDateTime::from_unix_timestamp_nanos(-5_000_000).unwrap();
        assert_eq!(deadline_of(before_epoch), Timestamp(0));
        assert_eq!(
            offset_of(Timestamp::MAX),
            time::PrimitiveDateTime::MAX.assume_utc()
        );
    }

    #[test]
    fn tokens_of_distinct_ids_differ_and_carry_the_tag() {
        let a = SessionDbStore::token(Id(1));
        let b = SessionDbStore::token(Id(-1));
        assert_ne!(a, b);
        assert_eq!(&a.as_bytes()[16..], &ID_TAG);
        assert_eq!(&a.as_bytes()[..16], &1i128.to_le_bytes());
    }
}
