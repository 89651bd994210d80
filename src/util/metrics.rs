//! Metrics through the `metrics` facade (cargo feature `metrics`): the histograms the
//! writer, the sync thread and the compactor record as they go, and the absolute
//! values a publish hands over (counters and gauges the store keeps itself, per shard,
//! summed when published — never one contended atomic on a request's path). Without
//! the feature every type here is empty and every call does nothing, so it costs
//! nothing.
//!
//! Each handle is registered once, with the store's `store` label, when the store
//! opens: with no recorder installed by then the facade hands out no-op handles, and a
//! record is a call that returns.

use std::sync::Arc;

/// A histogram handle (a no-op without the feature, or without a recorder).
#[derive(Clone)]
pub(crate) struct Histogram {
    #[cfg(feature = "metrics")]
    inner: metrics::Histogram,
}

impl Histogram {
    /// The histogram `name` of the store labelled `store`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(name: &'static str, store: &StoreLabel) -> Histogram {
        Histogram {
            #[cfg(feature = "metrics")]
            inner: metrics::histogram!(name, "store" => store.0.to_string()),
        }
    }

    /// Records one value.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn record(&self, value: f64) {
        #[cfg(feature = "metrics")]
        self.inner.record(value);
    }
}

/// A store's `store` label ([`crate::Options::metrics_label`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoreLabel(pub(crate) Arc<str>);

impl Default for StoreLabel {
    fn default() -> StoreLabel {
        StoreLabel("default".into())
    }
}

/// Hands the facade a counter's total so far (`labels` besides `store`).
#[cfg(feature = "metrics")]
pub(crate) fn counter(
    name: &'static str,
    store: &StoreLabel,
    labels: &[(&'static str, &'static str)],
    total: u64,
) {
    let mut all: Vec<metrics::Label> = vec![metrics::Label::new("store", store.0.to_string())];
    all.extend(labels.iter().map(|(k, v)| metrics::Label::new(*k, *v)));
    metrics::counter!(name, all).absolute(total);
}

/// Hands the facade a gauge's value.
#[cfg(feature = "metrics")]
pub(crate) fn gauge(name: &'static str, store: &StoreLabel, value: f64) {
    metrics::gauge!(name, "store" => store.0.to_string()).set(value);
}

/// Shared between the store and its journal: the histograms recorded off the request
/// path, registered once.
#[derive(Clone)]
pub(crate) struct JournalMetrics {
    /// Seconds one fsync of the log took.
    pub(crate) fsync_seconds: Histogram,
    /// Records in one write batch.
    pub(crate) batch_records: Histogram,
}

impl JournalMetrics {
    /// Whether there is anything to record to (the feature is on).
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        cfg!(feature = "metrics")
    }

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn new(store: &StoreLabel) -> JournalMetrics {
        JournalMetrics {
            fsync_seconds: Histogram::new("sessiondb_log_fsync_seconds", store),
            batch_records: Histogram::new("sessiondb_log_batch_records", store),
        }
    }
}
