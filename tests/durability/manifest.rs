//! What the manifest records: where each file ends and which files there are, so a
//! cut at a record boundary, a deleted or emptied file, or a file it does not name is
//! caught; and a store written before it (format 1) opens and is upgraded.

use std::fs;
use std::path::{Path, PathBuf};

use sessiondb::{
    Device, Durability, Error, ManualClock, NewSession, SignIn, Store, Timestamp, Token,
};

use crate::helpers::{
    T0, bases, copy_dir, crash_image, crc32, frame_boundaries, last_segment, n_of, open, opts,
    same_file_in, segments, trial_dir,
};

/// A store with a base, sealed segments after it and an active segment (Sync, 4 KiB
/// segments): the directory after a clean close, a crash image of it taken just before
/// the close, and every session's token and last "n".
struct Layered {
    closed: tempfile::TempDir,
    crashed: tempfile::TempDir,
    sessions: Vec<(Token, u64)>,
}

fn layered_store(clock: &ManualClock) -> Layered {
    let closed = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let store = open(
        closed.path(),
        opts(clock, Durability::Sync).segment_bytes(4096),
    );
    let mut sessions = Vec::new();
    for i in 0..40u64 {
        if i == 12 {
            store.compact().unwrap();
        }
        let (t, _) = store.create(NewSession::for_user("alice")).unwrap();
        store.put(&t, "pad", &"z".repeat(200)).unwrap();
        store.put(&t, "n", &i).unwrap();
        sessions.push((t, i));
    }
    crash_image(closed.path(), crashed.path());
    drop(store);
    for dir in [closed.path(), crashed.path()] {
        assert_eq!(bases(dir).len(), 1);
        assert!(segments(dir).len() >= 3, "{:?}", segments(dir));
    }
    Layered {
        closed,
        crashed,
        sessions,
    }
}

/// Opens `dir` expecting `Error::Corrupt` naming `file`.
fn assert_corrupt_naming(dir: &Path, clock: &ManualClock, file: &Path, what: &str) {
    match Store::open_with(dir, opts(clock, Durability::Sync)) {
        Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, file, "{what}"),
        Err(e) => panic!(
            "{what}: expected Corrupt naming {}, got {e}",
            file.display()
        ),
        Ok(s) => panic!(
            "{what}: opened with {} of 40 sessions, the damage unnoticed: {:?}",
            s.len(),
            s.recovery_report()
        ),
    }
}

/// Where a file ends is recorded, not inferred: a base or sealed segment cut exactly at
/// a record boundary reads as whole records, and only the manifest's length for it
/// tells that some are gone. After a clean close every file is sealed, the last
/// segment too; after a crash only the active segment may end early (a torn tail).
#[test]
fn a_cut_at_any_record_boundary_of_any_file_is_corruption_but_a_crashed_active_tail() {
    let clock = ManualClock::new(T0);
    let l = layered_store(&clock);
    let trial = trial_dir();
    let mut cuts = 0;
    for (image, crashed) in [(l.closed.path(), false), (l.crashed.path(), true)] {
        let active = crashed.then(|| last_segment(image));
        for file in bases(image).into_iter().chain(segments(image)) {
            let bytes = fs::read(&file).unwrap();
            let boundaries = frame_boundaries(&bytes);
            assert!(boundaries.len() > 3, "{}", file.display());
            for &cut in boundaries.iter().filter(|&&b| b < bytes.len()) {
                let what = format!(
                    "{} cut at {cut} of {} ({})",
                    file.display(),
                    bytes.len(),
                    if crashed { "crash image" } else { "closed" }
                );
                copy_dir(image, trial.path());
                let copy = same_file_in(trial.path(), &file);
                fs::write(&copy, &bytes[..cut]).unwrap();
                cuts += 1;
                if active.as_ref() == Some(&file) {
                    let store = open(trial.path(), opts(&clock, Durability::Sync));
                    // The sessions written before the active segment are all there.
                    assert!(store.len() >= 12, "{what}: {}", store.len());
                    continue;
                }
                assert_corrupt_naming(trial.path(), &clock, &copy, &what);
                // Salvage reads what is there, says what is missing, and leaves a
                // store that opens cleanly.
                let store = open(trial.path(), opts(&clock, Durability::Sync).salvage(true));
                let report = store.recovery_report();
                assert!(
                    report.skipped.iter().any(|r| r.file == copy),
                    "{what}: {report:?}"
                );
                drop(store);
                drop(open(trial.path(), opts(&clock, Durability::Sync)));
            }
        }
    }
    assert!(cuts > 50, "only {cuts} cuts");
    // Undamaged, both open with everything.
    for image in [l.closed.path(), l.crashed.path()] {
        copy_dir(image, trial.path());
        let store = open(trial.path(), opts(&clock, Durability::Sync));
        for (t, n) in &l.sessions {
            assert_eq!(n_of(&store.peek(t).expect("session lost")), Some(*n));
        }
    }
}

/// The set of files is recorded too: a missing or emptied base or segment — the newest
/// one included, which alone used to read as a shorter log — or a lost manifest is
/// `Error::Corrupt` naming it, after a clean close and after a crash alike.
#[test]
fn a_deleted_or_emptied_log_file_or_manifest_is_corruption_naming_it() {
    let clock = ManualClock::new(T0);
    let l = layered_store(&clock);
    let trial = trial_dir();
    for (image, kind) in [
        (l.closed.path(), "closed"),
        (l.crashed.path(), "crash image"),
    ] {
        let files: Vec<PathBuf> = bases(image)
            .into_iter()
            .chain(segments(image))
            .chain([image.join("MANIFEST")])
            .collect();
        for file in &files {
            for emptied in [false, true] {
                let what = format!(
                    "{} {} ({kind})",
                    file.display(),
                    if emptied { "emptied" } else { "deleted" }
                );
                copy_dir(image, trial.path());
                let copy = same_file_in(trial.path(), file);
                if emptied {
                    fs::write(&copy, b"").unwrap();
                } else {
                    fs::remove_file(&copy).unwrap();
                }
                assert_corrupt_naming(trial.path(), &clock, &copy, &what);
                // A refused open changes nothing: refused again.
                assert_corrupt_naming(trial.path(), &clock, &copy, &what);
                if !emptied {
                    // Salvage opens what is left and says what was missing.
                    let store = open(trial.path(), opts(&clock, Durability::Sync).salvage(true));
                    let report = store.recovery_report();
                    assert!(!report.skipped.is_empty(), "{what}: {report:?}");
                    drop(store);
                    drop(open(trial.path(), opts(&clock, Durability::Sync)));
                }
            }
        }
    }
}

/// A valid segment header for `seq` (version 2), as `src/backend/log/format.rs` lays it out.
fn segment_header(seq: u64) -> Vec<u8> {
    let mut h = b"SESSNDB\0".to_vec();
    h.extend_from_slice(&2u32.to_le_bytes());
    h.push(0);
    h.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// What a crash leaves between a file's creation and the manifest that names it — a
/// segment after the active one holding only its header (a roll), a base the manifest
/// does not name yet (a compaction) — is removed on open; a file the manifest does not
/// name that holds records is corruption, never silently read or dropped.
#[test]
fn a_file_the_manifest_does_not_name_is_removed_if_empty_and_corruption_if_not() {
    let clock = ManualClock::new(T0);
    let l = layered_store(&clock);
    let trial = trial_dir();
    for image in [l.closed.path(), l.crashed.path()] {
        let last = segments(image).len() as u64;
        let next_seq = u64::from_str_radix(
            &last_segment(image).file_name().unwrap().to_str().unwrap()[4..20],
            16,
        )
        .unwrap()
            + 1;
        assert!(next_seq > last);
        let stray_seg = trial.path().join(format!("seg-{next_seq:016x}.log"));
        let stray_base = trial.path().join(format!("base-{:016x}.log", next_seq + 3));

        copy_dir(image, trial.path());
        fs::write(&stray_seg, segment_header(next_seq)).unwrap();
        fs::copy(&bases(image)[0], &stray_base).unwrap();
        let store = open(trial.path(), opts(&clock, Durability::Sync));
        for (t, n) in &l.sessions {
            assert_eq!(n_of(&store.peek(t).expect("session lost")), Some(*n));
        }
        assert!(
            !stray_base.exists(),
            "an unfinished compaction's base stayed"
        );
        drop(store);
        assert!(!stray_seg.exists(), "an interrupted roll's segment stayed");

        copy_dir(image, trial.path());
        fs::copy(&segments(image)[0], &stray_seg).unwrap();
        assert_corrupt_naming(
            trial.path(),
            &clock,
            &stray_seg,
            "a stray segment of records",
        );
    }
}

/// A store written before the manifest existed (`tests/fixtures/v1`) opens with every
/// session, is given a manifest, and from then on is checked like any other.
#[test]
fn a_store_written_by_format_1_opens_with_everything_and_is_upgraded() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let expected = fs::read_to_string(fixture.join("EXPECTED.tsv")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture.join("store"), dir.path());
    assert!(!dir.path().join("MANIFEST").exists());
    let clock = ManualClock::new(Timestamp(T0.0 + 60_000));
    let check = |store: &Store| {
        let mut rows = 0;
        for line in expected.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split('\t').collect();
            let token = Token::parse(f[0]).unwrap();
            let found = store.peek(&token);
            match f[1] {
                "live" => {
                    let s = found.unwrap_or_else(|| panic!("{line}: lost"));
                    let user = s.user().map_or("-".to_owned(), |u| u.as_str().to_owned());
                    assert_eq!(user, f[2], "{line}");
                    let n = n_of(&s).map_or("-".to_owned(), |n| n.to_string());
                    assert_eq!(n, f[3], "{line}");
                }
                _ => assert!(found.is_none(), "{line}: ended, yet found"),
            }
            rows += 1;
        }
        assert_eq!(rows, 53);
        store.verify().unwrap();
    };
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    check(&store);
    drop(store);
    assert!(dir.path().join("MANIFEST").exists(), "not upgraded");
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    check(&store);
    drop(store);
    // Upgraded: a sealed file cut at a record boundary is now caught.
    let first = segments(dir.path())[0].clone();
    let bytes = fs::read(&first).unwrap();
    let boundaries = frame_boundaries(&bytes);
    fs::write(&first, &bytes[..boundaries[boundaries.len() - 2]]).unwrap();
    assert_corrupt_naming(dir.path(), &clock, &first, "upgraded store, sealed cut");
}

/// Checks every row of a fixture's `EXPECTED.tsv` against `store` (a token gone, or
/// live with its id, user, label, `n`, times and version as listed); returns how many
/// rows and how many of them live.
fn check_expected(store: &Store, expected: &str) -> (usize, usize) {
    let (mut rows, mut live) = (0, 0);
    for line in expected.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 11, "{line}");
        let token = Token::parse(f[0]).unwrap();
        let found = store.peek(&token);
        if f[1] == "gone" {
            assert!(found.is_none(), "{line}: ended, yet found");
        } else {
            let s = found.unwrap_or_else(|| panic!("{line}: lost"));
            let opt = |o: Option<String>| o.unwrap_or_else(|| "-".to_owned());
            let got = [
                s.id().to_string(),
                opt(s.user().map(|u| u.to_string())),
                opt(s.label().map(str::to_owned)),
                opt(n_of(&s).map(|n| n.to_string())),
                s.created_at().as_millis().to_string(),
                opt(s.authenticated_at().map(|a| a.as_millis().to_string())),
                s.last_seen().as_millis().to_string(),
                s.absolute_deadline().as_millis().to_string(),
                s.version().to_string(),
            ];
            assert_eq!(got.as_slice(), &f[2..], "{line}");
            live += 1;
        }
        rows += 1;
    }
    (rows, live)
}

/// A store written by format 2 (`tests/fixtures/v2`, before not-before records) opens
/// with every session and every field as it was written, and reopens the same after
/// this build has written to it.
#[test]
fn a_store_written_by_format_2_opens_with_everything() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2");
    let expected = fs::read_to_string(fixture.join("EXPECTED.tsv")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture.join("store"), dir.path());
    let clock = ManualClock::new(Timestamp(T0.0 + 11_000));
    let check = |store: &Store| {
        let (rows, live) = check_expected(store, &expected);
        assert_eq!((rows, live), (43, 23));
        store.verify().unwrap();
    };
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    check(&store);
    // Once this build has it open, the manifest says the newest format (4): a build of
    // format 2, which cannot read a not-before record, refuses the store as newer than
    // itself instead of finding an unknown record in it and calling it damaged.
    let manifest = fs::read(dir.path().join("MANIFEST")).unwrap();
    assert_eq!(manifest[8..12], 4u32.to_le_bytes());
    // This build writes to it, then it opens again with all of the above.
    let (t, _) = store.create(NewSession::for_user("user0")).unwrap();
    drop(store);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    check(&store);
    assert!(store.peek(&t).is_some());
}

/// A store written by format 3 (`tests/fixtures/v3`, with not-before records in its
/// base and in a segment) opens with every session, every field and every user's
/// not-before time as it was written, and reopens the same after this build has
/// written to it.
#[test]
fn a_store_written_by_format_3_opens_with_everything() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3");
    let expected = fs::read_to_string(fixture.join("EXPECTED.tsv")).unwrap();
    let not_before: Vec<(String, u64)> = fs::read_to_string(fixture.join("NOT_BEFORE.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (user, at) = l.split_once('\t').unwrap();
            (user.to_owned(), at.parse().unwrap())
        })
        .collect();
    assert_eq!(not_before.len(), 2);
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture.join("store"), dir.path());
    let clock = ManualClock::new(Timestamp(T0.0 + 11_000));
    let check = |store: &Store| {
        let (rows, live) = check_expected(store, &expected);
        assert_eq!((rows, live), (43, 20));
        store.verify().unwrap();
        let times: Vec<(String, u64)> = store
            .not_before_times()
            .into_iter()
            .map(|(u, at)| (u.to_string(), at.as_millis()))
            .collect();
        assert_eq!(times, not_before);
    };
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    check(&store);
    // Once this build has it open, the manifest says format 4: a build of format 3,
    // which cannot read a sign-in or device record, refuses the store as newer.
    let manifest = fs::read(dir.path().join("MANIFEST")).unwrap();
    assert_eq!(manifest[8..12], 4u32.to_le_bytes());
    // This build writes to it (a session with factors and a device: the new
    // records), then it opens again with all of the above.
    let (t, _) = store
        .create(
            NewSession::for_user("user0")
                .signed_in(SignIn::with("password"))
                .device(Device::new().user_agent("Firefox")),
        )
        .unwrap();
    drop(store);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    check(&store);
    let s = store.peek(&t).unwrap();
    assert_eq!((s.level(), s.user_agent()), (1, Some("Firefox")));
}

/// A sealed file is synced to its length before the manifest records it and never
/// appended to after, so bytes past that length are not part of the log — they are
/// what a cut whose fsync failed leaves on disk while the page cache, and so the
/// manifest, saw the cut. Recovery cuts them off again (counting them unless they are
/// zeros) and loses nothing.
#[test]
fn bytes_past_a_sealed_files_recorded_length_are_cut_off_and_nothing_is_lost() {
    let clock = ManualClock::new(T0);
    let layered = layered_store(&clock);
    let dir = layered.closed.path();
    let segs = segments(dir);
    let (sealed, base) = (&segs[0], &bases(dir)[0]);
    let (seg_len, base_len) = (
        fs::metadata(sealed).unwrap().len(),
        fs::metadata(base).unwrap().len(),
    );
    // Records never acknowledged past a segment's end, zeros past the base's.
    let mut junk = fs::read(sealed).unwrap();
    junk.extend_from_slice(&fs::read(sealed).unwrap()[25..125]);
    fs::write(sealed, &junk).unwrap();
    let mut zeros = fs::read(base).unwrap();
    zeros.extend_from_slice(&[0u8; 8192]);
    fs::write(base, &zeros).unwrap();

    let store = open(dir, opts(&clock, Durability::Sync));
    assert_eq!(store.recovery_report().bytes_truncated, 100);
    assert_eq!(store.len(), layered.sessions.len());
    for (t, n) in &layered.sessions {
        assert_eq!(n_of(&store.get(t).expect("live")), Some(*n));
    }
    drop(store);
    assert_eq!(fs::metadata(sealed).unwrap().len(), seg_len);
    assert_eq!(fs::metadata(base).unwrap().len(), base_len);
}
