//! Options at the extremes of their types: each value either works or is refused with
//! `Error::InvalidOption`; nothing in the public API panics or hangs on input.

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use sessiondb::{Durability, Error, NewSession, Options, Store};

/// Runs `f` on a thread of its own and fails the test if it panics or has not returned
/// within `secs` (a hang must fail the test, not stall the suite).
fn within<T: Send + 'static>(what: &str, secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let out = f();
        let _ = tx.send(());
        out
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(out) => out,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!("{what}: panicked: {msg}")
            }
        },
        Err(RecvTimeoutError::Timeout) => panic!("{what}: still running after {secs} s (a hang)"),
    }
}

/// Issue 18, defect 6: `flush_every: Duration::MAX` was accepted, the writer thread
/// panicked computing its next tick, and the next flush hung.
#[test]
fn buffered_flush_every_max_is_refused_or_flushes() {
    within("flush_every MAX", 30, || {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default().durability(Durability::Buffered {
            flush_every: Duration::MAX,
        });
        match Store::open_with(dir.path(), opts) {
            Err(Error::InvalidOption { name, .. }) => assert_eq!(name, "durability.flush_every"),
            Err(e) => panic!("{e:?}"),
            Ok(store) => {
                store.create(NewSession::anonymous()).unwrap();
                store.flush().unwrap();
                store.close().unwrap();
            }
        }
    });
}
