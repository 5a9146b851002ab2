//! The IO half of `webhookd import-hooks`: read the file, write the secret
//! files (0600, never over an existing one with other content), print the
//! TOML on stdout and the problems on stderr.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::{convert, Options};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Convert { path: PathBuf, message: String },
    #[error("--secrets-dir {path}: {message}")]
    SecretsDir { path: PathBuf, message: String },
    #[error("cannot write secret file {path}: {source}")]
    WriteSecret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{problems} thing(s) could not be converted (listed above); nothing was written. Use --allow-partial to print the rest")]
    Partial { problems: usize },
    #[error("cannot write the configuration: {0}")]
    Stdout(std::io::Error),
}

/// Run the command. `Ok(n)`: converted, with `n` problems reported (only
/// possible with `allow_partial`).
pub fn run(
    file: &Path,
    secrets_dir: Option<&Path>,
    allow_partial: bool,
    allow_unauthenticated: bool,
) -> Result<usize, RunError> {
    let text = std::fs::read_to_string(file).map_err(|source| RunError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let secrets_dir = match secrets_dir {
        None => None,
        Some(d) => {
            let abs = std::path::absolute(d).map_err(|e| RunError::SecretsDir {
                path: d.to_path_buf(),
                message: e.to_string(),
            })?;
            Some(abs)
        }
    };
    let opts = Options {
        secrets_dir: secrets_dir.clone(),
        allow_unauthenticated,
    };
    let conv = convert(&text, &opts).map_err(|e| RunError::Convert {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut err = std::io::stderr().lock();
    for p in &conv.problems {
        let _ = writeln!(err, "import-hooks: {}: {p}", file.display());
    }
    if !conv.problems.is_empty() && !allow_partial {
        return Err(RunError::Partial {
            problems: conv.problems.len(),
        });
    }
    if let Some(dir) = &secrets_dir {
        if !conv.secrets.is_empty() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| RunError::SecretsDir {
                    path: dir.clone(),
                    message: e.to_string(),
                })?;
        }
        for s in &conv.secrets {
            let path = dir.join(&s.name);
            if let Ok(existing) = std::fs::read(&path) {
                if existing == s.bytes {
                    continue;
                }
                return Err(RunError::WriteSecret {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "exists with other content; remove it or choose another --secrets-dir",
                    ),
                });
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|source| RunError::WriteSecret {
                    path: path.clone(),
                    source,
                })?;
            f.write_all(&s.bytes)
                .and_then(|_| f.sync_all())
                .map_err(|source| RunError::WriteSecret {
                    path: path.clone(),
                    source,
                })?;
            let _ = writeln!(
                err,
                "import-hooks: wrote secret file {} (mode 0600)",
                path.display()
            );
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(conv.toml.as_bytes())
        .and_then(|_| out.flush())
        .map_err(RunError::Stdout)?;
    let _ = writeln!(
        err,
        "import-hooks: {} hook(s) converted, {} left out, {} problem(s)",
        conv.converted,
        conv.skipped,
        conv.problems.len()
    );
    Ok(conv.problems.len())
}
