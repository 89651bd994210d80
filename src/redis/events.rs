//! Events across nodes: reading the store's Redis stream (`<prefix>:e`) after a
//! subscription's starting point, on a connection of its own, and decoding its entries
//! into [`Event`]s for the subscriber's channel.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Client, Conn, Inner};
use crate::model::event::{EndReason, Event};
use crate::model::session::UserId;
use crate::model::token::SessionId;

/// Reads the event stream from after entry `from` into `tx` until the receiver or the
/// store is gone. Uses its own connection: a blocking XREAD would hold up every other
/// call on the shared one.
pub(super) async fn read_events(inner: Weak<Inner>, tx: Sender<Event>, mut from: String) {
    let mut conn: Option<Conn> = None;
    loop {
        let Some(store) = inner.upgrade() else { return };
        let (key, dropped) = (store.events_key.clone(), store.dropped.clone());
        #[cfg(feature = "metrics")]
        let label = store.opts.metrics_label.0.to_string();
        if conn.is_none() {
            conn = subscriber_connection(&store.client).await;
        }
        drop(store);
        let Some(c) = conn.as_ref() else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(512)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&key)
            .arg(&from);
        let entries = match c.query(&cmd).await {
            Ok(v) => stream_entries(v),
            Err(_) => {
                // Reconnect and resume after the last entry read.
                #[cfg(feature = "metrics")]
                metrics::counter!("sessiondb_redis_reconnects_total", "store" => label)
                    .increment(1);
                conn = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        #[cfg(feature = "metrics")]
        let lag = metrics::histogram!("sessiondb_redis_event_lag_seconds", "store" => label);
        for (id, fields) in entries {
            // An entry's id starts with the server's time of the XADD, in ms: how far
            // behind this subscriber reads (this host's clock against the server's).
            #[cfg(feature = "metrics")]
            if let Some(ms) = id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                lag.record(now.saturating_sub(ms) as f64 / 1000.0);
            }
            from = id;
            let Some(ev) = decode_event(&fields) else {
                continue;
            };
            match tx.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// A subscriber's own connection, with a response timeout longer than its XREAD's
/// block; `None` if the server cannot be reached now.
async fn subscriber_connection(client: &Client) -> Option<Conn> {
    match client {
        Client::Single(client) => ConnectionManager::new_with_config(
            client.clone(),
            ConnectionManagerConfig::new()
                .set_response_timeout(Some(Duration::from_secs(5)))
                .set_connection_timeout(Some(Duration::from_secs(5))),
        )
        .await
        .ok()
        .map(Conn::Single),
        Client::Cluster(client) => client.get_async_connection().await.ok().map(Conn::Cluster),
    }
}

/// (entry id, field/value pairs) of an XREAD reply (empty on a timeout).
fn stream_entries(v: Value) -> Vec<(String, Vec<(String, String)>)> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut out = Vec::new();
    let Value::Array(streams) = v else {
        return out;
    };
    for stream in streams {
        let Value::Array(parts) = stream else {
            continue;
        };
        let Some(Value::Array(entries)) = parts.get(1) else {
            continue;
        };
        for entry in entries {
            let Value::Array(e) = entry else { continue };
            let (Some(id), Some(Value::Array(kv))) = (e.first().and_then(text), e.get(1)) else {
                continue;
            };
            let fields = kv
                .chunks(2)
                .filter_map(|p| Some((text(p.first()?)?, text(p.get(1)?)?)))
                .collect();
            out.push((id, fields));
        }
    }
    out
}

pub(super) fn decode_event(fields: &[(String, String)]) -> Option<Event> {
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    let id = || {
        get("id")
            .and_then(|h| u128::from_str_radix(h, 16).ok())
            .map(SessionId)
    };
    let user = || get("u").filter(|u| !u.is_empty()).map(UserId::trusted);
    Some(match get("k")? {
        "created" => Event::Created {
            session: id()?,
            user: user(),
        },
        "ended" => Event::Ended {
            session: id()?,
            user: user(),
            reason: match get("r")? {
                "ended" => EndReason::Ended,
                "expired" => EndReason::Expired,
                "revoked" => EndReason::Revoked,
                "limit" => EndReason::LimitExceeded,
                "evicted" => EndReason::Evicted,
                "revoked_others" => EndReason::RevokedByOtherSession,
                _ => return None,
            },
        },
        "revoked" => Event::UserRevoked {
            user: user()?,
            sessions: get("ids")?
                .split(',')
                .filter(|s| !s.is_empty())
                .filter_map(|h| u128::from_str_radix(h, 16).ok().map(SessionId))
                .collect(),
        },
        "rotated" => Event::Rotated { session: id()? },
        "bound" => Event::UserBound {
            session: id()?,
            user: user()?,
        },
        "unbound" => Event::UserUnbound {
            session: id()?,
            user: user()?,
        },
        "cleared" => Event::Cleared {
            sessions: get("n")?.parse().ok()?,
        },
        _ => return None,
    })
}
