//! `--metrics`: the store's gauges, counters and histograms (sessiondb's cargo feature
//! `metrics`) rendered for Prometheus at `GET /metrics`, to loopback peers only unless
//! `--metrics-public`.
//!
//! The recorder is process-global (the `metrics` facade has one), so it is installed
//! once, by [`recorder`], and every app in the process (the tests start many) renders
//! through the same handle; each store's series carry its own `store` label
//! ([`crate::Config::metrics_label`]). Call [`recorder`] **before opening the store**:
//! the store registers its histograms when it opens, and a store opened earlier keeps
//! no-op handles (its gauges and counters, published at each scrape, still show).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// The Content-Type of Prometheus's text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4";

/// How often the recorder's histograms are drained into their summaries when nobody
/// scrapes (a scrape drains them too), so they do not grow without bound.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder: installed as the `metrics` facade's global
/// recorder on the first call (with a thread that runs its upkeep), the same handle on
/// every later one.
///
/// # Errors
/// A message if another recorder was installed first (not by this function): the
/// facade takes one per process.
pub fn recorder() -> Result<PrometheusHandle, String> {
    static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                })
                .map_err(|e| format!("cannot start the metrics upkeep thread: {e}"))?;
            Ok(handle)
        })
        .clone()
}

/// Whether a request may read `/metrics`: with `public` any may; otherwise only one
/// whose peer (the connection's, as `axum::serve` with
/// `into_make_service_with_connect_info::<SocketAddr>()` records it) is a loopback
/// address and that did not come through a proxy. A reverse proxy on the same machine
/// connects from loopback too, so a request carrying `Forwarded` or `X-Forwarded-For`
/// is refused: the internet does not get the metrics through it. Without a recorded
/// peer, refused.
pub fn allowed(peer: Option<SocketAddr>, headers: &HeaderMap, public: bool) -> bool {
    if public {
        return true;
    }
    let proxied = headers.contains_key("forwarded") || headers.contains_key("x-forwarded-for");
    let loopback = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
    loopback && !proxied
}

/// `GET /metrics` (with `--metrics`): publishes the store's current values to the
/// recorder, then renders every series in Prometheus's text format. 403 to a peer that
/// [`allowed`] refuses.
pub async fn serve(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
) -> Response {
    let Some(handle) = &state.metrics else {
        return crate::routes::not_found().await;
    };
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    if !allowed(peer, &headers, state.config.metrics_public) {
        return (
            StatusCode::FORBIDDEN,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            "/metrics is served to loopback only (--metrics-public serves it to anyone)\n",
        )
            .into_response();
    }
    // The scrape sees this instant's values. If Redis or PostgreSQL is unreachable the
    // live gauge keeps its last value; the failure is printed (the store counts its
    // failed calls: sessiondb_redis_errors_total, sessiondb_postgres_errors_total) and
    // the rest still renders.
    if let Err(e) = state.store.publish_metrics().await {
        eprintln!("sessiondb-axum-app: metrics: {e}");
    }
    ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], handle.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_a_loopback_peer_not_behind_a_proxy_reads_the_metrics_unless_public() {
        let none = HeaderMap::new();
        let peer = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        for p in [
            "127.0.0.1:5000",
            "127.8.9.10:1",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(allowed(peer(p), &none, false), "{p}");
        }
        for p in [
            "192.0.2.7:5000",
            "10.0.0.1:80",
            "[2001:db8::1]:443",
            "0.0.0.0:1",
        ] {
            assert!(!allowed(peer(p), &none, false), "{p}");
            assert!(allowed(peer(p), &none, true), "public: {p}");
        }
        assert!(!allowed(None, &none, false), "no peer recorded");
        assert!(allowed(None, &none, true));
        for name in ["x-forwarded-for", "forwarded"] {
            let mut proxied = HeaderMap::new();
            proxied.insert(name, HeaderValue::from_static("for=203.0.113.9"));
            assert!(!allowed(peer("127.0.0.1:5000"), &proxied, false), "{name}");
            assert!(allowed(peer("127.0.0.1:5000"), &proxied, true), "{name}");
        }
    }
}
