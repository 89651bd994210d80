//! `sessiondb`: the command-line tool for a sessiondb store directory (cargo feature
//! `cli`), or for sessions kept in Redis (`--redis`, with the `redis` feature too). It
//! owns the command line, how a store is opened for an operator (backend detection, no
//! background work, the lock error), the [`Handle`] the commands share over both kinds
//! of store, and the output of each command; the export format lives in [`jsonl`],
//! progress bars in [`progress`], text helpers in [`human`], the Redis connection in
//! `remote`.

mod human;
mod jsonl;
mod progress;
#[cfg(feature = "redis")]
mod remote;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::error::ErrorKind;
use clap::{ArgGroup, CommandFactory, Parser, Subcommand, ValueEnum};
use indicatif::{HumanBytes, HumanCount, HumanDuration};
use serde_json::json;
use sessiondb::{
    BackendKind, Durability, Error, Limits, Options, Session, SessionId, SessionRecord, Store,
    UserId,
};

use crate::human::redact;
use crate::progress::Progress;

const ABOUT: &str = "Inspect and administer a sessiondb store: a directory, or sessions in Redis.";

const AFTER_HELP: &str = "\
A store directory must not be open in any process: stop the application first. While
another process holds the directory's lock, every command fails with exit status 1 and
names that process. Sessions in Redis (--redis URL, keys under --redis-prefix) are
administered while the application runs: every command is one atomic step per
session, as the application's own calls are.

Nothing changes a session unless the command says so: no reaper or background
compaction runs, and stats, list, show, verify and export only read (like
Store::peek: they count as no session's activity). Opening does what any open does: a
torn tail a crash left is cut off and reported, and a new log segment is started.

Tokens are never in the store, only their BLAKE3 hashes: no command can print a
session's cookie, and an exported session, imported elsewhere, answers to the same
cookie as before.

Examples:
  sessiondb --dir /var/lib/myapp/sessions stats
  sessiondb -d ./sessions list --user alice
  sessiondb -d ./sessions show 0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11 --json
  sessiondb -d ./sessions revoke --user alice
  sessiondb -d ./sessions revoke 0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11
  sessiondb -d ./sessions verify && sessiondb -d ./sessions compact
  sessiondb -d ./sessions export --out backup.jsonl
  sessiondb -d ./restored import backup.jsonl
  sessiondb --redis redis://127.0.0.1:6379/ list --user alice
  sessiondb --redis redis://127.0.0.1:6379/ revoke --user alice
  sessiondb -d ./sessions export | sessiondb --redis redis://127.0.0.1:6379/ import
      (moves an embedded store to Redis: every cookie keeps working)

Exit status: 0 done; 1 the operation failed (the store is locked, missing or
damaged, an import line is bad, ...); 2 the command line is wrong.";

const EXPORT_HELP: &str = "\
Format: JSON lines, one object per session, schema version 1:
  {\"v\":1,\"id\":\"<public id>\",\"token_hash\":\"<32 hex digits>\",\"user\":\"alice\"|null,
   \"label\":\"Firefox\"|null,\"created_ms\":N,\"authenticated_ms\":N|null,\"absolute_ms\":N,
   \"idle_timeout_ms\":N|null,\"last_seen_ms\":N,\"version\":N,
   \"data\":{\"<key>\":\"<base64 of the value's raw bytes>\"}}
Sessions come in no particular order. Times are milliseconds since the Unix epoch
(absolute_ms 18446744073709551615: no deadline). The token is not there — the store never had it, only its hash — yet an
imported session answers to the same cookie. Sessions already past their deadline are
not exported. With --out the file appears only once complete (written beside it as
FILE.partial, fsynced, renamed), and only its owner may read or write it (mode 0600,
like the store's own files: it holds every session's data); a redirected stdout gets
the mode the shell gives it. A directory and Redis export the same format, so
either imports into the other. From Redis, the sessions are read in batches while the
application keeps running: a session created or ended during the export may or may
not be in it.

Examples:
  sessiondb -d ./sessions export > backup.jsonl
  sessiondb -d ./sessions export --out backup.jsonl
  sessiondb --redis redis://127.0.0.1:6379/ export --out backup.jsonl";

const IMPORT_HELP: &str = "\
Reads the format `export` writes (see `sessiondb export --help`). Every line is checked
first — JSON, schema version, ids, hashes, sizes, duplicates within the input, sessions
already in the store — and if any is bad, each bad line is reported with its number and
nothing is imported. Then the sessions are imported, and made durable before the
command returns. Sessions already past their deadline are skipped and reported. If the
store refuses a session after all (a token hash already there), the sessions this run
imported are removed again and the line is reported: nothing is half-imported. (If
the command is killed while importing, the sessions imported until then stay: run it
again with --skip-existing to finish.)
The directory is created if it does not exist (log backend unless --backend sled).
Into Redis, each session is written as the server acknowledges it; how durable that is
depends on the server's persistence (appendfsync).

Examples:
  sessiondb -d ./restored import backup.jsonl
  sessiondb -d ./sessions export | sessiondb -d ./copy import
  sessiondb -d ./sessions import --skip-existing backup.jsonl
  sessiondb -d ./sessions export | sessiondb --redis redis://127.0.0.1:6379/ import
      (moves an embedded store to Redis: stop the application, import, restart it
      configured for Redis; every cookie keeps working)";

#[derive(Parser)]
#[command(
    name = "sessiondb",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    group(ArgGroup::new("store").args(["dir", "redis"]).multiple(false))
)]
struct Cli {
    // --dir and --redis read their environment variables in `main`, not through clap:
    // clap would count a variable as given and refuse `--redis URL` while SESSIONDB_DIR
    // is exported, where the command line should win.
    /// The store directory [env: SESSIONDB_DIR]
    #[arg(short, long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Sessions kept in Redis or Valkey instead of a directory:
    /// redis://[user:password@]host:port[/db], rediss://… (TLS), or
    /// redis+unix:///path/to/socket. Needs a sessiondb built with `--features cli,redis`
    /// [env: SESSIONDB_REDIS_URL]
    #[arg(long, global = true, value_name = "URL")]
    redis: Option<String>,
    /// The prefix of the store's keys in Redis: the application's RedisOptions::prefix
    /// [default: sessiondb]
    #[arg(long, global = true, value_name = "PREFIX")]
    redis_prefix: Option<String>,
    /// The storage backend. By default it is detected from the directory's files; name
    /// it only to import into a new directory with sled, or when a directory holds both
    #[arg(long, global = true, value_enum, default_value_t = BackendArg::Auto, value_name = "KIND")]
    backend: BackendArg,
    /// The application's Options::auth_lifetime, if it sets one (e.g. 90d), so this tool
    /// agrees with it on which sessions have expired
    #[arg(long, global = true, value_name = "DURATION", value_parser = human::parse_duration)]
    auth_lifetime: Option<Duration>,
    /// No progress bars and no notes on stderr (errors are still printed). Progress is
    /// drawn only when stderr is a terminal anyway
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// Detect it from the directory's files
    Auto,
    /// The log-structured store (the default for a new directory)
    Log,
    /// sled (needs a sessiondb built with the `sled` feature)
    Sled,
}

#[derive(Subcommand)]
enum Command {
    /// Counts: sessions, users, bytes on disk and how much of it is dead history, and
    /// what opening the store found (on Redis: live sessions, the server and key prefix)
    Stats {
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// A user's live sessions, oldest first (their devices page). Reads only: no
    /// session is touched or extended
    #[command(after_help = "Example:\n  sessiondb -d ./sessions list --user alice --json")]
    List {
        /// The user
        #[arg(short, long, value_name = "USER", value_parser = parse_user)]
        user: String,
        /// A JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// One live session by its public id, with its data. Reads only: the session is not
    /// touched or extended
    #[command(
        after_help = "Values are shown as the string they hold when they are bincode strings or\n\
                      text, else as their first bytes in hex; --json gives every value's bytes\n\
                      in base64.\n\nExample:\n  sessiondb -d ./sessions show 0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11"
    )]
    Show {
        /// The session's public id (a hyphenated UUID, as events and `list` show it)
        #[arg(value_name = "PUBLIC_ID", value_parser = parse_id)]
        id: SessionId,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Ends every session of a user (--user), or one session by its public id; durable
    /// when the command returns
    #[command(
        after_help = "Examples:\n  sessiondb -d ./sessions revoke --user alice\n  \
                      sessiondb -d ./sessions revoke 0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11\n\n\
                      Revoking an id that is not live fails (exit status 1); revoking a user\n\
                      with no sessions revokes 0 and succeeds.",
        group(ArgGroup::new("target").required(true).args(["user", "id"]))
    )]
    Revoke {
        /// End all of this user's sessions
        #[arg(short, long, value_name = "USER", value_parser = parse_user)]
        user: Option<String>,
        /// End the session with this public id
        #[arg(value_name = "PUBLIC_ID", value_parser = parse_id)]
        id: Option<SessionId>,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Rewrites the log as its live sessions only, deleting the dead history (the sled
    /// backend manages its own space: nothing to do there). A store directory only
    Compact {
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Opens the store, which replays and checksums every record, then checks that its
    /// indexes agree. Changes no session. A store directory only
    Verify {
        /// One JSON object instead of text ({"ok": false, "error": ...} on failure)
        #[arg(long)]
        json: bool,
    },
    /// Writes every live session as JSON lines to stdout, or to --out
    #[command(after_help = EXPORT_HELP)]
    Export {
        /// Write to this file (mode 0600: its owner only) instead of stdout
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Reads sessions as JSON lines from a file, or stdin, into the store
    #[command(after_help = IMPORT_HELP)]
    Import {
        /// The file to read; stdin when absent or "-"
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Skip sessions already in the store (same public id or token hash) instead of
        /// refusing the import
        #[arg(long)]
        skip_existing: bool,
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
}

fn parse_id(s: &str) -> Result<SessionId, String> {
    SessionId::parse(s).map_err(|e| e.to_string())
}

fn parse_user(s: &str) -> Result<String, String> {
    UserId::new(s, &cli_limits())
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Limits as wide as the store format allows: an operator's tool must read, list,
/// export and import whatever an application stored, whatever limits it set.
fn cli_limits() -> Limits {
    Limits {
        max_key_bytes: u16::MAX as usize,
        max_value_bytes: 1 << 30,
        max_data_bytes: 1 << 30,
        max_user_id_bytes: 1 << 16,
        max_label_bytes: 1 << 16,
    }
}

/// A failed operation: its message, printed after "sessiondb: error: ", exit status 1.
struct Fail(String);

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail(match &e {
            Error::Locked { dir, pid } => format!(
                "{} is in use{}: this tool works only on a store that no process has \
                 open. Stop the application (or close its store) and run the command again",
                dir.display(),
                pid.map(|p| format!(" by process {p}")).unwrap_or_default()
            ),
            _ => e.to_string(),
        })
    }
}

fn io_fail(what: String) -> impl FnOnce(io::Error) -> Fail {
    move |e| Fail(format!("{what}: {e}"))
}

/// Prints `text` and a newline on stdout.
fn say(text: &str) -> Result<(), Fail> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(io_fail("writing to stdout".into()))
}

fn say_json(v: &serde_json::Value) -> Result<(), Fail> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Fail(e.to_string()))?;
    say(&text)
}

/// Where the command line (or else the environment) says the store is; exits with
/// status 2 if it names none, or both ways at once.
fn target(cli: &mut Cli) -> Target {
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

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let target = target(&mut cli);
    let ctx = Ctx {
        target,
        backend: cli.backend,
        auth_lifetime: cli.auth_lifetime,
        quiet: cli.quiet,
        progress: Progress::new(cli.quiet),
    };
    match run(&ctx, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            eprintln!("sessiondb: error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(ctx: &Ctx, command: Command) -> Result<(), Fail> {
    match command {
        Command::Stats { json } => stats(ctx, json),
        Command::List { user, json } => list(ctx, &user, json),
        Command::Show { id, json } => show(ctx, id, json),
        Command::Revoke { user, id, json } => revoke(ctx, user.as_deref(), id, json),
        Command::Compact { json } => compact(ctx, json),
        Command::Verify { json } => verify(ctx, json),
        Command::Export { out } => export(ctx, out.as_deref()),
        Command::Import {
            file,
            skip_existing,
            json,
        } => import(ctx, file.as_deref(), skip_existing, json),
    }
}

/// Where the sessions are.
enum Target {
    /// A store directory.
    Dir(PathBuf),
    /// A Redis server, and the prefix of the store's keys there.
    Redis { url: String, prefix: String },
}

/// What every command shares: where the store is and how to open it.
struct Ctx {
    target: Target,
    backend: BackendArg,
    auth_lifetime: Option<Duration>,
    quiet: bool,
    progress: Progress,
}

/// An open store of either kind, with the operations the commands use on both.
/// Redis calls run to completion one at a time on the command's own runtime.
enum Handle {
    Embedded(Store),
    #[cfg(feature = "redis")]
    Redis(remote::Remote),
}

impl Handle {
    fn sessions_of(&self, user: &str) -> Result<Vec<Session>, Error> {
        match self {
            Handle::Embedded(s) => s.sessions_of(user),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.sessions_of(user)),
        }
    }

    fn get_by_id(&self, id: SessionId) -> Result<Option<Session>, Error> {
        match self {
            Handle::Embedded(s) => Ok(s.get_by_id(id)),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.get_by_id(id)),
        }
    }

    fn revoke_user(&self, user: &str) -> Result<usize, Error> {
        match self {
            Handle::Embedded(s) => s.revoke_user(user),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.revoke_user(user)),
        }
    }

    fn end_by_id(&self, id: SessionId) -> Result<bool, Error> {
        match self {
            Handle::Embedded(s) => s.end_by_id(id),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.end_by_id(id)),
        }
    }

    /// Which of `ids` are live sessions; `tick` after each.
    fn live(&self, ids: Vec<SessionId>, tick: impl Fn()) -> Result<Vec<bool>, Error> {
        match self {
            Handle::Embedded(s) => Ok(ids
                .into_iter()
                .map(|id| {
                    tick();
                    s.get_by_id(id).is_some()
                })
                .collect()),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => {
                let mut live = vec![false; ids.len()];
                let mut failed = None;
                r.each(
                    ids,
                    |store, id| async move { store.get_by_id(id).await },
                    |i, found| {
                        tick();
                        match found {
                            Ok(found) => live[i] = found.is_some(),
                            Err(e) => {
                                failed.get_or_insert(e);
                            }
                        }
                        failed.is_none()
                    },
                );
                failed.map_or(Ok(live), Err)
            }
        }
    }

    /// Imports each record, calling `done(index, result)` after each; stops starting
    /// new ones once `done` returns false (on Redis, those already sent are still
    /// reported).
    fn import_each(
        &self,
        records: Vec<SessionRecord>,
        mut done: impl FnMut(usize, Result<bool, Error>) -> bool,
    ) {
        match self {
            Handle::Embedded(s) => {
                for (i, rec) in records.into_iter().enumerate() {
                    if !done(i, s.import(rec)) {
                        return;
                    }
                }
            }
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.each(
                records,
                |store, rec| async move { store.import(rec).await },
                done,
            ),
        }
    }

    fn export(&self, f: impl FnMut(SessionRecord) -> Result<(), Error>) -> Result<usize, Error> {
        match self {
            Handle::Embedded(s) => s.export(f),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.export(f)),
        }
    }

    fn len(&self) -> Result<usize, Error> {
        match self {
            Handle::Embedded(s) => Ok(s.len()),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.len()),
        }
    }

    /// Makes every write so far durable. On Redis each write is acknowledged by the
    /// server as it is made (its durability is the server's persistence setting).
    fn flush(&self) -> Result<(), Error> {
        match self {
            Handle::Embedded(s) => s.flush(),
            #[cfg(feature = "redis")]
            Handle::Redis(_) => Ok(()),
        }
    }

    /// Closes the store, durably.
    fn close(self) -> Result<(), Error> {
        match self {
            Handle::Embedded(s) => s.close(),
            #[cfg(feature = "redis")]
            Handle::Redis(_) => Ok(()),
        }
    }
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
    fn shown(&self) -> String {
        match &self.target {
            Target::Dir(dir) => dir.display().to_string(),
            Target::Redis { url, prefix } => format!("{} (prefix {prefix:?})", redact(url)),
        }
    }

    /// The store directory, for the commands that only apply to one.
    fn dir_for(&self, command: &str, why: &str) -> Result<&Path, Fail> {
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
    fn handle(&self, create: bool) -> Result<Handle, Fail> {
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
    fn open(&self, dir: &Path, create: bool) -> Result<Store, Fail> {
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
    fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn stats(ctx: &Ctx, json: bool) -> Result<(), Fail> {
    let dir = match &ctx.target {
        Target::Dir(dir) => dir,
        Target::Redis { url, prefix } => return redis_stats(ctx, url, prefix, json),
    };
    let store = ctx.open(dir, false)?;
    let st = store.stats();
    let rep = store.recovery_report();
    drop(store);
    if json {
        return say_json(&json!({
            "dir": dir,
            "backend": st.backend,
            "sessions": st.sessions,
            "users": st.users,
            "aliases": st.aliases,
            "disk_bytes": st.disk_bytes,
            "estimated_live_bytes": st.estimated_live_bytes,
            "dead_ratio": st.dead_ratio,
            "recovery": {
                "files": rep.files,
                "records": rep.records,
                "bytes_read": rep.bytes_read,
                "bytes_truncated": rep.bytes_truncated,
                "expired_dropped": rep.expired_dropped,
                "duration_ms": ms(rep.duration),
            },
        }));
    }
    let rows = [
        (
            "store",
            format!("{} ({} backend)", dir.display(), st.backend),
        ),
        (
            "sessions",
            format!(
                "{} live, {} old tokens in their rotation grace",
                HumanCount(st.sessions as u64),
                HumanCount(st.aliases as u64)
            ),
        ),
        ("users", HumanCount(st.users as u64).to_string()),
        (
            "on disk",
            format!(
                "{}; live sessions ≈ {}; dead history ≈ {:.0}%{}",
                HumanBytes(st.disk_bytes),
                HumanBytes(st.estimated_live_bytes),
                st.dead_ratio * 100.0,
                if st.dead_ratio >= 0.5 && st.backend == "log" {
                    " (`compact` reclaims it)"
                } else {
                    ""
                }
            ),
        ),
        (
            "opened in",
            format!(
                "{:.2} s: {} records from {} files ({}), {} bytes of torn tail cut off, \
                 {} expired sessions dropped",
                rep.duration.as_secs_f64(),
                HumanCount(rep.records),
                rep.files,
                HumanBytes(rep.bytes_read),
                rep.bytes_truncated,
                rep.expired_dropped
            ),
        ),
    ];
    let text: Vec<String> = rows.iter().map(|(k, v)| format!("{k:<10} {v}")).collect();
    say(&text.join("\n"))
}

/// Stats of a Redis store: what Redis can say cheaply. Users, rotation aliases, bytes
/// and recovery are the embedded store's (Redis reports its memory itself: INFO).
fn redis_stats(ctx: &Ctx, url: &str, prefix: &str, json: bool) -> Result<(), Fail> {
    let store = ctx.handle(false)?;
    let sessions = store.len()?;
    drop(store);
    if json {
        return say_json(&json!({
            "redis": redact(url),
            "prefix": prefix,
            "backend": "redis",
            "sessions": sessions,
        }));
    }
    say(&format!(
        "store      {} (redis backend, keys {prefix}:*)\nsessions   {} live",
        redact(url),
        HumanCount(sessions as u64)
    ))
}

fn data_json(s: &Session) -> serde_json::Value {
    s.data()
        .iter()
        .map(|(k, v)| (k.to_owned(), json!(BASE64.encode(v))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn session_json(s: &Session) -> serde_json::Value {
    json!({
        "id": s.id().to_string(),
        "user": s.user().map(UserId::as_str),
        "label": s.label(),
        "created_ms": s.created_at().as_millis(),
        "authenticated_ms": s.authenticated_at().map(|t| t.as_millis()),
        "last_seen_ms": s.last_seen().as_millis(),
        "absolute_ms": s.absolute_deadline().as_millis(),
        "expires_ms": s.expires_at().as_millis(),
        "idle_timeout_ms": s.idle_timeout().map(ms),
        "version": s.version(),
        "data": data_json(s),
    })
}

fn list(ctx: &Ctx, user: &str, json: bool) -> Result<(), Fail> {
    let store = ctx.handle(false)?;
    let sessions = store.sessions_of(user)?;
    drop(store);
    if json {
        return say_json(&sessions.iter().map(session_json).collect());
    }
    if sessions.is_empty() {
        return say(&format!("user {user:?} has no live sessions"));
    }
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.id().to_string(),
                s.label().unwrap_or("-").to_owned(),
                s.created_at().to_string(),
                s.last_seen().to_string(),
                s.expires_at().to_string(),
            ]
        })
        .collect();
    say(&format!(
        "{} live session{} of user {user:?}, oldest first:\n{}",
        sessions.len(),
        if sessions.len() == 1 { "" } else { "s" },
        human::table(&["ID", "LABEL", "CREATED", "LAST SEEN", "EXPIRES"], &rows)
    ))
}

fn show(ctx: &Ctx, id: SessionId, json: bool) -> Result<(), Fail> {
    let store = ctx.handle(false)?;
    let session = store.get_by_id(id)?;
    drop(store);
    let Some(s) = session else {
        return Err(Fail(format!(
            "no live session has id {id} in {}",
            ctx.shown()
        )));
    };
    if json {
        return say_json(&session_json(&s));
    }
    let user = match (s.user(), s.authenticated_at()) {
        (Some(u), Some(at)) => format!("{:?}, authenticated {}", u.as_str(), human::when(at)),
        (Some(u), None) => format!("{:?}", u.as_str()),
        (None, _) => "none (anonymous)".into(),
    };
    let idle = s.idle_timeout().map_or("none".into(), |d| {
        format!("{} after the last activity", HumanDuration(d))
    });
    let mut lines = vec![
        format!("id          {}", s.id()),
        format!("user        {user}"),
        format!(
            "label       {}",
            s.label().map_or("-".into(), |l| format!("{l:?}"))
        ),
        format!("created     {}", human::when(s.created_at())),
        format!("last seen   {}", human::when(s.last_seen())),
        format!("expires     {}", human::when(s.expires_at())),
        format!("  absolute  {}", human::when(s.absolute_deadline())),
        format!("  idle      {idle}"),
        format!("version     {}", s.version()),
        format!(
            "data        {} key{}, {} bytes",
            s.data().len(),
            if s.data().len() == 1 { "" } else { "s" },
            s.data().encoded_len()
        ),
    ];
    let width = s
        .data()
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in s.data().iter() {
        lines.push(format!(
            "  {:<width$}  {} bytes  {}",
            format!("{k:?}"),
            v.len(),
            human::preview(v),
            width = width + 2
        ));
    }
    say(&lines.join("\n"))
}

fn revoke(ctx: &Ctx, user: Option<&str>, id: Option<SessionId>, json: bool) -> Result<(), Fail> {
    let store = ctx.handle(false)?;
    match (user, id) {
        (Some(user), _) => {
            let n = store.revoke_user(user)?;
            store.close()?;
            if json {
                say_json(&json!({ "user": user, "revoked": n }))
            } else {
                say(&format!(
                    "revoked {n} session{} of user {user:?}",
                    if n == 1 { "" } else { "s" }
                ))
            }
        }
        (None, Some(id)) => {
            let ended = store.end_by_id(id)?;
            store.close()?;
            if !ended {
                return Err(Fail(format!(
                    "no live session has id {id} in {}; nothing was revoked",
                    ctx.shown()
                )));
            }
            if json {
                say_json(&json!({ "id": id.to_string(), "revoked": 1 }))
            } else {
                say(&format!("revoked session {id}"))
            }
        }
        (None, None) => Err(Fail("name a user (--user USER) or a public id".into())),
    }
}

fn compact(ctx: &Ctx, json: bool) -> Result<(), Fail> {
    let dir = ctx.dir_for(
        "compact",
        "Redis keeps no log to rewrite (it reclaims an ended session's memory at once)",
    )?;
    let store = ctx.open(dir, false)?;
    let backend = store.stats().backend;
    let spinner = ctx
        .progress
        .spinner(format!("compacting {}", dir.display()));
    let result = store.compact();
    spinner.finish_and_clear();
    let cs = result?;
    store.close()?;
    if json {
        return say_json(&json!({
            "backend": backend,
            "bytes_before": cs.bytes_before,
            "bytes_after": cs.bytes_after,
            "sessions": cs.sessions,
            "duration_ms": ms(cs.duration),
        }));
    }
    if backend != "log" {
        return say(&format!(
            "the {backend} backend manages its own space: nothing to compact ({} on disk)",
            HumanBytes(cs.bytes_after)
        ));
    }
    let saved = if cs.bytes_before > 0 {
        100.0 * (1.0 - cs.bytes_after as f64 / cs.bytes_before as f64)
    } else {
        0.0
    };
    say(&format!(
        "compacted {}: {} -> {} on disk ({saved:.0}% reclaimed), {} live sessions, in {:.2} s",
        dir.display(),
        HumanBytes(cs.bytes_before),
        HumanBytes(cs.bytes_after),
        HumanCount(cs.sessions as u64),
        cs.duration.as_secs_f64()
    ))
}

fn verify(ctx: &Ctx, json: bool) -> Result<(), Fail> {
    let checked = ctx
        .dir_for(
            "verify",
            "it checks a log's records and the indexes rebuilt from them; Redis keeps \
             neither (each operation is one atomic script)",
        )
        .and_then(|dir| Ok((dir, ctx.open(dir, false)?)))
        .and_then(|(dir, store)| {
            store.verify()?;
            Ok((dir, store.recovery_report(), store.len()))
        });
    let (dir, rep, live) = match checked {
        Ok(v) => v,
        Err(fail) => {
            if json {
                say_json(&json!({ "ok": false, "error": fail.0 }))?;
            }
            return Err(fail);
        }
    };
    if json {
        return say_json(&json!({
            "ok": true,
            "backend": rep.backend,
            "files": rep.files,
            "records": rep.records,
            "bytes_read": rep.bytes_read,
            "bytes_truncated": rep.bytes_truncated,
            "sessions": live,
            "expired_dropped": rep.expired_dropped,
            "duration_ms": ms(rep.duration),
        }));
    }
    let torn = if rep.bytes_truncated == 0 {
        "none".to_owned()
    } else {
        format!(
            "{} bytes cut off (a write a crash interrupted; any open does this)",
            rep.bytes_truncated
        )
    };
    say(&format!(
        "ok: {} ({} backend)\n\
         records    {} from {} files ({}), every one checksummed and valid, in {:.2} s\n\
         torn tail  {torn}\n\
         sessions   {} live; {} past their deadline (dropped, as any open does)\n\
         indexes    sessions, public ids, users and timers agree",
        dir.display(),
        rep.backend,
        HumanCount(rep.records),
        rep.files,
        HumanBytes(rep.bytes_read),
        rep.duration.as_secs_f64(),
        HumanCount(live as u64),
        rep.expired_dropped
    ))
}

/// Writes every live session of `store` to `w` as JSON lines; returns how many.
fn write_export(ctx: &Ctx, store: &Handle, w: &mut impl Write) -> Result<usize, Fail> {
    let bar = ctx
        .progress
        .sessions(store.len()? as u64, "exporting".into());
    let n = store.export(|rec| {
        serde_json::to_writer(&mut *w, &jsonl::to_line(&rec))
            .map_err(io::Error::from)
            .and_then(|()| w.write_all(b"\n"))
            .map_err(|source| Error::Io {
                context: "writing the export".into(),
                source,
            })?;
        bar.inc(1);
        Ok(())
    });
    bar.finish_and_clear();
    let n = n?;
    w.flush().map_err(io_fail("writing the export".into()))?;
    Ok(n)
}

/// Creates (or truncates) `path` for writing, readable and writable by its owner only
/// (0600 on Unix, whatever the umask): an export holds every session's data. A file
/// left there by an interrupted run gets that mode too.
fn private_file(path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    let f = o.open(path)?;
    #[cfg(unix)]
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

fn export(ctx: &Ctx, out: Option<&Path>) -> Result<(), Fail> {
    let store = ctx.handle(false)?;
    let Some(path) = out else {
        let n = write_export(ctx, &store, &mut BufWriter::new(io::stdout().lock()))?;
        ctx.note(&format!(
            "exported {} sessions from {}",
            HumanCount(n as u64),
            ctx.shown()
        ));
        return Ok(());
    };
    let Some(name) = path.file_name() else {
        return Err(Fail(format!("--out {}: not a file name", path.display())));
    };
    let mut partial_name = name.to_os_string();
    partial_name.push(".partial");
    let partial = path.with_file_name(partial_name);
    let written = (|| {
        let file =
            private_file(&partial).map_err(io_fail(format!("creating {}", partial.display())))?;
        let mut w = BufWriter::new(file);
        let n = write_export(ctx, &store, &mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| Fail(format!("writing {}: {}", partial.display(), e.error())))?;
        file.sync_all()
            .map_err(io_fail(format!("syncing {}", partial.display())))?;
        std::fs::rename(&partial, path).map_err(io_fail(format!(
            "renaming {} to {}",
            partial.display(),
            path.display()
        )))?;
        Ok(n)
    })();
    match written {
        Ok(n) => {
            ctx.note(&format!(
                "exported {} sessions from {} to {}",
                HumanCount(n as u64),
                ctx.shown(),
                path.display()
            ));
            Ok(())
        }
        Err(fail) => {
            let _ = std::fs::remove_file(&partial);
            Err(fail)
        }
    }
}

/// Line numbers for a message: "line 4", "lines 4, 9, 17, …".
fn line_list(lines: &[usize]) -> String {
    const SHOWN: usize = 10;
    let mut parts: Vec<String> = lines.iter().take(SHOWN).map(usize::to_string).collect();
    if lines.len() > SHOWN {
        parts.push("…".into());
    }
    format!(
        "line{} {}",
        if lines.len() == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

fn import(ctx: &Ctx, file: Option<&Path>, skip_existing: bool, json: bool) -> Result<(), Fail> {
    let (input, len, source): (Box<dyn Read>, Option<u64>, String) = match file {
        Some(p) if p != Path::new("-") => {
            let f = File::open(p).map_err(io_fail(format!("opening {}", p.display())))?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(f), len, p.display().to_string())
        }
        _ => {
            if io::stdin().is_terminal() {
                ctx.note("reading sessions from stdin (end with Ctrl-D)");
            }
            (Box::new(io::stdin().lock()), None, "stdin".into())
        }
    };
    let limits = cli_limits();

    // 1. Read and check every line, before the store is even opened (so a bad file
    //    never creates a directory); import nothing if any is bad.
    let bar = ctx.progress.bytes(len, format!("checking {source}"));
    let mut reader = BufReader::new(bar.wrap_read(input));
    let mut records = Vec::new();
    let mut bad: Vec<(usize, String)> = Vec::new();
    let (mut ids, mut hashes) = (HashMap::new(), HashMap::new());
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(io_fail(format!("reading {source}")))?;
        if n == 0 {
            break;
        }
        line += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            bad.push((line, "not valid UTF-8".into()));
            continue;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let rec = match jsonl::parse(text, &limits) {
            Ok(rec) => rec,
            Err(e) => {
                bad.push((line, e));
                continue;
            }
        };
        if let Some(first) = ids.get(&rec.id.as_u128()) {
            bad.push((
                line,
                format!("session {} already appears on line {first}", rec.id),
            ));
            continue;
        }
        if let Some(first) = hashes.get(&rec.token_hash.as_u128()) {
            bad.push((
                line,
                format!("its token_hash already appears on line {first}"),
            ));
            continue;
        }
        ids.insert(rec.id.as_u128(), line);
        hashes.insert(rec.token_hash.as_u128(), line);
        records.push((line, rec));
    }
    bar.finish_and_clear();
    drop((ids, hashes));
    refuse_bad_lines(&source, &bad)?;

    // 2. Check against what the store holds.
    let store = ctx.handle(true)?;
    let mut existing: Vec<usize> = Vec::new();
    let bar = ctx
        .progress
        .sessions(records.len() as u64, "checking the store".into());
    let live = store.live(records.iter().map(|(_, rec)| rec.id).collect(), || {
        bar.inc(1)
    });
    bar.finish_and_clear();
    let mut new = Vec::with_capacity(records.len());
    for ((line, rec), live) in records.into_iter().zip(live?) {
        if !live {
            new.push((line, rec));
        } else if skip_existing {
            existing.push(line);
        } else {
            bad.push((
                line,
                format!(
                    "session {} is already in the store (--skip-existing skips such lines)",
                    rec.id
                ),
            ));
        }
    }
    let records = new;
    refuse_bad_lines(&source, &bad)?;

    // 3. Import; on a refusal, take back what this run imported.
    let bar = ctx
        .progress
        .sessions(records.len() as u64, "importing".into());
    let mut imported: Vec<(usize, SessionId)> = Vec::with_capacity(records.len());
    let mut expired: Vec<usize> = Vec::new();
    let mut refused: Option<(usize, Error)> = None;
    let (lines, records): (Vec<_>, Vec<_>) = records.into_iter().unzip();
    let ids: Vec<SessionId> = records.iter().map(|rec| rec.id).collect();
    store.import_each(records, |i, result| {
        bar.inc(1);
        let line = lines[i];
        match result {
            Ok(true) => imported.push((line, ids[i])),
            Ok(false) => expired.push(line),
            Err(Error::Exists { .. }) if skip_existing => existing.push(line),
            Err(e) => {
                // With calls in flight, more than one may fail: report the first line.
                if refused.as_ref().is_none_or(|(l, _)| line < *l) {
                    refused = Some((line, e));
                }
            }
        }
        refused.is_none()
    });
    bar.finish_and_clear();
    if let Some((line, e)) = refused {
        imported.sort_unstable();
        return Err(undo(&store, &source, line, &e, &imported));
    }
    store.close()?;
    imported.sort_unstable();
    expired.sort_unstable();
    existing.sort_unstable();
    if json {
        return say_json(&json!({
            "imported": imported.len(),
            "skipped_expired": expired,
            "skipped_existing": existing,
        }));
    }
    let mut text = format!(
        "imported {} session{} into {}",
        imported.len(),
        if imported.len() == 1 { "" } else { "s" },
        ctx.shown()
    );
    if !expired.is_empty() {
        text.push_str(&format!(
            "\nskipped {} already past their deadline ({})",
            expired.len(),
            line_list(&expired)
        ));
    }
    if !existing.is_empty() {
        text.push_str(&format!(
            "\nskipped {} already in the store ({})",
            existing.len(),
            line_list(&existing)
        ));
    }
    say(&text)
}

/// Fails, listing the first bad lines, if there are any.
fn refuse_bad_lines(source: &str, bad: &[(usize, String)]) -> Result<(), Fail> {
    const SHOWN: usize = 20;
    if bad.is_empty() {
        return Ok(());
    }
    for (line, msg) in bad.iter().take(SHOWN) {
        eprintln!("{source}:{line}: {msg}");
    }
    if bad.len() > SHOWN {
        eprintln!("… and {} more bad lines", bad.len() - SHOWN);
    }
    Err(Fail(format!(
        "{} bad line{} in {source}; nothing was imported",
        bad.len(),
        if bad.len() == 1 { "" } else { "s" }
    )))
}

/// After the store refused line `line`, ends the sessions this run imported, so the
/// import leaves nothing behind; the failure says exactly what, if anything, remains.
fn undo(
    store: &Handle,
    source: &str,
    line: usize,
    e: &Error,
    imported: &[(usize, SessionId)],
) -> Fail {
    let refused = format!("{source}:{line}: the store refused the session: {e}");
    let mut left: Vec<usize> = Vec::new();
    let mut first_err = None;
    for &(l, id) in imported {
        if let Err(err) = store.end_by_id(id) {
            left.push(l);
            first_err.get_or_insert(err);
        }
    }
    if let Err(err) = store.flush() {
        // Nothing taken back is known to be durable: report every line as left.
        left = imported.iter().map(|&(l, _)| l).collect();
        first_err.get_or_insert(err);
    }
    match first_err {
        None => Fail(format!(
            "{refused}; the {} session{} this run imported were removed again: nothing \
             was imported",
            imported.len(),
            if imported.len() == 1 { "" } else { "s" }
        )),
        Some(err) => Fail(format!(
            "{refused}; removing the sessions this run imported failed too ({err}): the \
             sessions of {} may remain",
            line_list(&left)
        )),
    }
}
