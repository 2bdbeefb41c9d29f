//! A whole snapshot's policies as they are received, before the table is built from them.
//!
//! A million buckets share a handful of distinct policies, so each distinct `HttpsConfig` is
//! kept once and a bucket holds its index: the snapshot costs its bucket names and one word
//! per bucket while it is assembled, not a million config copies that are freed right after
//! the table is built (freed memory an allocator does not hand back at once still counts in
//! the agent's RSS).

use indexmap::IndexSet;
use tlsfleet_policy::{BucketName, HttpsConfig};

use super::snapshot::BucketKey;

/// Buckets per block of [`Policies`]: 128 KiB each.
const BLOCK: usize = 4096;

/// Buckets and their stored policies, each distinct policy kept once.
///
/// The buckets are kept in blocks of a fixed size rather than one growing vector: a vector
/// of a million entries is reallocated (copied) each time it doubles and leaves the freed
/// halves behind, while blocks are allocated once each, and the allocator reuses them.
#[derive(Debug, Default)]
pub struct Policies {
    /// Names as they were decoded (no copy); the table copies each into its shard, and
    /// these are freed as each block is walked.
    blocks: Vec<Vec<(BucketKey, usize)>>,
    configs: IndexSet<HttpsConfig>,
}

impl Policies {
    /// Adds a bucket's policy. A bucket added twice is applied twice: the last one stands.
    pub fn push(&mut self, bucket: BucketName, config: HttpsConfig) {
        let (index, _) = self.configs.insert_full(config);
        let bucket = BucketKey::from(bucket.into_string());
        match self.blocks.last_mut() {
            Some(block) if block.len() < BLOCK => block.push((bucket, index)),
            _ => {
                let mut block = Vec::with_capacity(BLOCK);
                block.push((bucket, index));
                self.blocks.push(block);
            }
        }
    }

    /// Buckets added.
    pub fn len(&self) -> usize {
        self.blocks.iter().map(Vec::len).sum()
    }

    /// Whether no bucket was added.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Distinct policies among them.
    pub fn distinct(&self) -> usize {
        self.configs.len()
    }

    /// The buckets in the order added, each with the index of its policy among the distinct
    /// policies (returned beside them); each block is freed once walked.
    pub(super) fn into_parts(
        self,
    ) -> (
        impl Iterator<Item = (BucketKey, usize)>,
        IndexSet<HttpsConfig>,
    ) {
        (self.blocks.into_iter().flatten(), self.configs)
    }

    /// The bucket names, in the order added.
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.blocks.iter().flatten().map(|(bucket, _)| &**bucket)
    }
}

impl FromIterator<(BucketName, HttpsConfig)> for Policies {
    fn from_iter<I: IntoIterator<Item = (BucketName, HttpsConfig)>>(iter: I) -> Self {
        let mut policies = Self::default();
        for (bucket, config) in iter {
            policies.push(bucket, config);
        }
        policies
    }
}

impl From<Vec<(BucketName, HttpsConfig)>> for Policies {
    fn from(policies: Vec<(BucketName, HttpsConfig)>) -> Self {
        policies.into_iter().collect()
    }
}
