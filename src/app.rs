//! The daemon's shared state: the live configuration (swapped atomically on
//! reload), the store and its writer, metrics, and what /status reports.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use serde_json::json;

use crate::config::DeliveryConfig;
use crate::config::{Config, ConfigError, Invalid, Secret};
use crate::deliver::{build_action, DeliveryState, Route};
use crate::metrics::{HookCounters, Metrics};
use crate::store::writer::Writer;
use crate::store::Store;
use crate::verify::Scheme;

/// A hook ready to serve requests.
#[derive(Debug)]
pub struct Hook {
    pub id: String,
    pub scheme: Scheme,
    pub secrets: Vec<Secret>,
    /// Why this hook cannot verify anything (e.g. its secret file is missing).
    pub problem: Option<String>,
    pub events: Option<HashSet<String>>,
    pub body_limit: u64,
    pub counters: HookCounters,
    /// IP allowlist and rate limit (src/rules.rs).
    pub rules: crate::rules::HookRules,
    /// What the dispatcher does with this hook's events (None: store only).
    pub route: Option<Arc<Route>>,
}

/// A configuration with its secrets resolved; replaced whole on reload so a
/// request sees either the old hooks and secrets or the new ones, never a mix.
#[derive(Debug)]
pub struct Live {
    pub config: Config,
    pub hooks: HashMap<String, Arc<Hook>>,
    pub loaded_at: SystemTime,
    /// `server.trusted_proxies`, parsed.
    pub proxies: crate::rules::Proxies,
}

impl Live {
    /// Resolve secrets and build hooks. With `strict`, any unreadable secret
    /// fails the whole build (reload, check-config); otherwise the hook is
    /// kept but marked unusable (startup: the daemon still starts, says what
    /// is missing, and serves the other hooks).
    pub fn build(config: Config, metrics: &Metrics, strict: bool) -> Result<Live, Invalid> {
        let mut hooks = HashMap::with_capacity(config.hooks.len());
        for h in &config.hooks {
            let (scheme, rules) = crate::check::hook_parts(h).map_err(|e| e.in_hook(&h.id))?;
            let mut secrets = Vec::with_capacity(h.secrets.len());
            let mut errors = Vec::new();
            for r in &h.secrets {
                let prepared = r.resolve().map_err(|e| e.to_string()).and_then(|s| {
                    scheme
                        .prepare_secret(s)
                        .map_err(|m| format!("secret {r} {m}"))
                });
                match prepared {
                    Ok(s) => secrets.push(s),
                    Err(e) => errors.push(e),
                }
            }
            if strict && !errors.is_empty() {
                return Err(Invalid::new("", errors.join("; ")).in_hook(&h.id));
            }
            let mut problem = if secrets.is_empty() {
                Some(format!("no usable secret ({})", errors.join("; ")))
            } else {
                None
            };
            let action = match h
                .action
                .as_ref()
                .map(|a| build_action(a, config.delivery.output_limit))
            {
                None => None,
                Some(Ok(a)) => Some(a),
                Some(Err(e)) if strict => return Err(Invalid::new("", e).in_hook(&h.id)),
                Some(Err(e)) => {
                    problem.get_or_insert(e);
                    None
                }
            };
            if !errors.is_empty() && !secrets.is_empty() {
                log::warn!(
                    "hook {}: {} of {} secrets unusable: {}",
                    h.id,
                    errors.len(),
                    h.secrets.len(),
                    errors.join("; ")
                );
            }
            hooks.insert(
                h.id.clone(),
                Arc::new(Hook {
                    id: h.id.clone(),
                    scheme,
                    secrets,
                    problem,
                    events: h.events.as_ref().map(|v| v.iter().cloned().collect()),
                    body_limit: h.body_limit.unwrap_or(config.server.body_limit),
                    counters: metrics.hook_counters(&h.id),
                    rules,
                    route: action.map(|action| {
                        Arc::new(Route {
                            hook_id: h.id.clone(),
                            action,
                            retry: h.retry.clone(),
                            breaker: h.breaker.clone(),
                        })
                    }),
                }),
            );
        }
        let proxies = crate::rules::Proxies::parse(&config.server.trusted_proxies)
            .map_err(|e| Invalid::new(e.key, e.message))?;
        Ok(Live {
            proxies,
            config,
            hooks,
            loaded_at: SystemTime::now(),
        })
    }
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Hooks(#[from] Invalid),
}

pub struct App {
    live: RwLock<Arc<Live>>,
    pub config_path: PathBuf,
    pub store: Arc<dyn Store>,
    pub writer: Arc<Writer>,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub started_at: SystemTime,
    pub draining: AtomicBool,
    /// When the last reload ran, and why it was refused (None: it worked).
    last_reload: Mutex<Option<(SystemTime, Option<String>)>>,
    pub tunnel_url: Mutex<Option<String>>,
    /// Hook requests in flight, against `server.max_in_flight`.
    pub in_flight: crate::rules::InFlight,
    pub delivery: DeliveryState,
}

impl App {
    pub fn new(
        live: Live,
        config_path: PathBuf,
        store: Arc<dyn Store>,
        writer: Arc<Writer>,
        metrics: Arc<Metrics>,
    ) -> App {
        App {
            live: RwLock::new(Arc::new(live)),
            config_path,
            store,
            writer,
            metrics,
            started: Instant::now(),
            started_at: SystemTime::now(),
            draining: AtomicBool::new(false),
            last_reload: Mutex::new(None),
            tunnel_url: Mutex::new(None),
            in_flight: Default::default(),
            delivery: DeliveryState::default(),
        }
    }

    /// The current configuration (cheap: an Arc clone under a read lock).
    pub fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Log what is wrong with hooks that cannot serve.
    pub fn log_hook_problems(&self) {
        for h in self.live().hooks.values() {
            if let Some(p) = &h.problem {
                log::error!(
                    "hook {}: {p}; POST /hooks/{} answers 503 until this is fixed and the config reloaded",
                    h.id,
                    h.id
                );
            }
        }
    }

    /// Re-read the config file. On any error the running config stays.
    pub fn reload(&self) -> Result<Vec<String>, ReloadError> {
        let result = self.try_reload();
        if let Ok(mut g) = self.last_reload.lock() {
            *g = Some((
                SystemTime::now(),
                result.as_ref().err().map(ToString::to_string),
            ));
        }
        self.metrics
            .reload(if result.is_ok() { "ok" } else { "refused" });
        result
    }

    fn try_reload(&self) -> Result<Vec<String>, ReloadError> {
        let config = Config::load(&self.config_path)?;
        let new = Live::build(config, &self.metrics, true)?;
        let old = self.live();
        let mut notes = Vec::new();
        let (o, n) = (&old.config, &new.config);
        if o.store.url != n.store.url
            || o.store.writers != n.store.writers
            || o.store.queue_capacity != n.store.queue_capacity
            || o.store.pool_size != n.store.pool_size
        {
            notes.push("[store] changes take effect after a restart".to_string());
        }
        if o.server.listen != n.server.listen || o.server.admin_listen != n.server.admin_listen {
            notes.push("listen address changes take effect after a restart".to_string());
        }
        if o.log.target != n.log.target {
            notes.push("log.target changes take effect after a restart".to_string());
        }
        crate::systemd::journal::set_level(n.log.level);
        match self.live.write() {
            Ok(mut g) => *g = Arc::new(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
        }
        Ok(notes)
    }

    /// Reasons we should not receive traffic; empty when ready.
    pub fn readiness_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.draining.load(Ordering::Acquire) {
            p.push("draining: shutting down".to_string());
        }
        let st = &self.writer.status;
        // With a spool we still accept deliveries during an outage.
        if !st.available() && self.writer.spool.is_none() {
            p.push(format!(
                "store unreachable: {}",
                st.last_error().unwrap_or_else(|| "unknown error".into())
            ));
        }
        let live = self.live();
        let mut ids: Vec<_> = live.hooks.keys().collect();
        ids.sort();
        for id in ids {
            if let Some(problem) = live.hooks.get(id).and_then(|h| h.problem.as_ref()) {
                p.push(format!("hook {id}: {problem}"));
            }
        }
        p
    }

    /// Events waiting in the spool (0 without one).
    pub fn spooled(&self) -> usize {
        self.writer.spool.as_ref().map(|s| s.len()).unwrap_or(0)
    }

    pub fn store_state(&self) -> String {
        let spooled = self.spooled();
        match (self.writer.status.available(), spooled) {
            (true, 0) => "ok".into(),
            (false, 0) => "unavailable".into(),
            (_, n) => format!("spooling ({n} events)"),
        }
    }

    /// Copy live values into gauges before /metrics is rendered.
    pub fn refresh_gauges(&self) {
        use crate::metrics::Metrics as M;
        let m = &self.metrics;
        m.queue_depth
            .set(self.writer.status.queue_depth.load(Ordering::Relaxed) as i64);
        m.store_up.set(i64::from(self.writer.status.available()));
        let c = self.delivery.counts();
        M::set_labeled(&m.events, "state", "pending", c.pending);
        M::set_labeled(&m.events, "state", "delivering", c.delivering);
        M::set_labeled(&m.events, "state", "dead", c.dead);
        m.deliveries_in_flight
            .set(self.delivery.inflight_total.load(Ordering::Relaxed) as i64);
        for (target, state) in self.delivery.breakers.snapshot(Instant::now()) {
            let v = match state {
                crate::deliver::breaker::State::Closed => 0,
                crate::deliver::breaker::State::HalfOpen => 1,
                crate::deliver::breaker::State::Open => 2,
            };
            M::set_labeled(&m.breaker_state, "target", &target, v);
        }
    }

    /// The STATUS= line systemd shows in `systemctl status`.
    pub fn status_line(&self) -> String {
        let m = &self.metrics;
        let draining = if self.draining.load(Ordering::Acquire) {
            "draining; "
        } else {
            ""
        };
        let c = self.delivery.counts();
        format!(
            "{draining}accepted {}, duplicates {}, rejected {}; store {} {}; queue {} pending, {} delivering, {} dead",
            m.accepted_total.get(),
            m.duplicate_total.get(),
            m.rejected_total.get(),
            self.store.kind(),
            self.store_state(),
            c.pending,
            c.delivering,
            c.dead,
        )
    }

    /// The /status document. Never contains a secret: hooks list only ids,
    /// schemes and problems (which name where a secret was looked for).
    pub fn status_json(&self) -> serde_json::Value {
        let live = self.live();
        let mut hooks: Vec<_> = live
            .hooks
            .values()
            .map(|h| {
                json!({
                    "id": h.id,
                    "scheme": h.scheme.name(),
                    "secrets": h.secrets.len(),
                    "ready": h.problem.is_none(),
                    "problem": h.problem,
                    "action": h.route.as_ref().map(|r| r.action.target.clone()),
                    "accepted": h.counters.accepted.get(),
                    "duplicates": h.counters.duplicate.get(),
                })
            })
            .collect();
        hooks.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        let m = &self.metrics;
        let last_reload = self.last_reload.lock().ok().and_then(|g| {
            g.as_ref().map(|(t, r)| {
                json!({
                    "at": humantime::format_rfc3339_seconds(*t).to_string(),
                    "ok": r.is_none(),
                    "error": r,
                })
            })
        });
        let problems = self.readiness_problems();
        json!({
            "version": crate::VERSION,
            "pid": std::process::id(),
            "started_at": humantime::format_rfc3339_seconds(self.started_at).to_string(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "ready": problems.is_empty(),
            "problems": problems,
            "draining": self.draining.load(Ordering::Acquire),
            "config": {
                "path": self.config_path.display().to_string(),
                "loaded_at": humantime::format_rfc3339_seconds(live.loaded_at).to_string(),
                "last_reload": last_reload,
            },
            "counters": {
                "accepted": m.accepted_total.get(),
                "duplicates": m.duplicate_total.get(),
                "rejected": m.rejected_total.get(),
                "ignored": m.ignored_total.get(),
                "store_commits": m.store_commits.get(),
            },
            "store": {
                "kind": self.store.kind(),
                "state": self.store_state(),
                "queue_depth": self.writer.status.queue_depth.load(Ordering::Relaxed),
                "spooled": self.spooled(),
                "last_error": self.writer.status.last_error(),
            },
            "hooks": hooks,
            "delivery": {
                "in_flight": self.delivery.inflight_total.load(Ordering::Relaxed),
                "pending": self.delivery.counts().pending,
                "delivering": self.delivery.counts().delivering,
                "dead_letters": self.delivery.counts().dead,
                "breakers": self
                    .delivery
                    .breakers
                    .snapshot(Instant::now())
                    .into_iter()
                    .map(|(t, s)| json!({"target": t, "state": s.as_str()}))
                    .collect::<Vec<_>>(),
            },
            "tunnel_url": self.tunnel_url.lock().ok().and_then(|g| g.clone()),
        })
    }
}

/// The dispatcher's view of the daemon: the store, the shared delivery
/// state, and the hooks that have an action, as configured right now.
impl crate::deliver::Context for App {
    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
    fn delivery(&self) -> &DeliveryState {
        &self.delivery
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn routes(&self) -> Vec<Arc<Route>> {
        let live = self.live();
        let mut routes: Vec<Arc<Route>> = live
            .hooks
            .values()
            .filter_map(|h| h.route.clone())
            .collect();
        routes.sort_by(|a, b| a.hook_id.cmp(&b.hook_id));
        routes
    }
    fn settings(&self) -> DeliveryConfig {
        self.live().config.delivery.clone()
    }
}
