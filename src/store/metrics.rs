//! A store's metrics: the one list of what it reports and under which name
//! ([`Stats::samples`]: gauges and counters, read from `Stats`), published through the
//! `metrics` facade ([`Store::publish_metrics`], cargo feature `metrics`; the reaper
//! thread publishes once per tick) or written as Prometheus text
//! ([`Stats::to_prometheus`], what `sessiondb stats --prometheus` prints), and the
//! histograms the store records as it goes ([`StoreMetrics`]).
//!
//! Names follow Prometheus's conventions: `sessiondb_` prefix, base units (seconds,
//! bytes), `_total` on counters; every series has the `store` label
//! ([`crate::Options::metrics_label`]). docs/observability.md has the table.

use std::fmt::Write as _;

use super::{Stats, Store};
use crate::util::metrics::{Histogram, StoreLabel};

/// A counter or a gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

/// One series a store reports: its name, kind, help text, extra label and value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) help: &'static str,
    /// A label besides `store` (`reason`, `cause`), if any.
    pub(crate) label: Option<(&'static str, &'static str)>,
    pub(crate) value: f64,
}

impl Stats {
    /// Every gauge and counter a store reports, with its current value.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        use Kind::{Counter, Gauge};
        let one = |name, kind, help, value: f64| Sample {
            name,
            kind,
            help,
            label: None,
            value,
        };
        let mut out = vec![
            one(
                "sessiondb_sessions_live",
                Gauge,
                "Sessions in the index (expired ones not yet reaped included).",
                self.sessions as f64,
            ),
            one(
                "sessiondb_sessions_authenticated",
                Gauge,
                "Sessions with a user bound.",
                self.authenticated as f64,
            ),
            one(
                "sessiondb_users",
                Gauge,
                "Users with at least one session.",
                self.users as f64,
            ),
            one(
                "sessiondb_resident_bytes",
                Gauge,
                "Estimated resident bytes of the sessions.",
                self.resident_bytes as f64,
            ),
            one(
                "sessiondb_log_disk_bytes",
                Gauge,
                "Bytes the store occupies on disk.",
                self.disk_bytes as f64,
            ),
            one(
                "sessiondb_log_dead_ratio",
                Gauge,
                "Estimated share of the disk bytes that compaction would reclaim.",
                self.dead_ratio,
            ),
            one(
                "sessiondb_log_poisoned",
                Gauge,
                "1 if the journal is poisoned: every write fails until the store reopens.",
                f64::from(u8::from(self.journal_poisoned)),
            ),
            one(
                "sessiondb_disk_full",
                Gauge,
                "1 while the disk is full and writes are refused.",
                f64::from(u8::from(self.disk_full)),
            ),
            one(
                "sessiondb_sessions_created_total",
                Counter,
                "Sessions created.",
                self.created as f64,
            ),
            one(
                "sessiondb_sessions_imported_total",
                Counter,
                "Sessions imported.",
                self.imported as f64,
            ),
            one(
                "sessiondb_sessions_rotated_total",
                Counter,
                "Token rotations (logins and step-ups included).",
                self.rotated as f64,
            ),
            one(
                "sessiondb_logins_total",
                Counter,
                "Users bound to sessions.",
                self.logins as f64,
            ),
        ];
        for (reason, n) in self.ended.iter() {
            out.push(Sample {
                name: "sessiondb_sessions_ended_total",
                kind: Counter,
                help: "Sessions ended, by reason.",
                label: Some(("reason", reason.label())),
                value: n as f64,
            });
        }
        for (cause, n) in [
            ("user_limit", self.user_limit_refusals),
            ("budget", self.budget_refusals),
            ("bad_input", self.bad_input_refusals),
        ] {
            out.push(Sample {
                name: "sessiondb_refusals_total",
                kind: Counter,
                help: "Calls refused, by cause.",
                label: Some(("cause", cause)),
                value: n as f64,
            });
        }
        out.extend([
            one(
                "sessiondb_events_dropped_total",
                Counter,
                "Events dropped because a subscriber's buffer was full.",
                self.events_dropped as f64,
            ),
            one(
                "sessiondb_log_records_total",
                Counter,
                "Records the log writer has written.",
                self.log_records as f64,
            ),
            one(
                "sessiondb_log_batches_total",
                Counter,
                "Write batches the log writer has written.",
                self.log_batches as f64,
            ),
            one(
                "sessiondb_log_syncs_total",
                Counter,
                "fsyncs of the log.",
                self.log_syncs as f64,
            ),
            one(
                "sessiondb_compactions_total",
                Counter,
                "Compactions since the store opened.",
                self.compactions as f64,
            ),
        ]);
        out
    }

    /// The gauges and counters in Prometheus's text exposition format, each series
    /// labelled `store="<store>"`: what `sessiondb stats --prometheus` prints, for a
    /// node exporter's textfile collector.
    pub fn to_prometheus(&self, store: &str) -> String {
        self.prometheus(store, true)
    }

    /// The gauges alone, as [`Stats::to_prometheus`] writes them: for a stopped store's
    /// directory (`sessiondb stats --prometheus`), whose counters would only count
    /// since the tool itself opened it.
    pub fn gauges_to_prometheus(&self, store: &str) -> String {
        self.prometheus(store, false)
    }

    fn prometheus(&self, store: &str, counters: bool) -> String {
        let store = escape(store);
        let mut out = String::new();
        let mut last = "";
        for s in self
            .samples()
            .into_iter()
            .filter(|s| counters || s.kind == Kind::Gauge)
        {
            if s.name != last {
                let kind = match s.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                };
                let _ = writeln!(out, "# HELP {} {}", s.name, s.help);
                let _ = writeln!(out, "# TYPE {} {kind}", s.name);
                last = s.name;
            }
            let extra = s
                .label
                .map(|(k, v)| format!(",{k}=\"{v}\""))
                .unwrap_or_default();
            let _ = writeln!(out, "{}{{store=\"{store}\"{extra}}} {}", s.name, s.value);
        }
        out
    }
}

/// A label value escaped for the text format (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The histograms a store records itself, registered when it opens.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct StoreMetrics {
    /// Seconds a write waited for its fsync under `Durability::Sync`.
    pub(crate) durability_wait_seconds: Histogram,
    /// Seconds one compaction took.
    pub(crate) compaction_seconds: Histogram,
    /// Bytes of the base one compaction wrote.
    pub(crate) compaction_bytes: Histogram,
    /// Seconds the open's recovery took.
    pub(crate) recovery_seconds: Histogram,
}

impl StoreMetrics {
    pub(crate) fn new(store: &StoreLabel) -> StoreMetrics {
        StoreMetrics {
            durability_wait_seconds: Histogram::new("sessiondb_durability_wait_seconds", store),
            compaction_seconds: Histogram::new("sessiondb_compaction_seconds", store),
            compaction_bytes: Histogram::new("sessiondb_compaction_bytes", store),
            recovery_seconds: Histogram::new("sessiondb_recovery_seconds", store),
        }
    }
}

impl Store {
    /// Hands every gauge and counter to the `metrics` facade, at its current value
    /// (counters as their totals since the store opened): the store keeps them itself,
    /// per shard, and sums them here. The reaper thread calls it once per
    /// [`crate::Options::reaper_interval`]; an app that serves `/metrics` may call it
    /// just before rendering, so a scrape sees this instant's values. Install the
    /// recorder before opening the store (its histograms register at open).
    #[cfg(feature = "metrics")]
    pub fn publish_metrics(&self) {
        self.inner.publish_metrics();
    }
}

impl super::Inner {
    #[cfg(feature = "metrics")]
    pub(super) fn publish_metrics(&self) {
        use crate::util::metrics::{counter, gauge};
        let label = &self.opts.metrics_label;
        for s in self.stats().samples() {
            match (s.kind, s.label) {
                (Kind::Gauge, _) => gauge(s.name, label, s.value),
                (Kind::Counter, None) => counter(s.name, label, &[], s.value as u64),
                (Kind::Counter, Some(l)) => counter(s.name, label, &[l], s.value as u64),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_a_help_and_type_per_name_and_every_series_labelled() {
        let st = Stats {
            sessions: 3,
            ..Stats::default()
        };
        let text = st.to_prometheus("web\"1");
        assert!(text.contains("# TYPE sessiondb_sessions_live gauge\n"));
        assert!(text.contains("sessiondb_sessions_live{store=\"web\\\"1\"} 3\n"));
        assert_eq!(
            text.matches("# TYPE sessiondb_sessions_ended_total counter")
                .count(),
            1
        );
        assert!(text.contains(
            "sessiondb_sessions_ended_total{store=\"web\\\"1\",reason=\"revoked_by_other_session\"} 0"
        ));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.starts_with("sessiondb_") && line.contains("{store="),
                "{line}"
            );
        }
    }
}
