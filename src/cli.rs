//! Command line: `serve` (the default), `migrate`, `check-config`, `sign`,
//! `events list|show`. Exit codes follow sysexits(3) so scripts and systemd
//! can tell a bad config (78) from an unreachable store (69).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use crate::app::Live;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::store::{self, EventRecord, EventState, ListQuery, StoreError};

pub const USAGE: &str = "\
webhookd — a systemd-native webhook receiver

USAGE:
    webhookd [--config PATH] [COMMAND]

COMMANDS:
    serve                     run the daemon (default)
    migrate                   apply database migrations and exit
    check-config              validate the config and resolve every secret
    sign --hook ID [--event NAME] [--delivery ID]
                              read a body on stdin, print the headers a sender
                              would send (paste them into curl)
    events list [--hook ID] [--state STATE] [--limit N] [--json]
                              list stored events, newest first
    events show ID [--body]   show one event (with --body: write the raw body to stdout)
    events replay ID [--action A]
                              deliver an event again, from attempt 1 (every
                              action, or only action A; the others are not re-run)
    job-run [--args] [--env NAME]... [--] COMMAND [ARG]...
                              the ExecStart= of a webhook-job-NAME@.service
                              (run by systemd per connection; docs/jobs.md)
    tunnel-url                print the public URL of the tunnel sidecar (ngrok or cloudflared)
    import-hooks FILE [--secrets-dir DIR] [--allow-partial] [--allow-unauthenticated]
                              convert an adnanh/webhook hooks file (JSON or YAML) to
                              webhookd TOML on stdout; inline secrets go to 0600 files in
                              DIR; what cannot be converted is listed on stderr (exit 78
                              unless --allow-partial)
    dead-letters list [--hook ID] [--action A] [--since T] [--until T] [--limit N] [--json]
                              one row per dead (event, action) delivery
    dead-letters retry (ID | --all) [--hook ID] [--action A] [--since T] [--until T]
                              queue dead deliveries again (only the dead
                              actions of each event run again)
                              (T: a duration ago such as 2h, or an RFC 3339 time)

OPTIONS:
    -c, --config PATH   config file (default: $WEBHOOKD_CONFIG, else /etc/webhookd/webhookd.toml)
    -h, --help          this help
    -V, --version       print the version

EXIT CODES:
    0 ok, 1 not found, 64 usage, 66 cannot read the input (import-hooks),
    69 store unavailable (or its schema is newer), 70 internal error,
    71 cannot listen (address in use, bad inherited socket), 74 I/O error,
    75 the spool file is locked by another process,
    78 configuration error (a spool holding another database's events
    included; for import-hooks, something not convertible)
";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub config: Option<PathBuf>,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    Migrate,
    CheckConfig,
    Sign {
        hook: String,
        event: String,
        delivery: Option<String>,
    },
    EventsList {
        hook: Option<String>,
        state: Option<EventState>,
        limit: usize,
        json: bool,
    },
    EventsShow {
        id: String,
        body: bool,
    },
    EventsReplay {
        id: String,
        action: Option<String>,
    },
    DeadList {
        hook: Option<String>,
        action: Option<String>,
        since: Option<SystemTime>,
        until: Option<SystemTime>,
        limit: usize,
        json: bool,
    },
    DeadRetry {
        id: Option<String>,
        hook: Option<String>,
        action: Option<String>,
        since: Option<SystemTime>,
        until: Option<SystemTime>,
    },
    TunnelUrl,
    ImportHooks {
        file: PathBuf,
        secrets_dir: Option<PathBuf>,
        allow_partial: bool,
        allow_unauthenticated: bool,
    },
    Help,
    Version,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}\n(see `webhookd --help`)")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Secrets(String),
    #[error(transparent)]
    Invalid(#[from] crate::config::Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] crate::daemon::ServeError),
    #[error(transparent)]
    Bind(#[from] crate::server::listen::BindError),
    #[error(transparent)]
    Activation(#[from] crate::systemd::activation::ActivationError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("import-hooks: {0}")]
    Import(#[from] crate::import::run::RunError),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        use crate::daemon::ServeError as S;
        use crate::server::listen::BindError as B;
        ExitCode::from(match self {
            CliError::Usage(_) => 64,
            CliError::Config(_) | CliError::Secrets(_) | CliError::Invalid(_) => 78,
            CliError::Store(StoreError::BadUrl(_)) => 78,
            CliError::Store(_) => 69,
            CliError::Bind(B::Listen(_)) => 78,
            CliError::Bind(_) => 71,
            CliError::Serve(S::Invalid(_)) => 78,
            CliError::Serve(S::Store(
                StoreError::BadUrl(_) | StoreError::SpoolForOtherStore { .. },
            )) => 78,
            CliError::Serve(S::Store(StoreError::SpoolLocked { .. })) => 75,
            CliError::Serve(S::Store(_)) => 69,
            CliError::Serve(_) => 70,
            CliError::Activation(_) => 71,
            CliError::NotFound(_) => 1,
            CliError::Io(_) => 74,
            CliError::Import(crate::import::run::RunError::Read { .. }) => 66,
            CliError::Import(crate::import::run::RunError::Stdout(_)) => 74,
            CliError::Import(_) => 78,
        })
    }
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// Options given anywhere on the command line; each command takes the ones
/// it uses.
#[derive(Debug, Default)]
struct Flags {
    hook: Option<String>,
    action: Option<String>,
    event: Option<String>,
    delivery: Option<String>,
    state: Option<EventState>,
    limit: Option<usize>,
    json: bool,
    body: bool,
    all: bool,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    secrets_dir: Option<PathBuf>,
    allow_partial: bool,
    allow_unauthenticated: bool,
}

impl Flags {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(50)
    }
}

/// Parse arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, CliError> {
    let mut config = None;
    let mut words: Vec<String> = Vec::new();
    let mut f = Flags::default();
    if let Some(command) = read_args(args, &mut config, &mut words, &mut f)? {
        return Ok(Cli { config, command });
    }
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let command = match w.as_slice() {
        [] | ["serve"] => Command::Serve,
        ["migrate"] => Command::Migrate,
        ["tunnel-url"] => Command::TunnelUrl,
        ["import-hooks", file] => Command::ImportHooks {
            file: PathBuf::from(file),
            secrets_dir: f.secrets_dir,
            allow_partial: f.allow_partial,
            allow_unauthenticated: f.allow_unauthenticated,
        },
        ["import-hooks", ..] => return Err(usage("expected `import-hooks FILE`")),
        ["check-config"] => Command::CheckConfig,
        ["sign"] => parse_sign(f)?,
        ["events", rest @ ..] => parse_events(rest, f)?,
        ["dead-letters", rest @ ..] => parse_dead_letters(rest, f)?,
        other => return Err(usage(format!("unknown command {:?}", other.join(" ")))),
    };
    Ok(Cli { config, command })
}

/// Read options and words; `Some` for `--help` / `--version`, which end
/// parsing at once.
fn read_args(
    args: impl IntoIterator<Item = OsString>,
    config: &mut Option<PathBuf>,
    words: &mut Vec<String>,
    f: &mut Flags,
) -> Result<Option<Command>, CliError> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let bad = |e: lexopt::Error| usage(e.to_string());
    while let Some(arg) = p.next().map_err(bad)? {
        match arg {
            Short('c') | Long("config") => *config = Some(PathBuf::from(p.value().map_err(bad)?)),
            Short('h') | Long("help") => return Ok(Some(Command::Help)),
            Short('V') | Long("version") => return Ok(Some(Command::Version)),
            Long("hook") => f.hook = Some(p.value().map_err(bad)?.string().map_err(bad)?),
            Long("action") => f.action = Some(p.value().map_err(bad)?.string().map_err(bad)?),
            Long("event") => f.event = Some(p.value().map_err(bad)?.string().map_err(bad)?),
            Long("delivery") => f.delivery = Some(p.value().map_err(bad)?.string().map_err(bad)?),
            Long("state") => {
                let s = p.value().map_err(bad)?.string().map_err(bad)?;
                f.state = Some(EventState::parse(&s).ok_or_else(|| {
                    usage(format!(
                        "--state: expected stored, pending, delivering, done or dead, got {s:?}"
                    ))
                })?);
            }
            Long("limit") => {
                f.limit = Some(
                    p.value()
                        .map_err(bad)?
                        .parse()
                        .map_err(|_| usage("--limit: expected a number"))?,
                )
            }
            Long("json") => f.json = true,
            Long("all") => f.all = true,
            Long("since") => {
                f.since = Some(parse_time(&p.value().map_err(bad)?.string().map_err(bad)?)?)
            }
            Long("until") => {
                f.until = Some(parse_time(&p.value().map_err(bad)?.string().map_err(bad)?)?)
            }
            Long("body") => f.body = true,
            Long("secrets-dir") => f.secrets_dir = Some(PathBuf::from(p.value().map_err(bad)?)),
            Long("allow-partial") => f.allow_partial = true,
            Long("allow-unauthenticated") => f.allow_unauthenticated = true,
            Value(v) => words.push(v.string().map_err(bad)?),
            _ => return Err(usage(arg.unexpected().to_string())),
        }
    }
    Ok(None)
}

fn parse_sign(f: Flags) -> Result<Command, CliError> {
    Ok(Command::Sign {
        hook: f.hook.ok_or_else(|| usage("sign needs --hook ID"))?,
        event: f.event.unwrap_or_else(|| "push".into()),
        delivery: f.delivery,
    })
}

fn parse_events(words: &[&str], f: Flags) -> Result<Command, CliError> {
    Ok(match words {
        ["list"] => Command::EventsList {
            limit: f.limit(),
            hook: f.hook,
            state: f.state,
            json: f.json,
        },
        ["show", id] => Command::EventsShow {
            id: id.to_string(),
            body: f.body,
        },
        ["replay", id] => Command::EventsReplay {
            id: id.to_string(),
            action: f.action,
        },
        _ => {
            return Err(usage(
                "expected `events list`, `events show ID` or `events replay ID`",
            ))
        }
    })
}

fn parse_dead_letters(words: &[&str], f: Flags) -> Result<Command, CliError> {
    Ok(match words {
        ["list"] => Command::DeadList {
            limit: f.limit(),
            hook: f.hook,
            action: f.action,
            since: f.since,
            until: f.until,
            json: f.json,
        },
        ["retry", id] if !f.all => Command::DeadRetry {
            id: Some(id.to_string()),
            hook: f.hook,
            action: f.action,
            since: f.since,
            until: f.until,
        },
        ["retry"] if f.all => Command::DeadRetry {
            id: None,
            hook: f.hook,
            action: f.action,
            since: f.since,
            until: f.until,
        },
        _ => {
            return Err(usage(
                "expected `dead-letters list` or `dead-letters retry (ID | --all)`",
            ))
        }
    })
}

/// `2h` (that long ago) or an RFC 3339 time.
fn parse_time(s: &str) -> Result<SystemTime, CliError> {
    if let Ok(d) = humantime::parse_duration(s) {
        return SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| usage(format!("{s:?} ago is before the start of time")));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        usage(format!(
            "expected a duration such as 2h or an RFC 3339 time such as 2026-11-23T10:00:00Z, got {s:?}"
        ))
    })
}

/// Run a command other than `serve`.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let path = Config::path_from(cli.config.clone());
    match cli.command {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            println!("webhookd {} (commit {})", crate::VERSION, crate::GIT_COMMIT);
            Ok(())
        }
        Command::Serve => Err(usage("serve is started from main")),
        Command::TunnelUrl => tunnel_url(&path),
        Command::Migrate => migrate(&path),
        Command::CheckConfig => check_config(&path),
        Command::ImportHooks {
            file,
            secrets_dir,
            allow_partial,
            allow_unauthenticated,
        } => {
            crate::import::run::run(
                &file,
                secrets_dir.as_deref(),
                allow_partial,
                allow_unauthenticated,
            )?;
            Ok(())
        }
        Command::Sign {
            hook,
            event,
            delivery,
        } => sign(&path, &hook, &event, delivery),
        Command::EventsList {
            hook,
            state,
            limit,
            json,
        } => events_list(&path, hook, state, limit, json),
        Command::EventsShow { id, body } => events_show(&path, &id, body),
        Command::EventsReplay { id, action } => events_replay(&path, &id, action),
        Command::DeadList {
            hook,
            action,
            since,
            until,
            limit,
            json,
        } => dead_list(
            &path,
            ListQuery {
                hook_id: hook,
                state: Some(EventState::Dead),
                since,
                until,
                limit,
            },
            action,
            json,
        ),
        Command::DeadRetry {
            id,
            hook,
            action,
            since,
            until,
        } => dead_retry(
            &path,
            store::ReplayFilter {
                id,
                state: Some(EventState::Dead),
                hook_id: hook,
                since,
                until,
                action_id: action,
            },
        ),
    }
}

fn tunnel_url(path: &Path) -> Result<(), CliError> {
    let cfg = Config::load(path)?;
    match crate::tunnel::discover(&cfg.tunnel) {
        Some(f) => {
            println!("{}", f.url);
            eprintln!("(from {}; hooks are at {}/hooks/ID)", f.source, f.url);
            Ok(())
        }
        None => Err(CliError::NotFound(format!(
            "no tunnel found: nothing answered at ngrok's API ({}) or cloudflared's metrics ({}); is webhook-tunnel@ngrok or webhook-tunnel@cloudflared running?",
            if cfg.tunnel.ngrok_api.is_empty() { "disabled" } else { &cfg.tunnel.ngrok_api },
            if cfg.tunnel.cloudflared_metrics.is_empty() { "disabled" } else { &cfg.tunnel.cloudflared_metrics },
        ))),
    }
}

fn migrate(path: &Path) -> Result<(), CliError> {
    let cfg = Config::load(path)?;
    let s = store::open(&cfg.store)?;
    let n = s.migrate()?;
    println!(
        "{}: applied {n} migration(s); schema is at version {}",
        s.kind(),
        s.latest_schema()
    );
    Ok(())
}

fn check_config(path: &Path) -> Result<(), CliError> {
    let cfg = Config::load(path)?;
    let live = Live::build(cfg, &Metrics::new(), true)?;
    let mut ids: Vec<_> = live.hooks.keys().cloned().collect();
    ids.sort();
    println!(
        "{}: OK; store {}; {} hook(s): {}",
        path.display(),
        store::redact_url(&live.config.store.url),
        ids.len(),
        ids.join(", ")
    );
    if let Some(tls) = &live.server_tls {
        println!("{}", tls.describe());
    }
    // A job's socket is made by systemd, not by us: say when it is missing
    // (not an error: the socket may be enabled after the config is written).
    for h in &live.config.hooks {
        for spec in h.action_specs() {
            let crate::config::ActionConfig::Job { name, socket, .. } = spec.action else {
                continue;
            };
            let sock = socket
                .clone()
                .unwrap_or_else(|| crate::job::default_socket(name));
            if !sock.exists() {
                eprintln!(
                    "note: hook {}: job socket {} does not exist; deliveries fail and are retried until `systemctl enable --now webhook-job-{name}.socket`",
                    h.id,
                    sock.display()
                );
            }
        }
    }
    Ok(())
}

fn events_list(
    path: &Path,
    hook: Option<String>,
    state: Option<EventState>,
    limit: usize,
    json: bool,
) -> Result<(), CliError> {
    let s = open_existing(path)?;
    let rows = s.list(&ListQuery {
        hook_id: hook,
        state,
        limit,
        ..Default::default()
    })?;
    print_list(&rows, json)
}

fn events_replay(path: &Path, id: &str, action: Option<String>) -> Result<(), CliError> {
    let (cfg, s) = open_existing_with_config(path)?;
    let rec = s
        .get(id)?
        .ok_or_else(|| CliError::NotFound(format!("no event with id {id}")))?;
    let hook = cfg.hooks.iter().find(|h| h.id == rec.hook_id);
    let configured: Vec<String> = hook
        .map(|h| h.action_specs().iter().map(|a| a.id.to_string()).collect())
        .unwrap_or_default();
    if configured.is_empty() {
        return Err(CliError::Secrets(format!(
            "hook {} has no action configured; there is nothing to replay it to",
            rec.hook_id
        )));
    }
    if let Some(a) = &action {
        if !configured.contains(a) {
            return Err(CliError::NotFound(format!(
                "hook {} has no action {a:?} (its actions: {})",
                rec.hook_id,
                configured.join(", ")
            )));
        }
        if !s.deliveries(id)?.iter().any(|d| &d.action_id == a) {
            return Err(CliError::NotFound(format!(
                "event {id} has no delivery for action {a:?} (its condition did not match when the event was fanned out)"
            )));
        }
    }
    let n = s.replay(
        &store::ReplayFilter {
            id: Some(id.to_string()),
            action_id: action.clone(),
            ..Default::default()
        },
        SystemTime::now(),
    )?;
    if n == 0 {
        return Err(CliError::NotFound(format!(
            "event {id} is being delivered right now; try again when it is done"
        )));
    }
    match action {
        Some(a) => println!("event {id} queued for delivery to action {a}"),
        None => println!("event {id} queued for delivery"),
    }
    Ok(())
}

fn dead_list(
    path: &Path,
    q: ListQuery,
    action: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let s = open_existing(path)?;
    let rows = s.list(&q)?;
    // One row per dead delivery: an event whose forward died but whose
    // exec ran shows only the forward.
    let mut dead = Vec::new();
    for r in rows {
        for d in s.deliveries(&r.id)? {
            if d.state == EventState::Dead && action.as_ref().is_none_or(|a| a == &d.action_id) {
                dead.push((r.clone(), d));
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<_> = dead
            .iter()
            .map(|(r, d)| {
                let mut v = record_json(r, false);
                v["action"] = d.action_id.clone().into();
                v["attempts"] = d.attempts.into();
                v["last_error"] = d.last_error.clone().into();
                v
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string(&v).unwrap_or_default())?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<26}  {:<20}  {:<16}  {:<16}  {:<16}  {:>8}  ERROR",
        "ID", "RECEIVED", "HOOK", "ACTION", "EVENT", "ATTEMPTS"
    )?;
    for (r, d) in dead {
        writeln!(
            out,
            "{:<26}  {:<20}  {:<16}  {:<16}  {:<16}  {:>8}  {}",
            r.id,
            humantime::format_rfc3339_seconds(r.received_at).to_string(),
            r.hook_id,
            d.action_id,
            r.event_type,
            d.attempts,
            d.last_error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

fn dead_retry(path: &Path, f: store::ReplayFilter) -> Result<(), CliError> {
    let s = open_existing(path)?;
    let n = s.replay(&f, SystemTime::now())?;
    if n == 0 {
        if let Some(id) = &f.id {
            return Err(CliError::NotFound(format!("no dead letter with id {id}")));
        }
    }
    println!("{n} dead letter(s) queued for delivery");
    Ok(())
}

fn events_show(path: &Path, id: &str, body: bool) -> Result<(), CliError> {
    let (cfg, s) = open_existing_with_config(path)?;
    let rec = s
        .get(id)?
        .ok_or_else(|| CliError::NotFound(format!("no event with id {id}")))?;
    if body {
        std::io::stdout().write_all(rec.body.as_deref().unwrap_or_default())?;
        return Ok(());
    }
    let mut v = record_json(&rec, true);
    let hook = cfg.hooks.iter().find(|h| h.id == rec.hook_id);
    let specs = hook.map(|h| h.action_specs()).unwrap_or_default();
    let mut deliveries = Vec::new();
    for d in s.deliveries(id)? {
        let spec = specs.iter().find(|a| a.id == d.action_id);
        let mut dv = serde_json::json!({
            "action": d.action_id,
            "state": d.state.as_str(),
            "attempts": d.attempts,
            "next_attempt_at": humantime::format_rfc3339_seconds(d.next_attempt_at).to_string(),
            "last_error": d.last_error,
            "configured": spec.is_some(),
        });
        match spec.map(|a| a.action) {
            None => {
                dv["note"] = "action no longer configured: this delivery is not run".into();
            }
            Some(crate::config::ActionConfig::Job { name, .. }) => {
                let hint = crate::job::journal_hint(name, &rec.id);
                v["journal"] = hint.clone().into();
                dv["journal"] = hint.into();
            }
            Some(_) => {}
        }
        deliveries.push(dv);
    }
    if deliveries.is_empty() && rec.state == EventState::Done {
        v["note"] = "no action matched this event".into();
    }
    v["deliveries"] = deliveries.into();
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

fn open_existing(path: &std::path::Path) -> Result<Arc<dyn store::Store>, CliError> {
    Ok(open_existing_with_config(path)?.1)
}

fn open_existing_with_config(
    path: &std::path::Path,
) -> Result<(Config, Arc<dyn store::Store>), CliError> {
    let cfg = Config::load(path)?;
    // An operator's command (a replay of many dead letters, a long list) may
    // take longer than an ingest batch: bound it generously instead.
    let mut sc = cfg.store.clone();
    sc.write_timeout = sc.write_timeout.max(std::time::Duration::from_secs(300));
    let s = store::open(&sc)?;
    s.check_schema()?;
    Ok((cfg, s))
}

fn sign(
    path: &std::path::Path,
    hook: &str,
    event: &str,
    delivery: Option<String>,
) -> Result<(), CliError> {
    let cfg = Config::load(path)?;
    let h = cfg
        .hooks
        .iter()
        .find(|h| h.id == hook)
        .ok_or_else(|| CliError::NotFound(format!("no hook {hook:?} in {}", path.display())))?;
    let scheme = crate::verify::Scheme::from_config(h)
        .map_err(|e| CliError::Secrets(format!("hook {hook}: {}: {}", e.key, e.message)))?;
    let secret_ref = h
        .secrets
        .first()
        .ok_or_else(|| CliError::Secrets(format!("hook {hook} has no secret")))?;
    let secret = secret_ref
        .resolve()
        .map_err(|e| e.to_string())
        .and_then(|s| {
            scheme
                .prepare_secret(s)
                .map_err(|m| format!("secret {secret_ref} {m}"))
        })
        .map_err(|e| CliError::Secrets(format!("hook {hook}: {e}")))?;
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    let delivery = delivery.unwrap_or_else(crate::id::new_uuid);
    for (k, v) in scheme.sign(&body, &secret, &delivery, event, SystemTime::now()) {
        println!("{k}: {v}");
    }
    Ok(())
}

fn record_json(r: &EventRecord, full: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": r.id,
        "hook": r.hook_id,
        "delivery_id": r.delivery_id,
        "event": r.event_type,
        "received_at": humantime::format_rfc3339_micros(r.received_at).to_string(),
        "state": r.state.as_str(),
        "attempts": r.attempts,
        "next_attempt_at": humantime::format_rfc3339_seconds(r.next_attempt_at).to_string(),
        "last_error": r.last_error,
        "body_bytes": r.body_len,
    });
    if full {
        if let Some(h) = &r.headers {
            v["headers"] = serde_json::from_str(&h.to_json()).unwrap_or(serde_json::Value::Null);
        }
    }
    v
}

fn print_list(rows: &[EventRecord], json: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<_> = rows.iter().map(|r| record_json(r, false)).collect();
        writeln!(out, "{}", serde_json::to_string(&v).unwrap_or_default())?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<26}  {:<20}  {:<16}  {:<16}  {:<10}  {:>8}  DELIVERY",
        "ID", "RECEIVED", "HOOK", "EVENT", "STATE", "BYTES"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<26}  {:<20}  {:<16}  {:<16}  {:<10}  {:>8}  {}",
            r.id,
            humantime::format_rfc3339_seconds(r.received_at).to_string(),
            r.hook_id,
            r.event_type,
            r.state,
            r.body_len,
            r.delivery_id
        )?;
    }
    Ok(())
}

/// Entry point used by `main`: take systemd's sockets first (while the
/// process is still single-threaded), then run the command.
pub fn main() -> ExitCode {
    // The job wrapper takes the rest of the line as the unit's command.
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    if first.as_deref() == Some(std::ffi::OsStr::new("job-run")) {
        return crate::job::run::main(args.collect());
    }
    let cli = match parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("webhookd: {e}");
            return e.exit_code();
        }
    };
    let result = match cli.command {
        Command::Serve => serve(cli.config),
        _ => {
            restore_sigpipe();
            run(cli)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            if !logger_active() {
                eprintln!("webhookd: {e}");
            }
            e.exit_code()
        }
    }
}

/// Rust ignores SIGPIPE, so `webhookd events list | head` would fail with
/// "Broken pipe" errors. A command-line tool should just stop, like `ls`.
/// (Not for `serve`: a daemon must survive a peer closing a socket.)
fn restore_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called on the main thread before any other thread exists,
    // and SIG_DFL installs no Rust code as a handler.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}

/// True once `serve` installed the logger, so errors are not printed twice.
fn logger_active() -> bool {
    log::max_level() != log::LevelFilter::Off
}

fn serve(config: Option<PathBuf>) -> Result<(), CliError> {
    let inherited = crate::systemd::activation::take_inherited()?;
    let path = Config::path_from(config);
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            crate::systemd::journal::init(&Default::default());
            return Err(e.into());
        }
    };
    crate::systemd::journal::init(&cfg.log);
    let sockets = crate::server::listen::sockets(inherited, &cfg)?;
    let opts = crate::daemon::RunOptions {
        // The watchdog test wedges the writer through this variable.
        wedge_file: std::env::var_os("WEBHOOKD_TEST_WEDGE_FILE").map(PathBuf::from),
    };
    crate::daemon::run(path, cfg, sockets, opts)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cli, CliError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn parses_commands() {
        assert_eq!(p(&[]).unwrap().command, Command::Serve);
        assert_eq!(
            p(&["--config", "/x", "migrate"]).unwrap(),
            Cli {
                config: Some("/x".into()),
                command: Command::Migrate
            }
        );
        assert_eq!(
            p(&["sign", "--hook", "gh"]).unwrap().command,
            Command::Sign {
                hook: "gh".into(),
                event: "push".into(),
                delivery: None
            }
        );
        assert!(matches!(
            p(&["events", "list", "--state", "dead", "--json"])
                .unwrap()
                .command,
            Command::EventsList {
                json: true,
                state: Some(EventState::Dead),
                ..
            }
        ));
        assert!(matches!(p(&["frobnicate"]), Err(CliError::Usage(_))));
        assert!(matches!(p(&["sign"]), Err(CliError::Usage(_))));
        assert!(matches!(
            p(&["events", "list", "--state", "x"]),
            Err(CliError::Usage(_))
        ));
    }
}
