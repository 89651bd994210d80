//! Torn tails: what a crash leaves at the end of the active segment (garbage, a partial
//! record, preallocated zeros) is cut off and reported, and a cut at every byte of it
//! recovers a prefix of the log.

use std::collections::HashMap;
use std::fs;

use sessiondb::{Durability, Error, ManualClock, NewSession, Store, Token};

use crate::helpers::{
    HEADER_LEN, Rng, T0, append, build_prefixes, copy_dir, file_len, ids_of, last_segment, n_of,
    observe, open, opts, same_file_in, small_store, trial_dir,
};

fn assert_small_store_intact(store: &Store, sessions: &[(Token, u64)]) {
    for (t, n) in sessions {
        let s = store.peek(t).expect("session lost");
        assert_eq!(n_of(&s), Some(*n));
    }
    assert_eq!(store.stats().sessions, sessions.len());
    assert_eq!(ids_of(store, "alice").len(), 2);
}

#[test]
fn torn_tail_is_cut_off_and_reported() {
    let clock = ManualClock::new(T0);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Random garbage, and a partial frame: a length claiming 200 bytes, a checksum, a
    // record type, and only 50 of the 200 bytes.
    let mut partial = Vec::new();
    partial.extend_from_slice(&200u32.to_le_bytes());
    partial.extend_from_slice(&rng.next().to_le_bytes()[..4]);
    partial.push(2);
    partial.extend(rng.bytes(50));
    // A torn record followed by zeros is what a crash inside the preallocated part of
    // the active segment leaves: only the record's bytes count as torn.
    let mut torn_then_zeros = partial.clone();
    let torn = torn_then_zeros.len() as u64;
    torn_then_zeros.extend(vec![0u8; 8192]);
    // Zeros alone are preallocated space the writer had not reached: nothing was torn.
    for (tail, counted) in [
        (rng.bytes(37), 37),
        (partial.clone(), partial.len() as u64),
        (vec![0u8; 4096], 0),
        (torn_then_zeros, torn),
        (rng.bytes(1), 1),
    ] {
        let written = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sessions = small_store(written.path(), &clock, Some(dir.path()));
        let seg = last_segment(dir.path());
        let len = file_len(&seg);
        append(&seg, &tail);

        let store = open(dir.path(), opts(&clock, Durability::Sync));
        let report = store.recovery_report();
        assert_eq!(report.bytes_truncated, counted, "{report:?}");
        assert!(report.skipped.is_empty());
        assert_eq!(file_len(&seg), len, "the tail was cut off the file");
        assert_small_store_intact(&store, &sessions);
        // The store goes on writing after the cut.
        store.put(&sessions[0].0, "n", &777u64).unwrap();
        drop(store);

        let store = open(dir.path(), opts(&clock, Durability::Sync));
        assert_eq!(store.recovery_report().bytes_truncated, 0);
        assert_eq!(n_of(&store.peek(&sessions[0].0).unwrap()), Some(777));
    }
}

#[test]
fn a_crash_image_ends_in_preallocated_zeros_that_recovery_cuts_and_a_close_leaves_none() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    let mut tokens = Vec::new();
    for i in 0..50u64 {
        let (t, _) = store.create(NewSession::for_user("alice")).unwrap();
        store.put(&t, "n", &i).unwrap();
        tokens.push(t);
    }
    // What a crash now leaves: every record acknowledged, and the active segment
    // zero-filled past them.
    let image = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), image.path());
    let seg = same_file_in(image.path(), &last_segment(dir.path()));
    let bytes = fs::read(&seg).unwrap();
    let zeros = bytes.iter().rev().take_while(|&&b| b == 0).count();
    assert!(
        zeros >= 4096,
        "the active segment is preallocated ({} bytes, {zeros} trailing zeros)",
        bytes.len()
    );
    let recovered = open(image.path(), opts(&clock, Durability::Sync));
    let report = recovered.recovery_report();
    assert_eq!(
        report.bytes_truncated, 0,
        "zeros are not a torn tail: {report:?}"
    );
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(n_of(&recovered.peek(t).unwrap()), Some(i as u64));
    }
    let kept = file_len(&seg);
    assert!(kept < bytes.len() as u64, "the zeros were cut off");
    drop(recovered);

    // A close cuts them itself: the segment is exactly its records.
    let live_seg = last_segment(dir.path());
    drop(store);
    assert_eq!(file_len(&live_seg), kept);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    assert_eq!(store.recovery_report().bytes_truncated, 0);
    assert_eq!(store.sessions_of("alice").unwrap().len(), 50);
}

#[test]
fn a_cut_at_every_byte_of_a_crashed_stores_active_segment_is_a_torn_tail_of_a_prefix() {
    let p = build_prefixes();
    let seg = last_segment(p.dir.path());
    let full = fs::read(&seg).unwrap();
    let trial = trial_dir();
    let mut last_prefix = 0;
    let mut plain = (0, 0);
    // Each cut twice: as a file that ends there (an append that extended the file),
    // and followed by zeros (a crash inside the zero-filled, preallocated part of the
    // active segment). Both must recover the same prefix.
    // (The writer zero-fills only after the header is durable, so a cut inside the
    // header never has zeros after it.)
    let cuts = (0..=full.len()).flat_map(|c| [(c, 0), (c, 4096 - c % 4096)]);
    for (cut, zeros) in cuts.filter(|&(c, z)| z == 0 || c >= HEADER_LEN) {
        copy_dir(p.dir.path(), trial.path());
        let copy = same_file_in(trial.path(), &seg);
        let mut bytes = full[..cut].to_vec();
        bytes.resize(cut + zeros, 0);
        fs::write(&copy, &bytes).unwrap();
        let opened = Store::open_with(trial.path(), opts(&p.clock, Durability::Sync));
        if cut < HEADER_LEN {
            // The manifest names the segment active only once its header is durable:
            // no crash leaves it shorter.
            match opened {
                Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, copy),
                other => panic!("cut at {cut}, inside the active segment's header: {other:?}"),
            }
            continue;
        }
        let store =
            opened.unwrap_or_else(|e| panic!("cut at {cut} of {}: open failed: {e}", full.len()));
        store.verify().unwrap();
        let k = p.prefix_of(&store).unwrap_or_else(|| {
            panic!(
                "cut at {cut}: the recovered state is no prefix of the log: {:?}",
                observe(&store, &p.tokens)
            )
        });
        // (A zero-padded file may hold more than the plain cut, never less.)
        assert!(
            k >= last_prefix,
            "cut at {cut} (+{zeros} zeros): a longer file recovered less ({k} < {last_prefix} operations)"
        );
        let truncated = store.recovery_report().bytes_truncated;
        if cut >= HEADER_LEN {
            // The file keeps exactly the recovered records; what was cut is counted,
            // except zeros at its end (preallocated space, indistinguishable from the
            // zero bytes a torn record may end in).
            // (A segment left with no record is dropped: it kept its header only.)
            let kept = if copy.exists() {
                file_len(&copy) as usize
            } else {
                HEADER_LEN
            };
            let counted = kept + truncated as usize;
            assert!(
                counted <= bytes.len() && bytes[counted..].iter().all(|&b| b == 0),
                "cut at {cut} (+{zeros} zeros): kept {kept} bytes, {truncated} counted as torn"
            );
        }
        if zeros == 0 {
            plain = (k, truncated);
            last_prefix = k;
        } else if full.get(cut) != Some(&0) {
            // (Unless the file itself had a zero there: then the padding completes
            // more of it.)
            assert_eq!(
                (k, truncated),
                plain,
                "cut at {cut}: zeros after it changed what recovered"
            );
        }
        let report = store.recovery_report();
        assert!(
            report.bytes_truncated <= cut as u64,
            "cut at {cut} (+{zeros} zeros): {report:?}"
        );
        if cut == full.len() {
            assert_eq!(k, p.states.len() - 1, "the whole file recovers everything");
            assert_eq!(report.bytes_truncated, 0);
        }
        if cut == HEADER_LEN {
            assert_eq!(k, 0);
        }
        drop(store);
        if cut % 16 == 0 || cut == full.len() {
            let store = open(trial.path(), opts(&p.clock, Durability::Sync));
            assert_eq!(store.recovery_report().bytes_truncated, 0, "cut at {cut}");
            assert_eq!(p.prefix_of(&store), Some(k), "cut at {cut}: second reopen");
        }
    }
}

// Keep the helper types honest about what they compare.
#[test]
fn observed_state_distinguishes_every_prefix() {
    let p = build_prefixes();
    let mut distinct: HashMap<String, usize> = HashMap::new();
    for (k, s) in p.states.iter().enumerate() {
        if let Some(prev) = distinct.insert(format!("{s:?}"), k) {
            panic!("operations {prev} and {k} look the same; the prefix check would be weak");
        }
    }
}
