//! The `sessiondb` command line on sessions kept in PostgreSQL (`--postgres URL`,
//! features `cli` and `postgres`), run as the real binary against a real PostgreSQL
//! (tests/support/postgres_server.rs: one cluster shared by the tests, each in a schema
//! of its own, or `SESSIONDB_TEST_POSTGRES_URL`'s server): the migration of an embedded
//! store to PostgreSQL with every original cookie still working, the administration
//! commands, import's checks and rollback, the commands and command lines that are
//! refused, and (with the `redis` feature too) a move from Redis to PostgreSQL.
//! Skipped with a message if PostgreSQL is not installed, unless
//! `SESSIONDB_REQUIRE_POSTGRES=1`.

#[path = "support/postgres_server.rs"]
mod postgres_server;

#[path = "support/cli_bin.rs"]
mod cli_bin;

#[cfg(feature = "redis")]
#[path = "support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cli_bin::{Filled, fill, serial, stderr, stdout};
use postgres_server::{PostgresServer, fresh_schema, shared_url};
use sessiondb::{
    Device, NewSession, Options, PostgresOptions, PostgresStore, Session, SessionId, SignIn, Store,
    Token,
};

/// The binary, with no store from the environment (`cli_bin::bin`).
/// `SESSIONDB_TEST_POSTGRES_URL`, which names the tests' server (`.ci/postgres` exports
/// it), is not the binary's: CI runs every command-line test with it set.
fn bin() -> Command {
    cli_bin::bin()
}

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

/// A runtime for the test's own PostgresStore (the binary has its own).
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The application's store in `schema`, as a node of it connects.
fn connect(rt: &tokio::runtime::Runtime, url: &str, schema: &str) -> PostgresStore {
    rt.block_on(PostgresStore::connect_with(
        url,
        options(),
        PostgresOptions::default().schema(schema).pool_size(2),
    ))
    .unwrap()
}

/// A database for one test: the shared cluster's URL and a schema no other test uses.
fn database() -> Option<(String, String)> {
    Some((shared_url()?, fresh_schema()))
}

/// The arguments `--postgres URL --postgres-schema SCHEMA`, then `rest`.
fn at<'a>(url: &'a str, schema: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--postgres", url, "--postgres-schema", schema];
    args.extend_from_slice(rest);
    args
}

/// Whether the database has a schema of that name.
fn schema_exists(url: &str, schema: &str) -> bool {
    let out = postgres_server::psql(
        url,
        &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"),
    )
    .unwrap();
    out.trim() == "1"
}

/// What `fixture` made: `fill`'s sessions, and carol's, signed in with two factors
/// from a known device (a version-3 line of the export).
struct Fixture {
    filled: Filled,
    carol: (Token, SessionId),
}

impl Fixture {
    /// Every session's token and id, alice's two first.
    fn all(&self) -> Vec<&(Token, SessionId)> {
        let f = &self.filled;
        f.alice
            .iter()
            .chain([&f.bob, &f.anon, &self.carol])
            .collect()
    }
}

/// An embedded store in `dir` with the fixture's sessions.
fn fixture(dir: &Path) -> Fixture {
    let store = Store::open_with(dir, options()).unwrap();
    let filled = fill(&store, || std::thread::sleep(Duration::from_millis(3)));
    let (t, s) = store
        .create(
            NewSession::for_user("carol")
                .signed_in(SignIn::with("password").and("otp").level(2))
                .device(
                    Device::new()
                        .user_agent("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0")
                        .address("203.0.113.7".parse().unwrap()),
                ),
        )
        .unwrap();
    let carol = (t, s.id());
    store.close().unwrap();
    Fixture { filled, carol }
}

/// Everything a session is but its last-seen time (which a read may move).
fn assert_same(now: &Session, was: &Session) {
    assert_eq!(now.id(), was.id());
    assert_eq!(now.user(), was.user());
    assert_eq!(now.label(), was.label());
    assert_eq!(now.data(), was.data());
    assert_eq!(now.created_at(), was.created_at());
    assert_eq!(now.absolute_deadline(), was.absolute_deadline());
    assert_eq!(now.idle_timeout(), was.idle_timeout());
    assert_eq!(now.version(), was.version());
    assert_eq!(now.authenticated_at(), was.authenticated_at());
    assert_eq!(now.factors(), was.factors());
    assert_eq!(now.level(), was.level());
    assert_eq!(now.user_agent(), was.user_agent());
    assert_eq!(now.address(), was.address());
    assert_eq!(now.device_seen_at(), was.device_seen_at());
}

fn sorted_lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

/// Runs `script` in bash (pipefail) in `dir`, with the binary on the PATH and no
/// store from the environment, as an operator types it; expects status 0, returns
/// stdout.
fn shell(dir: &Path, script: &str) -> String {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_sessiondb")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("SESSIONDB_DIR")
        .env_remove("SESSIONDB_REDIS_URL")
        .env_remove("SESSIONDB_POSTGRES_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{script}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn an_embedded_store_moves_to_postgres_with_the_pipe_and_every_original_cookie_still_works() {
    let _serial = serial();
    // A cluster of its own: the one-liner uses the default schema.
    let Some(server) = PostgresServer::start() else {
        return;
    };
    let url = server.url();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("sessions");
    let f = fixture(&dir);
    let before: Vec<Session> = {
        let store = Store::open_with(&dir, options()).unwrap();
        let s = f
            .all()
            .iter()
            .map(|(t, _)| store.peek(t).unwrap())
            .collect();
        store.close().unwrap();
        s
    };

    // The one-liner, as an operator types it.
    let out = shell(
        work.path(),
        &format!("sessiondb -d ./sessions export | sessiondb --postgres {url} import"),
    );
    assert_eq!(
        out.trim(),
        format!("imported 5 sessions into {url} (schema \"sessiondb\")")
    );

    // An application connected to PostgreSQL finds each session by its original token.
    let rt = rt();
    let pg = connect(&rt, &url, "sessiondb");
    assert_eq!(rt.block_on(pg.len()).unwrap(), 5);
    for ((token, id), was) in f.all().into_iter().zip(&before) {
        let now = rt
            .block_on(pg.get(token))
            .unwrap()
            .expect("the session, by its original cookie");
        assert_eq!(now.id(), *id);
        assert_same(&now, was);
    }
    let carol = rt.block_on(pg.peek(&f.carol.0)).unwrap().unwrap();
    assert_eq!((carol.level(), carol.factors().len()), (2, 2));
    assert!(carol.address().is_some() && carol.user_agent().is_some());
    let cart: Option<Vec<u32>> = rt
        .block_on(pg.peek(&f.filled.alice[0].0))
        .unwrap()
        .unwrap()
        .get("cart")
        .unwrap();
    assert_eq!(cart, Some(vec![42]));
    // The per-user index came along: alice's devices, oldest first; revoke-everywhere.
    let alice = &f.filled.alice;
    let alices: Vec<SessionId> = rt
        .block_on(pg.sessions_of("alice"))
        .unwrap()
        .iter()
        .map(Session::id)
        .collect();
    assert_eq!(alices, vec![alice[0].1, alice[1].1]);
    assert_eq!(rt.block_on(pg.revoke_user("alice")).unwrap(), 2);
    assert!(rt.block_on(pg.get(&alice[1].0)).unwrap().is_none());
    // And a session in PostgreSQL is live: the app can keep using it.
    rt.block_on(pg.put(&f.filled.bob.0, "after", "the move"))
        .unwrap();

    // Back again: PostgreSQL exports the same format, and a directory imports it.
    let exported = ok(&["--postgres", &url, "export"]);
    assert_eq!(exported.lines().count(), 3);
    let back = work.path().join("back");
    let mut child = bin()
        .arg("-d")
        .arg(&back)
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
    let store = Store::open_with(&back, options()).unwrap();
    let bob = store.peek(&f.filled.bob.0).unwrap();
    assert_eq!(
        bob.get::<String>("after").unwrap().as_deref(),
        Some("the move")
    );
    assert_eq!(store.peek(&f.filled.anon.0).unwrap().id(), f.filled.anon.1);
    assert_same(&store.peek(&f.carol.0).unwrap(), &carol);
    assert_eq!(store.len(), 3);
}

#[test]
fn list_show_and_revoke_administer_postgres_sessions_and_reading_touches_none() {
    let _serial = serial();
    let Some((url, schema)) = database() else {
        return;
    };
    let (url, s) = (url.as_str(), schema.as_str());
    let rt = rt();
    let pg = connect(&rt, url, s);
    let mut alice = Vec::new();
    for label in ["Laptop", "Phone"] {
        let (t, s) = rt
            .block_on(pg.create(NewSession::for_user("alice").label(label)))
            .unwrap();
        alice.push((t, s.id()));
        std::thread::sleep(Duration::from_millis(3));
    }
    rt.block_on(pg.put(&alice[0].0, "theme", "dark")).unwrap();
    let (bob, _) = rt.block_on(pg.create(NewSession::for_user("bob"))).unwrap();
    let seen = |t: &Token| rt.block_on(pg.peek(t)).unwrap().unwrap().last_seen();
    let seen_before = seen(&alice[0].0);
    std::thread::sleep(Duration::from_millis(5));

    let text = ok(&at(url, s, &["list", "--user", "alice"]));
    assert!(
        text.starts_with("2 live sessions of user \"alice\""),
        "{text}"
    );
    assert!(
        text.find("Laptop").unwrap() < text.find("Phone").unwrap(),
        "{text}"
    );
    let j = ok_json(&at(url, s, &["list", "-u", "alice", "--json"]));
    assert_eq!(j[0]["id"], alice[0].1.to_string());
    assert_eq!(j[1]["label"], "Phone");
    let text = ok(&at(url, s, &["list", "--user", "nobody"]));
    assert_eq!(text.trim(), "user \"nobody\" has no live sessions");

    let id = alice[0].1.to_string();
    let text = ok(&at(url, s, &["show", &id]));
    assert!(text.contains("\"dark\" (a bincode string)"), "{text}");
    let j = ok_json(&at(url, s, &["show", &id, "--json"]));
    assert_eq!(j["user"], "alice");
    assert_eq!(j["data"]["theme"], "BAAAAAAAAABkYXJr"); // bincode "dark", base64
    let j = ok_json(&at(url, s, &["stats", "--json"]));
    assert_eq!(j["backend"], "postgres");
    assert_eq!(j["sessions"], 3);
    assert_eq!(j["schema"], s);
    assert_eq!(j["postgres"], url);
    let text = ok(&at(url, s, &["stats"]));
    assert_eq!(
        text.trim(),
        format!("store      {url} (postgres backend, schema {s})\nsessions   3 live")
    );
    let text = ok(&at(url, s, &["stats", "--prometheus", "web"]));
    assert!(
        text.contains("sessiondb_sessions_live{store=\"web\"} 3"),
        "{text}"
    );
    ok(&at(url, s, &["export"]));
    assert_eq!(
        seen(&alice[0].0),
        seen_before,
        "reading commands touch nothing"
    );

    let unknown = "0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11";
    let err = fails(&at(url, s, &["show", unknown]), 1);
    assert!(
        err.contains(&format!(
            "no live session has id {unknown} in {url} (schema \"{s}\")"
        )),
        "{err}"
    );
    let err = fails(&at(url, s, &["revoke", unknown]), 1);
    assert!(err.contains("nothing was revoked"), "{err}");

    let text = ok(&at(url, s, &["revoke", &id]));
    assert_eq!(text.trim(), format!("revoked session {id}"));
    assert!(rt.block_on(pg.get(&alice[0].0)).unwrap().is_none());
    // --keep: every other session of the user, this one kept; only one of theirs.
    let (third, third_s) = rt
        .block_on(pg.create(NewSession::for_user("alice").label("Tablet")))
        .unwrap();
    let err = fails(
        &at(
            url,
            s,
            &["revoke", "--user", "bob", "--keep", &id_of(&third_s)],
        ),
        1,
    );
    assert!(err.contains("no live session of user \"bob\""), "{err}");
    let j = ok_json(&at(
        url,
        s,
        &[
            "revoke",
            "--user",
            "alice",
            "--keep",
            &id_of(&third_s),
            "--json",
        ],
    ));
    assert_eq!(
        (j["revoked"].as_u64(), j["kept"].as_str()),
        (Some(1), Some(id_of(&third_s).as_str()))
    );
    assert!(rt.block_on(pg.get(&alice[1].0)).unwrap().is_none());
    assert!(rt.block_on(pg.get(&third)).unwrap().is_some());
    let j = ok_json(&at(url, s, &["revoke", "--user", "alice", "--json"]));
    assert_eq!(j["revoked"], 1);
    assert!(rt.block_on(pg.sessions_of("alice")).unwrap().is_empty());
    assert!(rt.block_on(pg.get(&bob)).unwrap().is_some());
    // The environment names the server too.
    let o = bin()
        .env("SESSIONDB_POSTGRES_URL", url)
        .args(["--postgres-schema", s, "stats", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["sessions"],
        1
    );
}

fn id_of(s: &Session) -> String {
    s.id().to_string()
}

/// Four exported sessions, from an embedded store made for the purpose (its anonymous
/// session revoked).
fn four_lines(work: &Path) -> (Fixture, String) {
    let dir = work.join("src");
    let f = fixture(&dir);
    let d = dir.to_str().unwrap();
    ok(&["-d", d, "revoke", &f.filled.anon.1.to_string()]);
    let exported = ok(&["-d", d, "export"]);
    assert_eq!(exported.lines().count(), 4);
    (f, exported)
}

#[test]
fn an_import_into_postgres_with_a_bad_line_names_it_and_imports_nothing() {
    let _serial = serial();
    let Some((url, schema)) = database() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (_, exported) = four_lines(work.path());
    let mut lines: Vec<String> = exported.lines().map(str::to_owned).collect();
    lines.insert(1, r#"{"v":1,"id":"nope"}"#.into());
    let file = work.path().join("bad.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let f = file.to_str().unwrap();
    let err = fails(&at(&url, &schema, &["import", f]), 1);
    assert!(err.contains(&format!("{f}:2: ")), "{err}");
    assert!(
        err.contains("1 bad line in") && err.contains("nothing was imported"),
        "{err}"
    );
    // The lines are checked before the server is even connected to.
    assert!(!schema_exists(&url, &schema), "nothing was created");
}

#[test]
fn an_import_into_postgres_refuses_sessions_already_there_unless_skip_existing() {
    let _serial = serial();
    let Some((url, schema)) = database() else {
        return;
    };
    let (url, s) = (url.as_str(), schema.as_str());
    let work = tempfile::tempdir().unwrap();
    let (_, exported) = four_lines(work.path());
    let file = work.path().join("all.jsonl");
    std::fs::write(&file, &exported).unwrap();
    let f = file.to_str().unwrap();
    let first: String = exported.lines().next().unwrap().to_owned();
    let one = work.path().join("one.jsonl");
    std::fs::write(&one, &first).unwrap();
    ok(&at(url, s, &["import", one.to_str().unwrap()]));

    let err = fails(&at(url, s, &["import", f]), 1);
    assert!(err.contains(&format!("{f}:1: session")), "{err}");
    assert!(err.contains("already in the store"), "{err}");
    let rt = rt();
    let pg_store = connect(&rt, url, s);
    assert_eq!(rt.block_on(pg_store.len()).unwrap(), 1);

    let j = ok_json(&at(url, s, &["import", "--skip-existing", "--json", f]));
    assert_eq!(j["imported"], 3);
    assert_eq!(j["skipped_existing"], serde_json::json!([1]));
    assert_eq!(rt.block_on(pg_store.len()).unwrap(), 4);
    // What PostgreSQL exports is, line for line, what the directory did.
    assert_eq!(
        sorted_lines(&ok(&at(url, s, &["export"]))),
        sorted_lines(&exported)
    );
}

#[test]
fn an_import_that_postgres_refuses_midway_takes_back_what_it_imported() {
    let _serial = serial();
    let Some((url, schema)) = database() else {
        return;
    };
    let (url, s) = (url.as_str(), schema.as_str());
    let work = tempfile::tempdir().unwrap();
    let (_, exported) = four_lines(work.path());
    let lines: Vec<&str> = exported.lines().collect();
    // PostgreSQL already has line 3's token hash, under another public id: only the
    // store can see that conflict, when line 3 is imported.
    let mut clash: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    clash["id"] = serde_json::json!("0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11");
    let (one, all) = (work.path().join("one.jsonl"), work.path().join("all.jsonl"));
    std::fs::write(&one, clash.to_string()).unwrap();
    std::fs::write(&all, &exported).unwrap();
    ok(&at(url, s, &["import", one.to_str().unwrap()]));
    let a = all.to_str().unwrap();
    let err = fails(&at(url, s, &["import", a]), 1);
    assert!(
        err.contains(&format!("{a}:3: the store refused the session")),
        "{err}"
    );
    assert!(
        err.contains("sessions this run imported were removed again"),
        "{err}"
    );
    let rt = rt();
    let pg_store = connect(&rt, url, s);
    assert_eq!(rt.block_on(pg_store.len()).unwrap(), 1);
    let clash_id = SessionId::parse("0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11").unwrap();
    assert!(rt.block_on(pg_store.get_by_id(clash_id)).unwrap().is_some());

    // Several calls are in flight at once: a refusal in the middle of a long input
    // still takes back every session this run wrote, before and after the refused line.
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
    let err = fails(&at(url, s, &["import", l]), 1);
    assert!(
        err.contains(&format!("{l}:150: the store refused")),
        "{err}"
    );
    assert!(
        err.contains("were removed again: nothing was imported"),
        "{err}"
    );
    assert_eq!(rt.block_on(pg_store.len()).unwrap(), 1);
    for i in [0u128, 148, 150, 299] {
        let id = SessionId::parse(&format!("00000000-0000-4000-8000-{i:012x}")).unwrap();
        assert!(
            rt.block_on(pg_store.get_by_id(id)).unwrap().is_none(),
            "{id}"
        );
    }
}

#[test]
fn a_schema_keeps_an_import_apart_and_only_import_creates_one() {
    let _serial = serial();
    let Some((url, schema)) = database() else {
        return;
    };
    let (url, s) = (url.as_str(), schema.as_str());
    let other = fresh_schema();
    let work = tempfile::tempdir().unwrap();
    let (f, exported) = four_lines(work.path());
    let file = work.path().join("all.jsonl");
    std::fs::write(&file, &exported).unwrap();

    // A reading or revoking command on a schema with no store fails and creates none
    // (a mistyped --postgres-schema must not leave an empty store behind).
    for cmd in [
        &["stats"][..],
        &["list", "--user", "alice"],
        &["show", "0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11"],
        &["revoke", "--user", "alice"],
        &["export"],
    ] {
        let err = fails(&at(url, s, cmd), 1);
        assert!(
            err.contains(&format!("{url} holds no sessiondb store in schema \"{s}\""))
                && err.contains("nothing was created"),
            "{cmd:?}: {err}"
        );
    }
    assert!(!schema_exists(url, s));

    let text = ok(&at(url, s, &["import", file.to_str().unwrap()]));
    assert_eq!(
        text.trim(),
        format!("imported 4 sessions into {url} (schema \"{s}\")")
    );
    assert!(schema_exists(url, s));
    // The other schema still holds nothing: a store of its own once it is created.
    let rt = rt();
    let here = connect(&rt, url, s);
    let there = connect(&rt, url, &other);
    assert_eq!(rt.block_on(here.len()).unwrap(), 4);
    assert_eq!(rt.block_on(there.len()).unwrap(), 0);
    assert!(rt.block_on(here.peek(&f.filled.bob.0)).unwrap().is_some());
    assert!(rt.block_on(there.peek(&f.filled.bob.0)).unwrap().is_none());
    let j = ok_json(&at(url, &other, &["stats", "--json"]));
    assert_eq!(
        (j["sessions"].as_u64(), j["schema"].as_str()),
        (Some(0), Some(other.as_str()))
    );
    // A schema name PostgresOptions::schema refuses is a bad command line.
    let err = fails(&at(url, "My-App", &["stats"]), 2);
    assert!(err.contains("1 to 48 of a-z 0-9 _"), "{err}");
}

#[test]
fn compact_and_verify_are_refused_on_postgres_as_directory_commands() {
    let _serial = serial();
    let Some((url, s)) = database() else {
        return;
    };
    let err = fails(&at(&url, &s, &["compact"]), 1);
    assert!(
        err.contains("`compact` applies to a store directory (--dir), not to PostgreSQL"),
        "{err}"
    );
    let err = fails(&at(&url, &s, &["verify"]), 1);
    assert!(
        err.contains("`verify` applies to a store directory (--dir), not to PostgreSQL"),
        "{err}"
    );
    let o = run(&at(&url, &s, &["verify", "--json"]));
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert!(!schema_exists(&url, &s), "refused before connecting");
}

#[test]
fn naming_two_stores_or_options_of_another_kind_of_store_exits_2() {
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
    let url = "postgres://app@127.0.0.1:1/app";
    let redis = "redis://127.0.0.1:1/";
    let conflict = "cannot be used with";
    usage(&["-d", "x", "--postgres", url, "stats"], &[], conflict);
    usage(&["--postgres", url, "stats", "-d", "x"], &[], conflict);
    usage(
        &["--redis", redis, "stats", "--postgres", url],
        &[],
        conflict,
    );
    usage(
        &["stats"],
        &[],
        "or --postgres URL (or set SESSIONDB_POSTGRES_URL)",
    );
    usage(
        &["stats"],
        &[("SESSIONDB_DIR", "x"), ("SESSIONDB_POSTGRES_URL", url)],
        "SESSIONDB_DIR and SESSIONDB_POSTGRES_URL are both set",
    );
    usage(
        &["stats"],
        &[
            ("SESSIONDB_DIR", "x"),
            ("SESSIONDB_REDIS_URL", redis),
            ("SESSIONDB_POSTGRES_URL", url),
        ],
        "are all set",
    );
    usage(
        &["-d", "x", "--postgres-schema", "app", "stats"],
        &[],
        "--postgres-schema applies to a PostgreSQL store (--postgres URL), not to a store \
         directory",
    );
    usage(
        &["--redis", redis, "--postgres-schema", "app", "stats"],
        &[],
        "--postgres-schema applies to a PostgreSQL store (--postgres URL), not to Redis",
    );
    usage(
        &["--postgres", url, "--redis-prefix", "p", "stats"],
        &[],
        "--redis-prefix applies to a Redis store (--redis URL), not to PostgreSQL",
    );
    usage(
        &["--postgres", url, "--backend", "sled", "stats"],
        &[],
        "--backend applies to a store directory, not to PostgreSQL",
    );
    // The tests' server variable is not the binary's: it names no store.
    usage(
        &["stats"],
        &[("SESSIONDB_TEST_POSTGRES_URL", url)],
        "the store is required",
    );
    // The command line wins over the environment: no conflict, it reaches the server.
    let o = bin()
        .env("SESSIONDB_DIR", "/nonexistent")
        .args(["--postgres", url, "stats"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("postgres connecting to 127.0.0.1:1 failed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_unreachable_server_fails_with_status_1_saying_so_without_the_password() {
    let _serial = serial();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for url in [
        format!("postgres://app:s3cret@127.0.0.1:{port}/app"),
        format!("host=127.0.0.1 port={port} user=app password=s3cret dbname=app"),
    ] {
        for cmd in [
            &["stats"][..],
            &["list", "--user", "alice"],
            &["import", "/dev/null"],
            &["export"],
        ] {
            let mut args = vec!["--postgres", url.as_str()];
            args.extend_from_slice(cmd);
            let err = fails(&args, 1);
            assert!(
                err.starts_with(&format!(
                    "sessiondb: error: postgres connecting to 127.0.0.1:{port} failed"
                )),
                "{cmd:?}: {err}"
            );
            assert!(
                err.contains("Connection refused")
                    && err.contains("check that the server is up and reachable"),
                "{cmd:?}: {err}"
            );
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}

/// A password change's not-before time moves with the sessions: out of a directory,
/// into PostgreSQL (which then refuses the revoked session's old record), and back
/// out; `revoke --before` works on PostgreSQL too.
#[test]
fn not_before_times_move_between_a_directory_and_postgres_and_keep_old_sessions_out() {
    let _serial = serial();
    let Some((url, schema)) = database() else {
        return;
    };
    let (url, s) = (url.as_str(), schema.as_str());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("src");
    let f = fixture(&dir);
    let alice = &f.filled.alice;
    let d = dir.to_str().unwrap();
    // A backup of alice's first session, then a revocation of it by time.
    let backup = ok(&["-d", d, "export"]);
    let old = backup
        .lines()
        .find(|l| l.contains(&alice[0].1.to_string()))
        .unwrap()
        .to_owned();
    let store = Store::open_with(&dir, options()).unwrap();
    let second = store.peek(&alice[1].0).unwrap().authenticated_at().unwrap();
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
    let j = ok_json(&at(url, s, &["import", "--json", file.to_str().unwrap()]));
    assert_eq!(
        (j["imported"].clone(), j["not_before"].clone()),
        (4.into(), 1.into())
    );

    let rt = rt();
    let pg_store = connect(&rt, url, s);
    let times = rt.block_on(pg_store.not_before_times()).unwrap();
    assert_eq!(times.len(), 1);
    assert_eq!((times[0].0.as_str(), times[0].1), ("alice", second));
    // The old backup's line is refused in PostgreSQL: skipped as already ended.
    let one = work.path().join("old.jsonl");
    std::fs::write(&one, &old).unwrap();
    let j = ok_json(&at(url, s, &["import", "--json", one.to_str().unwrap()]));
    assert_eq!(j["imported"], 0);
    assert_eq!(j["skipped_expired"], serde_json::json!([1]));
    assert!(rt.block_on(pg_store.peek(&alice[0].0)).unwrap().is_none());
    // PostgreSQL exports the time again, after its sessions.
    let back = ok(&at(url, s, &["export"]));
    assert_eq!(sorted_lines(&back), sorted_lines(&exported));
    assert!(back.lines().last().unwrap().contains("\"not_before\""));
    // And revokes by time itself.
    let j = ok_json(&at(
        url,
        s,
        &["revoke", "--user", "alice", "--before", "now", "--json"],
    ));
    assert_eq!(j["revoked"], 1);
    assert!(
        rt.block_on(pg_store.sessions_of("alice"))
            .unwrap()
            .is_empty()
    );
}

/// Sessions move from Redis to PostgreSQL with one pipe, as from a directory: every
/// cookie keeps working, and both export the same lines.
#[cfg(feature = "redis")]
#[test]
fn sessions_move_from_redis_to_postgres_with_the_pipe_and_every_cookie_still_works() {
    let _serial = serial();
    let Some((url, schema)) = database() else {
        return;
    };
    let Some(redis) = redis_server::RedisServer::start(redis_server::NO_PERSISTENCE) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("sessions");
    let f = fixture(&dir);
    let redis_url = redis.url();
    shell(
        work.path(),
        &format!("sessiondb -d ./sessions export | sessiondb --redis {redis_url} import"),
    );
    let out = shell(
        work.path(),
        &format!(
            "sessiondb --redis {redis_url} export \
             | sessiondb --postgres {url} --postgres-schema {schema} import"
        ),
    );
    assert_eq!(
        out.trim(),
        format!("imported 5 sessions into {url} (schema \"{schema}\")")
    );

    let rt = rt();
    let from = rt
        .block_on(sessiondb::RedisStore::connect(&redis_url, options()))
        .unwrap();
    let to = connect(&rt, &url, &schema);
    for (token, id) in f.all() {
        let was = rt.block_on(from.peek(token)).unwrap().unwrap();
        let now = rt
            .block_on(to.get(token))
            .unwrap()
            .expect("the session, by its original cookie");
        assert_eq!(now.id(), *id);
        assert_same(&now, &was);
    }
    assert_eq!(
        sorted_lines(&ok(&["--redis", &redis_url, "export"])),
        sorted_lines(&ok(&at(&url, &schema, &["export"])))
    );
}
