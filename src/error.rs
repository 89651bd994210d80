//! The one error type of the crate.
//!
//! Every fallible public function returns [`Error`]. Each variant is one thing a caller
//! can act on, and its `Display` message names the problem and the value involved.
//! Internal failures (I/O, encoding) are converted into it here and nowhere else.

use std::fmt;
use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a call to sessiondb.
///
/// Match on the variant to decide what to do; print it to tell a person.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A token string was not a token this crate issued (wrong length or character).
    /// Treat it like an absent cookie: start a fresh session.
    InvalidToken {
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A public session id string could not be parsed.
    InvalidSessionId {
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A user id was empty or contained a control character.
    InvalidUserId {
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A [`crate::SignIn`] (or a [`crate::Criterion`], or an imported session's
    /// factors) was malformed: no method, a method named twice, a name that is not
    /// 1–32 bytes of `A-Z a-z 0-9 - _ . :`, or more than eight methods on a session.
    InvalidSignIn {
        /// What was wrong with it.
        reason: String,
    },
    /// A step-up on a session no user is signed in to: log in first
    /// ([`crate::Store::login_with`]).
    NotSignedIn,
    /// An input exceeded a configured limit (see [`crate::Limits`]).
    TooLarge {
        /// Which input: "key", "value", "session data", "user id", "label".
        what: &'static str,
        /// Its size in bytes.
        len: usize,
        /// The configured maximum in bytes (or count, for "sessions per user").
        max: usize,
    },
    /// The session is not live: it was ended, revoked, cleared, it expired, or the token
    /// was never issued. A write never brings such a session back.
    Ended,
    /// What a create-with-token or an import would add is already there: a session (or
    /// a rotated-away token in its grace period) answers to that token, or a session has
    /// that public id. Nothing was changed; choose another token (or skip the record).
    Exists {
        /// "token" or "session id".
        what: &'static str,
    },
    /// The token is an old one, replaced by [`crate::Store::rotate`] and still inside its
    /// grace period: it may read and write the session, but not mint a new token.
    /// Use the session's current token.
    TokenRetired,
    /// A compare-and-swap save lost the race: someone changed the session since it was
    /// read. Reload it and apply the change again.
    VersionConflict {
        /// The version the caller read.
        expected: u64,
        /// The version the session has now.
        actual: u64,
    },
    /// The session's version is [`crate::Session::MAX_VERSION`], the highest a version
    /// goes, so the session takes no further change to its data or its user (a version
    /// that wrapped around would let a stale compare-and-swap succeed). Nothing was
    /// changed. It is still readable: end it, and start a new session with its data.
    VersionExhausted {
        /// The session's version.
        version: u64,
    },
    /// The user already has the maximum number of live sessions and the store is
    /// configured to refuse new ones ([`crate::LimitPolicy::Refuse`]).
    UserSessionLimit {
        /// The user.
        user: String,
        /// The configured maximum.
        max: usize,
    },
    /// The store is at its memory budget ([`crate::Options::budget`]) and the new
    /// session was refused: nothing changed. Under [`crate::BudgetPolicy::Refuse`] every
    /// create at the limit gets this; under `EvictAnonymous`, only one that found no
    /// anonymous session left to end (every live session has a user). A web app
    /// answers `503 Service Unavailable` with a `Retry-After`; logins of existing
    /// sessions still succeed.
    Full {
        /// Live sessions when the create was refused.
        sessions: u64,
        /// The budget's count, if it limits one.
        max_sessions: Option<u64>,
        /// Estimated resident bytes when the create was refused.
        bytes: u64,
        /// The budget's bytes, if it limits them.
        max_bytes: Option<u64>,
    },
    /// A session value could not be encoded or decoded with the requested type.
    Codec {
        /// The key whose value failed, when known.
        key: Option<String>,
        /// The codec's message.
        reason: String,
    },
    /// An option was out of range.
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The operating system's random number generator failed.
    Entropy(String),
    /// Another store (in this process or another) holds the directory.
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The holder's process id, if it could be read from the lock file.
        pid: Option<u32>,
    },
    /// The store directory, or a file sessiondb keeps in it, can be read or entered by
    /// the group or others, and sessiondb could not take that access away (the process
    /// is not its owner). Opening refuses such a store rather than keep session data
    /// where others can read it. Run `chmod go-rwx` on the path as its owner (or open
    /// the store as its owner, who may).
    Permissions {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits (`0o755`, ...).
        mode: u32,
        /// Why they could not be changed: the operating system's message.
        reason: String,
    },
    /// A file in the store directory is damaged somewhere other than its torn tail.
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What was found there.
        reason: String,
    },
    /// The directory was written by a newer, incompatible version of sessiondb.
    UnsupportedFormat {
        /// The file with the unknown format.
        file: PathBuf,
        /// The format version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The database holds sessiondb's tables at a schema version this build cannot use:
    /// a newer one (a newer sessiondb migrated it: upgrade this node; a schema is never
    /// migrated back), or — when connecting without migrating
    /// (`PostgresOptions::migrate(false)`) — an older one or none (found 0: let a node
    /// that may migrate connect first). Nothing was changed.
    UnsupportedSchema {
        /// The backend ("postgres").
        backend: &'static str,
        /// The schema version found.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// [`crate::Store::verify`] found the indexes disagreeing: a bug in sessiondb.
    Inconsistent(String),
    /// An I/O operation failed.
    Io {
        /// What sessiondb was doing.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The session server (Redis or Valkey, for a `RedisStore`) could not be
    /// reached, did not answer in time, or refused the command. A write that failed
    /// this way may or may not have been applied: read the session again before
    /// retrying something that is not idempotent.
    Unavailable {
        /// The backend ("redis" or "postgres").
        backend: &'static str,
        /// What sessiondb was doing.
        context: String,
        /// The client's or the server's message.
        reason: String,
    },
    /// The disk holding the store is full: the operating system refused a write of the
    /// log. Nothing half-written is left in the way, reads go on, and the store writes
    /// again on its own once space is freed — no reopen needed. Until then every write
    /// is refused with this error, and changing nothing. A change whose own write met
    /// the full disk is kept in memory and written once there is room (so it may
    /// still be found after a crash); under `Durability::Buffered` a change already
    /// acknowledged may meet it later, which [`crate::Store::flush`] then reports.
    DiskFull {
        /// The store's directory.
        dir: PathBuf,
        /// The bytes the refused write needed (for a compaction, those its new base had
        /// reached when the disk filled: it needed more).
        needed: u64,
    },
    /// An earlier write failed to reach the log, so the store refuses further writes
    /// rather than acknowledge changes it may not keep. Reopen the store.
    Poisoned {
        /// The first failure.
        reason: String,
    },
}

impl Error {
    /// Whether this is the disk being full: [`Error::DiskFull`], or an I/O error the
    /// operating system gave as `ENOSPC`.
    pub(crate) fn is_no_space(&self) -> bool {
        match self {
            Error::DiskFull { .. } => true,
            Error::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.raw_os_error() == Some(28)
            }
            _ => false,
        }
    }

    /// This error as [`Error::DiskFull`] if it is the disk holding `dir` being full (a
    /// write of `needed` bytes refused); itself otherwise.
    pub(crate) fn or_disk_full(self, dir: &std::path::Path, needed: u64) -> Self {
        if self.is_no_space() {
            Error::DiskFull {
                dir: dir.to_path_buf(),
                needed,
            }
        } else {
            self
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidToken { reason } => write!(f, "invalid session token: {reason}"),
            Error::InvalidSessionId { reason } => write!(f, "invalid session id: {reason}"),
            Error::InvalidUserId { reason } => write!(f, "invalid user id: {reason}"),
            Error::InvalidSignIn { reason } => write!(f, "invalid sign-in: {reason}"),
            Error::NotSignedIn => write!(
                f,
                "no user is signed in to this session, so it cannot step up; log in first"
            ),
            Error::TooLarge { what, len, max } => {
                write!(f, "{what} is too large: {len} exceeds the limit of {max}")
            }
            Error::Exists { what } => write!(
                f,
                "a session with this {what} already exists; nothing was changed"
            ),
            Error::Ended => write!(
                f,
                "session is not live (ended, revoked, expired or unknown); start a new one"
            ),
            Error::TokenRetired => write!(
                f,
                "this token was rotated and only lives out its grace period; \
                 use the session's new token"
            ),
            Error::VersionConflict { expected, actual } => write!(
                f,
                "session changed concurrently: saved against version {expected}, \
                 but it is now at version {actual}; reload and retry"
            ),
            Error::VersionExhausted { version } => write!(
                f,
                "session is at version {version}, the highest a version goes, and takes \
                 no further changes; end it and start a new session"
            ),
            Error::UserSessionLimit { user, max } => write!(
                f,
                "user {user:?} already has {max} live sessions, the configured maximum; \
                 end one first"
            ),
            Error::Full {
                sessions,
                max_sessions,
                bytes,
                max_bytes,
            } => {
                write!(
                    f,
                    "the session store is at its memory budget ({sessions} sessions"
                )?;
                if let Some(m) = max_sessions {
                    write!(f, " of {m}")?;
                }
                write!(f, ", ~{bytes} bytes")?;
                if let Some(m) = max_bytes {
                    write!(f, " of {m}")?;
                }
                write!(
                    f,
                    ") and no anonymous session could make room; the new session was \
                     refused — answer 503 with Retry-After, or raise Options::budget"
                )
            }
            Error::Codec {
                key: Some(key),
                reason,
            } => {
                write!(
                    f,
                    "session value {key:?} could not be (de)serialized: {reason}"
                )
            }
            Error::Codec { key: None, reason } => {
                write!(f, "value could not be (de)serialized: {reason}")
            }
            Error::InvalidOption { name, reason } => write!(f, "invalid option {name}: {reason}"),
            Error::Entropy(e) => write!(f, "the OS random number generator failed: {e}"),
            Error::Locked {
                dir,
                pid: Some(pid),
            } => write!(
                f,
                "store directory {} is locked by process {pid}; close that store first",
                dir.display()
            ),
            Error::Locked { dir, pid: None } => write!(
                f,
                "store directory {} is locked by another store; close it first",
                dir.display()
            ),
            Error::Permissions { path, mode, reason } => write!(
                f,
                "{} is open to the group or others (mode {mode:04o}) and sessiondb could \
                 not make it private ({reason}); run `chmod go-rwx {}` as its owner, or \
                 open the store as its owner",
                path.display(),
                path.display()
            ),
            Error::Corrupt {
                segment,
                offset,
                reason,
            } => write!(
                f,
                "corrupt log {} at byte {offset}: {reason}; open with \
                 `Options::salvage(true)` to skip damaged records",
                segment.display()
            ),
            Error::UnsupportedFormat {
                file,
                found,
                supported,
            } => write!(
                f,
                "{} has format version {found}, but this build reads up to {supported}; \
                 upgrade sessiondb",
                file.display()
            ),
            Error::Inconsistent(what) => write!(
                f,
                "index inconsistency (a sessiondb bug, please report it): {what}"
            ),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::UnsupportedSchema {
                backend,
                found,
                supported,
            } if found > supported => write!(
                f,
                "the {backend} schema is at version {found}, but this build knows up to \
                 {supported}: a newer sessiondb migrated it; upgrade this node"
            ),
            Error::UnsupportedSchema {
                backend,
                found: 0,
                supported,
            } => write!(
                f,
                "there is no sessiondb schema in this {backend} database (this build uses \
                 version {supported}); connect once with migrations on to create it"
            ),
            Error::UnsupportedSchema {
                backend,
                found,
                supported,
            } => write!(
                f,
                "the {backend} schema is at version {found}, older than this build's \
                 {supported}; connect once with migrations on to migrate it"
            ),
            Error::Unavailable {
                backend,
                context,
                reason,
            } => write!(
                f,
                "{backend} {context} failed: {reason}; check that the server is up and \
                 reachable{}",
                if context.starts_with("connecting") {
                    ""
                } else {
                    " (if this was a write, it may or may not have been applied)"
                }
            ),
            Error::DiskFull { dir, needed } => write!(
                f,
                "the disk holding {} is full: a log write of {needed} bytes was refused; \
                 free space there and writes resume on their own (reads go on meanwhile)",
                dir.display()
            ),
            Error::Poisoned { reason } => write!(
                f,
                "store refuses writes after a failed log write ({reason}); reopen it"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
