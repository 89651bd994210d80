//! A conformance suite for tower-sessions stores (cargo feature `conformance`): the
//! behaviour every session store should have, checked through the
//! [`SessionStore`] trait alone, so it runs against any store — sessiondb's, the ones
//! tower-sessions ships, or yours.
//!
//! This module owns the checks and their report. Each check gets a clone of the store,
//! runs in its own tokio task (under a timeout, so a hang or a panic is a failure, not
//! an aborted suite), and uses fresh random ids, so checks do not see each other's
//! records. [`run_all`] runs every check at once and takes two to three seconds (the
//! expiry checks wait for real deadlines to pass).
//!
//! ```no_run
//! # async fn demo() {
//! // In your store's tests (a tokio runtime with time enabled, as #[tokio::test] gives):
//! let report = sessiondb::conformance::run_all(tower_sessions::MemoryStore::default()).await;
//! println!("{report}");
//! // tower-sessions' MemoryStore upserts on save, so a late save brings back what was
//! // deleted or rotated away: name what you expect to fail, and nothing else may.
//! report.assert_fails_only(&[
//!     "late_save_does_not_resurrect_a_deleted_record",
//!     "late_save_does_not_resurrect_an_expired_record",
//!     "rotated_id_stays_dead_against_a_late_save",
//!     "delete_racing_saves_stays_deleted",
//! ]);
//! # }
//! ```
//!
//! | area | check | what it pins |
//! |---|---|---|
//! | expiry | `past_expiry_never_loads` | a record created with its expiry in the past is never loaded |
//! | expiry | `save_with_past_expiry_ends_it` | saving a record with a past expiry ends it |
//! | expiry | `expired_record_never_loads` | a record loads until its expiry, and never after |
//! | expiry | `extended_expiry_keeps_it` | a record saved with a later expiry outlives its first one |
//! | expiry | `shortened_expiry_ends_it` | a record saved with an earlier expiry ends then |
//! | rotation | `cycle_id_moves_the_data` | after `Session::cycle_id` and save, the old id loads nothing, the new one the data |
//! | rotation | `rotated_id_stays_dead_against_a_late_save` | a concurrent request saving under the old id does not bring it back |
//! | finality | `deleted_stays_deleted` | a deleted record never loads; deleting again is fine |
//! | finality | `late_save_does_not_resurrect_a_deleted_record` | a save after a delete does not bring the record back |
//! | finality | `late_save_does_not_resurrect_an_expired_record` | a save after the expiry passed does not bring the record back |
//! | concurrency | `concurrent_saves_never_tear_a_record` | tasks saving and loading one record: every load is one complete saved record |
//! | concurrency | `concurrent_creates_with_one_id_get_distinct_ids` | racing creates with the same id end with distinct ids, each with its own data |
//! | concurrency | `delete_racing_saves_stays_deleted` | saves racing a delete: once all are done, the record is gone |
//! | input | `unknown_ids_load_nothing` | random, zero and extreme ids load `None`; deleting them is `Ok` |
//! | input | `save_of_an_unknown_id_does_not_fail` | tower-sessions' own store tests expect this |
//! | input | `record_loads_exactly_as_saved` | id, every JSON value kind, unicode keys and the expiry to the nanosecond |
//! | input | `empty_data_round_trips` | a record with no data |
//! | input | `large_data_round_trips` | 150 KB of data in three values |
//! | input | `many_keys_round_trip` | 1,000 keys |
//! | input | `create_collision_gets_a_new_id` | `create` with a taken id picks another and leaves the first record alone |

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use tower_sessions_core::Session;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::SessionStore;

/// How long one check may take before it counts as hung.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// The short lifetime of the expiry checks: long enough that a loaded CI machine still
/// loads the record before it, short enough to keep the suite quick.
const SHORT: time::Duration = time::Duration::milliseconds(1_500);
/// How long the expiry checks wait for [`SHORT`] to pass.
const PAST_SHORT: Duration = Duration::from_millis(2_000);

/// What a group of checks is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Area {
    /// Records past their expiry are never loaded; extending and shortening work.
    Expiry,
    /// Cycling the id moves the data, and the old id stays dead.
    Rotation,
    /// What was deleted or expired stays so, whatever is saved later.
    Finality,
    /// Many tasks at once: no torn records, no lost collisions.
    Concurrency,
    /// Unknown ids, empty, large and odd data, id collisions.
    Input,
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Area::Expiry => "expiry",
            Area::Rotation => "rotation",
            Area::Finality => "finality",
            Area::Concurrency => "concurrency",
            Area::Input => "input",
        })
    }
}

/// How a check went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The store behaved.
    Pass,
    /// The store did not; the text says what was seen.
    Fail(String),
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Check {
    /// The check's name (see the table in the module docs).
    pub name: &'static str,
    /// What it is about.
    pub area: Area,
    /// How it went.
    pub outcome: Outcome,
}

impl Check {
    /// True if the store passed this check.
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }
}

/// The results of a run, in a fixed order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The `Debug` name of the store's type.
    pub store: String,
    /// Every check that ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// True if every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed())
    }

    /// The check named `name`, if it ran.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Panics, printing the report, unless every check passed.
    pub fn assert_passes(&self) {
        self.assert_fails_only(&[]);
    }

    /// Panics, printing the report, unless exactly the checks named in `expected` failed
    /// (for a store with known, documented shortcomings: a fixed one must be taken off
    /// the list, and a new failure is not hidden by an old one).
    pub fn assert_fails_only(&self, expected: &[&str]) {
        let failed: HashSet<&str> = self.failures().map(|c| c.name).collect();
        let expected: HashSet<&str> = expected.iter().copied().collect();
        let unknown: Vec<&&str> = expected
            .iter()
            .filter(|n| self.check(n).is_none())
            .collect();
        assert!(unknown.is_empty(), "no such checks: {unknown:?}\n{self}");
        let unexpected: Vec<&&str> = failed.difference(&expected).collect();
        let now_passing: Vec<&&str> = expected.difference(&failed).collect();
        assert!(
            unexpected.is_empty() && now_passing.is_empty(),
            "failed unexpectedly: {unexpected:?}; expected to fail but passed: {now_passing:?}\n{self}"
        );
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().count();
        writeln!(
            f,
            "session store conformance: {} — {} passed, {failed} failed",
            self.store,
            self.checks.len() - failed
        )?;
        for c in &self.checks {
            match &c.outcome {
                Outcome::Pass => writeln!(f, "  pass  {:<12} {}", c.area, c.name)?,
                Outcome::Fail(why) => writeln!(f, "  FAIL  {:<12} {}: {why}", c.area, c.name)?,
            }
        }
        Ok(())
    }
}

/// Runs every check against `store` at once, each in its own task with a clone of the
/// store. Call it from a tokio runtime with the time driver enabled (as
/// `#[tokio::test]` provides); a multi-threaded one makes the concurrency checks
/// parallel rather than merely interleaved.
pub async fn run_all<S: SessionStore + Clone>(store: S) -> Report {
    let mut pending = expiry_checks(&store);
    pending.extend(rotation_checks(&store));
    pending.extend(finality_checks(&store));
    pending.extend(concurrency_checks(&store));
    pending.extend(input_checks(&store));
    report(&store, pending).await
}

/// The [`Area::Expiry`] checks alone.
pub async fn expiry<S: SessionStore + Clone>(store: S) -> Report {
    report(&store, expiry_checks(&store)).await
}

/// The [`Area::Rotation`] checks alone.
pub async fn rotation<S: SessionStore + Clone>(store: S) -> Report {
    report(&store, rotation_checks(&store)).await
}

/// The [`Area::Finality`] checks alone.
pub async fn finality<S: SessionStore + Clone>(store: S) -> Report {
    report(&store, finality_checks(&store)).await
}

/// The [`Area::Concurrency`] checks alone.
pub async fn concurrency<S: SessionStore + Clone>(store: S) -> Report {
    report(&store, concurrency_checks(&store)).await
}

/// The [`Area::Input`] checks alone.
pub async fn input<S: SessionStore + Clone>(store: S) -> Report {
    report(&store, input_checks(&store)).await
}

// ----------------------------------------------------------------------------------
// Running

type Verdict = Result<(), String>;
type Body = Pin<Box<dyn Future<Output = Verdict> + Send>>;
type Pending = (&'static str, Area, Body);

fn pending<F>(name: &'static str, area: Area, body: F) -> Pending
where
    F: Future<Output = Verdict> + Send + 'static,
{
    (name, area, Box::pin(body))
}

async fn report<S: SessionStore>(store: &S, pending: Vec<Pending>) -> Report {
    let tasks: Vec<_> = pending
        .into_iter()
        .map(|(name, area, body)| {
            let task = tokio::spawn(tokio::time::timeout(CHECK_TIMEOUT, body));
            (name, area, task)
        })
        .collect();
    let mut checks = Vec::with_capacity(tasks.len());
    for (name, area, task) in tasks {
        let outcome = match task.await {
            Ok(Ok(Ok(()))) => Outcome::Pass,
            Ok(Ok(Err(why))) => Outcome::Fail(why),
            Ok(Err(_)) => Outcome::Fail(format!("did not finish within {CHECK_TIMEOUT:?}")),
            Err(e) if e.is_panic() => Outcome::Fail(format!("panicked: {}", panic_text(e))),
            Err(e) => Outcome::Fail(format!("task failed: {e}")),
        };
        checks.push(Check {
            name,
            area,
            outcome,
        });
    }
    Report {
        store: short_type_name(store),
        checks,
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string payload)".to_owned()
    }
}

fn short_type_name<S>(_: &S) -> String {
    std::any::type_name::<S>().to_owned()
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// `r` or the store's error, said with what was being done.
fn ok<T, E: fmt::Display>(r: Result<T, E>, doing: &str) -> Result<T, String> {
    r.map_err(|e| format!("{doing} failed: {e}"))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn record(data: Value, expiry_date: OffsetDateTime) -> Record {
    let data = match data {
        Value::Object(m) => m.into_iter().collect(),
        other => HashMap::from([("value".to_owned(), other)]),
    };
    Record {
        id: Id::default(),
        data,
        expiry_date,
    }
}

async fn created<S: SessionStore>(
    s: &S,
    data: Value,
    expiry: OffsetDateTime,
) -> Result<Record, String> {
    let mut r = record(data, expiry);
    ok(s.create(&mut r).await, "create")?;
    Ok(r)
}

async fn load<S: SessionStore>(s: &S, id: Id) -> Result<Option<Record>, String> {
    ok(s.load(&id).await, "load")
}

// ----------------------------------------------------------------------------------
// Expiry

fn expiry_checks<S: SessionStore + Clone>(s: &S) -> Vec<Pending> {
    vec![
        pending(
            "past_expiry_never_loads",
            Area::Expiry,
            past_expiry_never_loads(s.clone()),
        ),
        pending(
            "save_with_past_expiry_ends_it",
            Area::Expiry,
            save_with_past_expiry_ends_it(s.clone()),
        ),
        pending(
            "expired_record_never_loads",
            Area::Expiry,
            expired_record_never_loads(s.clone()),
        ),
        pending(
            "extended_expiry_keeps_it",
            Area::Expiry,
            extended_expiry_keeps_it(s.clone()),
        ),
        pending(
            "shortened_expiry_ends_it",
            Area::Expiry,
            shortened_expiry_ends_it(s.clone()),
        ),
    ]
}

async fn past_expiry_never_loads<S: SessionStore>(s: S) -> Verdict {
    let r = created(&s, json!({"k": 1}), now() - time::Duration::seconds(1)).await?;
    ensure!(
        load(&s, r.id).await?.is_none(),
        "a record created already expired was loaded"
    );
    Ok(())
}

async fn save_with_past_expiry_ends_it<S: SessionStore>(s: S) -> Verdict {
    let mut r = created(&s, json!({"k": 1}), now() + time::Duration::hours(1)).await?;
    ensure!(
        load(&s, r.id).await?.is_some(),
        "a fresh record did not load"
    );
    r.expiry_date = now() - time::Duration::seconds(1);
    ok(s.save(&r).await, "save")?;
    ensure!(
        load(&s, r.id).await?.is_none(),
        "a record saved with a past expiry was loaded"
    );
    Ok(())
}

async fn expired_record_never_loads<S: SessionStore>(s: S) -> Verdict {
    let r = created(&s, json!({"k": 1}), now() + SHORT).await?;
    ensure!(
        load(&s, r.id).await?.is_some(),
        "the record did not load before its expiry"
    );
    tokio::time::sleep(PAST_SHORT).await;
    ensure!(
        load(&s, r.id).await?.is_none(),
        "the record loaded after its expiry"
    );
    Ok(())
}

async fn extended_expiry_keeps_it<S: SessionStore>(s: S) -> Verdict {
    let mut r = created(&s, json!({"k": 1}), now() + SHORT).await?;
    r.expiry_date = now() + time::Duration::hours(1);
    ok(s.save(&r).await, "save")?;
    tokio::time::sleep(PAST_SHORT).await;
    match load(&s, r.id).await? {
        None => Err("the record was gone at its first expiry, though extended".into()),
        Some(got) if got.expiry_date != r.expiry_date => Err(format!(
            "loaded with expiry {}, saved with {}",
            got.expiry_date, r.expiry_date
        )),
        Some(_) => Ok(()),
    }
}

async fn shortened_expiry_ends_it<S: SessionStore>(s: S) -> Verdict {
    let mut r = created(&s, json!({"k": 1}), now() + time::Duration::hours(1)).await?;
    r.expiry_date = now() + SHORT;
    ok(s.save(&r).await, "save")?;
    tokio::time::sleep(PAST_SHORT).await;
    ensure!(
        load(&s, r.id).await?.is_none(),
        "the record loaded after the earlier expiry it was saved with"
    );
    Ok(())
}

// ----------------------------------------------------------------------------------
// Rotation

fn rotation_checks<S: SessionStore + Clone>(s: &S) -> Vec<Pending> {
    vec![
        pending(
            "cycle_id_moves_the_data",
            Area::Rotation,
            cycle_id_moves_the_data(s.clone()),
        ),
        pending(
            "rotated_id_stays_dead_against_a_late_save",
            Area::Rotation,
            rotated_id_stays_dead_against_a_late_save(s.clone()),
        ),
    ]
}

/// A session saved through tower-sessions with `{"k": 42}`; returns its id.
async fn saved_session<S: SessionStore>(store: &Arc<S>) -> Result<Id, String> {
    let session = Session::new(None, store.clone(), None);
    ok(session.insert("k", 42).await, "Session::insert")?;
    ok(session.save().await, "Session::save")?;
    session
        .id()
        .ok_or_else(|| "a saved session has no id".into())
}

/// Cycles the id of the stored session `old` as a request would; returns the new id.
async fn cycled<S: SessionStore>(store: &Arc<S>, old: Id) -> Result<Id, String> {
    let session = Session::new(Some(old), store.clone(), None);
    ok(session.cycle_id().await, "Session::cycle_id")?;
    ok(session.save().await, "Session::save")?;
    session
        .id()
        .ok_or_else(|| "a cycled session has no id after save".into())
}

async fn cycle_id_moves_the_data<S: SessionStore>(s: S) -> Verdict {
    let store = Arc::new(s);
    let old = saved_session(&store).await?;
    let new = cycled(&store, old).await?;
    ensure!(new != old, "cycle_id kept the id");
    ensure!(
        load(&*store, old).await?.is_none(),
        "the old id still loads after cycle_id"
    );
    let got = load(&*store, new)
        .await?
        .ok_or("the new id loads nothing")?;
    ensure!(
        got.data.get("k") == Some(&json!(42)),
        "the data did not move: {:?}",
        got.data
    );
    Ok(())
}

async fn rotated_id_stays_dead_against_a_late_save<S: SessionStore>(s: S) -> Verdict {
    let store = Arc::new(s);
    let old = saved_session(&store).await?;
    // Request A loads the session; request B cycles its id; then A saves.
    let a = Session::new(Some(old), store.clone(), None);
    ok(a.get::<i32>("k").await, "Session::get")?;
    cycled(&store, old).await?;
    ok(a.insert("from_a", true).await, "Session::insert")?;
    ok(a.save().await, "Session::save")?;
    ensure!(
        load(&*store, old).await?.is_none(),
        "a late save under the rotated-away id brought it back"
    );
    Ok(())
}

// ----------------------------------------------------------------------------------
// Finality

fn finality_checks<S: SessionStore + Clone>(s: &S) -> Vec<Pending> {
    vec![
        pending(
            "deleted_stays_deleted",
            Area::Finality,
            deleted_stays_deleted(s.clone()),
        ),
        pending(
            "late_save_does_not_resurrect_a_deleted_record",
            Area::Finality,
            late_save_does_not_resurrect_a_deleted_record(s.clone()),
        ),
        pending(
            "late_save_does_not_resurrect_an_expired_record",
            Area::Finality,
            late_save_does_not_resurrect_an_expired_record(s.clone()),
        ),
    ]
}

async fn deleted_stays_deleted<S: SessionStore>(s: S) -> Verdict {
    let r = created(&s, json!({"k": 1}), now() + time::Duration::hours(1)).await?;
    ok(s.delete(&r.id).await, "delete")?;
    ensure!(load(&s, r.id).await?.is_none(), "a deleted record loaded");
    ok(s.delete(&r.id).await, "a second delete")?;
    ensure!(
        load(&s, r.id).await?.is_none(),
        "a deleted record loaded after a second delete"
    );
    Ok(())
}

async fn late_save_does_not_resurrect_a_deleted_record<S: SessionStore>(s: S) -> Verdict {
    let mut r = created(&s, json!({"k": 1}), now() + time::Duration::hours(1)).await?;
    ok(s.delete(&r.id).await, "delete")?;
    r.data.insert("late".into(), json!(true));
    // Refusing the save is as good as ignoring it; only bringing it back is wrong.
    let _ = s.save(&r).await;
    ensure!(
        load(&s, r.id).await?.is_none(),
        "a save after the delete brought the record back"
    );
    Ok(())
}

async fn late_save_does_not_resurrect_an_expired_record<S: SessionStore>(s: S) -> Verdict {
    let mut r = created(&s, json!({"k": 1}), now() + SHORT).await?;
    tokio::time::sleep(PAST_SHORT).await;
    ensure!(
        load(&s, r.id).await?.is_none(),
        "the record loaded after its expiry"
    );
    r.expiry_date = now() + time::Duration::hours(1);
    let _ = s.save(&r).await;
    ensure!(
        load(&s, r.id).await?.is_none(),
        "a save after the expiry passed brought the record back"
    );
    Ok(())
}

// ----------------------------------------------------------------------------------
// Concurrency

const WRITERS: u32 = 8;
const ROUNDS: u32 = 25;

fn concurrency_checks<S: SessionStore + Clone>(s: &S) -> Vec<Pending> {
    vec![
        pending(
            "concurrent_saves_never_tear_a_record",
            Area::Concurrency,
            concurrent_saves_never_tear_a_record(s.clone()),
        ),
        pending(
            "concurrent_creates_with_one_id_get_distinct_ids",
            Area::Concurrency,
            concurrent_creates_with_one_id_get_distinct_ids(s.clone()),
        ),
        pending(
            "delete_racing_saves_stays_deleted",
            Area::Concurrency,
            delete_racing_saves_stays_deleted(s.clone()),
        ),
    ]
}

/// The record writer `w` saves in round `i`: every field derives from `(w, i)`, the
/// expiry included (10 ms apart), so a load can tell whether it is one whole save.
fn round_record(id: Id, base: OffsetDateTime, w: u32, i: u32) -> Record {
    let tag = format!("{w}-{i}");
    Record {
        id,
        data: HashMap::from([
            ("writer".to_owned(), json!(w)),
            ("round".to_owned(), json!(i)),
            ("tag".to_owned(), json!(tag)),
            ("payload".to_owned(), json!(tag.repeat(40))),
        ]),
        expiry_date: base + time::Duration::milliseconds(i64::from(w * 1_000 + i) * 10),
    }
}

/// Whether `r` is exactly one of the records [`round_record`] makes (the expiry to the
/// millisecond, for stores that keep no finer time).
fn is_whole(r: &Record, id: Id, base: OffsetDateTime) -> bool {
    let (Some(w), Some(i)) = (
        r.data.get("writer").and_then(Value::as_u64),
        r.data.get("round").and_then(Value::as_u64),
    ) else {
        return false;
    };
    let (Ok(w), Ok(i)) = (u32::try_from(w), u32::try_from(i)) else {
        return false;
    };
    let want = round_record(id, base, w, i);
    r.id == id
        && r.data == want.data
        && (r.expiry_date - want.expiry_date).abs() < time::Duration::milliseconds(1)
}

async fn concurrent_saves_never_tear_a_record<S: SessionStore + Clone>(s: S) -> Verdict {
    let base = now() + time::Duration::hours(1);
    let mut first = round_record(Id::default(), base, 0, 0);
    ok(s.create(&mut first).await, "create")?;
    let id = first.id;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..ROUNDS {
                ok(s.save(&round_record(id, base, w, i)).await, "save")?;
                match load(&s, id).await? {
                    None => return Err(format!("writer {w} round {i}: the record loaded nothing")),
                    Some(r) if !is_whole(&r, id, base) => {
                        return Err(format!("writer {w} round {i}: a torn record: {r:?}"));
                    }
                    Some(_) => {}
                }
                tokio::task::yield_now().await;
            }
            Ok(())
        }));
    }
    for t in tasks {
        ok(t.await, "a writer task")??;
    }
    let last = load(&s, id)
        .await?
        .ok_or("the record is gone after the writers")?;
    ensure!(
        is_whole(&last, id, base),
        "the final record is torn: {last:?}"
    );
    Ok(())
}

async fn concurrent_creates_with_one_id_get_distinct_ids<S: SessionStore + Clone>(s: S) -> Verdict {
    let shared = Id::default();
    let expiry = now() + time::Duration::hours(1);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..ROUNDS {
                let mut r = record(json!({"who": format!("{w}-{i}")}), expiry);
                r.id = shared;
                ok(s.create(&mut r).await, "create")?;
                made.push(r);
            }
            Ok::<_, String>(made)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(ok(t.await, "a creating task")??);
    }
    let ids: HashSet<Id> = all.iter().map(|r| r.id).collect();
    ensure!(
        ids.len() == all.len(),
        "{} creates with one id ended with {} distinct ids",
        all.len(),
        ids.len()
    );
    for r in &all {
        let got = load(&s, r.id)
            .await?
            .ok_or("a created record loads nothing")?;
        ensure!(
            got.data == r.data,
            "record {:?} holds another's data: {:?}",
            r.id,
            got.data
        );
    }
    Ok(())
}

async fn delete_racing_saves_stays_deleted<S: SessionStore + Clone>(s: S) -> Verdict {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let base = now() + time::Duration::hours(1);
    let mut first = round_record(Id::default(), base, 0, 0);
    ok(s.create(&mut first).await, "create")?;
    let id = first.id;
    let (saves, deleted) = (
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (s, saves, deleted) = (s.clone(), saves.clone(), deleted.clone());
        tasks.push(tokio::spawn(async move {
            // Save until the delete is done, then a few more times: some saves race
            // it, and some surely come after it.
            let mut after = 0;
            for i in 0..10_000 {
                // Errors are allowed: refusing a save of a deleted record is fine.
                let _ = s.save(&round_record(id, base, w, i)).await;
                saves.fetch_add(1, Ordering::Relaxed);
                if deleted.load(Ordering::Acquire) {
                    after += 1;
                    if after == 3 {
                        break;
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    while saves.load(Ordering::Relaxed) < WRITERS {
        tokio::task::yield_now().await;
    }
    ok(s.delete(&id).await, "delete")?;
    deleted.store(true, Ordering::Release);
    for t in tasks {
        ok(t.await, "a saving task")?;
    }
    ensure!(
        load(&s, id).await?.is_none(),
        "saves that raced the delete brought the record back"
    );
    Ok(())
}

// ----------------------------------------------------------------------------------
// Input

fn input_checks<S: SessionStore + Clone>(s: &S) -> Vec<Pending> {
    vec![
        pending(
            "unknown_ids_load_nothing",
            Area::Input,
            unknown_ids_load_nothing(s.clone()),
        ),
        pending(
            "save_of_an_unknown_id_does_not_fail",
            Area::Input,
            save_of_an_unknown_id_does_not_fail(s.clone()),
        ),
        pending(
            "record_loads_exactly_as_saved",
            Area::Input,
            record_loads_exactly_as_saved(s.clone()),
        ),
        pending(
            "empty_data_round_trips",
            Area::Input,
            empty_data_round_trips(s.clone()),
        ),
        pending(
            "large_data_round_trips",
            Area::Input,
            large_data_round_trips(s.clone()),
        ),
        pending(
            "many_keys_round_trip",
            Area::Input,
            many_keys_round_trip(s.clone()),
        ),
        pending(
            "create_collision_gets_a_new_id",
            Area::Input,
            create_collision_gets_a_new_id(s.clone()),
        ),
    ]
}

async fn unknown_ids_load_nothing<S: SessionStore>(s: S) -> Verdict {
    for id in [Id::default(), Id(0), Id(-1), Id(i128::MIN), Id(i128::MAX)] {
        ensure!(
            load(&s, id).await?.is_none(),
            "unknown id {id} loaded a record"
        );
        ok(s.delete(&id).await, "delete of an unknown id")?;
    }
    Ok(())
}

async fn save_of_an_unknown_id_does_not_fail<S: SessionStore>(s: S) -> Verdict {
    let r = record(json!({"k": 1}), now() + time::Duration::hours(1));
    ok(s.save(&r).await, "save of a record never created")
}

/// Creates `r`, loads it back, and compares the whole record.
async fn round_trip<S: SessionStore>(s: &S, mut r: Record) -> Verdict {
    ok(s.create(&mut r).await, "create")?;
    let got = load(s, r.id)
        .await?
        .ok_or("the created record loads nothing")?;
    ensure!(got.id == r.id, "loaded id {} for {}", got.id, r.id);
    ensure!(
        got.expiry_date == r.expiry_date,
        "loaded expiry {} for {}",
        got.expiry_date,
        r.expiry_date
    );
    if got.data != r.data {
        let differ: Vec<&String> = r
            .data
            .iter()
            .filter(|(k, v)| got.data.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .take(5)
            .collect();
        return Err(format!(
            "data differs: {} keys saved, {} loaded; first differing keys {differ:?}",
            r.data.len(),
            got.data.len()
        ));
    }
    Ok(())
}

async fn record_loads_exactly_as_saved<S: SessionStore>(s: S) -> Verdict {
    // Nanoseconds and a non-UTC offset, as `Expiry::AtDateTime` may give (dates are
    // equal when they are the same instant).
    let offset = time::UtcOffset::from_hms(2, 0, 0).map_err(|e| e.to_string())?;
    let expiry = (now() + time::Duration::hours(1))
        .replace_nanosecond(123_456_789)
        .map_err(|e| e.to_string())?
        .to_offset(offset);
    let r = record(
        json!({
            "int": -42,
            "big": u64::MAX,
            "small": i64::MIN,
            "float": 0.1,
            "bool": false,
            "null": null,
            "text": "line\nbreak \"quoted\" \u{0}",
            "ключ ✓": "unicode key",
            "": "empty key",
            "nested": {"list": [1, [2, {"three": 3}]], "empty": {}},
        }),
        expiry,
    );
    round_trip(&s, r).await
}

async fn empty_data_round_trips<S: SessionStore>(s: S) -> Verdict {
    round_trip(&s, record(json!({}), now() + time::Duration::hours(1))).await
}

async fn large_data_round_trips<S: SessionStore>(s: S) -> Verdict {
    let chunk = "0123456789abcdef".repeat(3_000); // 48,000 bytes
    round_trip(
        &s,
        record(
            json!({"a": chunk, "b": chunk, "c": chunk}),
            now() + time::Duration::hours(1),
        ),
    )
    .await
}

async fn many_keys_round_trip<S: SessionStore>(s: S) -> Verdict {
    let data: serde_json::Map<String, Value> =
        (0..1_000).map(|i| (format!("key-{i}"), json!(i))).collect();
    round_trip(
        &s,
        record(Value::Object(data), now() + time::Duration::hours(1)),
    )
    .await
}

async fn create_collision_gets_a_new_id<S: SessionStore>(s: S) -> Verdict {
    let expiry = now() + time::Duration::hours(1);
    let a = created(&s, json!({"who": "a"}), expiry).await?;
    let mut b = record(json!({"who": "b"}), expiry);
    b.id = a.id;
    ok(s.create(&mut b).await, "create with a taken id")?;
    ensure!(b.id != a.id, "create kept an id that was taken");
    let got_a = load(&s, a.id).await?.ok_or("the first record is gone")?;
    ensure!(
        got_a.data == a.data,
        "the first record was overwritten: {:?}",
        got_a.data
    );
    let got_b = load(&s, b.id)
        .await?
        .ok_or("the second record loads nothing")?;
    ensure!(
        got_b.data == b.data,
        "the second record holds {:?}",
        got_b.data
    );
    Ok(())
}
