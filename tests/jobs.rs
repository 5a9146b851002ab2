//! The `job` action end to end without systemd: `systemd-socket-activate
//! --accept` plays the `webhook-job-NAME.socket` (one process per
//! connection, the connection as fd 3 with LISTEN_FDS=1, as systemd does with
//! Accept=yes) and the per-connection command is the real wrapper,
//! `webhookd job-run -- /bin/sh -c SCRIPT`. Success (body, environment,
//! output in the job's own log), a failure retried then dead-lettered with
//! its output in `events show`, and a timeout that kills the job's process
//! group and ends the wrapper.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// `systemd-socket-activate --accept` on a Unix socket, running the wrapper
/// per connection; its stdout/stderr (the job's "journal") go to `log`.
struct JobSocket {
    child: Child,
    log: std::path::PathBuf,
}

impl JobSocket {
    fn start(env: &Env, socket: &Path, script: &str) -> JobSocket {
        JobSocket::start_with(env, socket, &[], script)
    }

    /// With `job-run` options (`--args`, `--env NAME`); the script's `$0`
    /// is "job", so arguments from webhookd are `$1`, `$2`, ...
    fn start_with(env: &Env, socket: &Path, flags: &[&str], script: &str) -> JobSocket {
        let log = env.path("job.log");
        let child = Command::new("systemd-socket-activate")
            .arg("--accept")
            .arg("-l")
            .arg(socket)
            .args(["-E", "JOBDIR"])
            .arg(bin())
            .arg("job-run")
            .args(flags)
            .args(["--", "/bin/sh", "-c", script, "job"])
            .env("JOBDIR", &env.dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("systemd-socket-activate (package systemd) is needed");
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < WAIT, "the job socket never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        JobSocket { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for JobSocket {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn job_config(env: &Env, addr: &str, socket: &Path, extra: &str) -> String {
    let secret = env.write("gh.secret", SECRET);
    format!(
        "{}\n[hooks.action]\ntype = \"job\"\nname = \"deploy\"\nsocket = \"{}\"\n{extra}\n[delivery]\npoll_interval = \"100ms\"\nlease_margin = \"1s\"\n",
        config(addr, &env.sqlite_url(), &secret, ""),
        socket.display()
    )
}

fn show(config: &Path, id: &str) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "events", "show", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn job_gets_body_and_environment_and_its_output_is_in_its_log() {
    let env = Env::new("job-ok");
    let socket = env.path("deploy.sock");
    let script = r#"cat > "$JOBDIR/body-$WEBHOOK_ID"; env | grep ^WEBHOOK_ | sort > "$JOBDIR/env-$WEBHOOK_ID"; echo "deployed $WEBHOOK_DELIVERY""#;
    let job = JobSocket::start(&env, &socket, script);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&env, &job_config(&env, &addr, &socket, ""), &[]);
    let body = b"{\"ref\":\"refs/heads/main\"}\n";
    let id = d.post("gh", "j-1", body).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        wait_state(&env.sqlite_url(), "j-1", "done", WAIT),
        ("done".into(), 1)
    );
    assert_eq!(
        std::fs::read(env.path(&format!("body-{id}"))).unwrap(),
        body
    );
    let vars = std::fs::read_to_string(env.path(&format!("env-{id}"))).unwrap();
    for want in [
        "WEBHOOK_HOOK=gh",
        "WEBHOOK_EVENT=push",
        "WEBHOOK_DELIVERY=j-1",
        "WEBHOOK_ATTEMPT=1",
        &format!("WEBHOOK_ID={id}"),
    ] {
        assert!(vars.contains(want), "{want} missing in {vars}");
    }
    // The job's own log (the journal under its unit) has the event id and
    // the command's output; webhookd got the output back too.
    let jl = job.log_text();
    assert!(jl.contains(&format!("id={id}")), "{jl}");
    assert!(jl.contains("deployed j-1"), "{jl}");
    assert!(
        d.log_text().contains("output: deployed j-1"),
        "{}",
        d.log_text()
    );
    let v = show(&d.config, &id);
    assert!(
        v["journal"]
            .as_str()
            .unwrap()
            .contains("webhook-job-deploy@*"),
        "{v}"
    );
}

#[test]
fn failing_job_is_retried_and_its_output_is_in_events_show() {
    let env = Env::new("job-fail");
    let socket = env.path("deploy.sock");
    let script = r#"echo "attempt $WEBHOOK_ATTEMPT: git pull: could not resolve host" >&2; exit 3"#;
    let job = JobSocket::start(&env, &socket, script);
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = "[hooks.retry]\nmax_attempts = 2\ninitial_delay = \"50ms\"\nmax_delay = \"50ms\"\n[hooks.breaker]\nfailures = 0\n";
    let d = Daemon::start(&env, &job_config(&env, &addr, &socket, extra), &[]);
    let id = d.post("gh", "f-1", b"{}").json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        wait_state(&env.sqlite_url(), "f-1", "dead", WAIT),
        ("dead".into(), 2)
    );
    let v = show(&d.config, &id);
    let err = v["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("exited with status 3"), "{v}");
    assert!(
        err.contains("attempt 2: git pull: could not resolve host"),
        "{v}"
    );
    assert!(v["journal"].as_str().unwrap().contains(&id), "{v}");
    let jl = job.log_text();
    assert!(jl.contains("attempt 1: git pull"), "{jl}");
    assert!(jl.contains("attempt 2: git pull"), "{jl}");
    assert!(
        jl.contains(&format!("id={id} hook=gh attempt=2: exited with status 3")),
        "{jl}"
    );
}

#[test]
fn job_timeout_kills_the_group_and_ends_the_wrapper() {
    let env = Env::new("job-timeout");
    let socket = env.path("deploy.sock");
    let script = r#"echo $PPID > "$JOBDIR/wrapper"; sleep 300 & echo $! > "$JOBDIR/grandchild"; echo started; sleep 300"#;
    let job = JobSocket::start(&env, &socket, script);
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = "timeout = \"800ms\"\n[hooks.retry]\nmax_attempts = 1\n";
    let d = Daemon::start(&env, &job_config(&env, &addr, &socket, extra), &[]);
    let id = d.post("gh", "t-1", b"{}").json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_state(&env.sqlite_url(), "t-1", "dead", WAIT);
    let v = show(&d.config, &id);
    let err = v["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("timed out after 800ms"), "{v}");
    assert!(err.contains("output: started"), "{v}");
    assert_job_processes_gone(&env);
    let jl = job.log_text();
    assert!(jl.contains("process group killed"), "{jl}");
}

/// The wrapper and the job's grandchild (their PIDs written by the job
/// into "wrapper" and "grandchild") are gone within 5 s.
fn assert_job_processes_gone(env: &Env) {
    let read_pid = |f: &str| -> i32 {
        std::fs::read_to_string(env.path(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (wrapper, grandchild) = (read_pid("wrapper"), read_pid("grandchild"));
    let start = Instant::now();
    while (alive(wrapper) || alive(grandchild)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(grandchild),
        "the job's grandchild {grandchild} survived"
    );
    assert!(!alive(wrapper), "the wrapper {wrapper} did not exit");
}

#[test]
fn shutdown_past_the_drain_stops_the_job_and_requeues_the_event() {
    let env = Env::new("job-drain");
    let socket = env.path("deploy.sock");
    let script =
        r#"echo $PPID > "$JOBDIR/wrapper"; sleep 300 & echo $! > "$JOBDIR/grandchild"; sleep 300"#;
    let job = JobSocket::start(&env, &socket, script);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = job_config(&env, &addr, &socket, "timeout = \"60s\"")
        .replace("drain_timeout = \"10s\"", "drain_timeout = \"1s\"");
    let mut d = Daemon::start(&env, &cfg, &[]);
    d.post("gh", "s-1", b"{}");
    let start = Instant::now();
    while !env.path("grandchild").exists() {
        assert!(start.elapsed() < WAIT, "the job never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).unwrap().success());
    // Back in the queue, the interrupted attempt not counted ...
    assert_eq!(
        state_of(&env.sqlite_url(), "s-1").unwrap(),
        ("pending".into(), 0)
    );
    // ... and the job's processes are gone (the connection closed).
    assert_job_processes_gone(&env);
    assert!(
        job.log_text().contains("webhookd closed the connection"),
        "{}",
        job.log_text()
    );
}

#[test]
fn check_config_names_a_bad_job_and_notes_a_missing_socket() {
    let env = Env::new("job-config");
    let addr = format!("127.0.0.1:{}", free_port());
    let run = |cfg: &str| {
        let path = env.write("webhookd.toml", cfg);
        Command::new(bin())
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .output()
            .unwrap()
    };
    let missing = env.path("not-there.sock");
    let out = run(&job_config(&env, &addr, &missing, ""));
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("job socket") && err.contains("webhook-job-deploy.socket"),
        "{err}"
    );
    let out =
        run(&job_config(&env, &addr, &missing, "").replace("name = \"deploy\"", "name = \"../x\""));
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("action.name"), "{err}");
    let out = run(&job_config(&env, &addr, Path::new("relative.sock"), ""));
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("action.socket"));
}

#[test]
fn job_gets_request_values_only_where_the_unit_allows_them() {
    let env = Env::new("job-values");
    let socket = env.path("deploy.sock");
    let script = r#"printf '%s|' "$@" > "$JOBDIR/args-$WEBHOOK_ID"; echo "$PUSHER" > "$JOBDIR/pusher-$WEBHOOK_ID"; cat "$PAYLOAD" > "$JOBDIR/payload-$WEBHOOK_ID""#;
    let job = JobSocket::start_with(
        &env,
        &socket,
        &["--args", "--env", "PUSHER", "--env", "PAYLOAD"],
        script,
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let values = "args = [{ value = \"body.ref\" }, \"--prod\"]\nenv = { PUSHER = { value = \"body.pusher.name\" } }\nfiles = { PAYLOAD = { value = \"body\" } }\n[hooks.retry]\nmax_attempts = 3\ninitial_delay = \"50ms\"\nmax_delay = \"50ms\"\n";
    let d = Daemon::start(&env, &job_config(&env, &addr, &socket, values), &[]);
    let body = br#"{"ref":"refs/heads/main","pusher":{"name":"octocat"}}"#;
    let id = d.post("gh", "v-1", body).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_state(&env.sqlite_url(), "v-1", "done", WAIT);
    let read = |f: &str| std::fs::read_to_string(env.path(&format!("{f}-{id}"))).unwrap();
    assert_eq!(read("args"), "refs/heads/main|--prod|");
    assert_eq!(read("pusher"), "octocat\n");
    assert_eq!(read("payload").as_bytes(), body);
    drop(job);
    drop(d);

    // The same hook against a unit that allows neither: a dead letter at
    // once (retrying cannot help), saying what to add.
    let env = Env::new("job-values-refused");
    let socket = env.path("deploy.sock");
    let _job = JobSocket::start(&env, &socket, "exit 0");
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&env, &job_config(&env, &addr, &socket, values), &[]);
    let id = d.post("gh", "v-2", body).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        wait_state(&env.sqlite_url(), "v-2", "dead", WAIT),
        ("dead".into(), 1)
    );
    let v = show(&d.config, &id);
    assert!(
        v["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("--args"),
        "{v}"
    );
}
