//! Background threads: the reaper, which every interval advances each shard's timing
//! wheel and removes the sessions whose deadlines passed (see `Inner::reap`), and the
//! compactor, which runs the compactions the log writer asks for.
//!
//! Both hold only a weak reference to the store, so they never keep it alive. When the
//! last [`crate::Store`] handle is dropped, the store stops them — waking each through
//! its stop channel and joining it — before it shuts the log down, so no thread outlives
//! the store and the directory lock is free when the drop returns.

use std::sync::Weak;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::error::{Error, Result};
use crate::store::Inner;

/// A background thread with a stop channel; dropping it disconnects the channel (which
/// wakes the thread) and joins the thread, unless the drop happens on that very thread.
pub(crate) struct Background {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Runs `f` on a named thread; `f` should return once its receiver disconnects.
    pub(crate) fn spawn(
        name: &str,
        f: impl FnOnce(Receiver<()>) + Send + 'static,
    ) -> Result<Background> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(stopped))
            .map_err(|e| Error::io(format!("starting the {name} thread"), e))?;
        Ok(Background {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

/// Starts the reaper: a pass over every shard each `every`.
pub(crate) fn spawn_reaper(store: Weak<Inner>, every: Duration) -> Result<Background> {
    Background::spawn("sessiondb-reap", move |stopped| {
        loop {
            match stopped.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            let Some(store) = store.upgrade() else { return };
            store.reap();
        }
    })
}

/// Starts the compactor: one compaction per request from the log writer, unless the
/// log is mostly live (see [`Inner::compact_if_worthwhile`]).
pub(crate) fn spawn_compactor(store: Weak<Inner>, requests: Receiver<()>) -> Result<Background> {
    Background::spawn("sessiondb-compact", move |stopped| {
        loop {
            crossbeam_channel::select! {
                recv(requests) -> r => {
                    if r.is_err() {
                        return;
                    }
                    let Some(store) = store.upgrade() else { return };
                    // A failure is recorded in the store's stats; the log goes on.
                    let _ = store.compact_if_worthwhile();
                }
                recv(stopped) -> _ => return,
            }
        }
    })
}
