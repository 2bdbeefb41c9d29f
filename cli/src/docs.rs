//! `tlsfleetctl completion SHELL` and `tlsfleetctl man`: generated from the same clap
//! definitions (and settings flags) the command line is parsed with, so they cannot drift.

use std::path::Path;

use clap::CommandFactory;

use crate::{
    args::{sources, Cli, Command},
    error::CliError,
};

/// The full command, as the binary parses it (with `--config`).
pub fn command() -> clap::Command {
    tlsfleet_settings::command(Cli::command(), &sources())
}

/// What an offline command prints, or None for a command that needs the control plane.
pub fn offline(command: &Command) -> Option<Result<Vec<u8>, CliError>> {
    match command {
        Command::Completion(args) => {
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut self::command(), "tlsfleetctl", &mut out);
            Some(Ok(out))
        }
        Command::Man(args) => Some(match &args.dir {
            None => page(&self::command()),
            Some(dir) => pages(dir).map(|names| {
                let mut listing = names.join("\n");
                listing.push('\n');
                listing.into_bytes()
            }),
        }),
        _ => None,
    }
}

fn page(cmd: &clap::Command) -> Result<Vec<u8>, CliError> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .map_err(|e| CliError::Usage(format!("cannot render the manual: {e}")))?;
    Ok(out)
}

/// Writes tlsfleetctl.1 and one page per command (tlsfleetctl-put.1, tlsfleetctl-default-set.1,
/// ...) into `dir`; the files written.
fn pages(dir: &Path) -> Result<Vec<String>, CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    let root = command();
    write_pages(dir, root, "tlsfleetctl", &mut written)?;
    Ok(written)
}

fn write_pages(
    dir: &Path,
    cmd: clap::Command,
    name: &str,
    written: &mut Vec<String>,
) -> Result<(), CliError> {
    let cmd = cmd.name(name.to_owned());
    let file = dir.join(format!("{name}.1"));
    std::fs::write(&file, page(&cmd)?)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", file.display())))?;
    written.push(file.display().to_string());
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(
            dir,
            sub.clone(),
            &format!("{name}-{}", sub.get_name()),
            written,
        )?;
    }
    Ok(())
}
