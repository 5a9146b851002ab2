//! Sockets passed by systemd (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`).
//!
//! Must run before any thread exists: `listenfd` removes the variables from
//! the environment, which is only sound while the process is single-threaded.

use std::os::unix::net::UnixListener;

use listenfd::ListenFd;

/// A listening socket, TCP or Unix-domain, still in blocking std form.
#[derive(Debug)]
pub enum Socket {
    Tcp(std::net::TcpListener),
    Unix(UnixListener),
}

impl Socket {
    /// A human-readable local address for logs.
    pub fn describe(&self) -> String {
        match self {
            Socket::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp socket".into()),
            Socket::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix socket".into()),
        }
    }

    /// systemd hands over blocking sockets; tokio needs non-blocking ones
    /// (release builds do not check, and a blocking accept stalls a worker).
    pub fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            Socket::Tcp(l) => l.set_nonblocking(true),
            Socket::Unix(l) => l.set_nonblocking(true),
        }
    }
}

/// One inherited socket and its `FileDescriptorName=`.
#[derive(Debug)]
pub struct Inherited {
    pub name: String,
    pub socket: Socket,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("invalid socket-activation environment: {0}")]
    Env(std::io::Error),
    #[error("inherited file descriptor #{index} ({name}) is not a listening TCP or Unix stream socket: {source}")]
    NotAStreamSocket {
        index: usize,
        name: String,
        source: std::io::Error,
    },
    #[error("cannot make inherited socket {name} non-blocking: {source}")]
    NonBlocking {
        name: String,
        source: std::io::Error,
    },
}

/// Take every socket systemd passed us. Empty when not socket-activated.
pub fn take_inherited() -> Result<Vec<Inherited>, ActivationError> {
    // Names first (this also sets FD_CLOEXEC, so commands we run later do not
    // inherit the listening sockets).
    let names: Vec<String> = sd_notify::listen_fds_with_names()
        .map_err(ActivationError::Env)?
        .map(|(_, name)| name)
        .collect();
    let mut fds = ListenFd::from_env();
    // Called from main() before the runtime or any other thread starts, so
    // changing the environment cannot race a reader.
    std::env::remove_var("LISTEN_FDNAMES");
    let mut out = Vec::with_capacity(fds.len());
    for index in 0..fds.len() {
        let name = names
            .get(index)
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        let socket = match fds.take_tcp_listener(index) {
            Ok(Some(l)) => Socket::Tcp(l),
            Ok(None) => continue,
            Err(_) => match fds.take_unix_listener(index) {
                Ok(Some(l)) => Socket::Unix(l),
                Ok(None) => continue,
                Err(source) => {
                    return Err(ActivationError::NotAStreamSocket {
                        index,
                        name,
                        source,
                    })
                }
            },
        };
        socket
            .set_nonblocking()
            .map_err(|source| ActivationError::NonBlocking {
                name: name.clone(),
                source,
            })?;
        out.push(Inherited { name, socket });
    }
    Ok(out)
}
