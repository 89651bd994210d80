//! What passes from the engine to persistence: a [`Change`] (one state change, as the
//! log records it), the [`Ticket`] proving it was handed over, and the [`Image`] of a
//! whole session (what a compacted base and an import hold); recovery hands back
//! [`Record`]s.
//!
//! Every change states its effect absolutely (the whole data map, the new user, the new
//! deadline), never as a delta, so replaying one that a snapshot already reflects
//! changes nothing.

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::model::data::SessionData;
use crate::model::details::Details;
use crate::model::device::DeviceInfo;
use crate::model::event::EndReason;
use crate::model::session::UserId;
use crate::model::signin::Factor;
use crate::model::token::{SessionId, TokenHash};

/// One state change, as the log records it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Change {
    /// A new session.
    Create {
        id: SessionId,
        hash: TokenHash,
        user: Option<UserId>,
        label: Option<Arc<str>>,
        created: Timestamp,
        absolute: Timestamp,
        idle_ms: u64,
        /// Initial data (empty unless given with [`crate::NewSession::data`]).
        data: SessionData,
    },
    /// The whole data map after a put, remove, update or save.
    Data {
        id: SessionId,
        version: u64,
        at: Timestamp,
        data: SessionData,
    },
    /// Activity: the idle deadline counts from `at`.
    Touch { id: SessionId, at: Timestamp },
    /// A new absolute deadline.
    Extend {
        id: SessionId,
        absolute: Timestamp,
        at: Timestamp,
    },
    /// A user bound (logged in) at `at`.
    Bind {
        id: SessionId,
        user: UserId,
        at: Timestamp,
        version: u64,
    },
    /// The user unbound.
    Unbind { id: SessionId, version: u64 },
    /// A new device label.
    Label {
        id: SessionId,
        label: Option<Arc<str>>,
    },
    /// The token was replaced; `old` resolves until `grace_until`.
    Rotate {
        id: SessionId,
        old: TokenHash,
        new: TokenHash,
        grace_until: Timestamp,
        at: Timestamp,
    },
    /// How the session's user signed in: its whole list of factors after a login
    /// with a [`crate::SignIn`] or a step-up (empty: none, after a plain login or a
    /// logout).
    SignIn { id: SessionId, factors: Vec<Factor> },
    /// Its device, as last recorded.
    Device { id: SessionId, device: DeviceInfo },
    /// The session ended.
    End { id: SessionId, reason: EndReason },
    /// Every session ended.
    Clear,
    /// `user`'s sessions authenticated before `at` are revoked (each has its own
    /// `End`), and one authenticated before it is never admitted again (an import is
    /// refused). A user's not-before is the latest of these.
    NotBefore { user: UserId, at: Timestamp },
    /// A whole session brought in from elsewhere ([`crate::Store::import`]); logged as
    /// the same image record a compacted base holds.
    Import(Box<Image>),
}

/// Proof that a change was handed to the journal; [`Journal::wait`] on it returns once
/// the change is as durable as the store's durability mode promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[must_use]
pub(crate) struct Ticket(pub(crate) u64);

/// A session's whole state: what a compacted base stores, and what recovery rebuilds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Image {
    pub(crate) id: SessionId,
    pub(crate) hash: TokenHash,
    pub(crate) user: Option<UserId>,
    /// Label, factors and device.
    pub(crate) details: Option<Arc<Details>>,
    pub(crate) created: Timestamp,
    pub(crate) authenticated: Option<Timestamp>,
    pub(crate) absolute: Timestamp,
    pub(crate) idle_ms: u64,
    pub(crate) last_seen: Timestamp,
    pub(crate) version: u64,
    pub(crate) data: SessionData,
}

impl Image {
    /// The image as a view, for code that takes one wherever the session lives.
    pub(crate) fn view(&self) -> ImageRef<'_> {
        ImageRef {
            id: self.id,
            hash: self.hash,
            user: &self.user,
            details: &self.details,
            created: self.created,
            authenticated: self.authenticated,
            absolute: self.absolute,
            idle_ms: self.idle_ms,
            last_seen: self.last_seen,
            version: self.version,
            data: &self.data,
        }
    }
}

/// A session's whole state borrowed from where it lives — the index, or an [`Image`]:
/// what a compaction encodes under the index's read locks, with no reference count
/// taken on the session's shared parts.
#[derive(Clone, Copy)]
pub(crate) struct ImageRef<'a> {
    pub(crate) id: SessionId,
    pub(crate) hash: TokenHash,
    pub(crate) user: &'a Option<UserId>,
    /// Label, factors and device.
    pub(crate) details: &'a Option<Arc<Details>>,
    pub(crate) created: Timestamp,
    pub(crate) authenticated: Option<Timestamp>,
    pub(crate) absolute: Timestamp,
    pub(crate) idle_ms: u64,
    pub(crate) last_seen: Timestamp,
    pub(crate) version: u64,
    pub(crate) data: &'a SessionData,
}

impl ImageRef<'_> {
    /// The image, owning its parts.
    pub(crate) fn to_image(self) -> Image {
        Image {
            id: self.id,
            hash: self.hash,
            user: self.user.clone(),
            details: self.details.clone(),
            created: self.created,
            authenticated: self.authenticated,
            absolute: self.absolute,
            idle_ms: self.idle_ms,
            last_seen: self.last_seen,
            version: self.version,
            data: self.data.clone(),
        }
    }
}

#[cfg(any(test, feature = "sled"))]
impl Image {
    /// Applies `f` to the image's details (label, factors, device).
    pub(crate) fn edit_details(&mut self, f: impl FnOnce(&mut Details)) {
        self.details = Details::edit(&self.details, f);
    }
}

/// A decoded, validated record.
#[derive(Debug, PartialEq)]
pub(crate) enum Record {
    Change(Change),
    Image(Image),
    Alias {
        hash: TokenHash,
        id: SessionId,
        until: Timestamp,
    },
}
