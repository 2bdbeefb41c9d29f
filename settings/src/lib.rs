//! Every binary's flags, from three places: the command line, the environment and a TOML
//! file, in that order of precedence (then the built-in defaults).
//!
//! * Every long flag `--some-flag` of the top-level command is also read from the environment
//!   variable `TLSFLEET_SOME_FLAG` (a repeatable flag takes a comma-separated list there).
//! * `--config FILE` (or the binary's own variable, e.g. `TLSFLEET_CONTROL_CONFIG`) names a
//!   TOML file of the same settings by their flag names: `grpc-listen = "0.0.0.0:7443"`,
//!   `domain = ["oss.example.com"]`, `insecure = true` (`grpc_listen` is accepted too). A key
//!   that is no flag is an error naming the file and the key; so is a value of the wrong kind.
//!   A setting given on the command line or in the environment replaces the file's, whole.
//! * `--print-config` prints the effective settings as such a file (secrets masked) and exits.
//!
//! Internally a file's settings become flags placed before the command line's, for every key
//! the command line and the environment leave unset, so that every check clap makes (values,
//! flags that require each other) applies to them exactly as to typed flags.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{parser::ValueSource, Arg, ArgAction, ArgMatches, Command, FromArgMatches};

pub mod logs;
mod print;

pub use logs::LogFormat;
pub use print::MASK;

/// The prefix of every flag's environment variable.
pub const ENV_PREFIX: &str = "TLSFLEET_";

/// Where a binary looks for its settings besides its flags.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The environment variable naming the config file (besides `--config`).
    pub config_env: &'static str,
    /// The file read when neither names one, if it exists (tlsfleetctl's per-user file).
    pub default_file: Option<PathBuf>,
    /// Whether the binary takes `--print-config` (the servers; tlsfleetctl's commands are its
    /// output).
    pub print_config: bool,
}

/// What went wrong reading the settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {} is not valid TOML: {source}", path.display())]
    Toml {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("unknown setting {key:?} in {}: settings are the long flag names ({known})", path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("setting {key:?} in {}: {why}", path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        why: String,
    },
    /// A flag's own error (also for values that came from the file or the environment), or
    /// `--help` / `--version`: `exit()` prints it and exits as clap does.
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

impl SettingsError {
    /// Prints the error (or the help) and exits: 0 for help and version, 2 otherwise.
    pub fn exit(self) -> ! {
        match self {
            SettingsError::Clap(e) => e.exit(),
            other => {
                eprintln!("error: {other}");
                std::process::exit(2)
            }
        }
    }
}

/// Settings read: the parsed flags and, with `--print-config`, the text to print instead of
/// running.
#[derive(Debug)]
pub struct Loaded<T> {
    pub args: T,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    /// `--print-config`: the effective settings as a config file, secrets masked.
    pub print: Option<String>,
    /// What the binary should say before it starts (a secret in a file others can read).
    pub warnings: Vec<String>,
}

/// The process's own flags, environment and file.
pub fn load<T: clap::CommandFactory + FromArgMatches>(
    sources: &Sources,
) -> Result<Loaded<T>, SettingsError> {
    load_from(T::command(), std::env::args_os().collect(), sources)
}

/// How a server starts: its settings ([`load`]; on an error, says it and exits 2), then with
/// `--print-config` prints them and returns None (the binary exits 0); else installs the log
/// writer in the format the settings chose (`log_format`), logs the settings' warnings, and
/// returns the settings with the writer's guard (hold it until the process exits).
pub fn start<T: clap::CommandFactory + FromArgMatches>(
    sources: &Sources,
    log_format: impl FnOnce(&T) -> LogFormat,
) -> Option<(T, logs::LogGuard)> {
    let loaded = load::<T>(sources).unwrap_or_else(|e| e.exit());
    if let Some(text) = loaded.print {
        print!("{text}");
        return None;
    }
    let guard = logs::init(log_format(&loaded.args));
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Some((loaded.args, guard))
}

/// [`load`] from `argv` (its first item is the binary's name) for `cmd`.
pub fn load_from<T: FromArgMatches>(
    cmd: Command,
    argv: Vec<OsString>,
    sources: &Sources,
) -> Result<Loaded<T>, SettingsError> {
    let cmd = with_settings_flags(cmd, sources);
    // A first, forgiving pass: which file, and which flags the command line and the
    // environment already set.
    let first = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&argv)?;
    let file = match first.get_one::<PathBuf>("config") {
        Some(path) => Some(path.clone()),
        None => sources.default_file.clone().filter(|p| p.is_file()),
    };
    let mut full = argv.clone();
    let mut from_file = FileSettings::default();
    if let Some(path) = &file {
        from_file = file_flags(&cmd, &first, path)?;
        full.splice(1..1, from_file.flags.drain(..));
    }
    let matches = cmd.clone().try_get_matches_from(full)?;
    let args = T::from_arg_matches(&matches)?;
    let print = (sources.print_config && matches.get_flag("print_config"))
        .then(|| print::effective(&cmd, &matches, file.as_deref(), &from_file.ids));
    let warnings = match &file {
        Some(path) if from_file.holds_secret => readable_secret(path),
        _ => vec![],
    };
    Ok(Loaded {
        args,
        file,
        print,
        warnings,
    })
}

/// `cmd` as [`load`] parses it: with an environment variable for every long flag that has
/// none, `--config` and (for the servers) `--print-config`. For generated completions and
/// manual pages.
pub fn command(cmd: Command, sources: &Sources) -> Command {
    with_settings_flags(cmd, sources)
}

/// `cmd` with an environment variable for every long flag that has none, `--config` and
/// `--print-config`.
fn with_settings_flags(cmd: Command, sources: &Sources) -> Command {
    let name = cmd.get_name().to_owned();
    cmd.mut_args(|arg| {
        if arg.get_env().is_some() || !takes_setting(&arg) {
            return arg;
        }
        let Some(long) = arg.get_long() else {
            return arg;
        };
        let env = format!("{ENV_PREFIX}{}", long.replace('-', "_").to_uppercase());
        let multiple = is_repeatable(&arg) && arg.get_value_delimiter().is_none();
        let arg = arg.env(env);
        if multiple {
            arg.value_delimiter(',')
        } else {
            arg
        }
    })
    .arg(
        Arg::new("config")
            .long("config")
            .global(true)
            .env(sources.config_env)
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help(format!(
                "TOML file of settings by flag name; the command line and the environment \
                 (TLSFLEET_<FLAG>) take precedence over it [default file: {}]",
                sources
                    .default_file
                    .as_ref()
                    .map_or("none".to_owned(), |p| p.display().to_string())
            )),
    )
    .args(sources.print_config.then(|| {
        Arg::new("print_config")
            .long("print-config")
            .action(ArgAction::SetTrue)
            .help(format!(
                "Print the effective settings of {name} as a config file (secrets masked) \
                 and exit"
            ))
    }))
}

/// A warning when the config file (which holds a secret) can be read by others than its owner.
fn readable_secret(path: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => vec![format!(
            "{} holds a secret and others can read it: chmod 600 it",
            path.display()
        )],
        _ => vec![],
    }
}

/// Whether a setting is a secret (masked by `--print-config`, warned about in a readable file).
fn is_secret(arg: &Arg) -> bool {
    arg.get_id().as_str().ends_with("secret")
}

/// Whether an argument is a setting (not help, version, or the settings flags themselves).
fn takes_setting(arg: &Arg) -> bool {
    !matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    ) && !matches!(arg.get_id().as_str(), "config" | "print_config")
        && arg.get_long().is_some()
}

fn is_repeatable(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// What a config file contributes.
#[derive(Default)]
struct FileSettings {
    /// Its settings as flags, for the keys the command line and the environment left unset.
    flags: Vec<OsString>,
    /// The ids of the flags those set.
    ids: Vec<String>,
    /// Whether it holds a secret (whether or not something else overrides it).
    holds_secret: bool,
}

fn file_flags(
    cmd: &Command,
    first: &ArgMatches,
    path: &Path,
) -> Result<FileSettings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| SettingsError::Toml {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    let mut flags = Vec::new();
    let mut ids = Vec::new();
    let mut holds_secret = false;
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| takes_setting(a) && a.get_long() == Some(long.as_str()))
        else {
            return Err(SettingsError::UnknownKey {
                path: path.to_owned(),
                known: known_keys(cmd),
                key,
            });
        };
        holds_secret |= is_secret(arg);
        let set_elsewhere = matches!(
            first.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if set_elsewhere {
            continue;
        }
        ids.push(arg.get_id().as_str().to_owned());
        let bad = |why: &str| SettingsError::BadValue {
            path: path.to_owned(),
            key: key.clone(),
            why: why.to_owned(),
        };
        let flag = OsString::from(format!("--{long}"));
        if is_switch(arg) {
            match value {
                toml::Value::Boolean(true) => flags.push(flag),
                toml::Value::Boolean(false) => {}
                _ => return Err(bad("a switch takes true or false")),
            }
            continue;
        }
        let values = match value {
            toml::Value::Array(items) if is_repeatable(arg) => items,
            toml::Value::Array(_) => {
                return Err(bad("one value expected; this flag is not repeatable"))
            }
            one => vec![one],
        };
        for v in values {
            let text = scalar(v).ok_or_else(|| bad("a string, number or boolean expected"))?;
            flags.push(flag.clone());
            flags.push(OsString::from(text));
        }
    }
    Ok(FileSettings {
        flags,
        ids,
        holds_secret,
    })
}

fn scalar(v: toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

fn known_keys(cmd: &Command) -> String {
    let keys: Vec<&str> = cmd
        .get_arguments()
        .filter(|a| takes_setting(a))
        .filter_map(Arg::get_long)
        .collect();
    keys.join(", ")
}

#[cfg(test)]
mod tests;
