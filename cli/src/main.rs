//! `tlsfleetctl`: the operator CLI of a tlsfleet control plane (gRPC). See `--help` and
//! cli/README.md; exit codes are listed in both.

use std::io::Write;
use std::process::ExitCode;

use tlsfleetctl::{app, args, docs, error};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Exits 2 on usage errors, 0 for --help and --version.
    let loaded =
        tlsfleet_settings::load::<args::Cli>(&args::sources()).unwrap_or_else(|e| e.exit());
    for w in &loaded.warnings {
        eprintln!("tlsfleetctl: warning: {w}");
    }
    let cli = loaded.args;
    // Completions and the manual need no control plane.
    if let Some(done) = docs::offline(&cli.command) {
        return match done {
            Ok(out) => match std::io::stdout().lock().write_all(&out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tlsfleetctl: cannot write the output: {e}");
                    ExitCode::from(error::Exit::Other as u8)
                }
            },
            Err(err) => {
                eprintln!("tlsfleetctl: error: {err}");
                ExitCode::from(err.exit() as u8)
            }
        };
    }
    match app::run(cli).await {
        Ok(out) => match std::io::stdout().lock().write_all(out.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            // `tlsfleetctl list | head` closes the pipe early: not a failure of the command.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tlsfleetctl: cannot write the output: {e}");
                ExitCode::from(error::Exit::Other as u8)
            }
        },
        Err(err) => {
            eprintln!("tlsfleetctl: error: {err}");
            ExitCode::from(err.exit() as u8)
        }
    }
}
