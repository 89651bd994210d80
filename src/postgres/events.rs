//! Events across nodes: every change writes its events into the `events` table (the
//! outbox) in its own transaction; after it commits, the store rings the schema's
//! channel (`pg_notify`, at most once per [`RING_EVERY`] per store, from a task of its
//! own: [`ring_loop`]); and each subscriber's task `LISTEN`s on a connection of its own
//! and reads the outbox from where it left off.
//!
//! **Why not `NOTIFY` in the writing transaction** (a trigger on the outbox, say): a
//! transaction that notifies holds a lock on the server's notification queue from
//! before its commit until after it, so notifying writes commit one at a time, each
//! waiting out the others' WAL flushes. Measured with pgbench, 16 clients: two inserts
//! per transaction 12,377/s; an insert and a `pg_notify` 6,228/s. The ring costs a
//! subscriber at most [`RING_EVERY`] of latency instead, and the poll below covers a
//! ring that was lost (a store that stopped before it rang).
//!
//! **Order.** An event's number comes from a sequence, taken once the row the event is
//! about is locked, so two changes to one session (or one user) are numbered in the
//! order they commit; readers deliver by number. A transaction id would not do: it is
//! taken at a transaction's first write, before it waits for the locks it needs.
//!
//! **No event skipped.** Numbers are handed out at insert, not at commit: a reader
//! that saw 7 and 9 cannot tell whether 8 is still to commit. So it delivers only up to
//! a settled number, its horizon. It notes the last number taken (`L`), then takes a
//! transaction id of its own (`R`, in a statement that commits at once): every number
//! up to `L` was taken by a transaction with a smaller id (each event insert names its
//! transaction's id before it takes a number). Once the oldest running transaction is
//! at or past `R`, every transaction below `R` has finished, so nothing at or below `L`
//! can still appear. (The snapshot's own upper bound would not do: it is the latest
//! *completed* id plus one, and a running transaction above it is in no list.) This
//! costs a transaction id per reader and poll while events are arriving, none while
//! idle; and an event waits for the transactions that were running when a later one
//! took its number, so a long transaction anywhere in the database (an
//! idle-in-transaction session, a long report) delays events — not changes.
//!
//! A notification wakes the reader at once; it also looks every [`POLL`] for a horizon
//! that moved; after a lost connection it reconnects and resumes from its position.
//! When it subscribes it notes the last number and the running transactions, and
//! delivers first the events of those still-running transactions (numbered before it
//! subscribed, committed after).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use uuid::Uuid;

use super::Inner;
use super::ops::kind;
use crate::error::Result;
use crate::model::event::{EndReason, Event};
use crate::model::session::UserId;
use crate::model::token::SessionId;

/// How often a reader looks without a notification.
pub(super) const POLL: Duration = Duration::from_millis(250);

/// The most often a store rings the channel.
pub(super) const RING_EVERY: Duration = Duration::from_millis(20);

/// The store's ringer: waits for a committed change, rings the channel, then waits
/// [`RING_EVERY`] (changes committed meanwhile share the next ring). Stops with the
/// store.
pub(super) async fn ring_loop(inner: Weak<Inner>, doorbell: std::sync::Arc<tokio::sync::Notify>) {
    loop {
        doorbell.notified().await;
        let Some(inner) = inner.upgrade() else { return };
        // A failed ring (the server away) is covered by the readers' poll.
        let _ = inner.ring().await;
        drop(inner);
        tokio::time::sleep(RING_EVERY).await;
    }
}

/// How many events a reader takes per query.
const PAGE: i64 = 1_000;

/// A connection that listens on the store's channel: its client, and a wake-up per
/// notification (closed when the connection is lost).
pub(super) struct Listener {
    pub(super) client: tokio_postgres::Client,
    pub(super) wake: tokio::sync::mpsc::UnboundedReceiver<()>,
}

/// Opens a [`Listener`] (the store's connection settings and TLS, captured at connect).
pub(super) type Listen =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Listener>> + Send>> + Send + Sync>;

/// Where a reader is.
#[derive(Clone, Debug)]
pub(super) struct Position {
    /// Every event up to this number is delivered (or was there before subscribing).
    pub(super) after: i64,
    /// Every number up to this is settled: no event at or below it can still appear.
    pub(super) horizon: i64,
    /// Last numbers taken, each with a transaction id taken after it was read, oldest
    /// first: each becomes the horizon once every transaction below its id has
    /// finished.
    pub(super) pending: VecDeque<(i64, u64)>,
    /// Until delivered: the transactions running when the reader subscribed (the
    /// oldest's id, and the snapshot) and the last number then.
    pub(super) in_flight: Option<(String, String, i64)>,
}

/// The reader task of one subscriber.
pub(super) async fn read_events(inner: Weak<Inner>, tx: Sender<Event>, mut pos: Position) {
    let mut first = true;
    loop {
        let listener = {
            let Some(inner) = inner.upgrade() else { return };
            if !first {
                inner.count("sessiondb_postgres_reconnects_total");
            }
            (inner.listen)().await
        };
        first = false;
        let Ok(mut listener) = listener else {
            // The server is away: try again in a second (the position is kept).
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let Some(patience) = inner.upgrade().map(|i| i.patience()) else {
            return;
        };
        loop {
            // A server that stops answering is a lost connection too.
            let read = read_settled(&inner, &listener.client, &tx, &mut pos);
            match tokio::time::timeout(patience, read).await {
                Ok(Step::Stop) => return,
                Ok(Step::Lost) | Err(_) => break,
                Ok(Step::Done) => {}
            }
            tokio::select! {
                w = listener.wake.recv() => if w.is_none() { break },
                () = tokio::time::sleep(POLL) => {}
            }
            // A dropped receiver is seen at the next event; a dropped store here.
            if inner.strong_count() == 0 {
                return;
            }
        }
    }
}

enum Step {
    Done,
    /// The connection failed: reconnect.
    Lost,
    /// The store or the receiver is gone.
    Stop,
}

/// Moves the horizon, then delivers every event up to it.
async fn read_settled(
    inner: &Weak<Inner>,
    client: &tokio_postgres::Client,
    tx: &Sender<Event>,
    pos: &mut Position,
) -> Step {
    let Some(sql) = inner.upgrade().map(|i| {
        (
            i.sql.event_numbers.clone(),
            i.sql.own_id.clone(),
            i.sql.running.clone(),
            i.sql.events_after.clone(),
            i.sql.events_in_flight.clone(),
        )
    }) else {
        return Step::Stop;
    };
    let (numbers, own_id, running, after, in_flight) = sql;
    let Ok(last) = client.query_one(&numbers, &[]).await else {
        return Step::Lost;
    };
    let last: i64 = last.get(0);
    let settled_up_to = pos.pending.back().map_or(pos.horizon, |p| p.0);
    if last > settled_up_to {
        // An id of our own, taken after the number was read.
        let Ok(id) = client.query_one(&own_id, &[]).await else {
            return Step::Lost;
        };
        let Ok(id) = id.get::<_, String>(0).parse::<u64>() else {
            return Step::Lost;
        };
        pos.pending.push_back((last, id));
    }
    if !pos.pending.is_empty() {
        let Ok(bounds) = client.query_one(&running, &[]).await else {
            return Step::Lost;
        };
        let Ok(oldest) = bounds.get::<_, String>(0).parse::<u64>() else {
            return Step::Lost;
        };
        while let Some(&(number, id)) = pos.pending.front() {
            if id > oldest {
                break;
            }
            pos.horizon = pos.horizon.max(number);
            pos.pending.pop_front();
        }
    }
    // First, once settled, the events of the transactions running at subscription.
    if let Some((oldest_then, snapshot, last_then)) = pos.in_flight.clone() {
        if pos.horizon < last_then {
            return Step::Done;
        }
        let Ok(rows) = client
            .query(&in_flight, &[&oldest_then, &last_then, &snapshot])
            .await
        else {
            return Step::Lost;
        };
        if let Some(step) = deliver(inner, tx, &rows) {
            return step;
        }
        pos.in_flight = None;
    }
    while pos.after < pos.horizon {
        let Ok(rows) = client
            .query(&after, &[&pos.after, &pos.horizon, &PAGE])
            .await
        else {
            return Step::Lost;
        };
        if let Some(step) = deliver(inner, tx, &rows) {
            return step;
        }
        match rows.last() {
            Some(r) if (rows.len() as i64) == PAGE => pos.after = r.get(0),
            _ => pos.after = pos.horizon,
        }
    }
    Step::Done
}

/// Hands the rows' events to the subscriber; `Some(Stop)` if it or the store is gone.
fn deliver(inner: &Weak<Inner>, tx: &Sender<Event>, rows: &[tokio_postgres::Row]) -> Option<Step> {
    let inner = inner.upgrade()?;
    for r in rows {
        let Some(event) = decode(r) else { continue };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return Some(Step::Stop),
        }
    }
    None
}

/// An outbox row as an event (`None` for a kind this build does not know).
fn decode(r: &tokio_postgres::Row) -> Option<Event> {
    let kind: &str = r.get(1);
    let id: Option<Uuid> = r.get(2);
    let user: Option<&str> = r.get(3);
    let reason: Option<&str> = r.get(4);
    let ids: Option<Vec<Uuid>> = r.get(5);
    let n: Option<i64> = r.get(6);
    let id = || id.map(|u| SessionId(u.as_u128()));
    let user = || user.map(UserId::trusted);
    Some(match kind {
        kind::CREATED => Event::Created {
            session: id()?,
            user: user(),
        },
        kind::ENDED => Event::Ended {
            session: id()?,
            user: user(),
            reason: reason_of(reason?)?,
        },
        kind::REVOKED => Event::UserRevoked {
            user: user()?,
            sessions: ids?.into_iter().map(|u| SessionId(u.as_u128())).collect(),
        },
        kind::ROTATED => Event::Rotated { session: id()? },
        kind::BOUND => Event::UserBound {
            session: id()?,
            user: user()?,
        },
        kind::UNBOUND => Event::UserUnbound {
            session: id()?,
            user: user()?,
        },
        kind::CLEARED => Event::Cleared {
            sessions: usize::try_from(n?).ok()?,
        },
        _ => return None,
    })
}

/// An end reason as the outbox keeps it.
fn reason_of(r: &str) -> Option<EndReason> {
    Some(match r {
        "ended" => EndReason::Ended,
        "expired" => EndReason::Expired,
        "revoked" => EndReason::Revoked,
        "limit" => EndReason::LimitExceeded,
        "evicted" => EndReason::Evicted,
        "revoked_others" => EndReason::RevokedByOtherSession,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_reason_the_store_writes_reads_back() {
        for (text, reason) in [
            ("ended", EndReason::Ended),
            ("expired", EndReason::Expired),
            ("revoked", EndReason::Revoked),
            ("limit", EndReason::LimitExceeded),
            ("evicted", EndReason::Evicted),
            ("revoked_others", EndReason::RevokedByOtherSession),
        ] {
            assert_eq!(reason_of(text), Some(reason));
        }
        assert_eq!(reason_of("cleared"), None);
    }
}
