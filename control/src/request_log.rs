//! `--request-log`: which requests get their line (target `tlsfleet::request`, written by the
//! REST endpoint and the gRPC layer). Metrics count every request either way.

/// Which requests are logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RequestLog {
    /// Every request (the default).
    #[default]
    All,
    /// Every request that changes something or fails; not the successful reads (GETs, lists,
    /// rollout and usage queries, health checks), as HAProxy's `option dontlog-normal`. For
    /// servers polled thousands of times a second, where the read lines cost more than the
    /// reads.
    Changes,
}

impl RequestLog {
    /// Whether a request gets its line: `read` when it changes nothing, `ok` when it succeeded.
    pub fn wants(self, read: bool, ok: bool) -> bool {
        match self {
            RequestLog::All => true,
            RequestLog::Changes => !(read && ok),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_drops_only_successful_reads() {
        assert!(RequestLog::All.wants(true, true));
        assert!(!RequestLog::Changes.wants(true, true));
        assert!(RequestLog::Changes.wants(true, false));
        assert!(RequestLog::Changes.wants(false, true));
        assert!(RequestLog::Changes.wants(false, false));
    }
}
