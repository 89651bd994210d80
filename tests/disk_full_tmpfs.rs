//! A full disk on a real file system: a 512 KiB tmpfs mounted for the test (this needs
//! root; CI runs as root and sets `SESSIONDB_REQUIRE_TMPFS=1`, so there it fails rather
//! than skip). A child process — this test binary running the ignored test
//! `disk_full_child` — writes until the kernel says `ENOSPC`, printing
//! `ACK <token> <value>` after every acknowledged write (under `Sync`, when the call
//! returns; under `Buffered`, when the `flush` after it returns); it must get
//! `Error::DiskFull` — under `Buffered`, from the flush, the write itself having been
//! acknowledged before the writer met the full disk — still read, and resume writing
//! without a reopen once the parent deletes a filler file; the parent then kills it
//! with SIGKILL, reopens the store, and finds every acknowledged write.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sessiondb::{Durability, Error, NewSession, Options, Store, Token};

const CHILD_DIR_ENV: &str = "SESSIONDB_TMPFS_CHILD_DIR";
const CHILD_MODE_ENV: &str = "SESSIONDB_TMPFS_CHILD_MODE";

fn opts(buffered: bool) -> Options {
    Options::default()
        .durability(if buffered {
            Durability::Buffered {
                flush_every: Duration::from_millis(50),
            }
        } else {
            Durability::Sync
        })
        .reaper_interval(None)
        .segment_bytes(64 << 10)
        .compaction(false, u64::MAX, 2.0)
}

/// Mounts a 512 KiB tmpfs on a fresh directory, or says why it cannot.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount() -> Result<Tmpfs, String> {
        let dir = std::env::temp_dir().join(format!("sessiondb-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_tmpfs_refuses_writes_serves_reads_resumes_and_survives_kill_9() {
    for buffered in [false, true] {
        run(buffered);
    }
}

fn run(buffered: bool) {
    let fs = match Tmpfs::mount() {
        Ok(fs) => fs,
        Err(why) => {
            assert!(
                std::env::var_os("SESSIONDB_REQUIRE_TMPFS").is_none(),
                "SESSIONDB_REQUIRE_TMPFS is set, but no tmpfs could be mounted: {why}"
            );
            eprintln!("skipped: no tmpfs could be mounted ({why}); run as root");
            return;
        }
    };
    // A filler the parent deletes to free space once the child has met the full disk.
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![7u8; 160 << 10]).unwrap();
    let store_dir = fs.0.join("store");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "disk_full_child", "--ignored", "--nocapture"])
        .env(CHILD_DIR_ENV, &store_dir)
        .env(CHILD_MODE_ENV, if buffered { "buffered" } else { "sync" })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked: Vec<(Token, u64)> = Vec::new();
    let (mut full, mut resumed, mut after) = (false, false, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in lines {
        let line = line.unwrap();
        assert!(Instant::now() < deadline, "the child took too long (hang?)");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ACK", t, v] => {
                acked.push((Token::parse(t).unwrap(), v.parse().unwrap()));
                if resumed {
                    after += 1;
                    if after == 50 {
                        child.kill().unwrap(); // SIGKILL
                        break;
                    }
                }
            }
            ["FULL", message @ ..] => {
                let message = message.join(" ");
                assert!(message.contains(store_dir.to_str().unwrap()), "{message}");
                full = true;
            }
            ["READ", "ok"] => {
                assert!(full);
                std::fs::remove_file(&filler).unwrap();
            }
            ["RESUMED"] => resumed = true,
            _ => {}
        }
    }
    let status = child.wait().unwrap();
    assert!(
        full && resumed && after == 50,
        "full {full}, resumed {resumed}, {after} after; {status}"
    );
    let store = Store::open_with(&store_dir, opts(buffered)).unwrap();
    store.verify().unwrap();
    for (t, v) in &acked {
        let s = store
            .get(t)
            .expect("acknowledged before the kill, so there");
        assert_eq!(s.get::<u64>("v").unwrap(), Some(*v));
    }
    drop(store);
    drop(fs);
}

/// The child (see the module doc); does nothing unless `SESSIONDB_TMPFS_CHILD_DIR` is set.
#[test]
#[ignore = "the child process of the tmpfs test; does nothing unless SESSIONDB_TMPFS_CHILD_DIR is set"]
fn disk_full_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let buffered = std::env::var(CHILD_MODE_ENV).is_ok_and(|m| m == "buffered");
    let store = Store::open_with(Path::new(&dir), opts(buffered)).unwrap();
    let mut first: Option<Token> = None;
    let mut full_since: Option<Instant> = None;
    for v in 0u64.. {
        let r = store
            .create(NewSession::for_user("alice"))
            .and_then(|(t, _)| store.put(&t, "v", &v).map(|_| t))
            .and_then(|t| {
                if buffered {
                    store.flush().map(|()| t)
                } else {
                    Ok(t)
                }
            });
        match r {
            Ok(t) => {
                if full_since.take().is_some() {
                    println!("RESUMED");
                }
                println!("ACK {t} {v}");
                first.get_or_insert(t);
            }
            Err(e @ Error::DiskFull { .. }) => {
                if full_since.is_none() {
                    println!("FULL {e}");
                    let t = first.as_ref().expect("something fit first");
                    assert!(store.get(t).is_some(), "reads go on");
                    store.verify().unwrap();
                    println!("READ ok");
                    full_since = Some(Instant::now());
                }
                assert!(
                    full_since.unwrap().elapsed() < Duration::from_secs(60),
                    "writes never resumed"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("a write failed with {e}"),
        }
    }
}
