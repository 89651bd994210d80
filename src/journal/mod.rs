//! The single point every state change passes on its way to durability: a [`Change`]
//! describes it, and [`Journal::append`] hands it to the log.
//!
//! The store calls `append` while it still holds the lock of what it changed, so the
//! log receives the changes of any one session (and of any one user) in the order they
//! were applied; replaying the log in order rebuilds the same state. Waiting for the
//! change to be durable ([`Journal::wait`]) happens after the locks are released.

pub(crate) mod commit;
pub(crate) mod writer;

use std::task::{Context, Poll, Waker};

use crate::error::Result;
use crate::journal::writer::Durable;
use crate::model::change::{Change, Ticket};

/// Where changes go.
pub(crate) enum Journal {
    /// Nothing is kept: the store lives and dies with the process.
    Memory,
    /// A writer thread makes changes durable through a storage backend.
    Durable(Durable),
}

impl Journal {
    /// Hands a change to the log. Call with the lock of what changed still held.
    pub(crate) fn append(&self, change: impl FnOnce() -> Change) -> Result<Ticket> {
        match self {
            Journal::Memory => Ok(Ticket(0)),
            Journal::Durable(d) => d.append(change()),
        }
    }

    /// Returns once the change behind `ticket` is as durable as the mode promises.
    /// Call with no lock held. Inside [`crate::Store::deferred`] it only records the
    /// ticket for the caller's [`crate::Commit`] ([`commit::defer_wait`]).
    pub(crate) fn wait(&self, ticket: Ticket) -> Result<()> {
        match self {
            Journal::Durable(_) if commit::defer_wait(self.key(), ticket) => Ok(()),
            _ => self.wait_now(ticket),
        }
    }

    /// As [`Journal::wait`] (never deferred), for a [`crate::Commit`] being waited on.
    pub(crate) fn wait_now(&self, ticket: Ticket) -> Result<()> {
        match self {
            Journal::Memory => Ok(()),
            Journal::Durable(d) => d.wait(ticket),
        }
    }

    /// As [`Journal::wait_now`], for a [`crate::Commit`] being awaited.
    pub(crate) fn poll_wait(
        &self,
        ticket: Ticket,
        cx: &Context<'_>,
        registered: &mut Option<Waker>,
    ) -> Poll<Result<()>> {
        match self {
            Journal::Memory => Poll::Ready(Ok(())),
            Journal::Durable(d) => d.poll_wait(ticket, cx, registered),
        }
    }

    /// This journal's identity for a deferral scope.
    pub(crate) fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }
}
