//! The engine interface every engine implements: an [`Engine`] hands each thread a
//! [`Worker`], and a worker does one session operation per call, starting from the
//! cookie string. One module per engine: sessiondb (embedded, and on Redis with
//! `--features redis`), the 64-shard `HashMap` ceiling, moka, sled, SQLite and Redis;
//! and, with `--features postgres`, sessiondb on PostgreSQL, the raw statements and
//! tower-sessions' sqlx store (`tower_sqlx`), which are async engines of their own
//! (`postgres::PgEngine`).

mod user_index;

pub mod hashmap;
pub mod moka;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod redis;
pub mod sessiondb;
pub mod sled;
pub mod sqlite;
#[cfg(feature = "postgres")]
pub mod tower_sqlx;

use crate::harness::{Ctx, note_err};

/// Threads for untimed bulk work (preload, rebalancing): enough for group commit.
pub const BULK_THREADS: usize = 16;

/// One session the harness knows: its cookie string and its user's number.
pub struct Entry {
    pub token: String,
    pub user: u32,
}

/// One thread's (or one connection's) handle on an engine. Every method starts from
/// the cookie string. `user` is what the request's context knows about the session (a
/// server has read the session before it rotates or ends it); only Redis needs it.
pub trait Worker {
    fn get(&mut self, token: &str) -> bool;
    fn create(&mut self, user: &str) -> Option<String>;
    fn update(&mut self, token: &str, user: &str) -> bool;
    fn touch(&mut self, token: &str) -> bool;
    fn rotate(&mut self, token: &str, user: &str) -> Option<String>;
    fn end(&mut self, token: &str, user: &str) -> bool;
    fn revoke_user(&mut self, user: &str) -> usize;
    fn sessions_of(&mut self, user: &str) -> usize;
}

pub trait Engine: Sync {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String>;

    /// Creates one session per entry of `users` (untimed: preload and rebalancing).
    fn bulk_create(&self, ctx: &Ctx, users: &[u32]) -> Vec<Entry> {
        par_create(self, ctx, users, BULK_THREADS)
    }

    /// Ends these sessions (untimed rebalancing).
    fn bulk_end(&self, ctx: &Ctx, entries: &[Entry]) {
        par_end(self, ctx, entries, BULK_THREADS)
    }

    /// `(fsyncs, records)` written so far, for engines that count them.
    fn sync_stats(&self) -> Option<(u64, u64)> {
        None
    }

    /// Waits until what the calls so far set going in the background (a log writer's
    /// queue, a compaction) has ended. [`run_op`](crate::harness::run_op) charges that
    /// time's CPU to the run that caused it, and settles again after rebalancing, so no
    /// run pays for another's writes. Engines with no background work do nothing.
    fn settle(&self) {}
}

pub fn par_create<E: Engine + ?Sized>(
    e: &E,
    ctx: &Ctx,
    users: &[u32],
    threads: usize,
) -> Vec<Entry> {
    if users.is_empty() {
        return Vec::new();
    }
    let chunk = users.len().div_ceil(threads.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = users
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut w = match e.worker() {
                        Ok(w) => w,
                        Err(err) => {
                            note_err("bulk create", err);
                            return Vec::new();
                        }
                    };
                    part.iter()
                        .filter_map(|&u| {
                            w.create(&ctx.users[u as usize])
                                .map(|token| Entry { token, user: u })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("bulk create thread"))
            .collect()
    })
}

pub fn par_end<E: Engine + ?Sized>(e: &E, ctx: &Ctx, entries: &[Entry], threads: usize) {
    if entries.is_empty() {
        return;
    }
    let chunk = entries.len().div_ceil(threads.max(1));
    std::thread::scope(|s| {
        for part in entries.chunks(chunk) {
            s.spawn(move || match e.worker() {
                Ok(mut w) => {
                    for en in part {
                        w.end(&en.token, &ctx.users[en.user as usize]);
                    }
                }
                Err(err) => note_err("bulk end", err),
            });
        }
    });
}
