//! An [actix-session] store backed by sessiondb (cargo feature `actix-session`), and the
//! helpers that give an actix-web app what only sessiondb has: the per-user index (bind
//! the session to a user at login, list that user's sessions as devices, end one, "log
//! out everywhere").
//!
//! This module owns the mapping between actix-session's session state and sessiondb's
//! sessions, the [`SessionStore`] implementation, and the helpers on [`SessionDbStore`]
//! that a handler calls with its [`actix_session::Session`].
//!
//! ```no_run
//! use actix_session::{Session, SessionMiddleware};
//! use actix_web::{App, HttpServer, cookie::Key, web};
//! use sessiondb::Store;
//! use sessiondb::actix_session::SessionDbStore;
//!
//! async fn login(store: web::Data<SessionDbStore>, session: Session) -> actix_web::Result<&'static str> {
//!     // ... the password checked out ...
//!     store.login(&session, "alice").await?; // new cookie, user bound
//!     Ok("welcome")
//! }
//!
//! # async fn demo() -> std::io::Result<()> {
//! let store = SessionDbStore::new(Store::open("sessions").map_err(std::io::Error::other)?);
//! let key = Key::generate(); // load it from your configuration instead
//! HttpServer::new(move || {
//!     App::new()
//!         .app_data(web::Data::new(store.clone()))
//!         .wrap(SessionMiddleware::new(store.clone(), key.clone()))
//!         .route("/login", web::post().to(login))
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await
//! # }
//! ```
//!
//! # The mapping
//!
//! - **Keys.** actix-session lets the store choose the session key, so the key *is* a
//!   sessiondb [`Token`]: `save` creates the session with [`Store::create`] and returns
//!   the token's 32-character string. The store keys the session by the token's BLAKE3
//!   hash, so the cookie value never reaches the disk. A key that does not parse as a
//!   token ([`Token::parse`], strict) is "no session": `load` returns `Ok(None)` and the
//!   middleware starts a fresh one.
//! - **State.** actix-session's state is a map of key to JSON text. Each entry is one
//!   key of the session's [`SessionData`] — `a:` + the actix key, holding the JSON text
//!   as bytes — so sessiondb's limits apply per entry as documented
//!   ([`crate::Limits`]: key, value, whole session), the keys stay visible to
//!   sessiondb's tools, and an update that changes nothing writes nothing. The
//!   alternative, the whole map as one JSON value under one key, would put the whole
//!   map under the per-value limit (64 KiB by default) and hide the keys; the
//!   tower-sessions store measured the two layouts and chose the same. The session's
//!   data belongs to actix-session: an update replaces all of it.
//! - **TTL.** The session's absolute deadline is now + the TTL actix-session passes
//!   (counted on the store's clock), set at `save`, `update` and `update_ttl`
//!   ([`Store::set_expiry`]: it may move either way, so the deadline is exactly what
//!   actix-session asked, as with Redis' `EX`). The engine's own idle timeout is off
//!   for these sessions: actix-session's TTL policy
//!   ([`actix_session::config::TtlExtensionPolicy`]) decides what extends a session.
//!   ([`crate::Options::auth_lifetime`], if set, still ends a logged-in session that
//!   long after its login.) A TTL of zero or less is refused as a configuration error.
//!   An `update` that changes the state is two engine writes (data, then deadline;
//!   two fsyncs under [`crate::Durability::Sync`]); one that does not change it is one.
//!
//! # Ending is final
//!
//! `delete` ends the session ([`Store::end`]). actix-session's Redis store answers an
//! `update` of a key that is gone by creating a *new* session from the state; this
//! store does not: **an `update` (or `update_ttl`) of a session that is not live
//! stores nothing** and returns its key unchanged, so the response carries a key that
//! loads nothing and the next request starts afresh. That is what makes "log out
//! everywhere" stick while another of the user's requests is still in flight: its
//! state (an app's own `user_id` entry included) is not written back under any key.
//! `load` never returns an expired session.
//!
//! # Users, rotation and the per-user index
//!
//! actix-session does not show a handler its session key, so `load` adds one entry to
//! the state it returns, [`KEY_ENTRY`], holding the key the request came with; the
//! helpers read it to find the session. It is never stored (`save` and `update` drop
//! it), and it is useless to a client: the cookie must be signed or encrypted with the
//! app's key. Leave it alone; [`actix_session::Session::clear`] removes it (the helpers
//! then see no stored session).
//!
//! actix-session's own [`actix_session::Session::renew`] makes the middleware call
//! `delete` and then `save`. A store cannot tell that pair from a logout followed by an
//! unrelated new session, so a session renewed that way comes back **anonymous**: the
//! state moves to a new session, the user binding does not, and other requests still
//! carrying the old cookie find nothing. That fails closed. To rotate and keep the
//! binding, call [`SessionDbStore::rotate`] (privilege changes) or
//! [`SessionDbStore::login`] (rotates, then binds): they rotate the session in the
//! engine ([`Store::rotate`]: same public [`SessionId`], data, user and creation time;
//! the old token keeps resolving for [`crate::Options::rotation_grace`] so parallel
//! requests are not logged out), and the middleware's `update` returns the new key, so
//! the response sets the new cookie. The new key is only ever handed to the request
//! that rotated: a request carrying the old key is never answered with it (that is the
//! session-fixation defence: whoever planted the old cookie must not get the new one).
//! So a parallel request that *changes* the state with the old cookie during the grace
//! period has its write stored, but its response sets the old cookie again; if that
//! response reaches the browser last, the browser is logged out when the grace period
//! ends. Rotate where no state-changing request runs in parallel (a login form's POST),
//! or widen [`crate::Options::rotation_grace`] only as far as you accept an old cookie
//! to keep working.
//!
//! Use the binding as the source of truth for "who is logged in"
//! ([`SessionDbStore::user`]), not a user id of your own in the state: the index only
//! knows what was bound, and only bound sessions are reached by
//! [`SessionDbStore::logout_everywhere`], [`SessionDbStore::logout_others`] and
//! [`SessionDbStore::password_changed`], and listed by [`SessionDbStore::devices`].
//!
//! # Blocking
//!
//! The engine is synchronous, and actix-web runs each worker as a single-threaded
//! runtime: a call that blocks stalls every connection of that worker. Reads, and
//! writes under [`crate::Durability::Memory`] and [`crate::Durability::Buffered`], return in
//! microseconds, so they are called directly (a hand-off to a thread pool would cost
//! more than the call). Under [`crate::Durability::Sync`] a write waits for its fsync (a
//! millisecond or more): called as a blocking call, a worker would do one fsync at a
//! time and serve nothing meanwhile. So the write is made directly inside
//! [`Store::deferred`] and the task awaits its [`crate::Commit`]: the worker keeps
//! serving, and every task that writes meanwhile shares the fsync (group commit):
//! several times the calls per second of offloading to `spawn_blocking`, which in
//! memory costs more than the write itself (`measure_offload` in
//! `tests/actix_session/store_methods.rs`; figures in
//! `docs/performance.md#framework-stores`). [`SessionDbStore::offload_writes`] offloads instead.
//!
//! [actix-session]: https://docs.rs/actix-session

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_session::{Session, SessionInsertError, SessionStatus};
use actix_web::cookie::time::Duration as Ttl;
use actix_web::http::StatusCode;
use parking_lot::Mutex;

use crate::clock::Timestamp;
use crate::model::data::SessionData;
use crate::model::device::Device as ClientDevice;
use crate::model::session::{NewSession, UserId};
use crate::model::signin::SignIn;
use crate::model::token::{SessionId, Token};
use crate::store::Store;

/// The state entry through which `load` tells the helpers which session a request
/// carries (its value: the session key as a JSON string). Never stored.
pub const KEY_ENTRY: &str = "__sessiondb.key";
/// Prefix of the data keys holding actix-session's entries.
const ENTRY_PREFIX: &str = "a:";
/// How long a session a helper rotated or created stays reserved for the middleware to
/// claim. A reservation older than this belongs to a request that was dropped before
/// its response: its session, which no client holds, is ended.
const RESERVATION: Duration = Duration::from_secs(60);

/// The state actix-session hands a store: key to JSON text.
type State = HashMap<String, String>;

/// An actix-session [`SessionStore`] over a sessiondb [`Store`], plus the helpers for the
/// per-user index. Cheap to clone (clones share everything): give one clone to
/// `SessionMiddleware::new` and keep another in your app data for the helpers.
#[derive(Clone)]
pub struct SessionDbStore {
    engine: Store,
    offload: bool,
    pending: Arc<Mutex<Pending>>,
}

/// What the helpers have done that the middleware has not picked up yet.
#[derive(Default)]
struct Pending {
    /// Sessions a helper rotated or created in a handler, by their new token's hash:
    /// the middleware's `update` or `save` claims one when the state names it.
    successors: HashMap<u128, Reservation>,
}

struct Reservation {
    token: Token,
    /// The hash of the token the session had before the helper rotated it, if it did.
    origin: Option<u128>,
    at: Timestamp,
}

impl fmt::Debug for SessionDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionDbStore")
            .field("engine", &self.engine)
            .field("offload_writes", &self.offload)
            .finish_non_exhaustive()
    }
}

/// What the helpers of [`SessionDbStore`] can fail with. It is an actix-web
/// [`actix_web::ResponseError`], so a handler can use `?`: a bad user id is a 400, a
/// session without a user a 401, anything else a 500 (with an empty body, as
/// actix-session's own errors).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The engine refused (see [`crate::Error`]): e.g. an invalid user id, a user at
    /// their session limit, or a write that could not be made durable.
    Store(crate::error::Error),
    /// actix-session could not take the entry that hands the new key to the middleware.
    Session(SessionInsertError),
    /// The operation needs a session bound to a user, and this one is not (never
    /// logged in, logged out, revoked or expired).
    NotLoggedIn,
    /// This request already called [`Session::renew`] or [`Session::purge`]: the
    /// middleware will delete the session, so it cannot be rotated or logged in too.
    /// Call [`SessionDbStore::login`] *instead of* `renew`.
    Discarded,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Store(e) => write!(f, "session store: {e}"),
            Error::Session(e) => write!(f, "actix-session: {e}"),
            Error::NotLoggedIn => write!(f, "the session is not bound to a user"),
            Error::Discarded => write!(
                f,
                "the session was renewed or purged earlier in this request"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Store(e) => Some(e),
            Error::Session(e) => Some(e),
            Error::NotLoggedIn | Error::Discarded => None,
        }
    }
}

impl From<crate::error::Error> for Error {
    fn from(e: crate::error::Error) -> Self {
        Error::Store(e)
    }
}

impl From<SessionInsertError> for Error {
    fn from(e: SessionInsertError) -> Self {
        Error::Session(e)
    }
}

impl actix_web::ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Store(
                crate::error::Error::InvalidUserId { .. } | crate::error::Error::TooLarge { .. },
            ) => StatusCode::BAD_REQUEST,
            Error::NotLoggedIn => StatusCode::UNAUTHORIZED,
            // At the memory budget with no anonymous session to make room: the server
            // protects the sessions it has; the client may come back.
            Error::Store(crate::error::Error::Full { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        let mut res = actix_web::HttpResponse::new(self.status_code());
        if let Error::Store(crate::error::Error::Full { .. }) = self {
            res.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static(
                    crate::integrations::RETRY_AFTER_SECS,
                ),
            );
        }
        res
    }
}

pub use crate::integrations::Device;

impl SessionDbStore {
    /// Wraps `engine`. Writes are called directly on the task; under
    /// [`crate::Durability::Sync`] the task then awaits the fsync without blocking the worker
    /// (see the module docs).
    pub fn new(engine: Store) -> SessionDbStore {
        SessionDbStore {
            engine,
            offload: false,
            pending: Arc::default(),
        }
    }

    /// Overrides whether writes run on tokio's blocking pool (`true`) or directly on
    /// the calling task (`false`, the default).
    pub fn offload_writes(mut self, on: bool) -> SessionDbStore {
        self.offload = on;
        self
    }

    /// The engine, for everything this adapter does not wrap (events, stats, admin
    /// tools). Writing an actix session's data through it is pointless: the next update
    /// from actix-session replaces the data.
    pub fn engine(&self) -> &Store {
        &self.engine
    }

    // ------------------------------------------------------------------------------
    // Helpers for handlers

    /// The user bound to this request's session, if it is stored, live and has one.
    /// This is the answer to "who is logged in": a revoked, expired or ended session
    /// has none.
    pub fn user(&self, session: &Session) -> Option<UserId> {
        self.engine.user_of(&current_token(session)?)
    }

    /// The public id of this request's session, if it is stored and live (for logs,
    /// and to mark the current row of a devices page).
    pub fn session_id(&self, session: &Session) -> Option<SessionId> {
        self.engine.peek(&current_token(session)?).map(|s| s.id())
    }

    /// Logs `user` in on this request's session: rotates its key (the
    /// session-fixation defence: the cookie the client came with stops working once
    /// the grace period is over), keeping its data, then binds the user and records the
    /// login time. A visitor whose session is not stored yet gets one, bound at once (a
    /// fresh key needs no rotation). The response carries the new cookie. Call it
    /// *instead of* [`Session::renew`].
    ///
    /// ```no_run
    /// # use actix_session::Session;
    /// # use sessiondb::actix_session::{Error, SessionDbStore};
    /// # async fn handler(store: SessionDbStore, session: Session) -> Result<(), Error> {
    /// // ... the password checked out ...
    /// store.login(&session, "alice").await?;
    /// assert_eq!(store.user(&session).map(|u| u.to_string()), Some("alice".into()));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Store`] with [`crate::Error::InvalidUserId`] / [`crate::Error::TooLarge`]
    /// for a bad user id (checked before anything changes), or
    /// [`crate::Error::UserSessionLimit`] if the user is at the limit and the policy
    /// refuses (the session is then rotated but anonymous); [`Error::Discarded`] after
    /// `renew` or `purge` in the same request.
    pub async fn login(&self, session: &Session, user: &str) -> Result<(), Error> {
        self.login_inner(session, user, None).await
    }

    /// [`SessionDbStore::login`] that also records how the user proved who they are
    /// (the methods and the level: [`crate::Store::login_with`]), shown on the devices
    /// page and asked by [`crate::Session::authenticated_within`].
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

    /// A step-up on this request's session ("sudo mode"): gives it a new key, as a
    /// privilege change should, then adds `how`'s methods at its level
    /// ([`crate::Store::step_up`]).
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user; [`Error::Store`] with
    /// [`crate::Error::InvalidSignIn`] for a malformed `how`; as
    /// [`SessionDbStore::rotate`].
    pub async fn step_up(&self, session: &Session, how: SignIn) -> Result<(), Error> {
        how.check()?;
        self.user(session).ok_or(Error::NotLoggedIn)?;
        self.rotate(session).await?;
        let token = current_token(session).ok_or(Error::NotLoggedIn)?;
        self.write(move |e| e.add_sign_in(&token, how)).await?;
        Ok(())
    }

    /// Records the client this request came from for the devices page
    /// ([`crate::Store::seen_from`]: a write only when it changed, at most once per
    /// touch interval). Returns whether it wrote; false for a session not stored yet.
    ///
    /// # Errors
    /// [`Error::Store`] with [`crate::Error::Ended`] if the session ended meanwhile.
    pub async fn seen_from(&self, session: &Session, device: &ClientDevice) -> Result<bool, Error> {
        let Some(token) = current_token(session) else {
            return Ok(false);
        };
        let device = device.clone();
        Ok(self.write(move |e| e.seen_from(&token, &device)).await?)
    }

    async fn login_inner(
        &self,
        session: &Session,
        user: &str,
        how: Option<SignIn>,
    ) -> Result<(), Error> {
        UserId::new(user, &self.engine.options().limits)?;
        let user = user.to_owned();
        if self.rotate(session).await? {
            let token = current_token(session).ok_or(Error::Store(crate::error::Error::Ended))?;
            self.write(move |e| match how {
                Some(how) => e.bind_user_with(&token, &user, how),
                None => e.bind_user(&token, &user),
            })
            .await?;
        } else {
            let mut new = NewSession::for_user(user).idle_timeout(Duration::ZERO);
            if let Some(how) = how {
                new = new.signed_in(how);
            }
            self.store_new(session, new).await?;
        }
        Ok(())
    }

    /// Gives this request's session a new key, keeping its data, user and public id
    /// (for privilege changes; [`SessionDbStore::login`] calls it). Returns false, and
    /// changes nothing, if the session is not stored (a new visitor: its first key is
    /// fresh anyway) or no longer live.
    ///
    /// Unlike [`Session::renew`], this keeps the user binding, and requests still
    /// carrying the old cookie keep working for [`crate::Options::rotation_grace`].
    ///
    /// # Errors
    /// [`Error::Discarded`] after `renew` or `purge` in the same request;
    /// [`Error::Store`] with [`crate::Error::TokenRetired`] if the request came with a
    /// key already rotated away (a parallel request rotated it), or if the engine
    /// cannot make the change durable.
    pub async fn rotate(&self, session: &Session) -> Result<bool, Error> {
        check_status(session)?;
        let Some(old) = current_token(session) else {
            return Ok(false);
        };
        let from = old.clone();
        let fresh = match self.write(move |e| e.rotate(&from)).await {
            Ok(t) => t,
            Err(crate::error::Error::Ended) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        self.reserve(session, fresh, Some(old.hash().as_u128()))?;
        Ok(true)
    }

    /// Ends this request's session: [`Session::purge`], after which the middleware
    /// deletes it and the response removes the cookie.
    pub fn logout(&self, session: &Session) {
        session.purge();
    }

    /// "Log out everywhere": ends every session of the user bound to this request's
    /// session, this one included, and purges this one so the response removes the
    /// cookie. Returns how many sessions were ended. Final: a request of that user
    /// still in flight cannot write its session back.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user; [`Error::Store`] if the
    /// revocation cannot be made durable.
    pub async fn logout_everywhere(&self, session: &Session) -> Result<usize, Error> {
        let user = self.user(session).ok_or(Error::NotLoggedIn)?;
        let n = self.write(move |e| e.revoke_user(user.as_str())).await?;
        session.purge();
        Ok(n)
    }

    /// "Sign out all other devices": ends every other session of the user bound to
    /// this request's session and keeps this one (after a password change, or a "that's
    /// not me" on the devices page), under the user's lock
    /// ([`crate::Store::revoke_others`]): a login on another device racing it is ended
    /// or comes after. Returns how many sessions were ended.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user; [`Error::Store`] if the
    /// revocation cannot be made durable, or this session ended meanwhile.
    pub async fn logout_others(&self, session: &Session) -> Result<usize, Error> {
        self.user(session).ok_or(Error::NotLoggedIn)?;
        let token = current_token(session).ok_or(Error::NotLoggedIn)?;
        Ok(self.write(move |e| e.revoke_others(&token)).await?)
    }

    /// After the user changed their password on this request's session (what Django's
    /// `update_session_auth_hash` is for): signs this session in afresh — a new key,
    /// authenticated now ([`SessionDbStore::login`]) — then ends every session of the
    /// user that signed in before that, for good ([`crate::Store::revoke_user_before`]):
    /// none of them comes back, not even through an import of an older backup. Returns
    /// how many ended.
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user; as [`SessionDbStore::login`];
    /// [`Error::Store`] if the revocation cannot be made durable, or this session ended
    /// meanwhile.
    pub async fn password_changed(&self, session: &Session) -> Result<usize, Error> {
        let user = self.user(session).ok_or(Error::NotLoggedIn)?;
        self.login(session, user.as_str()).await?;
        let token = current_token(session).ok_or(Error::NotLoggedIn)?;
        let signed_in = self
            .engine
            .peek(&token)
            .and_then(|s| s.authenticated_at())
            .ok_or(Error::Store(crate::error::Error::Ended))?;
        Ok(self
            .write(move |e| e.revoke_user_before(user.as_str(), signed_in))
            .await?)
    }

    /// The live sessions of the user bound to this request's session, oldest first,
    /// the current one marked. O(that user's sessions).
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user.
    pub fn devices(&self, session: &Session) -> Result<Vec<Device>, Error> {
        let user = self.user(session).ok_or(Error::NotLoggedIn)?;
        let current = self.session_id(session);
        Ok(crate::integrations::devices(&self.engine, &user, current)?)
    }

    /// Ends one session of the user bound to this request's session ("sign out that
    /// device"), by its public id. Returns false if there is no such live session of
    /// this user — a session of another user is never ended, and not told apart from
    /// an unknown one. Ending the current session also purges it, as
    /// [`SessionDbStore::logout`].
    ///
    /// # Errors
    /// [`Error::NotLoggedIn`] if this session has no user; [`Error::Store`] if the end
    /// cannot be made durable.
    pub async fn end_device(&self, session: &Session, device: SessionId) -> Result<bool, Error> {
        let user = self.user(session).ok_or(Error::NotLoggedIn)?;
        if !crate::integrations::owned_by(&self.engine, device, &user) {
            return Ok(false);
        }
        let current = self.session_id(session) == Some(device);
        let ended = self.write(move |e| e.end_by_id(device)).await?;
        if current {
            session.purge();
        }
        Ok(ended)
    }

    /// Sets this request's session's device label (e.g. "Firefox on Linux", from the
    /// User-Agent), shown by [`SessionDbStore::devices`]. A visitor whose session is
    /// not stored yet gets one (anonymous), so the label is kept.
    ///
    /// # Errors
    /// [`Error::Store`] with [`crate::Error::TooLarge`] past the label limit, or
    /// [`crate::Error::Ended`] if the session ended meanwhile; [`Error::Discarded`]
    /// after `renew` or `purge` in the same request.
    pub async fn set_label(&self, session: &Session, label: &str) -> Result<(), Error> {
        check_status(session)?;
        let label = label.to_owned();
        match current_token(session).filter(|t| self.engine.peek(t).is_some()) {
            Some(token) => {
                self.write(move |e| e.set_label(&token, Some(&label)))
                    .await?
            }
            None => {
                let new = NewSession::anonymous()
                    .label(label)
                    .idle_timeout(Duration::ZERO);
                self.store_new(session, new).await?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------
    // Internals

    /// Creates a session for a request whose own is not stored (or no longer live),
    /// and hands it to the middleware.
    async fn store_new(&self, session: &Session, new: NewSession) -> Result<(), Error> {
        check_status(session)?;
        let (token, _) = self.write(move |e| e.create(new)).await?;
        self.reserve(session, token, None)
    }

    /// Records that the session now lives under `token`, for the middleware's `update`
    /// or `save` to claim, and points the request's state at it (which also marks the
    /// state changed, so the middleware calls one of them). Ends the sessions of
    /// reservations nobody claimed in time.
    fn reserve(&self, session: &Session, token: Token, origin: Option<u128>) -> Result<(), Error> {
        let now = self.now();
        let stale: Vec<Token> = {
            let mut pending = self.pending.lock();
            let mut stale = Vec::new();
            pending.successors.retain(|_, r| {
                let keep = r.at.saturating_add(RESERVATION) > now;
                if !keep {
                    stale.push(r.token.clone());
                }
                keep
            });
            pending.successors.insert(
                token.hash().as_u128(),
                Reservation {
                    token: token.clone(),
                    origin,
                    at: now,
                },
            );
            stale
        };
        for t in stale {
            // Best effort: a session nobody holds also ends at its deadline.
            let _ = self.engine.end(&t);
        }
        session.insert(KEY_ENTRY, token.as_string())?;
        Ok(())
    }

    /// Takes the reservation `state` names, if there is one.
    fn claim(&self, state: &State) -> Option<Reservation> {
        let token = token_in(state)?;
        self.pending
            .lock()
            .successors
            .remove(&token.hash().as_u128())
    }

    /// Runs a write on the engine: on tokio's blocking pool when offloading and inside
    /// a tokio runtime, directly otherwise (awaiting the fsync under `Sync`).
    async fn write<T, F>(&self, f: F) -> crate::error::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> crate::error::Result<T> + Send + 'static,
    {
        crate::integrations::write(&self.engine, self.offload, "actix-session", f).await
    }

    fn now(&self) -> Timestamp {
        self.engine.options().clock.now()
    }

    /// Replaces the data of the live session `token` addresses and sets its deadline.
    /// Returns false, having stored nothing, if it is not live.
    fn store_state(
        engine: &Store,
        token: &Token,
        data: &SessionData,
        ttl: Duration,
    ) -> crate::error::Result<bool> {
        match engine.update(token, |d| {
            d.clone_from(data);
            Ok(())
        }) {
            Ok(()) => {}
            Err(crate::error::Error::Ended) => return Ok(false),
            Err(e) => return Err(e),
        }
        let deadline = engine.options().clock.now().saturating_add(ttl);
        match engine.set_expiry(token, deadline) {
            Ok(_) => Ok(true),
            Err(crate::error::Error::Ended) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl SessionStore for SessionDbStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let Ok(token) = Token::parse(session_key.as_ref()) else {
            return Ok(None); // not a key this store made: no session
        };
        let Some(s) = self.engine.get(&token) else {
            return Ok(None);
        };
        let mut state = decode(s.data()).map_err(LoadError::Deserialization)?;
        state.insert(KEY_ENTRY.to_owned(), json_string(session_key.as_ref()));
        Ok(Some(state))
    }

    async fn save(&self, session_state: State, ttl: &Ttl) -> Result<SessionKey, SaveError> {
        let ttl = positive(ttl).map_err(SaveError::Other)?;
        let data = encode(&session_state).map_err(SaveError::Serialization)?;
        if let Some(r) = self.claim(&session_state) {
            // A helper already created (or rotated) this session in the handler.
            let (token, d) = (r.token.clone(), data.clone());
            let stored = self
                .write(move |e| Self::store_state(e, &token, &d, ttl))
                .await
                .map_err(|e| save_error(&e))?;
            if stored {
                return key_of(&r.token).map_err(SaveError::Other);
            }
            // Ended since (e.g. `renew` after a login): the state gets a new session.
        }
        let new = NewSession::anonymous()
            .lifetime(ttl)
            .idle_timeout(Duration::ZERO)
            .data(data);
        let (token, _) = self
            .write(move |e| e.create(new))
            .await
            .map_err(|e| save_error(&e))?;
        key_of(&token).map_err(SaveError::Other)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: State,
        ttl: &Ttl,
    ) -> Result<SessionKey, UpdateError> {
        let ttl = positive(ttl).map_err(UpdateError::Other)?;
        let Ok(token) = Token::parse(session_key.as_ref()) else {
            return Ok(session_key); // loads nothing; nothing to store
        };
        let data = encode(&session_state).map_err(UpdateError::Serialization)?;
        // A helper rotated (or created) the session in this request's handler: the
        // state names its new token. Only this request's state can name it.
        let target = match self.claim(&session_state) {
            Some(r) => r.token,
            None => token,
        };
        let t = target.clone();
        self.write(move |e| Self::store_state(e, &t, &data, ttl))
            .await
            .map_err(|e| update_error(&e))?;
        // Stored or not (a session that is not live stays ended), the key is the one
        // the session lives under.
        key_of(&target).map_err(UpdateError::Other)
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Ttl) -> anyhow::Result<()> {
        let ttl = positive(ttl)?;
        let Ok(token) = Token::parse(session_key.as_ref()) else {
            return Ok(());
        };
        let deadline = self.now().saturating_add(ttl);
        match self.write(move |e| e.set_expiry(&token, deadline)).await {
            Ok(_) | Err(crate::error::Error::Ended) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        let Ok(token) = Token::parse(session_key.as_ref()) else {
            return Ok(());
        };
        // A session a helper moved away from this key in the same request (a login
        // followed by `purge` or `renew`) ends with it.
        let hash = token.hash().as_u128();
        let mut tokens = vec![token];
        {
            let mut pending = self.pending.lock();
            pending.successors.retain(|_, r| {
                let keep = r.origin != Some(hash);
                if !keep {
                    tokens.push(r.token.clone());
                }
                keep
            });
        }
        self.write(move |e| {
            for t in &tokens {
                e.end(t)?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }
}

/// The session token this request's state names ([`KEY_ENTRY`]), if any.
fn current_token(session: &Session) -> Option<Token> {
    let key: String = session.get(KEY_ENTRY).ok()??;
    Token::parse(&key).ok()
}

/// The token a state's [`KEY_ENTRY`] names, if it is well formed.
fn token_in(state: &State) -> Option<Token> {
    let key: String = serde_json_str(state.get(KEY_ENTRY)?)?;
    Token::parse(&key).ok()
}

/// Fails [`Error::Discarded`] if the middleware is going to delete this session.
fn check_status(session: &Session) -> Result<(), Error> {
    match session.status() {
        SessionStatus::Renewed | SessionStatus::Purged => Err(Error::Discarded),
        _ => Ok(()),
    }
}

/// A token as a session key (32 characters: always valid).
fn key_of(token: &Token) -> anyhow::Result<SessionKey> {
    SessionKey::try_from(token.as_string()).map_err(anyhow::Error::new)
}

/// The TTL as a duration, refusing zero or less (and rounding down to milliseconds).
fn positive(ttl: &Ttl) -> anyhow::Result<Duration> {
    let ms = u64::try_from(ttl.whole_milliseconds()).unwrap_or(if ttl.is_positive() {
        u64::MAX
    } else {
        0
    });
    if ms == 0 {
        anyhow::bail!("session TTL must be at least a millisecond, got {ttl}");
    }
    Ok(Duration::from_millis(ms))
}

/// A JSON string literal holding `s` (a token: base64url characters, nothing to
/// escape; escaped anyway for any other input).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The string a JSON string literal of [`json_string`]'s making holds: enough for the
/// key entry, which only ever holds a token. Anything else is `None`.
fn serde_json_str(json: &str) -> Option<String> {
    let inner = json.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['"', '\\'])).then(|| inner.to_owned())
}

/// The state as session data: one key per entry (`a:` + key, the JSON text), without
/// [`KEY_ENTRY`], built in one pass.
fn encode(state: &State) -> anyhow::Result<SessionData> {
    let mut entries: Vec<(String, &[u8])> = state
        .iter()
        .filter(|(k, _)| k.as_str() != KEY_ENTRY)
        .map(|(k, v)| (format!("{ENTRY_PREFIX}{k}"), v.as_bytes()))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut buf = Vec::with_capacity(entries.iter().map(|(k, v)| 6 + k.len() + v.len()).sum());
    for (k, v) in &entries {
        let klen = u16::try_from(k.len())
            .map_err(|_| anyhow::anyhow!("session key of {} bytes is too long", k.len()))?;
        let vlen = u32::try_from(v.len())
            .map_err(|_| anyhow::anyhow!("session value of {} bytes is too large", v.len()))?;
        buf.extend_from_slice(&klen.to_le_bytes());
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(&vlen.to_le_bytes());
        buf.extend_from_slice(v);
    }
    SessionData::from_slice(&buf).ok_or_else(|| anyhow::anyhow!("session state did not encode"))
}

/// The actix-session state stored in `data` (keys this module did not write are
/// ignored). Each value must be JSON, as actix-session writes it: a corrupt or foreign
/// entry fails the load with a deserialization error, as it fails actix-session's own
/// stores (which parse the whole state as one JSON map), rather than reaching the app
/// as a value it never stored.
fn decode(data: &SessionData) -> anyhow::Result<State> {
    let mut state = State::with_capacity(data.len());
    for (k, v) in data.iter() {
        if let Some(key) = k.strip_prefix(ENTRY_PREFIX) {
            let text = std::str::from_utf8(v)
                .map_err(|e| anyhow::anyhow!("session value {key:?} is not UTF-8: {e}"))?;
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| anyhow::anyhow!("session value {key:?} is not JSON: {e}"))?;
            state.insert(key.to_owned(), text.to_owned());
        }
    }
    Ok(state)
}

/// Refused input (past a limit) is a serialization failure; anything else is the
/// backend's.
fn save_error(e: &crate::error::Error) -> SaveError {
    match e {
        crate::error::Error::TooLarge { .. } | crate::error::Error::Codec { .. } => {
            SaveError::Serialization(anyhow::anyhow!("{e}"))
        }
        _ => SaveError::Other(anyhow::anyhow!("{e}")),
    }
}

/// As [`save_error`], for `update`.
fn update_error(e: &crate::error::Error) -> UpdateError {
    match save_error(e) {
        SaveError::Serialization(e) => UpdateError::Serialization(e),
        SaveError::Other(e) => UpdateError::Other(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(entries: &[(&str, &str)]) -> State {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_store_at_its_budget_answers_503_with_retry_after() {
        use actix_web::ResponseError;
        let full = Error::Store(crate::error::Error::Full {
            sessions: 10,
            max_sessions: Some(10),
            bytes: 4000,
            max_bytes: None,
        });
        let res = full.error_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            res.headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap()),
            Some(crate::integrations::RETRY_AFTER_SECS)
        );
        let other = Error::Store(crate::error::Error::Ended).error_response();
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            other
                .headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .is_none()
        );
    }

    #[test]
    fn encode_then_decode_gives_back_the_state_without_the_key_entry() {
        let mut s = state(&[
            ("counter", "100"),
            ("user", "\"ferris\""),
            ("", "{\"nested\":[1,2.5,null]}"),
        ]);
        let data = encode(&s).unwrap();
        assert_eq!(data.len(), 3);
        assert_eq!(data.get_raw("a:counter"), Some(&b"100"[..]));
        s.insert(KEY_ENTRY.to_owned(), json_string("whatever"));
        assert_eq!(encode(&s).unwrap(), data, "the key entry is never stored");
        s.remove(KEY_ENTRY);
        assert_eq!(decode(&data).unwrap(), s);
    }

    #[test]
    fn decode_refuses_a_value_that_is_not_utf8_and_ignores_foreign_keys() {
        let mut data = SessionData::new();
        data.insert_raw("native", b"\xff").unwrap();
        assert!(decode(&data).unwrap().is_empty());
        data.insert_raw("a:k", b"\xff").unwrap();
        assert!(decode(&data).is_err());
    }

    #[test]
    fn ttls_of_zero_or_less_are_refused_and_others_round_down_to_ms() {
        assert!(positive(&Ttl::ZERO).is_err());
        assert!(positive(&Ttl::seconds(-5)).is_err());
        assert!(positive(&Ttl::microseconds(999)).is_err());
        assert_eq!(
            positive(&Ttl::microseconds(1_999)).unwrap(),
            Duration::from_millis(1)
        );
        assert_eq!(
            positive(&Ttl::days(7)).unwrap(),
            Duration::from_secs(7 * 86_400)
        );
    }

    #[test]
    fn the_key_entry_round_trips_as_a_json_string() {
        let t = Token::generate().unwrap().as_string();
        let json = json_string(&t);
        assert_eq!(serde_json_str(&json).as_deref(), Some(t.as_str()));
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(serde_json_str("\"a\\\"b\""), None);
        assert_eq!(serde_json_str("42"), None);
    }
}
