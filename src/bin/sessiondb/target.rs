//! What a command works on: the [`Target`] the command line (or else the environment)
//! names, a store directory, a Redis URL or a PostgreSQL URL, and the [`Ctx`] every
//! command gets, which opens it for an operator: a directory with the backend its
//! files show (log or sled), no reaper and no background compaction, or a connection
//! to Redis or PostgreSQL; all with limits as wide as the format.

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
#[cfg(any(feature = "redis", feature = "postgres"))]
use crate::remote;

/// Where the sessions are.
pub enum Target {
    /// A store directory.
    Dir(PathBuf),
    /// A Redis server, and the prefix of the store's keys there.
    Redis { url: String, prefix: String },
    /// A PostgreSQL database, and the schema of the store's tables there.
    Postgres { url: String, schema: String },
}

/// The three ways to name a store: the flag, as clap's messages name it, and the
/// environment variable read when no flag names one.
const FLAGS: [&str; 3] = ["--dir <DIR>", "--redis <URL>", "--postgres <URL>"];
const ENVS: [&str; 3] = [
    "SESSIONDB_DIR",
    "SESSIONDB_REDIS_URL",
    "SESSIONDB_POSTGRES_URL",
];

/// Where the command line (or else the environment) says the store is; exits with
/// status 2 if it names none, or more than one at once, or options of another kind of
/// store.
pub fn pick(cli: &mut Cli) -> Target {
    let usage = |kind, msg: &str| -> ! { Cli::command().error(kind, msg).exit() };
    let from_env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let url_from_env = |name: &str| {
        from_env(name).map(|v| {
            v.into_string()
                .unwrap_or_else(|_| usage(ErrorKind::InvalidUtf8, &format!("{name} is not UTF-8")))
        })
    };
    // The ArgGroup refuses two stores when both come before the command; a global
    // argument given after it escapes the group's check, so check again here.
    let given = (cli.dir.take(), cli.redis.take(), cli.postgres.take());
    let on_command_line = given.0.is_some() || given.1.is_some() || given.2.is_some();
    let (dir, redis, postgres) = if on_command_line {
        given
    } else {
        (
            from_env(ENVS[0]).map(PathBuf::from),
            url_from_env(ENVS[1]),
            url_from_env(ENVS[2]),
        )
    };
    let named = [dir.is_some(), redis.is_some(), postgres.is_some()];
    let which: Vec<usize> = (0..3).filter(|&i| named[i]).collect();
    match which.as_slice() {
        [] => usage(
            ErrorKind::MissingRequiredArgument,
            "the store is required: pass --dir DIR (or set SESSIONDB_DIR), --redis URL (or \
             set SESSIONDB_REDIS_URL), or --postgres URL (or set SESSIONDB_POSTGRES_URL)",
        ),
        [_] => {}
        [a, b, ..] if on_command_line => usage(
            ErrorKind::ArgumentConflict,
            &format!(
                "the argument '{}' cannot be used with '{}': a command works on one store",
                FLAGS[*a], FLAGS[*b]
            ),
        ),
        [a, b] => usage(
            ErrorKind::ArgumentConflict,
            &format!(
                "{} and {} are both set: pass --dir DIR, --redis URL or --postgres URL to \
                 say which store",
                ENVS[*a], ENVS[*b]
            ),
        ),
        _ => usage(
            ErrorKind::ArgumentConflict,
            "SESSIONDB_DIR, SESSIONDB_REDIS_URL and SESSIONDB_POSTGRES_URL are all set: pass \
             --dir DIR, --redis URL or --postgres URL to say which store",
        ),
    }
    // An option of another kind of store is refused: it would be silently ignored.
    let refuse = |given: bool, option: &str, applies_to: &str, not_to: &str| {
        if given {
            usage(
                ErrorKind::ArgumentConflict,
                &format!("{option} applies to {applies_to}, not to {not_to}"),
            );
        }
    };
    let (a_redis_store, a_postgres_store) = (
        "a Redis store (--redis URL)",
        "a PostgreSQL store (--postgres URL)",
    );
    let prefix_given = cli.redis_prefix.is_some();
    let schema_given = cli.postgres_schema.is_some();
    let backend_given = cli.backend != BackendArg::Auto;
    match (dir, redis, postgres) {
        (Some(dir), _, _) => {
            refuse(
                prefix_given,
                "--redis-prefix",
                a_redis_store,
                "a store directory",
            );
            refuse(
                schema_given,
                "--postgres-schema",
                a_postgres_store,
                "a store directory",
            );
            Target::Dir(dir)
        }
        (None, Some(url), _) => {
            let not_to = "Redis (--redis URL)";
            refuse(backend_given, "--backend", "a store directory", not_to);
            refuse(schema_given, "--postgres-schema", a_postgres_store, "Redis");
            Target::Redis {
                url,
                prefix: cli
                    .redis_prefix
                    .take()
                    .unwrap_or_else(|| "sessiondb".into()),
            }
        }
        (None, None, Some(url)) => {
            let not_to = "PostgreSQL (--postgres URL)";
            refuse(backend_given, "--backend", "a store directory", not_to);
            refuse(prefix_given, "--redis-prefix", a_redis_store, "PostgreSQL");
            Target::Postgres {
                url,
                schema: cli
                    .postgres_schema
                    .take()
                    .unwrap_or_else(|| "sessiondb".into()),
            }
        }
        (None, None, None) => unreachable!("one store is named"),
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
    /// hidden) and key prefix, or the PostgreSQL URL (password hidden) and schema.
    pub fn shown(&self) -> String {
        match &self.target {
            Target::Dir(dir) => dir.display().to_string(),
            Target::Redis { url, prefix } => format!("{} (prefix {prefix:?})", redact(url)),
            Target::Postgres { url, schema } => format!("{} (schema {schema:?})", redact(url)),
        }
    }

    /// The store directory, for the commands that only apply to one; otherwise a
    /// failure that says why not, `why_redis` or `why_postgres`.
    pub fn dir_for(
        &self,
        command: &str,
        why_redis: &str,
        why_postgres: &str,
    ) -> Result<&Path, Fail> {
        let (server, why) = match &self.target {
            Target::Dir(dir) => return Ok(dir),
            Target::Redis { .. } => ("Redis", why_redis),
            Target::Postgres { .. } => ("PostgreSQL", why_postgres),
        };
        Err(Fail(format!(
            "`{command}` applies to a store directory (--dir), not to {server}: {why}"
        )))
    }

    /// Opens the store for an operator: a directory (see [`Ctx::open`]) or a
    /// connection to Redis or PostgreSQL (no reaper, limits as wide as the format).
    /// `create` allows a missing or empty directory, or a PostgreSQL schema that does
    /// not exist yet (for import).
    pub fn handle(&self, create: bool) -> Result<Handle, Fail> {
        match &self.target {
            Target::Dir(dir) => Ok(Handle::Embedded(self.open(dir, create)?)),
            Target::Redis { url, prefix } => self.connect_redis(url, prefix),
            Target::Postgres { url, schema } => self.connect_postgres(url, schema, create),
        }
    }

    /// The options a connection to a server is made with: no reaper (the
    /// application's nodes reap), limits as wide as the format, the application's
    /// auth lifetime.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    fn remote_options(&self) -> Options {
        Options::default()
            .reaper_interval(None)
            .limits(cli_limits())
            .auth_lifetime(self.auth_lifetime)
    }

    /// Runs `connect` under a spinner; a failure's message never shows the URL's
    /// password (the client's message may name the URL it was given).
    #[cfg(any(feature = "redis", feature = "postgres"))]
    fn connecting<T>(
        &self,
        url: &str,
        connect: impl FnOnce() -> Result<T, sessiondb::Error>,
    ) -> Result<T, Fail> {
        let spinner = self
            .progress
            .spinner(format!("connecting to {}", redact(url)));
        let connected = connect();
        spinner.finish_and_clear();
        connected.map_err(|e| {
            let Fail(msg) = Fail::from(e);
            Fail(msg.replace(url, &redact(url)))
        })
    }

    #[cfg(feature = "redis")]
    fn connect_redis(&self, url: &str, prefix: &str) -> Result<Handle, Fail> {
        let opts = self.remote_options();
        let remote = self.connecting(url, || remote::Remote::redis(url, prefix, opts))?;
        Ok(Handle::Redis(remote))
    }

    #[cfg(not(feature = "redis"))]
    fn connect_redis(&self, _url: &str, _prefix: &str) -> Result<Handle, Fail> {
        Err(Fail(
            "this sessiondb was built without Redis support: build it with \
             `--features cli,redis` (cargo install sessiondb --features cli,redis) to use \
             --redis"
                .into(),
        ))
    }

    /// Connects to PostgreSQL. Unless `create`, the schema must hold a store already:
    /// connecting would otherwise create it, and a mistyped `--postgres-schema` must
    /// not leave an empty store behind (as a mistyped `--dir` does not).
    #[cfg(feature = "postgres")]
    fn connect_postgres(&self, url: &str, schema: &str, create: bool) -> Result<Handle, Fail> {
        let opts = self.remote_options();
        let remote =
            self.connecting(url, || remote::Remote::postgres(url, schema, opts, create))?;
        match remote {
            Some(remote) => Ok(Handle::Postgres(remote)),
            None => Err(Fail(format!(
                "{} holds no sessiondb store in schema {schema:?} (nothing was created; only \
                 `import` creates one): check --postgres-schema, the application's \
                 PostgresOptions::schema",
                redact(url)
            ))),
        }
    }

    #[cfg(not(feature = "postgres"))]
    fn connect_postgres(&self, _url: &str, _schema: &str, _create: bool) -> Result<Handle, Fail> {
        Err(Fail(
            "this sessiondb was built without PostgreSQL support: build it with \
             `--features cli,postgres` (cargo install sessiondb --features cli,postgres) to \
             use --postgres"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(target: Target) -> Ctx {
        Ctx {
            target,
            backend: BackendArg::Auto,
            auth_lifetime: None,
            quiet: true,
            progress: Progress::new(true),
        }
    }

    /// PostgreSQL support is a build option: without it, `--postgres` says how to get
    /// it, before anything is connected to (the PostgreSQL commands themselves are
    /// pinned in tests/cli_postgres.rs).
    #[cfg(not(feature = "postgres"))]
    #[test]
    fn without_the_postgres_feature_postgres_urls_are_refused_saying_how_to_build_with_it() {
        let ctx = ctx(Target::Postgres {
            url: "postgres://app:s3cret@127.0.0.1:1/app".into(),
            schema: "sessiondb".into(),
        });
        for create in [false, true] {
            let Err(Fail(msg)) = ctx.handle(create) else {
                panic!("a PostgreSQL store opened without the feature");
            };
            assert!(
                msg.contains("built without PostgreSQL support")
                    && msg.contains("--features cli,postgres")
                    && !msg.contains("s3cret"),
                "{msg}"
            );
        }
    }

    #[test]
    fn the_commands_for_a_directory_say_why_not_on_a_server() {
        let on_redis = ctx(Target::Redis {
            url: "redis://127.0.0.1:1/".into(),
            prefix: "sessiondb".into(),
        });
        let on_postgres = ctx(Target::Postgres {
            url: "postgres://app@127.0.0.1:1/app".into(),
            schema: "myapp".into(),
        });
        let Err(Fail(msg)) = on_redis.dir_for("compact", "why redis", "why postgres") else {
            panic!("Redis is no directory");
        };
        assert_eq!(
            msg,
            "`compact` applies to a store directory (--dir), not to Redis: why redis"
        );
        let Err(Fail(msg)) = on_postgres.dir_for("verify", "why redis", "why postgres") else {
            panic!("PostgreSQL is no directory");
        };
        assert_eq!(
            msg,
            "`verify` applies to a store directory (--dir), not to PostgreSQL: why postgres"
        );
        assert_eq!(
            on_postgres.shown(),
            "postgres://app@127.0.0.1:1/app (schema \"myapp\")"
        );
    }
}
