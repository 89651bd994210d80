//! The app's files are private to its owner (issue 18): under the usual umask 022 the
//! data directory is created 0700 and the users file (password hashes) 0600, and a
//! users file an earlier version left readable by others is made private on open.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sessiondb_axum_app::Users;
use sessiondb_axum_app::users::create_data_dir;

fn umask_022() {
    // SAFETY: umask only swaps the process's file mode creation mask. Every test here
    // sets the same value.
    unsafe {
        libc::umask(0o022);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_users_file_is_0600_in_a_0700_data_dir_under_umask_022() {
    umask_022();
    let root = tempfile::tempdir().unwrap();
    chmod(root.path(), 0o755);
    let data = root.path().join("data");
    create_data_dir(&data).unwrap();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(root.path()), 0o755, "an existing parent was changed");
    let path = data.join("users.json");
    let users = Users::open(&path).unwrap();
    users.sign_up("alice", "correct horse").unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&data.join("users.json.lock")), 0o600);
    assert!(!data.join("users.json.tmp").exists());

    // The file an earlier version wrote (0644), and a temporary file a crash left: the
    // first is made private on open, the second when the next sign-up reuses it.
    chmod(&path, 0o644);
    let tmp = data.join("users.json.tmp");
    std::fs::write(&tmp, b"half written").unwrap();
    chmod(&tmp, 0o644);
    let users = Users::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    users.sign_up("bob", "battery staple").unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(users.verify("alice", "correct horse"), Some("alice".into()));
}
