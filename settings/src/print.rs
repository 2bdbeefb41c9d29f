//! `--print-config`: the effective settings, as a config file the binary reads back.

use std::{fmt::Write as _, path::Path};

use clap::{parser::ValueSource, ArgMatches, Command};

use super::{is_repeatable, is_secret, is_switch, takes_setting};

/// What a secret's value prints as.
pub const MASK: &str = "<masked>";

/// The settings of `cmd` as `matches` has them, one line each, with where each came from.
pub(super) fn effective(
    cmd: &Command,
    matches: &ArgMatches,
    file: Option<&Path>,
    from_file: &[String],
) -> String {
    let mut out = format!(
        "# {}: effective settings (command line > environment > {} > built-in defaults)\n",
        cmd.get_name(),
        file.map_or("config file".to_owned(), |p| p.display().to_string()),
    );
    for arg in cmd.get_arguments().filter(|a| takes_setting(a)) {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) if from_file.iter().any(|f| f == id) => "file",
            Some(ValueSource::CommandLine) => "command line",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if raw.is_empty() {
            let _ = writeln!(out, "# {long} =  ({source})");
            continue;
        }
        let secret = is_secret(arg);
        let value = |v: &str| -> String {
            match (secret, v.parse::<i64>()) {
                (true, _) => toml::Value::String(MASK.to_owned()).to_string(),
                (false, Ok(n)) => n.to_string(),
                (false, Err(_)) => toml::Value::String(v.to_owned()).to_string(),
            }
        };
        let text = if is_switch(arg) {
            raw.first().map_or("false".to_owned(), |v| v.clone())
        } else if is_repeatable(arg) {
            let items: Vec<String> = raw.iter().map(|v| value(v)).collect();
            format!("[{}]", items.join(", "))
        } else {
            raw.first().map(|v| value(v)).unwrap_or_default()
        };
        let _ = writeln!(out, "{long} = {text}  # {source}");
    }
    out
}
