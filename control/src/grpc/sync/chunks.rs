//! Snapshots and deltas cut into messages of about a target size, built one at a time (a
//! stream holds at most a few).

use prost::Message as _;
use tlsfleet_proto::v1::BucketPolicy;

/// Wire policies cut into chunks of about `target` bytes (at least one policy each).
pub(super) struct Chunks<I: Iterator<Item = BucketPolicy>> {
    target: usize,
    items: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = BucketPolicy>> Chunks<I> {
    pub(super) fn new(target: usize, items: I) -> Self {
        Self {
            target: target.max(1),
            items: items.peekable(),
        }
    }

    /// The next chunk, and whether more follow.
    pub(super) fn next_chunk(&mut self) -> (Vec<BucketPolicy>, bool) {
        let mut chunk = Vec::new();
        let mut size = 0;
        for p in self.items.by_ref() {
            size += p.encoded_len() + 4;
            chunk.push(p);
            if size >= self.target {
                break;
            }
        }
        let more = self.items.peek().is_some();
        (chunk, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bucket: &str) -> BucketPolicy {
        BucketPolicy {
            bucket: bucket.into(),
            ..Default::default()
        }
    }

    #[test]
    fn chunks_are_bounded_and_cover_everything() {
        let items: Vec<BucketPolicy> = (0..1000)
            .map(|i| policy(&format!("bucket-{i:04}")))
            .collect();
        let one = items[0].encoded_len() + 4;
        let mut chunks = Chunks::new(one * 100, items.clone().into_iter());
        let mut seen = 0;
        let mut count = 0;
        loop {
            let (chunk, more) = chunks.next_chunk();
            assert!(chunk.len() <= 100, "{}", chunk.len());
            seen += chunk.len();
            count += 1;
            if !more {
                break;
            }
        }
        assert_eq!((seen, count), (1000, 10));
        let mut empty = Chunks::new(10, std::iter::empty());
        assert_eq!(empty.next_chunk(), (vec![], false));
    }
}
