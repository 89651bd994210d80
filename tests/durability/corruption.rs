//! Corruption: a flipped byte, damage before a later batch or in a sealed segment, a
//! missing segment and a newer format version are typed errors naming the file (never a
//! panic or wrong data), and salvage reads around them.

use std::fs;
use std::path::Path;

use sessiondb::{Durability, Error, ManualClock, NewSession, Store, Token};

use crate::helpers::{
    HEADER_LEN, Seen, T0, bases, build_prefixes, copy_dir, crc32, last_segment, n_of, open, opts,
    same_file_in, seen, segments, small_store, trial_dir,
};

#[test]
fn flipping_any_byte_of_a_small_log_is_detected_never_a_panic_or_wrong_data() {
    let p = build_prefixes();
    let seg = last_segment(p.dir.path());
    let full = fs::read(&seg).unwrap();
    let all = p.states.len() - 1;
    let trial = trial_dir();
    let (mut ok, mut corrupt) = (0, 0);
    for i in 0..full.len() {
        let mut bytes = full.clone();
        bytes[i] ^= 1 << (i % 8);
        for salvage in [false, true] {
            let what = format!("flip of byte {i} (salvage {salvage})");
            copy_dir(p.dir.path(), trial.path());
            fs::write(same_file_in(trial.path(), &seg), &bytes).unwrap();
            let result = Store::open_with(
                trial.path(),
                opts(&p.clock, Durability::Sync).salvage(salvage),
            );
            match result {
                Ok(store) => {
                    ok += 1;
                    store.verify().unwrap();
                    let report = store.recovery_report();
                    assert!(
                        report.bytes_truncated > 0 || !report.skipped.is_empty(),
                        "{what}: the damage went unnoticed: {report:?}"
                    );
                    if salvage {
                        p.check_plausible(&store, &what);
                    } else {
                        // Without salvage, only the unsynced tail (the last batch) may
                        // be dropped: anything earlier is proven durable by later batches.
                        let k = p.prefix_of(&store).unwrap_or_else(|| {
                            panic!("{what}: the recovered state is no prefix of the log")
                        });
                        assert!(k + 1 >= all, "{what}: lost {} operations", all - k);
                        assert!(report.skipped.is_empty());
                    }
                }
                Err(Error::Corrupt {
                    segment, offset, ..
                }) => {
                    corrupt += 1;
                    assert_eq!(segment.file_name(), seg.file_name(), "{what}");
                    assert!(offset <= i as u64, "{what}: damage reported at {offset}");
                    if salvage {
                        assert!(i < HEADER_LEN, "{what}: salvage refused a damaged record");
                    }
                }
                Err(Error::UnsupportedFormat { file, .. }) => {
                    assert_eq!(file.file_name(), seg.file_name(), "{what}");
                }
                Err(e) => panic!("{what}: untyped failure: {e:?}"),
            }
        }
    }
    assert!(ok > 0 && corrupt > 0, "ok {ok}, corrupt {corrupt}");
}

#[test]
fn damage_before_a_later_batch_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let sessions = small_store(dir.path(), &clock, None);
    let seg = last_segment(dir.path());
    // Inside the second frame after the header: the first record of the first batch.
    let flipped = HEADER_LEN + 30;
    let mut bytes = fs::read(&seg).unwrap();
    assert!(bytes.len() > flipped + 200, "later batches follow");
    bytes[flipped] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();

    match Store::open_with(dir.path(), opts(&clock, Durability::Sync)) {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, seg);
            assert!(
                (HEADER_LEN as u64..=flipped as u64).contains(&offset),
                "offset {offset} for a flip at {flipped}"
            );
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("damaged durable data was silently accepted"),
    }
    // The refused open changed nothing: it fails the same way again.
    assert!(matches!(
        Store::open_with(dir.path(), opts(&clock, Durability::Sync)),
        Err(Error::Corrupt { .. })
    ));

    let store = open(dir.path(), opts(&clock, Durability::Sync).salvage(true));
    let report = store.recovery_report();
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    let skip = &report.skipped[0];
    assert_eq!(skip.file, seg);
    assert!(skip.offset <= flipped as u64 && (flipped as u64) < skip.offset + skip.len);
    assert!(!skip.reason.is_empty());
    // Every other session is intact; the damaged one is gone or intact, never wrong.
    for (t, n) in &sessions {
        if let Some(s) = store.peek(t) {
            assert_eq!(n_of(&s), Some(*n));
        }
    }
    for (t, n) in &sessions[1..] {
        assert_eq!(
            n_of(&store.peek(t).expect("undamaged session lost")),
            Some(*n)
        );
    }
    // A salvage open rewrites the live set at once: the directory then opens cleanly
    // without salvage.
    assert_eq!(store.stats().compactions, 1);
    let kept: Vec<Option<Seen>> = sessions.iter().map(|(t, _)| seen(&store, t)).collect();
    drop(store);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    assert!(store.recovery_report().skipped.is_empty());
    let again: Vec<Option<Seen>> = sessions.iter().map(|(t, _)| seen(&store, t)).collect();
    assert_eq!(again, kept);
}

/// A store (Sync, 4 KiB segments) with enough history for several segments.
fn multi_segment_store(dir: &Path, clock: &ManualClock) -> Vec<(Token, u64)> {
    let store = open(dir, opts(clock, Durability::Sync).segment_bytes(4096));
    let mut out = Vec::new();
    for i in 0..24u64 {
        let (t, _) = store.create(NewSession::anonymous()).unwrap();
        store.put(&t, "pad", &"z".repeat(200)).unwrap();
        store.put(&t, "n", &i).unwrap();
        out.push((t, i));
    }
    drop(store);
    assert!(segments(dir).len() >= 3, "{:?}", segments(dir));
    out
}

#[test]
fn damage_in_a_sealed_segment_is_corruption_and_salvage_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let sessions = multi_segment_store(dir.path(), &clock);
    let first = segments(dir.path())[0].clone();
    let mut bytes = fs::read(&first).unwrap();
    let flipped = bytes.len() / 2;
    bytes[flipped] ^= 0x01;
    fs::write(&first, &bytes).unwrap();
    match Store::open_with(dir.path(), opts(&clock, Durability::Sync)) {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, first);
            assert!(offset <= flipped as u64);
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("damage in a sealed segment was accepted"),
    }
    let store = open(dir.path(), opts(&clock, Durability::Sync).salvage(true));
    let report = store.recovery_report();
    assert!(report.skipped.iter().any(|s| s.file == first), "{report:?}");
    for (t, n) in &sessions {
        if let Some(s) = store.peek(t) {
            assert!(n_of(&s).is_none_or(|v| v == *n), "wrong data after salvage");
        }
    }
    // Sessions written entirely after the damaged segment are intact.
    let last = sessions.last().unwrap();
    assert_eq!(n_of(&store.peek(&last.0).unwrap()), Some(last.1));
}

#[test]
fn a_missing_middle_segment_is_corruption_and_salvage_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let sessions = multi_segment_store(dir.path(), &clock);
    let segs = segments(dir.path());
    fs::remove_file(&segs[1]).unwrap();
    match Store::open_with(dir.path(), opts(&clock, Durability::Sync)) {
        Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, segs[1]),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("a missing segment went unnoticed"),
    }
    let store = open(dir.path(), opts(&clock, Durability::Sync).salvage(true));
    let report = store.recovery_report();
    assert!(
        report.skipped.iter().any(|s| s.file == segs[1]),
        "{report:?}"
    );
    let last = sessions.last().unwrap();
    assert_eq!(n_of(&store.peek(&last.0).unwrap()), Some(last.1));
}

/// Rewrites the header's format version to one more than it says, with a valid CRC.
fn bump_format_version(path: &Path) -> u32 {
    let mut bytes = fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"SESSNDB\0");
    assert_eq!(
        u32::from_le_bytes(bytes[21..25].try_into().unwrap()),
        crc32(&bytes[..21]),
        "the header CRC is CRC-32 of the first 21 bytes"
    );
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    bytes[8..12].copy_from_slice(&(version + 1).to_le_bytes());
    let crc = crc32(&bytes[..21]);
    bytes[21..25].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, &bytes).unwrap();
    version + 1
}

#[test]
fn a_newer_format_version_is_refused_as_unsupported() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "CRC-32 check value");
    let clock = ManualClock::new(T0);
    for which in ["last segment", "first segment", "base"] {
        let dir = tempfile::tempdir().unwrap();
        multi_segment_store(dir.path(), &clock);
        if which == "base" {
            let store = open(dir.path(), opts(&clock, Durability::Sync));
            store.compact().unwrap();
        }
        let target = match which {
            "last segment" => last_segment(dir.path()),
            "first segment" => segments(dir.path())[0].clone(),
            _ => bases(dir.path())[0].clone(),
        };
        let found_version = bump_format_version(&target);
        for salvage in [false, true] {
            match Store::open_with(dir.path(), opts(&clock, Durability::Sync).salvage(salvage)) {
                Err(Error::UnsupportedFormat {
                    file,
                    found,
                    supported,
                }) => {
                    assert_eq!(file, target, "{which}");
                    assert_eq!(found, found_version);
                    assert_eq!(supported, found_version - 1);
                }
                Err(e) => panic!("{which}: expected UnsupportedFormat, got {e}"),
                Ok(_) => panic!("{which}: a newer format was opened"),
            }
        }
        assert_eq!(
            fs::read(&target).unwrap()[8],
            found_version as u8,
            "left as found"
        );
    }
}
