//! A session: its state inside the index ([`SessionState`]), the snapshot handed to
//! callers ([`Session`]), what to create one with ([`NewSession`]), and the rule that
//! computes its deadline.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::clock::{Timestamp, duration_ms};
use crate::error::{Error, Result};
use crate::model::data::SessionData;
use crate::model::details::{Details, device_of, factors_of, label_of};
use crate::model::device::Device;
use crate::model::signin::{Assessed, Factor, SignIn};
use crate::model::token::SessionId;
use crate::options::{Limits, Options};

/// The identifier of a user, as the application names them (an account id, an email).
/// Non-empty, without control characters, at most [`Limits::max_user_id_bytes`] long.
/// Cheap to clone.
///
/// A thin pointer (8 bytes, one shared allocation per user holding the boxed string):
/// every session holds one, and a fat `Arc<str>` would cost each session 8 bytes more.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<Box<str>>);

impl UserId {
    /// A user id read back from a file: it must satisfy the structural rules, but
    /// not the configured size limit, which may have changed since it was written.
    ///
    /// # Errors
    /// What is wrong with it, as text (recovery reports it as corruption).
    pub(crate) fn stored(s: &str) -> std::result::Result<UserId, String> {
        let limits = Limits {
            max_user_id_bytes: usize::MAX,
            ..Limits::default()
        };
        UserId::new(s, &limits).map_err(|e| e.to_string())
    }

    /// Checks and wraps a user id.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] if empty or containing a control character;
    /// [`Error::TooLarge`] past the limit.
    pub fn new(s: &str, limits: &Limits) -> Result<UserId> {
        UserId::check(s, limits)?;
        Ok(UserId(Arc::new(Box::from(s))))
    }

    /// Checks a user id as [`UserId::new`] does, without wrapping it.
    pub(crate) fn check(s: &str, limits: &Limits) -> Result<()> {
        if s.is_empty() {
            return Err(Error::InvalidUserId {
                reason: "a user id must not be empty",
            });
        }
        if s.len() > limits.max_user_id_bytes {
            return Err(Error::TooLarge {
                what: "user id",
                len: s.len(),
                max: limits.max_user_id_bytes,
            });
        }
        if s.chars().any(char::is_control) {
            return Err(Error::InvalidUserId {
                reason: "a user id must not contain control characters",
            });
        }
        Ok(())
    }

    /// An equal id in an allocation of its own (whose reference count no other clone
    /// shares: recovery gives each loading thread its own).
    pub(crate) fn separate_copy(&self) -> UserId {
        UserId(Arc::new(Box::from(self.as_str())))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a user id that was already checked ([`UserId::check`], or read back from a
    /// backend that a store checked it into), without checking it again.
    pub(crate) fn trusted(s: &str) -> UserId {
        UserId(Arc::new(Box::from(s)))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self.0, f)
    }
}

impl std::borrow::Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Checks one data entry against the limits.
pub(crate) fn check_entry(key: &str, value_len: usize, l: &Limits) -> Result<()> {
    if key.len() > l.max_key_bytes {
        return Err(Error::TooLarge {
            what: "key",
            len: key.len(),
            max: l.max_key_bytes,
        });
    }
    if value_len > l.max_value_bytes {
        return Err(Error::TooLarge {
            what: "value",
            len: value_len,
            max: l.max_value_bytes,
        });
    }
    Ok(())
}

/// Checks a whole data map against the limits.
pub(crate) fn check_data(data: &SessionData, l: &Limits) -> Result<()> {
    for (k, v) in data.iter() {
        check_entry(k, v.len(), l)?;
    }
    if data.encoded_len() > l.max_data_bytes {
        return Err(Error::TooLarge {
            what: "session data",
            len: data.encoded_len(),
            max: l.max_data_bytes,
        });
    }
    Ok(())
}

pub(crate) fn check_label(label: &str, limits: &Limits) -> Result<()> {
    if label.len() > limits.max_label_bytes {
        return Err(Error::TooLarge {
            what: "label",
            len: label.len(),
            max: limits.max_label_bytes,
        });
    }
    Ok(())
}

/// Whether a session authenticated at `authenticated` (`None`: not signed in) signed in
/// before `not_before`, its user's not-before time: the one rule by which
/// [`crate::Store::revoke_user_before`] ends it, recovery drops it, an import of it is
/// refused and `verify` reports it.
pub(crate) fn signed_in_before(authenticated: Option<Timestamp>, not_before: Timestamp) -> bool {
    authenticated.is_none_or(|a| a < not_before)
}

/// What to create a session with: [`NewSession::anonymous`] or
/// [`NewSession::for_user`], then optional settings.
#[derive(Clone, Debug, Default)]
pub struct NewSession {
    pub(crate) user: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) lifetime: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) data: SessionData,
    pub(crate) sign_in: Option<SignIn>,
    pub(crate) device: Option<Device>,
}

impl NewSession {
    /// A session with no user yet (a visitor; bind one at login).
    pub fn anonymous() -> NewSession {
        NewSession::default()
    }

    /// A session for `user`, authenticated now.
    pub fn for_user(user: impl Into<String>) -> NewSession {
        NewSession {
            user: Some(user.into()),
            ..NewSession::default()
        }
    }

    /// Client metadata to show on a "your devices" page, e.g. "Firefox on Linux".
    pub fn label(mut self, label: impl Into<String>) -> NewSession {
        self.label = Some(label.into());
        self
    }

    /// How its user signed in (a session [`NewSession::for_user`] only; an anonymous
    /// one with it is refused with [`Error::InvalidSignIn`]). Without it, the session
    /// is at level 0 with no factors.
    pub fn signed_in(mut self, how: SignIn) -> NewSession {
        self.sign_in = Some(how);
        self
    }

    /// The client it is created for: shown on a devices page
    /// ([`Session::user_agent`], [`Session::address`]).
    pub fn device(mut self, device: Device) -> NewSession {
        self.device = Some(device);
        self
    }

    /// Absolute lifetime of this session, instead of the store's default. From 1 ms to
    /// `Duration::MAX`, as [`crate::Options::lifetime`]; outside it the create is
    /// refused with [`Error::InvalidOption`] `NewSession::lifetime`.
    pub fn lifetime(mut self, d: Duration) -> NewSession {
        self.lifetime = Some(d);
        self
    }

    /// Idle timeout of this session, instead of the store's default: zero disables it;
    /// otherwise from 1 ms to `Duration::MAX`, as [`crate::Options::idle_timeout`].
    /// Outside that the create is refused with [`Error::InvalidOption`]
    /// `NewSession::idle_timeout`.
    pub fn idle_timeout(mut self, d: Duration) -> NewSession {
        self.idle_timeout = Some(d);
        self
    }

    /// Initial data: created in the same step (one log record, one fsync under
    /// `Durability::Sync`) instead of a create followed by puts.
    pub fn data(mut self, data: SessionData) -> NewSession {
        self.data = data;
        self
    }
}

/// What a shared backend (Redis, PostgreSQL) checks of a session to create before it
/// sends anything, in the embedded store's order: the user id, the label, the sign-in
/// (none on an anonymous session), the lifetimes, the data. Returns the user and the
/// lifetime and idle timeout the session gets.
///
/// # Errors
/// As [`crate::Store::create`] refuses bad input.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn check_new(
    new: &NewSession,
    o: &Options,
) -> Result<(Option<UserId>, Duration, Duration)> {
    let user = new
        .user
        .as_deref()
        .map(|u| UserId::new(u, &o.limits))
        .transpose()?;
    if let Some(label) = &new.label {
        check_label(label, &o.limits)?;
    }
    if let Some(how) = &new.sign_in {
        how.check()?;
        if user.is_none() {
            return Err(Error::InvalidSignIn {
                reason: "an anonymous session has no sign-in; create it with \
                         NewSession::for_user"
                    .into(),
            });
        }
    }
    let (lifetime, idle) = new.durations(o)?;
    check_data(&new.data, &o.limits)?;
    Ok((user, lifetime, idle))
}

impl NewSession {
    /// The lifetime and idle timeout the session gets (its own, or the store's
    /// defaults), refused as the options are outside their ranges.
    pub(crate) fn durations(&self, defaults: &Options) -> Result<(Duration, Duration)> {
        const MS: Duration = Duration::from_millis(1);
        let lifetime = self.lifetime.unwrap_or(defaults.lifetime);
        if lifetime < MS {
            return Err(Error::InvalidOption {
                name: "NewSession::lifetime",
                reason: "must be from 1 ms to Duration::MAX".into(),
            });
        }
        let idle = self.idle_timeout.unwrap_or(defaults.idle_timeout);
        if !idle.is_zero() && idle < MS {
            return Err(Error::InvalidOption {
                name: "NewSession::idle_timeout",
                reason: "must be zero (no idle timeout) or from 1 ms to Duration::MAX".into(),
            });
        }
        Ok((lifetime, idle))
    }
}

/// A snapshot of a session, as of the call that returned it. Cheap: the data is shared,
/// not copied.
#[derive(Clone, Debug)]
pub struct Session {
    pub(crate) id: SessionId,
    pub(crate) user: Option<UserId>,
    pub(crate) details: Option<Arc<Details>>,
    /// Its assurance level at `as_of`, and which factors count then.
    pub(crate) assessed: Assessed,
    /// When the snapshot was taken, by the store's clock.
    pub(crate) as_of: Timestamp,
    pub(crate) created_at: Timestamp,
    pub(crate) last_seen: Timestamp,
    pub(crate) authenticated_at: Option<Timestamp>,
    pub(crate) expires_at: Timestamp,
    pub(crate) absolute_deadline: Timestamp,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) version: u64,
    pub(crate) data: SessionData,
}

/// The version a change to a session at version `v` gives it.
///
/// # Errors
/// [`Error::VersionExhausted`] if `v` is already [`Session::MAX_VERSION`] (or past it:
/// a record imported before versions were bounded).
pub(crate) fn next_version(v: u64) -> Result<u64> {
    if v >= Session::MAX_VERSION {
        return Err(Error::VersionExhausted { version: v });
    }
    Ok(v + 1)
}

impl Session {
    /// The highest version a session reaches: 2^53 - 1, below which every integer is
    /// exact in a double (Redis keeps numbers in Lua's doubles). A change to a
    /// session at this version is refused with [`Error::VersionExhausted`], and an
    /// import of a record that could take no change is refused
    /// ([`crate::Store::import`]): a version never wraps around.
    pub const MAX_VERSION: u64 = (1 << 53) - 1;

    /// A snapshot assembled from a backend's fields (the Redis backend).
    #[cfg(any(feature = "redis", feature = "postgres"))]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        id: SessionId,
        user: Option<UserId>,
        details: Option<Arc<Details>>,
        assessed: Assessed,
        as_of: Timestamp,
        created_at: Timestamp,
        last_seen: Timestamp,
        authenticated_at: Option<Timestamp>,
        expires_at: Timestamp,
        absolute_deadline: Timestamp,
        idle_timeout: Option<Duration>,
        version: u64,
        data: SessionData,
    ) -> Session {
        Session {
            id,
            user,
            details,
            assessed,
            as_of,
            created_at,
            last_seen,
            authenticated_at,
            expires_at,
            absolute_deadline,
            idle_timeout,
            version,
            data,
        }
    }

    /// The public id: stable across rotation, safe to show and log.
    pub fn id(&self) -> SessionId {
        self.id
    }
    /// The bound user, if any.
    pub fn user(&self) -> Option<&UserId> {
        self.user.as_ref()
    }
    /// The device label given at creation or by [`crate::Store::set_label`].
    pub fn label(&self) -> Option<&str> {
        label_of(&self.details).map(|l| &**l)
    }
    /// How its user proved who they are, one [`Factor`] per method, in the order the
    /// methods were last used ([`crate::Store::login_with`],
    /// [`crate::Store::step_up`]); empty for a visitor, or a login that said nothing
    /// of how ([`crate::Store::login`]).
    pub fn factors(&self) -> &[Factor] {
        factors_of(&self.details)
    }
    /// Its assurance level when it was read: the highest level among its factors
    /// still within their level's lifetime ([`crate::Options::level_lifetime`]), 0 if
    /// none.
    pub fn level(&self) -> u8 {
        self.assessed.level
    }
    /// The "sudo mode" question: whether its user proved a level of at least `level`
    /// within `within` before this snapshot was taken (with a factor still within its
    /// level's lifetime). Level 0 asks about any login: a session signed in without
    /// [`SignIn`] answers from [`Session::authenticated_at`].
    pub fn authenticated_within(&self, level: u8, within: Duration) -> bool {
        let since = Timestamp(self.as_of.0.saturating_sub(duration_ms(within)));
        if level == 0
            && let Some(at) = self.authenticated_at
            && at >= since
        {
            return true;
        }
        self.factors().iter().enumerate().any(|(i, f)| {
            self.assessed.counting & (1 << i) != 0
                && f.level >= level
                && f.at >= since
                && f.at <= self.as_of
        })
    }
    /// The client's user agent as last recorded ([`crate::NewSession::device`],
    /// [`crate::Store::seen_from`]).
    pub fn user_agent(&self) -> Option<&str> {
        device_of(&self.details).and_then(|d| d.user_agent.as_deref())
    }
    /// The client's address as last recorded, as [`crate::Options::address_privacy`]
    /// kept it (by default its /24 or /48 network).
    pub fn address(&self) -> Option<IpAddr> {
        device_of(&self.details).and_then(|d| d.address)
    }
    /// When its device (user agent, address) was last recorded.
    pub fn device_seen_at(&self) -> Option<Timestamp> {
        device_of(&self.details).map(|d| d.at)
    }

    /// Whether a store with `opts` would record `device` for this session as of this
    /// snapshot (`seen_from_if_changed`'s check).
    pub(crate) fn device_due(&self, device: &Device, opts: &Options) -> bool {
        device
            .due(
                device_of(&self.details),
                self.as_of,
                opts.address_privacy,
                duration_ms(opts.touch_interval),
            )
            .is_some()
    }
    /// When it was created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }
    /// Its last recorded activity (reads advance it at most once per touch interval).
    pub fn last_seen(&self) -> Timestamp {
        self.last_seen
    }
    /// When its user last authenticated, if a user is bound.
    pub fn authenticated_at(&self) -> Option<Timestamp> {
        self.authenticated_at
    }
    /// When it will end if nothing changes: the earliest of its deadlines.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }
    /// Its absolute deadline, regardless of activity.
    pub fn absolute_deadline(&self) -> Timestamp {
        self.absolute_deadline
    }
    /// Its idle timeout, `None` when disabled.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }
    /// The version of its data and user: every change increments it, up to
    /// [`Session::MAX_VERSION`]. Pass it to [`crate::Store::save`].
    pub fn version(&self) -> u64 {
        self.version
    }
    /// Its data.
    pub fn data(&self) -> &SessionData {
        &self.data
    }
    /// Reads one value of its data as a `T`.
    ///
    /// # Errors
    /// [`Error::Codec`] if the stored value is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.data.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_rejects_empty_control_and_oversized() {
        let l = Limits::default();
        assert!(matches!(
            UserId::new("", &l),
            Err(Error::InvalidUserId { .. })
        ));
        assert!(UserId::new("a\nb", &l).is_err());
        assert!(matches!(
            UserId::new(&"x".repeat(257), &l),
            Err(Error::TooLarge { .. })
        ));
        assert_eq!(UserId::new("alice", &l).unwrap().as_str(), "alice");
    }
}
