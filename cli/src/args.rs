//! The command line: every flag, its environment variable and its help text.
//!
//! Only syntax is checked here (what clap can: required flags, conflicts, TLS version
//! spellings). Whether a policy makes sense is the control plane's decision.

use std::path::PathBuf;

use clap::builder::{NonEmptyStringValueParser, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tlsfleet_policy::TlsVersion;
use tonic::transport::Uri;

/// Shown after `--help`: scripts branch on these.
const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  any other failure (an unexpected server error or answer)
  2  usage: bad flags or arguments, no access key, unreadable --ca file
  3  invalid argument: the control plane refused the request (an invalid bucket name,
     an unknown cipher suite, a policy that would serve nothing, ...)
  4  unauthenticated or permission denied: unknown key, wrong secret, clock more than
     15 minutes off, or the key lacks the grant for this call
  5  unavailable: the control plane cannot be reached, its store is down, or the call
     timed out
  6  --wait: not every selected agent enforced the revision within --timeout (the lagging
     agents are named)
  7  --wait: an agent refused (NACKed) the revision (the agents and their reasons are named)

Settings (flags first, then the environment, then the file):
  Every global option is also TLSFLEET_<OPTION> (TLSFLEET_CONTROL, TLSFLEET_ACCESS_KEY_ID,
  TLSFLEET_ACCESS_KEY_SECRET, ...) and a key of the settings file: --config FILE, else
  $TLSFLEET_CLI_CONFIG, else ~/.config/tlsfleet/tlsfleetctl.toml if it exists, e.g.
    control = \"https://control.example:7443\"
    ca = \"/etc/tlsfleet/ca.pem\"
    access-key-id = \"AKID...\"
    access-key-secret = \"...\"   # keep the file chmod 600

Examples:
  tlsfleetctl put --bucket logs --tls-versions TLSv1.2,TLSv1.3 --strong
  tlsfleetctl get --bucket logs --output json
  tlsfleetctl put --bucket logs --tls-versions TLSv1.3 --wait
  tlsfleetctl rollout status --wait --timeout 2m --selector zone=eu-1
  tlsfleetctl rollout";

/// The per-user settings file: `$XDG_CONFIG_HOME/tlsfleet/tlsfleetctl.toml`, else
/// `~/.config/tlsfleet/tlsfleetctl.toml` (read when it exists; `--config` or
/// `TLSFLEET_CLI_CONFIG` name another).
pub fn default_config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("tlsfleet").join("tlsfleetctl.toml"))
}

/// Operate a tlsfleet control plane: set, read, list and delete per-bucket TLS policies,
/// and watch the fleet of edge agents apply them.
#[derive(Debug, Parser)]
#[command(name = "tlsfleetctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, before or after the command name.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Control plane gRPC URL. https:// connects with TLS (trusting --ca, else the system CA
    /// bundle); http:// connects in plain text, to a loopback address only unless --insecure.
    #[arg(
        long,
        env = "TLSFLEET_CONTROL",
        default_value = "http://127.0.0.1:7443",
        value_name = "URL",
        value_parser = parse_control_url,
        global = true
    )]
    pub control: Uri,

    /// PEM file of the CA certificate(s) that signed the control plane's certificate
    /// (https:// only). Default: the system bundle ($SSL_CERT_FILE or the distribution's).
    #[arg(long, value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,

    /// PEM client certificate for a control plane that requires mTLS (https:// only; with
    /// --client-key).
    #[arg(long, value_name = "FILE", global = true, requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(long, value_name = "FILE", global = true, requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// Allow a plaintext http:// --control URL off loopback: anyone on the path could read the
    /// policies and the agents' state (the signatures keep them from changing what you send).
    #[arg(long, global = true)]
    pub insecure: bool,

    /// Access key id the calls are signed with.
    #[arg(long, env = "TLSFLEET_ACCESS_KEY_ID", value_name = "ID", global = true)]
    pub access_key_id: Option<String>,

    /// Secret of the access key. Prefer the environment variable: a flag shows in the
    /// process list.
    #[arg(
        long,
        env = "TLSFLEET_ACCESS_KEY_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        global = true
    )]
    pub access_key_secret: Option<String>,

    /// Output format: human (aligned text) or json (one JSON document on stdout).
    #[arg(long, value_enum, default_value_t = Format::Human, global = true)]
    pub output: Format,

    /// How long to wait for the connection and each call (default 10s); with --wait, for the
    /// whole rollout (default 5m). A number of seconds, or a number and a unit (500ms, 30s,
    /// 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout, global = true)]
    pub timeout: Option<std::time::Duration>,
}

/// The longest `--timeout`.
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = match s.parse::<u64>() {
        Ok(0) => return Err("must be more than zero".to_owned()),
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => tlsfleet_net::parse_duration(s)?,
    };
    if d > MAX_TIMEOUT {
        return Err("at most 24h".to_owned());
    }
    Ok(d)
}

impl GlobalArgs {
    /// The deadline of one call: `--timeout`, or 10 s; while waiting for a rollout, at most
    /// 10 s (the wait as a whole has the `--timeout`).
    pub fn call_timeout(&self, waiting: bool) -> std::time::Duration {
        let call = std::time::Duration::from_secs(10);
        match self.timeout {
            Some(t) if waiting => t.min(call),
            Some(t) => t,
            None => call,
        }
    }

    /// How long `--wait` waits: `--timeout`, or 5 minutes.
    pub fn wait_timeout(&self) -> std::time::Duration {
        self.timeout.unwrap_or(std::time::Duration::from_secs(300))
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    Human,
    /// One JSON document per command, field names as in the gRPC API (snake_case).
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store a bucket's TLS policy (HttpsConfigService.Put) and print the revision and what
    /// the edge will serve of it.
    Put(PutArgs),
    /// Print a bucket's stored policy, what the edge serves of it, and its revision.
    Get(BucketArgs),
    /// List stored policies (every page unless --one-page or --page-token).
    List(ListArgs),
    /// Turn TLS version management off for a bucket (a Put with TLS disabled): the edge
    /// then serves its default policy to that bucket. A downgrade: needs --allow-downgrade.
    Disable(ChangeArgs),
    /// Delete a bucket's stored policy (a downgrade unless it kept nothing out).
    Delete(ChangeArgs),
    /// The audit trail: every change and refused change, oldest first (ListHistory).
    History(HistoryArgs),
    /// A bucket's TLS usage as the agents report it (GetUsage): handshakes and requests by
    /// version and suite, refusals, the top client networks and User-Agents.
    Usage(UsageArgs),
    /// The fleet default policy: get, set, clear.
    #[command(subcommand)]
    Default(DefaultCommand),
    /// List the edge agents: state, applied and sent revisions, labels, last NACK.
    Agents,
    /// Show which agents enforce a revision, which are pending and which failed; `rollout
    /// status --wait` waits until they all do.
    Rollout(RolloutArgs),
    /// Print a shell completion script, e.g. `tlsfleetctl completion bash >
    /// /etc/bash_completion.d/tlsfleetctl` (no control plane needed).
    Completion(CompletionArgs),
    /// Print the manual page (roff: `tlsfleetctl man | man -l -`), or write one page per
    /// command into a directory with --dir (no control plane needed).
    Man(ManArgs),
}

/// `tlsfleetctl completion SHELL`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `tlsfleetctl man [--dir DIR]`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write tlsfleetctl.1 and tlsfleetctl-COMMAND.1 for every command here instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Where tlsfleetctl reads its settings besides its flags.
pub fn sources() -> tlsfleet_settings::Sources {
    tlsfleet_settings::Sources {
        config_env: "TLSFLEET_CLI_CONFIG",
        default_file: default_config_file(),
        print_config: false,
    }
}

impl Command {
    /// Whether it waits for a rollout (`--wait`).
    pub fn waits(&self) -> bool {
        match self {
            Command::Put(p) => p.wait,
            Command::Rollout(RolloutArgs {
                action: Some(RolloutAction::Status(s)),
                ..
            }) => s.wait.wait,
            Command::Rollout(RolloutArgs {
                action: Some(RolloutAction::Promote(c) | RolloutAction::Abort(c)),
                ..
            }) => c.wait.wait,
            _ => false,
        }
    }
}

/// The bucket a command acts on.
#[derive(Debug, Args)]
pub struct BucketArgs {
    /// Bucket name (the control plane checks it against the OSS naming rules).
    #[arg(long, value_name = "BUCKET")]
    pub bucket: String,
}

/// A bucket, for a change that may be a downgrade.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Bucket name (the control plane checks it against the OSS naming rules).
    #[arg(long, value_name = "BUCKET")]
    pub bucket: String,

    /// Accept a downgrade: a change that lets in a version or cipher suite the current policy
    /// keeps out (refused without this flag, saying what it would let in).
    #[arg(long)]
    pub allow_downgrade: bool,
}

/// `usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    #[arg(long, value_name = "BUCKET")]
    pub bucket: String,

    /// The last DURATION (e.g. 10m, 1h). Default: everything kept (one hour).
    #[arg(long, value_name = "DURATION", value_parser = tlsfleet_net::parse_duration)]
    pub since: Option<std::time::Duration>,
}

/// `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this bucket's changes.
    #[arg(long, value_name = "BUCKET")]
    pub bucket: Option<String>,

    /// Only changes of the last DURATION (e.g. 1h, 30m, 7d). Default: the whole retained trail.
    #[arg(long, value_name = "DURATION", value_parser = tlsfleet_net::parse_duration)]
    pub since: Option<std::time::Duration>,

    /// At most this many records (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

/// `put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// Bucket name (the control plane checks it against the OSS naming rules).
    #[arg(long, value_name = "BUCKET")]
    pub bucket: String,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Store nothing: show the effective policy, whether it is a downgrade, and what share of
    /// the bucket's recent handshakes and requests it would refuse, by version, suite and
    /// client (from the agents' usage reports).
    #[arg(long)]
    pub dry_run: bool,

    /// With --dry-run: the traffic of the last DURATION (default: all kept, one hour).
    #[arg(long, value_name = "DURATION", requires = "dry_run", value_parser = tlsfleet_net::parse_duration)]
    pub since: Option<std::time::Duration>,

    /// After the write, wait until every agent enforces it (with --canary: every canary
    /// agent) and print how long that took from the write to the last acknowledgement (exit
    /// codes as for `rollout status --wait`).
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,

    /// Stage the policy as a canary on the agents with this label only (KEY=VALUE; repeat
    /// for several, all must match). The stored policy, what GET returns, changes at
    /// `rollout promote`; `rollout abort` ends the canary.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label, conflicts_with = "dry_run")]
    pub canary: Vec<(String, String)>,
}

/// `default`.
#[derive(Debug, Subcommand)]
pub enum DefaultCommand {
    /// Print the fleet default policy (what buckets without a policy, and connections with no
    /// SNI or the bare domain, get).
    Get,
    /// Set the fleet default policy (HttpsConfigService.PutDefault).
    Set(PolicyArgs),
    /// Back to the built-in default: TLS 1.2 and 1.3, every suite (a downgrade unless the
    /// default kept nothing out).
    Clear {
        /// Accept a downgrade.
        #[arg(long)]
        allow_downgrade: bool,
    },
}

/// A policy, as `put` and `default set` take it.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// TLS versions to allow, comma-separated, exactly as OSS spells them. TLSv1.0 and TLSv1.1
    /// are stored but not served (the answer says so).
    #[arg(
        long,
        value_name = "VERSIONS",
        value_delimiter = ',',
        required = true,
        value_parser = tls_version_parser()
    )]
    pub tls_versions: Vec<TlsVersion>,

    /// TLS 1.2 cipher suites to allow, comma-separated, OpenSSL or IANA names
    /// (e.g. ECDHE-ECDSA-AES128-GCM-SHA256). Enables custom cipher suites.
    #[arg(
        long,
        value_name = "SUITES",
        value_delimiter = ',',
        value_parser = NonEmptyStringValueParser::new()
    )]
    pub cipher_suites: Vec<String>,

    /// TLS 1.3 cipher suites to allow, comma-separated (e.g. TLS_AES_256_GCM_SHA384).
    /// Enables custom cipher suites.
    #[arg(
        long,
        value_name = "SUITES",
        value_delimiter = ',',
        value_parser = NonEmptyStringValueParser::new()
    )]
    pub tls13_cipher_suites: Vec<String>,

    /// Allow only the strong cipher-suite set. Without --strong or a custom list, every
    /// suite is allowed.
    #[arg(long, conflicts_with_all = ["cipher_suites", "tls13_cipher_suites"])]
    pub strong: bool,

    /// Accept a downgrade: a policy that lets in a version or cipher suite the current one
    /// keeps out, adds TLSv1.0/1.1 (refused without this flag, saying what it would let in).
    #[arg(long)]
    pub allow_downgrade: bool,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only buckets whose name starts with this prefix.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub prefix: String,

    /// Policies per List call (0: the server's default, 100). The command still fetches
    /// every page unless --one-page or --page-token is given.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=1000)
    )]
    pub page_size: u32,

    /// Fetch every page (the default; accepted so scripts can say so).
    #[arg(long, conflicts_with_all = ["one_page", "page_token"])]
    pub all: bool,

    /// Fetch only the first page and print the token of the next one.
    #[arg(long)]
    pub one_page: bool,

    /// Fetch only the page at this token (from a previous --one-page answer).
    #[arg(long, value_name = "TOKEN", value_parser = NonEmptyStringValueParser::new())]
    pub page_token: Option<String>,
}

impl ListArgs {
    /// Whether to follow `next_page_token` to the end.
    pub fn every_page(&self) -> bool {
        !self.one_page && self.page_token.is_none()
    }
}

/// `rollout` (alone: the status of a revision, as `rollout status` without waiting).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub action: Option<RolloutAction>,

    /// Revision to report on (0: the newest policy change).
    #[arg(long, value_name = "R", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub revision: i64,
}

/// What `rollout` does.
#[derive(Debug, Subcommand)]
pub enum RolloutAction {
    /// Which agents enforce a revision; with --wait, wait until every selected agent does.
    Status(RolloutStatusArgs),
    /// Make a bucket's canary its policy, fleet-wide (refused if the policy changed since the
    /// canary started).
    Promote(CanaryArgs),
    /// End a bucket's canary: its agents go back to the stored policy.
    Abort(CanaryArgs),
}

/// `rollout promote|abort`.
#[derive(Debug, Args)]
pub struct CanaryArgs {
    #[arg(long, value_name = "BUCKET")]
    pub bucket: String,

    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `rollout status`.
#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// Revision to report on (0: the newest policy change; with --bucket, the canary's).
    #[arg(long, value_name = "R", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub revision: i64,

    /// A bucket with a canary: its agents (the canary's selector) at the canary's revision,
    /// and the handshakes each of them refused for the bucket since the canary started.
    #[arg(long, value_name = "BUCKET")]
    pub bucket: Option<String>,

    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Waiting for a rollout (`rollout status --wait`, `put --wait`).
#[derive(Debug, Args, Clone, Default)]
pub struct WaitArgs {
    /// Wait until every selected agent enforces the revision: a progress bar on a terminal,
    /// a line per change otherwise. Exits 0 when they do, 6 when --timeout passes first, 7
    /// when an agent refuses (NACKs) it, naming the agents.
    #[arg(long)]
    pub wait: bool,

    /// Only agents with this label (KEY=VALUE; repeat for several, all must match).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub selector: Vec<(String, String)>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// The OSS spellings, listed in `--help` and in clap's error for anything else.
fn tls_version_parser() -> impl TypedValueParser<Value = TlsVersion> {
    PossibleValuesParser::new(TlsVersion::ALL.map(TlsVersion::as_str)).try_map(|s| s.parse())
}

fn parse_control_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("expected an http:// or https:// URL".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        // gRPC paths are absolute: a path here would be silently dropped.
        return Err("the URL must not have a path".to_owned());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{error::ErrorKind, CommandFactory};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tlsfleetctl").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn put_parses_versions_and_suites() {
        let cli = parse(&[
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            "TLSv1.2,TLSv1.3",
            "--cipher-suites",
            "ECDHE-RSA-AES128-GCM-SHA256,ECDHE-ECDSA-AES256-GCM-SHA384",
            "--tls13-cipher-suites",
            "TLS_AES_256_GCM_SHA384",
        ])
        .unwrap();
        let Command::Put(put) = cli.command else {
            panic!("not put")
        };
        assert_eq!(
            put.policy.tls_versions,
            [TlsVersion::Tls12, TlsVersion::Tls13]
        );
        assert_eq!(
            put.policy.cipher_suites,
            [
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDHE-ECDSA-AES256-GCM-SHA384"
            ]
        );
        assert_eq!(put.policy.tls13_cipher_suites, ["TLS_AES_256_GCM_SHA384"]);
        assert!(!put.policy.strong);
    }

    #[test]
    fn put_refuses_bad_input() {
        let cases: &[&[&str]] = &[
            &["put", "--bucket", "b", "--tls-versions", "TLSv1.4"],
            &["put", "--bucket", "b", "--tls-versions", "tlsv1.2"],
            &["put", "--bucket", "b"],
            &["put", "--tls-versions", "TLSv1.2"],
            &[
                "put",
                "--bucket",
                "b",
                "--tls-versions",
                "TLSv1.2",
                "--strong",
                "--cipher-suites",
                "X",
            ],
            &[
                "put",
                "--bucket",
                "b",
                "--tls-versions",
                "TLSv1.2",
                "--strong",
                "--tls13-cipher-suites",
                "X",
            ],
            &[
                "put",
                "--bucket",
                "b",
                "--tls-versions",
                "TLSv1.2",
                "--cipher-suites",
                "",
            ],
        ];
        for args in cases {
            let err = parse(args).expect_err(&format!("{args:?} must be refused"));
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn globals_work_after_the_command_and_default_sensibly() {
        let cli = parse(&["get", "--bucket", "b", "--output", "json", "--timeout", "3"]).unwrap();
        assert_eq!(cli.global.output, Format::Json);
        assert_eq!(cli.global.call_timeout(false), Duration::from_secs(3));
        let cli = parse(&["agents"]).unwrap();
        // The test environment may set TLSFLEET_CONTROL; only check the default when it doesn't.
        if std::env::var_os("TLSFLEET_CONTROL").is_none() {
            assert_eq!(cli.global.control.to_string(), "http://127.0.0.1:7443/");
        }
        assert_eq!(cli.global.output, Format::Human);
        assert_eq!(cli.global.call_timeout(false), Duration::from_secs(10));
        assert_eq!(cli.global.wait_timeout(), Duration::from_secs(300));
    }

    #[test]
    fn wait_flags_and_timeouts() {
        let cli = parse(&[
            "rollout",
            "status",
            "--wait",
            "--timeout",
            "2m",
            "--selector",
            "zone=a",
            "--selector",
            "tier=canary",
            "--revision",
            "7",
        ])
        .unwrap();
        assert!(cli.command.waits());
        // The wait has the whole --timeout; each call at most 10 s of it.
        assert_eq!(cli.global.wait_timeout(), Duration::from_secs(120));
        assert_eq!(cli.global.call_timeout(true), Duration::from_secs(10));
        let Command::Rollout(RolloutArgs {
            action: Some(RolloutAction::Status(s)),
            ..
        }) = cli.command
        else {
            panic!("not rollout status");
        };
        assert_eq!(s.revision, 7);
        assert_eq!(
            s.wait.selector,
            [
                ("zone".into(), "a".into()),
                ("tier".into(), "canary".into())
            ]
        );
        // `rollout` alone still works, and takes --revision.
        let cli = parse(&["rollout", "--revision", "5"]).unwrap();
        assert!(!cli.command.waits());
        assert!(parse(&[
            "put",
            "--bucket",
            "b",
            "--tls-versions",
            "TLSv1.3",
            "--wait"
        ])
        .unwrap()
        .command
        .waits());
        for bad in [
            &["rollout", "status", "--selector", "novalue"][..],
            &["rollout", "status", "--selector", "=v"],
            &[
                "put",
                "--bucket",
                "b",
                "--tls-versions",
                "TLSv1.3",
                "--wait",
                "--dry-run",
            ],
            &["agents", "--timeout", "25h"],
            &["agents", "--timeout", "0s"],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        assert_eq!(
            parse(&["agents", "--timeout", "500ms"])
                .unwrap()
                .global
                .call_timeout(false),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn control_url_must_be_http_or_https_without_path() {
        assert!(parse_control_url("https://control.example:7443").is_ok());
        assert!(parse_control_url("http://[::1]:7443/").is_ok());
        for bad in [
            "ftp://x",
            "127.0.0.1:7443",
            "http://",
            "http://x/api",
            "not a url",
        ] {
            assert!(parse_control_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse(&["--timeout", "0", "agents"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn list_paging_flags() {
        let every = |args: &[&str]| match parse(args).unwrap().command {
            Command::List(l) => l.every_page(),
            _ => panic!("not list"),
        };
        assert!(every(&["list"]));
        assert!(every(&["list", "--all", "--page-size", "10"]));
        assert!(!every(&["list", "--one-page"]));
        assert!(!every(&["list", "--page-token", "abc"]));
        assert!(parse(&["list", "--all", "--one-page"]).is_err());
        assert!(parse(&["list", "--page-size", "1001"]).is_err());
    }

    #[test]
    fn help_documents_exit_codes_and_hides_the_secret() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("TLSFLEET_ACCESS_KEY_SECRET"), "{help}");
        if let Ok(secret) = std::env::var("TLSFLEET_ACCESS_KEY_SECRET") {
            assert!(!help.contains(&secret) || secret.is_empty());
        }
    }
}
