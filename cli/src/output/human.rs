//! Text output: `key: value` blocks with aligned values, and tables with aligned columns.
//! The server's words (versions, suite names, drop reasons) are printed as they come: what a
//! policy means is decided by the control plane, not re-derived here.

use tlsfleet_proto::v1::{
    AgentStatus, BucketPolicy, CipherSuiteConfig, EffectivePolicy, GetResponse,
    GetRolloutStatusResponse, ListAgentsResponse, PutResponse,
};

use super::json::state_name;
use crate::{
    commands::{Listing, Outcome},
    error::human_duration,
};

pub(super) fn render(outcome: &Outcome, now_unix_ms: i64) -> String {
    match outcome {
        Outcome::Put { bucket, response } => {
            let head = format!("stored the policy of bucket {bucket}");
            applied(&head, response)
        }
        Outcome::Disable { bucket, response } => {
            let head = format!("disabled TLS version management for bucket {bucket}");
            applied(&head, response)
        }
        Outcome::Get(r) => get(r),
        Outcome::List(l) => list(l),
        Outcome::Delete { bucket, response } if response.existed => {
            format!(
                "deleted the policy of bucket {bucket} at revision {}\n",
                response.revision
            )
        }
        Outcome::Delete { bucket, response } => format!(
            "bucket {bucket} had no policy: nothing deleted (revision {})\n",
            response.revision
        ),
        Outcome::Agents(r) => agents(r, now_unix_ms),
        Outcome::Rollout(r) => rollout(r),
        Outcome::Canary {
            bucket,
            selector,
            response,
            waited,
        } => {
            let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let head = format!(
                "staged a canary for bucket {bucket} on the agents with {}",
                labels.join(", ")
            );
            let mut out = applied(&head, response);
            out.push_str(&waited_line(waited.as_ref(), response.committed_unix_ms));
            out.push_str(&format!(
                "the stored policy is unchanged: `tlsfleetctl rollout promote --bucket {bucket}` \
                 makes it the policy everywhere, `rollout abort --bucket {bucket}` ends it\n"
            ));
            out
        }
        Outcome::Promoted {
            bucket,
            response,
            waited,
        } => {
            let head = format!("promoted the canary of bucket {bucket} to its policy");
            let mut out = applied(&head, response);
            out.push_str(&waited_line(waited.as_ref(), response.committed_unix_ms));
            out
        }
        Outcome::Aborted {
            bucket,
            response,
            waited,
        } => {
            let mut out = format!(
                "ended the canary of bucket {bucket} at revision {}; its agents are back on the \
                 stored policy\n",
                response.revision
            );
            out.push_str(&waited_line(waited.as_ref(), 0));
            out
        }
        Outcome::RolloutDone(w) => format!(
            "{}all {} agents enforce revision {} (waited {})\n",
            rollout(&w.status),
            w.status.agents_total,
            w.status.revision,
            human_duration(w.elapsed)
        ),
        Outcome::PutEnforced {
            bucket,
            response,
            waited,
        } => {
            let head = format!("stored the policy of bucket {bucket}");
            format!(
                "{}{}",
                applied(&head, response),
                waited_line(Some(waited), response.committed_unix_ms)
            )
        }
        Outcome::History(r) => history(r),
        Outcome::Usage(r) => usage(r),
        Outcome::DryRun { bucket, response } => dry_run(bucket, response),
        Outcome::Default(r) => {
            let mut out = String::from("fleet default policy (buckets without one, no SNI, the bare domain):\n");
            out.push_str(&get(r));
            out
        }
        Outcome::DefaultSet(response) => applied("stored the fleet default policy", response),
        Outcome::DefaultCleared(r) if r.existed => format!(
            "cleared the fleet default policy at revision {} (built-in: TLS 1.2 and 1.3, every suite)\n",
            r.revision
        ),
        Outcome::DefaultCleared(r) => format!(
            "no fleet default policy was set: nothing cleared (revision {})\n",
            r.revision
        ),
    }
}

/// A dry run: what the policy would be, whether it is a downgrade, what it would refuse.
fn dry_run(bucket: &str, r: &PutResponse) -> String {
    let mut f = Fields::default();
    effective(&mut f, r.effective.as_ref());
    let mut out = format!(
        "dry run for bucket {bucket}: nothing stored\n{}",
        f.render()
    );
    if r.downgrade {
        out.push_str(&format!(
            "downgrade: {} (needs --allow-downgrade)\n",
            r.downgrade_reason
        ));
    }
    let Some(i) = &r.impact else {
        return out;
    };
    let pct = |n: u64, of: u64| {
        if of == 0 {
            0.0
        } else {
            100.0 * n as f64 / of as f64
        }
    };
    out.push_str(&format!(
        "would refuse {:.1}% of handshakes ({} of {}) and {:.1}% of requests ({} of {}) \
         seen in {} one-minute windows\n",
        pct(i.refused_handshakes, i.handshakes),
        i.refused_handshakes,
        i.handshakes,
        pct(i.refused_requests, i.requests),
        i.refused_requests,
        i.requests,
        i.windows
    ));
    for (suite, n) in &i.refused_requests_by_suite {
        out.push_str(&format!("  refused {suite:<48} {n:>8} requests\n"));
    }
    for c in &i.clients {
        let how = if c.whole { "all" } else { "some" };
        out.push_str(&format!(
            "  {how} {} clients would be refused:\n",
            c.version
        ));
        if let Some(v) = &c.clients {
            let mut nets: Vec<_> = v.networks.iter().collect();
            nets.sort_by(|a, b| b.1.cmp(a.1));
            for (net, n) in nets {
                out.push_str(&format!("    network    {net:<40} {n:>8}\n"));
            }
            let mut uas: Vec<_> = v.user_agents.iter().collect();
            uas.sort_by(|a, b| b.1.cmp(a.1));
            for (ua, n) in uas {
                out.push_str(&format!("    user-agent {ua:<40} {n:>8}\n"));
            }
        }
    }
    for u in &i.unknowns {
        out.push_str(&format!("  note: {u}\n"));
    }
    out
}

/// A bucket's usage: totals, by suite, refusals, and the clients of each version.
fn usage(r: &tlsfleet_proto::v1::GetUsageResponse) -> String {
    let Some(u) = &r.usage else {
        return "no usage\n".to_owned();
    };
    if r.windows == 0 {
        return format!(
            "bucket {}: no traffic reported (servers: {})\n",
            u.bucket,
            r.servers.join(", ")
        );
    }
    let total = |m: &std::collections::BTreeMap<String, u64>| m.values().sum::<u64>();
    let (h, q) = (total(&u.handshakes), total(&u.requests));
    let mut out = format!(
        "bucket {}: {h} handshakes, {q} requests in {} one-minute windows ({}s span; servers: {})\n",
        u.bucket,
        r.windows,
        r.newest_unix - r.oldest_unix,
        r.servers.join(", ")
    );
    let pct = |n: u64, of: u64| {
        if of == 0 {
            0.0
        } else {
            100.0 * n as f64 / of as f64
        }
    };
    for (suite, n) in &u.requests {
        out.push_str(&format!(
            "  {suite:<48} {n:>8} requests ({:.1}%)  {:>8} handshakes\n",
            pct(*n, q),
            u.handshakes.get(suite).copied().unwrap_or(0)
        ));
    }
    for (offered, n) in &u.refused {
        out.push_str(&format!("  refused handshakes offering {offered}: {n}\n"));
    }
    for c in &u.clients {
        out.push_str(&format!("  {} clients:\n", c.version));
        let mut nets: Vec<_> = c.networks.iter().collect();
        nets.sort_by(|a, b| b.1.cmp(a.1));
        for (net, n) in nets {
            out.push_str(&format!("    network    {net:<40} {n:>8}\n"));
        }
        if c.networks_other > 0 {
            out.push_str(&format!(
                "    network    {:<40} {:>8}\n",
                "(other)", c.networks_other
            ));
        }
        let mut uas: Vec<_> = c.user_agents.iter().collect();
        uas.sort_by(|a, b| b.1.cmp(a.1));
        for (ua, n) in uas {
            out.push_str(&format!("    user-agent {ua:<40} {n:>8}\n"));
        }
        if c.user_agents_other > 0 {
            out.push_str(&format!(
                "    user-agent {:<40} {:>8}\n",
                "(other)", c.user_agents_other
            ));
        }
    }
    out
}

/// One line per record, oldest first: when, outcome, operation, bucket, who, from where,
/// revision, and the reason (why refused, or what a downgrade let in).
fn history(r: &tlsfleet_proto::v1::ListHistoryResponse) -> String {
    if r.records.is_empty() {
        return "no changes recorded\n".to_owned();
    }
    let mut out = String::new();
    for a in &r.records {
        let when =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(a.time_unix_ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| a.time_unix_ms.to_string());
        let revision = if a.revision > 0 {
            format!(" revision {}", a.revision)
        } else {
            String::new()
        };
        let downgrade = if a.downgrade { " (downgrade)" } else { "" };
        out.push_str(&format!(
            "{when}  {} {} {}{downgrade} by {} from {} via {}{revision} [{}]\n",
            a.outcome,
            a.operation,
            a.bucket,
            a.key_id,
            if a.peer.is_empty() { "?" } else { &a.peer },
            a.via,
            a.request_id,
        ));
        if !a.reason.is_empty() {
            out.push_str(&format!("    {}\n", a.reason));
        }
    }
    if !r.next_page_token.is_empty() {
        out.push_str("(more records: narrow with --bucket or --since, or raise --limit)\n");
    }
    out
}

fn applied(head: &str, r: &PutResponse) -> String {
    let mut f = Fields::default();
    effective(&mut f, r.effective.as_ref());
    format!("{head} at revision {}\n{}", r.revision, f.render())
}

/// "enforced by all N agents: …" after a wait, or nothing.
fn waited_line(waited: Option<&crate::wait::Waited>, committed_unix_ms: i64) -> String {
    let Some(w) = waited else {
        return String::new();
    };
    let took = match w.write_to_last_ack(committed_unix_ms) {
        Some(d) => format!(
            "{} from the write to the last acknowledgement",
            human_duration(d)
        ),
        None => format!("waited {}", human_duration(w.elapsed)),
    };
    format!("enforced by all {} agents: {took}\n", w.status.agents_total)
}

fn canary(f: &mut Fields, c: &tlsfleet_proto::v1::Canary) {
    f.heading("canary (pending; not the stored policy until promoted):");
    let labels: Vec<String> = c.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    f.field(1, "on agents with", [labels.join(", ")]);
    f.field(1, "revision", [c.revision.to_string()]);
    f.field(1, "staged by", [c.updated_by.clone()]);
    if let Some(e) = &c.effective {
        f.field(1, "serves versions", [dash(e.tls_versions.join(", "))]);
        f.field(1, "serves suites", [dash(e.cipher_suites.join(", "))]);
    }
}

fn get(r: &GetResponse) -> String {
    let Some(p) = &r.policy else {
        return format!("no policy in the answer (revision {})\n", r.revision);
    };
    let mut f = Fields::default();
    f.field(0, "bucket", [p.bucket.clone()]);
    let modified = if p.mod_revision == 0 {
        "never set: the default applies".to_owned()
    } else {
        format!("{} (created at {})", p.mod_revision, p.create_revision)
    };
    f.field(0, "mod revision", [modified]);
    f.field(0, "read at revision", [r.revision.to_string()]);
    stored(&mut f, p);
    effective(&mut f, p.effective.as_ref());
    if let Some(c) = &p.canary {
        canary(&mut f, c);
    }
    f.render()
}

fn stored(f: &mut Fields, p: &BucketPolicy) {
    f.heading("stored policy:");
    let Some(config) = &p.config else {
        f.field(1, "config", ["(none in the answer)".to_owned()]);
        return;
    };
    let (enabled, versions) = match &config.tls {
        Some(t) => (
            if t.enable { "enabled" } else { "disabled" },
            t.tls_versions.clone(),
        ),
        None => ("(no TLS section)", Vec::new()),
    };
    f.field(1, "tls management", [enabled.to_owned()]);
    f.field(1, "tls versions", [versions.join(", ")]);
    match &config.cipher_suite {
        None => f.field(1, "cipher suites", ["no CipherSuite section".to_owned()]),
        Some(cs) => cipher_section(f, cs),
    }
}

fn cipher_section(f: &mut Fields, cs: &CipherSuiteConfig) {
    let flag = |b: Option<bool>| b.map_or("unset".to_owned(), |b| b.to_string());
    let flags = format!(
        "enable={}, strong={}",
        flag(cs.enable),
        flag(cs.strong_cipher_suite)
    );
    f.field(1, "cipher suites", [flags]);
    f.field(1, "tls1.2 custom", cs.custom_cipher_suites.iter().cloned());
    f.field(
        1,
        "tls1.3 custom",
        cs.tls13_custom_cipher_suites.iter().cloned(),
    );
}

fn effective(f: &mut Fields, e: Option<&EffectivePolicy>) {
    f.heading("effective policy (what the edge serves):");
    let Some(e) = e else {
        f.field(1, "policy", ["(none in the answer)".to_owned()]);
        return;
    };
    f.field(1, "tls versions", [e.tls_versions.join(", ")]);
    f.field(1, "cipher suites", e.cipher_suites.iter().cloned());
    f.field(1, "dropped", e.dropped.iter().cloned());
}

fn list(l: &Listing) -> String {
    let rows = l.policies.iter().map(|p| {
        let tls = p.config.as_ref().and_then(|c| c.tls.as_ref());
        let eff = p.effective.as_ref();
        vec![
            p.bucket.clone(),
            tls.map_or("-", |t| if t.enable { "on" } else { "off" })
                .to_owned(),
            dash(tls.map(|t| t.tls_versions.join(",")).unwrap_or_default()),
            dash(eff.map(|e| e.tls_versions.join(",")).unwrap_or_default()),
            eff.map_or(0, |e| e.cipher_suites.len()).to_string(),
            eff.map_or(0, |e| e.dropped.len()).to_string(),
            if p.canary.is_some() {
                format!("{} (canary pending)", p.mod_revision)
            } else {
                p.mod_revision.to_string()
            },
        ]
    });
    let mut out = if l.policies.is_empty() {
        String::new()
    } else {
        let head = [
            "BUCKET", "TLS", "VERSIONS", "SERVED", "SUITES", "DROPPED", "MOD REV",
        ];
        table(&head, rows)
    };
    let n = l.policies.len();
    let noun = if n == 1 { "policy" } else { "policies" };
    out.push_str(&format!("{n} {noun} at revision {}\n", l.revision));
    if !l.next_page_token.is_empty() {
        out.push_str(&format!("more: --page-token {}\n", l.next_page_token));
    }
    out
}

fn agents(r: &ListAgentsResponse, now_unix_ms: i64) -> String {
    let mut sorted: Vec<&AgentStatus> = r.agents.iter().collect();
    sorted.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let rows = sorted.iter().map(|a| {
        let mut labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let nack = if a.errors.is_empty() {
            "-".to_owned()
        } else {
            let errors: Vec<String> = a
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.bucket, e.reason))
                .collect();
            format!("r{}: {}", a.nack_revision, errors.join("; "))
        };
        vec![
            a.node_id.clone(),
            state_name(a.state).replace('_', "-"),
            a.applied_revision.to_string(),
            a.sent_revision.to_string(),
            dash(a.control_id.clone()),
            age(a.last_seen_unix_ms, now_unix_ms),
            dash(labels.join(",")),
            nack,
        ]
    });
    let mut out = if r.agents.is_empty() {
        String::new()
    } else {
        let head = [
            "NODE",
            "STATE",
            "APPLIED",
            "SENT",
            "CONTROL",
            "LAST SEEN",
            "LABELS",
            "LAST NACK",
        ];
        table(&head, rows)
    };
    let n = r.agents.len();
    let noun = if n == 1 { "agent" } else { "agents" };
    out.push_str(&format!("{n} {noun}, store revision {}\n", r.revision));
    out
}

fn rollout(r: &GetRolloutStatusResponse) -> String {
    let mut f = Fields::default();
    if let Some(c) = &r.canary {
        let labels: Vec<String> = c.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.field(0, "canary on", [labels.join(", ")]);
        let total = format!("{} handshakes", r.refused_handshakes);
        let each = r.refused_by_agent.iter().map(|(a, n)| format!("{a}: {n}"));
        f.field(0, "refused since", std::iter::once(total).chain(each));
        if !r.unreachable.is_empty() {
            f.field(0, "not counted", r.unreachable.iter().cloned());
        }
    }
    f.field(0, "enforcing", r.enforcing.iter().cloned());
    f.field(0, "pending", r.pending.iter().cloned());
    f.field(0, "failed", r.failed.iter().cloned());
    format!(
        "revision {}: {} of {} agents enforcing, {} pending, {} failed\n{}",
        r.revision,
        r.enforcing.len(),
        r.agents_total,
        r.pending.len(),
        r.failed.len(),
        f.render()
    )
}

/// "12s ago", "5m ago"...; "-" when never seen.
fn age(then_unix_ms: i64, now_unix_ms: i64) -> String {
    if then_unix_ms <= 0 {
        return "-".to_owned();
    }
    // A clock a little behind the server's must not print a negative age.
    let secs = now_unix_ms.saturating_sub(then_unix_ms).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

fn dash(s: String) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s
    }
}

/// Columns separated by two spaces; the last one is not padded, so lines have no trailing
/// blanks and a long last column (NACK reasons) does not widen the others.
fn table(head: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut lines: Vec<Vec<String>> = vec![head.iter().map(|h| (*h).to_owned()).collect()];
    lines.extend(rows);
    let mut widths = vec![0; head.len()];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let last = line.len().saturating_sub(1);
        for (i, (cell, w)) in line.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
    }
    out
}

/// `key: value` lines, values aligned across the whole block; a list prints one item per line.
#[derive(Default)]
struct Fields {
    lines: Vec<(usize, String, Vec<String>)>,
}

impl Fields {
    fn heading(&mut self, text: &str) {
        self.lines.push((0, text.to_owned(), Vec::new()));
    }

    fn field(&mut self, indent: usize, key: &str, values: impl IntoIterator<Item = String>) {
        let mut values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            values.push("-".to_owned());
        }
        self.lines
            .push((indent, format!("{}{key}:", "  ".repeat(indent)), values));
    }

    fn render(&self) -> String {
        let width = self
            .lines
            .iter()
            .filter(|(_, _, v)| !v.is_empty())
            .map(|(_, k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (_, key, values) in &self.lines {
            let Some((first, rest)) = values.split_first() else {
                out.push_str(key);
                out.push('\n');
                continue;
            };
            out.push_str(&format!("{key:<width$}  {first}\n"));
            for v in rest {
                out.push_str(&format!("{:<width$}  {v}\n", ""));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use tlsfleet_proto::v1::{BucketError, DeleteResponse, HttpsConfig, TlsConfig};

    use super::*;
    use crate::{args::Format, output};

    fn human(outcome: &Outcome) -> String {
        output::render(outcome, Format::Human, 1_000_000)
    }

    fn effective_policy() -> EffectivePolicy {
        EffectivePolicy {
            tls_versions: vec!["TLSv1.2".into(), "TLSv1.3".into()],
            cipher_suites: vec![
                "TLS13_AES_256_GCM_SHA384".into(),
                "TLS13_AES_128_GCM_SHA256".into(),
            ],
            dropped: vec![],
        }
    }

    #[test]
    fn put_prints_revision_and_aligned_effective_policy() {
        let out = human(&Outcome::Put {
            bucket: "logs".into(),
            response: PutResponse {
                revision: 42,
                effective: Some(effective_policy()),
                ..Default::default()
            },
        });
        assert_eq!(
            out,
            "stored the policy of bucket logs at revision 42\n\
             effective policy (what the edge serves):\n\
            \x20 tls versions:   TLSv1.2, TLSv1.3\n\
            \x20 cipher suites:  TLS13_AES_256_GCM_SHA384\n\
            \x20                 TLS13_AES_128_GCM_SHA256\n\
            \x20 dropped:        -\n"
        );
    }

    #[test]
    fn get_shows_stored_and_effective() {
        let policy = BucketPolicy {
            bucket: "logs".into(),
            config: Some(HttpsConfig {
                tls: Some(TlsConfig {
                    enable: true,
                    tls_versions: vec!["TLSv1.1".into()],
                }),
                cipher_suite: Some(CipherSuiteConfig {
                    enable: Some(true),
                    strong_cipher_suite: None,
                    custom_cipher_suites: vec!["ECDHE-RSA-AES128-GCM-SHA256".into()],
                    tls13_custom_cipher_suites: vec![],
                }),
            }),
            effective: Some(EffectivePolicy {
                dropped: vec!["TLSv1.1 is not served".into()],
                ..effective_policy()
            }),
            mod_revision: 7,
            create_revision: 3,
            canary: None,
        };
        let out = human(&Outcome::Get(GetResponse {
            policy: Some(policy),
            revision: 9,
        }));
        assert_eq!(
            out,
            "bucket:            logs\n\
             mod revision:      7 (created at 3)\n\
             read at revision:  9\n\
             stored policy:\n\
            \x20 tls management:  enabled\n\
            \x20 tls versions:    TLSv1.1\n\
            \x20 cipher suites:   enable=true, strong=unset\n\
            \x20 tls1.2 custom:   ECDHE-RSA-AES128-GCM-SHA256\n\
            \x20 tls1.3 custom:   -\n\
             effective policy (what the edge serves):\n\
            \x20 tls versions:    TLSv1.2, TLSv1.3\n\
            \x20 cipher suites:   TLS13_AES_256_GCM_SHA384\n\
            \x20                  TLS13_AES_128_GCM_SHA256\n\
            \x20 dropped:         TLSv1.1 is not served\n"
        );
    }

    #[test]
    fn get_of_a_never_set_bucket_says_so() {
        let policy = BucketPolicy {
            bucket: "fresh".into(),
            config: Some(HttpsConfig {
                tls: Some(TlsConfig {
                    enable: false,
                    tls_versions: vec![],
                }),
                cipher_suite: None,
            }),
            effective: Some(effective_policy()),
            mod_revision: 0,
            create_revision: 0,
            canary: None,
        };
        let out = human(&Outcome::Get(GetResponse {
            policy: Some(policy),
            revision: 9,
        }));
        assert!(out.contains("never set: the default applies"), "{out}");
        assert!(out.contains("  tls management:  disabled\n"), "{out}");
        assert!(out.contains("no CipherSuite section"), "{out}");
    }

    #[test]
    fn list_is_a_table_with_a_footer() {
        let mut second = BucketPolicy {
            bucket: "a-much-longer-bucket".into(),
            config: Some(HttpsConfig {
                tls: Some(TlsConfig {
                    enable: false,
                    tls_versions: vec![],
                }),
                cipher_suite: None,
            }),
            effective: Some(effective_policy()),
            mod_revision: 11,
            create_revision: 11,
            canary: None,
        };
        let first = BucketPolicy {
            bucket: "logs".into(),
            mod_revision: 5,
            ..second.clone()
        };
        second.config.as_mut().unwrap().tls = Some(TlsConfig {
            enable: true,
            tls_versions: vec!["TLSv1.3".into()],
        });
        let out = human(&Outcome::List(Listing {
            policies: vec![first, second],
            next_page_token: "tok".into(),
            revision: 12,
        }));
        assert_eq!(
            out,
            "BUCKET                TLS  VERSIONS  SERVED           SUITES  DROPPED  MOD REV\n\
             logs                  off  -         TLSv1.2,TLSv1.3  2       0        5\n\
             a-much-longer-bucket  on   TLSv1.3   TLSv1.2,TLSv1.3  2       0        11\n\
             2 policies at revision 12\n\
             more: --page-token tok\n"
        );
        let empty = human(&Outcome::List(Listing {
            revision: 3,
            ..Listing::default()
        }));
        assert_eq!(empty, "0 policies at revision 3\n");
    }

    #[test]
    fn agents_table_shows_state_revisions_and_nack_errors() {
        let agent = |id: &str, state, errors: Vec<BucketError>| AgentStatus {
            node_id: id.into(),
            labels: [
                ("zone".to_owned(), "a".to_owned()),
                ("region".to_owned(), "eu".to_owned()),
            ]
            .into(),
            applied_revision: 5,
            sent_revision: 6,
            state,
            errors,
            nack_revision: 6,
            control_id: "c1".into(),
            connected_at_unix_ms: 1,
            last_seen_unix_ms: 1_000_000 - 12_000,
            key_types: vec![],
        };
        let out = human(&Outcome::Agents(ListAgentsResponse {
            agents: vec![
                agent(
                    "edge-2",
                    3,
                    vec![
                        BucketError {
                            bucket: "logs".into(),
                            reason: "no ECDSA suite".into(),
                        },
                        BucketError {
                            bucket: "img".into(),
                            reason: "bad".into(),
                        },
                    ],
                ),
                agent("edge-1", 1, vec![]),
            ],
            revision: 6,
        }));
        assert_eq!(
            out,
            "NODE    STATE     APPLIED  SENT  CONTROL  LAST SEEN  LABELS            LAST NACK\n\
             edge-1  in-sync   5        6     c1       12s ago    region=eu,zone=a  -\n\
             edge-2  degraded  5        6     c1       12s ago    region=eu,zone=a  \
             r6: logs: no ECDSA suite; img: bad\n\
             2 agents, store revision 6\n"
        );
        let none = human(&Outcome::Agents(ListAgentsResponse {
            agents: vec![],
            revision: 2,
        }));
        assert_eq!(none, "0 agents, store revision 2\n");
    }

    #[test]
    fn rollout_summary() {
        let out = human(&Outcome::Rollout(GetRolloutStatusResponse {
            revision: 13,
            agents_total: 3,
            enforcing: vec!["a".into(), "b".into()],
            pending: vec!["c".into()],
            failed: vec![],
            ..Default::default()
        }));
        assert_eq!(
            out,
            "revision 13: 2 of 3 agents enforcing, 1 pending, 0 failed\n\
             enforcing:  a\n\
            \x20           b\n\
             pending:    c\n\
             failed:     -\n"
        );
    }

    #[test]
    fn delete_says_whether_anything_was_there() {
        let del = |existed| Outcome::Delete {
            bucket: "logs".into(),
            response: DeleteResponse {
                revision: 4,
                existed,
                ..Default::default()
            },
        };
        assert_eq!(
            human(&del(true)),
            "deleted the policy of bucket logs at revision 4\n"
        );
        assert!(human(&del(false)).contains("nothing deleted"));
    }

    #[test]
    fn ages() {
        assert_eq!(age(0, 5_000), "-");
        assert_eq!(age(6_000, 5_000), "0s ago");
        assert_eq!(age(1, 61_001), "1m ago");
        assert_eq!(age(1, 7_200_001), "2h ago");
        assert_eq!(age(1, 3 * 86_400_000 + 1), "3d ago");
    }
}
