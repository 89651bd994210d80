//! The single point every state change passes on its way to durability: a [`Change`]
//! describes it, and [`Journal::append`] hands it to the log.
//!
//! The store calls `append` while it still holds the lock of what it changed, so the
//! log receives the changes of any one session (and of any one user) in the order they
//! were applied; replaying the log in order rebuilds the same state. Waiting for the
//! change to be durable ([`Journal::wait`]) happens after the locks are released.

pub(crate) mod batch;
pub(crate) mod commit;
pub(crate) mod touches;
pub(crate) mod writer;

use std::task::{Context, Poll, Waker};

use crate::error::Result;
use crate::journal::writer::Writer;
use crate::model::change::{Change, Ticket};

/// Where changes go.
pub(crate) enum Journal {
    /// Nothing is kept: the store lives and dies with the process.
    Memory,
    /// A writer thread makes changes durable through a storage backend.
    Disk(Writer),
}

impl Journal {
    /// Hands a change to the log. Call with the lock of what changed still held.
    pub(crate) fn append(&self, change: impl FnOnce() -> Change) -> Result<Ticket> {
        #[cfg(test)]
        tests::countdown()?;
        match self {
            Journal::Memory => Ok(Ticket(0)),
            Journal::Disk(d) => d.append(change()),
        }
    }

    /// Returns once the change behind `ticket` is as durable as the mode promises.
    /// Call with no lock held. (Inside [`crate::Store::deferred`] the engine does not
    /// call it: it records the ticket for the caller's [`crate::Commit`] instead.)
    pub(crate) fn wait(&self, ticket: Ticket) -> Result<()> {
        match self {
            Journal::Memory => Ok(()),
            Journal::Disk(d) => d.wait(ticket),
        }
    }

    /// As [`Journal::wait`], for a [`crate::Commit`] being awaited.
    pub(crate) fn poll_wait(
        &self,
        ticket: Ticket,
        cx: &Context<'_>,
        registered: &mut Option<Waker>,
    ) -> Poll<Result<()>> {
        match self {
            Journal::Memory => Poll::Ready(Ok(())),
            Journal::Disk(d) => d.poll_wait(ticket, cx, registered),
        }
    }

    /// This journal's identity for a deferral scope.
    pub(crate) fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use crate::error::{Error, Result};

    thread_local! {
        static FAIL_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// Makes this thread's appends fail, as a poisoned journal's do, after `n` more
    /// succeed (for tests of what a failure partway through an operation leaves).
    pub(crate) fn fail_appends_after(n: Option<usize>) {
        FAIL_AFTER.set(n);
    }

    pub(super) fn countdown() -> Result<()> {
        match FAIL_AFTER.get() {
            Some(0) => Err(Error::Poisoned {
                reason: "failed by a test".into(),
            }),
            Some(n) => {
                FAIL_AFTER.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        }
    }
}
