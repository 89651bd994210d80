//! The command line: its clap definitions (global options, commands, their help) and
//! the parsing of the values given, and [`cli_limits`], the limits those values, every
//! store this tool opens and every line it imports are held to.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use sessiondb::{Limits, SessionId, UserId};

use crate::human;

const ABOUT: &str =
    "Inspect and administer a sessiondb store: a directory, or sessions in Redis or PostgreSQL.";

const AFTER_HELP: &str = "\
A store directory must not be open in any process: stop the application first. While
another process holds the directory's lock, every command fails with exit status 1 and
names that process. Sessions in Redis (--redis URL, keys under --redis-prefix) or
PostgreSQL (--postgres URL, tables in --postgres-schema) are administered while the
application runs: every command is one atomic step per session (a script on Redis, a
transaction on PostgreSQL), as the application's own calls are.

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
  sessiondb --postgres postgres://app@db.internal/app stats
  sessiondb -d ./sessions export | sessiondb --postgres postgres://app@db.internal/app import
      (moves an embedded store to PostgreSQL: every cookie keeps working)

Exit status: 0 done; 1 the operation failed (the store is locked, missing or
damaged, an import line is bad, ...); 2 the command line is wrong.";

const EXPORT_HELP: &str = "\
Format: JSON lines, one object per session, schema version 1:
  {\"v\":1,\"id\":\"<public id>\",\"token_hash\":\"<32 hex digits>\",\"user\":\"alice\"|null,
   \"label\":\"Firefox\"|null,\"created_ms\":N,\"authenticated_ms\":N|null,\"absolute_ms\":N,
   \"idle_timeout_ms\":N|null,\"last_seen_ms\":N,\"version\":N,
   \"data\":{\"<key>\":\"<base64 of the value's raw bytes>\"}}
then one line per user's not-before time (`revoke --before`), schema version 2:
  {\"v\":2,\"not_before\":{\"user\":\"alice\",\"at_ms\":N}}
(importing it keeps refusing the sessions it revoked; a build that reads only version 1
refuses such an export whole). A session that says how it signed in or what device it
is gets schema version 3, with these fields besides version 1's:
  \"factors\":[{\"method\":\"password\",\"level\":1,\"at_ms\":N}],
  \"user_agent\":\"...\"|null,\"address\":\"203.0.113.0\"|null,\"device_ms\":N|null
Sessions come in no particular order. Times are milliseconds since the Unix epoch
(absolute_ms 18446744073709551615: no deadline). The token is not there — the store never had it, only its hash — yet an
imported session answers to the same cookie. Sessions already past their deadline are
not exported. With --out the file appears only once complete (written beside it as
FILE.partial, fsynced, renamed), and only its owner may read or write it (mode 0600,
like the store's own files: it holds every session's data); a redirected stdout gets
the mode the shell gives it. A directory, Redis and PostgreSQL export the same format,
so each imports into the others. From Redis or PostgreSQL, the sessions are read in
batches while the application keeps running: a session created or ended during the
export may or may not be in it.

Examples:
  sessiondb -d ./sessions export > backup.jsonl
  sessiondb -d ./sessions export --out backup.jsonl
  sessiondb --redis redis://127.0.0.1:6379/ export --out backup.jsonl
  sessiondb --postgres postgres://app@db.internal/app export --out backup.jsonl";

const IMPORT_HELP: &str = "\
Reads the format `export` writes (see `sessiondb export --help`). Every line is checked
first — JSON, schema version, ids, hashes, sizes, duplicates within the input, sessions
already in the store — and if any is bad, each bad line is reported with its number and
nothing is imported. Then the sessions are imported, and made durable before the
command returns. Sessions already past their deadline, or signed in before their
user's not-before time there, are skipped and reported. If the
store refuses a session after all (a token hash already there), the sessions this run
imported are removed again and the line is reported: nothing is half-imported. (If
the command is killed while importing, the sessions imported until then stay: run it
again with --skip-existing to finish.)
The directory is created if it does not exist (log backend unless --backend sled).
Into Redis, each session is written as the server acknowledges it; how durable that is
depends on the server's persistence (appendfsync). Into PostgreSQL, each session is
one committed transaction (durable as the server's synchronous_commit says); the
schema (--postgres-schema) is created if it does not exist, as the application's
first start would.

Examples:
  sessiondb -d ./restored import backup.jsonl
  sessiondb -d ./sessions export | sessiondb -d ./copy import
  sessiondb -d ./sessions import --skip-existing backup.jsonl
  sessiondb -d ./sessions export | sessiondb --redis redis://127.0.0.1:6379/ import
      (moves an embedded store to Redis: stop the application, import, restart it
      configured for Redis; every cookie keeps working)
  sessiondb --redis redis://127.0.0.1:6379/ export \\
      | sessiondb --postgres postgres://app@db.internal/app import
      (moves sessions from Redis to PostgreSQL, the same way)";

#[derive(Parser)]
#[command(
    name = "sessiondb",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    group(ArgGroup::new("store").args(["dir", "redis", "postgres"]).multiple(false))
)]
pub struct Cli {
    // --dir, --redis and --postgres read their environment variables in `main`, not
    // through clap: clap would count a variable as given and refuse `--redis URL` while
    // SESSIONDB_DIR is exported, where the command line should win.
    /// The store directory [env: SESSIONDB_DIR]
    #[arg(short, long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Sessions kept in Redis or Valkey instead of a directory:
    /// redis://[user:password@]host:port[/db], rediss://… (TLS), or
    /// redis+unix:///path/to/socket. Needs a sessiondb built with `--features cli,redis`
    /// [env: SESSIONDB_REDIS_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub redis: Option<String>,
    /// The prefix of the store's keys in Redis: the application's RedisOptions::prefix
    /// [default: sessiondb]
    #[arg(long, global = true, value_name = "PREFIX")]
    pub redis_prefix: Option<String>,
    /// Sessions kept in PostgreSQL instead of a directory:
    /// postgres://[user[:password]@]host[:port]/database[?options], or a key=value
    /// connection string; TLS as its sslmode says in a build with `postgres-tls`, else
    /// none. Needs a sessiondb built with
    /// `--features cli,postgres` [env: SESSIONDB_POSTGRES_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub postgres: Option<String>,
    /// The PostgreSQL schema of the store's tables: the application's
    /// PostgresOptions::schema [default: sessiondb]
    #[arg(long, global = true, value_name = "SCHEMA", value_parser = parse_schema)]
    pub postgres_schema: Option<String>,
    /// The storage backend. By default it is detected from the directory's files; name
    /// it only to import into a new directory with sled, or when a directory holds both
    #[arg(long, global = true, value_enum, default_value_t = BackendArg::Auto, value_name = "KIND")]
    pub backend: BackendArg,
    /// The application's Options::auth_lifetime, if it sets one (e.g. 90d), so this tool
    /// agrees with it on which sessions have expired
    #[arg(long, global = true, value_name = "DURATION", value_parser = human::parse_duration)]
    pub auth_lifetime: Option<Duration>,
    /// No progress bars and no notes on stderr (errors are still printed). Progress is
    /// drawn only when stderr is a terminal anyway
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Detect it from the directory's files
    Auto,
    /// The log-structured store (the default for a new directory)
    Log,
    /// sled (needs a sessiondb built with the `sled` feature)
    Sled,
}

#[derive(Subcommand)]
pub enum Command {
    /// Counts: sessions, users, bytes on disk and how much of it is dead history, and
    /// what opening the store found (on Redis: live sessions, the server and key prefix;
    /// on PostgreSQL: live sessions, the server and schema)
    Stats {
        /// One JSON object instead of text
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// The gauges in Prometheus's text format (sessiondb_sessions_live, ...), for
        /// a node exporter's textfile collector; label store="<LABEL>"
        #[arg(long, value_name = "LABEL", num_args = 0..=1, default_missing_value = "default")]
        prometheus: Option<String>,
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
    /// Ends every session of a user (--user), those that signed in before a time
    /// (--before), all but one (--keep), or one session by its public id; durable when
    /// the command returns
    #[command(
        after_help = "Examples:\n  sessiondb -d ./sessions revoke --user alice\n  \
                      sessiondb -d ./sessions revoke --user alice --before now\n  \
                      sessiondb -d ./sessions revoke --user alice --keep 0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11\n  \
                      sessiondb -d ./sessions revoke 0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11\n\n\
                      Revoking an id that is not live fails (exit status 1); revoking a user\n\
                      with no sessions revokes 0 and succeeds. --before also keeps any session\n\
                      of the user that signed in earlier from being imported again.",
        group(ArgGroup::new("target").required(true).args(["user", "id"]))
    )]
    Revoke {
        /// End all of this user's sessions
        #[arg(short, long, value_name = "USER", value_parser = parse_user)]
        user: Option<String>,
        /// Only those that signed in before this time (`now`, ms since 1970, or UTC like
        /// 2026-12-06T23:59:00Z), and make it the user's not-before time
        #[arg(long, value_name = "TIME", requires = "user", value_parser = crate::human::parse_time)]
        before: Option<sessiondb::Timestamp>,
        /// All but this one of the user's sessions, by its public id ("sign out every
        /// other device")
        #[arg(long, value_name = "PUBLIC_ID", requires = "user", conflicts_with = "before", value_parser = parse_id)]
        keep: Option<SessionId>,
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

/// A schema name as `PostgresOptions::schema` takes it (the store's own rule: the name
/// is spliced into statements unquoted).
#[cfg(feature = "postgres")]
fn parse_schema(s: &str) -> Result<String, String> {
    sessiondb::PostgresOptions::default()
        .schema(s)
        .validate()
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Without the `postgres` feature `--postgres` is refused, and its schema with it.
#[cfg(not(feature = "postgres"))]
fn parse_schema(s: &str) -> Result<String, String> {
    Ok(s.to_owned())
}

fn parse_user(s: &str) -> Result<String, String> {
    UserId::new(s, &cli_limits())
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Limits as wide as the store format allows: an operator's tool must read, list,
/// export and import whatever an application stored, whatever limits it set.
pub fn cli_limits() -> Limits {
    Limits {
        max_key_bytes: u16::MAX as usize,
        max_value_bytes: 1 << 30,
        max_data_bytes: 1 << 30,
        max_user_id_bytes: 1 << 16,
        max_label_bytes: 1 << 16,
    }
}
