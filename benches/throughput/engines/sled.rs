//! sled 0.34, default config: a tree token → record (`absolute | last_seen | user |
//! data`) and a tree `user\0token` → () scanned by prefix for the user's sessions;
//! optionally `flush()` after every write (its durable variant).

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::engines::{BULK_THREADS, Engine, Entry, Worker, par_create, par_end};
use crate::harness::{Ctx, IDLE_MS, LIFETIME_MS, new_token, note_err, now_ms, payload};

/// `absolute u64 | last_seen u64 | user_len u8 | user | data`
fn sled_record(absolute: u64, last_seen: u64, user: &str, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(17 + user.len() + data.len());
    v.extend_from_slice(&absolute.to_le_bytes());
    v.extend_from_slice(&last_seen.to_le_bytes());
    v.push(user.len() as u8);
    v.extend_from_slice(user.as_bytes());
    v.extend_from_slice(data);
    v
}

fn sled_u64(r: &[u8], at: usize) -> u64 {
    r.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn sled_live(r: &[u8], now: u64) -> bool {
    now < sled_u64(r, 0) && now < sled_u64(r, 8) + IDLE_MS
}

fn sled_user(r: &[u8]) -> &[u8] {
    let len = r.get(16).copied().unwrap_or(0) as usize;
    r.get(17..17 + len).unwrap_or(&[])
}

fn sled_user_key(user: &[u8], token: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + 1 + token.len());
    k.extend_from_slice(user);
    k.push(0);
    k.extend_from_slice(token.as_bytes());
    k
}

/// The database, its by-user tree, and whether every write is flushed.
pub struct SledEngine {
    db: sled::Db,
    by_user: sled::Tree,
    pub flush_each: AtomicBool,
}

impl SledEngine {
    pub fn open(dir: &Path) -> SledEngine {
        let db = sled::open(dir).expect("sled open");
        let by_user = db.open_tree("by_user").expect("sled tree");
        SledEngine {
            db,
            by_user,
            flush_each: AtomicBool::new(false),
        }
    }

    fn written(&self) {
        if self.flush_each.load(Ordering::Relaxed)
            && let Err(e) = self.db.flush()
        {
            note_err("sled flush", e);
        }
    }

    /// Runs bulk work without a flush per write, then flushes once.
    fn quietly<R>(&self, f: impl FnOnce() -> R) -> R {
        let was = self.flush_each.swap(false, Ordering::Relaxed);
        let r = f();
        if was {
            let _ = self.db.flush();
            self.flush_each.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl Engine for SledEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        Ok(Box::new(self))
    }

    fn bulk_create(&self, ctx: &Ctx, users: &[u32]) -> Vec<Entry> {
        self.quietly(|| par_create(self, ctx, users, BULK_THREADS))
    }

    fn bulk_end(&self, ctx: &Ctx, entries: &[Entry]) {
        self.quietly(|| par_end(self, ctx, entries, BULK_THREADS))
    }
}

impl Worker for &SledEngine {
    fn get(&mut self, token: &str) -> bool {
        match self.db.get(token) {
            Ok(Some(r)) => sled_live(&r, now_ms()) && black_box(r).len() > 17,
            Ok(None) => false,
            Err(e) => {
                note_err("sled get", e);
                false
            }
        }
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let token = new_token();
        let now = now_ms();
        let rec = sled_record(now + LIFETIME_MS, now, user, &payload().json_a);
        self.db.insert(token.as_bytes(), rec).ok()?;
        self.by_user
            .insert(sled_user_key(user.as_bytes(), &token), &[] as &[u8])
            .ok()?;
        self.written();
        Some(token)
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        let now = now_ms();
        let prev = self.db.fetch_and_update(token, |old| {
            old.map(|o| {
                if !sled_live(o, now) {
                    return o.to_vec();
                }
                let head = 17 + sled_user(o).len();
                let mut v = o[..head].to_vec();
                v.extend_from_slice(&payload().json_b);
                v
            })
        });
        self.written();
        matches!(prev, Ok(Some(o)) if sled_live(&o, now))
    }

    fn touch(&mut self, token: &str) -> bool {
        let now = now_ms();
        let prev = self.db.fetch_and_update(token, |old| {
            old.map(|o| {
                let mut v = o.to_vec();
                if sled_live(o, now) {
                    v[8..16].copy_from_slice(&now.to_le_bytes());
                }
                v
            })
        });
        self.written();
        matches!(prev, Ok(Some(o)) if sled_live(&o, now))
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        let now = now_ms();
        let rec = self.db.get(token).ok()??;
        if !sled_live(&rec, now) {
            return None;
        }
        let new = new_token();
        let user = sled_user(&rec).to_vec();
        self.db.insert(new.as_bytes(), rec).ok()?;
        self.by_user
            .insert(sled_user_key(&user, &new), &[] as &[u8])
            .ok()?;
        self.db.remove(token).ok()?;
        self.by_user.remove(sled_user_key(&user, token)).ok()?;
        self.written();
        Some(new)
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        let Ok(Some(rec)) = self.db.remove(token) else {
            return false;
        };
        let _ = self.by_user.remove(sled_user_key(sled_user(&rec), token));
        self.written();
        sled_live(&rec, now_ms())
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        let now = now_ms();
        let prefix = sled_user_key(user.as_bytes(), "");
        let mut n = 0;
        for item in self.by_user.scan_prefix(&prefix) {
            let Ok((key, _)) = item else { continue };
            if let Ok(Some(rec)) = self.db.remove(&key[prefix.len()..])
                && sled_live(&rec, now)
            {
                n += 1;
            }
            let _ = self.by_user.remove(key);
        }
        self.written();
        n
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        let now = now_ms();
        let prefix = sled_user_key(user.as_bytes(), "");
        self.by_user
            .scan_prefix(&prefix)
            .filter_map(|item| item.ok())
            .filter(|(key, _)| {
                matches!(self.db.get(&key[prefix.len()..]), Ok(Some(r)) if sled_live(&r, now) && black_box(&r).len() > 17)
            })
            .count()
    }
}
