//! The tables a [`super::PostgresStore`] keeps in its own PostgreSQL schema, their
//! versioned migrations (applied on connect, under an advisory lock, so several nodes
//! starting at once are safe), and the text of every statement the store prepares.
//!
//! Times are milliseconds since the Unix epoch on the database server's clock
//! ([`now_ms`]), so every node agrees on deadlines; ids are `uuid`; a token appears only
//! as its 128-bit BLAKE3 hash (`bytea`, 16 bytes): the database never sees a cookie.

use deadpool_postgres::Client;

use super::db;
use crate::error::{Error, Result};

/// The newest schema version this build writes and reads.
pub(super) const VERSION: i32 = 1;

/// The database's clock in ms, read at the moment a statement computes it (not the
/// transaction's start: a statement that waited for a lock judges deadlines after it).
pub(super) const NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Each migration, in order: migration `i` takes the schema from version `i` to `i + 1`.
/// `{s}` is the schema's name.
const MIGRATIONS: &[&str] = &[
    // 1: sessions, their rotation aliases, users (the per-user lock and not-before
    // time), and the event outbox.
    r#"
CREATE TABLE {s}.sessions (
    id            uuid PRIMARY KEY,
    hash          bytea NOT NULL UNIQUE,
    user_id       text,
    label         text,
    created       bigint NOT NULL,
    last_seen     bigint NOT NULL,
    authenticated bigint,
    absolute      bigint NOT NULL,
    idle          bigint NOT NULL,
    version       bigint NOT NULL,
    data          bytea NOT NULL,
    factors       text,
    user_agent    text,
    address       inet,
    device_at     bigint,
    deadline      bigint NOT NULL,
    reap_at       bigint NOT NULL
) WITH (fillfactor = 80);
COMMENT ON COLUMN {s}.sessions.deadline IS
    'When the session ends (ms), as of its last write; readers recompute it';
COMMENT ON COLUMN {s}.sessions.reap_at IS
    'At or before the deadline: what the reaper scans; a touch leaves it, so its update stays HOT';
CREATE INDEX sessions_user ON {s}.sessions (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX sessions_reap ON {s}.sessions (reap_at);
CREATE TABLE {s}.aliases (
    hash  bytea PRIMARY KEY,
    id    uuid NOT NULL,
    until bigint NOT NULL
);
CREATE INDEX aliases_until ON {s}.aliases (until);
CREATE TABLE {s}.users (
    user_id    text PRIMARY KEY,
    not_before bigint
);
CREATE SEQUENCE {s}.event_numbers AS bigint;
CREATE TABLE {s}.events (
    seq     bigint PRIMARY KEY,
    xid     xid8 NOT NULL,
    kind    text NOT NULL,
    id      uuid,
    user_id text,
    reason  text,
    ids     uuid[],
    n       bigint
);
COMMENT ON COLUMN {s}.events.seq IS
    'From event_numbers, taken once the row the event is about is locked: two changes to one session or user are numbered in commit order';
CREATE INDEX events_xid ON {s}.events (xid);
"#,
];

/// Checks a schema name: it is spliced into statements, so only what needs no quoting.
pub(super) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.starts_with("pg_");
    if ok {
        return Ok(());
    }
    Err(Error::InvalidOption {
        name: "PostgresOptions::schema",
        reason: format!(
            "must be 1 to 48 of a-z 0-9 _, not starting with a digit or pg_; got {name:?}"
        ),
    })
}

/// The channel a schema's events are notified on (`LISTEN`, `pg_notify`).
pub(super) fn channel(schema: &str) -> String {
    format!("{schema}_events")
}

/// Brings the schema to [`VERSION`]: creates it if missing, applies the migrations it
/// lacks, in one transaction under an advisory lock keyed by the schema's name (a node
/// starting while another migrates waits, then finds the work done). Returns the
/// version found before.
///
/// # Errors
/// [`Error::UnsupportedSchema`] if the database holds a newer version than this build
/// knows (a newer sessiondb migrated it: upgrade this node); [`Error::Unavailable`].
pub(super) async fn migrate(client: &mut Client, schema: &str) -> Result<i32> {
    let ctx = "migrating the schema";
    let tx = client.transaction().await.map_err(|e| db(ctx, e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('sessiondb:' || $1, 0))",
        &[&schema],
    )
    .await
    .map_err(|e| db(ctx, e))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.meta (
             singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
             version integer NOT NULL
         );
         INSERT INTO {schema}.meta (version) VALUES (0) ON CONFLICT DO NOTHING;"
    ))
    .await
    .map_err(|e| db(ctx, e))?;
    let found: i32 = tx
        .query_one(&format!("SELECT version FROM {schema}.meta"), &[])
        .await
        .map_err(|e| db(ctx, e))?
        .get(0);
    if found > VERSION {
        return Err(Error::UnsupportedSchema {
            backend: "postgres",
            found: found as u32,
            supported: VERSION as u32,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let sql = step.replace("{s}", schema);
        tx.batch_execute(&sql)
            .await
            .map_err(|e| db(&format!("applying migration {}", i + 1), e))?;
    }
    tx.execute(
        &format!("UPDATE {schema}.meta SET version = $1"),
        &[&VERSION],
    )
    .await
    .map_err(|e| db(ctx, e))?;
    tx.commit().await.map_err(|e| db(ctx, e))?;
    Ok(found)
}

/// Checks, changing nothing, that the schema holds this build's version
/// ([`super::PostgresOptions::migrate`] off).
///
/// # Errors
/// [`Error::UnsupportedSchema`] if the schema is missing (found 0) or at another
/// version; [`Error::Unavailable`].
pub(super) async fn expect_current(client: &Client, schema: &str) -> Result<()> {
    let ctx = "reading the schema's version";
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables \
             WHERE schemaname = $1 AND tablename = 'meta')",
            &[&schema],
        )
        .await
        .map_err(|e| db(ctx, e))?
        .get(0);
    let found: i32 = if exists {
        client
            .query_opt(&format!("SELECT version FROM {schema}.meta"), &[])
            .await
            .map_err(|e| db(ctx, e))?
            .map_or(0, |r| r.get(0))
    } else {
        0
    };
    if found == VERSION {
        return Ok(());
    }
    Err(Error::UnsupportedSchema {
        backend: "postgres",
        found: found.max(0) as u32,
        supported: VERSION as u32,
    })
}

/// The columns a session is read with, in [`super::row::Row`]'s order.
pub(super) const COLS: &str = "id, hash, user_id, label, created, last_seen, authenticated, \
     absolute, idle, version, data, factors, user_agent, address, device_at";

/// The statements the store prepares, with the schema spliced in (built once per
/// store; each connection prepares them once, on first use).
pub(super) struct Sql {
    pub(super) read: String,
    pub(super) lock_hash: String,
    pub(super) lock_alias: String,
    pub(super) lock_id: String,
    pub(super) read_id: String,
    pub(super) token_taken: String,
    pub(super) admit_check: String,
    pub(super) insert: String,
    pub(super) update: String,
    pub(super) delete_many: String,
    pub(super) now: String,
    pub(super) lock_user: String,
    pub(super) add_user: String,
    pub(super) raise_not_before: String,
    pub(super) not_before_list: String,
    pub(super) of_user: String,
    pub(super) lock_of_user: String,
    pub(super) put_alias: String,
    pub(super) event: String,
    pub(super) events_ended: String,
    pub(super) live_count: String,
    pub(super) live_now: String,
    pub(super) oldest_anonymous: String,
    pub(super) budget_lock: String,
    pub(super) ring: String,
    pub(super) reap: String,
    pub(super) reap_aliases: String,
    pub(super) trim_events: String,
    pub(super) clear: String,
    pub(super) clear_aliases: String,
    pub(super) export: String,
    pub(super) event_numbers: String,
    pub(super) own_id: String,
    pub(super) running: String,
    pub(super) events_after: String,
    pub(super) events_in_flight: String,
}

impl Sql {
    pub(super) fn new(s: &str) -> Sql {
        Sql {
            read: format!(
                "SELECT {COLS}, {NOW} FROM {s}.sessions WHERE hash = $1
                 UNION ALL
                 SELECT {cols}, {NOW} FROM {s}.aliases a JOIN {s}.sessions s ON s.id = a.id
                 WHERE a.hash = $1 AND a.until > {NOW}
                 LIMIT 1",
                cols = prefixed("s")
            ),
            lock_hash: format!("SELECT {COLS}, {NOW} FROM {s}.sessions WHERE hash = $1 FOR UPDATE"),
            lock_alias: format!(
                "SELECT {cols}, {NOW} FROM {s}.aliases a JOIN {s}.sessions s ON s.id = a.id
                 WHERE a.hash = $1 AND a.until > {NOW} FOR UPDATE OF s",
                cols = prefixed("s")
            ),
            lock_id: format!("SELECT {COLS}, {NOW} FROM {s}.sessions WHERE id = $1 FOR UPDATE"),
            read_id: format!("SELECT {COLS}, {NOW} FROM {s}.sessions WHERE id = $1"),
            token_taken: format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.sessions WHERE hash = $1)
                     OR EXISTS (SELECT 1 FROM {s}.aliases WHERE hash = $1 AND until > {NOW})"
            ),
            // A create's one look before it inserts: the time, whether the token
            // answers already (a session or a live alias), whether the id is taken.
            admit_check: format!(
                "SELECT {NOW},
                        EXISTS (SELECT 1 FROM {s}.sessions WHERE hash = $1)
                     OR EXISTS (SELECT 1 FROM {s}.aliases WHERE hash = $1 AND until > {NOW}),
                        EXISTS (SELECT 1 FROM {s}.sessions WHERE id = $2)"
            ),
            insert: format!(
                "INSERT INTO {s}.sessions ({COLS}, deadline, reap_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                         $16, $16)"
            ),
            update: format!(
                "UPDATE {s}.sessions SET hash = $2, user_id = $3, label = $4, created = $5,
                     last_seen = $6, authenticated = $7, absolute = $8, idle = $9,
                     version = $10, data = $11, factors = $12, user_agent = $13,
                     address = $14, device_at = $15, deadline = $16,
                     reap_at = LEAST(reap_at, $16)
                 WHERE id = $1"
            ),
            delete_many: format!("DELETE FROM {s}.sessions WHERE id = ANY($1)"),
            now: format!("SELECT {NOW}"),
            lock_user: format!(
                "SELECT not_before, {NOW} FROM {s}.users WHERE user_id = $1 FOR UPDATE"
            ),
            add_user: format!("INSERT INTO {s}.users (user_id) VALUES ($1) ON CONFLICT DO NOTHING"),
            raise_not_before: format!(
                "INSERT INTO {s}.users (user_id, not_before) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO UPDATE
                 SET not_before = GREATEST(COALESCE(users.not_before, 0), EXCLUDED.not_before)"
            ),
            not_before_list: format!(
                "SELECT user_id, not_before FROM {s}.users WHERE not_before IS NOT NULL
                 ORDER BY user_id"
            ),
            of_user: format!("SELECT {COLS}, {NOW} FROM {s}.sessions WHERE user_id = $1"),
            lock_of_user: format!(
                "SELECT {COLS}, {NOW} FROM {s}.sessions WHERE user_id = $1 ORDER BY id FOR UPDATE"
            ),
            // An alias row left behind by an earlier grace period (expired, not yet
            // reaped) is replaced: aliases never resurrect a session, they point at one.
            put_alias: format!(
                "INSERT INTO {s}.aliases (hash, id, until) VALUES ($1, $2, $3)
                 ON CONFLICT (hash) DO UPDATE SET id = EXCLUDED.id, until = EXCLUDED.until"
            ),
            // Every event insert names the transaction's id before it takes a number
            // (left to right), so a number is only ever taken by a transaction that
            // has an id: what the readers' horizon rests on (`events.rs`).
            event: format!(
                "INSERT INTO {s}.events (xid, seq, kind, id, user_id, reason, ids, n)
                 VALUES (pg_current_xact_id(), nextval('{s}.event_numbers'),
                         $1, $2, $3, $4, $5, $6)"
            ),
            events_ended: format!(
                "INSERT INTO {s}.events (xid, seq, kind, id, user_id, reason)
                 SELECT pg_current_xact_id(), nextval('{s}.event_numbers'), 'ended',
                        x.id, x.user_id, $3
                 FROM unnest($1::uuid[], $2::text[]) AS x(id, user_id)"
            ),
            live_count: format!("SELECT count(*) FROM {s}.sessions WHERE deadline > $1"),
            live_now: format!("SELECT count(*) FROM {s}.sessions WHERE deadline > {NOW}"),
            oldest_anonymous: format!(
                "SELECT {COLS}, {NOW} FROM {s}.sessions
                 WHERE user_id IS NULL AND deadline > $1
                 ORDER BY last_seen, id LIMIT 1 FOR UPDATE"
            ),
            budget_lock: "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))".to_owned(),
            ring: "SELECT pg_notify($1, '')".to_owned(),
            reap: format!(
                "WITH due AS (
                     SELECT id FROM {s}.sessions WHERE reap_at <= $1
                     ORDER BY reap_at LIMIT $2 FOR UPDATE SKIP LOCKED
                 ),
                 gone AS (
                     DELETE FROM {s}.sessions x USING due
                     WHERE x.id = due.id AND x.deadline <= $1
                     RETURNING x.id, x.user_id
                 ),
                 later AS (
                     UPDATE {s}.sessions x SET reap_at = x.deadline FROM due
                     WHERE x.id = due.id AND x.deadline > $1
                     RETURNING x.id
                 ),
                 told AS (
                     INSERT INTO {s}.events (xid, seq, kind, id, user_id, reason)
                     SELECT pg_current_xact_id(), nextval('{s}.event_numbers'), 'ended',
                            id, user_id, 'expired'
                     FROM gone
                 )
                 SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM due)"
            ),
            reap_aliases: format!(
                "DELETE FROM {s}.aliases WHERE hash IN (
                     SELECT hash FROM {s}.aliases WHERE until <= $1 LIMIT $2
                     FOR UPDATE SKIP LOCKED)"
            ),
            trim_events: format!(
                "DELETE FROM {s}.events WHERE seq <= (SELECT max(seq) FROM {s}.events) - $1"
            ),
            clear: format!(
                "DELETE FROM {s}.sessions WHERE id IN (
                     SELECT id FROM {s}.sessions ORDER BY id LIMIT $1 FOR UPDATE)
                 RETURNING deadline"
            ),
            clear_aliases: format!("DELETE FROM {s}.aliases"),
            export: format!(
                "SELECT {COLS}, {NOW} FROM {s}.sessions WHERE id > $1 ORDER BY id LIMIT $2"
            ),
            // The readers (`events.rs`): the last number taken; an id of the
            // reader's own, taken after it (every transaction that took a number up to
            // it has a smaller id); the oldest running transaction and the snapshot;
            // the events up to a settled number; and, once, those of the transactions
            // still running when a reader subscribed.
            event_numbers: format!(
                "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                 FROM {s}.event_numbers"
            ),
            own_id: "SELECT pg_current_xact_id()::text".to_owned(),
            running: "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, \
                 pg_current_snapshot()::text"
                .to_owned(),
            events_after: format!(
                "SELECT seq, kind, id, user_id, reason, ids, n FROM {s}.events
                 WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
            ),
            events_in_flight: format!(
                "SELECT seq, kind, id, user_id, reason, ids, n FROM {s}.events
                 WHERE xid >= $1::text::xid8 AND seq <= $2
                   AND NOT pg_visible_in_snapshot(xid, $3::text::pg_snapshot)
                 ORDER BY seq"
            ),
        }
    }
}

/// [`COLS`] with each column qualified by `table`.
fn prefixed(table: &str) -> String {
    COLS.split(", ")
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_that_would_need_quoting_are_refused() {
        for ok in ["sessiondb", "app_1", "_x"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1x",
            "Sessions",
            "a-b",
            "a b",
            "x;drop",
            "pg_x",
            &"a".repeat(49),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_migration_names_the_schema_it_goes_into() {
        for m in MIGRATIONS {
            assert!(!m.contains("CREATE TABLE sessions"), "an unqualified table");
            assert!(m.contains("{s}."));
        }
    }
}
