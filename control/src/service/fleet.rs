//! What the fleet can serve: a policy an agent's certificate cannot serve is refused before
//! it is stored.

use tlsfleet_policy::{EffectivePolicy, ValidationError, ValidationErrorKind};

use super::{Policies, PolicyError};

impl Policies {
    /// A policy an agent cannot build would leave its bucket on an older, looser config (or
    /// refused): refuse it here instead, naming the agents whose certificates cannot serve it.
    pub(super) async fn check_fleet_can_serve(
        &self,
        effective: &EffectivePolicy,
    ) -> Result<(), PolicyError> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        for (kind, agents) in fleet.key_types().await {
            if effective.key.servable_with(kind) {
                continue;
            }
            let shown: Vec<&str> = agents.iter().take(5).map(String::as_str).collect();
            let more = agents.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            return Err(PolicyError::Invalid(ValidationError {
                kind: ValidationErrorKind::InvalidArgument,
                message: format!(
                    "the fleet cannot serve this policy: agents with {kind} certificates ({}{more}) \
                     serve only {}-* suites over TLS 1.2, and the policy allows TLS 1.2 with \
                     {}-* suites only; add TLSv1.3 or a {}-* suite",
                    shown.join(", "),
                    kind.family(),
                    kind.other_family(),
                    kind.family(),
                ),
            }));
        }
        Ok(())
    }
}
