//! The writer thread and the durable journal in front of it.
//!
//! Callers hand changes to [`Writer::append`] while they hold the lock of what they
//! changed; it numbers each change and sends it over a crossbeam channel to one writer
//! thread. The writer takes whatever has queued up — one change or thousands — and
//! writes it as one batch with one `write`, then (under [`Durability::Sync`]) one
//! fsync, and wakes everyone whose change is now durable: group commit. A waiter is a
//! blocked thread ([`Writer::wait`]) or an async task ([`Writer::poll_wait`], behind
//! [`crate::journal::commit::Commit`]), which waits without holding a thread. Under
//! [`Durability::Buffered`] the batch goes to the OS at once and is fsynced at most
//! once per interval, on a thread of its own ([`Syncer`]) so that the writer goes on
//! meanwhile; the queue holds at most [`BUFFERED_BACKLOG`] changes, since each is
//! acknowledged once queued; a busy writer (its last batch went out within [`BUSY`])
//! first sleeps — [`LINGER`] to [`LINGER_MAX`], as long as a quarter of that queue
//! takes to arrive — so the next batch gathers, instead of one `write` per change.
//! Over a backend that takes changes encoded (the log), a `Buffered` change skips the
//! channel: its thread encodes it into [`Pending`], and a busy store's threads write
//! their own batches ([`Encoded`]).
//!
//! Touches are not written one per request: the latest touch per session waits in
//! [`TouchBuffers`] (not the channel), and the writer writes them once per tick (the
//! flush interval, or a second under `Sync`), so a crash can lose at most a tick's
//! worth of touches — which can only make an idle deadline fire early, by at most the
//! touch interval plus a tick.
//!
//! A write the disk has no room for ([`Error::DiskFull`]) is not a failure of the
//! journal: the writer keeps the batch, answers its waiters and every new append with
//! the error, changing nothing, and tries the batch again every [`FULL_RETRY`] (and at
//! every flush) until there is room — then writes resume, without a reopen.
//!
//! If a write or fsync fails otherwise, the journal is poisoned: the failure is reported to every
//! waiter and every later write gets [`Error::Poisoned`], so nothing is acknowledged
//! that the disk may not have. The writer thread then stays to answer every flush and
//! compaction request with the failure until the store closes (a panic too): none
//! waits on a thread that is gone.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::backend::{Backend, Compaction, Encoder, SyncHandle, Synced};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::journal::batch::{Batcher, Offload, reply_failed};
use crate::journal::touches::TouchBuffers;
use crate::model::change::{Change, Ticket};
use crate::model::token::SessionId;
use crate::options::Durability;
use crate::util::lock::DirLock;
use crate::util::metrics::JournalMetrics;
use crate::util::padded::Padded;
use crate::util::trace;

/// Most messages taken into one batch.
const MAX_BATCH: usize = 8192;
/// The most changes one batch takes: [`MAX_BATCH`] under `Sync`, [`BUFFERED_BACKLOG`]
/// under `Buffered` (what a crash may lose).
fn batch_limit(sync: bool) -> usize {
    if sync { MAX_BATCH } else { BUFFERED_BACKLOG }
}

/// Capacity of the channel to the writer: past it, writers wait (backpressure).
const QUEUE: usize = 1 << 16;
/// Under `Buffered`, a write is acknowledged once queued, so the queue is what a
/// process crash can lose: its capacity, and the most the writer takes into one batch,
/// are this much instead, and a crash loses at most twice this many acknowledged
/// changes (the documented bound of [`Durability::Buffered`]) — microseconds' worth
/// while the writer keeps up, and never more when writes come faster than it can hand
/// them to the OS (they wait for room instead: backpressure). With the 65,536 of `Sync`,
/// a few threads creating kept the queue full, and a kill -9 lost thousands of
/// acknowledged creates (`tests/crash_buffered.rs`; figures in
/// `docs/performance.md#measurements-behind-design-decisions`).
pub(crate) const BUFFERED_BACKLOG: usize = 1024;
/// Under `Buffered`, how long a busy writer sleeps after the first change of a batch
/// before it takes what has queued up meanwhile (the kernel's timer slack, 50 µs by
/// default, comes on top). Woken for every change, the writer wrote 1.3 records per
/// `write` on average, a syscall per create, and kept a core busy reading the channel
/// as the creating thread filled it; lingering makes batches of dozens of records, for
/// more creates per second at less CPU (measured in
/// `docs/performance.md#measurements-behind-design-decisions`).
const LINGER: Duration = Duration::from_micros(10);
/// The longest a busy writer lingers: it lengthens its sleep from [`LINGER`] up to
/// this while changes come too slowly to gather [`LINGER_BATCH`] in one, and shortens
/// it as they come faster, so that the queue never fills while it sleeps. Batches of
/// a few records cost a `write` and a wake-up each; batches of hundreds cost ~10% less
/// CPU per create (measured in `docs/performance.md`, "CPU per write").
const LINGER_MAX: Duration = Duration::from_micros(400);
/// The batch a lingering writer aims to gather: a quarter of the `Buffered` queue.
const LINGER_BATCH: usize = BUFFERED_BACKLOG / 4;
/// A writer whose last batch went out this recently is busy: it lingers. A quiet
/// store's change goes to the OS at once.
const BUSY: Duration = Duration::from_millis(1);
/// Under `Buffered` over a backend that takes encoded changes, a request thread that
/// finds this many changes waiting in [`Pending`] (or [`LEAD_BYTES`]) writes them
/// itself, if no one else is writing: a busy store's batches go out from the threads
/// that make them, without a hand-off to the writer thread, which then only gathers
/// what is left after a linger.
const LEAD_CHANGES: usize = 64;
/// See [`LEAD_CHANGES`].
const LEAD_BYTES: usize = 16 * 1024;
/// The largest buffer a thread keeps for encoding its changes.
const MAX_LOCAL_BUFFER: usize = 64 * 1024;
/// Touch flush tick under `Sync`.
const SYNC_TICK: Duration = Duration::from_secs(1);
/// How often a writer whose disk is full tries its batch again.
pub(crate) const FULL_RETRY: Duration = Duration::from_millis(100);

pub(crate) enum Msg {
    Change(u64, Change),
    Touch(SessionId, Timestamp),
    /// Changes wait in [`Pending`] and the writer was idle: take them.
    Nudge,
    Flush(Sender<Result<()>>),
    BeginCompaction(Sender<Result<Option<Box<dyn Compaction>>>>),
}

#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) failed: Option<String>,
    /// The disk is full: the writer holds changes up to this number, unwritten, and
    /// the directory and bytes its last try needed.
    pub(crate) full: Option<(u64, std::path::PathBuf, u64)>,
    /// Threads and tasks waiting for a change to be durable, with its number. The
    /// writer wakes exactly those whose change its fsync covered: with many writers, a
    /// broadcast would wake everyone just to send most back to sleep.
    waiters: Vec<(u64, Waiter)>,
}

/// Who waits for a change to be durable.
pub(crate) enum Waiter {
    /// A thread parked in [`Writer::wait`].
    Thread(std::thread::Thread),
    /// An async task that polled [`Writer::poll_wait`].
    Task(Waker),
}

impl Progress {
    /// Takes out those waiting for a change up to `seq` (now durable), to wake.
    pub(crate) fn ready(&mut self, seq: u64) -> Vec<Waiter> {
        self.waiters
            .extract_if(.., |(s, _)| *s <= seq)
            .map(|(_, w)| w)
            .collect()
    }

    /// [`Error::DiskFull`] if the disk is full and change `seq` is among those held.
    fn disk_full(&self, seq: u64) -> Option<Error> {
        let (upto, dir, needed) = self.full.as_ref()?;
        (seq <= *upto).then(|| Error::DiskFull {
            dir: dir.clone(),
            needed: *needed,
        })
    }

    /// Records a failure; returns every waiter (each will see it).
    fn fail(&mut self, reason: String) -> Vec<Waiter> {
        self.failed.get_or_insert(reason);
        self.waiters.drain(..).map(|(_, w)| w).collect()
    }

    /// The outcome for `ticket` if it is settled: durable (everything up to `durable`
    /// is), or the journal failed.
    fn outcome(&self, durable: u64, sync: bool, ticket: Ticket) -> Option<Result<()>> {
        if sync && durable >= ticket.0 {
            return Some(Ok(()));
        }
        if sync
            && self.failed.is_none()
            && let Some(e) = self.disk_full(ticket.0)
        {
            return Some(Err(e));
        }
        match &self.failed {
            Some(reason) => Some(Err(Error::Poisoned {
                reason: reason.clone(),
            })),
            None if !sync => Some(Ok(())),
            None => None,
        }
    }
}

pub(crate) fn wake(waiters: Vec<Waiter>) {
    for w in waiters {
        match w {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Task(w) => w.wake(),
        }
    }
}

/// How many times a thread waiting for an fsync yields its core before it parks, when
/// at least twice as many threads are waiting already as there are cores (see
/// [`Writer::wait`]). 32 and 64 measure alike.
const SPIN_YIELDS: usize = 32;

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

pub(crate) struct Shared {
    pub(crate) progress: Mutex<Progress>,
    /// Set (after `progress.failed`) once the journal is poisoned: every append (and,
    /// outside `Sync`, every wait) checks it. Read-only until then, on a cache line of
    /// its own: a plain load keeps that check off the progress lock and the durable
    /// mark, whose lines the writer takes once per batch.
    pub(crate) poisoned: Padded<AtomicBool>,
    /// Set while the disk is full (after `progress.full`): every append checks it.
    pub(crate) full: Padded<AtomicBool>,
    pub(crate) counters: Mutex<WriterCounters>,
    /// The floor [`Backend::wants_compaction`] is asked with: the live data's estimated
    /// size when the store last declined to compact, 0 after a compaction.
    pub(crate) compaction_floor: AtomicU64,
    /// Waiters whose change is durable but who are not woken yet. The writer wakes
    /// [`RELAY_FANOUT`] and leaves the rest here; each woken waiter wakes as many more
    /// before it returns, so a batch's wake-ups fan out over the cores as a tree
    /// instead of keeping the writer (the one thread every commit goes through) busy
    /// with one futex wake per waiter before it can start the next batch's fsync.
    relay: Mutex<Vec<std::thread::Thread>>,
    /// Every change numbered up to this one is as durable as the mode promises. Stored
    /// under the progress lock (so a waiter that registers under it cannot miss the
    /// wake-up), read without it by threads yielding in [`Writer::wait`].
    pub(crate) durable: AtomicU64,
    /// Threads inside [`Writer::wait`].
    waiting: AtomicUsize,
    /// What the sync thread made durable last, for the writer to tell the backend.
    pub(crate) synced: Mutex<Option<Synced>>,
    /// Touches waiting for the writer's next tick (not sent through the channel).
    pub(crate) touches: TouchBuffers,
    /// The fsync and batch histograms, once the store has registered them (no-ops
    /// without the `metrics` feature).
    pub(crate) metrics: std::sync::OnceLock<JournalMetrics>,
}

/// Counts a thread in [`Shared::waiting`] while it lives.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    /// Threads that were waiting already when this one came.
    before: usize,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Waiting<'a> {
        let before = count.fetch_add(1, Ordering::Relaxed);
        Waiting { count, before }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Runs the fsync `f`, recording how long it took.
    #[inline]
    pub(crate) fn timed_sync<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.metrics.get() {
            Some(m) if m.enabled() => {
                let started = Instant::now();
                let r = f();
                m.fsync_seconds.record(started.elapsed().as_secs_f64());
                r
            }
            _ => f(),
        }
    }

    fn new(disk_bytes: u64) -> Shared {
        Shared {
            progress: Mutex::new(Progress::default()),
            poisoned: Padded(AtomicBool::new(false)),
            full: Padded(AtomicBool::new(false)),
            compaction_floor: AtomicU64::new(0),
            relay: Mutex::new(Vec::new()),
            durable: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            synced: Mutex::new(None),
            touches: TouchBuffers::new(),
            metrics: std::sync::OnceLock::new(),
            counters: Mutex::new(WriterCounters {
                disk_bytes,
                ..WriterCounters::default()
            }),
        }
    }

    /// Wakes `ready`: tasks at once (a waker only queues its task on an executor),
    /// threads through the relay, a few now and the rest by those.
    pub(crate) fn wake_relayed(&self, ready: Vec<Waiter>) {
        let mut threads = Vec::new();
        for w in ready {
            match w {
                Waiter::Thread(t) => threads.push(t),
                Waiter::Task(w) => w.wake(),
            }
        }
        if threads.len() > RELAY_FANOUT {
            let now: Vec<_> = threads.drain(..RELAY_FANOUT).collect();
            self.relay.lock().append(&mut threads);
            threads = now;
        }
        for t in threads {
            t.unpark();
        }
    }

    /// Wakes up to [`RELAY_FANOUT`] threads left in the relay, as every waiter does
    /// when it wakes.
    fn pass_on(&self) {
        let mut relay = self.relay.lock();
        let at = relay.len().saturating_sub(RELAY_FANOUT);
        let next: Vec<_> = relay.drain(at..).collect();
        drop(relay);
        for t in next {
            t.unpark();
        }
    }

    /// Poisons the journal with `reason` (the first one stays); returns every waiter,
    /// each of which will see it.
    pub(crate) fn fail(&self, reason: String) -> Vec<Waiter> {
        let mut p = self.progress.lock();
        if p.failed.is_none() {
            trace::event!(
                error,
                reason = %reason,
                "the journal failed: every write from now on fails; reopen the store"
            );
        }
        let all = p.fail(reason);
        self.poisoned.store(true, Ordering::Release);
        all
    }
}

/// A journal that makes changes durable through a backend on a writer thread.
pub(crate) struct Writer {
    sync: bool,
    /// With this many threads waiting already (twice the machine's cores), a waiting
    /// thread yields before it parks.
    yield_from: usize,
    /// The next change number and the channel; one lock so numbers follow channel order.
    tx: Mutex<(u64, Option<Sender<Msg>>)>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Set when the journal runs on its callers' threads instead (no writer thread, no
    /// channel): see [`Inline`].
    inline: Option<Box<Mutex<Inline>>>,
    /// Set under `Buffered` over a backend that takes encoded changes: changes go
    /// there, not through the channel (see [`Encoded`]).
    encoded: Option<Arc<Encoded>>,
    /// Requests for a background compaction, raised by the writer.
    pub(crate) compact_requests: Mutex<Option<Receiver<()>>>,
    /// Released only after the writer has drained and synced.
    lock: Mutex<Option<DirLock>>,
}

impl Writer {
    /// Registers the histograms its writer and sync thread record.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn set_metrics(&self, m: JournalMetrics) {
        let _ = self.shared.metrics.set(m);
    }

    /// Starts the writer thread over `backend`.
    pub(crate) fn start(
        backend: Box<dyn Backend>,
        mode: Durability,
        lock: DirLock,
        auto_compact: bool,
    ) -> Result<Writer> {
        let linger = Linger {
            sleep: LINGER,
            max: LINGER_MAX,
            busy: BUSY,
        };
        Writer::start_lingering(backend, mode, lock, auto_compact, linger)
    }

    /// A journal over `backend` that runs on its callers' threads: no thread, no
    /// channel, no timer (see [`Inline`]). It never asks for a background compaction.
    pub(crate) fn inline(backend: Box<dyn Backend>, mode: Durability, lock: DirLock) -> Writer {
        let sync = matches!(mode, Durability::Sync);
        let shared = Arc::new(Shared::new(backend.disk_bytes()));
        Writer {
            sync,
            yield_from: usize::MAX,
            tx: Mutex::new((0, None)),
            shared,
            writer: Mutex::new(None),
            inline: Some(Box::new(Mutex::new(Inline {
                seq: 0,
                passes: 0,
                batcher: Some(Batcher::new(backend, sync, None)),
            }))),
            encoded: None,
            compact_requests: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
        }
    }

    /// As [`Writer::start`], with the writer lingering `linger` when busy.
    fn start_lingering(
        backend: Box<dyn Backend>,
        mode: Durability,
        lock: DirLock,
        auto_compact: bool,
        linger: Linger,
    ) -> Result<Writer> {
        let sync = matches!(mode, Durability::Sync);
        let (tx, rx) = crossbeam_channel::bounded(if sync { QUEUE } else { BUFFERED_BACKLOG });
        let (ctx, crx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared::new(backend.disk_bytes()));
        let tick = match mode {
            Durability::Buffered { flush_every } => flush_every,
            _ => SYNC_TICK,
        };
        // No compactor is started for a store that never compacts on its own.
        let crx = auto_compact.then_some(crx);
        let encoder = if sync { None } else { backend.encoder() };
        let batcher = Arc::new(Mutex::new(Batcher::new(
            backend,
            sync,
            auto_compact.then_some(ctx),
        )));
        let encoded = encoder.map(|encode| {
            Arc::new(Encoded {
                encode,
                // The writer starts out waiting: the first change nudges it.
                pending: Mutex::new(Pending {
                    writer_idle: true,
                    ..Pending::default()
                }),
                batcher: Arc::downgrade(&batcher),
            })
        });
        let writer = {
            let shared = shared.clone();
            let encoded = encoded.clone();
            std::thread::Builder::new()
                .name("sessiondb-log".into())
                .spawn(move || {
                    writer_thread(
                        &batcher,
                        encoded.as_deref(),
                        &rx,
                        &shared,
                        sync,
                        tick,
                        linger,
                    )
                })
                .map_err(|e| Error::io("starting the log writer thread", e))?
        };
        Ok(Writer {
            sync,
            yield_from: 2 * crate::util::cores(),
            tx: Mutex::new((0, Some(tx))),
            shared,
            writer: Mutex::new(Some(writer)),
            inline: None,
            encoded,
            compact_requests: Mutex::new(crx),
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
        if let Some(inline) = &self.inline {
            return self.append_inline(&mut inline.lock(), change);
        }
        if self.shared.full.load(Ordering::Acquire) {
            let full = self.shared.progress.lock().disk_full(0);
            if let Some(e) = full {
                // A touch is dropped (it only moves an idle deadline): reads go on.
                return match change {
                    Change::Touch { .. } => Ok(Ticket(0)),
                    _ => Err(e),
                };
            }
        }
        if let Change::Touch { id, at } = change {
            // Buffered for the writer's next tick: no message, no wake-up.
            self.shared.touches.put(id, at);
            return Ok(Ticket(0));
        }
        if let Some(encoded) = &self.encoded {
            return self.append_encoded(encoded, &change);
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

    /// [`Writer::append`] of a change this thread encodes itself (see [`Encoded`]):
    /// into [`Pending`], numbered there; the writer is nudged if it waits for one, and
    /// the thread writes the batch itself once [`LEAD_CHANGES`] are waiting. With
    /// [`BUFFERED_BACKLOG`] waiting already, it writes them first (backpressure: what
    /// a crash can lose stays bounded).
    fn append_encoded(&self, encoded: &Encoded, change: &Change) -> Result<Ticket> {
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            local.clear();
            (encoded.encode)(&mut local, change);
            let r = self.queue_encoded(encoded, &local);
            if local.capacity() > MAX_LOCAL_BUFFER {
                *local = Vec::new();
            }
            r
        })
    }

    fn queue_encoded(&self, encoded: &Encoded, bytes: &[u8]) -> Result<Ticket> {
        loop {
            let mut p = encoded.pending.lock();
            if p.closed {
                drop(p);
                return Err(self.stopped());
            }
            if p.count >= BUFFERED_BACKLOG {
                drop(p);
                if !self.lead(encoded, true) {
                    return Err(self.stopped());
                }
                if let Some(e) = self.failed() {
                    return Err(e);
                }
                if self.shared.full.load(Ordering::Acquire)
                    && let Some(e) = self.shared.progress.lock().disk_full(0)
                {
                    return Err(e);
                }
                continue;
            }
            p.bytes.extend_from_slice(bytes);
            p.count += 1;
            p.last_seq += 1;
            let ticket = Ticket(p.last_seq);
            let nudge = std::mem::take(&mut p.writer_idle);
            let lead = p.count >= LEAD_CHANGES || p.bytes.len() >= LEAD_BYTES;
            drop(p);
            if nudge && let Some(tx) = &self.tx.lock().1 {
                // Full only of requests the writer is about to serve; closed only
                // once the journal is: either way it takes the changes.
                let _ = tx.try_send(Msg::Nudge);
            }
            if lead {
                self.lead(encoded, false);
            }
            return Ok(ticket);
        }
    }

    /// Writes what waits in [`Pending`] on this thread, as the writer would: only if
    /// no one else is writing, unless `must`. A failure poisons the journal as the
    /// writer's would (the caller sees it at its next append); so does a panic.
    /// `false` if the writer thread has ended (the journal closed).
    fn lead(&self, encoded: &Encoded, must: bool) -> bool {
        let Some(batcher) = encoded.batcher.upgrade() else {
            return false;
        };
        let guard = if must {
            Some(batcher.lock())
        } else {
            batcher.try_lock()
        };
        let Some(mut batcher) = guard else {
            return true;
        };
        let pass = std::panic::catch_unwind(AssertUnwindSafe(|| {
            encoded.take_into(&mut batcher, false);
            // No tick, no request, open: a write, never an fsync.
            let _ = batcher.run(&self.shared, false, true, Offload::None);
        }));
        if let Err(panic) = pass {
            let reason = format!("the log writer panicked: {}", panic_message(&*panic));
            wake(self.shared.fail(reason));
        }
        true
    }

    /// Under `Sync`, blocks until the change behind `ticket` is fsynced.
    ///
    /// A thread that finds at least twice as many threads waiting already as there are
    /// cores first yields its core up to [`SPIN_YIELDS`] times, looking at the durable
    /// mark after each, and parks only if its fsync has not come by then. With many
    /// more writers than cores, a yield hands the core to a writer with work to do,
    /// and a waiter that sees its fsync that way costs the writer no futex wake (a park
    /// and its wake-up can cost more CPU than the write). With fewer waiters, a yield
    /// mostly finds no one to run and spins, for more CPU per write, so they park at
    /// once. (Measured in `docs/performance.md#measurements-behind-design-decisions`.)
    pub(crate) fn wait(&self, ticket: Ticket) -> Result<()> {
        if let Some(inline) = &self.inline {
            return self.wait_inline(&mut inline.lock(), ticket);
        }
        if !self.sync {
            // Settled once queued: only a failure is news. Kept off the progress lock
            // and the durable mark, whose cache lines the writer takes every batch.
            return self.failed().map_or(Ok(()), Err);
        }
        let waiting = Waiting::enter(&self.shared.waiting);
        if waiting.before >= self.yield_from {
            for _ in 0..SPIN_YIELDS {
                std::thread::yield_now();
                if self.shared.durable.load(Ordering::Acquire) >= ticket.0 {
                    return Ok(());
                }
                if self.shared.poisoned.load(Ordering::Acquire) {
                    break;
                }
            }
        }
        self.wait_parked(ticket)
    }

    /// [`Writer::wait`] without the yields: parks until woken by the writer or a
    /// relaying waiter.
    fn wait_parked(&self, ticket: Ticket) -> Result<()> {
        let mut registered = false;
        loop {
            let mut p = self.shared.progress.lock();
            if let Some(outcome) = p.outcome(
                self.shared.durable.load(Ordering::Acquire),
                self.sync,
                ticket,
            ) {
                return outcome;
            }
            if !registered {
                p.waiters
                    .push((ticket.0, Waiter::Thread(std::thread::current())));
                registered = true;
            }
            drop(p);
            // Woken by the writer or a relaying waiter once the fsync covers `ticket`
            // (or on failure); a spurious wakeup just checks again.
            std::thread::park();
            self.shared.pass_on();
        }
    }

    /// As [`Writer::wait`], for an async task: ready once the change behind `ticket`
    /// is fsynced (under `Sync`; at once otherwise). While pending, the task's waker is
    /// registered (again only if `registered` would not wake the same task) and the
    /// writer wakes it with the fsync that covers `ticket`.
    pub(crate) fn poll_wait(
        &self,
        ticket: Ticket,
        cx: &Context<'_>,
        registered: &mut Option<Waker>,
    ) -> Poll<Result<()>> {
        if let Some(inline) = &self.inline {
            return Poll::Ready(self.wait_inline(&mut inline.lock(), ticket));
        }
        if !self.sync {
            return Poll::Ready(self.failed().map_or(Ok(()), Err));
        }
        let mut p = self.shared.progress.lock();
        if let Some(outcome) = p.outcome(
            self.shared.durable.load(Ordering::Acquire),
            self.sync,
            ticket,
        ) {
            return Poll::Ready(outcome);
        }
        if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // A waker registered by an earlier poll stays until the fsync and then
            // wakes a finished task: harmless, and the writer drops it then.
            p.waiters.push((ticket.0, Waiter::Task(cx.waker().clone())));
            *registered = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Writes pending touches and fsyncs everything written so far.
    pub(crate) fn flush(&self) -> Result<()> {
        if let Some(inline) = &self.inline {
            return self.request_inline(&mut inline.lock(), Msg::Flush);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Msg::Flush(tx))?;
        rx.recv().map_err(|_| self.stopped())?
    }

    /// Asks the writer to seal the current segment for a compaction.
    pub(crate) fn begin_compaction(&self) -> Result<Option<Box<dyn Compaction>>> {
        if let Some(inline) = &self.inline {
            return self.request_inline(&mut inline.lock(), Msg::BeginCompaction);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Msg::BeginCompaction(tx))?;
        rx.recv().map_err(|_| self.stopped())?
    }

    /// [`Writer::append`] on an inline journal. A full disk is tried again first (an
    /// inline journal has no timer to retry on).
    fn append_inline(&self, inline: &mut Inline, change: Change) -> Result<Ticket> {
        if self.shared.full.load(Ordering::Acquire) {
            self.pass_inline(inline, true);
            let full = self.shared.progress.lock().disk_full(0);
            if let Some(e) = full {
                return match change {
                    Change::Touch { .. } => Ok(Ticket(0)),
                    _ => Err(e),
                };
            }
        }
        let Some(batcher) = inline.batcher.as_mut() else {
            return Err(self.stopped());
        };
        if let Change::Touch { id, at } = change {
            // Into the same buffers as the writer thread's callers, drained by the same
            // pass: what a test or a fuzzer checks here is what a server runs.
            self.shared.touches.put(id, at);
            return Ok(Ticket(0));
        }
        inline.seq += 1;
        batcher.take(Msg::Change(inline.seq, change));
        let ticket = Ticket(inline.seq);
        // As a full queue makes the writer thread's callers wait for room.
        if batcher.pending() >= batch_limit(self.sync) {
            self.pass_inline(inline, true);
        }
        Ok(ticket)
    }

    /// [`Writer::wait`] on an inline journal: writes what is pending (under `Sync`,
    /// unless `ticket` is durable already), then answers as the writer thread would.
    fn wait_inline(&self, inline: &mut Inline, ticket: Ticket) -> Result<()> {
        let durable = self.shared.durable.load(Ordering::Acquire);
        let pending = inline.batcher.as_ref().is_some_and(|b| b.pending() > 0);
        if pending && (!self.sync || durable < ticket.0) {
            self.pass_inline(inline, true);
        }
        if !self.sync {
            return self.failed().map_or(Ok(()), Err);
        }
        self.shared
            .progress
            .lock()
            .outcome(
                self.shared.durable.load(Ordering::Acquire),
                self.sync,
                ticket,
            )
            .unwrap_or_else(|| Err(self.stopped()))
    }

    /// A request (flush, compaction) on an inline journal, answered by one pass.
    fn request_inline<T>(
        &self,
        inline: &mut Inline,
        msg: impl FnOnce(Sender<Result<T>>) -> Msg,
    ) -> Result<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let Some(batcher) = inline.batcher.as_mut() else {
            return Err(self.stopped());
        };
        batcher.take(msg(tx));
        self.pass_inline(inline, true);
        rx.try_recv().map_err(|_| self.stopped())?
    }

    /// One pass of an inline journal's batcher; a failure (already answered to
    /// everyone) stops it, as it stops the writer thread.
    fn pass_inline(&self, inline: &mut Inline, open: bool) {
        let Some(batcher) = inline.batcher.as_mut() else {
            return;
        };
        inline.passes += 1;
        let ticked = inline.passes.is_multiple_of(INLINE_TICK);
        let offload = if self.sync {
            Offload::None
        } else {
            Offload::Here
        };
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            batcher.run(&self.shared, ticked, open, offload)
        }));
        match run {
            Ok(Ok(())) => {}
            Ok(Err(_)) => inline.batcher = None,
            Err(panic) => {
                let reason = format!("the log writer panicked: {}", panic_message(&*panic));
                wake(self.shared.fail(reason));
                // Requests it held are dropped with it: they see the failure.
                inline.batcher = None;
            }
        }
    }

    /// Whether the journal is poisoned (every write fails until the store reopens), and
    /// whether the disk is full (writes are refused until there is room).
    pub(crate) fn health(&self) -> (bool, bool) {
        (
            self.shared.poisoned.load(Ordering::Relaxed),
            self.shared.full.load(Ordering::Relaxed),
        )
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
        if let Some(inline) = &self.inline {
            let mut inline = inline.lock();
            self.pass_inline(&mut inline, false);
            inline.batcher = None;
        }
        if let Some(encoded) = &self.encoded {
            encoded.pending.lock().closed = true;
        }
        self.tx.lock().1 = None;
        let writer = self.writer.lock().take();
        if let Some(w) = writer {
            let _ = w.join();
        }
        drop(self.lock.lock().take());
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A journal that runs on its callers' threads ([`crate::Options::deterministic`]):
/// an append takes the change into the batch; the operation's wait (or the next
/// append, once a batch's worth is pending) writes it, as the writer thread would
/// have — one batch per operation — and under `Sync` fsyncs it there. Under
/// `Buffered` the fsync goes through the same sync handle the sync thread uses, at a
/// flush, a close, and every [`INLINE_TICK`]th batch (the writer thread's tick, counted
/// instead of timed); a full disk is tried again at the next append. Nothing depends
/// on timing or scheduling, so a run is a function of its inputs.
struct Inline {
    /// The last change number given out.
    seq: u64,
    /// Passes run, for the tick.
    passes: u64,
    /// `None` once the journal has failed or closed.
    batcher: Option<Batcher>,
}

/// Every this many passes an inline journal ticks: it writes the touches it holds and,
/// under `Buffered`, fsyncs.
const INLINE_TICK: u64 = 16;

/// How a busy `Buffered` writer waits for a batch to gather: [`LINGER`] to
/// [`LINGER_MAX`], and [`BUSY`], except in tests.
#[derive(Clone, Copy, Debug)]
struct Linger {
    /// The shortest sleep, and the first.
    sleep: Duration,
    /// The longest.
    max: Duration,
    busy: Duration,
}

impl Linger {
    /// The next sleep, after one of `slept` gathered `taken` messages (the first one
    /// included): long enough for [`LINGER_BATCH`] at the rate they came, within
    /// `sleep..=max`.
    fn next(&self, slept: Duration, taken: usize) -> Duration {
        let aim = slept.mul_f64(LINGER_BATCH as f64 / taken.max(1) as f64);
        aim.clamp(self.sleep, self.max.max(self.sleep))
    }
}

/// Whether the writer, woken by `first`, sleeps (see [`Linger::next`]) before it drains the
/// queue: only under `Buffered` (under `Sync` the fsync in progress gathers the next
/// batch, and a waiter is waiting), only for a change (touches wait for the tick
/// anyway), only if nothing else is queued yet (a queue is a batch already) and only
/// when the last batch went out within [`BUSY`] (a quiet store's change is written at
/// once).
fn lingers(
    sync_mode: bool,
    first: &Msg,
    queued: bool,
    since_write: Duration,
    busy: Duration,
) -> bool {
    !sync_mode && matches!(first, Msg::Change(..) | Msg::Nudge) && !queued && since_write < busy
}

/// The writer thread: the loop, and — if it fails or panics — answering every request
/// still queued, or yet to come, with the failure until the journal closes the channel,
/// so that no flush or compaction waits on a writer that is gone.
fn writer_thread(
    batcher: &Mutex<Batcher>,
    encoded: Option<&Encoded>,
    rx: &Receiver<Msg>,
    shared: &Arc<Shared>,
    sync_mode: bool,
    tick: Duration,
    linger: Linger,
) {
    let syncer = if sync_mode {
        None
    } else {
        match Syncer::start(shared) {
            Ok(s) => Some(s),
            Err(e) => {
                wake(shared.fail(e.to_string()));
                answer_until_closed(rx, shared);
                return;
            }
        }
    };
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
        writer_loop(
            batcher,
            encoded,
            rx,
            shared,
            sync_mode,
            tick,
            linger,
            syncer.as_ref(),
        )
    }));
    let failure = match run {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(format!(
            "the log writer thread panicked: {}",
            panic_message(&*panic)
        )),
    };
    if let Some(reason) = failure {
        wake(shared.fail(reason));
        answer_until_closed(rx, shared);
    }
    // Its last flushes answered, its last fsync done.
    drop(syncer);
}

/// What a panic carried, as text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// After a failure: answers every request with it, drops every change, until the
/// journal closes the channel (which it does on shutdown: its sender is the only one).
fn answer_until_closed(rx: &Receiver<Msg>, shared: &Shared) {
    let reason = shared
        .progress
        .lock()
        .failed
        .clone()
        .unwrap_or_else(|| "the log writer has stopped".to_owned());
    for msg in rx {
        reply_failed(msg, &reason);
    }
}

/// A request to the [`Syncer`]: fsync through `handle`, then answer `replies` (flushes
/// waiting for it).
pub(crate) struct SyncRequest {
    pub(crate) handle: Box<dyn SyncHandle>,
    pub(crate) replies: Vec<Sender<Result<()>>>,
}

/// Under `Buffered`, the thread that fsyncs, so that the writer thread never waits for
/// an fsync: it goes on handing batches to the OS meanwhile, and a process crash loses
/// only what it had not handed over yet (an fsync can take tens of milliseconds on a
/// busy disk; kept inline, it held up every batch behind it, acknowledged and lost on
/// a kill -9). Requests that queue up while an fsync runs are served by one more: the
/// newest handle covers everything the older ones did (a roll fsyncs a segment before
/// the next one starts).
pub(crate) struct Syncer {
    tx: Option<Sender<SyncRequest>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    fn start(shared: &Arc<Shared>) -> Result<Syncer> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::clone(shared);
        let thread = std::thread::Builder::new()
            .name("sessiondb-sync".into())
            .spawn(move || syncer_loop(&rx, &shared))
            .map_err(|e| Error::io("starting the log sync thread", e))?;
        Ok(Syncer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub(crate) fn request(&self, req: SyncRequest) {
        if let Some(tx) = &self.tx
            && let Err(e) = tx.send(req)
        {
            // The thread is gone (it only returns once this sender is dropped): the
            // flushes are answered here rather than never.
            for r in e.into_inner().replies {
                let _ = r.send(Err(Error::Poisoned {
                    reason: "the log sync thread has stopped".into(),
                }));
            }
        }
    }
}

impl Drop for Syncer {
    /// Closes the queue and waits for the thread to serve what is in it.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn syncer_loop(rx: &Receiver<SyncRequest>, shared: &Shared) {
    while let Ok(first) = rx.recv() {
        let (mut handle, mut replies) = (first.handle, first.replies);
        for more in rx.try_iter() {
            handle = more.handle;
            replies.extend(more.replies);
        }
        serve_sync(shared, handle, replies);
    }
}

/// Makes durable what `handle` covers and answers `replies` (flushes waiting for it);
/// a failure poisons the journal. The sync thread's work, which a journal writing on
/// its callers' threads does at once.
pub(crate) fn serve_sync(
    shared: &Shared,
    handle: Box<dyn SyncHandle>,
    replies: Vec<Sender<Result<()>>>,
) {
    let failed = shared.progress.lock().failed.clone();
    let outcome = match failed {
        Some(reason) => Err(reason),
        None => std::panic::catch_unwind(AssertUnwindSafe(|| shared.timed_sync(|| handle.sync())))
            .map_err(|p| format!("the log sync thread panicked: {}", panic_message(&*p)))
            .and_then(|r| r.map_err(|e| e.to_string())),
    };
    match outcome {
        Ok(synced) => {
            *shared.synced.lock() = Some(synced);
            shared.counters.lock().syncs += 1;
            for r in replies {
                let _ = r.send(Ok(()));
            }
        }
        Err(reason) => {
            wake(shared.fail(reason.clone()));
            for r in replies {
                let _ = r.send(Err(Error::Poisoned {
                    reason: reason.clone(),
                }));
            }
        }
    }
}

/// Writes batches until the channel closes (`Ok`) or the backend fails (`Err`, after
/// answering the requests taken with it).
#[allow(clippy::too_many_arguments)]
fn writer_loop(
    batcher: &Mutex<Batcher>,
    encoded: Option<&Encoded>,
    rx: &Receiver<Msg>,
    shared: &Shared,
    sync_mode: bool,
    tick: Duration,
    linger: Linger,
    syncer: Option<&Syncer>,
) -> Result<()> {
    let offload = syncer.map_or(Offload::None, Offload::Thread);
    let mut next_tick = Instant::now().checked_add(tick);
    let mut sleep = linger.sleep;
    let mut open = true;
    // Changes wait in `Pending` and no nudge will come for them: look again after a
    // linger (see `Encoded`).
    let mut polling = false;
    let mut taken: Vec<Msg> = Vec::new();
    while open {
        if shared.poisoned.load(Ordering::Acquire) {
            return Err(batcher.lock().stop_poisoned(shared));
        }
        let mut wait = next_tick.map_or(Duration::MAX, |t| {
            t.saturating_duration_since(Instant::now())
        });
        if shared.full.load(Ordering::Relaxed) {
            wait = wait.min(FULL_RETRY);
        }
        let poll_started = Instant::now();
        if polling {
            wait = wait.min(sleep);
        }
        let first = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                open = false;
                None
            }
        };
        let mut slept = None;
        if let Some(m) = first {
            let since_write = batcher
                .lock()
                .last_write
                .map_or(Duration::MAX, |t| t.elapsed());
            let lingering = lingers(sync_mode, &m, !rx.is_empty(), since_write, linger.busy);
            taken.push(m);
            if lingering {
                let t = Instant::now();
                std::thread::sleep(sleep);
                slept = Some(t.elapsed());
            }
            // At most this many messages in a batch, the first included.
            taken.extend(rx.try_iter().take(batch_limit(sync_mode) - 1));
        } else if polling && open {
            slept = Some(poll_started.elapsed());
        }
        let mut b = batcher.lock();
        let mut count = taken.len();
        for m in taken.drain(..) {
            b.take(m);
        }
        if let Some(e) = encoded {
            let from_pending = e.take_into(&mut b, true);
            polling = from_pending > 0;
            count += from_pending;
        }
        if let Some(slept) = slept {
            sleep = linger.next(slept, count);
        }
        let ticked = next_tick.is_some_and(|t| Instant::now() >= t);
        if ticked {
            next_tick = Instant::now().checked_add(tick);
        }
        b.run(shared, ticked, open, offload)?;
    }
    Ok(())
}

/// Under `Buffered`, over a backend that takes changes encoded ([`Backend::encoder`]):
/// each request thread encodes its own change while the data is still in its cache,
/// and appends the bytes to [`Pending`] — no channel, no value handed to another
/// thread to read and free. A batch goes out from whichever thread gets there first,
/// through the one [`Batcher`] (so batches reach the file in the order they were
/// taken, and the changes in each in the order they were numbered):
/// - a request thread that finds [`LEAD_CHANGES`] waiting, if no one else is writing
///   (and, finding [`BUFFERED_BACKLOG`] waiting, in any case);
/// - the writer thread, nudged by the first change into an empty `Pending` while it
///   waits, or looking again a linger after a batch it took (it goes back to waiting
///   for a nudge once it finds nothing). It also serves the ticks, flushes and
///   compactions, as for changes sent through the channel.
///
/// The hand-off through the channel and the writer thread cost a fifth of `Memory`'s
/// CPU per write at two threads, and the writer was a third thread wanting a core
/// (`docs/performance.md`, "Each writing thread writes its own batch").
pub(crate) struct Encoded {
    encode: Encoder,
    pending: Mutex<Pending>,
    /// The writer thread's: it owns the backend, which closes when the thread ends.
    batcher: std::sync::Weak<Mutex<Batcher>>,
}

/// Changes encoded and numbered, waiting to be taken into a batch.
#[derive(Default)]
pub(crate) struct Pending {
    bytes: Vec<u8>,
    count: usize,
    /// The number of the last change appended.
    last_seq: u64,
    /// The writer found nothing here last and waits for a [`Msg::Nudge`]: the next
    /// change sends one.
    writer_idle: bool,
    /// The journal is closing: no more changes.
    closed: bool,
}

impl Encoded {
    /// Moves what waits into `batcher`'s next batch; returns how many changes. For
    /// the writer (`writer`), notes whether it will now wait for a nudge: it does
    /// when it found nothing.
    fn take_into(&self, batcher: &mut Batcher, writer: bool) -> usize {
        let mut p = self.pending.lock();
        let n = p.count;
        let last = p.last_seq;
        batcher.take_encoded(&mut p.bytes, n, last);
        p.count = 0;
        if writer {
            p.writer_idle = n == 0;
        }
        n
    }
}

thread_local! {
    /// Where a thread encodes its change before it appends it to [`Pending`].
    static LOCAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;

    use crossbeam_channel::{Receiver, Sender};

    use super::Writer;
    use crate::backend::Compaction;
    use crate::backend::log::segment::LogBackend;
    use crate::backend::{Backend, Discard, SyncHandle, Synced};
    use crate::error::{Error, Result};
    use crate::model::change::{Change, Ticket};
    use crate::options::{Durability, Options};

    /// The real log backend, with each fsync held until the test lets it go (`Ok`) or
    /// fails it (`Err`): the moment a change becomes durable, under the test's control.
    /// With `entered`, fsyncs run through sync handles (off the writer thread, as the
    /// log's do), and each one says so on `entered` when it reaches the gate.
    struct Gated {
        log: Box<dyn Backend>,
        gate: Receiver<std::result::Result<(), String>>,
        entered: Option<Sender<()>>,
    }

    fn pass(gate: &Receiver<std::result::Result<(), String>>) -> Result<()> {
        match gate.recv() {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(reason)) => Err(Error::io(
                "syncing the log (gated test backend)",
                std::io::Error::other(reason),
            )),
        }
    }

    struct GatedHandle {
        inner: Box<dyn SyncHandle>,
        gate: Receiver<std::result::Result<(), String>>,
        entered: Sender<()>,
    }

    impl SyncHandle for GatedHandle {
        fn sync(self: Box<Self>) -> Result<Synced> {
            let _ = self.entered.send(());
            pass(&self.gate)?;
            self.inner.sync()
        }
    }

    impl Backend for Gated {
        fn write(&mut self, changes: &[Change]) -> Result<()> {
            self.log.write(changes)
        }
        fn encoder(&self) -> Option<crate::backend::Encoder> {
            self.log.encoder()
        }
        fn write_encoded(&mut self, encoded: &[u8], changes: &[Change]) -> Result<()> {
            self.log.write_encoded(encoded, changes)
        }
        fn sync(&mut self) -> Result<()> {
            if let Some(entered) = &self.entered {
                let _ = entered.send(());
            }
            pass(&self.gate)?;
            self.log.sync()
        }
        fn sync_handle(&mut self) -> Result<Option<Box<dyn SyncHandle>>> {
            let Some(entered) = self.entered.clone() else {
                return Ok(None);
            };
            let inner = self.log.sync_handle()?.expect("the log syncs off-thread");
            Ok(Some(Box::new(GatedHandle {
                inner,
                gate: self.gate.clone(),
                entered,
            })))
        }
        fn note_synced(&mut self, synced: Synced) {
            self.log.note_synced(synced);
        }
        fn disk_bytes(&self) -> u64 {
            self.log.disk_bytes()
        }
        fn begin_compaction(&mut self) -> Result<Option<Box<dyn Compaction>>> {
            self.log.begin_compaction()
        }
        fn wants_compaction(&self, floor: u64) -> bool {
            self.log.wants_compaction(floor)
        }
    }

    fn gated(dir: &std::path::Path) -> (Writer, Sender<std::result::Result<(), String>>) {
        gated_lingering(dir, Durability::Sync, super::LINGER, super::BUSY)
    }

    fn buffered(flush_every: Duration) -> Durability {
        Durability::Buffered { flush_every }
    }

    fn gated_lingering(
        dir: &std::path::Path,
        mode: Durability,
        sleep: Duration,
        busy: Duration,
    ) -> (Writer, Sender<std::result::Result<(), String>>) {
        let linger = super::Linger {
            sleep,
            max: sleep,
            busy,
        };
        let (durable, gate, _) = gated_with(dir, mode, linger, false);
        (durable, gate)
    }

    /// A gated journal whose fsyncs run through sync handles, and the channel each
    /// says on when it reaches the gate.
    fn gated_off_thread(
        dir: &std::path::Path,
        mode: Durability,
    ) -> (
        Writer,
        Sender<std::result::Result<(), String>>,
        Receiver<()>,
    ) {
        let linger = super::Linger {
            sleep: super::LINGER,
            max: super::LINGER_MAX,
            busy: super::BUSY,
        };
        let (durable, gate, entered) = gated_with(dir, mode, linger, true);
        (durable, gate, entered.unwrap())
    }

    fn gated_with(
        dir: &std::path::Path,
        mode: Durability,
        linger: super::Linger,
        off_thread: bool,
    ) -> (
        Writer,
        Sender<std::result::Result<(), String>>,
        Option<Receiver<()>>,
    ) {
        let (backend, gate, entered, lock) = gated_log(dir, off_thread);
        let durable = Writer::start_lingering(backend, mode, lock, false, linger).unwrap();
        (durable, gate, off_thread.then_some(entered))
    }

    /// The real log in `dir` behind a gate (its fsyncs through sync handles if
    /// `off_thread`), the gate, the channel each fsync says on when it reaches the gate,
    /// and the directory's lock.
    #[allow(clippy::type_complexity)]
    fn gated_log(
        dir: &std::path::Path,
        off_thread: bool,
    ) -> (
        Box<Gated>,
        Sender<std::result::Result<(), String>>,
        Receiver<()>,
        crate::util::lock::DirLock,
    ) {
        let opened = LogBackend::open(dir, &Options::default(), &Discard).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let (entered_tx, entered_rx) = crossbeam_channel::unbounded();
        let backend = Box::new(Gated {
            log: opened.backend,
            gate: rx,
            entered: off_thread.then_some(entered_tx),
        });
        let lock = crate::util::lock::lock(&crate::util::vfs::OsFs, dir).unwrap();
        (backend, tx, entered_rx, lock)
    }

    /// Counts wake-ups and lets the test thread wait for one.
    struct CountingWaker {
        woken: AtomicUsize,
        test: std::thread::Thread,
    }

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.woken.fetch_add(1, Ordering::SeqCst);
            self.test.unpark();
        }
    }

    fn counting() -> (Arc<CountingWaker>, Waker) {
        let c = Arc::new(CountingWaker {
            woken: AtomicUsize::new(0),
            test: std::thread::current(),
        });
        (c.clone(), Waker::from(c))
    }

    fn wait_for_wake(c: &CountingWaker) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while c.woken.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the task was never woken"
            );
            std::thread::park_timeout(Duration::from_millis(10));
        }
    }

    fn change() -> Change {
        Change::Clear
    }

    /// A gated journal with one change appended and one task that polled for it (and
    /// found it pending: its fsync is held at the gate).
    struct OneTask {
        /// Before `durable`: dropped first, so a closing writer's last fsync goes through.
        gate: Sender<std::result::Result<(), String>>,
        durable: Writer,
        ticket: Ticket,
        count: Arc<CountingWaker>,
        waker: Waker,
        registered: Option<Waker>,
        _dir: tempfile::TempDir,
    }

    impl OneTask {
        fn new() -> OneTask {
            let dir = tempfile::tempdir().unwrap();
            let (durable, gate) = gated(dir.path());
            let ticket = durable.append(change()).unwrap();
            let (count, waker) = counting();
            let mut t = OneTask {
                gate,
                durable,
                ticket,
                count,
                waker,
                registered: None,
                _dir: dir,
            };
            assert!(t.poll().is_pending());
            t
        }

        fn poll(&mut self) -> Poll<Result<()>> {
            let cx = Context::from_waker(&self.waker);
            self.durable
                .poll_wait(self.ticket, &cx, &mut self.registered)
        }
    }

    #[test]
    fn a_task_waiting_for_a_change_is_pending_until_the_fsync_covering_it_then_woken() {
        let mut t = OneTask::new();
        // Polled again before the fsync (a spurious wake-up): still pending, and the
        // same task is not registered twice.
        assert!(t.poll().is_pending());
        assert_eq!(t.durable.shared.progress.lock().waiters.len(), 1);
        assert_eq!(
            t.count.woken.load(Ordering::SeqCst),
            0,
            "woken before the fsync"
        );
        t.gate.send(Ok(())).unwrap();
        wait_for_wake(&t.count);
        assert!(matches!(t.poll(), Poll::Ready(Ok(()))));
        assert_eq!(t.count.woken.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failed_fsync_wakes_waiting_tasks_with_the_error() {
        let mut t = OneTask::new();
        t.gate.send(Err("disk gone".into())).unwrap();
        wait_for_wake(&t.count);
        match t.poll() {
            Poll::Ready(Err(Error::Poisoned { reason })) => {
                assert!(reason.contains("disk gone"), "{reason}");
            }
            other => panic!("expected the fsync's failure, got {other:?}"),
        }
        // A change appended after the failure is refused outright.
        assert!(matches!(
            t.durable.append(change()),
            Err(Error::Poisoned { .. })
        ));
    }

    #[test]
    fn threads_and_tasks_waiting_on_one_fsync_are_all_released_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, gate) = gated(dir.path());
        let durable = Arc::new(durable);
        // The first fsync is held: every change below waits on the next one or this.
        let first = durable.append(change()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let d = durable.clone();
                let t = d.append(change()).unwrap();
                std::thread::spawn(move || d.wait(t))
            })
            .collect();
        let tickets: Vec<Ticket> = (0..4).map(|_| durable.append(change()).unwrap()).collect();
        let wakers: Vec<_> = tickets.iter().map(|_| counting()).collect();
        let mut registered: Vec<Option<Waker>> = vec![None; tickets.len()];
        for ((t, (_, w)), r) in tickets.iter().zip(&wakers).zip(&mut registered) {
            assert!(
                durable
                    .poll_wait(*t, &Context::from_waker(w), r)
                    .is_pending()
            );
        }
        // Two fsyncs at most cover everything appended (the one in progress, then one
        // batch of the rest); let a few more through in case batches split.
        for _ in 0..8 {
            gate.send(Ok(())).unwrap();
        }
        for h in threads {
            h.join().unwrap().unwrap();
        }
        for ((t, (c, w)), r) in tickets.iter().zip(&wakers).zip(&mut registered) {
            wait_for_wake(c);
            assert!(matches!(
                durable.poll_wait(*t, &Context::from_waker(w), r),
                Poll::Ready(Ok(()))
            ));
        }
        assert!(matches!(
            durable.poll_wait(first, &Context::from_waker(&wakers[0].1), &mut None),
            Poll::Ready(Ok(()))
        ));
    }

    /// Starts `n` threads, each appending a change and waiting for it; returns them
    /// once each is inside [`Writer::wait`] or back from it, with the count of those
    /// back.
    fn waiting_threads(
        durable: &Arc<Writer>,
        n: usize,
    ) -> (Vec<std::thread::JoinHandle<Result<()>>>, Arc<AtomicUsize>) {
        let returned = Arc::new(AtomicUsize::new(0));
        let threads = (0..n)
            .map(|_| {
                let (d, r) = (durable.clone(), returned.clone());
                let t = d.append(change()).unwrap();
                std::thread::spawn(move || {
                    let out = d.wait(t);
                    r.fetch_add(1, Ordering::SeqCst);
                    out
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while durable.shared.waiting.load(Ordering::SeqCst) + returned.load(Ordering::SeqCst) < n {
            assert!(std::time::Instant::now() < deadline, "threads never waited");
            std::thread::sleep(Duration::from_millis(1));
        }
        (threads, returned)
    }

    #[test]
    fn threads_beyond_the_cores_yield_while_they_wait_yet_return_only_after_their_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, gate) = gated(dir.path());
        let durable = Arc::new(durable);
        // Four times the cores and more: at least half of them take the yielding path.
        let n = durable.yield_from * 2 + 2;
        let (threads, returned) = waiting_threads(&durable, n);
        // A yield takes microseconds; by now the yielders have looked at the durable
        // mark many times (or parked after their yields).
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            returned.load(Ordering::SeqCst),
            0,
            "a waiter returned before any fsync"
        );
        for _ in 0..n + 2 {
            gate.send(Ok(())).unwrap();
        }
        for h in threads {
            h.join().unwrap().unwrap();
        }
        assert_eq!(returned.load(Ordering::SeqCst), n);
        assert_eq!(durable.shared.waiting.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_failed_fsync_reaches_yielding_waiters_with_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, gate) = gated(dir.path());
        let durable = Arc::new(durable);
        let (threads, _) = waiting_threads(&durable, durable.yield_from * 2 + 2);
        gate.send(Err("disk gone".into())).unwrap();
        for h in threads {
            match h.join().unwrap() {
                Err(Error::Poisoned { reason }) => assert!(reason.contains("disk gone")),
                other => panic!("expected the fsync's failure, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_buffered_wait_returns_before_any_fsync_and_reports_a_failure_once_poisoned() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, gate) = gated_lingering(
            dir.path(),
            buffered(Duration::from_millis(1)),
            super::LINGER,
            super::BUSY,
        );
        let ticket = durable.append(change()).unwrap();
        // The interval's fsync is held at the gate: a Buffered write does not wait for it.
        assert!(matches!(durable.wait(ticket), Ok(())));
        let (_, waker) = counting();
        let mut registered = None;
        let cx = Context::from_waker(&waker);
        assert!(matches!(
            durable.poll_wait(ticket, &cx, &mut registered),
            Poll::Ready(Ok(()))
        ));
        assert!(registered.is_none(), "a Buffered task registered a waker");
        gate.send(Err("disk gone".into())).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !durable.shared.poisoned.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "never poisoned");
            std::thread::sleep(Duration::from_millis(1));
        }
        match durable.wait(ticket) {
            Err(Error::Poisoned { reason }) => assert!(reason.contains("disk gone"), "{reason}"),
            other => panic!("expected the fsync's failure, got {other:?}"),
        }
        assert!(matches!(
            durable.poll_wait(ticket, &cx, &mut registered),
            Poll::Ready(Err(Error::Poisoned { .. }))
        ));
    }

    #[test]
    fn a_lingering_writer_sleeps_as_long_as_a_quarter_of_the_queue_takes_to_arrive() {
        let l = super::Linger {
            sleep: super::LINGER,
            max: super::LINGER_MAX,
            busy: super::BUSY,
        };
        let us = Duration::from_micros;
        // 1,024 a millisecond: 256 take 250 µs.
        assert_eq!(l.next(us(400), 1024).as_micros(), 100);
        assert_eq!(l.next(us(128), 128).as_micros(), 256);
        // Slower than a quarter of the queue per LINGER_MAX: the longest sleep.
        assert_eq!(l.next(us(60), 3), super::LINGER_MAX);
        assert_eq!(
            l.next(us(60), 0),
            super::LINGER_MAX,
            "nothing came but the first"
        );
        // Faster than a quarter per LINGER: the shortest.
        assert_eq!(l.next(us(20), 1023), super::LINGER);
        let fixed = super::Linger { max: us(1), ..l };
        assert_eq!(
            fixed.next(us(60), 3),
            super::LINGER,
            "max below sleep: sleep"
        );
    }

    #[test]
    fn a_busy_buffered_writer_lingers_only_for_a_change_with_nothing_queued() {
        use super::{BUSY, Msg, lingers};
        let c = || Msg::Change(1, change());
        let busy = BUSY / 2;
        assert!(lingers(false, &c(), false, busy, BUSY));
        assert!(!lingers(true, &c(), false, busy, BUSY), "under Sync");
        assert!(
            !lingers(false, &c(), true, busy, BUSY),
            "with a batch queued already"
        );
        assert!(!lingers(false, &c(), false, BUSY, BUSY), "on a quiet store");
        assert!(
            !lingers(false, &c(), false, Duration::MAX, BUSY),
            "before any write"
        );
        let touch = Msg::Touch(
            crate::model::token::SessionId(7),
            crate::clock::Timestamp(1),
        );
        assert!(!lingers(false, &touch, false, busy, BUSY), "for a touch");
        let (tx, _rx) = crossbeam_channel::bounded(1);
        assert!(
            !lingers(false, &Msg::Flush(tx), false, busy, BUSY),
            "for a flush"
        );
    }

    /// Waits until `records` changes are written (fails the test after 30 s).
    fn until_written(durable: &Writer, records: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while durable.counters().records < records {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_busy_buffered_writer_waits_for_what_comes_next_before_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        // A linger twenty times the pause below: the outcome is not a race.
        let (durable, _gate) = gated_lingering(
            dir.path(),
            buffered(Duration::from_secs(60)),
            Duration::from_secs(2),
            // Busy however long this thread waits to be scheduled between the first
            // write and the next append.
            Duration::from_secs(60),
        );
        let written = |records: u64| until_written(&durable, records);
        let _ = durable.append(change()).unwrap();
        written(1);
        // Busy now. The writer takes the next change off the channel, then lingers: a
        // change sent well after it did is in the same batch (a writer that did not
        // linger has written the first alone by then).
        let _ = durable.append(change()).unwrap();
        let queued = || durable.tx.lock().1.as_ref().map_or(0, Sender::len);
        while queued() > 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(100));
        let _ = durable.append(change()).unwrap();
        written(3);
        assert_eq!(durable.counters().batches, 2, "the second and third apart");
    }

    #[test]
    fn a_thread_that_finds_a_batch_waiting_writes_it_itself_while_the_writer_lingers() {
        let dir = tempfile::tempdir().unwrap();
        // The writer, once busy, looks again only after a minute.
        let (durable, gate) = gated_lingering(
            dir.path(),
            buffered(Duration::from_secs(60)),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        assert!(durable.encoded.is_some(), "the log takes encoded changes");
        let _ = durable.append(change()).unwrap();
        // A quiet store's change goes out at once, from the writer.
        until_written(&durable, 1);
        let mut tickets = Vec::new();
        for _ in 1..super::LEAD_CHANGES {
            tickets.push(durable.append(change()).unwrap().0);
        }
        assert_eq!(durable.counters().records, 1, "the writer lingers");
        tickets.push(durable.append(change()).unwrap().0);
        let c = durable.counters();
        assert_eq!(
            (c.records, c.batches),
            (1 + super::LEAD_CHANGES as u64, 2),
            "the appending thread wrote the batch before it returned"
        );
        let want: Vec<u64> = (2..=1 + super::LEAD_CHANGES as u64).collect();
        assert_eq!(tickets, want, "numbered in the order appended");
        // The closing fsync passes the gate.
        drop(gate);
        durable.shutdown();
        assert!(
            matches!(durable.append(change()), Err(Error::Poisoned { .. })),
            "a closed journal takes no more changes"
        );
    }

    #[test]
    fn a_thread_that_finds_the_backlog_full_writes_it_before_its_own_change() {
        let dir = tempfile::tempdir().unwrap();
        // The writer is held at the batcher below, whatever its linger (short: the
        // close waits for a linger in progress).
        let (durable, gate) = gated_lingering(
            dir.path(),
            buffered(Duration::from_secs(60)),
            Duration::from_millis(10),
            Duration::from_secs(60),
        );
        let durable = Arc::new(durable);
        let encoded = Arc::clone(durable.encoded.as_ref().unwrap());
        let batcher = encoded.batcher.upgrade().unwrap();
        // Someone is writing: no thread can lead, and changes pile up.
        let held = batcher.lock();
        let appended = Arc::new(AtomicUsize::new(0));
        let appender = {
            let (durable, appended) = (Arc::clone(&durable), Arc::clone(&appended));
            std::thread::spawn(move || {
                for _ in 0..=super::BUFFERED_BACKLOG {
                    let _ = durable.append(change()).unwrap();
                    appended.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while appended.load(Ordering::SeqCst) < super::BUFFERED_BACKLOG {
            assert!(
                std::time::Instant::now() < deadline,
                "the backlog never filled"
            );
            std::thread::yield_now();
        }
        // The next one waits for the writing to end: nothing past the bound is queued.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(appended.load(Ordering::SeqCst), super::BUFFERED_BACKLOG);
        assert_eq!(encoded.pending.lock().count, super::BUFFERED_BACKLOG);
        assert_eq!(durable.counters().records, 0);
        drop(held);
        appender.join().unwrap();
        // It wrote the backlog itself, then queued its own change.
        assert!(durable.counters().records >= super::BUFFERED_BACKLOG as u64);
        assert!(encoded.pending.lock().count <= 1);
        drop(batcher);
        drop(gate);
        durable.shutdown();
        assert_eq!(
            durable.counters().records,
            super::BUFFERED_BACKLOG as u64 + 1,
            "every change written by the close"
        );
    }

    /// Runs `f` on a thread of its own and returns what it returns — or fails the test
    /// if it has not returned after 30 s (it hangs).
    fn returns<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{what} never returned"))
    }

    fn assert_poisoned(r: Result<impl std::fmt::Debug>, reason: &str, what: &str) {
        match r {
            Err(Error::Poisoned { reason: got }) => assert!(got.contains(reason), "{what}: {got}"),
            other => panic!("{what}: expected the failure, got {other:?}"),
        }
    }

    #[test]
    fn a_flush_queued_behind_a_failing_write_is_answered_with_the_failure() {
        for mode in [Durability::Sync, buffered(Duration::from_secs(3600))] {
            let dir = tempfile::tempdir().unwrap();
            let (durable, gate) = gated_lingering(dir.path(), mode, super::LINGER, super::BUSY);
            let durable = Arc::new(durable);
            // Sync: the change's fsync is held at the gate. Buffered: the flush's is.
            let _ = durable.append(change()).unwrap();
            let first = {
                let d = durable.clone();
                std::thread::spawn(move || d.flush())
            };
            // Wait until the writer holds the first fsync and a second flush is queued
            // behind it, then fail the fsync.
            std::thread::sleep(Duration::from_millis(50));
            let second = {
                let d = durable.clone();
                std::thread::spawn(move || d.flush())
            };
            let queued = || durable.tx.lock().1.as_ref().map_or(0, Sender::len);
            while queued() == 0 && !second.is_finished() {
                std::thread::yield_now();
            }
            gate.send(Err("disk full".into())).unwrap();
            for (h, what) in [
                (first, "the flush in the failing batch"),
                (second, "the flush queued behind it"),
            ] {
                let r = returns(what, move || h.join().unwrap());
                assert_poisoned(r, "disk full", &format!("{mode:?}: {what}"));
            }
            // Requests after the failure are answered with it too.
            let d = durable.clone();
            assert_poisoned(
                returns("a later flush", move || d.flush()),
                "disk full",
                "later",
            );
            let d = durable.clone();
            let r = returns("a compaction", move || {
                d.begin_compaction().map(|j| j.is_some())
            });
            assert_poisoned(r, "disk full", "compaction");
            let d = durable.clone();
            returns("the shutdown", move || d.shutdown());
        }
    }

    #[test]
    fn a_buffered_writer_hands_batches_to_the_os_while_an_fsync_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, gate, entered) =
            gated_off_thread(dir.path(), buffered(Duration::from_millis(1)));
        let written = |records: u64| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while durable.counters().records < records {
                assert!(
                    std::time::Instant::now() < deadline,
                    "written while an fsync ran: {} of {records}",
                    durable.counters().records
                );
                std::thread::yield_now();
            }
        };
        let _ = durable.append(change()).unwrap();
        written(1);
        // The interval's fsync of that change reaches the gate and is held there.
        entered
            .recv_timeout(Duration::from_secs(30))
            .expect("an fsync began");
        for n in 2..=50 {
            let _ = durable.append(change()).unwrap();
            written(n);
        }
        assert_eq!(durable.counters().syncs, 0, "the fsync is still held");
        // A flush waits for an fsync that covers everything before it.
        let flush = {
            let d = Arc::new(durable);
            let f = d.clone();
            (d, std::thread::spawn(move || f.flush()))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!flush.1.is_finished(), "a flush returned before its fsync");
        for _ in 0..4 {
            gate.send(Ok(())).unwrap();
        }
        returns("the flush", move || flush.1.join().unwrap()).unwrap();
        assert!(flush.0.counters().syncs >= 1);
    }

    #[test]
    fn a_failed_fsync_off_the_writer_thread_poisons_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, gate, entered) =
            gated_off_thread(dir.path(), buffered(Duration::from_millis(1)));
        let durable = Arc::new(durable);
        let _ = durable.append(change()).unwrap();
        entered
            .recv_timeout(Duration::from_secs(30))
            .expect("an fsync began");
        let flush = {
            let d = durable.clone();
            std::thread::spawn(move || d.flush())
        };
        gate.send(Err("disk gone".into())).unwrap();
        let r = returns("the flush", move || flush.join().unwrap());
        assert_poisoned(r, "disk gone", "flush");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while durable.append(change()).is_ok() {
            assert!(std::time::Instant::now() < deadline, "never poisoned");
            std::thread::yield_now();
        }
        assert_poisoned(durable.append(change()), "disk gone", "append");
        let d = durable.clone();
        returns("the shutdown", move || d.shutdown());
    }

    /// A backend whose writes panic: a bug, not an I/O error.
    struct Panicking;

    impl Backend for Panicking {
        fn write(&mut self, _: &[Change]) -> Result<()> {
            panic!("a bug in a backend")
        }
        fn sync(&mut self) -> Result<()> {
            Ok(())
        }
        fn disk_bytes(&self) -> u64 {
            0
        }
        fn begin_compaction(&mut self) -> Result<Option<Box<dyn Compaction>>> {
            Ok(None)
        }
        fn wants_compaction(&self, _: u64) -> bool {
            false
        }
    }

    #[test]
    fn a_writer_that_panics_answers_every_request_after_with_the_failure() {
        for mode in [Durability::Sync, buffered(Duration::from_secs(3600))] {
            let dir = tempfile::tempdir().unwrap();
            let lock = crate::util::lock::lock(&crate::util::vfs::OsFs, dir.path()).unwrap();
            let linger = super::Linger {
                sleep: super::LINGER,
                max: super::LINGER_MAX,
                busy: super::BUSY,
            };
            let durable = Arc::new(
                Writer::start_lingering(Box::new(Panicking), mode, lock, false, linger).unwrap(),
            );
            let ticket = durable.append(change()).unwrap();
            let d = durable.clone();
            let r = returns("a wait on the change", move || d.wait(ticket));
            if mode == Durability::Sync {
                assert_poisoned(r, "panicked", "the waiter");
            }
            let d = durable.clone();
            assert_poisoned(returns("a flush", move || d.flush()), "panicked", "flush");
            let d = durable.clone();
            let r = returns("a compaction", move || {
                d.begin_compaction().map(|j| j.is_some())
            });
            assert_poisoned(r, "a bug in a backend", "compaction");
            let d = durable.clone();
            returns("the shutdown", move || d.shutdown());
        }
    }

    /// An inline journal over the gated log: `gate` decides each fsync (send the
    /// outcomes before the call that fsyncs: nothing waits on another thread).
    fn inline(
        dir: &std::path::Path,
        mode: Durability,
    ) -> (
        Writer,
        Sender<std::result::Result<(), String>>,
        Receiver<()>,
    ) {
        let (backend, gate, entered, lock) = gated_log(dir, true);
        (Writer::inline(backend, mode, lock), gate, entered)
    }

    #[test]
    fn an_inline_sync_journal_writes_and_fsyncs_an_operations_changes_as_one_batch_at_its_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, gate, entered) = inline(dir.path(), Durability::Sync);
        let tickets: Vec<Ticket> = (0..3).map(|_| durable.append(change()).unwrap()).collect();
        assert_eq!(durable.counters().batches, 0, "written before the wait");
        gate.send(Ok(())).unwrap();
        durable.wait(tickets[2]).unwrap();
        let c = durable.counters();
        assert_eq!((c.batches, c.records, c.syncs), (1, 3, 1));
        assert_eq!(entered.try_iter().count(), 1, "one fsync");
        // Durable already: no second pass, no fsync.
        durable.wait(tickets[0]).unwrap();
        assert_eq!(durable.counters().syncs, 1);
    }

    #[test]
    fn an_inline_journal_whose_fsync_fails_answers_the_wait_and_every_later_call_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, gate, _) = inline(dir.path(), Durability::Sync);
        let ticket = durable.append(change()).unwrap();
        gate.send(Err("disk gone".into())).unwrap();
        assert_poisoned(durable.wait(ticket), "disk gone", "the waiter");
        assert_poisoned(durable.append(change()), "disk gone", "a later append");
        assert_poisoned(durable.flush(), "disk gone", "a flush");
        assert_poisoned(
            durable.begin_compaction().map(|c| c.is_some()),
            "disk gone",
            "a compaction",
        );
        durable.shutdown();
    }

    #[test]
    fn an_inline_buffered_journal_writes_at_the_wait_and_fsyncs_through_a_sync_handle_at_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, gate, entered) = inline(dir.path(), buffered(Duration::from_secs(3600)));
        let ticket = durable.append(change()).unwrap();
        durable.wait(ticket).unwrap();
        let c = durable.counters();
        assert_eq!((c.batches, c.syncs), (1, 0), "written, not fsynced");
        gate.send(Ok(())).unwrap();
        durable.flush().unwrap();
        assert_eq!(durable.counters().syncs, 1);
        assert_eq!(entered.try_iter().count(), 1, "through the sync handle");
        // A failed fsync at a flush poisons it as the sync thread's does.
        let ticket = durable.append(change()).unwrap();
        durable.wait(ticket).unwrap();
        gate.send(Err("disk gone".into())).unwrap();
        assert_poisoned(durable.flush(), "disk gone", "the flush");
        assert_poisoned(durable.append(change()), "disk gone", "a later append");
    }

    #[test]
    fn an_inline_buffered_journal_fsyncs_on_its_counted_tick() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, gate, _) = inline(dir.path(), buffered(Duration::from_secs(3600)));
        gate.send(Ok(())).unwrap();
        for _ in 0..super::INLINE_TICK - 1 {
            let t = durable.append(change()).unwrap();
            durable.wait(t).unwrap();
        }
        assert_eq!(durable.counters().syncs, 0);
        let t = durable.append(change()).unwrap();
        durable.wait(t).unwrap();
        assert_eq!(durable.counters().syncs, 1, "the tick's fsync");
    }

    #[test]
    fn an_inline_journal_whose_backend_panics_reports_the_panic_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let lock = crate::util::lock::lock(&crate::util::vfs::OsFs, dir.path()).unwrap();
        let durable = Writer::inline(Box::new(Panicking), Durability::Sync, lock);
        let ticket = durable.append(change()).unwrap();
        assert_poisoned(durable.wait(ticket), "panicked", "the waiter");
        assert_poisoned(durable.flush(), "panicked", "a flush");
        durable.shutdown();
    }
}
