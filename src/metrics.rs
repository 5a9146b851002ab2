//! Counters and histograms, exposed at /metrics in the Prometheus text
//! format by the `prometheus-client` crate (the maintained implementation of
//! the exposition format, so we do not hand-write escaping and histograms).
//!
//! Per-hook counters are created once when a hook is built and kept in the
//! hook, so the request path does no label hashing.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    hook_requests: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    pub request_seconds: Histogram,
    pub store_commits: Counter,
    pub store_errors: Counter,
    pub store_batch_size: Histogram,
    pub store_commit_seconds: Histogram,
    pub queue_depth: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub store_up: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub reloads: Family<Labels, Counter>,
    pub accepted_total: Counter<u64, AtomicU64>,
    pub duplicate_total: Counter<u64, AtomicU64>,
    pub rejected_total: Counter<u64, AtomicU64>,
    pub ignored_total: Counter<u64, AtomicU64>,
    deliveries: Family<Labels, Counter>,
    action_deliveries: Family<Labels, Counter>,
    /// Deliveries per (hook, action) by state (pending, delivering, dead).
    pub action_queue: Family<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub delivery_seconds: Histogram,
    pub delivery_latency_seconds: Histogram,
    pub events: Family<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub deliveries_in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub breaker_state: Family<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub retention_deleted: Counter,
    /// The HTTPS listener's certificate's notAfter (Unix seconds), 0 without TLS.
    pub tls_expiry: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Attempts that delivered, and that failed (retry or dead letter), all
    /// hooks together: unregistered totals for the console's chart.
    pub delivered_total: Counter<u64, AtomicU64>,
    pub failed_total: Counter<u64, AtomicU64>,
    /// Events the database refused on their own (the rest of the batch
    /// was stored).
    pub store_refused: Counter,
    /// Spooled events the database refused, set aside in the spool file.
    pub spool_rejected: Counter,
    pub spool_events: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub spool_capacity: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub writer_stall_seconds: Gauge<f64, AtomicU64>,
    pub ready: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub last_reload_ok: Gauge<i64, std::sync::atomic::AtomicI64>,
}

/// The per-hook outcome counters, cloned into each hook.
#[derive(Clone, Debug, Default)]
pub struct HookCounters {
    pub accepted: Counter,
    pub duplicate: Counter,
    pub ignored: Counter,
    /// Verified requests that the hook's payload rule did not match.
    pub rule_mismatch: Counter,
    /// Endpoint checks answered by `[hooks.handshake]`.
    pub handshake: Counter,
    pub unauthorized: Counter,
    pub bad_request: Counter,
    pub too_large: Counter,
    pub unavailable: Counter,
    pub rate_limited: Counter,
    pub forbidden: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("webhookd");
        let hook_requests = Family::<Labels, Counter>::default();
        registry.register(
            "hook_requests",
            "Deliveries received per hook, by outcome",
            hook_requests.clone(),
        );
        let rejected = Family::<Labels, Counter>::default();
        registry.register(
            "requests_rejected",
            "Requests refused before reaching a hook, by reason",
            rejected.clone(),
        );
        let request_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "hook_request_duration_seconds",
            "Time from request to response for POST /hooks/{id}",
            request_seconds.clone(),
        );
        let store_commits = Counter::default();
        registry.register(
            "store_commits",
            "Transactions committed by the store writers (each holds a batch of events)",
            store_commits.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Store batches that failed",
            store_errors.clone(),
        );
        let store_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "store_batch_size",
            "Events per committed transaction (group commit)",
            store_batch_size.clone(),
        );
        let store_commit_seconds = Histogram::new(exponential_buckets(0.0002, 2.0, 14));
        registry.register(
            "store_commit_duration_seconds",
            "Time to write and commit one batch",
            store_commit_seconds.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "store_queue_depth",
            "Events waiting for a store writer",
            queue_depth.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "1 when the store is reachable, 0 otherwise",
            store_up.clone(),
        );
        let reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            reloads.clone(),
        );
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts per hook by result (done, retry, dead)",
            deliveries.clone(),
        );
        let action_deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "action_deliveries",
            "Delivery attempts per hook and action by result (done, retry, dead)",
            action_deliveries.clone(),
        );
        let action_queue = Family::<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        registry.register(
            "action_queue",
            "Deliveries in the store per hook and action by state (pending, delivering, dead)",
            action_queue.clone(),
        );
        let delivery_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "delivery_attempt_duration_seconds",
            "Time one forward or exec attempt took",
            delivery_seconds.clone(),
        );
        let delivery_latency_seconds = Histogram::new(exponential_buckets(0.001, 4.0, 14));
        registry.register(
            "delivery_latency_seconds",
            "Time from receipt to successful delivery",
            delivery_latency_seconds.clone(),
        );
        let events = Family::<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        registry.register(
            "events",
            "Events in the store by state (pending and delivering make the queue; dead are dead letters)",
            events.clone(),
        );
        let deliveries_in_flight = Gauge::default();
        registry.register(
            "deliveries_in_flight",
            "Deliveries running in this instance",
            deliveries_in_flight.clone(),
        );
        let breaker_state = Family::<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        registry.register(
            "breaker_state",
            "Circuit breaker per target: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        let retention_deleted = Counter::default();
        registry.register(
            "retention_deleted",
            "Events deleted by retention",
            retention_deleted.clone(),
        );
        let store_refused = Counter::default();
        registry.register(
            "store_refused",
            "Events the database refused on their own (answered 500; the other events of their batch were stored)",
            store_refused.clone(),
        );
        let spool_rejected = Counter::default();
        registry.register(
            "spool_rejected",
            "Spooled events the database refused, set aside in the spool file's spool_rejected table",
            spool_rejected.clone(),
        );
        let spool_events = Gauge::default();
        registry.register(
            "spool_events",
            "Deliveries waiting in the local spool for PostgreSQL to answer again",
            spool_events.clone(),
        );
        let spool_capacity = Gauge::default();
        registry.register(
            "spool_capacity_events",
            "Most events the spool holds (store.spool_max_events); 0 without a spool",
            spool_capacity.clone(),
        );
        let writer_stall_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "store_writer_stall_seconds",
            "How long the slowest store writer has been inside its current batch (the watchdog stops at store.stall_timeout)",
            writer_stall_seconds.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when /readyz answers 200 (store reachable or spooling, not draining, every hook usable)",
            ready.clone(),
        );
        let tls_expiry = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the HTTPS listener's certificate expires (Unix time); 0 without [server.tls]",
            tls_expiry.clone(),
        );
        let last_reload_ok = Gauge::default();
        last_reload_ok.set(1);
        registry.register(
            "config_last_reload_successful",
            "0 when the last reload was refused (the previous configuration keeps serving)",
            last_reload_ok.clone(),
        );
        let start_time = Gauge::<f64, AtomicU64>::default();
        start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
        registry.register(
            "start_time_seconds",
            "When this process started, in seconds since the Unix epoch",
            start_time,
        );
        let build_info = Family::<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        build_info
            .get_or_create(&vec![
                ("version".to_string(), crate::VERSION.to_string()),
                ("commit".to_string(), crate::GIT_COMMIT.to_string()),
            ])
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the labels say which webhookd this is",
            build_info,
        );
        let accepted_total = Counter::default();
        let duplicate_total = Counter::default();
        let rejected_total = Counter::default();
        let ignored_total = Counter::default();
        Metrics {
            registry,
            hook_requests,
            rejected,
            request_seconds,
            store_commits,
            store_errors,
            store_batch_size,
            store_commit_seconds,
            queue_depth,
            store_up,
            reloads,
            accepted_total,
            duplicate_total,
            rejected_total,
            ignored_total,
            deliveries,
            action_deliveries,
            action_queue,
            delivery_seconds,
            delivery_latency_seconds,
            events,
            deliveries_in_flight,
            breaker_state,
            retention_deleted,
            tls_expiry,
            delivered_total: Counter::default(),
            failed_total: Counter::default(),
            store_refused,
            spool_rejected,
            spool_events,
            spool_capacity,
            writer_stall_seconds,
            ready,
            last_reload_ok,
        }
    }

    pub fn delivery_result(&self, hook: &str, result: &str) {
        if result == "done" {
            self.delivered_total.inc();
        } else {
            self.failed_total.inc();
        }
        self.deliveries
            .get_or_create(&vec![
                ("hook".to_string(), hook.to_string()),
                ("result".to_string(), result.to_string()),
            ])
            .inc();
    }

    /// A gauge of a labelled family, set.
    /// One attempt's result for (hook, action); both ids come from the
    /// config, so the label values are bounded.
    pub fn action_result(&self, hook: &str, action: &str, result: &str) {
        self.action_deliveries
            .get_or_create(&vec![
                ("hook".to_string(), hook.to_string()),
                ("action".to_string(), action.to_string()),
                ("result".to_string(), result.to_string()),
            ])
            .inc();
    }

    pub fn set_labeled(
        family: &Family<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>,
        key: &str,
        value: &str,
        v: i64,
    ) {
        family
            .get_or_create(&vec![(key.to_string(), value.to_string())])
            .set(v);
    }

    /// Counters for one hook (shared with any earlier hook of the same id,
    /// so a reload does not reset them).
    pub fn hook_counters(&self, hook: &str) -> HookCounters {
        let get = |outcome: &str| {
            self.hook_requests
                .get_or_create(&vec![
                    ("hook".to_string(), hook.to_string()),
                    ("outcome".to_string(), outcome.to_string()),
                ])
                .clone()
        };
        HookCounters {
            accepted: get("accepted"),
            duplicate: get("duplicate"),
            ignored: get("ignored"),
            rule_mismatch: get("rule_mismatch"),
            handshake: get("handshake"),
            unauthorized: get("unauthorized"),
            bad_request: get("bad_request"),
            too_large: get("too_large"),
            unavailable: get("unavailable"),
            rate_limited: get("rate_limited"),
            forbidden: get("forbidden"),
        }
    }

    /// Count a request refused before a hook was found.
    pub fn reject(&self, reason: &'static str) {
        self.rejected_total.inc();
        self.rejected
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    pub fn reload(&self, result: &'static str) {
        self.reloads
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
        self.last_reload_ok.set(i64::from(result == "ok"));
    }

    /// The OpenMetrics exposition (what Prometheus asks for).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
            out.push_str("# metrics encoding failed\n");
        }
        out
    }

    /// The classic Prometheus text format (0.0.4), for everything that does
    /// not ask for OpenMetrics: curl, `promtool check metrics`, older scrapers.
    pub fn render_text(&self) -> String {
        openmetrics_to_text(&self.render())
    }
}

/// OpenMetrics to Prometheus text 0.0.4: a counter family `x` has samples
/// `x_total`, which the old format wants under `# HELP/TYPE x_total`; the
/// `# EOF` terminator and `# UNIT` lines do not exist there.
pub fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 256);
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{kind}{name}_total {tail}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counter_families_by_their_samples() {
        let m = Metrics::new();
        m.reload("refused");
        let om = m.render();
        assert!(om.contains("# TYPE webhookd_config_reloads counter"));
        assert!(om.trim_end().ends_with("# EOF"));
        let text = m.render_text();
        assert!(text.contains("# TYPE webhookd_config_reloads_total counter"));
        assert!(text.contains("# HELP webhookd_config_reloads_total "));
        assert!(text.contains("webhookd_config_reloads_total{result=\"refused\"} 1"));
        assert!(text.contains("# TYPE webhookd_store_up gauge"));
        assert!(text.contains("webhookd_config_last_reload_successful 0"));
        assert!(text.contains("webhookd_build_info{version=\""));
        assert!(!text.contains("# EOF"));
    }
}
