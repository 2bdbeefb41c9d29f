//! What an agent may say: its hello (bounded, since it ends up in the registry and the logs),
//! the node ids its key and certificate may claim, and its NACKs (bounded and cleaned).

use tlsfleet_proto::v1::{AgentHello, Nack};
use tonic::Status;

use crate::{auth::Principal, registry::BucketFailure};

/// Labels an agent may report, and their lengths.
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 253;
const MAX_NODE_ID: usize = 253;
const MAX_AGENT_VERSION: usize = 64;
/// NACK entries kept, and the length kept of each reason.
const MAX_NACK_ERRORS: usize = 100;
const MAX_NACK_REASON: usize = 512;

/// Refuses a hello whose fields are out of bounds (they end up in the registry and the logs).
pub(super) fn check_hello(hello: &AgentHello) -> Result<(), Status> {
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if hello.node_id.is_empty() || hello.node_id.len() > MAX_NODE_ID || !printable(&hello.node_id) {
        return Err(Status::invalid_argument(
            "hello.node_id must be 1 to 253 printable ASCII characters",
        ));
    }
    if hello.labels.len() > MAX_LABELS {
        return Err(Status::invalid_argument(format!(
            "hello.labels has {} entries; at most {MAX_LABELS} are accepted",
            hello.labels.len()
        )));
    }
    for (k, v) in &hello.labels {
        let value_ok =
            v.len() <= MAX_LABEL_VALUE && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
        if k.is_empty() || k.len() > MAX_LABEL_KEY || !printable(k) || !value_ok {
            return Err(Status::invalid_argument(
                "hello.labels: keys must be 1 to 63 and values at most 253 printable ASCII \
                 characters",
            ));
        }
    }
    if hello.agent_version.len() > MAX_AGENT_VERSION || hello.key_types.len() > 4 {
        return Err(Status::invalid_argument(
            "hello.agent_version or hello.key_types is too long",
        ));
    }
    Ok(())
}

/// A Sync key registers only the node ids its `nodes` patterns cover; a client certificate,
/// when the transport has one, must name the node too.
pub(super) fn bind_identity(
    who: &Principal,
    node_id: &str,
    certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<(), Status> {
    if !who.key.may_register(node_id) {
        let patterns = who.key.node_patterns();
        let hint = if patterns.is_empty() {
            "it has no `nodes` patterns in the credentials file".to_owned()
        } else {
            format!("its `nodes` patterns are {patterns:?}")
        };
        return Err(Status::permission_denied(format!(
            "access key {:?} may not register agent {node_id:?}: {hint}",
            who.key.id
        )));
    }
    if let Some(leaf) = certs.and_then(<[_]>::first) {
        let named = rustls::pki_types::ServerName::try_from(node_id)
            .ok()
            .zip(webpki::EndEntityCert::try_from(leaf).ok())
            .is_some_and(|(name, cert)| cert.verify_is_valid_for_subject_name(&name).is_ok());
        if !named {
            return Err(Status::permission_denied(format!(
                "the client certificate does not name agent {node_id:?} (a DNS name of the \
                 certificate must be the node id)"
            )));
        }
    }
    Ok(())
}

/// A NACK as recorded: its revision at most what was sent, at most [`MAX_NACK_ERRORS`]
/// entries, names and reasons bounded and stripped of control characters.
pub(super) fn bounded_nack(n: Nack, sent: i64) -> (i64, Vec<BucketFailure>) {
    let clean = |s: String, max: usize| -> String {
        s.chars().filter(|c| !c.is_control()).take(max).collect()
    };
    let errors = n
        .errors
        .into_iter()
        .take(MAX_NACK_ERRORS)
        .map(|e| BucketFailure {
            bucket: clean(e.bucket, 63),
            reason: clean(e.reason, MAX_NACK_REASON),
        })
        .collect();
    (n.revision.min(sent), errors)
}

#[cfg(test)]
mod tests {
    use tlsfleet_proto::v1::BucketError;

    use super::*;

    #[test]
    fn nacks_are_clamped_and_bounded() {
        let n = Nack {
            revision: 99,
            errors: (0..500)
                .map(|i| BucketError {
                    bucket: format!("b{i}\u{1b}[31m"),
                    reason: "x".repeat(10_000),
                })
                .collect(),
        };
        let (revision, errors) = bounded_nack(n, 7);
        assert_eq!(revision, 7);
        assert_eq!(errors.len(), MAX_NACK_ERRORS);
        assert!(!errors[0].bucket.contains('\u{1b}'));
        assert_eq!(errors[0].reason.len(), MAX_NACK_REASON);
    }

    #[test]
    fn hellos_are_bounded() {
        let ok = AgentHello {
            node_id: "edge-1".into(),
            labels: [("zone".to_owned(), "eu west".to_owned())].into(),
            ..Default::default()
        };
        assert!(check_hello(&ok).is_ok());
        for bad in [
            AgentHello {
                node_id: String::new(),
                ..ok.clone()
            },
            AgentHello {
                node_id: "a b".into(),
                ..ok.clone()
            },
            AgentHello {
                node_id: "x\u{1b}".into(),
                ..ok.clone()
            },
            AgentHello {
                labels: (0..33).map(|i| (format!("k{i}"), "v".into())).collect(),
                ..ok.clone()
            },
            AgentHello {
                labels: [("k".into(), "v\n".into())].into(),
                ..ok.clone()
            },
            AgentHello {
                labels: [(String::new(), "v".into())].into(),
                ..ok.clone()
            },
        ] {
            assert!(check_hello(&bad).is_err(), "{bad:?}");
        }
    }
}
