//! [`SessionRecord`]: a session's whole state as plain public fields, for moving
//! sessions out of a store and into another ([`crate::Store::export`],
//! [`crate::Store::import`]): backups, migrations between backends, and tools such as
//! the `sessiondb` command line.
//!
//! A record carries the token's hash, never the token: the store never had it. An
//! imported session therefore answers to the same cookie it answered to before.

use std::time::Duration;

use crate::clock::{Timestamp, duration_ms};
use crate::error::{Error, Result};
use crate::model::change::Image;
use crate::model::data::SessionData;
use crate::model::session::{Session, UserId, check_data, check_label};
use crate::model::token::{SessionId, TokenHash};
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
}

impl SessionRecord {
    /// What both backends check before they import a record: the store's limits, and
    /// that it neither contradicts itself nor is at a version that cannot grow.
    pub(crate) fn check(&self, limits: &Limits) -> Result<()> {
        if let Some(user) = &self.user {
            UserId::new(user.as_str(), limits)?;
        }
        if let Some(label) = &self.label {
            check_label(label, limits)?;
        }
        check_data(&self.data, limits)?;
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

    pub(crate) fn from_image(img: Image) -> SessionRecord {
        SessionRecord {
            id: img.id,
            token_hash: img.hash,
            user: img.user,
            label: img.label.map(|l| l.to_string()),
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
        Image {
            id: self.id,
            hash: self.token_hash,
            user: self.user,
            label: self.label.map(Into::into),
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
