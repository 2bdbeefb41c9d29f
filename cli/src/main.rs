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
    let outcome = match docs::offline(&cli.command) {
        Some(done) => done,
        None => app::run(cli).await.map(String::into_bytes),
    };
    finish(outcome)
}

/// Prints what the command answered, or its error; the exit code.
fn finish(outcome: Result<Vec<u8>, error::CliError>) -> ExitCode {
    match outcome {
        Ok(out) => match std::io::stdout().lock().write_all(&out) {
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
