//! Deferred durability: writes made inside [`crate::Store::deferred`] do not block for
//! their fsync; the caller gets a [`Commit`] to await (or wait on) instead.
//!
//! This module owns the per-thread scope that turns a write's "wait until durable"
//! into "remember how far to wait", and the [`Commit`] that does the waiting later. A
//! write under [`crate::Durability::Sync`] appends its change and then waits for the
//! writer's fsync ([`crate::journal::Journal::wait`]); inside a scope, that wait only
//! records the change's ticket, and the events the write raises are held back, so
//! subscribers still hear of a change only once it is durable. The closure runs on the
//! calling thread with nothing awaited inside it, so a thread-local scope sees exactly
//! its writes; it is keyed by the store's journal and event bus, so writes to another
//! store inside the closure wait as usual.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::error::Result;
use crate::model::change::Ticket;
use crate::model::event::Event;

/// The writes of one [`crate::Store::deferred`] call on this thread.
struct Scope {
    /// Address of the store's journal: whose waits are deferred.
    journal: usize,
    /// Address of the store's event bus: whose events are held back.
    events: usize,
    /// The last change appended (tickets are handed out in log order).
    ticket: Ticket,
    stash: Vec<Event>,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `f` with waits on `journal` deferred and events of `events` held back; returns
/// its result, the last ticket it waited for, and the held events. A scope already open
/// on this thread (a nested call) is restored afterwards, also if `f` panics; then the
/// events of the writes `f` made before panicking go to `deliver` (the writes stand, as
/// a blocking write made before a panic does; nobody is left to wait for them).
pub(crate) fn run<R>(
    journal: usize,
    events: usize,
    deliver: &dyn Fn(Vec<Event>),
    f: impl FnOnce() -> R,
) -> (R, Ticket, Vec<Event>) {
    struct Restore<'a> {
        outer: Option<Scope>,
        deliver: &'a dyn Fn(Vec<Event>),
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let outer = self.outer.take();
            // Still there only if `f` unwound before `run` took it.
            let unwound = SCOPE.with(|s| std::mem::replace(&mut *s.borrow_mut(), outer));
            if let Some(scope) = unwound {
                (self.deliver)(scope.stash);
            }
        }
    }
    let outer = SCOPE.with(|s| {
        s.borrow_mut().replace(Scope {
            journal,
            events,
            ticket: Ticket(0),
            stash: Vec::new(),
        })
    });
    let restore = Restore { outer, deliver };
    let r = f();
    let mine = SCOPE.with(|s| s.borrow_mut().take());
    drop(restore);
    let mine = mine.expect("the scope opened above");
    (r, mine.ticket, mine.stash)
}

/// Called by a journal before it waits for `ticket`: inside a scope for this journal,
/// records the ticket and returns true (do not wait).
pub(crate) fn defer_wait(journal: usize, ticket: Ticket) -> bool {
    SCOPE.with(|s| match s.borrow_mut().as_mut() {
        Some(scope) if scope.journal == journal => {
            scope.ticket = scope.ticket.max(ticket);
            true
        }
        _ => false,
    })
}

/// Called by an event bus before it delivers `events`: inside a scope for this bus,
/// holds them back (`None`); otherwise hands them back to deliver now.
pub(crate) fn defer_events(bus: usize, events: Vec<Event>) -> Option<Vec<Event>> {
    SCOPE.with(|s| match s.borrow_mut().as_mut() {
        Some(scope) if scope.events == bus => {
            scope.stash.extend(events);
            None
        }
        _ => Some(events),
    })
}

/// What a [`Commit`] waits on, implemented by the engine: the journal its writes went
/// to, and the subscribers of the events it held back.
pub(crate) trait Settle: Send + Sync {
    /// Blocks until the change behind `ticket` is durable.
    fn wait(&self, ticket: Ticket) -> Result<()>;
    /// Polls the durability of the change behind `ticket`.
    fn poll(
        &self,
        ticket: Ticket,
        cx: &Context<'_>,
        registered: &mut Option<Waker>,
    ) -> Poll<Result<()>>;
    /// Delivers events held back.
    fn deliver(&self, events: Vec<Event>);
}

/// The durability of the writes made in one [`crate::Store::deferred`] call.
///
/// Await it (it is a [`Future`], usable on any executor) or call [`Commit::wait`]: it
/// completes once every change those writes made is as durable as the store's
/// [`crate::Durability`] promises — under `Sync`, fsynced — or with
/// [`crate::Error::Poisoned`] if the log failed. Events the writes raised are delivered
/// to subscribers when it completes successfully. Dropped before then, the writes stand
/// (they were made) and their events are delivered at the drop.
#[must_use = "the writes are not known to be durable until the commit completes"]
pub struct Commit {
    settle: Arc<dyn Settle>,
    ticket: Ticket,
    stash: Vec<Event>,
    /// The waker registered by the last pending poll.
    registered: Option<Waker>,
}

impl Commit {
    pub(crate) fn new(settle: Arc<dyn Settle>, ticket: Ticket, stash: Vec<Event>) -> Commit {
        Commit {
            settle,
            ticket,
            stash,
            registered: None,
        }
    }

    /// Blocks the calling thread until the writes are durable (what the write methods
    /// themselves do outside [`crate::Store::deferred`]).
    ///
    /// # Errors
    /// [`crate::Error::Poisoned`] if the log failed before the writes were durable.
    pub fn wait(mut self) -> Result<()> {
        if let Err(e) = self.settle.wait(self.ticket) {
            self.stash.clear();
            return Err(e);
        }
        self.deliver();
        Ok(())
    }

    /// Awaits the commit, then answers for the write that made it: `r` if the write
    /// failed (what it changed before failing is durable by then), the commit's error
    /// if the disk failed, else `r`. What the async adapters return for a write.
    #[cfg(any(
        feature = "redis",
        feature = "postgres",
        feature = "tower-sessions",
        feature = "actix-session"
    ))]
    pub(crate) async fn settle<T>(self, r: Result<T>) -> Result<T> {
        let durable = self.await;
        r.and_then(|v| durable.map(|()| v))
    }

    fn deliver(&mut self) {
        let stash = std::mem::take(&mut self.stash);
        self.settle.deliver(stash);
    }
}

impl Future for Commit {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let ticket = this.ticket;
        match this.settle.poll(ticket, cx, &mut this.registered) {
            Poll::Ready(Ok(())) => {
                this.deliver();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                // Not durable: the events of changes a restart may not have are dropped,
                // as a failed blocking write's are.
                this.stash.clear();
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Commit {
    fn drop(&mut self) {
        self.deliver();
    }
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commit")
            .field("ticket", &self.ticket.0)
            .field("events", &self.stash.len())
            .finish_non_exhaustive()
    }
}
