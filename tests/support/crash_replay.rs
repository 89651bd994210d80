//! The `crash_replay` check, shared by the fuzz target and the regression tests: a
//! sequence of operations is written under `Durability::Sync`, the log is then cut at
//! an arbitrary byte (a crash at any moment of any write), and the reopened store must
//! equal the state after some prefix of the operations — never a mixture, never
//! garbage.
//!
//! Every operation used here writes exactly one log record, so "a prefix of the
//! records" is "a prefix of the operations". Input: `[cut: u32 LE]` (its top bit: zeros
//! follow the cut, as a crash inside the preallocated part of the segment leaves them), then one tag byte
//! per operation followed by its parameters.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use sessiondb::vfs::SimFs;
use sessiondb::{
    Durability, ManualClock, NewSession, Options, SessionData, SessionId, Store, Timestamp, Token,
};

const USERS: [&str; 3] = ["alice", "bob", "carol"];
/// A log file's header: magic (8) | version u32 | kind u8 | sequence u64 | crc32 u32.
const HEADER_LEN: usize = 25;

/// What the public API shows of one token's session.
type Seen = Option<(SessionId, Option<String>, Option<u32>, u64)>;

fn observe(store: &Store, tokens: &[Token]) -> Vec<Seen> {
    tokens
        .iter()
        .map(|t| {
            store.peek(t).map(|s| {
                (
                    s.id(),
                    s.user().map(|u| u.to_string()),
                    s.get::<u32>("v").ok().flatten(),
                    s.version(),
                )
            })
        })
        .collect()
}

/// Where the store's files are, on a simulated disk in memory (no file is written to
/// a real directory).
const DIR: &str = "/fuzz/store";

fn opts(clock: &ManualClock, disk: &SimFs) -> Options {
    Options::default()
        .file_system(disk.clone())
        .clock(clock.clone())
        .reaper_interval(None)
        .shards(4)
        .compaction(false, u64::MAX, 2.0)
        .durability(Durability::Sync)
        .idle_timeout(Duration::ZERO)
        .rotation_grace(Duration::from_secs(86_400))
        .deterministic(true)
}

pub fn check(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let raw = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    // The top bit: the crash came inside the zero-filled, preallocated part of the
    // active segment, so zeros follow the cut.
    let (cut, zeros_after) = (u64::from(raw & 0x7fff_ffff), raw >> 31 == 1);
    let mut ops = &data[4..];
    let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    let dir = Path::new(DIR);
    let disk = SimFs::new(0);
    let store = Store::open_with(dir, opts(&clock, &disk)).expect("a fresh store opens");
    let mut tokens: Vec<Token> = Vec::new();
    // The state after each prefix of the operations (index 0: nothing happened yet).
    let mut states: Vec<Vec<Seen>> = vec![Vec::new()];
    let next = |ops: &mut &[u8]| -> Option<u8> {
        let (&b, rest) = ops.split_first()?;
        *ops = rest;
        Some(b)
    };
    let pick = |tokens: &[Token], b: u8| tokens.get(usize::from(b) % tokens.len().max(1)).cloned();
    let mut count = 0;
    while let Some(tag) = next(&mut ops) {
        if count == 64 {
            break;
        }
        count += 1;
        let Some(arg) = next(&mut ops) else { break };
        let wrote = match tag % 7 {
            0 => {
                let mut d = SessionData::new();
                d.insert("v", &u32::from(arg)).expect("encodes");
                let new = if arg % 4 == 3 {
                    NewSession::anonymous()
                } else {
                    NewSession::for_user(USERS[usize::from(arg % 4)])
                };
                let (t, _) = store.create(new.data(d)).expect("create under Sync");
                tokens.push(t);
                true
            }
            1 => pick(&tokens, arg).is_some_and(|t| store.put(&t, "v", &u32::from(arg)).is_ok()),
            2 => pick(&tokens, arg).is_some_and(|t| store.end(&t).unwrap_or(false)),
            3 => match pick(&tokens, arg).map(|t| store.rotate(&t)) {
                Some(Ok(new)) => {
                    tokens.push(new);
                    true
                }
                _ => false,
            },
            4 => pick(&tokens, arg)
                .is_some_and(|t| store.bind_user(&t, USERS[usize::from(arg % 3)]).is_ok()),
            5 => pick(&tokens, arg).is_some_and(|t| matches!(store.unbind_user(&t), Ok(Some(_)))),
            _ => pick(&tokens, arg).is_some_and(|t| {
                store
                    .extend(&t, Duration::from_secs(u64::from(arg)))
                    .is_ok()
            }),
        };
        if wrote {
            states.push(observe(&store, &tokens));
        }
    }
    // The crash: the files as they are while the store is open (a store closed
    // cleanly has sealed its last segment, and a cut of it is corruption), the active
    // segment then cut at an arbitrary byte.
    let image = SimFs::new(0);
    for name in disk.names(dir) {
        let bytes = disk.file(&dir.join(&name)).expect("listed");
        image.put_file(&dir.join(&name), &bytes).expect("copy");
    }
    drop(store);
    let last = image
        .names(dir)
        .into_iter()
        .filter(|n| n.starts_with("seg-"))
        .max()
        .map(|n| dir.join(n))
        .expect("a segment");
    // Its records end where the zeros preallocated past them begin (a record ending in
    // zero bytes is then cut a little short: a torn tail, which is what is tested).
    let mut bytes = image.file(&last).expect("listed");
    let records = zeros_from(&bytes);
    let len = records.max(HEADER_LEN) as u64;
    let at = cut % (len + 1);
    bytes.truncate(at as usize);
    // (The writer zero-fills only after the header is durable.)
    if zeros_after && at >= HEADER_LEN as u64 {
        bytes.resize((at.next_multiple_of(4096) + 4096) as usize, 0);
    }
    image.put_file(&last, &bytes).expect("cut");
    let disk = image;
    if at < HEADER_LEN as u64 {
        // The manifest names a segment active only once its header is durable: no
        // crash cuts into it.
        match Store::open_with(dir, opts(&clock, &disk)) {
            Err(sessiondb::Error::Corrupt { segment, .. }) => assert_eq!(segment, last),
            other => panic!("a cut inside the active segment's header: {other:?}"),
        }
        return;
    }

    let store = Store::open_with(dir, opts(&clock, &disk))
        .unwrap_or_else(|e| panic!("a cut log must open (torn tail), got: {e}"));
    store.verify().expect("consistent after the cut");
    let got = observe(&store, &tokens);
    let matches = states.iter().any(|s| {
        got.iter()
            .enumerate()
            .all(|(i, g)| s.get(i).cloned().flatten() == *g)
    });
    assert!(
        matches,
        "the store after a cut at {} of {len} equals no prefix of the operations",
        cut % (len + 1)
    );
}

/// Where the zeros that end `bytes` begin, looked for a page at a time (a byte loop,
/// instrumented for the fuzzer, over a megabyte of preallocated zeros cost more than
/// the rest of an input's run).
fn zeros_from(bytes: &[u8]) -> usize {
    static PAGE: [u8; 4096] = [0; 4096];
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(PAGE.len());
        if bytes[start..end] != PAGE[..end - start] {
            break;
        }
        end = start;
    }
    while end > 0 && bytes[end - 1] == 0 {
        end -= 1;
    }
    end
}
