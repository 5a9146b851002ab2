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
}

/// The per-hook outcome counters, cloned into each hook.
#[derive(Clone, Debug, Default)]
pub struct HookCounters {
    pub accepted: Counter,
    pub duplicate: Counter,
    pub ignored: Counter,
    pub unauthorized: Counter,
    pub bad_request: Counter,
    pub too_large: Counter,
    pub unavailable: Counter,
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
        }
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
            unauthorized: get("unauthorized"),
            bad_request: get("bad_request"),
            too_large: get("too_large"),
            unavailable: get("unavailable"),
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
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
            out.push_str("# metrics encoding failed\n");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
