//! Session lifecycle [`Event`]s and why a session ended ([`EndReason`]); the store's
//! `EventBus` delivers them.

use crate::model::session::UserId;
use crate::model::token::{InstanceId, SessionId};

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// [`crate::Store::end`] or [`crate::Store::end_by_id`]: a logout.
    Ended,
    /// Its absolute, idle or authentication deadline passed.
    Expired,
    /// [`crate::Store::revoke_user`] ended every session of its user.
    Revoked,
    /// Its user went over [`crate::Options::max_sessions_per_user`]; it was the oldest.
    LimitExceeded,
    /// Its idle timeout is disabled and its last instance ended.
    LastInstanceEnded,
    /// [`crate::Store::clear`].
    Cleared,
    /// The store was at its memory budget ([`crate::Options::budget`]) and this
    /// anonymous session, the least recently seen, made room for a new one.
    Evicted,
    /// [`crate::Store::revoke_others`]: another session of its user signed out all
    /// the others ("sign out all other devices").
    RevokedByOtherSession,
}

impl EndReason {
    /// Every reason, in a fixed order ([`EndReason::index`]).
    pub const ALL: [EndReason; 8] = [
        EndReason::Ended,
        EndReason::Expired,
        EndReason::Revoked,
        EndReason::LimitExceeded,
        EndReason::LastInstanceEnded,
        EndReason::Cleared,
        EndReason::Evicted,
        EndReason::RevokedByOtherSession,
    ];

    /// Its place in [`EndReason::ALL`].
    pub fn index(self) -> usize {
        match self {
            EndReason::Ended => 0,
            EndReason::Expired => 1,
            EndReason::Revoked => 2,
            EndReason::LimitExceeded => 3,
            EndReason::LastInstanceEnded => 4,
            EndReason::Cleared => 5,
            EndReason::Evicted => 6,
            EndReason::RevokedByOtherSession => 7,
        }
    }

    /// Its name as a metric label: `logout`, `expired`, `revoked`, `limit`,
    /// `last_instance`, `cleared`, `evicted`, `revoked_by_other_session`.
    pub fn label(self) -> &'static str {
        match self {
            EndReason::Ended => "logout",
            EndReason::Expired => "expired",
            EndReason::Revoked => "revoked",
            EndReason::LimitExceeded => "limit",
            EndReason::LastInstanceEnded => "last_instance",
            EndReason::Cleared => "cleared",
            EndReason::Evicted => "evicted",
            EndReason::RevokedByOtherSession => "revoked_by_other_session",
        }
    }
}

/// Something that happened to a session. Events name sessions by their public
/// [`SessionId`], never by token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A session was created.
    Created {
        /// The session.
        session: SessionId,
        /// Its user, if created for one.
        user: Option<UserId>,
    },
    /// A session ended; `reason` says how. Expiry is reported here too, with
    /// [`EndReason::Expired`], when the reaper removes the session.
    Ended {
        /// The session.
        session: SessionId,
        /// Its user at the time.
        user: Option<UserId>,
        /// Why.
        reason: EndReason,
    },
    /// [`crate::Store::revoke_user`] ended these sessions of `user` (each also gets an
    /// [`Event::Ended`] with [`EndReason::Revoked`]).
    UserRevoked {
        /// The user.
        user: UserId,
        /// The sessions ended.
        sessions: Vec<SessionId>,
    },
    /// The session's token was replaced; the old one resolves for the grace period.
    Rotated {
        /// The session.
        session: SessionId,
    },
    /// A user was bound to the session (a login).
    UserBound {
        /// The session.
        session: SessionId,
        /// The user now bound.
        user: UserId,
    },
    /// The session's user was unbound (a logout that keeps the session).
    UserUnbound {
        /// The session.
        session: SessionId,
        /// The user that was bound.
        user: UserId,
    },
    /// [`crate::Store::clear`] ended every session.
    Cleared {
        /// How many sessions there were.
        sessions: usize,
    },
    /// One instance (tab, window) of a session ended.
    InstanceEnded {
        /// The session.
        session: SessionId,
        /// The instance.
        instance: InstanceId,
    },
}
