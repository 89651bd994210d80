//! SQLite through rusqlite (bundled): one table with an index on the user, WAL,
//! `synchronous` NORMAL or FULL, one connection per thread, writes queued on an
//! in-process mutex.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;

use crate::engines::{Engine, Entry, Worker};
use crate::harness::{Ctx, IDLE_MS, new_token, note_err, now_ms, payload};

/// The database file and the `synchronous` setting every connection gets.
pub struct SqliteEngine {
    path: PathBuf,
    synchronous: &'static str,
    /// Writers queue here instead of sleep-polling on SQLITE_BUSY (SQLite allows one
    /// writer at a time either way; this is the usual in-process arrangement).
    write_lock: Mutex<()>,
}

impl SqliteEngine {
    pub fn open(path: &Path, synchronous: &'static str) -> SqliteEngine {
        let e = SqliteEngine {
            path: path.to_owned(),
            synchronous,
            write_lock: Mutex::new(()),
        };
        let c = e.connect().expect("sqlite open");
        let mode: String = c
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .expect("sqlite WAL");
        assert_eq!(mode.to_lowercase(), "wal");
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS sessions(
                 token TEXT PRIMARY KEY,
                 user TEXT NOT NULL,
                 expires INTEGER NOT NULL,
                 data BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user);",
        )
        .expect("sqlite schema");
        e
    }

    fn connect(&self) -> rusqlite::Result<rusqlite::Connection> {
        let c = rusqlite::Connection::open(&self.path)?;
        c.busy_timeout(Duration::from_secs(60))?;
        c.pragma_update(None, "synchronous", self.synchronous)?;
        c.set_prepared_statement_cache_capacity(32);
        Ok(c)
    }
}

impl Engine for SqliteEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        let conn = self.connect().map_err(|e| e.to_string())?;
        Ok(Box::new(SqliteWorker { conn, eng: self }))
    }

    /// One connection, 10,000 rows per transaction.
    fn bulk_create(&self, ctx: &Ctx, users: &[u32]) -> Vec<Entry> {
        let mut conn = self.connect().expect("sqlite connect");
        let _g = self.write_lock.lock();
        let mut out = Vec::with_capacity(users.len());
        for chunk in users.chunks(10_000) {
            let tx = conn.transaction().expect("sqlite tx");
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO sessions(token, user, expires, data) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .expect("sqlite prepare");
                let expires = (now_ms() + IDLE_MS) as i64;
                for &u in chunk {
                    let token = new_token();
                    st.execute(rusqlite::params![
                        token,
                        ctx.users[u as usize],
                        expires,
                        payload().json_a
                    ])
                    .expect("sqlite insert");
                    out.push(Entry { token, user: u });
                }
            }
            tx.commit().expect("sqlite commit");
        }
        out
    }

    fn bulk_end(&self, _ctx: &Ctx, entries: &[Entry]) {
        let mut conn = self.connect().expect("sqlite connect");
        let _g = self.write_lock.lock();
        for chunk in entries.chunks(10_000) {
            let tx = conn.transaction().expect("sqlite tx");
            {
                let mut st = tx
                    .prepare_cached("DELETE FROM sessions WHERE token = ?1")
                    .expect("sqlite prepare");
                for e in chunk {
                    st.execute([&e.token]).expect("sqlite delete");
                }
            }
            tx.commit().expect("sqlite commit");
        }
    }
}

struct SqliteWorker<'a> {
    conn: rusqlite::Connection,
    eng: &'a SqliteEngine,
}

impl SqliteWorker<'_> {
    fn exec(&self, sql: &str, params: impl rusqlite::Params) -> usize {
        let _g = self.eng.write_lock.lock();
        match self
            .conn
            .prepare_cached(sql)
            .and_then(|mut st| st.execute(params))
        {
            Ok(n) => n,
            Err(e) => {
                note_err("sqlite", e);
                0
            }
        }
    }

    fn try_rotate(&mut self, token: &str) -> rusqlite::Result<Option<String>> {
        let new = new_token();
        let now = now_ms() as i64;
        let _g = self.eng.write_lock.lock();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx
            .prepare_cached(
                "INSERT INTO sessions(token, user, expires, data)
                 SELECT ?2, user, expires, data FROM sessions WHERE token = ?1 AND expires > ?3",
            )?
            .execute(rusqlite::params![token, new, now])?;
        if n == 0 {
            return Ok(None);
        }
        tx.prepare_cached("DELETE FROM sessions WHERE token = ?1")?
            .execute([token])?;
        tx.commit()?;
        Ok(Some(new))
    }
}

impl Worker for SqliteWorker<'_> {
    fn get(&mut self, token: &str) -> bool {
        use rusqlite::OptionalExtension;
        let r = self
            .conn
            .prepare_cached("SELECT user, data FROM sessions WHERE token = ?1 AND expires > ?2")
            .and_then(|mut st| {
                st.query_row(rusqlite::params![token, now_ms() as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .optional()
            });
        match r {
            Ok(row) => row.map(black_box).is_some(),
            Err(e) => {
                note_err("sqlite get", e);
                false
            }
        }
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let token = new_token();
        let n = self.exec(
            "INSERT INTO sessions(token, user, expires, data) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![token, user, (now_ms() + IDLE_MS) as i64, payload().json_a],
        );
        (n == 1).then_some(token)
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        self.exec(
            "UPDATE sessions SET data = ?2 WHERE token = ?1 AND expires > ?3",
            rusqlite::params![token, payload().json_b, now_ms() as i64],
        ) == 1
    }

    fn touch(&mut self, token: &str) -> bool {
        let now = now_ms();
        self.exec(
            "UPDATE sessions SET expires = ?2 WHERE token = ?1 AND expires > ?3",
            rusqlite::params![token, (now + IDLE_MS) as i64, now as i64],
        ) == 1
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        self.try_rotate(token)
            .map_err(|e| note_err("sqlite rotate", e))
            .ok()
            .flatten()
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        self.exec("DELETE FROM sessions WHERE token = ?1", [token]) == 1
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        self.exec("DELETE FROM sessions WHERE user = ?1", [user])
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        let r = self
            .conn
            .prepare_cached("SELECT token, expires FROM sessions WHERE user = ?1 AND expires > ?2")
            .and_then(|mut st| {
                st.query_map(rusqlite::params![user, now_ms() as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            });
        r.map_or(0, |v| black_box(v).len())
    }
}
