//! The app's accounts: usernames and argon2id password hashes, kept in memory and in
//! one JSON file (`users.json` in the data directory), rewritten atomically on every
//! sign-up (write a temporary file, fsync, rename, fsync the directory). Only the
//! owner may read it (mode 0600, whatever the umask; a file an earlier version left
//! readable by others is restricted on open), in a data directory created 0700.
//!
//! Passwords are never stored: each is hashed with argon2id (the `argon2` crate's
//! default cost, a fresh random salt) into a PHC string (`$argon2id$v=19$m=...`), and a
//! login verifies against it (argon2 compares the hashes in constant time). A login
//! for an unknown username verifies against a dummy hash so that it costs the same time
//! as a wrong password: the response does not tell which usernames exist.
//!
//! Sessions are not kept here: they live in the sessiondb store.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password, in bytes (argon2 takes any length; this bounds the work
/// a request can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest accepted username, in characters.
pub const MAX_USERNAME_CHARS: usize = 32;

/// Why a sign-up or a users file was refused.
#[derive(Debug)]
pub enum UsersError {
    /// The username is empty, too long, or has characters other than ASCII letters,
    /// digits, `.`, `_` and `-`.
    BadUsername,
    /// The password is shorter than [`MIN_PASSWORD_CHARS`] or longer than
    /// [`MAX_PASSWORD_BYTES`].
    BadPassword,
    /// Someone already signed up with that username.
    Taken,
    /// No account has that username.
    Unknown,
    /// The users file could not be read or written.
    Io(io::Error),
    /// The users file is not a users file of this app.
    Corrupt(String),
    /// Hashing failed (argon2 or the OS random generator).
    Hash(String),
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsersError::BadUsername => write!(
                f,
                "a username is 1 to {MAX_USERNAME_CHARS} letters, digits, '.', '_' or '-'"
            ),
            UsersError::BadPassword => write!(
                f,
                "a password is at least {MIN_PASSWORD_CHARS} characters (and at most {MAX_PASSWORD_BYTES} bytes)"
            ),
            UsersError::Taken => f.write_str("that username is taken"),
            UsersError::Unknown => f.write_str("no account has that username"),
            UsersError::Io(e) => write!(f, "users file: {e}"),
            UsersError::Corrupt(why) => write!(f, "users file is damaged: {why}"),
            UsersError::Hash(why) => write!(f, "password hashing failed: {why}"),
        }
    }
}

impl std::error::Error for UsersError {}

impl From<io::Error> for UsersError {
    fn from(e: io::Error) -> Self {
        UsersError::Io(e)
    }
}

/// The users file's format.
#[derive(Serialize, Deserialize, Default)]
struct UsersFile {
    /// Format version, 1.
    version: u32,
    /// Username (lowercase) → argon2id PHC string.
    users: BTreeMap<String, String>,
}

const FORMAT_VERSION: u32 = 1;

/// The accounts, loaded from and saved to one JSON file. Several processes of the app
/// may share the file (sessions on Redis or PostgreSQL, one data directory): a lookup
/// re-reads the file when it changed, and a sign-up holds an exclusive lock on
/// `users.json.lock` while it re-reads, checks and writes, so two processes never lose
/// each other's sign-ups.
pub struct Users {
    path: PathBuf,
    loaded: Mutex<Loaded>,
    /// Verified against when the username is unknown, so that costs as much as a wrong
    /// password.
    dummy: String,
}

/// The accounts as last read, and the file's modification time and length then.
struct Loaded {
    hashes: BTreeMap<String, String>,
    stamp: Option<(SystemTime, u64)>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("path", &self.path)
            .field("count", &self.loaded.lock().hashes.len())
            .finish_non_exhaustive()
    }
}

/// The file's modification time and length, `None` if it does not exist.
fn stamp(path: &Path) -> Result<Option<(SystemTime, u64)>, UsersError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some((m.modified()?, m.len()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The accounts in the file at `path` (none if it does not exist), checked.
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, UsersError> {
    match fs::read(path) {
        Ok(bytes) => {
            let file: UsersFile =
                serde_json::from_slice(&bytes).map_err(|e| UsersError::Corrupt(e.to_string()))?;
            if file.version != FORMAT_VERSION {
                return Err(UsersError::Corrupt(format!(
                    "format version {} (this app reads {FORMAT_VERSION})",
                    file.version
                )));
            }
            for (name, hash) in &file.users {
                PasswordHash::new(hash).map_err(|e| {
                    UsersError::Corrupt(format!("the hash of {name:?} is not a PHC string: {e}"))
                })?;
            }
            Ok(file.users)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

impl Users {
    /// Opens the users file at `path`, or starts an empty one there (written at the
    /// first sign-up).
    ///
    /// # Errors
    /// [`UsersError::Io`] if it exists but cannot be read, or others may read it and
    /// its mode cannot be changed (this process is not its owner);
    /// [`UsersError::Corrupt`] if it is not valid JSON of this format or holds a hash
    /// that is not a PHC string.
    pub fn open(path: impl Into<PathBuf>) -> Result<Users, UsersError> {
        let path = path.into();
        restrict(&path)?;
        let stamp = stamp(&path)?;
        let hashes = read_file(&path)?;
        let mut dummy_password = [0u8; 16];
        getrandom::fill(&mut dummy_password).map_err(|e| UsersError::Hash(e.to_string()))?;
        let dummy = hash_password(&dummy_password)?;
        Ok(Users {
            path,
            loaded: Mutex::new(Loaded { hashes, stamp }),
            dummy,
        })
    }

    /// Re-reads the file if another process changed it since it was last read.
    fn refresh(&self, loaded: &mut Loaded) -> Result<(), UsersError> {
        let now = stamp(&self.path)?;
        if now != loaded.stamp {
            loaded.hashes = read_file(&self.path)?;
            loaded.stamp = now;
        }
        Ok(())
    }

    /// An exclusive lock shared with the other processes using this file, released
    /// when the returned file is dropped.
    fn lock_file(&self) -> Result<fs::File, UsersError> {
        let f = private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("json.lock"))?;
        f.lock()?;
        Ok(f)
    }

    /// The file the accounts are kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many accounts there are (as last read).
    pub fn len(&self) -> usize {
        self.loaded.lock().hashes.len()
    }

    /// Whether there are no accounts yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates an account and saves the file before returning. Returns the username as
    /// stored (lowercase): the user id to bind to sessions.
    ///
    /// Slow on purpose (one argon2 hash): call it off the async runtime's threads.
    ///
    /// # Errors
    /// [`UsersError::BadUsername`], [`UsersError::BadPassword`], [`UsersError::Taken`]
    /// (also by another process sharing the file); [`UsersError::Io`] if the file
    /// cannot be read or written (the account is then not created).
    pub fn sign_up(&self, username: &str, password: &str) -> Result<String, UsersError> {
        let name = normalize_username(username).ok_or(UsersError::BadUsername)?;
        if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
            return Err(UsersError::BadPassword);
        }
        {
            let mut loaded = self.loaded.lock();
            self.refresh(&mut loaded)?;
            if loaded.hashes.contains_key(&name) {
                return Err(UsersError::Taken);
            }
        }
        // Hash outside the locks: it takes tens of milliseconds.
        let hash = hash_password(password.as_bytes())?;
        let _other_processes = self.lock_file()?;
        let mut loaded = self.loaded.lock();
        self.refresh(&mut loaded)?;
        if loaded.hashes.contains_key(&name) {
            return Err(UsersError::Taken);
        }
        loaded.hashes.insert(name.clone(), hash);
        if let Err(e) = self.save(&loaded.hashes) {
            loaded.hashes.remove(&name);
            return Err(e);
        }
        loaded.stamp = stamp(&self.path)?;
        Ok(name)
    }

    /// Replaces the password of `username`'s account and saves the file before
    /// returning.
    ///
    /// Slow on purpose (one argon2 hash): call it off the async runtime's threads.
    ///
    /// # Errors
    /// [`UsersError::BadPassword`], [`UsersError::Unknown`]; [`UsersError::Io`] if the
    /// file cannot be read or written (the password is then unchanged).
    pub fn set_password(&self, username: &str, password: &str) -> Result<(), UsersError> {
        let name = normalize_username(username).ok_or(UsersError::Unknown)?;
        if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
            return Err(UsersError::BadPassword);
        }
        let hash = hash_password(password.as_bytes())?;
        let _other_processes = self.lock_file()?;
        let mut loaded = self.loaded.lock();
        self.refresh(&mut loaded)?;
        let Some(old) = loaded.hashes.insert(name.clone(), hash) else {
            loaded.hashes.remove(&name);
            return Err(UsersError::Unknown);
        };
        if let Err(e) = self.save(&loaded.hashes) {
            loaded.hashes.insert(name, old);
            return Err(e);
        }
        loaded.stamp = stamp(&self.path)?;
        Ok(())
    }

    /// Checks a username and password. Returns the username as stored if they match,
    /// `None` otherwise — for an unknown username too, after the same amount of work.
    /// Sees accounts another process added to the file since the last look.
    ///
    /// Slow on purpose (one argon2 hash): call it off the async runtime's threads.
    pub fn verify(&self, username: &str, password: &str) -> Option<String> {
        let name = normalize_username(username);
        let stored = name.as_ref().and_then(|n| {
            let mut loaded = self.loaded.lock();
            // A file that cannot be read now: answer from what was read before.
            let _ = self.refresh(&mut loaded);
            loaded.hashes.get(n).cloned()
        });
        let ok = verify_password(
            stored.as_deref().unwrap_or(&self.dummy),
            password.as_bytes(),
        );
        match (ok, stored) {
            (true, Some(_)) => name,
            _ => None,
        }
    }

    /// Writes the accounts to a temporary file beside the real one, fsyncs it, renames
    /// it over the real one and fsyncs the directory: a crash leaves the old file or the
    /// new one, never half of one.
    fn save(&self, hashes: &BTreeMap<String, String>) -> Result<(), UsersError> {
        let file = UsersFile {
            version: FORMAT_VERSION,
            users: hashes.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| UsersError::Corrupt(format!("cannot encode: {e}")))?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        create_data_dir(&dir)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = private_file()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            // A temporary file a crash left behind keeps its mode when reopened.
            restrict(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        fs::File::open(&dir)?.sync_all()?;
        Ok(())
    }
}

/// Creates the data directory `dir` and any missing parent, each 0700 (whatever the
/// umask): it holds the password hashes and, by default, the sessions. Directories
/// that exist already are left as they are.
///
/// # Errors
/// The operating system's, if a directory cannot be created.
pub fn create_data_dir(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// `OpenOptions` that create a file only its owner may read or write (0600, whatever
/// the umask).
fn private_file() -> fs::OpenOptions {
    #[allow(unused_mut)]
    let mut o = fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}

/// Takes the group's and others' access away from the file at `path`, if it exists
/// and has any.
fn restrict(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match fs::metadata(path) {
            Ok(m) => m.permissions().mode() & 0o7777,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Lowercase, trimmed, and only `[a-z0-9._-]`, 1 to [`MAX_USERNAME_CHARS`] long; `None`
/// otherwise.
pub fn normalize_username(username: &str) -> Option<String> {
    let name = username.trim().to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= MAX_USERNAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(name)
}

/// An argon2id PHC string for `password`, with a fresh random salt.
fn hash_password(password: &[u8]) -> Result<String, UsersError> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (argon2 compares in constant time).
fn verify_password(phc: &str, password: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_trimmed_and_restricted() {
        assert_eq!(
            normalize_username("  Alice.B-1_ "),
            Some("alice.b-1_".into())
        );
        assert_eq!(normalize_username(""), None);
        assert_eq!(normalize_username("a b"), None);
        assert_eq!(normalize_username("al<ice"), None);
        assert_eq!(normalize_username("ä"), None);
        assert_eq!(
            normalize_username(&"a".repeat(MAX_USERNAME_CHARS)).map(|s| s.len()),
            Some(32)
        );
        assert_eq!(
            normalize_username(&"a".repeat(MAX_USERNAME_CHARS + 1)),
            None
        );
    }

    #[test]
    fn a_new_password_replaces_the_old_one_durably_and_bad_ones_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let users = Users::open(&path).unwrap();
        users.sign_up("alice", "the first password").unwrap();
        assert!(matches!(
            users.set_password("alice", "short"),
            Err(UsersError::BadPassword)
        ));
        assert!(matches!(
            users.set_password("nobody", "a good new password"),
            Err(UsersError::Unknown)
        ));
        assert!(users.verify("alice", "the first password").is_some());
        users.set_password("Alice", "a good new password").unwrap();
        assert!(users.verify("alice", "the first password").is_none());
        let reopened = Users::open(&path).unwrap();
        assert_eq!(
            reopened.verify("alice", "a good new password").as_deref(),
            Some("alice")
        );
        assert_eq!(reopened.len(), 1, "no account was added");
    }

    #[test]
    fn two_processes_sharing_the_file_see_each_others_sign_ups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let a = Users::open(&path).unwrap();
        let b = Users::open(&path).unwrap();
        assert_eq!(a.sign_up("alice", "correct horse").unwrap(), "alice");
        // B loaded the file before the sign-up, and still sees it.
        assert_eq!(b.verify("alice", "correct horse"), Some("alice".into()));
        assert!(matches!(
            b.sign_up("Alice", "another password"),
            Err(UsersError::Taken)
        ));
        // And A sees B's: neither write loses the other's account.
        assert_eq!(b.sign_up("bob", "battery staple").unwrap(), "bob");
        assert_eq!(a.verify("bob", "battery staple"), Some("bob".into()));
        let c = Users::open(&path).unwrap();
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn concurrent_sign_ups_through_separate_handles_on_one_file_lose_none() {
        // Each handle stands for a process: its own cache, only the file and its lock
        // file shared.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let (handles, per_handle) = (4, 5);
        std::thread::scope(|scope| {
            for h in 0..handles {
                let users = Users::open(&path).unwrap();
                scope.spawn(move || {
                    for i in 0..per_handle {
                        users.sign_up(&format!("user{h}-{i}"), "password1").unwrap();
                    }
                });
            }
        });
        let all = Users::open(&path).unwrap();
        assert_eq!(all.len(), handles * per_handle, "a sign-up was lost");
        assert_eq!(all.verify("user3-4", "password1"), Some("user3-4".into()));
    }

    #[test]
    fn sign_up_stores_an_argon2id_phc_string_and_verify_checks_it() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(dir.path().join("users.json")).unwrap();
        assert_eq!(users.sign_up("Alice", "correct horse").unwrap(), "alice");
        assert_eq!(users.verify("ALICE", "correct horse"), Some("alice".into()));
        assert_eq!(users.verify("alice", "correct horsE"), None);
        assert_eq!(users.verify("bob", "correct horse"), None);
        let text = fs::read_to_string(users.path()).unwrap();
        assert!(text.contains("$argon2id$v=19$"), "{text}");
        assert!(
            !text.contains("correct horse"),
            "plaintext password on disk"
        );
    }

    #[test]
    fn sign_up_refuses_taken_names_and_bad_passwords_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(dir.path().join("users.json")).unwrap();
        users.sign_up("alice", "password1").unwrap();
        assert!(matches!(
            users.sign_up("ALICE", "password2"),
            Err(UsersError::Taken)
        ));
        assert!(matches!(
            users.sign_up("bob", "short"),
            Err(UsersError::BadPassword)
        ));
        let long = "p".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(
            users.sign_up("bob", &long),
            Err(UsersError::BadPassword)
        ));
        assert!(matches!(
            users.sign_up("b o b", "password1"),
            Err(UsersError::BadUsername)
        ));
        assert_eq!(users.len(), 1);
        assert_eq!(users.verify("alice", "password2"), None);
    }

    #[test]
    fn accounts_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        Users::open(&path)
            .unwrap()
            .sign_up("alice", "password1")
            .unwrap();
        let again = Users::open(&path).unwrap();
        assert_eq!(again.verify("alice", "password1"), Some("alice".into()));
        assert!(!dir.path().join("users.json.tmp").exists());
    }

    #[test]
    fn a_damaged_or_foreign_users_file_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(Users::open(&path), Err(UsersError::Corrupt(_))));
        fs::write(&path, br#"{"version":2,"users":{}}"#).unwrap();
        let err = Users::open(&path).unwrap_err();
        assert!(err.to_string().contains("format version 2"), "{err}");
        fs::write(&path, br#"{"version":1,"users":{"alice":"plaintext"}}"#).unwrap();
        let err = Users::open(&path).unwrap_err();
        assert!(err.to_string().contains("not a PHC string"), "{err}");
    }
}
