//! A `redis-server` child for tests (and the throughput bench): Debian's binary on a
//! free loopback port with its own temporary directory, stopped by pid (killed, then
//! waited for) on drop. It can be killed with SIGKILL and restarted on the same port
//! and directory, to test what survives a crash under each persistence setting.
//!
//! If `redis-server` is not installed, [`RedisServer::start`] returns `None` and the
//! test prints that it was skipped — unless `SESSIONDB_REQUIRE_REDIS=1` (set by CI),
//! in which case it panics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

/// No persistence: what a cache-style Redis runs with.
pub const NO_PERSISTENCE: &[&str] = &["--save", "", "--appendonly", "no"];
/// AOF with an fsync per write: nothing acknowledged is lost.
pub const AOF_ALWAYS: &[&str] = &[
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
];

fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl RedisServer {
    /// Starts a server with `persistence` arguments (see [`NO_PERSISTENCE`],
    /// [`AOF_ALWAYS`]); `None` (after printing why) if redis-server is not installed.
    pub fn start(persistence: &[&str]) -> Option<RedisServer> {
        if !installed() {
            if std::env::var("SESSIONDB_REQUIRE_REDIS").is_ok_and(|v| v == "1") {
                panic!("redis-server is not installed (apt-get install redis-server)");
            }
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        Some(Self::launch(persistence).unwrap_or_else(|e| panic!("{e}")))
    }

    /// As [`Self::start`], but says why instead of skipping or panicking: for the
    /// benches, which go on without Redis.
    pub fn try_start(persistence: &[&str]) -> Result<RedisServer, String> {
        if !installed() {
            return Err("redis-server not installed".to_owned());
        }
        Self::launch(persistence)
    }

    fn launch(persistence: &[&str]) -> Result<RedisServer, String> {
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir: tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?,
            args: persistence.iter().map(|s| s.to_string()).collect(),
        };
        // A port is free when picked but could be taken before redis binds it: retry.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return Ok(server);
            }
        }
        Err(format!(
            "redis-server did not start; see {}",
            server.log_path().display()
        ))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The directory the server keeps its files in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(["--daemonize", "no"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                self.child = None;
                return false; // exited: most likely the port was taken
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        // LOADING (replaying the AOF) is an error reply, not PONG.
        redis::cmd("PING").query::<String>(&mut c).is_ok()
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the process dies at once, as in a crash or an OOM kill.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and directory (after [`Self::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not restart; see {}",
            self.log_path().display()
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of `n` primaries (no replicas), each a [`RedisServer`] with cluster
/// mode on, joined with `redis-cli --cluster create`; stopped with its servers.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `None` (after printing why) if redis-server is not installed, as
    /// [`RedisServer::start`].
    pub fn start(n: usize) -> Option<RedisCluster> {
        let args = [
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
        ];
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(RedisServer::start(&args)?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.ready() {
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    /// Every node says the cluster is ok and knows every node.
    fn ready(&self) -> bool {
        self.nodes.iter().all(|node| {
            let Ok(client) = redis::Client::open(node.url()) else {
                return false;
            };
            let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
                return false;
            };
            let info: String = match redis::cmd("CLUSTER").arg("INFO").query(&mut c) {
                Ok(i) => i,
                Err(_) => return false,
            };
            info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
        })
    }

    /// The nodes' URLs, to seed a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
