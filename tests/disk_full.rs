//! A full disk is not a crash: on a simulated disk with a capacity, a write that meets
//! `ENOSPC` is refused with `Error::DiskFull` naming the store's directory, reads go on,
//! every later write is refused changing nothing, and once space is freed writes resume
//! without reopening the store — and after a power cut nothing acknowledged is lost.

use std::path::Path;
use std::time::{Duration, Instant};

use sessiondb::vfs::SimFs;
use sessiondb::{Durability, Error, NewSession, Options, Store, Token};

#[path = "support/acked.rs"]
mod acked;

use acked::check_all;

const DIR: &str = "/full/store";

fn opts(disk: &SimFs, durability: Durability) -> Options {
    Options::default()
        .file_system(disk.clone())
        .durability(durability)
        .reaper_interval(None)
        .segment_bytes(4096)
        .compaction(false, u64::MAX, 2.0)
}

fn buffered() -> Durability {
    Durability::Buffered {
        flush_every: Duration::from_millis(20),
    }
}

fn assert_disk_full(r: Result<impl std::fmt::Debug, Error>, what: &str) {
    match r {
        Err(Error::DiskFull { dir, needed }) => {
            assert_eq!(dir, Path::new(DIR), "{what}");
            assert!(needed > 0, "{what}: needed {needed}");
        }
        other => panic!("{what}: expected DiskFull, got {other:?}"),
    }
}

/// Retries `f` until it succeeds: the writer tries its held batch again every 100 ms.
/// (A bound against a hang, not a timing claim.)
fn eventually<T>(what: &str, mut f: impl FnMut() -> Result<T, Error>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return v,
            Err(Error::DiskFull { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Writes sessions until the disk is full; returns the acknowledged ones and the
/// error's message.
fn fill(store: &Store) -> (Vec<(Token, u32)>, String) {
    let mut acked = Vec::new();
    for i in 0..100_000u32 {
        match store.create(NewSession::for_user("alice")) {
            Ok((t, _)) => match store.put(&t, "v", &i) {
                Ok(_) => acked.push((t, i)),
                Err(e @ Error::DiskFull { .. }) => return (acked, e.to_string()),
                Err(e) => panic!("put: {e}"),
            },
            Err(e @ Error::DiskFull { .. }) => return (acked, e.to_string()),
            Err(e) => panic!("create: {e}"),
        }
    }
    panic!("the disk never filled");
}

#[test]
fn a_full_disk_refuses_writes_serves_reads_and_resumes_once_space_is_freed() {
    for durability in [Durability::Sync, buffered()] {
        let what = format!("{durability:?}");
        let disk = SimFs::new(1);
        let store = Store::open_with(DIR, opts(&disk, durability)).unwrap();
        let (t0, _) = store.create(NewSession::anonymous()).unwrap();
        store.flush().unwrap();
        disk.set_capacity(Some(disk.used_bytes() + 10_000));
        let (mut acked, message) = fill(&store);
        assert!(
            message.contains(DIR) && message.contains("free space"),
            "{message}"
        );
        if durability != Durability::Sync {
            // Acknowledged once queued: the flush is what reports the full disk.
            assert_disk_full(store.flush(), &what);
        }
        // Every write is refused now, changing nothing; reads go on.
        let before = store.len();
        assert_disk_full(store.create(NewSession::anonymous()), &what);
        assert_disk_full(store.put(&t0, "k", &1u8), &what);
        assert_disk_full(store.end(&t0), &what);
        assert_eq!(
            store.len(),
            before,
            "{what}: a refused write changes nothing"
        );
        assert!(store.get(&t0).is_some(), "{what}: reads go on");
        assert!(
            store.stats().disk_full,
            "{what}: what the disk-full gauge reports"
        );
        store.verify().unwrap();
        // Space is freed: writes resume, no reopen.
        disk.set_capacity(None);
        let v = 7u32;
        eventually(&what, || store.put(&t0, "v", &v));
        acked.push((t0.clone(), v));
        let (t, _) = store.create(NewSession::for_user("bob")).unwrap();
        store.put(&t, "v", &8u32).unwrap();
        acked.push((t, 8));
        store.flush().unwrap();
        check_all(&store, &acked);
        assert!(!store.stats().disk_full, "{what}: room again");
        // A power cut: everything acknowledged (and flushed) is there.
        let disk = disk.crash();
        drop(store);
        let store = Store::open_with(DIR, opts(&disk, durability)).unwrap();
        check_all(&store, &acked);
    }
}

#[test]
fn a_power_cut_while_the_disk_is_full_loses_nothing_acknowledged() {
    for durability in [Durability::Sync, buffered()] {
        let disk = SimFs::new(2);
        let store = Store::open_with(DIR, opts(&disk, durability)).unwrap();
        disk.set_capacity(Some(disk.used_bytes() + 20_000));
        let (mut acked, _) = fill(&store);
        if durability != Durability::Sync {
            // Under Buffered, what the last successful flush covered.
            acked.clear();
        }
        let disk = disk.crash();
        drop(store);
        disk.set_capacity(None);
        let store = Store::open_with(DIR, opts(&disk, durability)).unwrap();
        check_all(&store, &acked);
    }
}

#[test]
fn a_compaction_that_meets_a_full_disk_leaves_the_old_files_working() {
    let disk = SimFs::new(3);
    let store = Store::open_with(DIR, opts(&disk, Durability::Sync)).unwrap();
    let mut acked = Vec::new();
    for i in 0..300u32 {
        let (t, _) = store.create(NewSession::for_user("carol")).unwrap();
        store.put(&t, "v", &i).unwrap();
        acked.push((t, i));
    }
    let names = disk.names(Path::new(DIR));
    // Room for the roll and a little more, not for a base of 300 sessions.
    disk.set_capacity(Some(disk.used_bytes() + 12_000));
    assert_disk_full(store.compact(), "compaction");
    let after: Vec<String> = disk.names(Path::new(DIR));
    assert!(
        after
            .iter()
            .all(|n| !n.ends_with(".tmp") && !n.starts_with("base-")),
        "the half-written base is gone: {after:?} (before: {names:?})"
    );
    check_all(&store, &acked);
    let (t, _) = store.create(NewSession::anonymous()).unwrap();
    store.put(&t, "v", &1u32).unwrap();
    acked.push((t, 1));
    disk.set_capacity(None);
    store.compact().unwrap();
    check_all(&store, &acked);
    drop(store);
    let store = Store::open_with(DIR, opts(&disk.crash(), Durability::Sync)).unwrap();
    check_all(&store, &acked);
}
