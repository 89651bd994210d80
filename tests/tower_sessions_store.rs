//! `SessionDbStore` through the `SessionStore` trait and the helpers, without HTTP.
//!
//! tower-sessions' `MemoryStore` unit tests (`memory-store/src/lib.rs` in its
//! repository: create, save, load, delete, id collision) run here against every
//! backend (the embedded ones, and Redis with the `redis` feature: a redis-server of
//! each test's own); then what sessiondb adds: saves that never resurrect, the deadline
//! following `expiry_date`, limits, and the rotation that keeps a user bound.

#[path = "support/tower_app.rs"]
mod tower_app;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sessiondb::tower_sessions::{Error as HelperError, SessionDbStore};
use sessiondb::{Device, Options, SignIn, Store, Timestamp};
use time::OffsetDateTime;
use tower_app::{Backend, verify};
use tower_sessions::Session;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};

/// A store on the backend, and what keeps it alive; returns from the test (skipped,
/// with a message) if the backend is Redis and redis-server is not installed.
macro_rules! store_on {
    ($b:expr) => {
        store_on!($b, tower_app::test_options())
    };
    ($b:expr, $opts:expr) => {
        match tower_app::store_on_with($b, $opts).await {
            Some(opened) => opened,
            None => return,
        }
    };
}

/// The backend's deadline for the session of tower-sessions id `id` (live).
async fn deadline_in(store: &SessionDbStore, id: Id) -> Timestamp {
    store
        .sessions()
        .peek(&SessionDbStore::token(id))
        .await
        .unwrap()
        .expect("live")
        .absolute_deadline()
}

async fn is_empty(store: &SessionDbStore) -> bool {
    store.sessions().is_empty().await.unwrap()
}

async fn sessions_of(store: &SessionDbStore, user: &str) -> usize {
    store.sessions().sessions_of(user).await.unwrap().len()
}

fn record(expiry: OffsetDateTime) -> Record {
    Record {
        id: Id::default(),
        data: HashMap::default(),
        expiry_date: expiry,
    }
}

fn in_30_minutes() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::minutes(30)
}

// ---------------------------------------------------------------------------------
// tower-sessions' MemoryStore tests, per backend

async fn test_create(b: Backend) {
    let (store, _held) = store_on!(b);
    let mut r = record(in_30_minutes());
    assert!(store.create(&mut r).await.is_ok());
}

async fn test_save(b: Backend) {
    let (store, _held) = store_on!(b);
    // A record never created: accepted (tower-sessions' test), and not stored (ours).
    let r = record(in_30_minutes());
    assert!(store.save(&r).await.is_ok());
    assert_eq!(store.load(&r.id).await.unwrap(), None);
}

async fn test_load(b: Backend) {
    let (store, _held) = store_on!(b);
    let mut r = record(in_30_minutes());
    r.data.insert("k".into(), serde_json::json!({"v": [1, 2]}));
    store.create(&mut r).await.unwrap();
    assert_eq!(store.load(&r.id).await.unwrap(), Some(r));
}

async fn test_delete(b: Backend) {
    let (store, _held) = store_on!(b);
    let mut r = record(in_30_minutes());
    store.create(&mut r).await.unwrap();
    assert!(store.delete(&r.id).await.is_ok());
    assert_eq!(store.load(&r.id).await.unwrap(), None);
}

async fn test_create_id_collision(b: Backend) {
    let (store, _held) = store_on!(b);
    let expiry = in_30_minutes();
    let mut r1 = record(expiry);
    let mut r2 = record(expiry);
    store.create(&mut r1).await.unwrap();
    r2.id = r1.id;
    store.create(&mut r2).await.unwrap();
    assert_ne!(r1.id, r2.id);
    assert_eq!(store.load(&r1.id).await.unwrap(), Some(r1));
    assert_eq!(store.load(&r2.id).await.unwrap(), Some(r2));
}

// ---------------------------------------------------------------------------------
// What sessiondb adds

async fn a_save_after_delete_is_accepted_and_stores_nothing(b: Backend) {
    let (store, _held) = store_on!(b);
    let mut r = record(in_30_minutes());
    store.create(&mut r).await.unwrap();
    store.delete(&r.id).await.unwrap();
    r.data.insert("late".into(), serde_json::json!(1));
    assert!(store.save(&r).await.is_ok());
    assert_eq!(store.load(&r.id).await.unwrap(), None);
    assert!(is_empty(&store).await);
}

async fn the_engine_deadline_is_the_expiry_rounded_down_to_the_millisecond(b: Backend) {
    let (store, _held) = store_on!(b);
    let expiry = in_30_minutes().replace_nanosecond(987_654_321).unwrap();
    let mut r = record(expiry);
    store.create(&mut r).await.unwrap();
    let floor = |t: OffsetDateTime| Timestamp((t.unix_timestamp_nanos() / 1_000_000) as u64);
    assert_eq!(deadline_in(&store, r.id).await, floor(expiry));
    // Later, then earlier: the backend follows both ways.
    r.expiry_date = expiry + time::Duration::hours(5);
    store.save(&r).await.unwrap();
    assert_eq!(deadline_in(&store, r.id).await, floor(r.expiry_date));
    r.expiry_date = expiry - time::Duration::minutes(20);
    store.save(&r).await.unwrap();
    assert_eq!(deadline_in(&store, r.id).await, floor(r.expiry_date));
    assert_eq!(store.load(&r.id).await.unwrap(), Some(r));
}

async fn a_save_with_a_past_expiry_ends_the_session(b: Backend) {
    let (store, _held) = store_on!(b);
    let mut r = record(in_30_minutes());
    store.create(&mut r).await.unwrap();
    r.expiry_date = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    store.save(&r).await.unwrap();
    assert_eq!(store.load(&r.id).await.unwrap(), None);
    assert!(is_empty(&store).await);
}

async fn data_past_the_limits_is_refused_and_changes_nothing(b: Backend) {
    let (store, _held) = store_on!(b);
    let mut r = record(in_30_minutes());
    r.data.insert("k".into(), serde_json::json!("small"));
    store.create(&mut r).await.unwrap();

    let mut big = r.clone();
    big.data
        .insert("k".into(), serde_json::json!("x".repeat(70_000))); // > 64 KiB value
    assert!(matches!(
        store.save(&big).await,
        Err(session_store::Error::Encode(_))
    ));
    let mut long_key = r.clone();
    long_key.data.insert("k".repeat(300), serde_json::json!(1)); // > 256-byte key
    assert!(matches!(
        store.save(&long_key).await,
        Err(session_store::Error::Encode(_))
    ));
    assert_eq!(store.load(&r.id).await.unwrap(), Some(r.clone()));

    let mut fresh = big.clone();
    fresh.id = Id::default();
    assert!(matches!(
        store.create(&mut fresh).await,
        Err(session_store::Error::Encode(_))
    ));
    assert_eq!(store.sessions().len().await.unwrap(), 1);
}

async fn load_never_returns_an_expired_record_even_unreaped(b: Backend) {
    // The reaper off, so the expired session is still in the index.
    let (store, _held) = store_on!(b, Options::default().reaper_interval(None));
    let mut r = record(OffsetDateTime::now_utc() + time::Duration::milliseconds(300));
    store.create(&mut r).await.unwrap();
    assert!(store.load(&r.id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.load(&r.id).await.unwrap(), None);
    if let Some(engine) = store.sessions().as_embedded() {
        // (Redis counts only live sessions.)
        assert_eq!(engine.len(), 1, "not reaped yet");
    }
    // ExpiredDeletion runs one reaper pass.
    store.delete_expired().await.unwrap();
    assert!(is_empty(&store).await);
    assert_eq!(
        store.sessions().reap_expired().await.unwrap(),
        0,
        "all reaped"
    );
}

async fn login_then_rotate_keep_public_id_times_and_user(b: Backend) {
    let (store, _held) = store_on!(b);
    let backend = Arc::new(store.clone());
    let session = Session::new(None, backend.clone(), None);
    session.insert("cart", 3).await.unwrap();
    session.save().await.unwrap();
    let first = session.id().unwrap();
    store.login(&session, "alice").await.unwrap();
    let logged_in = session.id().unwrap();
    assert_ne!(first, logged_in);
    assert_eq!(store.load(&first).await.unwrap(), None);
    let s = store
        .sessions()
        .peek(&SessionDbStore::token(logged_in))
        .await
        .unwrap()
        .unwrap();
    let (sid, created, authenticated) = (s.id(), s.created_at(), s.authenticated_at());
    assert!(authenticated.is_some());

    // A later request rotates (a privilege change).
    let request = Session::new(Some(logged_in), backend.clone(), None);
    store.rotate(&request).await.unwrap();
    let rotated = request.id().unwrap();
    assert_ne!(rotated, logged_in);
    assert_eq!(store.load(&logged_in).await.unwrap(), None);
    let s = store
        .sessions()
        .peek(&SessionDbStore::token(rotated))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (s.id(), s.created_at(), s.authenticated_at()),
        (sid, created, authenticated)
    );
    assert_eq!(s.user().map(|u| u.as_str()), Some("alice"));
    assert_eq!(request.get::<i32>("cart").await.unwrap(), Some(3));
    let loaded = store.load(&rotated).await.unwrap().unwrap();
    assert_eq!(loaded.data.get("cart"), Some(&serde_json::json!(3)));
    assert!(
        !loaded.data.contains_key("__sessiondb.successor"),
        "the marker is never stored"
    );
    assert_eq!(sessions_of(&store, "alice").await, 1);
    verify(&store);
}

/// Three sessions logged in as alice (each with `cart` = 1) and one as bob; the
/// backend handle new sessions are made with, and alice's sessions.
async fn alice_on_three_devices_and_bob_on_one(
    store: &SessionDbStore,
) -> (Arc<SessionDbStore>, Vec<Session>) {
    let backend = Arc::new(store.clone());
    let mut devices = Vec::new();
    for user in ["alice", "alice", "alice", "bob"] {
        let session = Session::new(None, backend.clone(), None);
        session.insert("cart", 1).await.unwrap();
        session.save().await.unwrap();
        store.login(&session, user).await.unwrap();
        devices.push(session);
    }
    devices.pop();
    (backend, devices)
}

async fn logout_others_keeps_this_session_and_ends_the_users_others(b: Backend) {
    let (store, _held) = store_on!(b);
    let (backend, devices) = alice_on_three_devices_and_bob_on_one(&store).await;
    let this = &devices[1];
    assert_eq!(store.logout_others(this).await.unwrap(), 2);
    assert_eq!(store.user(this).await.unwrap().unwrap().as_str(), "alice");
    for other in [&devices[0], &devices[2]] {
        assert!(store.user(other).await.unwrap().is_none(), "signed out");
        assert_eq!(store.load(&other.id().unwrap()).await.unwrap(), None);
    }
    assert_eq!(sessions_of(&store, "alice").await, 1);
    assert_eq!(
        sessions_of(&store, "bob").await,
        1,
        "another user's untouched"
    );
    assert_eq!(store.logout_others(this).await.unwrap(), 0);
    // A visitor has no others to sign out.
    let visitor = Session::new(None, backend.clone(), None);
    visitor.insert("k", 1).await.unwrap();
    visitor.save().await.unwrap();
    assert!(matches!(
        store.logout_others(&visitor).await,
        Err(HelperError::NotLoggedIn)
    ));
    verify(&store);
}

async fn password_changed_signs_this_session_in_afresh_and_ends_the_older_ones_for_good(
    b: Backend,
) {
    let (store, _held) = store_on!(b);
    let (backend, devices) = alice_on_three_devices_and_bob_on_one(&store).await;
    let this = &devices[1];
    let (before, public) = (this.id().unwrap(), store.session_id(this).await.unwrap());
    // Past the millisecond of the logins, so that all three are older.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    assert_eq!(store.password_changed(this).await.unwrap(), 2);
    assert_ne!(this.id().unwrap(), before, "a new id");
    assert_eq!(store.load(&before).await.unwrap(), None);
    assert_eq!(store.session_id(this).await.unwrap(), public);
    assert_eq!(store.user(this).await.unwrap().unwrap().as_str(), "alice");
    assert_eq!(this.get::<i32>("cart").await.unwrap(), Some(1));
    for other in [&devices[0], &devices[2]] {
        assert!(store.user(other).await.unwrap().is_none(), "signed out");
    }
    assert_eq!(sessions_of(&store, "alice").await, 1);
    assert_eq!(sessions_of(&store, "bob").await, 1);
    // A later login stays; a visitor has no password to change.
    let later = Session::new(None, backend.clone(), None);
    later.insert("k", 1).await.unwrap();
    later.save().await.unwrap();
    store.login(&later, "alice").await.unwrap();
    assert_eq!(sessions_of(&store, "alice").await, 2);
    let visitor = Session::new(None, backend.clone(), None);
    visitor.insert("k", 1).await.unwrap();
    visitor.save().await.unwrap();
    assert!(matches!(
        store.password_changed(&visitor).await,
        Err(HelperError::NotLoggedIn)
    ));
    verify(&store);
}

async fn login_with_step_up_and_seen_from_show_on_the_devices_page(b: Backend) {
    let (store, _held) = store_on!(b);
    let backend = Arc::new(store.clone());
    let session = Session::new(None, backend.clone(), None);
    session.insert("cart", 1).await.unwrap();
    session.save().await.unwrap();
    store
        .login_with(&session, "alice", SignIn::with("password"))
        .await
        .unwrap();
    session.save().await.unwrap();
    let firefox = Device::new()
        .user_agent("Firefox/140")
        .address("192.0.2.7".parse().unwrap());
    assert!(store.seen_from(&session, &firefox).await.unwrap());
    assert!(
        !store.seen_from(&session, &firefox).await.unwrap(),
        "unchanged"
    );
    let before = session.id().unwrap();
    store
        .step_up(&session, SignIn::with("otp").level(2))
        .await
        .unwrap();
    session.save().await.unwrap();
    assert_ne!(session.id().unwrap(), before, "a step-up rotates the id");
    assert_eq!(store.load(&before).await.unwrap(), None);
    assert_eq!(session.get::<i32>("cart").await.unwrap(), Some(1));
    let rows = store.devices(&session).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert!(row.current);
    let methods: Vec<_> = row
        .factors
        .iter()
        .map(|f| (f.method(), f.level()))
        .collect();
    assert_eq!(methods, [("password", 1), ("otp", 2)]);
    assert_eq!(row.level, 2);
    assert_eq!(row.user_agent.as_deref(), Some("Firefox/140"));
    assert_eq!(row.address, Some("192.0.2.0".parse().unwrap()));
    // A visitor cannot step up, and a session not stored yet has no device to record.
    let visitor = Session::new(None, backend.clone(), None);
    assert!(!store.seen_from(&visitor, &firefox).await.unwrap());
    visitor.insert("k", 1).await.unwrap();
    visitor.save().await.unwrap();
    assert!(matches!(
        store.step_up(&visitor, SignIn::with("otp")).await,
        Err(HelperError::NotLoggedIn)
    ));
    assert!(matches!(
        store.login_with(&visitor, "bob", SignIn::with("")).await,
        Err(HelperError::Store(sessiondb::Error::InvalidSignIn { .. }))
    ));
    assert!(
        store.user(&visitor).await.unwrap().is_none(),
        "nothing changed"
    );
    verify(&store);
}

async fn helpers_refuse_an_anonymous_session(b: Backend) {
    let (store, _held) = store_on!(b);
    let session = Session::new(None, Arc::new(store.clone()), None);
    session.insert("k", 1).await.unwrap();
    session.save().await.unwrap();
    assert!(matches!(
        store.logout_everywhere(&session).await,
        Err(HelperError::NotLoggedIn)
    ));
    assert!(matches!(
        store.devices(&session).await,
        Err(HelperError::NotLoggedIn)
    ));
    assert!(matches!(
        store
            .end_device(&session, store.session_id(&session).await.unwrap().unwrap())
            .await,
        Err(HelperError::NotLoggedIn)
    ));
    assert!(store.user(&session).await.unwrap().is_none());
    assert!(store.session_id(&session).await.unwrap().is_some());
}

macro_rules! per_backend {
    ($backend:ident, $variant:expr, [$($test:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($variant).await;
                }
            )*
        }
    };
}

macro_rules! all_tests {
    ($backend:ident, $variant:expr) => {
        per_backend!(
            $backend,
            $variant,
            [
                test_create,
                test_save,
                test_load,
                test_delete,
                test_create_id_collision,
                a_save_after_delete_is_accepted_and_stores_nothing,
                the_engine_deadline_is_the_expiry_rounded_down_to_the_millisecond,
                a_save_with_a_past_expiry_ends_the_session,
                data_past_the_limits_is_refused_and_changes_nothing,
                login_then_rotate_keep_public_id_times_and_user,
                helpers_refuse_an_anonymous_session,
                login_with_step_up_and_seen_from_show_on_the_devices_page,
                logout_others_keeps_this_session_and_ends_the_users_others,
                password_changed_signs_this_session_in_afresh_and_ends_the_older_ones_for_good,
                load_never_returns_an_expired_record_even_unreaped,
                a_rotation_dropped_half_way_ends_the_session_instead_of_orphaning_it,
                a_forged_successor_marker_is_ignored_and_never_stored,
            ]
        );
    };
}

all_tests!(memory, Backend::Memory);
all_tests!(log, Backend::Log);
all_tests!(log_sync, Backend::LogSync);
#[cfg(feature = "sled")]
all_tests!(sled, Backend::Sled);
#[cfg(feature = "redis")]
all_tests!(redis, Backend::Redis);
#[cfg(feature = "postgres")]
all_tests!(postgres, Backend::Postgres);

/// Why docs/integrations.md says not to put tower-sessions' `CachingSessionStore` in
/// front of this store: a session ended behind the cache's back (a logout on another
/// node, `revoke_user`) and then saved late through the cache stays ended in sessiondb,
/// and the cache serves it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caching_store_in_front_serves_back_a_session_sessiondb_ended() {
    let (store, _held) = store_on!(Backend::Memory);
    let caching = session_store::CachingSessionStore::new(
        tower_sessions::MemoryStore::default(),
        store.clone(),
    );
    let mut r = record(in_30_minutes());
    caching.create(&mut r).await.unwrap();
    store.delete(&r.id).await.unwrap();
    r.data.insert("late".into(), serde_json::json!(1));
    caching.save(&r).await.unwrap();
    assert_eq!(
        store.load(&r.id).await.unwrap(),
        None,
        "sessiondb keeps it ended"
    );
    assert_eq!(
        caching.load(&r.id).await.unwrap(),
        Some(r),
        "the cache brings it back"
    );
}

// ---------------------------------------------------------------------------------
// A rotation cut short

/// Delegates to a `SessionDbStore`, except that `create` never finishes: what a request
/// looks like to `rotate` when the client goes away while it saves.
#[derive(Clone, Debug)]
struct StallsOnCreate(SessionDbStore);

#[async_trait::async_trait]
impl SessionStore for StallsOnCreate {
    async fn create(&self, _: &mut Record) -> session_store::Result<()> {
        std::future::pending().await
    }
    async fn save(&self, r: &Record) -> session_store::Result<()> {
        self.0.save(r).await
    }
    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.0.load(id).await
    }
    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.0.delete(id).await
    }
}

async fn a_rotation_dropped_half_way_ends_the_session_instead_of_orphaning_it(b: Backend) {
    let (store, _held) = store_on!(b);
    let session = Session::new(None, Arc::new(store.clone()), None);
    store.login(&session, "alice").await.unwrap();
    let id = session.id().unwrap();

    let stalled = Session::new(Some(id), Arc::new(StallsOnCreate(store.clone())), None);
    let cut = tokio::time::timeout(Duration::from_millis(200), store.rotate(&stalled)).await;
    assert!(cut.is_err(), "the rotation stalls in create");
    // The backend had moved the session to the reserved id; dropping the rotation
    // ended it, rather than leaving a session nobody can address on alice's list (at
    // once on the embedded store; on Redis from a task the drop spawned).
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    while sessions_of(&store, "alice").await > 0 && std::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sessions_of(&store, "alice").await, 0);
    if store.sessions().as_embedded().is_some() {
        assert!(is_empty(&store).await, "ended by the drop itself");
    }
    assert_eq!(store.load(&id).await.unwrap(), None);
    verify(&store);
}

async fn a_forged_successor_marker_is_ignored_and_never_stored(b: Backend) {
    let (store, _held) = store_on!(b);
    let victim = {
        let s = Session::new(None, Arc::new(store.clone()), None);
        store.login(&s, "alice").await.unwrap();
        s.id().unwrap()
    };
    // A record naming an id no rotation reserved must not be handed that id.
    let mut r = record(in_30_minutes());
    r.data.insert(
        "__sessiondb.successor".into(),
        serde_json::json!(victim.0.to_string()),
    );
    store.create(&mut r).await.unwrap();
    assert_ne!(r.id, victim);
    assert!(!r.data.contains_key("__sessiondb.successor"));
    assert_eq!(sessions_of(&store, "alice").await, 1);
    assert_eq!(
        store
            .user(&Session::new(Some(r.id), Arc::new(store.clone()), None))
            .await
            .unwrap(),
        None
    );
}

// ---------------------------------------------------------------------------------
// Measurements for the module docs (run by hand, release build):
// cargo test --release --features tower-sessions --test tower_sessions_store -- --ignored --nocapture

#[test]
#[ignore = "a measurement, not a check; run by hand"]
fn measure_offload() {
    for (mode, sync) in [("memory", false), ("Sync", true)] {
        for offload in [false, true] {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let engine = if sync {
                Store::open_with(
                    dir.path(),
                    Options::default().durability(sessiondb::Durability::Sync),
                )
                .unwrap()
            } else {
                Store::in_memory().unwrap()
            };
            let store = SessionDbStore::new(engine).offload_writes(offload);
            let (tasks, per_task) = (64, if sync { 1_000 } else { 2_000 });
            let start = std::time::Instant::now();
            rt.block_on(async {
                let handles: Vec<_> = (0..tasks)
                    .map(|_| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            for i in 0..per_task {
                                let mut r = record(in_30_minutes());
                                store.create(&mut r).await.unwrap();
                                r.data.insert("n".into(), serde_json::json!(i));
                                store.save(&r).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.await.unwrap();
                }
            });
            let ops = f64::from(tasks * per_task * 2);
            println!(
                "{mode:>6}, offload {offload:>5}: {:>9.0} ops/s (create + save, 64 tasks, 2 workers)",
                ops / start.elapsed().as_secs_f64()
            );
        }
    }
}

#[test]
#[ignore = "a measurement, not a check; run by hand"]
fn measure_data_layout() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = SessionDbStore::new(Store::in_memory().unwrap());
    for (keys, len) in [(5usize, 30usize), (50, 20), (1_000, 10)] {
        let mut r = record(in_30_minutes());
        for i in 0..keys {
            r.data
                .insert(format!("key{i:04}"), serde_json::json!("x".repeat(len)));
        }
        rt.block_on(store.create(&mut r)).unwrap();
        let rounds = (200_000 / keys).max(50);
        let start = std::time::Instant::now();
        for i in 0..rounds {
            r.data.insert("key0000".into(), serde_json::json!(i));
            rt.block_on(store.save(&r)).unwrap();
            std::hint::black_box(rt.block_on(store.load(&r.id)).unwrap());
        }
        let per_key = start.elapsed() / u32::try_from(rounds).unwrap();
        // The alternative layout, for comparison: the whole map as one JSON value
        // under one key (save + load the same way, through the engine directly).
        let engine = store.sessions().as_embedded().unwrap();
        let (token, _) = engine.create(sessiondb::NewSession::anonymous()).unwrap();
        let start = std::time::Instant::now();
        for i in 0..rounds {
            r.data.insert("key0000".into(), serde_json::json!(i));
            let mut d = sessiondb::SessionData::new();
            d.insert_raw("tower", &serde_json::to_vec(&r.data).unwrap())
                .unwrap();
            let v = engine.peek(&token).unwrap().version();
            engine.save(&token, v, &d).unwrap();
            let s = engine.get(&token).unwrap();
            let back: HashMap<String, serde_json::Value> =
                serde_json::from_slice(s.data().get_raw("tower").unwrap()).unwrap();
            std::hint::black_box(back);
        }
        let one_key = start.elapsed() / u32::try_from(rounds).unwrap();
        println!(
            "{keys:>5} keys x {len:>2} B: save + load, key per entry {per_key:?}, one key {one_key:?}"
        );
    }
}

/// One request's worth of store traffic (create, save, load) from 64 tasks on a
/// 2-worker runtime, on the embedded store in memory and on Redis (a local
/// redis-server without persistence): what moving the sessions to Redis costs.
#[cfg(feature = "redis")]
#[test]
#[ignore = "a measurement, not a check; run by hand"]
fn measure_redis() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for backend in [Backend::Memory, Backend::Redis] {
        let Some((store, _held)) = rt.block_on(tower_app::store_on(backend)) else {
            return;
        };
        let (tasks, per_task) = (64, 200);
        let start = std::time::Instant::now();
        rt.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for i in 0..per_task {
                            let mut r = record(in_30_minutes());
                            store.create(&mut r).await.unwrap();
                            r.data.insert("n".into(), serde_json::json!(i));
                            store.save(&r).await.unwrap();
                            assert!(store.load(&r.id).await.unwrap().is_some());
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
        });
        let elapsed = start.elapsed();
        let n = f64::from(tasks * per_task);
        println!(
            "{backend:?}: {:>8.0} create+save+load/s, {:?} each (64 tasks, 2 workers)",
            n / elapsed.as_secs_f64(),
            elapsed / (tasks * per_task)
        );
    }
}
