//! The access key from flags or the environment, and the signer every call goes through
//! (`tlsfleet_proto::signer`, shared with the agents and the tests).

pub use tlsfleet_proto::signer::{signed_request, AccessKey, Signer};

use crate::error::CliError;

/// The key from `--access-key-id`/`--access-key-secret` (or their environment variables).
pub fn access_key(key_id: Option<String>, secret: Option<String>) -> Result<AccessKey, CliError> {
    let missing = |what: &str, env: &str, flag: &str| {
        CliError::Usage(format!("no access key {what}: set {env} or pass {flag}"))
    };
    let key_id = key_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("id", "TLSFLEET_ACCESS_KEY_ID", "--access-key-id"))?;
    let secret = secret.filter(|s| !s.is_empty()).ok_or_else(|| {
        missing(
            "secret",
            "TLSFLEET_ACCESS_KEY_SECRET",
            "--access-key-secret",
        )
    })?;
    AccessKey::new(key_id, secret).map_err(|e| CliError::Usage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_required_and_printable() {
        assert!(matches!(
            access_key(None, Some("s".into())),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            access_key(Some("id".into()), None),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            access_key(Some("".into()), Some("s".into())),
            Err(CliError::Usage(_))
        ));
        assert!(access_key(Some("a,b".into()), Some("s".into())).is_err());
        assert!(access_key(Some("a b".into()), Some("s".into())).is_err());
        let key = access_key(Some("AKID".into()), Some("s3cret".into())).unwrap();
        assert!(!format!("{key:?}").contains("s3cret"));
    }
}
