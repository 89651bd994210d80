//! The writer thread and the durable journal in front of it.
//!
//! Callers hand changes to [`Durable::append`] while they hold the lock of what they
//! changed; it numbers each change and sends it over a crossbeam channel to one writer
//! thread. The writer takes whatever has queued up — one change or thousands — and
//! writes it as one batch with one `write`, then (under [`Durability::Sync`]) one
//! fsync, and wakes everyone whose change is now durable: group commit. Under
//! [`Durability::Buffered`] the batch goes to the OS at once and is fsynced at most
//! once per interval.
//!
//! Touches are not written one per request: the writer keeps the latest touch per
//! session and writes them once per tick (the flush interval, or a second under
//! `Sync`), so a crash can lose at most a tick's worth of touches — which can only
//! make an idle deadline fire early, by at most the touch interval plus a tick.
//!
//! If a write or fsync fails, the journal is poisoned: the failure is reported to every
//! waiter and every later write gets [`Error::Poisoned`], so nothing is acknowledged
//! that the disk may not have.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::journal::{Change, Ticket};
use crate::lockfile::DirLock;
use crate::log::compaction::CompactionJob;
use crate::options::Durability;
use crate::storage::Backend;
use crate::token::SessionId;

/// Most messages taken into one batch.
const MAX_BATCH: usize = 8192;
/// Capacity of the channel to the writer: past it, writers wait (backpressure).
const QUEUE: usize = 1 << 16;
/// Touch flush tick under `Sync`.
const SYNC_TICK: Duration = Duration::from_secs(1);

pub(crate) enum Msg {
    Change(u64, Change),
    Touch(SessionId, Timestamp),
    Flush(Sender<Result<()>>),
    BeginCompaction(Sender<Result<Option<CompactionJob>>>),
}

#[derive(Default)]
struct Progress {
    /// Every change numbered up to this one is as durable as the mode promises.
    durable: u64,
    failed: Option<String>,
    /// Threads waiting for a change to be durable, with its number. The writer wakes
    /// exactly those whose change its fsync covered: with many writers, a broadcast
    /// would wake everyone just to send most back to sleep.
    waiters: Vec<(u64, std::thread::Thread)>,
}

impl Progress {
    /// Marks everything up to `seq` durable; returns the threads to wake.
    fn advance(&mut self, seq: u64) -> Vec<std::thread::Thread> {
        self.durable = seq;
        self.waiters
            .extract_if(.., |(s, _)| *s <= seq)
            .map(|(_, t)| t)
            .collect()
    }

    /// Records a failure; returns every waiting thread (each will see it).
    fn fail(&mut self, reason: String) -> Vec<std::thread::Thread> {
        self.failed.get_or_insert(reason);
        self.waiters.drain(..).map(|(_, t)| t).collect()
    }
}

fn wake(threads: Vec<std::thread::Thread>) {
    for t in threads {
        t.unpark();
    }
}

/// Threads a woken waiter wakes in turn before it returns (see [`Shared::relay`]).
const RELAY_FANOUT: usize = 2;

/// Counters the writer keeps for [`crate::Stats`].
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct WriterCounters {
    pub(crate) batches: u64,
    pub(crate) records: u64,
    pub(crate) syncs: u64,
    pub(crate) disk_bytes: u64,
}

struct Shared {
    progress: Mutex<Progress>,
    /// Set (after `progress.failed`) once the journal is poisoned: every append checks
    /// it, and a plain load keeps that check off the progress lock, whose cache line
    /// the writer takes once per batch.
    poisoned: AtomicBool,
    counters: Mutex<WriterCounters>,
    /// The floor [`Backend::wants_compaction`] is asked with: the live data's estimated
    /// size when the store last declined to compact, 0 after a compaction.
    compaction_floor: AtomicU64,
    /// Waiters whose change is durable but who are not woken yet. The writer wakes
    /// [`RELAY_FANOUT`] and leaves the rest here; each woken waiter wakes as many more
    /// before it returns, so a batch's wake-ups fan out over the cores as a tree
    /// instead of keeping the writer (the one thread every commit goes through) busy
    /// with one futex wake per waiter before it can start the next batch's fsync.
    relay: Mutex<Vec<std::thread::Thread>>,
}

impl Shared {
    /// Wakes `ready` through the relay: a few now, the rest by those.
    fn wake_relayed(&self, mut ready: Vec<std::thread::Thread>) {
        if ready.len() > RELAY_FANOUT {
            let now: Vec<_> = ready.drain(..RELAY_FANOUT).collect();
            self.relay.lock().append(&mut ready);
            ready = now;
        }
        wake(ready);
    }

    /// Wakes up to [`RELAY_FANOUT`] threads left in the relay, as every waiter does
    /// when it wakes.
    fn pass_on(&self) {
        let mut relay = self.relay.lock();
        let at = relay.len().saturating_sub(RELAY_FANOUT);
        let next: Vec<_> = relay.drain(at..).collect();
        drop(relay);
        wake(next);
    }

    /// Poisons the journal with `reason` (the first one stays); returns every waiting
    /// thread, each of which will see it.
    fn fail(&self, reason: String) -> Vec<std::thread::Thread> {
        let mut p = self.progress.lock();
        let all = p.fail(reason);
        self.poisoned.store(true, Ordering::Release);
        all
    }
}

/// A journal that makes changes durable through a backend on a writer thread.
pub(crate) struct Durable {
    sync: bool,
    /// The next change number and the channel; one lock so numbers follow channel order.
    tx: Mutex<(u64, Option<Sender<Msg>>)>,
    shared: std::sync::Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Requests for a background compaction, raised by the writer.
    pub(crate) compact_requests: Mutex<Option<Receiver<()>>>,
    /// Released only after the writer has drained and synced.
    lock: Mutex<Option<DirLock>>,
}

impl Durable {
    /// Starts the writer thread over `backend`.
    pub(crate) fn start(
        backend: Box<dyn Backend>,
        mode: Durability,
        lock: DirLock,
        auto_compact: bool,
    ) -> Result<Durable> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let (ctx, crx) = crossbeam_channel::bounded(1);
        let shared = std::sync::Arc::new(Shared {
            progress: Mutex::new(Progress::default()),
            poisoned: AtomicBool::new(false),
            compaction_floor: AtomicU64::new(0),
            relay: Mutex::new(Vec::new()),
            counters: Mutex::new(WriterCounters {
                disk_bytes: backend.disk_bytes(),
                ..WriterCounters::default()
            }),
        });
        let tick = match mode {
            Durability::Buffered { flush_every } => flush_every,
            _ => SYNC_TICK,
        };
        let sync = matches!(mode, Durability::Sync);
        let writer = {
            let shared = shared.clone();
            let ctx = auto_compact.then_some(ctx);
            std::thread::Builder::new()
                .name("sessiondb-log".into())
                .spawn(move || writer_loop(backend, &rx, &shared, sync, tick, ctx))
                .map_err(|e| Error::io("starting the log writer thread", e))?
        };
        Ok(Durable {
            sync,
            tx: Mutex::new((0, Some(tx))),
            shared,
            writer: Mutex::new(Some(writer)),
            compact_requests: Mutex::new(Some(crx)),
            lock: Mutex::new(Some(lock)),
        })
    }

    fn failed(&self) -> Option<Error> {
        if !self.shared.poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.shared
            .progress
            .lock()
            .failed
            .clone()
            .map(|reason| Error::Poisoned { reason })
    }

    fn send(&self, msg: Msg) -> Result<()> {
        let guard = self.tx.lock();
        match &guard.1 {
            Some(tx) => tx.send(msg).map_err(|_| self.stopped()),
            None => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> Error {
        self.failed().unwrap_or(Error::Poisoned {
            reason: "the log writer has stopped".into(),
        })
    }

    /// Hands a change to the writer. Touches are coalesced and never waited for.
    pub(crate) fn append(&self, change: Change) -> Result<Ticket> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        if let Change::Touch { id, at } = change {
            let guard = self.tx.lock();
            if let Some(tx) = &guard.1 {
                // A full queue drops the touch rather than block a read: it only makes
                // the idle deadline after a crash earlier.
                match tx.try_send(Msg::Touch(id, at)) {
                    Ok(()) | Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => return Err(self.stopped()),
                }
            }
            return Ok(Ticket(0));
        }
        let mut guard = self.tx.lock();
        let seq = guard.0 + 1;
        match &guard.1 {
            Some(tx) => tx
                .send(Msg::Change(seq, change))
                .map_err(|_| self.stopped())?,
            None => return Err(self.stopped()),
        }
        guard.0 = seq;
        Ok(Ticket(seq))
    }

    /// Under `Sync`, blocks until the change behind `ticket` is fsynced.
    pub(crate) fn wait(&self, ticket: Ticket) -> Result<()> {
        let mut registered = false;
        loop {
            let mut p = self.shared.progress.lock();
            if !self.sync || p.durable >= ticket.0 || p.failed.is_some() {
                return match (&p.failed, self.sync && p.durable >= ticket.0) {
                    (_, true) | (None, false) => Ok(()),
                    (Some(reason), false) => Err(Error::Poisoned {
                        reason: reason.clone(),
                    }),
                };
            }
            if !registered {
                p.waiters.push((ticket.0, std::thread::current()));
                registered = true;
            }
            drop(p);
            // Woken by the writer or a relaying waiter once the fsync covers `ticket`
            // (or on failure); a spurious wakeup just checks again.
            std::thread::park();
            self.shared.pass_on();
        }
    }

    /// Writes pending touches and fsyncs everything written so far.
    pub(crate) fn flush(&self) -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Msg::Flush(tx))?;
        rx.recv().map_err(|_| self.stopped())?
    }

    /// Asks the writer to seal the current segment for a compaction.
    pub(crate) fn begin_compaction(&self) -> Result<Option<CompactionJob>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Msg::BeginCompaction(tx))?;
        rx.recv().map_err(|_| self.stopped())?
    }

    pub(crate) fn counters(&self) -> WriterCounters {
        *self.shared.counters.lock()
    }

    /// Asks for no background compaction before the log is `growth` times `bytes` (0:
    /// before it is `growth` times the last base).
    pub(crate) fn set_compaction_floor(&self, bytes: u64) {
        self.shared.compaction_floor.store(bytes, Ordering::Relaxed);
    }

    /// Records the disk size a compaction left (the writer refreshes it per batch).
    pub(crate) fn note_disk_bytes(&self, bytes: u64) {
        self.shared.counters.lock().disk_bytes = bytes;
    }

    /// Closes the channel, lets the writer drain what is queued, sync and exit, then
    /// releases the directory lock. Later writes get [`Error::Poisoned`]. Idempotent.
    pub(crate) fn shutdown(&self) {
        self.tx.lock().1 = None;
        let writer = self.writer.lock().take();
        if let Some(w) = writer {
            let _ = w.join();
        }
        drop(self.lock.lock().take());
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn writer_loop(
    mut backend: Box<dyn Backend>,
    rx: &Receiver<Msg>,
    shared: &Shared,
    sync_mode: bool,
    tick: Duration,
    compact: Option<Sender<()>>,
) {
    let mut touches: HashMap<SessionId, Timestamp> = HashMap::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut controls: Vec<Msg> = Vec::new();
    let mut last_seq = 0u64;
    let mut dirty = false;
    let mut next_tick = Instant::now() + tick;
    let mut open = true;
    while open {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                open = false;
                None
            }
        };
        let mut take = |m: Msg| match m {
            Msg::Change(seq, c) => {
                last_seq = seq;
                changes.push(c);
            }
            Msg::Touch(id, at) => {
                let t = touches.entry(id).or_insert(at);
                *t = (*t).max(at);
            }
            other => controls.push(other),
        };
        if let Some(m) = first {
            take(m);
            for m in rx.try_iter().take(MAX_BATCH) {
                take(m);
            }
        }
        let ticked = Instant::now() >= next_tick;
        if ticked {
            next_tick = Instant::now() + tick;
        }
        let flush_touches = ticked || !controls.is_empty() || !open;
        if flush_touches {
            changes.extend(touches.drain().map(|(id, at)| Change::Touch { id, at }));
        }
        let outcome = (|| -> Result<()> {
            if !changes.is_empty() {
                backend.write(&changes)?;
                dirty = true;
                let mut c = shared.counters.lock();
                c.batches += 1;
                c.records += changes.len() as u64;
                changes.clear();
            }
            let must_sync = dirty && (sync_mode || ticked || !controls.is_empty() || !open);
            if must_sync {
                backend.sync()?;
                dirty = false;
                shared.counters.lock().syncs += 1;
            }
            Ok(())
        })();
        shared.counters.lock().disk_bytes = backend.disk_bytes();
        match outcome {
            Ok(()) => {
                let ready = shared.progress.lock().advance(last_seq);
                shared.wake_relayed(ready);
            }
            Err(e) => {
                let all = shared.fail(e.to_string());
                wake(all);
                for c in controls.drain(..) {
                    reply_failed(c, &e);
                }
                return;
            }
        }
        for c in controls.drain(..) {
            match c {
                Msg::Flush(reply) => {
                    let _ = reply.send(Ok(()));
                }
                Msg::BeginCompaction(reply) => {
                    let r = backend.begin_compaction();
                    if let Err(e) = &r {
                        let all = shared.fail(e.to_string());
                        wake(all);
                    }
                    let _ = reply.send(r);
                }
                Msg::Change(..) | Msg::Touch(..) => {}
            }
        }
        if let Some(tx) = &compact
            && backend.wants_compaction(shared.compaction_floor.load(Ordering::Relaxed))
        {
            // At most one request pending; the compactor clears it when done.
            let _ = tx.try_send(());
        }
    }
}

fn reply_failed(msg: Msg, e: &Error) {
    let err = || Error::Poisoned {
        reason: e.to_string(),
    };
    match msg {
        Msg::Flush(r) => {
            let _ = r.send(Err(err()));
        }
        Msg::BeginCompaction(r) => {
            let _ = r.send(Err(err()));
        }
        Msg::Change(..) | Msg::Touch(..) => {}
    }
}
