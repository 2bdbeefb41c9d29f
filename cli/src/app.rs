//! One invocation: credentials, connection, command, rendering.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{
    args::Cli,
    client::{Client, ConnectOptions},
    commands,
    error::CliError,
    output,
    signer::{access_key, Signer},
};

/// Runs the parsed command line and returns what to print on stdout.
pub async fn run(cli: Cli) -> Result<String, CliError> {
    let Cli { global, command } = cli;
    let credentials = access_key(
        global.access_key_id.clone(),
        global.access_key_secret.clone(),
    )?;
    let opts = ConnectOptions {
        url: &global.control,
        ca: global.ca.as_deref(),
        identity: global
            .client_cert
            .as_deref()
            .zip(global.client_key.as_deref()),
        timeout: global.call_timeout(command.waits()),
        insecure: global.insecure,
    };
    let client = Client::connect(&opts, Signer::new(credentials)).await?;
    let outcome = commands::execute(&client, &command, global.wait_timeout()).await?;
    Ok(output::render(&outcome, global.output, now_unix_ms()))
}

fn now_unix_ms() -> i64 {
    // Before 1970 only on a broken clock: ages then print as "0s ago".
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
