//! Each command: the request it sends and the [`Outcome`] it hands to the output module.

use tlsfleet_policy::{CipherSuiteConfig, HttpsConfig, TlsConfig};
use tlsfleet_proto::v1::{
    self, DeleteRequest, DeleteResponse, GetRequest, GetResponse, GetRolloutStatusRequest,
    GetRolloutStatusResponse, ListAgentsResponse, ListRequest, PutRequest, PutResponse,
};

use crate::{
    args::{Command, DefaultCommand, HistoryArgs, ListArgs, PolicyArgs, PutArgs, RolloutAction},
    client::Client,
    error::CliError,
    wait::{self, Waited},
};

/// What a command got back, ready to print.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Put {
        bucket: String,
        response: PutResponse,
    },
    Disable {
        bucket: String,
        response: PutResponse,
    },
    Get(GetResponse),
    List(Listing),
    Delete {
        bucket: String,
        response: DeleteResponse,
    },
    Agents(ListAgentsResponse),
    Rollout(GetRolloutStatusResponse),
    /// `rollout status --wait`: every selected agent enforces the revision.
    RolloutDone(Waited),
    /// `put --wait`: stored, and enforced by every agent.
    PutEnforced {
        bucket: String,
        response: PutResponse,
        waited: Waited,
    },
    /// `put --canary`: staged on the selected agents (and enforced by them, with --wait).
    Canary {
        bucket: String,
        selector: Vec<(String, String)>,
        response: PutResponse,
        waited: Option<Waited>,
    },
    /// `rollout promote`.
    Promoted {
        bucket: String,
        response: PutResponse,
        waited: Option<Waited>,
    },
    /// `rollout abort`.
    Aborted {
        bucket: String,
        response: DeleteResponse,
        waited: Option<Waited>,
    },
    History(v1::ListHistoryResponse),
    Usage(v1::GetUsageResponse),
    /// `put --dry-run`: nothing stored.
    DryRun {
        bucket: String,
        response: PutResponse,
    },
    /// The fleet default policy (bucket "").
    Default(GetResponse),
    DefaultSet(PutResponse),
    DefaultCleared(DeleteResponse),
}

/// One or more List pages joined.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Listing {
    pub policies: Vec<v1::BucketPolicy>,
    /// Empty unless a single page was asked for and more follow.
    pub next_page_token: String,
    /// Index revision of the last page read. Pages are separate reads: a write between two of
    /// them may show in one and not in the other.
    pub revision: i64,
}

/// Runs one command against the control plane; `--wait` waits at most `wait_timeout`.
pub async fn execute(
    client: &Client,
    command: &Command,
    wait_timeout: std::time::Duration,
) -> Result<Outcome, CliError> {
    Ok(match command {
        Command::Put(args) if args.dry_run => Outcome::DryRun {
            bucket: args.bucket.clone(),
            response: client.put(put_request(args)).await?,
        },
        Command::Put(args) if !args.canary.is_empty() => {
            let response = client.put(put_request(args)).await?;
            let waited = wait::if_asked(
                args.wait,
                client,
                response.revision,
                &args.canary,
                wait_timeout,
            )
            .await?;
            Outcome::Canary {
                bucket: args.bucket.clone(),
                selector: args.canary.clone(),
                response,
                waited,
            }
        }
        Command::Put(args) if args.wait => {
            let response = client.put(put_request(args)).await?;
            let waited = wait::until_enforced(client, response.revision, &[], wait_timeout).await?;
            Outcome::PutEnforced {
                bucket: args.bucket.clone(),
                response,
                waited,
            }
        }
        Command::Put(args) => Outcome::Put {
            bucket: args.bucket.clone(),
            response: client.put(put_request(args)).await?,
        },
        Command::Disable(args) => Outcome::Disable {
            bucket: args.bucket.clone(),
            response: client
                .put(disable_request(&args.bucket, args.allow_downgrade))
                .await?,
        },
        Command::Get(args) => Outcome::Get(
            client
                .get(GetRequest {
                    bucket: args.bucket.clone(),
                })
                .await?,
        ),
        Command::List(args) => Outcome::List(list(client, args).await?),
        Command::Delete(args) => Outcome::Delete {
            bucket: args.bucket.clone(),
            response: client
                .delete(DeleteRequest {
                    bucket: args.bucket.clone(),
                    allow_downgrade: args.allow_downgrade,
                })
                .await?,
        },
        Command::Agents => Outcome::Agents(client.list_agents().await?),
        Command::Completion(_) | Command::Man(_) => {
            return Err(CliError::Usage(
                "completion and man print without a control plane (main handles them)".into(),
            ))
        }
        Command::Rollout(args) => match &args.action {
            None => Outcome::Rollout(
                client
                    .rollout_status(GetRolloutStatusRequest {
                        revision: args.revision,
                        ..Default::default()
                    })
                    .await?,
            ),
            Some(RolloutAction::Status(s)) => {
                let request = GetRolloutStatusRequest {
                    revision: s.revision,
                    selector: s.wait.selector.iter().cloned().collect(),
                    bucket: s.bucket.clone().unwrap_or_default(),
                };
                if s.wait.wait {
                    Outcome::RolloutDone(wait::until(client, request, wait_timeout).await?)
                } else {
                    Outcome::Rollout(client.rollout_status(request).await?)
                }
            }
            Some(RolloutAction::Promote(c)) => {
                let response = client
                    .promote_canary(v1::CanaryRequest {
                        bucket: c.bucket.clone(),
                    })
                    .await?;
                let waited = wait::if_asked(
                    c.wait.wait,
                    client,
                    response.revision,
                    &c.wait.selector,
                    wait_timeout,
                )
                .await?;
                Outcome::Promoted {
                    bucket: c.bucket.clone(),
                    response,
                    waited,
                }
            }
            Some(RolloutAction::Abort(c)) => {
                let response = client
                    .abort_canary(v1::CanaryRequest {
                        bucket: c.bucket.clone(),
                    })
                    .await?;
                let waited = wait::if_asked(
                    c.wait.wait,
                    client,
                    response.revision,
                    &c.wait.selector,
                    wait_timeout,
                )
                .await?;
                Outcome::Aborted {
                    bucket: c.bucket.clone(),
                    response,
                    waited,
                }
            }
        },
        Command::Default(DefaultCommand::Get) => Outcome::Default(client.get_default().await?),
        Command::Default(DefaultCommand::Set(args)) => Outcome::DefaultSet(
            client
                .put_default(v1::PutDefaultRequest {
                    config: Some((&policy_config(args)).into()),
                    allow_downgrade: args.allow_downgrade,
                })
                .await?,
        ),
        Command::Default(DefaultCommand::Clear { allow_downgrade }) => Outcome::DefaultCleared(
            client
                .delete_default(v1::DeleteDefaultRequest {
                    allow_downgrade: *allow_downgrade,
                })
                .await?,
        ),
        Command::Usage(args) => Outcome::Usage(
            client
                .get_usage(v1::GetUsageRequest {
                    bucket: args.bucket.clone(),
                    since_seconds: args
                        .since
                        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
                })
                .await?,
        ),
        Command::History(args) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
            Outcome::History(client.list_history(history_request(args, now)).await?)
        }
    })
}

/// TLS management on with the given versions; a `<CipherSuite>` section only when the
/// operator restricts suites (no section means every suite, as in OSS).
pub fn put_request(args: &PutArgs) -> PutRequest {
    PutRequest {
        bucket: args.bucket.clone(),
        config: Some((&policy_config(&args.policy)).into()),
        allow_downgrade: args.policy.allow_downgrade,
        dry_run: args.dry_run,
        impact_seconds: args
            .since
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
        canary: args.canary.iter().cloned().collect(),
    }
}

/// The policy `args` describe.
pub fn policy_config(args: &PolicyArgs) -> HttpsConfig {
    let restricts_suites =
        args.strong || !args.cipher_suites.is_empty() || !args.tls13_cipher_suites.is_empty();
    HttpsConfig {
        tls: TlsConfig {
            enable: true,
            tls_versions: args.tls_versions.clone(),
        },
        cipher_suite: restricts_suites.then(|| CipherSuiteConfig {
            enable: Some(true),
            strong_cipher_suite: Some(args.strong),
            custom_cipher_suites: args.cipher_suites.clone(),
            tls13_custom_cipher_suites: args.tls13_cipher_suites.clone(),
        }),
    }
}

/// TLS management off: what OSS calls `<TLS><Enable>false</Enable></TLS>`.
pub fn disable_request(bucket: &str, allow_downgrade: bool) -> PutRequest {
    PutRequest {
        bucket: bucket.to_owned(),
        config: Some((&HttpsConfig::disabled()).into()),
        allow_downgrade,
        ..Default::default()
    }
}

/// The ListHistory request of `args`, at `now_unix_ms`.
pub fn history_request(args: &HistoryArgs, now_unix_ms: i64) -> v1::ListHistoryRequest {
    let since = args.since.map_or(0, |d| {
        now_unix_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    });
    v1::ListHistoryRequest {
        bucket: args.bucket.clone().unwrap_or_default(),
        since_unix_ms: since.max(0),
        page_size: args.limit,
        page_token: String::new(),
    }
}

/// The first List request of `args`.
pub fn list_request(args: &ListArgs) -> ListRequest {
    ListRequest {
        prefix: args.prefix.clone(),
        page_size: args.page_size,
        page_token: args.page_token.clone().unwrap_or_default(),
    }
}

async fn list(client: &Client, args: &ListArgs) -> Result<Listing, CliError> {
    let mut request = list_request(args);
    let mut listing = Listing::default();
    loop {
        let page = client.list(request.clone()).await?;
        listing.policies.extend(page.policies);
        listing.revision = page.revision;
        if !args.every_page() {
            listing.next_page_token = page.next_page_token;
            return Ok(listing);
        }
        if page.next_page_token.is_empty() {
            return Ok(listing);
        }
        // A server handing back the token it was given would keep us here forever.
        if page.next_page_token == request.page_token {
            return Err(CliError::BadAnswer(format!(
                "List returned the same page token twice ({:?})",
                page.next_page_token
            )));
        }
        request.page_token = page.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::Cli;

    fn command(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("tlsfleetctl").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    fn put(args: &[&str]) -> PutRequest {
        match command(args) {
            Command::Put(p) => put_request(&p),
            other => panic!("not put: {other:?}"),
        }
    }

    #[test]
    fn put_without_suites_sends_no_cipher_section() {
        let req = put(&[
            "put",
            "--bucket",
            "logs",
            "--tls-versions",
            "TLSv1.3,TLSv1.2",
        ]);
        assert_eq!(req.bucket, "logs");
        let config = req.config.unwrap();
        let tls = config.tls.unwrap();
        assert!(tls.enable);
        assert_eq!(
            tls.tls_versions,
            ["TLSv1.3", "TLSv1.2"],
            "order is the operator's"
        );
        assert_eq!(config.cipher_suite, None);
    }

    #[test]
    fn put_strong_enables_the_strong_set() {
        let req = put(&[
            "put",
            "--bucket",
            "b1",
            "--tls-versions",
            "TLSv1.2",
            "--strong",
        ]);
        let cs = req.config.unwrap().cipher_suite.unwrap();
        assert_eq!(cs.enable, Some(true));
        assert_eq!(cs.strong_cipher_suite, Some(true));
        assert!(cs.custom_cipher_suites.is_empty() && cs.tls13_custom_cipher_suites.is_empty());
    }

    #[test]
    fn put_custom_lists_are_sent_exactly_as_given() {
        let req = put(&[
            "put",
            "--bucket",
            "b1",
            "--tls-versions",
            "TLSv1.2",
            "--tls-versions",
            "TLSv1.3",
            "--cipher-suites",
            "ECDHE-RSA-AES128-GCM-SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "--tls13-cipher-suites",
            "TLS_AES_256_GCM_SHA384",
        ]);
        let config = req.config.unwrap();
        assert_eq!(config.tls.unwrap().tls_versions, ["TLSv1.2", "TLSv1.3"]);
        let cs = config.cipher_suite.unwrap();
        assert_eq!(cs.enable, Some(true));
        assert_eq!(cs.strong_cipher_suite, Some(false));
        assert_eq!(
            cs.custom_cipher_suites,
            [
                "ECDHE-RSA-AES128-GCM-SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
            ]
        );
        assert_eq!(cs.tls13_custom_cipher_suites, ["TLS_AES_256_GCM_SHA384"]);
    }

    #[test]
    fn put_with_only_a_tls13_list_still_enables_custom_suites() {
        let req = put(&[
            "put",
            "--bucket",
            "b1",
            "--tls-versions",
            "TLSv1.3",
            "--tls13-cipher-suites",
            "TLS_CHACHA20_POLY1305_SHA256",
        ]);
        let cs = req.config.unwrap().cipher_suite.unwrap();
        assert_eq!(cs.enable, Some(true));
        assert!(cs.custom_cipher_suites.is_empty());
    }

    #[test]
    fn disable_turns_management_off_without_cipher_section() {
        let req = disable_request("logs", false);
        let config = req.config.unwrap();
        let tls = config.tls.unwrap();
        assert!(!tls.enable);
        assert!(tls.tls_versions.is_empty());
        assert_eq!(config.cipher_suite, None);
    }

    #[test]
    fn list_request_carries_prefix_size_and_token() {
        let Command::List(args) = command(&[
            "list",
            "--prefix",
            "logs-",
            "--page-size",
            "50",
            "--page-token",
            "t1",
        ]) else {
            panic!("not list")
        };
        let req = list_request(&args);
        assert_eq!(req.prefix, "logs-");
        assert_eq!(req.page_size, 50);
        assert_eq!(req.page_token, "t1");
        let Command::List(args) = command(&["list"]) else {
            panic!("not list")
        };
        assert_eq!(list_request(&args), ListRequest::default());
    }
}
