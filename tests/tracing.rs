//! The `tracing` feature: the events an operator sees — an open with what recovery
//! found, salvage's skipped ranges, a compaction, a journal failing for good (once), a
//! full disk and its end — and none for ordinary reads and writes. A subscriber of this
//! file's own records every event (the writer and compaction threads emit some, so it is
//! the global default); the checks run in one test, in order.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiondb::vfs::{FaultKind, Op, SimFs};
use sessiondb::{Durability, Error, NewSession, Options, Store};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One event: level, target, and its fields as `name=value` pairs (the message too).
#[derive(Clone, Debug)]
struct Seen {
    level: Level,
    target: String,
    text: String,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        self.0.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            text: f.0,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Recorder {
    /// The events so far whose text contains `what`, emptying the record.
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// Waits up to 5 s for an event containing `what` (some come from other threads).
    fn wait_for(&self, what: &str) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(e) = self
                .0
                .lock()
                .unwrap()
                .iter()
                .find(|e| e.text.contains(what))
            {
                return e.clone();
            }
            assert!(Instant::now() < deadline, "no event saying {what:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn sim_opts(disk: &SimFs) -> Options {
    Options::default()
        .file_system(disk.clone())
        .durability(Durability::Sync)
        .reaper_interval(None)
        .segment_bytes(4096)
        .compaction(false, u64::MAX, 2.0)
}

#[test]
fn operators_see_opens_compactions_failures_and_a_full_disk_but_no_event_per_request() {
    let rec = Recorder::default();
    tracing::subscriber::set_global_default(rec.clone()).unwrap();

    // An open, with what recovery found.
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        Options::default()
            .reaper_interval(None)
            .durability(Durability::Sync)
    };
    let store = Store::open_with(dir.path(), opts()).unwrap();
    let tokens: Vec<_> = (0..50)
        .map(|_| store.create(NewSession::for_user("alice")).unwrap().0)
        .collect();
    drop(store);
    rec.take();
    let store = Store::open_with(dir.path(), opts()).unwrap();
    let opened = rec.wait_for("store opened");
    assert_eq!(opened.level, Level::INFO);
    assert_eq!(opened.target, "sessiondb");
    for field in [
        "backend=\"log\"",
        "sessions=50",
        "expired_dropped=0",
        "records=",
    ] {
        assert!(opened.text.contains(field), "{opened:?} lacks {field}");
    }

    // Ordinary requests: not one event.
    rec.take();
    for t in &tokens {
        store.get(t).unwrap();
        store.put(t, "n", &1u8).unwrap();
    }
    let (t, _) = store.create(NewSession::anonymous()).unwrap();
    store.end(&t).unwrap();
    assert!(rec.take().is_empty(), "events for ordinary requests");

    // A compaction.
    store.compact().unwrap();
    let compacted = rec.wait_for("compacted");
    assert!(compacted.text.contains("sessions=50"), "{compacted:?}");
    drop(store);

    // Salvage: each skipped range, as a warning.
    let base = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("base-")
        })
        .expect("the compaction's base");
    let mut bytes = std::fs::read(&base).unwrap();
    bytes[200] ^= 0xff; // inside the first sessions' records
    std::fs::write(&base, &bytes).unwrap();
    rec.take();
    let store = Store::open_with(dir.path(), opts().salvage(true)).unwrap();
    assert!(!store.recovery_report().skipped.is_empty());
    let skipped = rec.wait_for("salvage skipped");
    assert_eq!(skipped.level, Level::WARN);
    assert!(skipped.text.contains("base-"), "{skipped:?}");
    drop(store);

    // A failed fsync: the journal fails for good, said once, as an error.
    let disk = SimFs::new(3);
    let store = Store::open_with("/trace/poison", sim_opts(&disk)).unwrap();
    rec.take();
    disk.fail_nth(Op::Sync, 1, FaultKind::Io);
    assert!(store.create(NewSession::anonymous()).is_err());
    assert!(matches!(
        store.create(NewSession::anonymous()),
        Err(Error::Poisoned { .. })
    ));
    let failed = rec.wait_for("the journal failed");
    assert_eq!(failed.level, Level::ERROR);
    let said = rec
        .take()
        .iter()
        .filter(|e| e.text.contains("the journal failed"))
        .count();
    assert_eq!(said, 1, "said once, however many writes fail after");
    drop(store);

    // A full disk, then room again.
    let disk = SimFs::new(4);
    let store = Store::open_with("/trace/full", sim_opts(&disk)).unwrap();
    store.create(NewSession::anonymous()).unwrap();
    disk.set_capacity(Some(disk.used_bytes() + 10_000));
    rec.take();
    let mut refused = false;
    for _ in 0..10_000 {
        if let Err(Error::DiskFull { .. }) = store.create(NewSession::for_user("bob")) {
            refused = true;
            break;
        }
    }
    assert!(refused, "the disk never filled");
    let full = rec.wait_for("the disk is full");
    assert_eq!(full.level, Level::WARN);
    disk.set_capacity(None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.create(NewSession::anonymous()).is_err() {
        assert!(Instant::now() < deadline, "writes never resumed");
        std::thread::sleep(Duration::from_millis(10));
    }
    rec.wait_for("the disk has room again");
}
