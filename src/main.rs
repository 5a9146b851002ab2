//! `webhookd`: parse the command line, take systemd's sockets before any
//! thread exists, run, and map errors to exit codes. All of it lives in
//! [`webhookd::cli::main`].

fn main() -> std::process::ExitCode {
    webhookd::cli::main()
}
