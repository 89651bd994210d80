//! Two processes of the app, on two ports, sharing one Redis or one PostgreSQL
//! database for sessions and one data directory for accounts: what a deployment behind
//! a load balancer looks like. A browser logs in on one node and is signed in on the
//! other; a device is signed out, and then everything is, from the other node. The app
//! binary runs as it would in production (`--sessions redis://USER:PASSWORD@…`, a Redis
//! ACL user; `--sessions postgres://USER:PASSWORD@…/DB`); redis-server is Debian's, on
//! a free loopback port, stopped by pid; PostgreSQL is the root crate's test cluster
//! (tests/support/postgres_server.rs: a database of the test's own on it, or on
//! `SESSIONDB_TEST_POSTGRES_URL`'s server). Skipped with a message if redis-server or
//! PostgreSQL is not installed, unless `SESSIONDB_REQUIRE_REDIS=1` or
//! `SESSIONDB_REQUIRE_POSTGRES=1`.

#[path = "../../../tests/support/redis_server.rs"]
mod redis_server;

#[path = "../../../tests/support/postgres_server.rs"]
mod postgres_server;

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis_server::RedisServer;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use reqwest::redirect::Policy;
use support::csrf_in;

/// The app's Redis user and password: the server gets an ACL user (its default user
/// stays open, for the test helper's readiness ping), the app the password in its URL.
const REDIS_USER: &str = "app";
const REDIS_PASSWORD: &str = "s3cret-app-password";

/// A redis-server without persistence, with the app's ACL user.
fn redis_with_app_user() -> Option<RedisServer> {
    redis_with_app_user_and(&["--appendonly", "no"])
}

/// A redis-server with `persistence` arguments and the app's ACL user.
fn redis_with_app_user_and(persistence: &[&str]) -> Option<RedisServer> {
    let password = format!(">{REDIS_PASSWORD}");
    let mut args = vec!["--save", ""];
    args.extend_from_slice(persistence);
    args.extend(["--user", REDIS_USER, "on", &password, "~*", "&*", "+@all"]);
    RedisServer::start(&args)
}

/// `redis://USER:PASSWORD@127.0.0.1:PORT/`.
fn url_with_password(redis: &RedisServer, password: &str) -> String {
    redis
        .url()
        .replacen("redis://", &format!("redis://{REDIS_USER}:{password}@"), 1)
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The app binary with `--data-dir`, `--sessions`, `--port` and `--insecure-http`,
/// stdout and stderr piped.
fn app_process(data: &Path, sessions: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sessiondb-axum-app"))
        .arg("--data-dir")
        .arg(data)
        .args(["--sessions", sessions, "--port", &port.to_string()])
        .arg("--insecure-http")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the app")
}

/// One process of the app, killed (and waited for) when dropped, also when a test
/// panics.
struct Node {
    child: Child,
    base: String,
    /// What it printed up to and including its "listening" line.
    startup: String,
}

impl Node {
    /// Starts the app and waits until it says it is listening.
    fn start(data: &Path, sessions: &str) -> Node {
        let port = free_port();
        let mut node = Node {
            child: app_process(data, sessions, port),
            base: format!("http://127.0.0.1:{port}"),
            startup: String::new(),
        };
        // Lines are read on a thread, which keeps draining the pipe until the app exits.
        let (lines, printed) = mpsc::channel();
        let stdout = node.child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let stderr = node.child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[app on {port}] {line}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !node.startup.contains("listening on") {
            match printed.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    node.startup.push_str(&line);
                    node.startup.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = node.child.wait();
                    panic!(
                        "the app exited before listening ({status:?}): {}",
                        node.startup
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "the app did not listen on {port}: {}",
                node.startup
            );
        }
        node
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser: one cookie jar for every node (cookies belong to the host, not the
/// port, as behind a load balancer), redirects not followed.
fn browser(user_agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .user_agent(user_agent)
        .build()
        .unwrap()
}

async fn page(c: &reqwest::Client, url: &str) -> (StatusCode, String, String) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status();
    let location = r
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, r.text().await.unwrap())
}

async fn post(c: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
    let r = c.post(url).form(form).send().await.unwrap();
    let location = r
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status(), location)
}

/// Fills and sends the sign-up or login form on `node`.
async fn credentials(c: &reqwest::Client, node: &Node, form: &str, user: &str, password: &str) {
    let (status, _, html) = page(c, &node.url(form)).await;
    assert_eq!(status, StatusCode::OK, "{form}: {html}");
    let csrf = csrf_in(&html);
    let (status, location) = post(
        c,
        &node.url(form),
        &[("csrf", &csrf), ("username", user), ("password", password)],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/devices"),
        "{form} on {}",
        node.base
    );
}

/// The devices page of `c` on `node`, which must be served (signed in).
async fn devices(c: &reqwest::Client, node: &Node) -> String {
    let (status, location, html) = page(c, &node.url("/devices")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "signed in on {} ({location})",
        node.base
    );
    html
}

async fn signed_out(c: &reqwest::Client, node: &Node) -> bool {
    let (status, location, _) = page(c, &node.url("/devices")).await;
    status == StatusCode::SEE_OTHER && location == "/login"
}

/// The public ids of the other devices' sign-out buttons on a devices page.
fn other_devices(html: &str) -> Vec<String> {
    html.split(r#"action="/devices/"#)
        .skip(1)
        .filter_map(|rest| rest.split('/').next().map(str::to_owned))
        .collect()
}

/// What two nodes sharing sessions must agree on: a laptop signs up on node A and is
/// signed in on node B; a phone logs in on node B and either node lists both devices;
/// the phone, on node B, signs the laptop out, which is then out on node A; the laptop
/// logs in again on node A and "sign out everywhere" on node B ends both sessions on
/// both nodes.
async fn logins_and_sign_outs_are_shared(node_a: &Node, node_b: &Node) {
    // A laptop signs up on node A; its next request lands on node B: signed in there.
    let laptop = browser("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0");
    credentials(&laptop, node_a, "/signup", "alice", "correct horse battery").await;
    let on_b = devices(&laptop, node_b).await;
    assert!(on_b.contains("Signed in as <b>alice</b>"), "{on_b}");

    // A phone logs in on node B (the account was created by node A's process).
    let phone = browser("Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/156.0.0.0 Mobile");
    credentials(&phone, node_b, "/login", "alice", "correct horse battery").await;
    // Either node lists both devices.
    for node in [node_a, node_b] {
        let html = devices(&phone, node).await;
        assert_eq!(
            other_devices(&html).len(),
            1,
            "the laptop, on {}",
            node.base
        );
        assert!(
            html.contains("Firefox") && html.contains("Android"),
            "{html}"
        );
    }

    // From node B, the phone signs the laptop out; the laptop, on node A, is out.
    let html = devices(&phone, node_b).await;
    let laptop_id = other_devices(&html).pop().unwrap();
    let csrf = csrf_in(&html);
    let (status, _) = post(
        &phone,
        &node_b.url(&format!("/devices/{laptop_id}/sign-out")),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(signed_out(&laptop, node_a).await, "signed out on node A");
    assert!(signed_out(&laptop, node_b).await);
    assert!(!signed_out(&phone, node_a).await, "the phone still is");

    // The laptop logs in again on node A; "sign out everywhere" from node B ends both.
    credentials(&laptop, node_a, "/login", "alice", "correct horse battery").await;
    let html = devices(&phone, node_b).await;
    let csrf = csrf_in(&html);
    let (status, location) = post(
        &phone,
        &node_b.url("/sign-out-everywhere"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
    for node in [node_a, node_b] {
        assert!(signed_out(&laptop, node).await, "laptop on {}", node.base);
        assert!(signed_out(&phone, node).await, "phone on {}", node.base);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_app_processes_on_one_redis_share_logins_and_sign_outs() {
    let Some(redis) = redis_with_app_user() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let url = url_with_password(&redis, REDIS_PASSWORD);
    let node_a = Node::start(data.path(), &url);
    let node_b = Node::start(data.path(), &url);
    // Each says where its sessions are, without the password.
    for node in [&node_a, &node_b] {
        let shown = url_with_password(&redis, "***");
        assert!(
            node.startup
                .contains(&format!("live sessions in {shown} (redis)")),
            "{}",
            node.startup
        );
        assert!(!node.startup.contains(REDIS_PASSWORD), "{}", node.startup);
    }
    logins_and_sign_outs_are_shared(&node_a, &node_b).await;
}

/// The app's password in its PostgreSQL URL. The test cluster trusts loopback
/// connections, so it is never asked for: it is there to be hidden when printed.
const POSTGRES_PASSWORD: &str = "s3cret-app-db-password";

/// A database of the test's own on the shared test cluster (or on the server
/// `SESSIONDB_TEST_POSTGRES_URL` names), as the app is given it: `(url, url as printed)`,
/// with [`POSTGRES_PASSWORD`] in the first and `***` in the second when the server's
/// URL has none of its own. `None` if PostgreSQL is not installed (and not required).
fn postgres_database() -> Option<(String, String)> {
    let server = postgres_server::shared_url()?;
    let name = postgres_server::fresh_schema();
    postgres_server::psql(&server, &format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("creating the test's database: {e}"));
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server.as_str(), String::new()),
    };
    let (base, _db) = base.rsplit_once('/').expect("a database in the URL");
    let url = format!("{base}/{name}{query}");
    // postgres://USER@HOST…: the password goes after the user.
    let user = url
        .strip_prefix("postgres://")
        .and_then(|rest| rest.split_once('@'))
        .map(|(user, _)| user.to_owned())
        .filter(|user| !user.contains(':') && !user.contains('/'));
    Some(match user {
        Some(user) => {
            let with = |password: &str| {
                url.replacen(
                    &format!("postgres://{user}@"),
                    &format!("postgres://{user}:{password}@"),
                    1,
                )
            };
            (with(POSTGRES_PASSWORD), with("***"))
        }
        None => (url.clone(), url),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_app_processes_on_one_postgres_database_share_logins_and_sign_outs() {
    let Some((url, shown)) = tokio::task::spawn_blocking(postgres_database)
        .await
        .unwrap()
    else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    // Both start at once: each migrates the schema on its first connection, and the
    // second waits for the first (an advisory lock) rather than failing.
    let (node_a, node_b) = {
        let (d1, d2) = (data.path().to_owned(), data.path().to_owned());
        let (u1, u2) = (url.clone(), url.clone());
        let a = tokio::task::spawn_blocking(move || Node::start(&d1, &u1));
        let b = tokio::task::spawn_blocking(move || Node::start(&d2, &u2));
        (a.await.unwrap(), b.await.unwrap())
    };
    // Each says where its sessions are, without the password.
    for node in [&node_a, &node_b] {
        assert!(
            node.startup
                .contains(&format!("live sessions in {shown} (postgres)")),
            "{}",
            node.startup
        );
        assert!(
            !node.startup.contains(POSTGRES_PASSWORD),
            "{}",
            node.startup
        );
    }
    logins_and_sign_outs_are_shared(&node_a, &node_b).await;
}

#[test]
fn a_redis_that_refuses_the_password_stops_the_app_with_a_message_that_hides_it() {
    let Some(redis) = redis_with_app_user() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let wrong = "not-the-password";
    let url = url_with_password(&redis, wrong);
    // Killed on drop if it serves anyway (the assertions below then fail).
    let mut node = Node {
        child: app_process(data.path(), &url, free_port()),
        base: String::new(),
        startup: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status: ExitStatus = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the app kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    let mut stdout = String::new();
    node.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    node.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let shown = url_with_password(&redis, "***");
    assert!(
        stderr.contains(&format!("cannot open the sessions at {shown}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains(wrong) && !stdout.contains(wrong),
        "{stderr}{stdout}"
    );
    assert!(!stdout.contains("listening"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_on_both_nodes_at_once_are_all_kept_and_log_in_on_either() {
    let Some(redis) = redis_with_app_user() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let url = url_with_password(&redis, REDIS_PASSWORD);
    let nodes = [
        Node::start(data.path(), &url),
        Node::start(data.path(), &url),
    ];
    let names: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
    // Half the sign-ups on each node, all at once: two processes write users.json.
    let mut tasks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (base, name) = (nodes[i % 2].base.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            let c = browser("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Firefox/140.0");
            let (status, _, html) = page(&c, &format!("{base}/signup")).await;
            assert_eq!(status, StatusCode::OK);
            let csrf = csrf_in(&html);
            let form = [
                ("csrf", csrf.as_str()),
                ("username", &name),
                ("password", "correct horse battery"),
            ];
            post(&c, &format!("{base}/signup"), &form).await
        }));
    }
    for task in tasks {
        let (status, location) = task.await.unwrap();
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::SEE_OTHER, "/devices")
        );
    }
    // Each account logs in on the node it did not sign up on.
    for (i, name) in names.iter().enumerate() {
        let other = &nodes[(i + 1) % 2];
        let c = browser("Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/156.0.0.0 Mobile");
        credentials(&c, other, "/login", name, "correct horse battery").await;
    }
    let file = std::fs::read_to_string(data.path().join("users.json")).unwrap();
    for name in &names {
        assert!(file.contains(&format!("\"{name}\"")), "{name} lost: {file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_pages_fail_with_500_and_nobody_is_signed_out() {
    let Some(mut redis) =
        redis_with_app_user_and(&["--appendonly", "yes", "--appendfsync", "always"])
    else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(data.path(), &url_with_password(&redis, REDIS_PASSWORD));
    let laptop = browser("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Firefox/140.0");
    credentials(&laptop, &node, "/signup", "alice", "correct horse battery").await;
    devices(&laptop, &node).await;

    redis.kill();
    let (status, location, html) = page(&laptop, &node.url("/devices")).await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "not a redirect to the login page ({location})"
    );
    assert!(html.contains("Something went wrong"), "{html}");
    // The cookie was not cleared: once Redis is back, the laptop is still signed in.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, location, html) = page(&laptop, &node.url("/devices")).await;
        if status == StatusCode::OK {
            assert!(html.contains("Signed in as <b>alice</b>"), "{html}");
            break;
        }
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{location}");
        assert!(Instant::now() < deadline, "the app did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
