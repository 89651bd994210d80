//! What a command works on: the [`Target`] the command line (or else the environment)
//! names, a store directory or a Redis URL, and the [`Ctx`] every command gets, which
//! opens it for an operator: a directory with the backend its files show (log or
//! sled), no reaper and no background compaction, or a Redis connection; both with
//! limits as wide as the format.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::CommandFactory;
use clap::error::ErrorKind;
use indicatif::HumanBytes;
use sessiondb::{BackendKind, Durability, Options, Store};

use crate::args::{BackendArg, Cli, cli_limits};
use crate::handle::Handle;
use crate::human::redact;
use crate::output::{Fail, io_fail};
use crate::progress::Progress;
#[cfg(feature = "redis")]
use crate::remote;

/// Where the sessions are.
pub enum Target {
    /// A store directory.
    Dir(PathBuf),
    /// A Redis server, and the prefix of the store's keys there.
    Redis { url: String, prefix: String },
}

/// Where the command line (or else the environment) says the store is; exits with
/// status 2 if it names none, or both ways at once.
pub fn pick(cli: &mut Cli) -> Target {
    let usage = |kind, msg: &str| -> ! { Cli::command().error(kind, msg).exit() };
    let from_env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    // The ArgGroup refuses --dir with --redis when both come before the command; a
    // global argument given after it escapes the group's check, so check again here.
    let given = (cli.dir.take(), cli.redis.take());
    let on_command_line = given.0.is_some() || given.1.is_some();
    let (dir, redis) = match given {
        (None, None) => {
            let redis = from_env("SESSIONDB_REDIS_URL").map(|v| {
                v.into_string().unwrap_or_else(|_| {
                    usage(ErrorKind::InvalidUtf8, "SESSIONDB_REDIS_URL is not UTF-8")
                })
            });
            (from_env("SESSIONDB_DIR").map(PathBuf::from), redis)
        }
        given => given,
    };
    match (dir, redis) {
        (Some(dir), None) => {
            if cli.redis_prefix.is_some() {
                usage(
                    ErrorKind::ArgumentConflict,
                    "--redis-prefix applies to a Redis store (--redis URL), not to a \
                     store directory",
                );
            }
            Target::Dir(dir)
        }
        (None, Some(url)) => {
            if cli.backend != BackendArg::Auto {
                usage(
                    ErrorKind::ArgumentConflict,
                    "--backend applies to a store directory, not to Redis (--redis URL)",
                );
            }
            Target::Redis {
                url,
                prefix: cli
                    .redis_prefix
                    .take()
                    .unwrap_or_else(|| "sessiondb".into()),
            }
        }
        (Some(_), Some(_)) if on_command_line => usage(
            ErrorKind::ArgumentConflict,
            "the argument '--dir <DIR>' cannot be used with '--redis <URL>': a command \
             works on one store",
        ),
        (Some(_), Some(_)) => usage(
            ErrorKind::ArgumentConflict,
            "SESSIONDB_DIR and SESSIONDB_REDIS_URL are both set: pass --dir DIR or \
             --redis URL to say which store",
        ),
        (None, None) => usage(
            ErrorKind::MissingRequiredArgument,
            "the store is required: pass --dir DIR (or set SESSIONDB_DIR), or --redis URL \
             (or set SESSIONDB_REDIS_URL)",
        ),
    }
}

/// What every command shares: where the store is and how to open it.
pub struct Ctx {
    pub target: Target,
    pub backend: BackendArg,
    pub auth_lifetime: Option<Duration>,
    pub quiet: bool,
    pub progress: Progress,
}

/// What a directory holds, by its files.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Found {
    Nothing,
    Log,
    Sled,
    Both,
}

fn detect(dir: &Path) -> Result<Found, Fail> {
    let (mut log, mut sled) = (false, false);
    let entries = std::fs::read_dir(dir).map_err(io_fail(format!("reading {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_fail(format!("reading {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == "sled" && entry.path().is_dir() {
            sled = true;
        } else if (name.starts_with("seg-") || name.starts_with("base-")) && name.ends_with(".log")
            || name == "MANIFEST"
        {
            log = true;
        }
    }
    Ok(match (log, sled) {
        (false, false) => Found::Nothing,
        (true, false) => Found::Log,
        (false, true) => Found::Sled,
        (true, true) => Found::Both,
    })
}

/// Bytes of the files under `path` (two levels down: sled keeps a subdirectory).
fn disk_bytes(path: &Path, depth: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_file() => m.len(),
            Ok(m) if m.is_dir() && depth > 0 => disk_bytes(&e.path(), depth - 1),
            _ => 0,
        })
        .sum()
}

impl Ctx {
    /// The store, as messages name it: the directory, or the Redis URL (password
    /// hidden) and key prefix.
    pub fn shown(&self) -> String {
        match &self.target {
            Target::Dir(dir) => dir.display().to_string(),
            Target::Redis { url, prefix } => format!("{} (prefix {prefix:?})", redact(url)),
        }
    }

    /// The store directory, for the commands that only apply to one.
    pub fn dir_for(&self, command: &str, why: &str) -> Result<&Path, Fail> {
        match &self.target {
            Target::Dir(dir) => Ok(dir),
            Target::Redis { .. } => Err(Fail(format!(
                "`{command}` applies to a store directory (--dir), not to Redis: {why}"
            ))),
        }
    }

    /// Opens the store for an operator: a directory (see [`Ctx::open`]) or a Redis
    /// connection (no reaper, limits as wide as the format). `create` allows a missing
    /// or empty directory (for import).
    pub fn handle(&self, create: bool) -> Result<Handle, Fail> {
        match &self.target {
            Target::Dir(dir) => Ok(Handle::Embedded(self.open(dir, create)?)),
            Target::Redis { url, prefix } => self.connect(url, prefix),
        }
    }

    #[cfg(feature = "redis")]
    fn connect(&self, url: &str, prefix: &str) -> Result<Handle, Fail> {
        let opts = Options::default()
            .reaper_interval(None)
            .limits(cli_limits())
            .auth_lifetime(self.auth_lifetime);
        let spinner = self
            .progress
            .spinner(format!("connecting to {}", redact(url)));
        let remote = remote::Remote::connect(url, prefix, opts);
        spinner.finish_and_clear();
        // The client's message names the URL it was given: never print its password.
        let remote = remote.map_err(|e| {
            let Fail(msg) = Fail::from(e);
            Fail(msg.replace(url, &redact(url)))
        })?;
        Ok(Handle::Redis(remote))
    }

    #[cfg(not(feature = "redis"))]
    fn connect(&self, _url: &str, _prefix: &str) -> Result<Handle, Fail> {
        Err(Fail(
            "this sessiondb was built without Redis support: build it with \
             `--features cli,redis` (cargo install sessiondb --features cli,redis) to use \
             --redis"
                .into(),
        ))
    }

    /// Opens the store in `dir` for an operator: the backend its files show, no
    /// reaper, no background compaction, limits as wide as the format. `create` allows
    /// a missing or empty directory (for import); otherwise that is an error, so a
    /// mistyped path never becomes a new, empty store.
    pub fn open(&self, dir: &Path, create: bool) -> Result<Store, Fail> {
        let shown = dir.display();
        let found = match std::fs::metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Err(Fail(format!("{shown} does not exist")));
                }
                Found::Nothing
            }
            Err(e) => return Err(Fail(format!("{shown}: {e}"))),
            Ok(m) if !m.is_dir() => return Err(Fail(format!("{shown} is not a directory"))),
            Ok(_) => detect(dir)?,
        };
        let kind = match (found, self.backend) {
            (Found::Nothing, _) if !create => {
                return Err(Fail(format!(
                    "{shown} holds no sessiondb store (no log segments, no sled database)"
                )));
            }
            (Found::Nothing | Found::Both | Found::Sled, BackendArg::Sled) => BackendKind::Sled,
            (Found::Nothing | Found::Both | Found::Log, BackendArg::Log) => BackendKind::Log,
            (Found::Nothing | Found::Log, BackendArg::Auto) => BackendKind::Log,
            (Found::Sled, BackendArg::Auto) => BackendKind::Sled,
            (Found::Log, BackendArg::Sled) => {
                return Err(Fail(format!(
                    "{shown} holds a log store, not a sled database: drop --backend sled"
                )));
            }
            (Found::Sled, BackendArg::Log) => {
                return Err(Fail(format!(
                    "{shown} holds a sled database, not a log store: drop --backend log"
                )));
            }
            (Found::Both, BackendArg::Auto) => {
                return Err(Fail(format!(
                    "{shown} holds both a log store and a sled database: pass --backend log \
                     or --backend sled"
                )));
            }
        };
        let opts = Options::default()
            .backend(kind)
            .reaper_interval(None)
            .compaction(false, 16 << 20, 2.0)
            .durability(Durability::Buffered {
                flush_every: Duration::from_millis(100),
            })
            .limits(cli_limits())
            .auth_lifetime(self.auth_lifetime);
        // Recovery reports no progress as it goes: a spinner with the size it replays.
        let spinner = self.progress.spinner(format!(
            "opening {shown}: recovering {}",
            HumanBytes(disk_bytes(dir, 2))
        ));
        let store = Store::open_with(dir, opts);
        spinner.finish_and_clear();
        Ok(store?)
    }

    /// A note for the operator on stderr, unless `--quiet`.
    pub fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }
}
