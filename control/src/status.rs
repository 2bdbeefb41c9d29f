//! What a control server says of itself to operators and load balancers: `/-/readyz` (the
//! index, and each store member) and `/-/metrics` (Prometheus text). Both are read from
//! state the server keeps anyway; neither calls the store.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::service::Policies;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Endpoint {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

/// Whether a store member answered its last call (always, for the embedded store).
fn store_reachable(members: &[crate::store::MemberHealth]) -> bool {
    members.is_empty() || members.iter().any(|m| m.up)
}

/// Ready as `/-/readyz` says it, without its body (the gRPC health follows it every second).
pub fn is_ready(policies: &Policies) -> bool {
    policies.index().is_loaded() && store_reachable(&policies.store_members())
}

/// `/-/readyz`: ready once the index has loaded, unless every store member failed its last
/// call (then writes cannot succeed). The body names the members and their state.
pub fn readiness(policies: &Policies) -> (bool, String) {
    let loaded = policies.index().is_loaded();
    let members = policies.store_members();
    let reachable = store_reachable(&members);
    let mut body = String::new();
    body.push_str(if !loaded {
        "index not loaded\n"
    } else if !reachable {
        "store unreachable: every member failed its last call\n"
    } else {
        "ok\n"
    });
    for m in &members {
        let state = if m.up { "up" } else { "down" };
        let use_ = if m.in_use { ", in use" } else { "" };
        body.push_str(&format!("store member {}: {state}{use_}", m.endpoint));
        if !m.up && !m.last_error.is_empty() {
            body.push_str(&format!(" ({})", m.last_error));
        }
        body.push('\n');
    }
    (loaded && reachable, body)
}

/// `/-/metrics`, every value read now.
pub fn metrics(policies: &Policies) -> String {
    let mut registry = Registry::with_prefix("tlsfleet_control");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let g = Gauge::<i64>::default();
        g.set(value);
        registry.register(name, help, g);
    };
    let index = policies.index();
    let view = index.view();
    gauge(
        &mut registry,
        "index_loaded",
        "Whether the policy index has loaded (1) or not (0)",
        i64::from(view.is_some()),
    );
    gauge(
        &mut registry,
        "index_revision",
        "Store revision the policy index is at",
        index.revision(),
    );
    gauge(
        &mut registry,
        "index_last_change_revision",
        "Revision of the newest policy change (what rollouts wait for)",
        index.last_change(),
    );
    gauge(
        &mut registry,
        "index_policies",
        "Bucket policies in the index",
        view.as_ref()
            .map_or(0, |v| i64::try_from(v.len()).unwrap_or(i64::MAX)),
    );
    let members = policies.store_members();
    let up = Family::<Endpoint, Gauge>::default();
    let in_use = Family::<Endpoint, Gauge>::default();
    let failures = Family::<Endpoint, Gauge>::default();
    for m in &members {
        let label = Endpoint {
            endpoint: m.endpoint.clone(),
        };
        up.get_or_create(&label).set(i64::from(m.up));
        in_use.get_or_create(&label).set(i64::from(m.in_use));
        failures
            .get_or_create(&label)
            .set(i64::try_from(m.failures).unwrap_or(i64::MAX));
    }
    registry.register(
        "store_member_up",
        "Whether the etcd member answered the last call it was given",
        up,
    );
    registry.register(
        "store_member_in_use",
        "Whether calls go to this etcd member now",
        in_use,
    );
    registry.register(
        "store_member_failed_calls",
        "Calls the etcd member failed since this server started",
        failures,
    );
    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        registry.register(name, help, c);
    };
    {
        use std::sync::atomic::Ordering::Relaxed;

        use crate::grpc::sync::counters as sync;
        counter(
            &mut registry,
            "sync_deltas_encoded",
            "Live deltas encoded, once per distinct delta whatever the number of agents it goes to",
            sync::DELTAS_ENCODED.load(Relaxed),
        );
        counter(
            &mut registry,
            "sync_shared_deltas_sent",
            "Live deltas sent to an agent as bytes encoded once and shared by the streams",
            sync::SHARED_DELTAS_SENT.load(Relaxed),
        );
    }
    if let Some(fleet) = policies.fleet() {
        let agents = Family::<PhaseLabel, Gauge>::default();
        let counts = fleet.local_phases();
        for (phase, n) in ["applying", "in_sync", "degraded", "disconnected"]
            .into_iter()
            .zip(counts)
        {
            agents
                .get_or_create(&PhaseLabel { phase })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        registry.register(
            "agents",
            "Agents on this server's Sync streams, by phase",
            agents,
        );
        let open: usize = counts.iter().take(3).sum();
        gauge(
            &mut registry,
            "sync_streams",
            "Agent Sync streams open on this server",
            i64::try_from(open).unwrap_or(i64::MAX),
        );
        if let Some(n) = fleet.stored_agents() {
            gauge(
                &mut registry,
                "registry_agents",
                "Agent records in the registry (every control server's), as last read",
                n,
            );
        }
        let convergence = fleet.convergence();
        registry.register(
            "convergence_seconds",
            "From a change reaching this server's index to the last ACK of this server's agents",
            convergence.seconds.clone(),
        );
        registry.register(
            "convergence_abandoned",
            "Changes dropped before their last ACK (over 4,096 waiting, or an hour old)",
            convergence.abandoned.clone(),
        );
        let (waiting, oldest) = convergence.waiting();
        gauge(
            &mut registry,
            "rollout_pending_revisions",
            "Changes some agent on this server has not acknowledged yet",
            i64::try_from(waiting).unwrap_or(i64::MAX),
        );
        let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        g.set(oldest.as_secs_f64());
        registry.register(
            "rollout_oldest_pending_seconds",
            "How long the oldest change not yet acknowledged by every agent here has waited",
            g,
        );
    }
    crate::metrics::register(&mut registry);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
