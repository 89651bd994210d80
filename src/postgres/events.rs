//! Events across nodes: every change writes its events into the `events` table (the
//! outbox) in its own transaction, a statement trigger `NOTIFY`s the schema's channel,
//! and each subscriber's task `LISTEN`s on a connection of its own and reads the
//! outbox from where it left off.
//!
//! The reader's position is `(xid, seq)`: the writing transaction's id, then the row's
//! number. It reads only events of transactions older than every transaction still
//! running (`xid < pg_snapshot_xmin(pg_current_snapshot())`): none of those can commit
//! any more, so once the reader moves past a position nothing can later appear behind
//! it — which a plain `seq > last` would not give (sequence numbers are handed out at
//! insert, not at commit). The cost: an event waits for older transactions to finish,
//! so a long transaction anywhere in the database delays events (not changes).
//! A notification wakes the reader at once; it also looks every
//! [`POLL`] for events that were held back behind an older transaction, and after a
//! lost connection it reconnects and resumes from its position.

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

/// Where a reader is: past every event at or before `(xid, seq)`, and past every event
/// of a transaction visible in `snapshot` (those committed before it subscribed).
#[derive(Clone, Debug)]
pub(super) struct Position {
    pub(super) xid: String,
    pub(super) seq: i64,
    pub(super) snapshot: String,
}

/// The reader task of one subscriber.
pub(super) async fn read_events(inner: Weak<Inner>, tx: Sender<Event>, mut pos: Position) {
    let mut first = true;
    loop {
        let listener = {
            let Some(inner) = inner.upgrade() else { return };
            (inner.listen)().await
        };
        if let Some(inner) = inner.upgrade()
            && !first
        {
            inner.count("sessiondb_postgres_reconnects_total");
        }
        first = false;
        let Ok(mut listener) = listener else {
            // The server is away: try again in a second (the position is kept).
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let Ok(stmt) = ({
            let Some(inner) = inner.upgrade() else { return };
            listener.client.prepare(&inner.sql.events_after).await
        }) else {
            continue;
        };
        loop {
            // Everything there is, a page at a time.
            let failed = loop {
                let rows = listener
                    .client
                    .query(&stmt, &[&pos.xid, &pos.seq, &pos.snapshot, &PAGE])
                    .await;
                let Ok(rows) = rows else { break true };
                let Some(inner) = inner.upgrade() else { return };
                for r in &rows {
                    pos.xid = r.get(0);
                    pos.seq = r.get(1);
                    let Some(event) = decode(r) else { continue };
                    match tx.try_send(event) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            inner.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
                if (rows.len() as i64) < PAGE {
                    break false;
                }
            };
            if failed {
                break;
            }
            if tx.is_empty() && inner.strong_count() == 0 {
                return;
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

/// An outbox row as an event (`None` for a kind this build does not know).
fn decode(r: &tokio_postgres::Row) -> Option<Event> {
    let kind: &str = r.get(2);
    let id: Option<Uuid> = r.get(3);
    let user: Option<&str> = r.get(4);
    let reason: Option<&str> = r.get(5);
    let ids: Option<Vec<Uuid>> = r.get(6);
    let n: Option<i64> = r.get(7);
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
