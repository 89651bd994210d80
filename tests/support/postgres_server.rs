//! A throwaway PostgreSQL cluster for tests (and the benches): Debian's server binaries,
//! `initdb` into a temporary directory, a `postgres` child on a free loopback port with
//! trust authentication, a superuser `sessiondb` and a database `sessiondb`; stopped by
//! pid (SIGQUIT, an immediate shutdown, then waited for) on drop. It can be killed with
//! SIGKILL and restarted on the same port and directory, to test what survives a crash.
//!
//! PostgreSQL refuses to run as root: when the tests are root, `initdb` and `postgres` run
//! as the `postgres` user the Debian package creates (the temporary directory is handed
//! to it, mode 0700).
//!
//! [`shared_url`] is one cluster for every test of the process, started on first use and
//! stopped when the process exits (an `atexit` handler, and a watchdog shell for a
//! process killed by a signal); `SESSIONDB_TEST_POSTGRES_URL` (set by `.ci/postgres`) points it
//! at a server started elsewhere instead. [`fresh_schema`] names a schema of one's own.
//!
//! [`PostgresServer::start_with`] starts one with extra `-c` settings and files of its
//! own in the data directory: a TLS server's certificate and key, say.
//!
//! If PostgreSQL is not installed, [`PostgresServer::start`] and [`shared_url`] return
//! `None` and the test prints that it was skipped — unless `SESSIONDB_REQUIRE_POSTGRES=1`
//! (set by CI), in which case they panic. The binaries are looked for in
//! `SESSIONDB_POSTGRES_BINDIR`, else the newest `/usr/lib/postgresql/*/bin`, else
//! `pg_config --bindir`, else the `PATH`.

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The database superuser (`initdb -U`) and the database the URL names.
pub const USER: &str = "sessiondb";
pub const DATABASE: &str = "sessiondb";

/// How long a start (or a restart, with its crash recovery) may take.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

const INSTALL_HINT: &str = "PostgreSQL is not installed (apt-get install postgresql)";

pub struct PostgresServer {
    child: Option<Child>,
    /// The postmaster's pid: the child's, kept after [`Self::kill9`].
    pid: u32,
    port: u16,
    /// Holds `data/` (the cluster) and `postgres.log`; owned by the `postgres` user when
    /// the tests are root.
    dir: tempfile::TempDir,
    bindir: PathBuf,
    /// The uid and gid `initdb` and `postgres` run as, when the tests are root.
    run_as: Option<(u32, u32)>,
    /// `-c` settings given on every start after the built-in ones ([`Self::start_with`]).
    settings: Vec<String>,
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "postgres", "pg_isready"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

/// Where `initdb`, `postgres`, `pg_isready`, `createdb` and `psql` are; `None` if
/// PostgreSQL's server is not installed.
pub fn bindir() -> Option<PathBuf> {
    static BINDIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    BINDIR.get_or_init(find_bindir).clone()
}

fn find_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SESSIONDB_POSTGRES_BINDIR") {
        return Some(PathBuf::from(dir)).filter(|d| has_server(d));
    }
    // Debian: /usr/lib/postgresql/<version>/bin, the newest version first ("9.6" < "15").
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Some(dir);
        }
    }
    std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).find(|d| has_server(d)))
}

fn required() -> bool {
    std::env::var("SESSIONDB_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// `None` after printing that the test is skipped, or a panic if PostgreSQL is required.
fn skip() -> Option<PathBuf> {
    if let Some(dir) = bindir() {
        return Some(dir);
    }
    if required() {
        panic!("{INSTALL_HINT}");
    }
    eprintln!("skipped: {INSTALL_HINT}");
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The uid and gid of the `postgres` user when the tests are root (the server will not
/// run as root); `None` when they are not.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| format!("running id {flag} postgres: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                format!(
                    "the tests run as root and PostgreSQL will not: they need a `postgres` \
                     user to run it as (id {flag} postgres: {})",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

/// What the command printed, for an error message.
fn output_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `sql` with `psql` against `url` (no `.psqlrc`, stop at the first error,
/// unaligned tuples only): what it printed, or why it failed.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let program = bindir().map_or_else(|| PathBuf::from("psql"), |d| d.join("psql"));
    let out = Command::new(&program)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-d", url, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("psql -c {sql:?} failed: {}", output_of(&out)))
    }
}

/// The pids of `pid`'s children, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

/// The process is gone (or a zombie: it holds nothing any more).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions; a pid that is gone only makes it fail.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

impl PostgresServer {
    /// Starts a cluster of its own; `None` (after printing why) if PostgreSQL is not
    /// installed, or a panic if `SESSIONDB_REQUIRE_POSTGRES=1`. A server that is
    /// installed but does not start is a panic, with the tail of its log.
    pub fn start() -> Option<PostgresServer> {
        Self::start_with(&[], &[])
    }

    /// As [`Self::start`], with `settings` (`name=value`) given as `-c` options on every
    /// start, after (and so over) the built-in ones, and `files` (a name and its bytes)
    /// written into the data directory before the first start: mode 0600, owned by the
    /// server's user, as PostgreSQL wants a key file. A relative path in a setting is
    /// relative to the data directory:
    ///
    /// ```ignore
    /// PostgresServer::start_with(
    ///     &["ssl=on", "ssl_cert_file=server.crt", "ssl_key_file=server.key"],
    ///     &[("server.crt", &cert_pem), ("server.key", &key_pem)],
    /// )
    /// ```
    pub fn start_with(settings: &[&str], files: &[(&str, &[u8])]) -> Option<PostgresServer> {
        let bindir = skip()?;
        Some(Self::launch_with(bindir, settings, files).unwrap_or_else(|e| panic!("{e}")))
    }

    /// As [`Self::start`], but says why instead of skipping or panicking: for the
    /// benches, which go on without PostgreSQL.
    pub fn try_start() -> Result<PostgresServer, String> {
        let bindir = bindir().ok_or_else(|| INSTALL_HINT.to_owned())?;
        Self::launch(bindir)
    }

    fn launch(bindir: PathBuf) -> Result<PostgresServer, String> {
        Self::launch_with(bindir, &[], &[])
    }

    fn launch_with(
        bindir: PathBuf,
        settings: &[&str],
        files: &[(&str, &[u8])],
    ) -> Result<PostgresServer, String> {
        let run_as = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("sessiondb-pg-")
            .tempdir()
            .map_err(|e| format!("a temporary directory: {e}"))?;
        // The directory is mode 0700 (tempfile's): the server's user must own it.
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown {} to postgres: {e}", dir.path().display()))?;
        }
        let mut server = PostgresServer {
            child: None,
            pid: 0,
            port: 0,
            dir,
            bindir,
            run_as,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
        };
        let out = server
            .server_command("initdb")
            .arg("-D")
            .arg(server.data_dir())
            .args(["-U", USER, "--auth=trust", "--encoding=UTF8", "--locale=C"])
            // Throwaway data: no need to flush what initdb writes.
            .arg("--no-sync")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", output_of(&out)));
        }
        for (name, bytes) in files {
            server.write_data_file(name, bytes)?;
        }
        // A port is free when picked but could be taken before postgres binds it: retry.
        let mut why = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => {
                    server.create_database()?;
                    return Ok(server);
                }
                Err(e) => why = e,
            }
        }
        Err(format!("postgres did not start: {why}"))
    }

    /// A command for one of the server's programs, as the `postgres` user when root.
    fn server_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bindir.join(program));
        // The test's own working directory may be closed to the `postgres` user.
        command.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            // std drops the supplementary groups too when root sets a uid.
            command.uid(uid).gid(gid);
        }
        command
    }

    fn create_database(&self) -> Result<(), String> {
        let out = Command::new(self.bindir.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", USER, DATABASE])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running createdb: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("createdb {DATABASE} failed: {}", output_of(&out)))
        }
    }

    /// Writes `name` into the data directory: mode 0600, owned by the server's user.
    fn write_data_file(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.data_dir().join(name);
        let mut file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        file.write_all(bytes)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(|e| format!("chown {} to postgres: {e}", path.display()))?;
        }
        Ok(())
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log (its stderr, every start appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The log's last lines, for an error message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("{} (last lines):\n{tail}", self.log_path().display())
    }

    /// Starts the postmaster on `self.port` and waits until it accepts connections; an
    /// error (the child stopped and waited for) if it exits or does not answer in time.
    fn spawn(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("opening {}: {e}", self.log_path().display()))?;
        let log2 = log.try_clone().map_err(|e| format!("the log: {e}"))?;
        let port = format!("port={}", self.port);
        let mut command = self.server_command("postgres");
        command.arg("-D").arg(self.data_dir());
        for setting in [
            "listen_addresses=127.0.0.1",
            port.as_str(),
            // TCP only: no socket or lock file in /var/run/postgresql or /tmp.
            "unix_socket_directories=",
            "fsync=on",
            "synchronous_commit=on",
            "max_connections=300",
            "shared_buffers=32MB",
            "logging_collector=off",
            "log_destination=stderr",
        ]
        .into_iter()
        .chain(self.settings.iter().map(String::as_str))
        {
            command.arg("-c").arg(setting);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawning postgres: {e}"))?;
        self.pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                // Most likely the port was taken, or (on a restart) the old server's
                // processes still hold its shared memory.
                return Err(format!("postgres exited ({status}); {}", self.log_tail()));
            }
            if self.ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        Err(format!(
            "postgres did not accept connections within {READY_TIMEOUT:?}; {}",
            self.log_tail()
        ))
    }

    /// Something listens on the port and says it accepts connections (not "the database
    /// system is starting up", as during crash recovery).
    fn ready(&self) -> bool {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return false;
        }
        Command::new(self.bindir.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", USER, "-d", DATABASE, "-t", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `postgres://sessiondb@127.0.0.1:<port>/sessiondb`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id (the last one's after [`Self::kill9`]).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Runs `sql` with `psql` against [`Self::url`].
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        psql(&self.url(), sql)
    }

    /// SIGKILL to the postmaster: it dies at once, as in a crash or an OOM kill. Its
    /// backends notice and exit by themselves; this waits for them too (up to 10 s), so
    /// that a [`Self::restart`] does not find its shared memory still in use.
    pub fn kill9(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let children = children_of(self.pid);
        let _ = c.kill();
        let _ = c.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !children.iter().all(|&p| gone(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port and directory (after [`Self::kill9`],
    /// or a stop) and waits until it accepts connections: crash recovery included.
    pub fn restart(&mut self) {
        self.kill9();
        // After a SIGKILL the old backends may hold the shared memory a moment longer,
        // and postgres then refuses to start: try again until the deadline.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!("postgres did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// SIGQUIT (an immediate shutdown: no checkpoint, the backends told to quit) and a
    /// wait; SIGKILL if it takes more than 10 s.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        signal(self.pid, libc::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(c.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shared cluster's postmaster, and its temporary directory, for the exit handler.
static SHARED_PID: AtomicU32 = AtomicU32::new(0);
static SHARED_DIR: OnceLock<PathBuf> = OnceLock::new();

/// At exit: the shared cluster stopped (SIGQUIT, then SIGKILL after 10 s), waited for,
/// and its directory removed. Statics are never dropped, so nothing else would.
extern "C" fn stop_shared_at_exit() {
    let pid = SHARED_PID.swap(0, Ordering::SeqCst);
    if pid == 0 {
        return;
    }
    let pid = pid as libc::pid_t;
    // SAFETY: kill and waitpid on our own child, with a null status pointer (allowed).
    unsafe {
        libc::kill(pid, libc::SIGQUIT);
        let mut waited = false;
        for _ in 0..1000 {
            if libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) != 0 {
                waited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !waited {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    if let Some(dir) = SHARED_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The shared cluster outlives nothing: an `atexit` handler for a normal exit (a failed
/// test included), and a detached shell that waits for this process to be gone, for a
/// test binary killed by a signal.
fn stop_at_exit(server: &PostgresServer) {
    SHARED_PID.store(server.pid(), Ordering::SeqCst);
    let _ = SHARED_DIR.set(server.dir.path().to_owned());
    // SAFETY: registers a handler that takes no arguments; it runs once, at exit.
    unsafe {
        libc::atexit(stop_shared_at_exit);
    }
    // The postmaster's command line names its data directory: a pid reused by another
    // process is left alone.
    let script = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        if grep -qaF -- "$3" "/proc/$2/cmdline" 2>/dev/null; then
            kill -QUIT "$2" 2>/dev/null
            for _ in $(seq 100); do
                grep -qaF -- "$3" "/proc/$2/cmdline" 2>/dev/null || break
                sleep 0.1
            done
        fi
        rm -rf -- "$4"
    "#;
    let spawned = Command::new("sh")
        .args(["-c", script, "postgres-watchdog"])
        .arg(std::process::id().to_string())
        .arg(server.pid().to_string())
        .arg(server.data_dir())
        .arg(server.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C to the tests does not stop it first.
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        eprintln!("warning: no watchdog for the shared PostgreSQL server: {e}");
    }
}

/// The URL of a database on one cluster shared by every test of the process, started on
/// first use and stopped at exit. If `SESSIONDB_TEST_POSTGRES_URL` is set, that URL, and
/// nothing is started. `None` (after printing why) if PostgreSQL is not installed, or a
/// panic if `SESSIONDB_REQUIRE_POSTGRES=1`, as [`PostgresServer::start`].
pub fn shared_url() -> Option<String> {
    if let Some(url) = std::env::var("SESSIONDB_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Some(url);
    }
    static SHARED: OnceLock<Result<PostgresServer, String>> = OnceLock::new();
    let bindir = skip()?;
    let shared = SHARED.get_or_init(|| {
        let server = PostgresServer::launch(bindir)?;
        stop_at_exit(&server);
        Ok(server)
    });
    match shared {
        Ok(server) => Some(server.url()),
        Err(e) => panic!("the shared PostgreSQL server did not start: {e}"),
    }
}

/// A schema name no other test uses, in this process or in another sharing the server
/// (now or in an earlier run): `t_<pid>_<start time>_<counter>`, lowercase, well under
/// PostgreSQL's 63 bytes.
pub fn fresh_schema() -> String {
    static STAMP: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stamp = STAMP.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t_{}_{stamp:x}_{n}", std::process::id())
}
