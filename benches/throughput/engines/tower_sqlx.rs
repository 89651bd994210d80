//! tower-sessions' PostgreSQL store (`--features postgres`): `tower-sessions-sqlx-store`'s
//! [`PostgresStore`] through its `SessionStore` trait, as tower-sessions itself calls it,
//! on the section's server: a third [`PgEngine`] beside sessiondb's and the raw
//! statements.
//!
//! Its newest release (0.15.0) implements tower-sessions-core 0.14's `SessionStore`, not
//! the 0.15 the workspace uses: the trait and its `Record` and `Id` are 0.14's, a renamed
//! dependency (`tower-sessions-core-014`) built next to 0.15. So the row measures the
//! store as an app on tower-sessions 0.14 would run it.
//!
//! A record is a row `(id text primary key, data bytea, expiry_date timestamptz)`: the
//! whole `Record` (id, data map, expiry) in MessagePack. The store has no user column
//! and no rotation, so only get, create, update and end are ops of it ([`PgEngine::lacks`]).

use std::hint::black_box;
use std::str::FromStr;
use std::time::Duration;

use tower_sessions_core_014::SessionStore as _;
use tower_sessions_core_014::session::{Id, Record};
use tower_sessions_sqlx_store::PostgresStore;
use tower_sessions_sqlx_store::sqlx::postgres::PgPoolOptions;
// serde_json's `Value` (a record's data) and time's `OffsetDateTime` (its expiry), as
// sqlx re-exports them: the same crates tower-sessions-core uses.
use tower_sessions_sqlx_store::sqlx::types::JsonValue;
use tower_sessions_sqlx_store::sqlx::types::time::OffsetDateTime;

use crate::engines::postgres::{POOL, PgEngine};
use crate::harness::{IDLE_MS, Op, Payload, note_err, payload};

/// The row's name in the table.
pub const TOWER_SQLX: &str = "tower-sessions-sqlx-store";
/// The schema its table is in (`with_schema_name`; the table is the default, `session`).
pub const SCHEMA: &str = "tower_sqlx";
/// The versions, for the section's note.
pub const VERSIONS: &str = "tower-sessions-sqlx-store 0.15 (sqlx 0.8) on tower-sessions-core \
     0.14: its newest release, 0.15.0, depends on tower-sessions-core ^0.14, not the 0.15 \
     this workspace uses; the bench builds it next to tower-sessions-core 0.14 (a renamed \
     dependency) and calls it through 0.14's `SessionStore`, as an app on tower-sessions \
     0.14 would";
/// Why it has no rotate, revoke-user or sessions-of-user.
const NO_ROTATION: &str = "no rotation in its `SessionStore` (tower-sessions' `cycle_id` is a \
     `delete` and then a `create`)";
const NO_USER: &str = "no user column (a record is found by its id only)";

/// `tower_sessions_sqlx_store::PostgresStore` over a sqlx pool of [`POOL`] connections.
pub struct TowerSqlx {
    store: PostgresStore,
    p: &'static Payload,
}

impl TowerSqlx {
    /// Connects and creates its schema and table (`migrate`); must run inside the
    /// section's runtime. sqlx's pool with its defaults but for its size and
    /// `test_before_acquire(false)`: by default sqlx pings every connection it hands out
    /// (one more round trip per op), and the other rows' pools recycle without one.
    pub async fn connect(url: &str) -> Result<TowerSqlx, String> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL as u32)
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let store = PostgresStore::new(pool).with_schema_name(SCHEMA)?;
        store.migrate().await.map_err(|e| e.to_string())?;
        Ok(TowerSqlx {
            store,
            p: payload(),
        })
    }

    /// A record of `id` holding `profile`, expiring [`IDLE_MS`] from now (as a session
    /// with `Expiry::OnInactivity` is saved).
    fn record(id: Id, profile: &str) -> Record {
        Record {
            id,
            data: [("profile".to_owned(), JsonValue::String(profile.to_owned()))].into(),
            expiry_date: OffsetDateTime::now_utc() + Duration::from_millis(IDLE_MS),
        }
    }
}

impl PgEngine for TowerSqlx {
    fn lacks(op: Op) -> Option<&'static str> {
        match op {
            Op::Rotate => Some(NO_ROTATION),
            Op::RevokeUser | Op::SessionsOf => Some(NO_USER),
            _ => None,
        }
    }

    /// `load`: one `SELECT data … WHERE id = $1 AND expiry_date > $2`, then decoding.
    async fn get(&self, token: &str) -> bool {
        let Ok(id) = Id::from_str(token) else {
            return false;
        };
        match self.store.load(&id).await {
            Ok(r) => r.map(black_box).is_some(),
            Err(e) => {
                note_err(TOWER_SQLX, e);
                false
            }
        }
    }

    /// `create`: a transaction (a fresh id checked with `SELECT exists(…)`, then the
    /// upsert). Its records carry no user.
    async fn create(&self, _user: &str) -> Option<String> {
        let mut r = Self::record(Id::default(), &self.p.profile_a);
        self.store
            .create(&mut r)
            .await
            .map_err(|e| note_err(TOWER_SQLX, e))
            .ok()?;
        Some(r.id.to_string())
    }

    /// `save` of the existing record with new data: one `INSERT … ON CONFLICT (id) DO
    /// UPDATE`, what tower-sessions does at the end of a request that changed it.
    async fn update(&self, token: &str) -> bool {
        let Ok(id) = Id::from_str(token) else {
            return false;
        };
        self.store
            .save(&Self::record(id, &self.p.profile_b))
            .await
            .map_err(|e| note_err(TOWER_SQLX, e))
            .is_ok()
    }

    async fn rotate(&self, _token: &str) -> Option<String> {
        unreachable!("{TOWER_SQLX}: {NO_ROTATION}")
    }

    /// `delete`: one `DELETE … WHERE id = $1` (it does not say whether a row was there).
    async fn end(&self, token: &str) -> bool {
        let Ok(id) = Id::from_str(token) else {
            return false;
        };
        self.store
            .delete(&id)
            .await
            .map_err(|e| note_err(TOWER_SQLX, e))
            .is_ok()
    }

    async fn revoke_user(&self, _user: &str) -> usize {
        unreachable!("{TOWER_SQLX}: {NO_USER}")
    }

    async fn sessions_of(&self, _user: &str) -> usize {
        unreachable!("{TOWER_SQLX}: {NO_USER}")
    }
}
