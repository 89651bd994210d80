//! The `sessiondb` command line on sessions kept in Redis (`--redis URL`, features `cli`
//! and `redis`), run as the real binary against a real `redis-server`
//! (tests/support/redis_server.rs): the migration of an embedded store to Redis with
//! every original cookie still working, the administration commands, import's checks
//! and rollback, and the commands and command lines that are refused.

#[path = "support/redis_server.rs"]
mod redis_server;

#[path = "support/cli_bin.rs"]
mod cli_bin;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cli_bin::{Filled, bin, fill, serial, stderr, stdout};
use redis_server::{NO_PERSISTENCE, RedisServer};
use sessiondb::{NewSession, Options, RedisOptions, RedisStore, Session, SessionId, Store, Token};

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// Runs and expects exit status 0; returns stdout.
fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// Runs and expects exit status `code`; returns stderr.
fn fails(args: &[&str], code: i32) -> String {
    let o = run(args);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stdout(&o));
    stderr(&o)
}

fn options() -> Options {
    Options::default().reaper_interval(None)
}

/// A runtime for the test's own RedisStore (the binary has its own).
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn connect(rt: &tokio::runtime::Runtime, url: &str, prefix: &str) -> RedisStore {
    rt.block_on(RedisStore::connect_with(
        url,
        options(),
        RedisOptions::default().prefix(prefix),
    ))
    .unwrap()
}

/// What `fixture` made.
type Fixture = Filled;

/// An embedded store in `dir` with `fill`'s sessions.
fn fixture(dir: &Path) -> Fixture {
    let store = Store::open_with(dir, options()).unwrap();
    let made = fill(&store, || std::thread::sleep(Duration::from_millis(3)));
    store.close().unwrap();
    made
}

/// A session's id, user, label and data (its times are compared one by one).
type Essence = (
    SessionId,
    Option<String>,
    Option<String>,
    Vec<(String, Vec<u8>)>,
);

fn essence(s: &Session) -> Essence {
    (
        s.id(),
        s.user().map(|u| u.as_str().to_owned()),
        s.label().map(str::to_owned),
        s.data()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect(),
    )
}

fn sorted_lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

#[test]
fn an_embedded_store_moves_to_redis_with_the_pipe_and_every_original_cookie_still_works() {
    let _serial = serial();
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("sessions");
    let f = fixture(&dir);
    let before: Vec<Session> = {
        let store = Store::open_with(&dir, options()).unwrap();
        f.alice
            .iter()
            .chain([&f.bob, &f.anon])
            .map(|(t, _)| store.peek(t).unwrap())
            .collect()
    };

    // The one-liner, as an operator types it.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_sessiondb")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "sessiondb -d ./sessions export | sessiondb --redis {} import",
                server.url()
            ),
        ])
        .current_dir(work.path())
        .env("PATH", path)
        .env_remove("SESSIONDB_DIR")
        .env_remove("SESSIONDB_REDIS_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        format!(
            "imported 4 sessions into {} (prefix \"sessiondb\")",
            server.url()
        )
    );

    // An application connected to Redis finds each session by its original token.
    let rt = rt();
    let redis = connect(&rt, &server.url(), "sessiondb");
    assert_eq!(rt.block_on(redis.len()).unwrap(), 4);
    for ((token, id), was) in f.alice.iter().chain([&f.bob, &f.anon]).zip(&before) {
        let now = rt
            .block_on(redis.peek(token))
            .unwrap()
            .expect("the session");
        assert_eq!(now.id(), *id);
        assert_eq!(essence(&now), essence(was));
        assert_eq!(now.created_at(), was.created_at());
        assert_eq!(now.last_seen(), was.last_seen());
        assert_eq!(now.absolute_deadline(), was.absolute_deadline());
        assert_eq!(now.idle_timeout(), was.idle_timeout());
        assert_eq!(now.version(), was.version());
        assert_eq!(now.authenticated_at(), was.authenticated_at());
    }
    let cart: Option<Vec<u32>> = rt
        .block_on(redis.peek(&f.alice[0].0))
        .unwrap()
        .unwrap()
        .get("cart")
        .unwrap();
    assert_eq!(cart, Some(vec![42]));
    // The per-user index came along: alice's devices, oldest first; revoke-everywhere.
    let alices: Vec<SessionId> = rt
        .block_on(redis.sessions_of("alice"))
        .unwrap()
        .iter()
        .map(Session::id)
        .collect();
    assert_eq!(alices, vec![f.alice[0].1, f.alice[1].1]);
    assert_eq!(rt.block_on(redis.revoke_user("alice")).unwrap(), 2);
    assert!(rt.block_on(redis.get(&f.alice[1].0)).unwrap().is_none());
    // And a session in Redis is live: the app can keep using it.
    rt.block_on(redis.put(&f.bob.0, "after", "the move"))
        .unwrap();

    // Back again: Redis exports the same format, and a directory imports it.
    let exported = ok(&["--redis", &server.url(), "export"]);
    assert_eq!(exported.lines().count(), 2);
    let mut child = bin()
        .arg("-d")
        .arg(work.path().join("back"))
        .arg("import")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exported.as_bytes())
        .unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
    let store = Store::open_with(work.path().join("back"), options()).unwrap();
    let bob = store.peek(&f.bob.0).unwrap();
    assert_eq!(
        bob.get::<String>("after").unwrap().as_deref(),
        Some("the move")
    );
    assert_eq!(store.peek(&f.anon.0).unwrap().id(), f.anon.1);
    assert_eq!(store.len(), 2);
}

#[test]
fn list_show_and_revoke_administer_redis_sessions_and_reading_touches_none() {
    let _serial = serial();
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let url = server.url();
    let rt = rt();
    let redis = connect(&rt, &url, "sessiondb");
    let mut alice = Vec::new();
    for label in ["Laptop", "Phone"] {
        let (t, s) = rt
            .block_on(redis.create(NewSession::for_user("alice").label(label)))
            .unwrap();
        alice.push((t, s.id()));
        std::thread::sleep(Duration::from_millis(3));
    }
    rt.block_on(redis.put(&alice[0].0, "theme", "dark"))
        .unwrap();
    let (bob, _) = rt
        .block_on(redis.create(NewSession::for_user("bob")))
        .unwrap();
    let seen = |t: &Token| rt.block_on(redis.peek(t)).unwrap().unwrap().last_seen();
    let seen_before = seen(&alice[0].0);
    std::thread::sleep(Duration::from_millis(5));

    let text = ok(&["--redis", &url, "list", "--user", "alice"]);
    assert!(
        text.starts_with("2 live sessions of user \"alice\""),
        "{text}"
    );
    assert!(
        text.find("Laptop").unwrap() < text.find("Phone").unwrap(),
        "{text}"
    );
    let j = ok_json(&["--redis", &url, "list", "-u", "alice", "--json"]);
    assert_eq!(j[0]["id"], alice[0].1.to_string());
    assert_eq!(j[1]["label"], "Phone");

    let id = alice[0].1.to_string();
    let text = ok(&["--redis", &url, "show", &id]);
    assert!(text.contains("\"dark\" (a bincode string)"), "{text}");
    let j = ok_json(&["--redis", &url, "show", &id, "--json"]);
    assert_eq!(j["user"], "alice");
    assert_eq!(j["data"]["theme"], "BAAAAAAAAABkYXJr"); // bincode "dark", base64
    let j = ok_json(&["--redis", &url, "stats", "--json"]);
    assert_eq!(j["backend"], "redis");
    assert_eq!(j["sessions"], 3);
    assert_eq!(j["prefix"], "sessiondb");
    ok(&["--redis", &url, "export"]);
    assert_eq!(
        seen(&alice[0].0),
        seen_before,
        "reading commands touch nothing"
    );

    let unknown = "0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11";
    let err = fails(&["--redis", &url, "show", unknown], 1);
    assert!(
        err.contains(&format!("no live session has id {unknown} in {url}")),
        "{err}"
    );
    let err = fails(&["--redis", &url, "revoke", unknown], 1);
    assert!(err.contains("nothing was revoked"), "{err}");

    let text = ok(&["--redis", &url, "revoke", &id]);
    assert_eq!(text.trim(), format!("revoked session {id}"));
    assert!(rt.block_on(redis.get(&alice[0].0)).unwrap().is_none());
    let j = ok_json(&["--redis", &url, "revoke", "--user", "alice", "--json"]);
    assert_eq!(j["revoked"], 1);
    assert!(rt.block_on(redis.sessions_of("alice")).unwrap().is_empty());
    assert!(rt.block_on(redis.get(&alice[1].0)).unwrap().is_none());
    assert!(rt.block_on(redis.get(&bob)).unwrap().is_some());
    // The environment names the server too.
    let o = bin()
        .env("SESSIONDB_REDIS_URL", &url)
        .args(["stats", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["sessions"],
        1
    );
}

/// Three exported sessions, from an embedded store made for the purpose.
fn three_lines(work: &Path) -> (Fixture, String) {
    let dir = work.join("src");
    let f = fixture(&dir);
    ok(&["-d", dir.to_str().unwrap(), "revoke", &f.anon.1.to_string()]);
    let exported = ok(&["-d", dir.to_str().unwrap(), "export"]);
    assert_eq!(exported.lines().count(), 3);
    (f, exported)
}

#[test]
fn an_import_into_redis_with_a_bad_line_names_it_and_imports_nothing() {
    let _serial = serial();
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (_, exported) = three_lines(work.path());
    let mut lines: Vec<String> = exported.lines().map(str::to_owned).collect();
    lines.insert(1, r#"{"v":1,"id":"nope"}"#.into());
    let file = work.path().join("bad.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let f = file.to_str().unwrap();
    let err = fails(&["--redis", &server.url(), "import", f], 1);
    assert!(err.contains(&format!("{f}:2: ")), "{err}");
    assert!(
        err.contains("1 bad line in") && err.contains("nothing was imported"),
        "{err}"
    );
    let rt = rt();
    let redis = connect(&rt, &server.url(), "sessiondb");
    assert_eq!(rt.block_on(redis.len()).unwrap(), 0);
}

#[test]
fn an_import_into_redis_refuses_sessions_already_there_unless_skip_existing() {
    let _serial = serial();
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let url = server.url();
    let work = tempfile::tempdir().unwrap();
    let (_, exported) = three_lines(work.path());
    let file = work.path().join("all.jsonl");
    std::fs::write(&file, &exported).unwrap();
    let f = file.to_str().unwrap();
    let first: String = exported.lines().next().unwrap().to_owned();
    let one = work.path().join("one.jsonl");
    std::fs::write(&one, &first).unwrap();
    ok(&["--redis", &url, "import", one.to_str().unwrap()]);

    let err = fails(&["--redis", &url, "import", f], 1);
    assert!(err.contains(&format!("{f}:1: session")), "{err}");
    assert!(err.contains("already in the store"), "{err}");
    let rt = rt();
    let redis = connect(&rt, &url, "sessiondb");
    assert_eq!(rt.block_on(redis.len()).unwrap(), 1);

    let j = ok_json(&["--redis", &url, "import", "--skip-existing", "--json", f]);
    assert_eq!(j["imported"], 2);
    assert_eq!(j["skipped_existing"], serde_json::json!([1]));
    assert_eq!(rt.block_on(redis.len()).unwrap(), 3);
    assert_eq!(
        sorted_lines(&ok(&["--redis", &url, "export"])),
        sorted_lines(&exported)
    );
}

#[test]
fn an_import_that_redis_refuses_midway_takes_back_what_it_imported() {
    let _serial = serial();
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let url = server.url();
    let work = tempfile::tempdir().unwrap();
    let (_, exported) = three_lines(work.path());
    let lines: Vec<&str> = exported.lines().collect();
    // Redis already has line 3's token hash, under another public id: only the store
    // can see that conflict, when line 3 is imported.
    let mut clash: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    clash["id"] = serde_json::json!("0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11");
    let (one, all) = (work.path().join("one.jsonl"), work.path().join("all.jsonl"));
    std::fs::write(&one, clash.to_string()).unwrap();
    std::fs::write(&all, &exported).unwrap();
    ok(&["--redis", &url, "import", one.to_str().unwrap()]);
    let a = all.to_str().unwrap();
    let err = fails(&["--redis", &url, "import", a], 1);
    assert!(
        err.contains(&format!("{a}:3: the store refused the session")),
        "{err}"
    );
    assert!(
        err.contains("the 2 sessions this run imported were removed again"),
        "{err}"
    );
    let rt = rt();
    let redis = connect(&rt, &url, "sessiondb");
    assert_eq!(rt.block_on(redis.len()).unwrap(), 1);
    let clash_id = SessionId::parse("0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11").unwrap();
    assert!(rt.block_on(redis.get_by_id(clash_id)).unwrap().is_some());

    // Many calls are in flight at once: a refusal in the middle of a long input still
    // takes back every session this run wrote, before and after the refused line.
    let base: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let many: Vec<String> = (0..300u128)
        .map(|i| {
            if i == 149 {
                return lines[2].to_owned(); // line 150: the clashing token hash
            }
            let mut v = base.clone();
            v["id"] = serde_json::json!(format!("00000000-0000-4000-8000-{:012x}", i));
            v["token_hash"] = serde_json::json!(format!("{:032x}", 0xbeef_0000 + i));
            v.to_string()
        })
        .collect();
    let long = work.path().join("long.jsonl");
    std::fs::write(&long, many.join("\n")).unwrap();
    let l = long.to_str().unwrap();
    let err = fails(&["--redis", &url, "import", l], 1);
    assert!(
        err.contains(&format!("{l}:150: the store refused")),
        "{err}"
    );
    assert!(
        err.contains("were removed again: nothing was imported"),
        "{err}"
    );
    assert_eq!(rt.block_on(redis.len()).unwrap(), 1);
    for i in [0u128, 148, 150, 299] {
        let id = SessionId::parse(&format!("00000000-0000-4000-8000-{i:012x}")).unwrap();
        assert!(rt.block_on(redis.get_by_id(id)).unwrap().is_none(), "{id}");
    }
}

#[test]
fn a_key_prefix_keeps_an_import_apart_from_the_default_store() {
    let _serial = serial();
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let url = server.url();
    let work = tempfile::tempdir().unwrap();
    let (f, exported) = three_lines(work.path());
    let file = work.path().join("all.jsonl");
    std::fs::write(&file, &exported).unwrap();
    let text = ok(&[
        "--redis",
        &url,
        "--redis-prefix",
        "myapp",
        "import",
        file.to_str().unwrap(),
    ]);
    assert!(text.contains("(prefix \"myapp\")"), "{text}");
    let rt = rt();
    let default = connect(&rt, &url, "sessiondb");
    let myapp = connect(&rt, &url, "myapp");
    assert_eq!(rt.block_on(default.len()).unwrap(), 0);
    assert_eq!(rt.block_on(myapp.len()).unwrap(), 3);
    assert!(rt.block_on(myapp.peek(&f.bob.0)).unwrap().is_some());
    let j = ok_json(&[
        "--redis",
        &url,
        "--redis-prefix",
        "myapp",
        "stats",
        "--json",
    ]);
    assert_eq!(
        (j["sessions"].as_u64(), j["prefix"].as_str()),
        (Some(3), Some("myapp"))
    );
    assert_eq!(
        ok_json(&["--redis", &url, "stats", "--json"])["sessions"],
        0
    );
}

#[test]
fn compact_and_verify_are_refused_on_redis_as_directory_commands() {
    let _serial = serial();
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let url = server.url();
    let err = fails(&["--redis", &url, "compact"], 1);
    assert!(
        err.contains("`compact` applies to a store directory (--dir), not to Redis"),
        "{err}"
    );
    let err = fails(&["--redis", &url, "verify"], 1);
    assert!(
        err.contains("`verify` applies to a store directory (--dir), not to Redis"),
        "{err}"
    );
    let o = run(&["--redis", &url, "verify", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ok"], false);
}

#[test]
fn naming_a_directory_and_redis_together_or_directory_options_with_redis_exits_2() {
    let _serial = serial();
    let usage = |args: &[&str], envs: &[(&str, &str)], want: &str| {
        let o = bin()
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    };
    let url = "redis://127.0.0.1:1/";
    let conflict = "cannot be used with";
    usage(&["-d", "x", "--redis", url, "stats"], &[], conflict);
    usage(&["--redis", url, "stats", "-d", "x"], &[], conflict);
    usage(&["-d", "x", "stats", "--redis", url], &[], conflict);
    usage(&["stats"], &[], "the store is required");
    usage(
        &["stats"],
        &[("SESSIONDB_DIR", "x"), ("SESSIONDB_REDIS_URL", url)],
        "are both set",
    );
    usage(
        &["-d", "x", "--redis-prefix", "p", "stats"],
        &[],
        "--redis-prefix applies to a Redis store",
    );
    usage(
        &["--redis", url, "--backend", "sled", "stats"],
        &[],
        "--backend applies to a store directory",
    );
    // The command line wins over the environment: no conflict, it reaches the server.
    let o = bin()
        .env("SESSIONDB_DIR", "/nonexistent")
        .args(["--redis", url, "stats"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("connecting to 127.0.0.1:1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_unreachable_server_fails_with_status_1_saying_so_without_the_password() {
    let _serial = serial();
    let Some(mut server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let url = server.url();
    server.kill();
    let secret = url.replace("redis://", "redis://app:s3cret@");
    for cmd in [
        &["stats"][..],
        &["list", "--user", "alice"],
        &["import", "/dev/null"],
        &["export"],
    ] {
        let mut args = vec!["--redis", secret.as_str()];
        args.extend_from_slice(cmd);
        let err = fails(&args, 1);
        assert!(
            err.starts_with("sessiondb: error: redis connecting to"),
            "{cmd:?}: {err}"
        );
        assert!(
            err.contains("check that the server is up and reachable"),
            "{cmd:?}: {err}"
        );
        // The server's address, never the URL's password.
        assert!(
            err.contains("connecting to 127.0.0.1:") && !err.contains("s3cret"),
            "{err}"
        );
    }
}

/// A password change's not-before time moves with the sessions: out of a directory,
/// into Redis (which then refuses the revoked session's old record), and back out;
/// `revoke --before` works on Redis too.
#[test]
fn not_before_times_move_between_a_directory_and_redis_and_keep_old_sessions_out() {
    let _serial = serial();
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let url = server.url();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("src");
    let f = fixture(&dir);
    let d = dir.to_str().unwrap();
    // A backup of alice's first session, then a revocation of it by time.
    let backup = ok(&["-d", d, "export"]);
    let old = backup
        .lines()
        .find(|l| l.contains(&f.alice[0].1.to_string()))
        .unwrap()
        .to_owned();
    let store = Store::open_with(&dir, options()).unwrap();
    let second = store
        .peek(&f.alice[1].0)
        .unwrap()
        .authenticated_at()
        .unwrap();
    store.close().unwrap();
    ok(&[
        "-d",
        d,
        "revoke",
        "--user",
        "alice",
        "--before",
        &second.to_string(),
    ]);
    let exported = ok(&["-d", d, "export"]);
    let file = work.path().join("moved.jsonl");
    std::fs::write(&file, &exported).unwrap();
    let j = ok_json(&["--redis", &url, "import", "--json", file.to_str().unwrap()]);
    assert_eq!(
        (j["imported"].clone(), j["not_before"].clone()),
        (3.into(), 1.into())
    );

    let rt = rt();
    let redis = connect(&rt, &url, "sessiondb");
    let times = rt.block_on(redis.not_before_times()).unwrap();
    assert_eq!(times.len(), 1);
    assert_eq!((times[0].0.as_str(), times[0].1), ("alice", second));
    // The old backup's line is refused in Redis: skipped as already ended.
    let one = work.path().join("old.jsonl");
    std::fs::write(&one, &old).unwrap();
    let j = ok_json(&["--redis", &url, "import", "--json", one.to_str().unwrap()]);
    assert_eq!(j["imported"], 0);
    assert_eq!(j["skipped_expired"], serde_json::json!([1]));
    assert!(rt.block_on(redis.peek(&f.alice[0].0)).unwrap().is_none());
    // Redis exports the time again, after its sessions.
    let back = ok(&["--redis", &url, "export"]);
    assert_eq!(sorted_lines(&back), sorted_lines(&exported));
    assert!(back.lines().last().unwrap().contains("\"not_before\""));
    // And revokes by time itself.
    let j = ok_json(&[
        "--redis", &url, "revoke", "--user", "alice", "--before", "now", "--json",
    ]);
    assert_eq!(j["revoked"], 1);
    assert!(rt.block_on(redis.sessions_of("alice")).unwrap().is_empty());
}
