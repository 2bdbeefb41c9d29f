//! OSS bucket names.

use std::{fmt, str::FromStr};

/// An OSS bucket name: 3–63 characters of lowercase letters, digits and hyphens,
/// starting and ending with a letter or digit.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct BucketName(String);

/// Why a string is not a bucket name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bucket name {name:?}: {reason}")]
pub struct InvalidBucketName {
    pub name: String,
    pub reason: &'static str,
}

impl BucketName {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 63;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl BucketName {
    /// Checks `s` against the naming rules.
    fn check(s: &str) -> Result<(), InvalidBucketName> {
        let fail = |reason| {
            Err(InvalidBucketName {
                // Bound what we echo back: the name comes from the network.
                name: s.chars().take(80).collect(),
                reason,
            })
        };
        if s.len() < Self::MIN_LEN || s.len() > Self::MAX_LEN {
            return fail("must be 3 to 63 characters long");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return fail("may contain only lowercase letters, digits and hyphens");
        }
        let bytes = s.as_bytes();
        if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
            return fail("must start and end with a lowercase letter or a digit");
        }
        Ok(())
    }
}

impl FromStr for BucketName {
    type Err = InvalidBucketName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::check(s)?;
        Ok(Self(s.to_owned()))
    }
}

/// Takes the string as the name, without a copy.
impl TryFrom<String> for BucketName {
    type Error = InvalidBucketName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::check(&s)?;
        Ok(Self(s))
    }
}

impl From<BucketName> for String {
    fn from(b: BucketName) -> Self {
        b.0
    }
}

impl AsRef<str> for BucketName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_oss_names() {
        for ok in ["abc", "my-bucket-1", "0a0", &"a".repeat(63)] {
            assert!(ok.parse::<BucketName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "ABC",
            "a_b",
            "a.b.c",
            "",
            &"a".repeat(64),
            "bück",
        ] {
            assert!(bad.parse::<BucketName>().is_err(), "{bad}");
        }
    }
}
