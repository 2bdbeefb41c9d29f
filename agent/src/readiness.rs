//! Readiness: where the agent stands with the control plane (set by the sync client), and
//! what `/readyz` answers. A table that has applied a snapshot (from a control server or the
//! cache) is ready; until then every handshake is refused and `/readyz` says why.

use std::sync::{
    atomic::{AtomicU8, Ordering},
    Mutex,
};

use crate::table::TableSnapshot;

/// The default `/readyz` reason before anything was applied.
pub const NOT_READY_REASON: &str = "no snapshot and no cache: refusing TLS";

/// Where the agent stands with the control plane (set by the sync client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncState {
    /// Dialing a control server; nothing applied in this session yet.
    Connecting,
    /// Streaming from a control server and up to date.
    Synced,
    /// The stream broke; the table keeps enforcing the last applied revision.
    Disconnected,
    /// No control server reached since start; serving the last-known-good cache.
    ServingFromCache,
}

impl SyncState {
    /// Every state, in the order of their discriminants.
    pub const ALL: [SyncState; 4] = [
        Self::Connecting,
        Self::Synced,
        Self::Disconnected,
        Self::ServingFromCache,
    ];

    /// The label value in `sync_state{state=..}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Synced => "synced",
            Self::Disconnected => "disconnected",
            Self::ServingFromCache => "serving_from_cache",
        }
    }
}

/// The sync client's state and the reason the agent is not ready. Share it as
/// `Arc<Readiness>`.
#[derive(Debug)]
pub struct Readiness {
    state: AtomicU8,
    not_ready_reason: Mutex<String>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(SyncState::Connecting as u8),
            not_ready_reason: Mutex::new(NOT_READY_REASON.to_owned()),
        }
    }
}

impl Readiness {
    /// Records the sync client's state (exported as `sync_state{state=..} 1`).
    pub fn set_sync_state(&self, state: SyncState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// The last state set with [`Readiness::set_sync_state`].
    pub fn sync_state(&self) -> SyncState {
        let i = usize::from(self.state.load(Ordering::Relaxed));
        SyncState::ALL
            .get(i)
            .copied()
            .unwrap_or(SyncState::Connecting)
    }

    /// The `/readyz` body while the table is not ready, e.g. "control plane unreachable
    /// and no cache: refusing TLS".
    pub fn set_not_ready_reason(&self, reason: impl Into<String>) {
        if let Ok(mut r) = self.not_ready_reason.lock() {
            *r = reason.into();
        }
    }

    /// The reason set with [`Readiness::set_not_ready_reason`] (default
    /// [`NOT_READY_REASON`]).
    pub fn not_ready_reason(&self) -> String {
        self.not_ready_reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| NOT_READY_REASON.to_owned())
    }

    /// `/readyz`: the revision enforced when `table` is ready, else why not.
    pub fn check(&self, table: &TableSnapshot) -> Result<i64, String> {
        table
            .revision()
            .filter(|_| table.is_ready())
            .ok_or_else(|| self.not_ready_reason())
    }
}
