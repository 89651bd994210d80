//! I/O errors below the log, on a simulated disk, each aimed at one call: what the
//! store answers, and what it leaves behind.

use std::path::Path;

use sessiondb::vfs::{FaultKind, Op, SimFs};
use sessiondb::{Durability, Error, NewSession, Options, Store};

#[path = "support/acked.rs"]
mod acked;

use acked::check_all;

const DIR: &str = "/faults/store";

fn opts(disk: &SimFs) -> Options {
    Options::default()
        .file_system(disk.clone())
        .durability(Durability::Sync)
        .reaper_interval(None)
        .segment_bytes(4096)
        .compaction(false, u64::MAX, 2.0)
}

/// `n` sessions like `new`, each given `v` = its number: acknowledged, all of them.
fn created(store: &Store, n: u32, new: NewSession) -> Vec<(sessiondb::Token, u32)> {
    (0..n)
        .map(|i| {
            let (t, _) = store.create(new.clone()).unwrap();
            store.put(&t, "v", &i).unwrap();
            (t, i)
        })
        .collect()
}

/// A compaction whose base cannot be put in place (the rename fails with EIO) is
/// `Error::Io`; the old files stay the log, the half-done base is removed, and the
/// store goes on writing — a compaction is the store's own housekeeping, not a write
/// anyone was promised.
#[test]
fn an_io_error_while_compacting_leaves_the_old_files_and_a_working_store() {
    let disk = SimFs::new(5);
    let store = Store::open_with(DIR, opts(&disk)).unwrap();
    let mut acked = created(&store, 200, NewSession::for_user("dave"));
    // The roll renames the manifest first; the second rename puts the base in place.
    disk.fail_nth(Op::Rename, 2, FaultKind::Io);
    match store.compact() {
        Err(Error::Io { context, .. }) => assert!(context.contains("renaming"), "{context}"),
        other => panic!("expected Io, got {other:?}"),
    }
    let names = disk.names(Path::new(DIR));
    assert!(
        names.iter().all(|n| !n.starts_with("base-")),
        "no base, whole or half: {names:?}"
    );
    let (t, _) = store.create(NewSession::anonymous()).unwrap();
    store.put(&t, "v", &1u32).unwrap();
    acked.push((t, 1));
    check_all(&store, &acked);
    store.compact().unwrap();
    check_all(&store, &acked);
    drop(store);
    let store = Store::open_with(DIR, opts(&disk.crash())).unwrap();
    check_all(&store, &acked);
}

/// An fsync that fails poisons the store: that write and every later one fail, never
/// `Ok`; reads go on; a reopen (the same process, no reboot) has everything that was
/// acknowledged — and nothing the failed fsync lost comes back later (the page cache
/// still showed it: the log cut it off).
#[test]
fn a_failed_fsync_poisons_reads_go_on_and_a_reopen_keeps_everything_acknowledged() {
    let disk = SimFs::new(6);
    let store = Store::open_with(DIR, opts(&disk)).unwrap();
    let mut acked = created(&store, 20, NewSession::anonymous());
    disk.fail_nth(Op::Sync, 1, FaultKind::Io);
    let lost = store.create(NewSession::anonymous());
    assert!(
        matches!(lost, Err(Error::Io { .. } | Error::Poisoned { .. })),
        "{lost:?}"
    );
    let later = store.put(&acked[0].0, "v", &99u32);
    assert!(matches!(later, Err(Error::Poisoned { .. })), "{later:?}");
    assert!(store.get(&acked[1].0).is_some(), "reads go on");
    assert!(
        store.stats().journal_poisoned,
        "what the poisoned gauge reports"
    );
    drop(store);
    // Reopened in the same process, then written to, then a power cut.
    let store = Store::open_with(DIR, opts(&disk)).unwrap();
    check_all(&store, &acked);
    assert!(!store.stats().journal_poisoned);
    let (t, _) = store.create(NewSession::anonymous()).unwrap();
    store.put(&t, "v", &7u32).unwrap();
    acked.push((t, 7));
    drop(store);
    let store = Store::open_with(DIR, opts(&disk.crash())).unwrap();
    check_all(&store, &acked);
}

/// As above, with the cut back to the last fsync failing too (once): the log tries the
/// cut again, so a reopen in the same process does not read the lost batch from the
/// page cache and seal it — after a power cut the sealed segment would hold zeros
/// where that batch was, and the store would not open (simulation seed 5635).
#[test]
fn a_failed_fsync_whose_cut_back_fails_once_is_still_cut_and_the_store_reopens_after_a_crash() {
    let disk = SimFs::new(7);
    let store = Store::open_with(DIR, opts(&disk)).unwrap();
    let mut acked = created(&store, 5, NewSession::anonymous());
    disk.fail_nth(Op::Sync, 1, FaultKind::Io);
    disk.fail_nth(Op::SetLen, 1, FaultKind::Io);
    let lost = store.create(NewSession::for_user("mallory"));
    assert!(lost.is_err(), "its fsync failed: {lost:?}");
    drop(store);
    // Reopened without a reboot (the page cache still shows the failed batch, unless
    // the log cut it off), written to, then the power goes.
    let store = Store::open_with(DIR, opts(&disk)).unwrap();
    check_all(&store, &acked);
    assert_eq!(store.sessions_of("mallory").unwrap().len(), 0, "cut off");
    let (t, _) = store.create(NewSession::anonymous()).unwrap();
    store.put(&t, "v", &7u32).unwrap();
    acked.push((t, 7));
    let after = disk.crash();
    drop(store);
    let store = Store::open_with(DIR, opts(&after))
        .unwrap_or_else(|e| panic!("a crash after the reopen must not leave damage: {e}"));
    check_all(&store, &acked);
}
