//! Background threads: the reaper, which every interval advances each shard's timing
//! wheel and removes the sessions whose deadlines passed (see `Inner::reap`), and the
//! compactor, which runs the compactions the log writer asks for. This module knows
//! only threads: the store hands each a closure of its own.
//!
//! Both closures hold only a weak reference to the store, so they never keep it alive. When the
//! last [`crate::Store`] handle is dropped, the store stops them — waking each through
//! its stop channel and joining it — before it shuts the log down, so no thread outlives
//! the store and the directory lock is free when the drop returns.

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::error::{Error, Result};

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

/// Starts a thread that calls `tick` every `every` until it returns false (the store
/// is gone) or the thread is stopped.
pub(crate) fn spawn_periodic(
    name: &str,
    every: Duration,
    mut tick: impl FnMut() -> bool + Send + 'static,
) -> Result<Background> {
    Background::spawn(name, move |stopped| {
        loop {
            match stopped.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            if !tick() {
                return;
            }
        }
    })
}

/// Starts a thread that calls `work` once per message on `requests` until it returns
/// false (the store is gone), the requests end, or the thread is stopped.
pub(crate) fn spawn_on_request(
    name: &str,
    requests: Receiver<()>,
    mut work: impl FnMut() -> bool + Send + 'static,
) -> Result<Background> {
    Background::spawn(name, move |stopped| {
        loop {
            crossbeam_channel::select! {
                recv(requests) -> r => {
                    if r.is_err() || !work() {
                        return;
                    }
                }
                recv(stopped) -> _ => return,
            }
        }
    })
}
