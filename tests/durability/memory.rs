//! `Durability::Memory` on a directory: no file, no lock.

use std::fs;

use sessiondb::{Durability, ManualClock, NewSession};

use crate::helpers::{T0, open, opts};

#[test]
fn memory_durability_on_a_directory_creates_no_files() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-created");
    for path in [dir.path(), missing.as_path()] {
        let store = open(path, opts(&clock, Durability::Memory));
        let (t, _) = store.create(NewSession::for_user("alice")).unwrap();
        store.put(&t, "n", &1u64).unwrap();
        store.rotate(&t).unwrap();
        store.compact().unwrap();
        store.flush().unwrap();
        let st = store.stats();
        assert_eq!(st.backend, "memory");
        assert_eq!(st.disk_bytes, 0);
        // No lock either: a second memory store on the same path opens.
        let other = open(path, opts(&clock, Durability::Memory));
        assert!(other.is_empty(), "memory stores share nothing");
        drop(other);
        drop(store);
    }
    assert!(!missing.exists(), "the directory was created");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "files were created"
    );
    // And a durable store there afterwards starts empty.
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    assert!(store.is_empty());
}
