//! Who may read a store: the permissions of everything sessiondb puts on disk.
//!
//! A store holds session data (CSRF tokens, whatever an application keeps in a
//! session), so only its owner may reach it, whatever the process's umask:
//!
//! - a directory sessiondb creates is created 0700 ([`create_private_dir`]); parents
//!   that already exist are left as they are;
//! - a file sessiondb creates is created 0600 ([`private_file`]: every `OpenOptions`
//!   that may create a file in a store directory starts here, the MANIFEST's too);
//! - opening an existing store directory removes group and other access from it and
//!   from every file and directory sessiondb owns in it ([`secure_store_dir`]), so a
//!   store written by an earlier version (0755 / 0644 under umask 022) is made private
//!   rather than refused. If that fails (the process is not the owner), opening fails
//!   with [`Error::Permissions`]. Files that are not sessiondb's are left alone.
//!
//! sled (feature `sled`) creates its files with the default modes: they are restricted
//! after sled opens ([`secure_tree`]), and files sled adds later sit inside directories
//! only the owner can enter.
//!
//! On targets other than Unix there are no mode bits: files and directories are created
//! plainly and nothing is checked.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

#[cfg(unix)]
use crate::error::Error;
use crate::error::Result;

/// The mode of a directory sessiondb creates.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// The mode of a file sessiondb creates.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// `OpenOptions` that create a file readable and writable by its owner only (0600,
/// whatever the umask). The mode applies only to a file the call creates: an existing
/// file keeps its mode (an existing store's files are restricted on open, by
/// [`secure_store_dir`]).
pub(crate) fn private_file() -> OpenOptions {
    #[allow(unused_mut)]
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, FILE_MODE);
    o
}

/// Creates `dir` and whatever parents are missing, each 0700 (whatever the umask);
/// directories that already exist are left as they are.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, DIR_MODE);
    b.create(dir)
}

/// Whether permission bits `mode` grant the group or others any access, so that
/// [`secure_store_dir`] must take it away.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) fn too_open(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// `mode` with the group's and others' access (and the set-id and sticky bits)
/// removed: what `chmod go-rwx` leaves, so 0755 becomes 0700 and 0644 becomes 0600.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) fn owner_only(mode: u32) -> u32 {
    mode & 0o700
}

/// Makes the existing store directory `dir` and every entry of it that `is_ours` names
/// private to the owner (see the module doc). Symbolic links inside are not followed.
///
/// # Errors
/// [`Error::Permissions`] if a mode that grants others access cannot be changed;
/// [`Error::Io`] if the directory cannot be read.
pub(crate) fn secure_store_dir(dir: &Path, is_ours: impl Fn(&str) -> bool) -> Result<()> {
    #[cfg(unix)]
    {
        // The directory itself is followed if it is a link: it is what the caller named.
        let meta = std::fs::metadata(dir)
            .map_err(|e| Error::io(format!("reading store directory {}", dir.display()), e))?;
        restrict(dir, &meta)?;
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("listing store directory {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
            if entry.file_name().to_str().is_some_and(&is_ours) {
                secure_tree(&entry.path())?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Makes `path` private to the owner, and if it is a directory, everything under it:
/// for a tree sessiondb owns whole (sled's directory). Symbolic links are left alone; a
/// path that is gone (removed meanwhile) is skipped.
///
/// # Errors
/// As [`secure_store_dir`].
pub(crate) fn secure_tree(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        restrict(path, &meta)?;
        if meta.is_dir() {
            let entries = match std::fs::read_dir(path) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io(format!("listing {}", path.display()), e)),
            };
            for entry in entries {
                let entry =
                    entry.map_err(|e| Error::io(format!("listing {}", path.display()), e))?;
                secure_tree(&entry.path())?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Takes the group's and others' access away from `path` (a file or directory, whose
/// metadata is `meta`), if it has any.
#[cfg(unix)]
fn restrict(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if !too_open(mode) {
        return Ok(());
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(owner_only(mode))) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Permissions {
            path: path.to_path_buf(),
            mode,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_open_is_any_group_or_other_bit() {
        for mode in [0o700, 0o600, 0o400, 0o000, 0o4700, 0o1700] {
            assert!(!too_open(mode), "{mode:o}");
        }
        for mode in [0o755, 0o644, 0o701, 0o710, 0o604, 0o640, 0o777, 0o2770] {
            assert!(too_open(mode), "{mode:o}");
        }
    }

    #[test]
    fn owner_only_is_chmod_go_rwx() {
        assert_eq!(owner_only(0o755), 0o700);
        assert_eq!(owner_only(0o644), 0o600);
        assert_eq!(owner_only(0o2775), 0o700);
        assert_eq!(owner_only(0o640), 0o600);
        assert_eq!(owner_only(0o444), 0o400);
    }

    /// The refusal itself needs a store owned by another user: tests/cli.rs runs the
    /// tool as `nobody` on one (when run as root).
    #[test]
    fn the_permissions_error_says_what_to_run() {
        let e = crate::error::Error::Permissions {
            path: "/srv/sessions".into(),
            mode: 0o755,
            reason: "Operation not permitted (os error 1)".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("/srv/sessions"), "{msg}");
        assert!(msg.contains("0755"), "{msg}");
        assert!(msg.contains("chmod go-rwx /srv/sessions"), "{msg}");
    }
}
