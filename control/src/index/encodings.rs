//! An update's deltas as the Sync streams send them, encoded once per distinct content.

use std::sync::{Arc, Mutex};

use tlsfleet_proto::frame::SharedDelta;

/// An update's encodings as deltas, by the canaries that apply to the agents they go to
/// (`canary::selection`): every agent that gets the same delta is sent the same bytes. Kept
/// with the update, so dropped with it once every stream has read it; at most
/// [`Encodings::MAX`] variants (agents beyond them get theirs encoded for them). A clone
/// starts empty.
#[derive(Default)]
pub struct Encodings(Mutex<Vec<Variant>>);

/// One encoding: the canaries it is for, and its chunks once made.
type Variant = (Vec<String>, Arc<tokio::sync::OnceCell<Arc<[SharedDelta]>>>);

impl Encodings {
    /// Distinct deltas kept per update.
    pub const MAX: usize = 16;
    /// Updates that change more buckets than this are not kept encoded (all of it would be
    /// held until the slowest stream has sent it): each stream encodes its own, a chunk at a
    /// time.
    pub const MAX_CHANGES: usize = 50_000;

    /// The deltas for the agents whose canaries are `selection`, made by `make` the first
    /// time (other streams wait for them rather than make their own); None when they are not
    /// kept (too many variants).
    pub async fn get_or_make(
        &self,
        selection: Vec<String>,
        make: impl FnOnce() -> Vec<SharedDelta>,
    ) -> Option<Arc<[SharedDelta]>> {
        let cell = {
            let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match all.iter().find(|(s, _)| *s == selection) {
                Some((_, cell)) => cell.clone(),
                None if all.len() < Self::MAX => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    all.push((selection, cell.clone()));
                    cell
                }
                None => return None,
            }
        };
        Some(cell.get_or_init(|| async { make().into() }).await.clone())
    }

    /// How many variants are kept.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Clone for Encodings {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for Encodings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encodings({})", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(revision: i64) -> SharedDelta {
        SharedDelta::new(tlsfleet_proto::v1::Delta {
            revision,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn an_update_is_encoded_once_per_selection_and_variants_are_bounded() {
        let e = Encodings::default();
        let mut made = 0;
        for _ in 0..3 {
            let got = e
                .get_or_make(vec![], || {
                    made += 1;
                    vec![shared(1)]
                })
                .await;
            assert_eq!(got.as_deref(), Some(&[shared(1)][..]));
        }
        assert_eq!(made, 1, "encoded once for every stream");
        for i in 1..Encodings::MAX {
            let got = e
                .get_or_make(vec![format!("b{i}")], || vec![shared(2)])
                .await;
            assert!(got.is_some());
        }
        assert_eq!(e.len(), Encodings::MAX);
        let beyond = e.get_or_make(vec!["more".into()], || vec![shared(3)]).await;
        assert!(beyond.is_none(), "past the bound a stream encodes its own");
        assert!(e.clone().is_empty(), "a clone starts empty");
    }
}
