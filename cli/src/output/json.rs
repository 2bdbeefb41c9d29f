//! JSON output: the gRPC response, field for field, in snake_case. Scripts depend on these
//! names, so they change only with the proto. Differences from the proto3 JSON mapping, for
//! easier scripting: int64 fields are numbers, absent messages are `null`, the agent state is
//! a short snake_case word (`in_sync`), and `put`, `disable` and `delete` add the `bucket`.

use serde_json::{json, Value};

use crate::commands::Outcome;

pub(super) use tlsfleet_proto::json::state_name;

/// A message as JSON (`tlsfleet_proto::json`); `null` if serde could not (it always can).
fn value<T: serde::Serialize>(message: &T) -> Value {
    serde_json::to_value(message).unwrap_or(Value::Null)
}

fn enforced(w: &crate::wait::Waited, committed_unix_ms: i64) -> Value {
    json!({
        "agents": w.status.agents_total,
        "waited_ms": millis(w.elapsed),
        "write_to_last_ack_ms": w.write_to_last_ack(committed_unix_ms).map(millis),
    })
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn render(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Put { bucket, response } | Outcome::Disable { bucket, response } => json!({
            "bucket": bucket,
            "revision": response.revision,
            "effective": value(&response.effective),
            "downgrade": response.downgrade,
        }),
        Outcome::Get(r) => value(r),
        Outcome::List(l) => value(l),
        Outcome::Delete { bucket, response } => json!({
            "bucket": bucket,
            "revision": response.revision,
            "existed": response.existed,
            "downgrade": response.downgrade,
        }),
        Outcome::Agents(r) => value(r),
        Outcome::Rollout(r) => value(r),
        Outcome::RolloutDone(w) => {
            let mut v = value(&w.status);
            v["waited_ms"] = json!(millis(w.elapsed));
            v
        }
        Outcome::PutEnforced {
            bucket,
            response,
            waited,
        } => json!({
            "bucket": bucket,
            "revision": response.revision,
            "effective": value(&response.effective),
            "downgrade": response.downgrade,
            "enforced": enforced(waited, response.committed_unix_ms),
        }),
        Outcome::Canary {
            bucket,
            selector,
            response,
            waited,
        } => json!({
            "bucket": bucket,
            "canary": selector.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "revision": response.revision,
            "effective": value(&response.effective),
            "downgrade": response.downgrade,
            "enforced": waited.as_ref().map(|w| enforced(w, response.committed_unix_ms)),
        }),
        Outcome::Promoted {
            bucket,
            response,
            waited,
        } => json!({
            "bucket": bucket,
            "promoted": true,
            "revision": response.revision,
            "effective": value(&response.effective),
            "enforced": waited.as_ref().map(|w| enforced(w, response.committed_unix_ms)),
        }),
        Outcome::Aborted {
            bucket,
            response,
            waited,
        } => json!({
            "bucket": bucket,
            "aborted": response.existed,
            "revision": response.revision,
            "enforced": waited.as_ref().map(|w| enforced(w, 0)),
        }),
        Outcome::History(r) => value(r),
        Outcome::Usage(r) => value(r),
        Outcome::DryRun { bucket, response } => json!({
            "bucket": bucket,
            "dry_run": true,
            "effective": value(&response.effective),
            "downgrade": response.downgrade,
            "downgrade_reason": response.downgrade_reason,
            "impact": value(&response.impact),
        }),
        Outcome::Default(r) => value(r),
        Outcome::DefaultSet(r) => json!({
            "revision": r.revision,
            "effective": value(&r.effective),
            "downgrade": r.downgrade,
        }),
        Outcome::DefaultCleared(r) => json!({
            "revision": r.revision,
            "existed": r.existed,
            "downgrade": r.downgrade,
        }),
    }
}

#[cfg(test)]
mod tests {
    use tlsfleet_proto::v1::{
        AgentState, AgentStatus, BucketError, BucketPolicy, CipherSuiteConfig, DeleteResponse,
        EffectivePolicy, GetResponse, GetRolloutStatusResponse, HttpsConfig, ListAgentsResponse,
        PutResponse, TlsConfig,
    };

    use super::*;
    use crate::{args::Format, commands::Listing, output};

    fn parse(outcome: &Outcome) -> Value {
        let text = output::render(outcome, Format::Json, 0);
        assert!(text.ends_with("}\n"), "{text}");
        serde_json::from_str(&text).unwrap()
    }

    fn effective_policy() -> EffectivePolicy {
        EffectivePolicy {
            tls_versions: vec!["TLSv1.3".into()],
            cipher_suites: vec!["TLS13_AES_256_GCM_SHA384".into()],
            dropped: vec!["TLSv1.1: not served".into()],
        }
    }

    pub(crate) fn sample_policy() -> BucketPolicy {
        BucketPolicy {
            bucket: "logs".into(),
            config: Some(HttpsConfig {
                tls: Some(TlsConfig {
                    enable: true,
                    tls_versions: vec!["TLSv1.1".into(), "TLSv1.3".into()],
                }),
                cipher_suite: Some(CipherSuiteConfig {
                    enable: Some(true),
                    strong_cipher_suite: None,
                    custom_cipher_suites: vec![],
                    tls13_custom_cipher_suites: vec!["TLS_AES_256_GCM_SHA384".into()],
                }),
            }),
            effective: Some(effective_policy()),
            mod_revision: 7,
            create_revision: 3,
            canary: None,
        }
    }

    #[test]
    fn put_mirrors_the_response_and_names_the_bucket() {
        let out = parse(&Outcome::Put {
            bucket: "logs".into(),
            response: PutResponse {
                revision: 42,
                effective: Some(effective_policy()),
                ..Default::default()
            },
        });
        assert_eq!(
            out,
            json!({
                "bucket": "logs",
                "revision": 42,
                "effective": {
                    "tls_versions": ["TLSv1.3"],
                    "cipher_suites": ["TLS13_AES_256_GCM_SHA384"],
                    "dropped": ["TLSv1.1: not served"],
                },
                "downgrade": false,
            })
        );
    }

    #[test]
    fn get_has_the_whole_bucket_policy() {
        let out = parse(&Outcome::Get(GetResponse {
            policy: Some(sample_policy()),
            revision: 9,
        }));
        assert_eq!(out["revision"], 9);
        let p = &out["policy"];
        assert_eq!(p["bucket"], "logs");
        assert_eq!(p["mod_revision"], 7);
        assert_eq!(p["create_revision"], 3);
        assert_eq!(
            p["config"]["tls"],
            json!({"enable": true, "tls_versions": ["TLSv1.1", "TLSv1.3"]})
        );
        assert_eq!(
            p["config"]["cipher_suite"],
            json!({
                "enable": true,
                "strong_cipher_suite": null,
                "custom_cipher_suites": [],
                "tls13_custom_cipher_suites": ["TLS_AES_256_GCM_SHA384"],
            })
        );
        assert_eq!(p["effective"]["tls_versions"], json!(["TLSv1.3"]));
    }

    #[test]
    fn absent_messages_are_null() {
        let out = parse(&Outcome::Get(GetResponse {
            policy: None,
            revision: 1,
        }));
        assert_eq!(out, json!({"policy": null, "revision": 1}));
        let mut p = sample_policy();
        p.config.as_mut().unwrap().cipher_suite = None;
        let out = parse(&Outcome::Get(GetResponse {
            policy: Some(p),
            revision: 1,
        }));
        assert_eq!(out["policy"]["config"]["cipher_suite"], Value::Null);
    }

    #[test]
    fn list_delete_and_rollout_shapes() {
        let out = parse(&Outcome::List(Listing {
            policies: vec![sample_policy()],
            next_page_token: "".into(),
            revision: 12,
        }));
        assert_eq!(out["policies"].as_array().unwrap().len(), 1);
        assert_eq!(out["next_page_token"], "");
        assert_eq!(out["revision"], 12);

        let out = parse(&Outcome::Delete {
            bucket: "logs".into(),
            response: DeleteResponse {
                revision: 13,
                existed: true,
                ..Default::default()
            },
        });
        assert_eq!(
            out,
            json!({"bucket": "logs", "revision": 13, "existed": true, "downgrade": false})
        );

        let out = parse(&Outcome::Rollout(GetRolloutStatusResponse {
            revision: 13,
            agents_total: 3,
            enforcing: vec!["a".into(), "b".into()],
            pending: vec!["c".into()],
            failed: vec![],
            ..Default::default()
        }));
        assert_eq!(
            out,
            json!({"revision": 13, "agents_total": 3, "enforcing": ["a", "b"], "pending": ["c"], "failed": [], "failures": [], "last_ack_unix_ms": 0, "canary": null, "refused_handshakes": 0, "refused_by_agent": {}, "unreachable": []})
        );
    }

    #[test]
    fn agents_have_sorted_labels_state_words_and_errors() {
        let out = parse(&Outcome::Agents(ListAgentsResponse {
            agents: vec![AgentStatus {
                node_id: "edge-1".into(),
                labels: [("zone", "a"), ("region", "eu")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                applied_revision: 5,
                sent_revision: 6,
                state: AgentState::Degraded as i32,
                errors: vec![BucketError {
                    bucket: "logs".into(),
                    reason: "no suite".into(),
                }],
                nack_revision: 6,
                control_id: "control-1".into(),
                connected_at_unix_ms: 1000,
                last_seen_unix_ms: 2000,
                key_types: vec![],
            }],
            revision: 6,
        }));
        let a = &out["agents"][0];
        assert_eq!(a["state"], "degraded");
        assert_eq!(
            a["errors"],
            json!([{"bucket": "logs", "reason": "no suite"}])
        );
        let keys: Vec<_> = a["labels"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["region", "zone"]);
        for field in [
            "node_id",
            "applied_revision",
            "sent_revision",
            "nack_revision",
            "control_id",
            "connected_at_unix_ms",
            "last_seen_unix_ms",
        ] {
            assert!(!a[field].is_null(), "{field}");
        }
        assert_eq!(out["revision"], 6);
    }

    #[test]
    fn unknown_states_do_not_break_output() {
        assert_eq!(state_name(AgentState::InSync as i32), "in_sync");
        assert_eq!(state_name(99), "unknown");
    }
}
