//! Listening sockets and what each serves: the roles of sockets passed by
//! systemd (by `FileDescriptorName=`), and binding the configured addresses
//! when systemd passed none. Taking the inherited sockets themselves is
//! `systemd::activation` (it must happen before any thread exists).

use std::path::Path;

use crate::config::{parse_listen, Config, ListenAddr, ListenError};
use crate::systemd::activation::{Inherited, Socket};

/// What a listening socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// POST /hooks/{id} only.
    Web,
    /// /healthz /readyz /status /metrics only.
    Admin,
    /// Both (when there is a single socket).
    All,
}

impl Role {
    pub fn serves_hooks(self) -> bool {
        matches!(self, Role::Web | Role::All)
    }
    pub fn serves_admin(self) -> bool {
        matches!(self, Role::Admin | Role::All)
    }
}

/// A socket with its role.
#[derive(Debug)]
pub struct Bound {
    pub socket: Socket,
    pub role: Role,
}

/// Why a configured address could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr}: address already in use. Another process holds it (an old webhookd, or webhook.socket). Under systemd, do not bind here: `systemctl start webhook.socket` and let systemd pass the socket")]
    AddrInUse { addr: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// Decide roles for inherited sockets: `admin` is admin; every other name
/// serves hooks, and also admin when there is no admin socket.
pub fn assign_roles(inherited: Vec<Inherited>) -> Vec<Bound> {
    let has_admin = inherited.iter().any(|i| i.name == "admin");
    inherited
        .into_iter()
        .map(|i| {
            let role = if i.name == "admin" {
                Role::Admin
            } else if has_admin {
                Role::Web
            } else {
                Role::All
            };
            Bound {
                socket: i.socket,
                role,
            }
        })
        .collect()
}

fn bind_one(addr: &str) -> Result<Socket, BindError> {
    let parsed = parse_listen(addr)?;
    let map = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            BindError::AddrInUse { addr: addr.into() }
        } else {
            BindError::Bind {
                addr: addr.into(),
                source,
            }
        }
    };
    let socket = match parsed {
        ListenAddr::Tcp(a) => Socket::Tcp(std::net::TcpListener::bind(a).map_err(map)?),
        ListenAddr::Unix(p) => {
            remove_stale_unix_socket(&p);
            Socket::Unix(std::os::unix::net::UnixListener::bind(&p).map_err(map)?)
        }
    };
    socket.set_nonblocking().map_err(|source| BindError::Bind {
        addr: addr.into(),
        source,
    })?;
    Ok(socket)
}

/// A socket file left by a crashed run blocks bind(); remove it only if
/// nobody answers on it.
fn remove_stale_unix_socket(p: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(p) {
        if meta.file_type().is_socket() && std::os::unix::net::UnixStream::connect(p).is_err() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Bind the configured addresses (used when systemd passed no socket).
pub fn bind_configured(cfg: &Config) -> Result<Vec<Bound>, BindError> {
    let web = bind_one(&cfg.server.listen)?;
    match &cfg.server.admin_listen {
        Some(a) => Ok(vec![
            Bound {
                socket: web,
                role: Role::Web,
            },
            Bound {
                socket: bind_one(a)?,
                role: Role::Admin,
            },
        ]),
        None => Ok(vec![Bound {
            socket: web,
            role: Role::All,
        }]),
    }
}

/// The sockets to serve: those systemd passed, with their roles, or else
/// the configured addresses, bound now.
pub fn sockets(inherited: Vec<Inherited>, cfg: &Config) -> Result<Vec<Bound>, BindError> {
    if inherited.is_empty() {
        return bind_configured(cfg);
    }
    log::info!(
        "using {} socket(s) passed by systemd: {}",
        inherited.len(),
        inherited
            .iter()
            .map(|i| format!("{}={}", i.name, i.socket.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(assign_roles(inherited))
}
