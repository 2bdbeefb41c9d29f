//! How the messages serialize (serde, as `tlsfleetctl --output json` prints them): field for
//! field in snake_case, int64 as numbers, absent messages as `null`, maps sorted, and the
//! agent state as a short word.

use crate::v1::AgentState;

/// Stable words for scripts; a state this build does not know yet is `unknown`.
pub fn state_name(state: i32) -> &'static str {
    match AgentState::try_from(state) {
        Ok(AgentState::InSync) => "in_sync",
        Ok(AgentState::Applying) => "applying",
        Ok(AgentState::Degraded) => "degraded",
        Ok(AgentState::Disconnected) => "disconnected",
        Ok(AgentState::Unspecified) => "unspecified",
        Err(_) => "unknown",
    }
}

/// `AgentStatus.state` as [`state_name`].
pub fn agent_state<S: serde::Serializer>(state: &i32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state_name(*state))
}
