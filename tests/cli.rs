//! The `sessiondb` command line, run as the real binary on real store directories made
//! through the public API in temporary directories (feature `cli`).

#[path = "support/cli_bin.rs"]
mod cli_bin;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cli_bin::{Filled, bin, fill, serial, stderr, stdout};
#[cfg(feature = "sled")]
use sessiondb::BackendKind;
use sessiondb::{
    Device, ManualClock, NewSession, Options, SessionId, SessionRecord, SignIn, Store, Timestamp,
    Token,
};

const HOUR: Duration = Duration::from_secs(3600);

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin().arg("--dir").arg(dir).args(args).output().unwrap()
}

/// Runs and expects exit status 0.
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

fn ok_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(dir, args)).unwrap()
}

/// Runs and expects exit status `code`; returns stderr.
fn fails(dir: &Path, args: &[&str], code: i32) -> String {
    let o = run(dir, args);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stdout(&o));
    stderr(&o)
}

/// Runs `args` and expects a bad command line: exit status 2, `want` in stderr.
fn usage(args: &[&str], want: &str) {
    let o = bin().args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{args:?}");
    assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
}

/// When alice's second session of `fixture` signed in, and the export record of her
/// first (a backup from before a revocation).
fn second_login_and_first_record(dir: &Path, f: &Fixture) -> (Timestamp, SessionRecord) {
    let store = reopen(dir);
    let second = store
        .peek(&f.alice[1].0)
        .unwrap()
        .authenticated_at()
        .unwrap();
    let mut first = None;
    store
        .export(|r| {
            if r.id == f.alice[0].1 {
                first = Some(r);
            }
            Ok(())
        })
        .unwrap();
    store.close().unwrap();
    (second, first.expect("alice's first session exported"))
}

fn options() -> Options {
    Options::default().reaper_interval(None)
}

/// What `fixture` made.
struct Fixture {
    alice: Vec<(Token, SessionId)>,
    bob: (Token, SessionId),
    anon: (Token, SessionId),
    created: Timestamp,
}

/// A store made two hours ago (so a touch by the tool would show in `last_seen`): two
/// sessions of alice, one of bob, one anonymous, with data.
fn fixture(dir: &Path, opts: Options) -> Fixture {
    let created = Timestamp(now().0 - 2 * 3_600_000);
    let clock = ManualClock::new(created);
    let store = Store::open_with(dir, opts.clock(clock.clone())).unwrap();
    let Filled { alice, bob, anon } = fill(&store, || clock.advance(Duration::from_secs(1)));
    store.close().unwrap();
    Fixture {
        alice,
        bob,
        anon,
        created,
    }
}

fn reopen(dir: &Path) -> Store {
    Store::open_with(dir, options()).unwrap()
}

fn sorted_lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

#[test]
fn stats_reports_sessions_users_and_backend_as_text_and_json() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), options());
    let text = ok(dir.path(), &["stats"]);
    assert!(text.contains("(log backend)"), "{text}");
    assert!(text.contains("4 live"), "{text}");
    assert!(text.contains("users      2"), "{text}");
    assert!(text.contains("in memory  ≈ "), "{text}");
    let j = ok_json(dir.path(), &["stats", "--json"]);
    assert_eq!(j["backend"], "log");
    assert_eq!(j["sessions"], 4);
    assert!(j["resident_bytes"].as_u64().unwrap() >= 4 * 300);
    assert_eq!(j["users"], 2);
    assert!(j["disk_bytes"].as_u64().unwrap() > 0);
    assert!(j["recovery"]["records"].as_u64().unwrap() >= 4);
}

#[test]
fn list_shows_a_users_sessions_oldest_first_as_a_table_and_json() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path(), options());
    let text = ok(dir.path(), &["list", "--user", "alice"]);
    assert!(
        text.starts_with("2 live sessions of user \"alice\""),
        "{text}"
    );
    assert!(text.contains("ID") && text.contains("LABEL") && text.contains("EXPIRES"));
    let first = text.find(&f.alice[0].1.to_string()).unwrap();
    let second = text.find(&f.alice[1].1.to_string()).unwrap();
    assert!(first < second, "oldest first: {text}");
    assert!(text.contains("Firefox on Linux") && text.contains("Phone"));
    assert!(!text.contains(&f.bob.1.to_string()));

    let j = ok_json(dir.path(), &["list", "--user", "alice", "--json"]);
    let arr = j.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["id"], f.alice[0].1.to_string());
    assert_eq!(arr[0]["user"], "alice");
    assert_eq!(arr[1]["label"], "Phone");
    assert_eq!(arr[0]["created_ms"], f.created.0);

    let none = ok(dir.path(), &["list", "--user", "carol"]);
    assert_eq!(none.trim(), "user \"carol\" has no live sessions");
    assert_eq!(
        ok_json(dir.path(), &["list", "-u", "carol", "--json"]),
        serde_json::json!([])
    );
}

#[test]
fn show_prints_one_session_with_previews_and_json_gives_values_in_base64() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path(), options());
    let id = f.alice[0].1.to_string();
    let text = ok(dir.path(), &["show", &id]);
    assert!(text.contains(&format!("id          {id}")), "{text}");
    assert!(
        text.contains("user        \"alice\", authenticated"),
        "{text}"
    );
    assert!(text.contains("label       \"Firefox on Linux\""), "{text}");
    assert!(text.contains("data        3 keys"), "{text}");
    assert!(text.contains("\"dark\" (a bincode string)"), "{text}");
    assert!(text.contains("\"plain text\" (raw text)"), "{text}");
    assert!(
        text.contains("[01 00 00 00 00 00 00 00 2a 00 00 00]"),
        "{text}"
    );

    let j = ok_json(dir.path(), &["show", &id, "--json"]);
    assert_eq!(j["id"], id);
    assert_eq!(j["data"]["raw"], "cGxhaW4gdGV4dA=="); // base64("plain text")
    assert_eq!(j["data"]["cart"], "AQAAAAAAAAAqAAAA");
    assert_eq!(j["version"], 3);
    assert_eq!(j["idle_timeout_ms"], 86_400_000);

    let anon = ok_json(dir.path(), &["show", &f.anon.1.to_string(), "--json"]);
    assert_eq!(anon["user"], serde_json::Value::Null);
    assert_eq!(anon["idle_timeout_ms"], 48 * 3_600_000);
}

#[test]
fn show_or_revoke_of_an_id_that_is_not_live_fails_with_status_1() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), options());
    let unknown = "0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11";
    let err = fails(dir.path(), &["show", unknown], 1);
    assert!(
        err.contains(&format!("no live session has id {unknown}")),
        "{err}"
    );
    let err = fails(dir.path(), &["revoke", unknown], 1);
    assert!(err.contains("nothing was revoked"), "{err}");
}

#[test]
fn reading_commands_touch_extend_or_change_no_session() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let opts = options().lifetime(HOUR * 3);
    let f = fixture(dir.path(), opts);
    let before: Vec<_> = {
        let s = reopen(dir.path());
        let tokens = [&f.alice[0].0, &f.alice[1].0, &f.bob.0, &f.anon.0];
        tokens
            .iter()
            .map(|t| {
                let x = s.peek(t).unwrap();
                (x.last_seen(), x.version(), x.expires_at())
            })
            .collect()
    };
    let id = f.alice[0].1.to_string();
    for args in [
        vec!["stats"],
        vec!["list", "--user", "alice"],
        vec!["show", &id],
        vec!["verify"],
        vec!["export"],
    ] {
        ok(dir.path(), &args);
    }
    let s = reopen(dir.path());
    let tokens = [&f.alice[0].0, &f.alice[1].0, &f.bob.0, &f.anon.0];
    let after: Vec<_> = tokens
        .iter()
        .map(|t| {
            let x = s.peek(t).unwrap();
            (x.last_seen(), x.version(), x.expires_at())
        })
        .collect();
    assert_eq!(before, after);
    // Made two hours ago: a touch by the tool would have moved last_seen to now.
    let hour_ago = Timestamp(now().0 - 3_600_000);
    assert!(
        after.iter().all(|&(seen, _, _)| seen < hour_ago),
        "{after:?}"
    );
}

#[test]
fn a_store_held_open_by_another_process_is_refused_naming_it_with_status_1() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path(), options());
    let backup = dir.path().join("backup.jsonl");
    std::fs::write(&backup, "").unwrap();
    let backup = backup.to_str().unwrap();
    let held = reopen(dir.path());
    let id = f.bob.1.to_string();
    for args in [
        vec!["stats"],
        vec!["list", "--user", "alice"],
        vec!["show", &id],
        vec!["revoke", "--user", "alice"],
        vec!["revoke", &id],
        vec!["compact"],
        vec!["verify"],
        vec!["export"],
        vec!["import", backup],
    ] {
        let err = fails(dir.path(), &args, 1);
        assert!(
            err.contains(&format!("is in use by process {}", std::process::id())),
            "{args:?}: {err}"
        );
        assert!(err.contains("no process has open"), "{err}");
    }
    // Nothing was changed meanwhile, and once it is closed the tool works.
    assert_eq!(held.sessions_of("alice").unwrap().len(), 2);
    drop(held);
    assert_eq!(ok_json(dir.path(), &["stats", "--json"])["sessions"], 4);
}

#[test]
fn bad_command_lines_exit_with_status_2_and_say_why() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), options());
    let d = dir.path().to_str().unwrap();
    usage(&["stats"], "the store is required: pass --dir DIR");
    usage(&["-d", d], "Usage");
    usage(&["-d", d, "frobnicate"], "unrecognized subcommand");
    usage(&["-d", d, "show", "not-an-id"], "invalid session id");
    usage(&["-d", d, "show"], "PUBLIC_ID");
    usage(&["-d", d, "list"], "--user <USER>");
    usage(&["-d", d, "list", "--user", ""], "invalid user id");
    usage(&["-d", d, "revoke"], "required");
    usage(
        &[
            "-d",
            d,
            "revoke",
            "--user",
            "alice",
            "0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11",
        ],
        "cannot be used with",
    );
    usage(
        &["-d", d, "--auth-lifetime", "3w", "stats"],
        "not a duration",
    );
    usage(&["-d", d, "--backend", "redis", "stats"], "invalid value");
    usage(&["-d", d, "export", "--json"], "unexpected argument");
    // Help is not an error, and lists the exit statuses and examples.
    let o = bin().arg("--help").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    assert!(help.contains("Exit status: 0 done; 1 the operation failed"));
    assert!(help.contains("Examples:") && help.contains("only their BLAKE3 hashes"));
    // The directory also comes from the environment.
    let o = bin()
        .env("SESSIONDB_DIR", dir.path())
        .args(["stats", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Redis support is a build option: without it, `--redis` says how to get it (the
/// Redis commands themselves are pinned in tests/cli_redis.rs).
#[cfg(not(feature = "redis"))]
#[test]
fn without_the_redis_feature_redis_urls_are_refused_saying_how_to_build_with_it() {
    let _serial = serial();
    let o = bin()
        .env_remove("SESSIONDB_REDIS_URL")
        .args([
            "--redis",
            "redis://127.0.0.1:6379/",
            "list",
            "--user",
            "alice",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("built without Redis support") && err.contains("--features cli,redis"),
        "{err}"
    );
    // The command line itself is checked first, as with a directory.
    let o = bin()
        .args(["--redis", "redis://127.0.0.1:6379/", "-d", ".", "stats"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_missing_or_empty_directory_is_no_store_and_is_left_as_it_was() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = fails(&missing, &["stats"], 1);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!missing.exists());
    let err = fails(dir.path(), &["verify"], 1);
    assert!(err.contains("holds no sessiondb store"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(fails(&file, &["stats"], 1).contains("is not a directory"));
}

#[test]
fn an_export_carries_the_not_before_times_and_the_import_keeps_refusing_old_sessions() {
    let _serial = serial();
    let src = tempfile::tempdir().unwrap();
    let f = fixture(src.path(), options());
    let (second, old) = second_login_and_first_record(src.path(), &f);
    ok(
        src.path(),
        &["revoke", "--user", "alice", "--before", &second.to_string()],
    );
    let exported = ok(src.path(), &["export"]);
    let lines: Vec<serde_json::Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "three sessions and one not-before time");
    assert!(
        lines[..3]
            .iter()
            .all(|j| j["v"] == 1 && j["id"].is_string())
    );
    assert_eq!(
        lines[3],
        serde_json::json!({"v": 2, "not_before": {"user": "alice", "at_ms": second.as_millis()}})
    );
    let file = src.path().join("backup.jsonl");
    std::fs::write(&file, &exported).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let target = dst.path().join("restored");
    let text = ok(&target, &["import", file.to_str().unwrap()]);
    assert_eq!(
        text.trim(),
        format!(
            "imported 3 sessions into {}\nand the not-before times of 1 user (0 sessions \
             signed in before them ended)",
            target.display()
        )
    );
    let store = reopen(&target);
    let alice = sessiondb::UserId::new("alice", &sessiondb::Limits::default()).unwrap();
    assert_eq!(store.not_before_times(), vec![(alice, second)]);
    assert!(
        !store.import(old).unwrap(),
        "the session revoked at the source stays out of the copy"
    );
    assert!(store.peek(&f.alice[1].0).is_some());
    store.verify().unwrap();
}

#[test]
fn export_then_import_into_an_empty_dir_round_trips_and_the_same_cookies_work() {
    let _serial = serial();
    let src = tempfile::tempdir().unwrap();
    let f = fixture(src.path(), options());
    let exported = ok(src.path(), &["export"]);
    assert_eq!(exported.lines().count(), 4);
    for line in exported.lines() {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(j["v"], 1);
        assert_eq!(j["token_hash"].as_str().unwrap().len(), 32);
    }
    // --out writes the same lines, and leaves no partial file.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("backup.jsonl");
    ok(src.path(), &["export", "--out", file.to_str().unwrap()]);
    let from_file = std::fs::read_to_string(&file).unwrap();
    assert_eq!(sorted_lines(&from_file), sorted_lines(&exported));
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);

    let dst = tempfile::tempdir().unwrap();
    let target = dst.path().join("restored");
    let text = ok(&target, &["import", file.to_str().unwrap()]);
    assert_eq!(
        text.trim(),
        format!("imported 4 sessions into {}", target.display())
    );
    let again = ok(&target, &["export"]);
    assert_eq!(sorted_lines(&again), sorted_lines(&exported));

    let store = reopen(&target);
    for (token, id) in f.alice.iter().chain([&f.bob, &f.anon]) {
        assert_eq!(store.peek(token).unwrap().id(), *id);
    }
    let cart: Option<Vec<u32>> = store.peek(&f.alice[0].0).unwrap().get("cart").unwrap();
    assert_eq!(cart, Some(vec![42]));
    assert_eq!(store.sessions_of("alice").unwrap().len(), 2);
    store.verify().unwrap();
    drop(store);

    // From stdin too, with a JSON summary.
    let piped = tempfile::tempdir().unwrap();
    let mut child = bin()
        .arg("-d")
        .arg(piped.path())
        .args(["import", "--json"])
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
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["imported"], 4);
    assert_eq!(reopen(piped.path()).len(), 4);
}

#[test]
fn an_import_with_bad_lines_names_each_line_and_imports_nothing() {
    let _serial = serial();
    let src = tempfile::tempdir().unwrap();
    fixture(src.path(), options());
    let exported = ok(src.path(), &["export"]);
    let lines: Vec<&str> = exported.lines().collect();
    let input = [
        lines[0],                                                      // 1: good
        "{not json",                                                   // 2
        "",                                                            // 3: blank, ignored
        &lines[1].replace("\"v\":1", "\"v\":7"),                       // 4
        lines[0],                                                      // 5: duplicate of line 1
        &lines[2].replace("\"data\"", "\"dta\""),                      // 6
        &lines[3].replace("\"token_hash\":\"", "\"token_hash\":\"zz"), // 7
        "[]",                                                          // 8
    ]
    .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, input).unwrap();
    let target = dir.path().join("store");
    let f = file.to_str().unwrap();
    let err = fails(&target, &["import", f], 1);
    for (line, what) in [
        (2, "not valid JSON"),
        (4, "schema version 7 is not supported"),
        (5, "already appears on line 1"),
        (6, "unknown field `dta`"),
        (7, "\"token_hash\" must be 32 hex digits"),
        (8, "expected a JSON object"),
    ] {
        let prefix = format!("{f}:{line}: ");
        let reported = err.lines().find(|l| l.starts_with(&prefix));
        assert!(
            reported.is_some_and(|l| l.contains(what)),
            "line {line}: {err}"
        );
    }
    assert!(!err.contains(&format!("{f}:1:")) && !err.contains(&format!("{f}:3:")));
    assert!(err.contains("6 bad lines in"), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    assert!(!target.exists(), "a bad file creates no store");
}

#[test]
fn an_import_of_sessions_already_there_is_refused_unless_skip_existing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), options());
    let exported = ok(dir.path(), &["export"]);
    let file = dir.path().join("backup.jsonl");
    std::fs::write(&file, &exported).unwrap();
    let f = file.to_str().unwrap();
    let err = fails(dir.path(), &["import", f], 1);
    assert!(err.contains(":1: session ") && err.contains("is already in the store"));
    assert!(err.contains("4 bad lines"), "{err}");
    let j = ok_json(dir.path(), &["import", "--skip-existing", "--json", f]);
    assert_eq!(j["imported"], 0);
    assert_eq!(j["skipped_existing"], serde_json::json!([1, 2, 3, 4]));
    let text = ok(dir.path(), &["import", "--skip-existing", f]);
    assert!(
        text.contains("skipped 4 already in the store (lines 1, 2, 3, 4)"),
        "{text}"
    );
    assert_eq!(reopen(dir.path()).len(), 4);
}

#[test]
fn an_import_skips_sessions_past_their_deadline_and_says_which_lines() {
    let _serial = serial();
    let src = tempfile::tempdir().unwrap();
    fixture(src.path(), options());
    let exported = ok(src.path(), &["export"]);
    let mut lines: Vec<serde_json::Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[1]["absolute_ms"] = serde_json::json!(now().0 - 1000);
    let input: Vec<String> = lines.iter().map(|v| v.to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, input.join("\n")).unwrap();
    let target = dir.path().join("store");
    let text = ok(&target, &["import", file.to_str().unwrap()]);
    assert!(text.contains("imported 3 sessions"), "{text}");
    assert!(
        text.contains("skipped 1 already ended: past their deadline, or revoked by their user's not-before time (line 2)"),
        "{text}"
    );
    assert_eq!(reopen(&target).len(), 3);
}

#[test]
fn an_import_the_store_refuses_midway_takes_back_what_it_imported() {
    let _serial = serial();
    let src = tempfile::tempdir().unwrap();
    fixture(src.path(), options());
    let exported = ok(src.path(), &["export"]);
    let lines: Vec<&str> = exported.lines().collect();
    // The target already has line 3's token hash, under another public id: only the
    // store itself can see that conflict, when line 3 is imported.
    let mut clash: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    clash["id"] = serde_json::json!("0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11");
    let dir = tempfile::tempdir().unwrap();
    let (one, all) = (dir.path().join("one.jsonl"), dir.path().join("all.jsonl"));
    std::fs::write(&one, clash.to_string()).unwrap();
    std::fs::write(&all, &exported).unwrap();
    let target = dir.path().join("store");
    ok(&target, &["import", one.to_str().unwrap()]);
    let a = all.to_str().unwrap();
    let err = fails(&target, &["import", a], 1);
    assert!(
        err.contains(&format!("{a}:3: the store refused the session")),
        "{err}"
    );
    assert!(
        err.contains("the 2 sessions this run imported were removed again"),
        "{err}"
    );
    let store = reopen(&target);
    assert_eq!(store.len(), 1);
    store.verify().unwrap();
}

#[test]
fn revoke_by_user_and_by_public_id_is_durable_in_a_reopened_store() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path(), options());
    let text = ok(dir.path(), &["revoke", "--user", "alice"]);
    assert_eq!(text.trim(), "revoked 2 sessions of user \"alice\"");
    let j = ok_json(dir.path(), &["revoke", "--user", "alice", "--json"]);
    assert_eq!(j, serde_json::json!({"user": "alice", "revoked": 0}));
    let id = f.bob.1.to_string();
    let j = ok_json(dir.path(), &["revoke", &id, "--json"]);
    assert_eq!(j, serde_json::json!({"id": id, "revoked": 1}));

    let store = reopen(dir.path());
    assert!(store.sessions_of("alice").unwrap().is_empty());
    assert!(store.peek(&f.alice[0].0).is_none() && store.peek(&f.alice[1].0).is_none());
    assert!(store.peek(&f.bob.0).is_none());
    assert!(store.peek(&f.anon.0).is_some());
    assert_eq!(store.len(), 1);
    store.verify().unwrap();
}

#[test]
fn revoke_before_ends_only_the_sessions_that_signed_in_earlier_and_keeps_them_out() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path(), options());
    let (second, first_exported) = second_login_and_first_record(dir.path(), &f);
    // The time as `list` prints it: the first of alice's sessions signed in before.
    let t = second.to_string();
    let text = ok(dir.path(), &["revoke", "--user", "alice", "--before", &t]);
    assert_eq!(
        text.trim(),
        format!(
            "revoked 1 session of user \"alice\" signed in before {t}; none from before \
             it can come back"
        )
    );
    let store = reopen(dir.path());
    assert!(store.peek(&f.alice[0].0).is_none());
    assert!(store.peek(&f.alice[1].0).is_some());
    assert!(
        !store.import(first_exported).unwrap(),
        "the not-before time keeps the old session out"
    );
    store.close().unwrap();
    let j = ok_json(
        dir.path(),
        &["revoke", "--user", "alice", "--before", "now", "--json"],
    );
    assert_eq!(j["revoked"], 1);
    assert!(j["not_before_ms"].as_u64().unwrap() > second.as_millis());
    let d = dir.path().to_str().unwrap();
    usage(&["-d", d, "revoke", "--before", "now"], "--user");
    usage(
        &[
            "-d",
            d,
            "revoke",
            "--user",
            "alice",
            "--before",
            "yesterday",
        ],
        "is not a time",
    );
    let store = reopen(dir.path());
    assert!(store.sessions_of("alice").unwrap().is_empty());
    assert!(store.peek(&f.bob.0).is_some());
    store.verify().unwrap();
}

#[test]
fn revoke_keep_ends_every_other_session_of_the_user_and_only_with_their_own_id() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path(), options());
    let (keep, bob) = (f.alice[1].1.to_string(), f.bob.1.to_string());
    // Another user's id, or one that is not live, is refused and changes nothing.
    for id in [&bob, "0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11"] {
        let err = fails(dir.path(), &["revoke", "--user", "alice", "--keep", id], 1);
        assert!(err.contains("nothing was revoked"), "{err}");
    }
    assert_eq!(reopen(dir.path()).sessions_of("alice").unwrap().len(), 2);
    let text = ok(dir.path(), &["revoke", "--user", "alice", "--keep", &keep]);
    assert_eq!(
        text.trim(),
        format!("revoked 1 other session of user \"alice\"; kept {keep}")
    );
    let j = ok_json(
        dir.path(),
        &["revoke", "--user", "alice", "--keep", &keep, "--json"],
    );
    assert_eq!(
        j,
        serde_json::json!({"user": "alice", "revoked": 0, "kept": keep})
    );
    let store = reopen(dir.path());
    assert!(store.peek(&f.alice[0].0).is_none());
    assert!(store.peek(&f.alice[1].0).is_some());
    assert!(store.peek(&f.bob.0).is_some());
    store.close().unwrap();
    let d = dir.path().to_str().unwrap();
    usage(&["-d", d, "revoke", "--keep", &keep], "--user");
    usage(
        &[
            "-d", d, "revoke", "--user", "alice", "--keep", &keep, "--before", "now",
        ],
        "cannot be used with",
    );
}

#[test]
fn verify_says_ok_on_a_healthy_store_and_fails_on_a_damaged_one() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), options());
    let text = ok(dir.path(), &["verify"]);
    assert!(text.starts_with("ok: "), "{text}");
    assert!(text.contains("torn tail  none"), "{text}");
    assert!(text.contains("sessions   4 live"), "{text}");
    let j = ok_json(dir.path(), &["verify", "--json"]);
    assert_eq!(j["ok"], true);
    assert_eq!(j["sessions"], 4);
    assert_eq!(j["bytes_truncated"], 0);

    // A later segment exists, so damage in the first one is corruption, not a torn tail.
    let store = reopen(dir.path());
    store.create(NewSession::for_user("carol")).unwrap();
    store.close().unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .collect();
    segments.sort();
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(first, bytes).unwrap();
    let o = run(dir.path(), &["verify", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert!(j["error"].as_str().unwrap().contains("corrupt log"), "{j}");
    assert!(stderr(&o).contains("sessiondb: error: corrupt log"));
}

#[test]
fn compact_shrinks_a_churned_log_and_keeps_every_live_session() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options().compaction(false, 16 << 20, 2.0)).unwrap();
    let mut kept = Vec::new();
    for i in 0..2000u32 {
        let (t, _) = store
            .create(NewSession::for_user(format!("user{}", i % 50)))
            .unwrap();
        for v in 0..5u32 {
            store.put(&t, "counter", &vec![v; 20]).unwrap();
        }
        if i % 10 == 0 {
            kept.push(t);
        } else {
            store.end(&t).unwrap();
        }
    }
    store.close().unwrap();
    let j = ok_json(dir.path(), &["compact", "--json"]);
    let (before, after) = (
        j["bytes_before"].as_u64().unwrap(),
        j["bytes_after"].as_u64().unwrap(),
    );
    assert_eq!(j["backend"], "log");
    assert_eq!(j["sessions"], 200);
    assert!(after * 5 < before, "{before} -> {after}");
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk < before / 2, "{on_disk} on disk after compaction");
    let text = ok(dir.path(), &["compact"]);
    assert!(
        text.contains("compacted ") && text.contains("200 live sessions"),
        "{text}"
    );
    let store = reopen(dir.path());
    assert_eq!(store.len(), 200);
    for t in &kept {
        let v: Option<Vec<u32>> = store.peek(t).unwrap().get("counter").unwrap();
        assert_eq!(v, Some(vec![4; 20]));
    }
}

#[test]
fn auth_lifetime_makes_the_tool_agree_with_the_application_on_expiry() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // alice logged in two hours ago; an application with a one-hour auth lifetime
    // considers her sessions over.
    fixture(dir.path(), options());
    let j = ok_json(dir.path(), &["list", "--user", "alice", "--json"]);
    assert_eq!(j.as_array().unwrap().len(), 2);
    let j = ok_json(
        dir.path(),
        &["--auth-lifetime", "1h", "list", "--user", "alice", "--json"],
    );
    assert_eq!(j, serde_json::json!([]));
    let lines = ok(dir.path(), &["export", "--auth-lifetime", "1h"]);
    assert_eq!(
        lines.lines().count(),
        1,
        "only the anonymous session: {lines}"
    );
    let j = ok_json(dir.path(), &["--auth-lifetime", "3h", "stats", "--json"]);
    assert_eq!(j["sessions"], 4);
}

#[test]
fn the_backend_is_detected_and_a_contradicting_backend_flag_is_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), options());
    let err = fails(dir.path(), &["--backend", "sled", "stats"], 1);
    assert!(
        err.contains("holds a log store, not a sled database"),
        "{err}"
    );
    assert!(!dir.path().join("sled").exists());
    assert_eq!(
        ok_json(dir.path(), &["--backend", "log", "stats", "--json"])["sessions"],
        4
    );
}

#[cfg(feature = "sled")]
#[test]
fn a_sled_store_is_detected_and_round_trips_through_export_and_import() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path(), options().backend(BackendKind::Sled));
    let j = ok_json(dir.path(), &["stats", "--json"]);
    assert_eq!(j["backend"], "sled");
    assert_eq!(j["sessions"], 4);
    assert_eq!(
        ok_json(dir.path(), &["list", "-u", "alice", "--json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(ok(dir.path(), &["verify"]).contains("(sled backend)"));
    assert!(ok(dir.path(), &["compact"]).contains("manages its own space"));
    let exported = ok(dir.path(), &["export"]);
    let file = dir.path().join("backup.jsonl");
    std::fs::write(&file, &exported).unwrap();
    // Into a new sled directory, and into a log one: a migration between backends.
    let to_sled = tempfile::tempdir().unwrap();
    ok(
        to_sled.path(),
        &["--backend", "sled", "import", file.to_str().unwrap()],
    );
    assert!(to_sled.path().join("sled").is_dir());
    assert_eq!(
        sorted_lines(&ok(to_sled.path(), &["export"])),
        sorted_lines(&exported)
    );
    let to_log = tempfile::tempdir().unwrap();
    ok(to_log.path(), &["import", file.to_str().unwrap()]);
    let store = reopen(to_log.path());
    assert_eq!(store.peek(&f.alice[1].0).unwrap().id(), f.alice[1].1);
    drop(store);
    ok(dir.path(), &["revoke", "--user", "alice"]);
    let store = Store::open_with(dir.path(), options().backend(BackendKind::Sled)).unwrap();
    assert!(store.sessions_of("alice").unwrap().is_empty());
    assert_eq!(store.len(), 2);
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let f = fixture(&work.path().join("sessions"), options());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_sessiondb")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cli.sh");
    let o = Command::new("bash")
        .arg(script)
        .current_dir(work.path())
        .env("PATH", path)
        .env_remove("SESSIONDB_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("revoked 2 sessions of user \"alice\""),
        "{out}"
    );
    assert!(out.contains("imported 2 sessions into ./restored"), "{out}");
    assert!(out.contains("compacted ./sessions"), "{out}");
    let restored = reopen(&work.path().join("restored"));
    assert_eq!(restored.peek(&f.bob.0).unwrap().id(), f.bob.1);
    assert!(restored.peek(&f.alice[0].0).is_none());
}

/// The binary with `args`, run through `sh` after `umask 022` (the usual umask, set
/// here so that a stricter one in the environment cannot hide a world-readable file),
/// and after `runner` (say, `setpriv` to run it as another user).
#[cfg(unix)]
fn under_umask_022(runner: &[&str], args: &[&std::ffi::OsStr]) -> Output {
    let mut c = match runner.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg("sh");
            c
        }
        None => Command::new("sh"),
    };
    c.arg("-c")
        .arg(r#"umask 022 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_sessiondb"))
        .args(args)
        .env_remove("SESSIONDB_DIR")
        .env_remove("SESSIONDB_REDIS_URL")
        .env_remove("SESSIONDB_POSTGRES_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn export_out_writes_a_file_only_its_owner_can_read() {
    let _serial = serial();
    let src = tempfile::tempdir().unwrap();
    fixture(src.path(), options());
    let out = tempfile::tempdir().unwrap();
    let export = |file: &Path| {
        let o = under_umask_022(
            &[],
            &[
                "--dir".as_ref(),
                src.path().as_os_str(),
                "export".as_ref(),
                "--out".as_ref(),
                file.as_os_str(),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(file).unwrap().lines().count(), 4);
    };
    let fresh = out.path().join("fresh.jsonl");
    export(&fresh);
    assert_eq!(mode(&fresh), 0o600);
    // Over a partial file an interrupted run left readable by all: made private too.
    let again = out.path().join("again.jsonl");
    let partial = out.path().join("again.jsonl.partial");
    std::fs::write(&partial, "stale").unwrap();
    chmod(&partial, 0o644);
    export(&again);
    assert_eq!(mode(&again), 0o600);
    assert!(!partial.exists());
}

/// A store others can read, opened by a user who is not its owner (so cannot change
/// its mode), is refused with a message saying what to run, and left as it was. Needs
/// root, to run the tool as `nobody` (through `setpriv`); elsewhere it says so and
/// passes.
#[cfg(unix)]
#[test]
fn a_store_open_to_others_that_cannot_be_made_private_is_refused() {
    let _serial = serial();
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let probe = under_umask_022(&nobody, &["--version".as_ref()]);
    if !probe.status.success() {
        eprintln!(
            "skipped: cannot run the tool as nobody (needs root, setpriv, and a binary \
             others may run): {}",
            stderr(&probe)
        );
        return;
    }
    let root = tempfile::tempdir().unwrap();
    chmod(root.path(), 0o755);
    let dir = root.path().join("sessions");
    fixture(&dir, options());
    chmod(&dir, 0o755);
    for e in std::fs::read_dir(&dir).unwrap() {
        chmod(&e.unwrap().path(), 0o644);
    }
    let o = under_umask_022(
        &nobody,
        &["--dir".as_ref(), dir.as_os_str(), "stats".as_ref()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("is open to the group or others (mode 0755)"),
        "{err}"
    );
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(
        err.contains(&format!("chmod go-rwx {}", dir.display())),
        "{err}"
    );
    assert_eq!(mode(&dir), 0o755);
    // Its owner opens it, which makes it private.
    ok(&dir, &["stats"]);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("LOCK")), 0o600);
}

#[test]
fn show_list_and_export_say_how_each_session_signed_in_and_from_what_device() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let (visitor, _) = store.create(NewSession::anonymous()).unwrap();
    let t = store
        .login_with(&visitor, "alice", SignIn::with("password"))
        .unwrap();
    let t = store.step_up(&t, SignIn::with("otp").level(2)).unwrap();
    let device = Device::new()
        .user_agent("Firefox/140")
        .address("203.0.113.77".parse().unwrap());
    assert!(store.seen_from(&t, &device).unwrap());
    let id = store.peek(&t).unwrap().id().to_string();
    store.close().unwrap();

    let text = ok(dir.path(), &["show", &id]);
    assert!(text.contains("signed in   password"), "{text}");
    assert!(
        text.contains("otp (level 2)") && text.contains("level now 2"),
        "{text}"
    );
    assert!(
        text.contains("device      \"Firefox/140\" from 203.0.113.0"),
        "{text}"
    );
    let j = ok_json(dir.path(), &["show", &id, "--json"]);
    assert_eq!(j["factors"][1]["method"], "otp");
    assert_eq!(
        (j["level"].as_u64(), j["address"].as_str()),
        (Some(2), Some("203.0.113.0"))
    );
    let text = ok(dir.path(), &["list", "--user", "alice"]);
    assert!(
        text.contains("SIGNED IN WITH") && text.contains("password,otp"),
        "{text}"
    );

    // Exported as a schema-3 line, imported with all of it.
    let exported = ok(dir.path(), &["export"]);
    let j: serde_json::Value = serde_json::from_str(exported.lines().next().unwrap()).unwrap();
    assert_eq!(j["v"], 3);
    assert_eq!(j["user_agent"], "Firefox/140");
    let dst = tempfile::tempdir().unwrap();
    let file = dst.path().join("backup.jsonl");
    std::fs::write(&file, &exported).unwrap();
    let target = dst.path().join("restored");
    ok(&target, &["import", file.to_str().unwrap()]);
    let restored = reopen(&target);
    let s = restored.peek(&t).unwrap();
    assert_eq!((s.level(), s.user_agent()), (2, Some("Firefox/140")));
    assert_eq!(s.factors().len(), 2);
}

#[test]
fn stats_prometheus_prints_the_gauges_of_a_stopped_store_for_a_textfile_collector() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), options());
    let text = ok(dir.path(), &["stats", "--prometheus", "web"]);
    assert!(
        text.contains("# TYPE sessiondb_sessions_live gauge\n"),
        "{text}"
    );
    assert!(
        text.contains("sessiondb_sessions_live{store=\"web\"} 4\n"),
        "{text}"
    );
    assert!(
        text.contains("sessiondb_sessions_authenticated{store=\"web\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("sessiondb_users{store=\"web\"} 2\n"),
        "{text}"
    );
    assert!(
        !text.contains("_total"),
        "no counters: they would count the tool's own open"
    );
    let default = ok(dir.path(), &["stats", "--prometheus"]);
    assert!(default.contains("{store=\"default\"}"), "{default}");
    usage(
        &["-d", "x", "stats", "--json", "--prometheus"],
        "cannot be used with",
    );
}
