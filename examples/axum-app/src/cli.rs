//! The command line of `sessiondb-axum-app`: flags, their defaults and the environment
//! variable for the data directory. Parsed by hand (a few flags do not need a parser
//! crate); every bad flag is a message, never a panic.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::Config;

/// The environment variable naming the data directory when `--data-dir` is not given.
pub const DATA_DIR_ENV: &str = "SESSIONDB_APP_DATA";

/// The environment variable naming the session backend when `--sessions` is not given.
pub const SESSIONS_ENV: &str = "SESSIONDB_APP_SESSIONS";

/// The help text.
pub const USAGE: &str = "\
sessiondb-axum-app: an example app on sessiondb (sign up, log in, your devices)

USAGE: sessiondb-axum-app [FLAGS]

  --data-dir DIR      where accounts (DIR/users.json) and, by default, sessions
                      (DIR/sessions) live [env SESSIONDB_APP_DATA; default
                      ./sessiondb-app-data]
  --sessions WHERE    where sessions live: a directory (the embedded store), memory:,
                      or redis://HOST:PORT/ or postgres://USER@HOST/DB to share them
                      with other processes of the app (give them the same --data-dir
                      for the accounts) [env SESSIONDB_APP_SESSIONS; default
                      DIR/sessions]
  --port N            TCP port [default 3000]
  --bind ADDR         address to listen on [default 127.0.0.1]
  --insecure-http     drop the cookie's Secure flag (and its __Host- prefix), for plain
                      HTTP on your own machine; without it, serve behind HTTPS
  --lifetime DUR      a signed-in session's longest life, from sign-in [default 30d]
  --idle DUR          end a session unused this long, 0 = never [default 24h]
  --visitor-trial DUR a visitor's new session ends this soon unless the visitor comes
                      back with its cookie (bots and crawlers never do); 0 = no trial
                      [default 5m]
  --max-sessions N    the most live sessions; past it the least recently seen
                      visitors make room, and signed-in sessions are never ended;
                      0 = no limit [default 1000000: about 540 MB embedded]
  --reauth DUR        changing the password asks for it again unless this session
                      proved it this recently; 0 = always [default 10m]
  --trust-forwarded-for
                      show the first X-Forwarded-For address as a device's address
                      (behind a reverse proxy that sets it) instead of the peer's
  --metrics           serve GET /metrics: the store's gauges, counters and histograms
                      in Prometheus's text format, to loopback peers only (and not
                      through a proxy: a request with X-Forwarded-For is refused)
  --metrics-public    serve /metrics to any peer (implies --metrics): for a Prometheus
                      on another machine; firewall the port from everyone else
  --metrics-label NAME
                      the store=\"NAME\" label on every series, 1-64 of A-Z a-z 0-9 _ - .
                      [default default]
  -h, --help          this text

DUR is a number with a unit: 90s, 15m, 12h, 30d.";

/// The parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where sessions live, as `sessiondb::Sessions::open` takes it; `None`: the
    /// `sessions` directory inside the data directory.
    pub sessions: Option<String>,
    /// Where to listen.
    pub addr: SocketAddr,
    /// Cookie and lifetime settings.
    pub config: Config,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the app.
    Run(Args),
    /// Print [`USAGE`].
    Help,
}

/// Parses the flags (without the program name). `env_data_dir` and `env_sessions` are
/// the values of [`DATA_DIR_ENV`] and [`SESSIONS_ENV`], if set.
///
/// # Errors
/// A message naming the flag that is unknown, lacks its value or has a bad one.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env_data_dir: Option<String>,
    env_sessions: Option<String>,
) -> Result<Command, String> {
    let mut data_dir = env_data_dir
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("sessiondb-app-data"), PathBuf::from);
    let mut sessions = env_sessions.filter(|s| !s.is_empty());
    let mut port: u16 = 3000;
    let mut ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut config = Config::default();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value (see --help)"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--insecure-http" => config.secure_cookies = false,
            "--trust-forwarded-for" => config.trust_forwarded_for = true,
            "--metrics" => config.metrics = true,
            "--metrics-public" => {
                config.metrics = true;
                config.metrics_public = true;
            }
            "--metrics-label" => config.metrics_label = value("--metrics-label")?,
            "--data-dir" => data_dir = PathBuf::from(value("--data-dir")?),
            "--sessions" => {
                let v = value("--sessions")?;
                if v.is_empty() {
                    return Err(
                        "--sessions needs a directory, memory:, or a redis:// or postgres:// URL"
                            .into(),
                    );
                }
                sessions = Some(v);
            }
            "--port" => {
                let v = value("--port")?;
                port = v
                    .parse()
                    .map_err(|_| format!("--port {v:?}: not a port number (0-65535)"))?;
            }
            "--bind" => {
                let v = value("--bind")?;
                ip = v
                    .parse()
                    .map_err(|_| format!("--bind {v:?}: not an IP address"))?;
            }
            "--lifetime" => {
                let v = value("--lifetime")?;
                config.lifetime =
                    parse_duration(&v).map_err(|e| format!("--lifetime {v:?}: {e}"))?;
            }
            "--idle" => {
                let v = value("--idle")?;
                config.idle_timeout =
                    parse_duration(&v).map_err(|e| format!("--idle {v:?}: {e}"))?;
            }
            "--visitor-trial" => {
                let v = value("--visitor-trial")?;
                config.visitor_trial =
                    parse_duration(&v).map_err(|e| format!("--visitor-trial {v:?}: {e}"))?;
            }
            "--reauth" => {
                let v = value("--reauth")?;
                config.reauth_window =
                    parse_duration(&v).map_err(|e| format!("--reauth {v:?}: {e}"))?;
            }
            "--max-sessions" => {
                let v = value("--max-sessions")?;
                config.max_sessions = v
                    .parse()
                    .map_err(|_| format!("--max-sessions {v:?}: not a whole number"))?;
            }
            other => return Err(format!("unknown flag {other:?} (see --help)")),
        }
    }
    config.validate()?;
    Ok(Command::Run(Args {
        data_dir,
        sessions,
        addr: SocketAddr::new(ip, port),
        config,
    }))
}

/// `90s`, `15m`, `12h`, `30d`, or `0`.
///
/// # Errors
/// A message if there is no number, no known unit, or it overflows.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("add a unit: s, m, h or d")?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| "expected a whole number and a unit")?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err("the unit is s, m, h or d".into()),
    };
    n.checked_mul(per)
        .map(Duration::from_secs)
        .ok_or_else(|| "too long".into())
}

/// `sessions` as the app prints it (startup line, errors): a Redis or PostgreSQL URL's
/// password (in its authority, or a `pass=`/`password=` query parameter) replaced by
/// `***`, so logs never hold it. Anything else is returned as it is.
pub fn redact(sessions: &str) -> String {
    let Some((scheme, rest)) = sessions.split_once("://") else {
        return sessions.to_owned();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => {
            let params: Vec<String> = q
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k @ ("pass" | "password"), _)) => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            (r, format!("?{}", params.join("&")))
        }
        None => (rest, String::new()),
    };
    // Only an '@' before the path belongs to the authority.
    let rest = match rest.rfind('@') {
        Some(at) if !rest[..at].contains('/') => {
            let shown = match rest[..at].split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                // postgres://app@host: a lone field is the user.
                None if scheme.starts_with("postgres") => rest[..at].to_owned(),
                // redis://secret@host: a lone field is the password.
                None => "***".to_owned(),
            };
            format!("{shown}@{}", &rest[at + 1..])
        }
        _ => rest.to_owned(),
    };
    format!("{scheme}://{rest}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: Option<&str>) -> Result<Args, String> {
        match parse(
            args.iter().map(|s| s.to_string()),
            env.map(String::from),
            None,
        )? {
            Command::Run(a) => Ok(a),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_are_secure_cookies_on_loopback_port_3000() {
        let a = run(&[], None).unwrap();
        assert_eq!(a.data_dir, PathBuf::from("sessiondb-app-data"));
        assert_eq!(a.sessions, None, "sessions default to DATA/sessions");
        assert_eq!(a.addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(a.config, Config::default());
        assert!(a.config.secure_cookies);
    }

    #[test]
    fn every_flag_is_read_and_the_env_var_names_the_data_dir() {
        let a = run(
            &[
                "--port",
                "8080",
                "--bind",
                "0.0.0.0",
                "--insecure-http",
                "--lifetime",
                "7d",
                "--idle",
                "30m",
                "--visitor-trial",
                "90s",
                "--max-sessions",
                "5000",
                "--reauth",
                "2m",
                "--trust-forwarded-for",
            ],
            Some("/tmp/x"),
        )
        .unwrap();
        assert!(a.config.trust_forwarded_for);
        assert!(!run(&[], None).unwrap().config.trust_forwarded_for);
        assert!(!a.config.metrics, "metrics are off unless asked for");
        assert_eq!(a.config.visitor_trial, Duration::from_secs(90));
        assert_eq!(a.config.max_sessions, 5000);
        assert_eq!(a.config.reauth_window, Duration::from_secs(120));
        assert!(run(&["--reauth", "never"], None).is_err());
        assert!(run(&["--max-sessions", "-1"], None).is_err());
        assert!(run(&["--visitor-trial", "soon"], None).is_err());
        assert_eq!(a.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(a.addr, "0.0.0.0:8080".parse().unwrap());
        assert!(!a.config.secure_cookies);
        assert_eq!(a.config.lifetime, Duration::from_secs(7 * 86_400));
        assert_eq!(a.config.idle_timeout, Duration::from_secs(1_800));
        let b = run(&["--data-dir", "here"], Some("/tmp/x")).unwrap();
        assert_eq!(
            b.data_dir,
            PathBuf::from("here"),
            "the flag beats the env var"
        );
        assert_eq!(
            parse(["--help".to_string()], None, None).unwrap(),
            Command::Help
        );
    }

    #[test]
    fn metrics_are_off_by_default_loopback_only_with_the_flag_and_public_on_request() {
        let off = run(&[], None).unwrap().config;
        assert!(!off.metrics && !off.metrics_public);
        assert_eq!(off.metrics_label, "default");
        let on = run(&["--metrics", "--metrics-label", "web-1"], None)
            .unwrap()
            .config;
        assert!(on.metrics && !on.metrics_public);
        assert_eq!(on.metrics_label, "web-1");
        assert!(format!("{:?}", on.store_options()).contains(r#"metrics_label: "web-1""#));
        let public = run(&["--metrics-public"], None).unwrap().config;
        assert!(public.metrics && public.metrics_public, "implies --metrics");
        assert!(
            run(&["--metrics-label"], None)
                .unwrap_err()
                .contains("--metrics-label needs a value")
        );
        assert!(
            run(&["--metrics-label", "no spaces"], None)
                .unwrap_err()
                .contains("metrics label")
        );
        assert!(USAGE.contains("--metrics ") && USAGE.contains("--metrics-public"));
    }

    #[test]
    fn sessions_come_from_the_flag_or_else_the_env_var() {
        let parse3 = |args: &[&str], env: Option<&str>| match parse(
            args.iter().map(|s| s.to_string()),
            None,
            env.map(String::from),
        ) {
            Ok(Command::Run(a)) => a.sessions,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            parse3(&["--sessions", "redis://127.0.0.1:6379/"], None).as_deref(),
            Some("redis://127.0.0.1:6379/")
        );
        assert_eq!(
            parse3(&["--sessions", "postgres://app@db/app"], None).as_deref(),
            Some("postgres://app@db/app")
        );
        assert_eq!(parse3(&[], Some("memory:")).as_deref(), Some("memory:"));
        assert_eq!(
            parse3(&["--sessions", "/srv/s"], Some("memory:")).as_deref(),
            Some("/srv/s"),
            "the flag beats the env var"
        );
        assert_eq!(parse3(&[], Some("")), None);
        assert!(run(&["--sessions", ""], None).is_err());
        assert!(
            run(&["--sessions"], None)
                .unwrap_err()
                .contains("--sessions")
        );
    }

    #[test]
    fn bad_flags_are_messages_naming_the_flag() {
        for (args, needle) in [
            (&["--port"][..], "--port needs a value"),
            (&["--port", "70000"][..], "--port"),
            (&["--bind", "localhost:1"][..], "--bind"),
            (&["--lifetime", "10"][..], "add a unit"),
            (
                &["--lifetime", "0"][..],
                "lifetime must be longer than zero",
            ),
            (&["--idle", "5y"][..], "unit is s, m, h or d"),
            (&["--idle", "99999999999999999999d"][..], "--idle"),
            (&["--verbose"][..], "unknown flag"),
        ] {
            let err = run(args, None).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn durations_take_a_unit_and_zero_alone() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("18446744073709551615d").is_err());
    }

    #[test]
    fn redis_passwords_are_hidden_when_the_backend_is_printed() {
        for (given, shown) in [
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            ("redis://app:s3cret@db:6379/2", "redis://app:***@db:6379/2"),
            ("rediss://:s3cret@db/", "rediss://:***@db/"),
            ("redis://s3cret@db/", "redis://***@db/"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            ("memory:", "memory:"),
            ("/srv/app@2/sessions", "/srv/app@2/sessions"),
        ] {
            assert_eq!(redact(given), shown, "{given}");
        }
    }

    #[test]
    fn postgres_passwords_are_hidden_and_the_user_kept_when_the_backend_is_printed() {
        for (given, shown) in [
            (
                "postgres://app@db.internal/app",
                "postgres://app@db.internal/app",
            ),
            (
                "postgres://app:s3cret@db.internal:5432/app",
                "postgres://app:***@db.internal:5432/app",
            ),
            (
                "postgresql://db.internal/app?user=app&password=s3cret",
                "postgresql://db.internal/app?user=app&password=***",
            ),
        ] {
            assert_eq!(redact(given), shown, "{given}");
        }
        assert!(USAGE.contains("postgres://USER@HOST/DB"));
    }
}
