//! A store is private to its owner (issue 18, defect 4): under the usual umask 022 a
//! new store directory is 0700 and every file in it 0600, on the log and on sled, and an
//! existing store that others can read (as earlier versions left them: 0755 / 0644) is
//! made private on open, leaving files that are not sessiondb's alone.
//!
//! Every test here sets the umask to 022 first (the same value in all, so tests running
//! at once do not disturb each other): without that a stricter umask in the environment
//! would let the modes pass whatever sessiondb does.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[cfg(feature = "sled")]
use sessiondb::BackendKind;
use sessiondb::{NewSession, Options, Store};

fn umask_022() {
    // SAFETY: umask only swaps the process's file mode creation mask.
    unsafe {
        libc::umask(0o022);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every directory and file under `dir` (not `dir` itself), depth first.
fn tree(dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let is_dir = std::fs::symlink_metadata(&p).unwrap().is_dir();
        out.push((p.clone(), is_dir));
        if is_dir {
            out.extend(tree(&p));
        }
    }
    out
}

/// The directory is 0700 and everything in it 0700 (directories) or 0600 (files).
fn assert_private(dir: &Path) {
    let all = tree(dir);
    assert!(!all.is_empty(), "nothing was written in {}", dir.display());
    let wrong: Vec<String> = std::iter::once((dir.to_path_buf(), true))
        .chain(all)
        .filter_map(|(p, is_dir)| {
            let (got, want) = (mode(&p), if is_dir { 0o700 } else { 0o600 });
            (got != want).then(|| format!("{} is {got:04o}, not {want:04o}", p.display()))
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Opens a store in `dir`, writes, compacts, writes again and closes it.
fn use_store(dir: &Path, opts: Options) {
    let store = Store::open_with(dir, opts.reaper_interval(None)).unwrap();
    let (token, _) = store
        .create(NewSession::for_user("alice").label("Firefox"))
        .unwrap();
    store.put(&token, "csrf", &"a secret".to_owned()).unwrap();
    store.compact().unwrap();
    let token = store.login(&token, "alice").unwrap();
    store.put(&token, "cart", &vec![1u32, 2, 3]).unwrap();
    store.create(NewSession::anonymous()).unwrap();
    store.close().unwrap();
}

/// A parent that exists (made 0755 here) stays as it was; the store directory and the
/// missing parent between them are created 0700.
fn fresh_store_is_private(opts: Options) {
    umask_022();
    let root = tempfile::tempdir().unwrap();
    chmod(root.path(), 0o755);
    let dir = root.path().join("data").join("sessions");
    use_store(&dir, opts);
    assert_private(&dir);
    assert_eq!(mode(root.path()), 0o755, "an existing parent was changed");
    assert_eq!(mode(&root.path().join("data")), 0o700, "a missing parent");
}

#[test]
fn a_new_log_store_is_0700_with_0600_files_under_umask_022() {
    fresh_store_is_private(Options::default());
}

#[cfg(feature = "sled")]
#[test]
fn a_new_sled_store_is_0700_with_0600_files_under_umask_022() {
    fresh_store_is_private(Options::default().backend(BackendKind::Sled));
}

/// A store as an earlier version left it: directory 0755, files 0644 (directories
/// inside 0755), plus a file and a directory that are not sessiondb's. Opening makes
/// sessiondb's private and leaves the others alone.
fn existing_store_is_tightened(opts: Options) {
    umask_022();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sessions");
    use_store(&dir, opts.clone());
    chmod(&dir, 0o755);
    for (p, is_dir) in tree(&dir) {
        chmod(&p, if is_dir { 0o755 } else { 0o644 });
    }
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, b"not sessiondb's").unwrap();
    chmod(&notes, 0o644);
    let other = dir.join("backups");
    std::fs::create_dir(&other).unwrap();
    chmod(&other, 0o755);

    let store = Store::open_with(&dir, opts.reaper_interval(None)).unwrap();
    assert_eq!(store.len(), 2);
    store.close().unwrap();

    assert_eq!(
        mode(&notes),
        0o644,
        "a file that is not sessiondb's was changed"
    );
    assert_eq!(
        mode(&other),
        0o755,
        "a directory that is not sessiondb's was changed"
    );
    std::fs::remove_file(&notes).unwrap();
    std::fs::remove_dir(&other).unwrap();
    assert_private(&dir);
}

#[test]
fn an_existing_log_store_open_to_others_is_made_private_on_open() {
    existing_store_is_tightened(Options::default());
}

#[cfg(feature = "sled")]
#[test]
fn an_existing_sled_store_open_to_others_is_made_private_on_open() {
    existing_store_is_tightened(Options::default().backend(BackendKind::Sled));
}
