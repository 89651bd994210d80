//! The background reaper: a thread that, every interval, advances each shard's timing
//! wheel and removes the sessions whose deadlines passed (see `Inner::reap`).
//!
//! It holds only a weak reference to the store, so it never keeps a store alive; when
//! the last [`crate::Store`] clone is dropped, dropping the [`Reaper`] wakes the thread
//! and joins it, so no thread outlives the store.

use std::sync::Weak;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

use crate::error::{Error, Result};
use crate::store::Inner;

/// A background thread joined when dropped (unless the drop happens on that very
/// thread, which then exits on its own).
pub(crate) struct Background(Option<JoinHandle<()>>);

impl Background {
    pub(crate) fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<Background> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map(|h| Background(Some(h)))
            .map_err(|e| Error::io(format!("starting the {name} thread"), e))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(t) = self.0.take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

pub(crate) struct Reaper {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    pub(crate) fn spawn(store: Weak<Inner>, every: Duration) -> Result<Reaper> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("sessiondb-reap".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let Some(store) = store.upgrade() else { return };
                    store.reap();
                }
            })
            .map_err(|e| Error::io("starting the reaper thread", e))?;
        Ok(Reaper {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Disconnecting the channel wakes the thread at once.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // The last store reference can be released by the reaper itself (it upgraded
            // its weak reference for a pass); a thread cannot join itself, and it exits
            // right after this anyway.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
