//! The daemon's shared state: the live configuration (swapped atomically on
//! reload), the store and its writer, metrics and delivery state. What it
//! looks like from outside (/status, /readyz, STATUS=) is `server::admin`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use crate::config::DeliveryConfig;
use crate::config::{Config, Invalid, Secret};
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
    /// What the dispatcher does with this hook's events, one route per
    /// action in the hook's order (empty: store only).
    pub routes: Vec<Arc<Route>>,
    /// Payload rule and handshake (src/payload/).
    pub payload: crate::check::PayloadParts,
    /// Custom answers for accepted, duplicate and ignored requests.
    pub response: crate::config::ResponsesConfig,
    /// With `respond = "after_action"`: how long to wait for the first attempt.
    pub respond_after: Option<std::time::Duration>,
    /// Read bodies as this content type (`payload_content_type`).
    pub payload_content_type: Option<String>,
    /// after_action: send a failed command's output too.
    pub respond_error_output: bool,
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
    /// `[server.tls]`'s certificate pair, loaded and checked.
    pub server_tls: Option<Arc<crate::tls::server::Loaded>>,
}

impl Live {
    /// Resolve secrets and build hooks. With `strict`, any unreadable secret
    /// fails the whole build (reload, check-config); otherwise the hook is
    /// kept but marked unusable (startup: the daemon still starts, says what
    /// is missing, and serves the other hooks).
    pub fn build(config: Config, metrics: &Metrics, strict: bool) -> Result<Live, Invalid> {
        // A listener configured for TLS cannot serve without its pair, at
        // start or on reload: always fatal.
        let server_tls = match &config.server.tls {
            Some(t) => Some(Arc::new(
                crate::tls::server::Loaded::load(&t.into())
                    .map_err(|e| Invalid::new("server.tls", e.to_string()))?,
            )),
            None => None,
        };
        let mut hooks = HashMap::with_capacity(config.hooks.len());
        for h in &config.hooks {
            let (scheme, rules) = crate::check::hook_parts(h).map_err(|e| e.in_hook(&h.id))?;
            let payload = crate::check::payload_parts(h).map_err(|e| e.in_hook(&h.id))?;
            if !scheme.authenticates() {
                log::warn!(
                    "hook {}: UNAUTHENTICATED (scheme = \"none\"): anyone who can reach /hooks/{} can submit events{}",
                    h.id,
                    h.id,
                    if h.allow_ips.is_some() { "; only allow_ips limits who" } else { "" }
                );
            }
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
            let mut problem = if secrets.is_empty() && scheme.authenticates() {
                Some(format!("no usable secret ({})", errors.join("; ")))
            } else {
                None
            };
            let mut routes = Vec::new();
            for (index, spec) in h.action_specs().into_iter().enumerate() {
                let built = build_action(spec.action, config.delivery.output_limit)
                    .and_then(|mut a| {
                        let values = crate::deliver::exec_values(spec.action, &spec.key())
                            .map_err(|e| Invalid::new(e.key, e.message))?;
                        match &mut a.kind {
                            crate::deliver::ActionKind::Exec(e) => {
                                e.payload_content_type = h.payload_content_type.clone();
                                e.values = values;
                            }
                            crate::deliver::ActionKind::Job(j) => {
                                j.payload_content_type = h.payload_content_type.clone();
                                j.values = values;
                            }
                            crate::deliver::ActionKind::Forward { .. } => {}
                        }
                        Ok(a)
                    })
                    .map_err(|e| Invalid::new(spec.rekey(&e.key), e.message))
                    .and_then(|a| {
                        let when = crate::deliver::Condition::compile(
                            &spec,
                            h.payload_content_type.as_deref(),
                        )?;
                        Ok((a, when))
                    });
                match built {
                    Ok((action, when)) => routes.push(Arc::new(Route {
                        breaker_key: match spec.index {
                            None => action.target.clone(),
                            Some(_) => format!("{} ({}/{})", action.target, h.id, spec.id),
                        },
                        hook_id: h.id.clone(),
                        action_id: spec.id.to_string(),
                        index,
                        action,
                        retry: spec.retry.clone(),
                        breaker: spec.breaker.clone(),
                        when,
                    })),
                    Err(e) if strict => return Err(e.in_hook(&h.id)),
                    Err(e) => {
                        problem.get_or_insert(format!("{}: {}", e.key, e.message));
                    }
                }
            }
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
                    payload,
                    payload_content_type: h.payload_content_type.clone(),
                    respond_error_output: h.respond_error_output,
                    response: h.response.clone(),
                    respond_after: (h.respond == crate::config::Respond::AfterAction).then(|| {
                        h.respond_deadline
                            .unwrap_or(crate::config::DEFAULT_RESPOND_DEADLINE)
                    }),
                    routes,
                }),
            );
        }
        let proxies = crate::rules::Proxies::parse(&config.server.trusted_proxies)
            .map_err(|e| Invalid::new(e.key, e.message))?;
        Ok(Live {
            server_tls,
            proxies,
            config,
            hooks,
            loaded_at: SystemTime::now(),
        })
    }
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
    pub slots: crate::rules::Slots,
    pub delivery: DeliveryState,
    /// The HTTPS listener's state when `[server.tls]` was set at start.
    pub tls: Option<Arc<crate::tls::server::ServerTls>>,
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
            slots: Default::default(),
            delivery: DeliveryState::default(),
            tls: None,
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

    /// Swap in a new configuration: requests that start after this see
    /// only the new hooks and secrets.
    pub fn replace_live(&self, new: Live) {
        match self.live.write() {
            Ok(mut g) => *g = Arc::new(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
        }
    }

    /// Remember how the last reload ended (None: it worked), for /status.
    pub fn record_reload(&self, error: Option<String>) {
        if let Ok(mut g) = self.last_reload.lock() {
            *g = Some((SystemTime::now(), error));
        }
    }

    /// When the last reload ran and why it was refused, if it was.
    pub fn last_reload(&self) -> Option<(SystemTime, Option<String>)> {
        self.last_reload.lock().ok().and_then(|g| g.clone())
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
            .flat_map(|h| h.routes.iter().cloned())
            .collect();
        routes.sort_by(|a, b| a.hook_id.cmp(&b.hook_id).then(a.index.cmp(&b.index)));
        routes
    }
    fn settings(&self) -> DeliveryConfig {
        self.live().config.delivery.clone()
    }
    fn schema_ready(&self) -> bool {
        self.writer.status.schema_ready()
    }
}
