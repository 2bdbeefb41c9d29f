//! The credentials file: access keys, their secrets and their grants.
//!
//! ```toml
//! [[key]]
//! id = "AKIDADMIN"
//! secret = "admin-secret"
//! allow = ["oss:PutBucketHttpsConfig", "oss:GetBucketHttpsConfig"]
//! buckets = ["*"]            # glob patterns: "*", "logs-*", "exact-name"
//! ```
//!
//! Unknown fields are refused rather than ignored: a misspelt `bucket =` silently granting
//! nothing (or a misspelt `alow =`) is worse than a load error. A key without `buckets` may
//! only do bucket-less actions (Sync, ListAgents, GetRolloutStatus).
//!
//! A key allowed `tlsfleet:Sync` registers agents only under the node ids its `nodes`
//! patterns cover (`nodes = ["edge-fra-*"]`; `["*"]` for a key shared by the whole fleet):
//! a leaked agent key cannot pose as another part of the fleet.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::Action;

/// Why a credentials file cannot be used. Messages never contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file is not valid TOML of the expected shape: {0}")]
    Syntax(String),
    #[error("credentials file defines no [[key]]")]
    NoKeys,
    #[error("a [[key]] has an empty id")]
    EmptyId,
    #[error("key {0:?} is defined more than once")]
    DuplicateId(String),
    #[error("key {0:?} has an empty secret")]
    EmptySecret(String),
    #[error("key {id:?} allows unknown action(s) {actions:?}; known: {known}")]
    UnknownActions {
        id: String,
        actions: Vec<String>,
        known: String,
    },
    #[error("key {id:?} has an invalid bucket pattern {pattern:?}: {reason}")]
    BadPattern {
        id: String,
        pattern: String,
        reason: String,
    },
}

/// Every access key of a credentials file, by id.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    keys: HashMap<String, Arc<AccessKey>>,
}

/// One access key: its id, its secret and what it may do.
pub struct AccessKey {
    pub id: String,
    secret: String,
    /// Bit `1 << action as u16` set when granted.
    actions: u16,
    /// The patterns as written, for messages.
    patterns: Vec<String>,
    buckets: GlobSet,
    /// Agent node ids a Sync call with this key may register as.
    node_patterns: Vec<String>,
    nodes: GlobSet,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    secret: String,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    buckets: Vec<String>,
    /// Agent node ids (glob patterns) a Sync call with this key may register as.
    #[serde(default)]
    nodes: Vec<String>,
    /// Free text for operators; not used.
    #[serde(default, rename = "description")]
    _description: Option<String>,
}

impl Credentials {
    /// Reads and parses a credentials file.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses credentials TOML.
    pub fn parse(toml_text: &str) -> Result<Self, CredentialsError> {
        let file: File = toml::from_str(toml_text).map_err(|e| {
            // toml's message quotes the offending line, which may be a secret: keep only
            // the description and the position.
            let msg = e.message().to_owned();
            let at = e
                .span()
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default();
            CredentialsError::Syntax(format!("{msg}{at}"))
        })?;
        if file.key.is_empty() {
            return Err(CredentialsError::NoKeys);
        }
        let mut keys = HashMap::with_capacity(file.key.len());
        for entry in file.key {
            let key = AccessKey::from_entry(entry)?;
            if keys.contains_key(&key.id) {
                return Err(CredentialsError::DuplicateId(key.id));
            }
            keys.insert(key.id.clone(), Arc::new(key));
        }
        Ok(Self { keys })
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<&AccessKey> {
        self.keys.get(id).map(Arc::as_ref)
    }

    /// The key with this id, shared.
    pub fn get_arc(&self, id: &str) -> Option<Arc<AccessKey>> {
        self.keys.get(id).cloned()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys (never true for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl AccessKey {
    /// Builds a key programmatically (tests, embedding); the same checks as the file.
    pub fn new(
        id: &str,
        secret: &str,
        allow: &[&str],
        buckets: &[&str],
    ) -> Result<Self, CredentialsError> {
        Self::from_entry(KeyEntry {
            id: id.to_owned(),
            secret: secret.to_owned(),
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            buckets: buckets.iter().map(|s| (*s).to_owned()).collect(),
            nodes: Vec::new(),
            _description: None,
        })
    }

    /// Like [`AccessKey::new`], with the node ids (glob patterns) it may register as.
    pub fn with_nodes(mut self, nodes: &[&str]) -> Result<Self, CredentialsError> {
        let patterns: Vec<String> = nodes.iter().map(|s| (*s).to_owned()).collect();
        self.nodes = glob_set(&self.id, &patterns)?;
        self.node_patterns = patterns;
        Ok(self)
    }

    fn from_entry(entry: KeyEntry) -> Result<Self, CredentialsError> {
        let id = entry.id.trim().to_owned();
        if id.is_empty() {
            return Err(CredentialsError::EmptyId);
        }
        if entry.secret.is_empty() {
            return Err(CredentialsError::EmptySecret(id));
        }
        let mut actions = 0u16;
        let mut unknown = Vec::new();
        for name in &entry.allow {
            match Action::grant_mask(name) {
                Some(mask) => actions |= mask,
                None => unknown.push(name.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(CredentialsError::UnknownActions {
                id,
                actions: unknown,
                known: Action::known_grants(),
            });
        }
        let buckets = glob_set(&id, &entry.buckets)?;
        let nodes = glob_set(&id, &entry.nodes)?;
        Ok(Self {
            id,
            secret: entry.secret,
            actions,
            patterns: entry.buckets,
            buckets,
            node_patterns: entry.nodes,
            nodes,
        })
    }

    /// The shared secret (never log it).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether this key may do `action`, on `bucket` for bucket actions (`None`: an action
    /// on no bucket, where only the action grant counts).
    pub fn allows(&self, action: Action, bucket: Option<&str>) -> bool {
        if self.actions & action.bit() == 0 {
            return false;
        }
        match bucket {
            None => true,
            Some(b) => self.buckets.is_match(b),
        }
    }

    /// The bucket patterns as written in the file.
    pub fn bucket_patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether a Sync call with this key may register as agent `node_id` (its `nodes`
    /// patterns; none: no node id at all).
    pub fn may_register(&self, node_id: &str) -> bool {
        self.nodes.is_match(node_id)
    }

    /// The node patterns as written in the file.
    pub fn node_patterns(&self) -> &[String] {
        &self.node_patterns
    }
}

/// Glob patterns (`*`, `logs-*`, exact names), each non-empty.
fn glob_set(id: &str, patterns: &[String]) -> Result<GlobSet, CredentialsError> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let bad = |reason: String| CredentialsError::BadPattern {
            id: id.to_owned(),
            pattern: pattern.clone(),
            reason,
        };
        if pattern.is_empty() {
            return Err(bad("empty pattern".into()));
        }
        let glob = GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map_err(|e| bad(e.kind().to_string()))?;
        set.add(glob);
    }
    set.build().map_err(|e| CredentialsError::BadPattern {
        id: id.to_owned(),
        pattern: patterns.join(", "),
        reason: e.to_string(),
    })
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let granted: Vec<&str> = Action::ALL
            .iter()
            .filter(|a| self.actions & a.bit() != 0)
            .map(|a| a.name())
            .collect();
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("allow", &granted)
            .field("buckets", &self.patterns)
            .field("nodes", &self.node_patterns)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
[[key]]
id = "AKIDADMIN"
secret = "admin-secret"
allow = ["oss:PutBucketHttpsConfig", "oss:GetBucketHttpsConfig"]
buckets = ["*"]            # glob patterns: "*", "logs-*", "exact-name"

[[key]]
id = "AKIDLOGS"
secret = "logs-secret"
allow = ["oss:PutTLSVersion", "oss:GetTLSVersion"]
buckets = ["logs-*", "exact-name"]

[[key]]
id = "AKIDAGENT"
secret = "agent-secret"
allow = ["tlsfleet:Sync"]
"#;

    #[test]
    fn parses_the_issue_example_and_applies_grants() {
        let creds = Credentials::parse(ISSUE_EXAMPLE).unwrap();
        assert_eq!(creds.len(), 3);
        let admin = creds.get("AKIDADMIN").unwrap();
        assert_eq!(admin.secret(), "admin-secret");
        assert!(admin.allows(Action::PutBucketHttpsConfig, Some("anything")));
        assert!(admin.allows(Action::GetBucketHttpsConfig, Some("abc")));
        assert!(!admin.allows(Action::DeleteBucketHttpsConfig, Some("abc")));
        assert!(!admin.allows(Action::Sync, None));

        let logs = creds.get("AKIDLOGS").unwrap();
        assert!(logs.allows(Action::PutBucketHttpsConfig, Some("logs-2026")));
        assert!(logs.allows(Action::GetBucketHttpsConfig, Some("exact-name")));
        assert!(!logs.allows(Action::PutBucketHttpsConfig, Some("exact-name-2")));
        assert!(!logs.allows(Action::PutBucketHttpsConfig, Some("mylogs-1")));
        assert!(!logs.allows(Action::PutBucketHttpsConfig, Some("data")));

        let agent = creds.get("AKIDAGENT").unwrap();
        assert!(agent.allows(Action::Sync, None));
        assert!(!agent.allows(Action::GetBucketHttpsConfig, Some("logs-1")));
        assert!(creds.get("nope").is_none());
    }

    #[test]
    fn wildcard_grants() {
        let k = AccessKey::new("a", "s", &["oss:*"], &["*"]).unwrap();
        assert!(k.allows(Action::PutBucketHttpsConfig, Some("b1b")));
        assert!(k.allows(Action::GetBucketHttpsConfig, Some("b1b")));
        assert!(!k.allows(Action::ListBucketHttpsConfigs, None));
        let k = AccessKey::new("a", "s", &["tlsfleet:*"], &[]).unwrap();
        assert!(k.allows(Action::ListAgents, None));
        assert!(k.allows(Action::Sync, None));
        assert!(!k.allows(Action::PutBucketHttpsConfig, None));
        // No bucket patterns: no bucket action, whatever the action grant.
        assert!(!k.allows(Action::DeleteBucketHttpsConfig, Some("abc")));
        let k = AccessKey::new("a", "s", &["*"], &["*"]).unwrap();
        for a in Action::ALL {
            assert!(k.allows(a, Some("abc")), "{a:?}");
        }
    }

    #[test]
    fn action_names_are_case_insensitive() {
        let k = AccessKey::new("a", "s", &["OSS:getbuckethttpsconfig"], &["*"]).unwrap();
        assert!(k.allows(Action::GetBucketHttpsConfig, Some("abc")));
    }

    #[test]
    fn refuses_bad_files() {
        let err = |t: &str| Credentials::parse(t).unwrap_err().to_string();
        let e =
            err("[[key]]\nid='a'\nsecret='s'\nallow=['oss:PutBucketHttpsConfig','oss:Nope','x']\n");
        assert!(e.contains("oss:Nope") && e.contains("\"x\""), "{e}");
        let e = err("[[key]]\nid='a'\nsecret='s'\n[[key]]\nid='a'\nsecret='t'\n");
        assert!(e.contains("more than once"), "{e}");
        let e = err("[[key]]\nid='a'\nsecret=''\n");
        assert!(e.contains("empty secret"), "{e}");
        let e = err("[[key]]\nid=' '\nsecret='x'\n");
        assert!(e.contains("empty id"), "{e}");
        assert!(err("").contains("no [[key]]"));
        let e = err("[[key]]\nid='a'\nsecret='top-secret-value'\nbucket=['*']\n");
        assert!(e.contains("unknown field"), "{e}");
        assert!(!e.contains("top-secret-value"), "{e}");
        let e = err("[[key]]\nid='a'\nsecret='s'\nbuckets=['[a-']\n");
        assert!(e.contains("invalid bucket pattern"), "{e}");
        let e = err("[[key]]\nid='a'\nsecret='s'\nbuckets=['']\n");
        assert!(e.contains("empty pattern"), "{e}");
    }

    #[test]
    fn syntax_errors_do_not_echo_secrets() {
        let e = Credentials::parse("[[key]]\nid='a'\nsecret=\"hunter2\nallow=[]\n")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn debug_redacts_the_secret() {
        let k = AccessKey::new("a", "very-secret", &["oss:*"], &["*"]).unwrap();
        let s = format!("{k:?}");
        assert!(!s.contains("very-secret") && s.contains("redacted"), "{s}");
    }

    #[test]
    fn load_reports_the_path() {
        let e = Credentials::load(Path::new("/nonexistent/creds.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/creds.toml"), "{e}");
    }
}
