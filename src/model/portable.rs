//! [`SessionRecord`]: a session's whole state as plain public fields, for moving
//! sessions out of a store and into another ([`crate::Store::export`],
//! [`crate::Store::import`]): backups, migrations between backends, and tools such as
//! the `sessiondb` command line.
//!
//! A record carries the token's hash, never the token: the store never had it. An
//! imported session therefore answers to the same cookie it answered to before.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Timestamp, duration_ms};
use crate::error::{Error, Result};
use crate::model::change::Image;
use crate::model::data::SessionData;
use crate::model::details::{Details, device_of, factors_of, label_of};
use crate::model::device::DeviceInfo;
use crate::model::session::{Session, UserId, check_data, check_label};
use crate::model::signin::{Factor, check_factors};
use crate::model::token::{SessionId, TokenHash};
use crate::options::AddressPrivacy;
use crate::options::Limits;

/// Everything a store keeps about one session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    /// The public id, stable across rotation.
    pub id: SessionId,
    /// The hash of the session's current token (the key it is found by).
    pub token_hash: TokenHash,
    /// The bound user, if any.
    pub user: Option<UserId>,
    /// The device label, if any.
    pub label: Option<String>,
    /// When the session was created.
    pub created: Timestamp,
    /// When a user was last bound to it (logged in), if one is.
    pub authenticated: Option<Timestamp>,
    /// The absolute deadline.
    pub absolute: Timestamp,
    /// The idle timeout, if the session has one.
    pub idle_timeout: Option<Duration>,
    /// The last activity.
    pub last_seen: Timestamp,
    /// The data version (see [`crate::Store::save`]). An import needs it below
    /// [`Session::MAX_VERSION`], so that the session can still change.
    pub version: u64,
    /// The session's data.
    pub data: SessionData,
    /// How its user signed in ([`Session::factors`]); empty if nothing was said.
    pub factors: Vec<Factor>,
    /// The client's user agent as last recorded ([`Session::user_agent`]).
    pub user_agent: Option<String>,
    /// The client's address as stored ([`Session::address`]).
    pub address: Option<IpAddr>,
    /// When the device was last recorded: set if and only if a user agent or an
    /// address is.
    pub device_seen_at: Option<Timestamp>,
}

impl SessionRecord {
    /// What both backends check before they import a record: the store's limits, and
    /// that it neither contradicts itself nor is at a version that cannot grow. For a
    /// tool that checks a whole file of records before importing any.
    ///
    /// # Errors
    /// What an import would refuse it for ([`Error::TooLarge`],
    /// [`Error::InvalidUserId`], [`Error::InvalidSignIn`], [`Error::InvalidOption`]).
    pub fn check(&self, limits: &Limits) -> Result<()> {
        if let Some(user) = &self.user {
            UserId::new(user.as_str(), limits)?;
        }
        if let Some(label) = &self.label {
            check_label(label, limits)?;
        }
        check_data(&self.data, limits)?;
        check_factors(&self.factors)?;
        if !self.factors.is_empty() && self.user.is_none() {
            return Err(Error::InvalidSignIn {
                reason: "a session with factors but no user".into(),
            });
        }
        if let Some(d) = self.device()
            && let Err(reason) = d.check()
        {
            return Err(Error::InvalidOption {
                name: "SessionRecord::user_agent",
                reason,
            });
        }
        if self.device_seen_at.is_some() != (self.user_agent.is_some() || self.address.is_some()) {
            return Err(Error::InvalidOption {
                name: "SessionRecord::device_seen_at",
                reason: "is set if and only if a user agent or an address is".into(),
            });
        }
        if self.last_seen < self.created {
            return Err(Error::InvalidOption {
                name: "SessionRecord::last_seen",
                reason: "is earlier than its creation".into(),
            });
        }
        if self.version >= Session::MAX_VERSION {
            return Err(Error::InvalidOption {
                name: "SessionRecord::version",
                reason: format!(
                    "must be from 0 to {} (Session::MAX_VERSION - 1) so the session can \
                     still change; got {}",
                    Session::MAX_VERSION - 1,
                    self.version
                ),
            });
        }
        Ok(())
    }

    /// The record of session `s`, whose current token hashes to `hash`.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn of_session(s: &Session, hash: TokenHash) -> SessionRecord {
        SessionRecord {
            id: s.id(),
            token_hash: hash,
            user: s.user().cloned(),
            label: s.label().map(str::to_owned),
            created: s.created_at(),
            authenticated: s.authenticated_at(),
            absolute: s.absolute_deadline(),
            idle_timeout: s.idle_timeout(),
            last_seen: s.last_seen(),
            version: s.version(),
            data: s.data().clone(),
            factors: s.factors().to_vec(),
            user_agent: s.user_agent().map(str::to_owned),
            address: s.address(),
            device_seen_at: s.device_seen_at(),
        }
    }

    /// Keeps of the address what `privacy` keeps (a store that keeps less than the
    /// one the record came from cuts it further, never the other way).
    pub(crate) fn keep_address_as(&mut self, privacy: AddressPrivacy) {
        self.address = self.address.and_then(|a| privacy.apply(a));
        if self.user_agent.is_none() && self.address.is_none() {
            self.device_seen_at = None;
        }
    }

    /// The device the record describes, as a session keeps it.
    fn device(&self) -> Option<DeviceInfo> {
        Some(DeviceInfo {
            user_agent: self.user_agent.as_deref().map(Arc::from),
            address: self.address,
            at: self.device_seen_at?,
        })
    }

    pub(crate) fn from_image(img: Image) -> SessionRecord {
        let device = device_of(&img.details);
        SessionRecord {
            id: img.id,
            token_hash: img.hash,
            user: img.user,
            label: label_of(&img.details).map(|l| l.to_string()),
            factors: factors_of(&img.details).to_vec(),
            user_agent: device.and_then(|d| d.user_agent.as_deref().map(str::to_owned)),
            address: device.and_then(|d| d.address),
            device_seen_at: device.map(|d| d.at),
            created: img.created,
            authenticated: img.authenticated,
            absolute: img.absolute,
            idle_timeout: (img.idle_ms != 0).then(|| Duration::from_millis(img.idle_ms)),
            last_seen: img.last_seen,
            version: img.version,
            data: img.data,
        }
    }

    pub(crate) fn into_image(self) -> Image {
        let details = Details {
            label: self.label.as_deref().map(Arc::from),
            device: self.device().map(Box::new),
            factors: self.factors.into(),
        };
        Image {
            id: self.id,
            hash: self.token_hash,
            user: self.user,
            details: details.shared(),
            created: self.created,
            authenticated: self.authenticated,
            absolute: self.absolute,
            idle_ms: self.idle_timeout.map_or(0, duration_ms),
            last_seen: self.last_seen,
            version: self.version,
            data: self.data,
        }
    }
}
