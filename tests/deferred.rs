//! `Store::deferred` and `Commit`: writes that do not block for their fsync, through
//! the public API only.

use std::future::Future;

use sessiondb::{Durability, Event, NewSession, Options, Store};

fn sync_store(dir: &std::path::Path) -> Store {
    Store::open_with(dir, Options::default().durability(Durability::Sync)).unwrap()
}

fn created(rx: &crossbeam_channel::Receiver<Event>) -> usize {
    rx.try_iter()
        .filter(|e| matches!(e, Event::Created { .. }))
        .count()
}

/// On a single-threaded runtime a blocking `Sync` write would hold the only thread
/// through its fsync, so every write would get an fsync of its own. Awaited commits let
/// the other tasks write meanwhile: fewer fsyncs than writes, and every awaited write
/// is there after a reopen.
#[tokio::test(flavor = "current_thread")]
async fn tasks_on_one_runtime_thread_share_fsyncs_by_awaiting_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = sync_store(dir.path());
    let before = store.stats().log_syncs;
    let (tasks, each) = (32, 8);
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tokens = Vec::new();
                for i in 0..each {
                    let user = format!("user{t}");
                    let (r, commit) = store.deferred(|s| {
                        s.create(NewSession::for_user(&user).label(format!("device {i}")))
                    });
                    let (token, _) = r.unwrap();
                    commit.await.unwrap();
                    tokens.push(token);
                }
                tokens
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for h in handles {
        tokens.extend(h.await.unwrap());
    }
    let writes = (tasks * each) as u64;
    let syncs = store.stats().log_syncs - before;
    assert!(
        syncs < writes,
        "{syncs} fsyncs for {writes} writes: the writes blocked the runtime thread"
    );
    drop(store);
    let store = sync_store(dir.path());
    for t in &tokens {
        assert!(
            store.get(t).is_some(),
            "an awaited write was lost on reopen"
        );
    }
    assert_eq!(store.len(), tokens.len());
}

#[test]
fn events_of_deferred_writes_are_delivered_when_the_commit_completes() {
    let dir = tempfile::tempdir().unwrap();
    let store = sync_store(dir.path());
    let rx = store.subscribe();
    let (r, commit) = store.deferred(|s| {
        s.create(NewSession::for_user("alice"))?;
        s.create(NewSession::for_user("alice"))
    });
    r.unwrap();
    assert_eq!(created(&rx), 0, "delivered before the writes were durable");
    commit.wait().unwrap();
    assert_eq!(created(&rx), 2);
}

#[test]
fn a_dropped_commit_still_delivers_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = sync_store(dir.path());
    let rx = store.subscribe();
    let (r, commit) = store.deferred(|s| s.create(NewSession::anonymous()));
    let (token, _) = r.unwrap();
    drop(commit);
    assert_eq!(created(&rx), 1);
    // The write stands, and is durable by the next flush.
    store.flush().unwrap();
    drop(store);
    assert!(sync_store(dir.path()).get(&token).is_some());
}

#[test]
fn writes_to_another_store_inside_deferred_wait_and_notify_as_usual() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (sync_store(a_dir.path()), sync_store(b_dir.path()));
    let (a_rx, b_rx) = (a.subscribe(), b.subscribe());
    let (_, commit) = a.deferred(|a| {
        a.create(NewSession::anonymous()).unwrap();
        b.create(NewSession::anonymous()).unwrap();
        // b's write was not deferred: it is durable and announced already.
        assert_eq!(created(&b_rx), 1);
        assert!(b.stats().log_syncs >= 1);
    });
    assert_eq!(created(&a_rx), 0);
    commit.wait().unwrap();
    assert_eq!(created(&a_rx), 1);
}

#[test]
fn a_panic_inside_deferred_ends_the_deferral() {
    let dir = tempfile::tempdir().unwrap();
    let store = sync_store(dir.path());
    let rx = store.subscribe();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store.deferred(|s| {
            s.create(NewSession::anonymous()).unwrap();
            panic!("a handler bug");
        });
    }));
    assert!(caught.is_err());
    // The write made before the panic stands, and its event is not lost.
    assert_eq!(created(&rx), 1);
    // Later writes on this thread are plain blocking writes again: announced at once.
    store.create(NewSession::anonymous()).unwrap();
    assert_eq!(created(&rx), 1);
    assert_eq!(store.len(), 2);
}

#[test]
fn nested_deferrals_each_cover_their_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = sync_store(dir.path());
    let rx = store.subscribe();
    let (inner_commit, outer_commit) = {
        let (inner, outer) = store.deferred(|s| {
            s.create(NewSession::anonymous()).unwrap();
            let (_, inner) = s.deferred(|s| s.create(NewSession::anonymous()).unwrap());
            s.create(NewSession::anonymous()).unwrap();
            inner
        });
        (inner, outer)
    };
    assert_eq!(created(&rx), 0);
    inner_commit.wait().unwrap();
    assert_eq!(
        created(&rx),
        1,
        "the inner commit delivers only its own write's event"
    );
    outer_commit.wait().unwrap();
    assert_eq!(created(&rx), 2);
}

#[test]
fn a_commit_on_a_memory_store_is_ready_at_once() {
    let store = Store::in_memory().unwrap();
    let rx = store.subscribe();
    let (r, commit) = store.deferred(|s| s.create(NewSession::anonymous()));
    r.unwrap();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut commit = std::pin::pin!(commit);
    assert!(matches!(
        commit.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Ok(()))
    ));
    assert_eq!(created(&rx), 1);
}
