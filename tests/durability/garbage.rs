//! Garbage and stray files: random bytes named like a log file are a typed error, and
//! files that are not the store's are left alone.

use std::fs;

use sessiondb::{Durability, Error, ManualClock, NewSession, Store};

use crate::helpers::{HEADER_LEN, Rng, T0, buffered, n_of, open, opts};

#[test]
fn random_garbage_named_like_a_log_file_is_a_typed_error() {
    let clock = ManualClock::new(T0);
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for name in [
        "seg-0000000000000001.log",
        "base-0000000000000001.log",
        "seg-00000000000000ff.log",
    ] {
        for len in [HEADER_LEN, 100, 4096, 70_000] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(name), rng.bytes(len)).unwrap();
            for salvage in [false, true] {
                match Store::open_with(dir.path(), opts(&clock, buffered()).salvage(salvage)) {
                    Err(Error::Corrupt { segment, .. }) => {
                        assert_eq!(segment, dir.path().join(name));
                    }
                    Err(Error::UnsupportedFormat { file, .. }) => {
                        assert_eq!(file, dir.path().join(name));
                    }
                    Err(e) => panic!("{name} ({len} bytes): untyped error {e:?}"),
                    Ok(_) => panic!("{name} ({len} bytes) of garbage opened as a store"),
                }
            }
        }
    }
}

#[test]
fn stray_unrelated_files_do_not_disturb_a_store() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let strays: [(&str, &[u8]); 7] = [
        ("notes.txt", b"hello"),
        ("seg-1.log", b"not a segment: wrong name"),
        ("seg-000000000000000g.log", b"not hex"),
        ("base-0000000000000001.log.bak", b"a backup"),
        ("SEG-0000000000000001.LOG", b"upper case"),
        ("seg-0000000000000001.log~", b"editor backup"),
        ("00000001.log", b"someone else's log"),
    ];
    for (name, content) in strays {
        fs::write(dir.path().join(name), content).unwrap();
    }
    fs::create_dir(dir.path().join("archive")).unwrap();
    fs::write(
        dir.path().join("archive").join("seg-0000000000000001.log"),
        b"garbage in a subdirectory",
    )
    .unwrap();

    let store = open(dir.path(), opts(&clock, Durability::Sync));
    assert!(store.is_empty());
    let (t, _) = store.create(NewSession::for_user("alice")).unwrap();
    store.put(&t, "n", &5u64).unwrap();
    store.compact().unwrap();
    drop(store);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    assert_eq!(n_of(&store.peek(&t).unwrap()), Some(5));
    drop(store);
    for (name, content) in strays {
        assert_eq!(
            fs::read(dir.path().join(name)).unwrap(),
            content,
            "{name} was touched"
        );
    }
    assert!(dir.path().join("archive/seg-0000000000000001.log").exists());
}

#[test]

fn unrelated_tmp_files_in_the_store_directory_are_not_deleted() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.tmp"), b"mine").unwrap();
    drop(open(dir.path(), opts(&clock, Durability::Sync)));
    assert_eq!(fs::read(dir.path().join("notes.tmp")).unwrap(), b"mine");
}
