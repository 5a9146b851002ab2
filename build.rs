//! Build script: record the git commit the binary was built from, for
//! `webhookd --version`, `/status` and the `webhookd_build_info` metric.
//!
//! Degrades gracefully: `WEBHOOKD_GIT_COMMIT` in the environment wins (for
//! builds from a source tarball, where there is no `.git`); otherwise `git`
//! is asked; without git or a repository the commit is "unknown". The build
//! never fails because of this.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=WEBHOOKD_GIT_COMMIT");
    let from_env = std::env::var("WEBHOOKD_GIT_COMMIT")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let commit = match from_env {
        Some(c) => c.trim().to_string(),
        None => {
            // Rebuild when HEAD moves: HEAD itself (branch switches) and the
            // ref it points at (new commits), in this worktree's git dir and
            // the common one (packed refs).
            // (Only files that exist: a missing one would rerun every build.)
            let mut watch = Vec::new();
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                watch.push(PathBuf::from(dir).join("HEAD"));
            }
            if let (Some(common), Some(r)) = (
                git(&["rev-parse", "--git-common-dir"]),
                git(&["rev-parse", "--symbolic-full-name", "HEAD"]),
            ) {
                let common = PathBuf::from(common);
                if r.starts_with("refs/") {
                    watch.push(common.join(&r));
                }
                watch.push(common.join("packed-refs"));
            }
            for p in watch.iter().filter(|p| p.exists()) {
                println!("cargo:rerun-if-changed={}", p.display());
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    // Only hex digits or "unknown" reach the binary (it is printed in /status).
    let commit = if commit.bytes().all(|b| b.is_ascii_hexdigit()) && commit.len() <= 40 {
        commit
    } else {
        "unknown".to_string()
    };
    println!("cargo:rustc-env=WEBHOOKD_GIT_COMMIT={commit}");
}
