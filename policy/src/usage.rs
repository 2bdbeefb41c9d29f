//! TLS usage of a bucket in one time window, and what a proposed policy would refuse of it.
//!
//! Agents count per bucket, per window: handshakes and requests by negotiated suite (a suite
//! names its version), handshakes refused by the highest version the client offered, and the
//! top client networks and `User-Agent` values per version, each list bounded ([`TOP_N`]
//! entries and an "other" count). Windows merge (fleet-wide, and over time), and
//! [`Usage::impact`] says what share of them a policy would have refused. No I/O here: the
//! agent records, the control plane aggregates and answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{PolicyKey, ServedSuite, ServedVersion};

/// Entries kept per top list (networks, User-Agents, per version); the rest count as other.
pub const TOP_N: usize = 8;
/// The longest User-Agent kept (longer ones are cut).
pub const MAX_USER_AGENT: usize = 128;

/// The highest version a refused client offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Offered {
    /// TLS 1.3 (it sent TLS 1.3 suites).
    Tls13,
    /// TLS 1.2 at most.
    Tls12,
    /// Older than TLS 1.2, or nothing the edge knows.
    Older,
}

/// A bounded count of keys: the first [`TOP_N`] keys seen are counted each, later ones
/// together as `other` (approximate top-N, bounded whatever the traffic).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Top {
    pub counts: BTreeMap<String, u64>,
    pub other: u64,
}

impl Top {
    pub fn add(&mut self, key: &str, n: u64) {
        if let Some(c) = self.counts.get_mut(key) {
            *c += n;
        } else if self.counts.len() < TOP_N {
            self.counts.insert(key.to_owned(), n);
        } else {
            self.other += n;
        }
    }

    pub fn merge(&mut self, other: &Top) {
        for (k, n) in &other.counts {
            self.add(k, *n);
        }
        self.other += other.other;
    }

    /// The keys, largest first.
    pub fn ranked(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.counts.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }
}

/// Clients of one version: their networks (/24 or /64) and User-Agents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clients {
    pub networks: Top,
    pub user_agents: Top,
}

/// One bucket's usage in one window (or several, merged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Handshakes by negotiated suite (`ServedSuite as usize`).
    pub handshakes: [u64; 9],
    /// Requests by the suite of their connection.
    pub requests: [u64; 9],
    /// Handshakes refused, by the highest version offered.
    pub refused: BTreeMap<Offered, u64>,
    /// Requests' clients, by version (`ServedVersion as usize`: TLS 1.2, TLS 1.3).
    pub clients: [Clients; 2],
}

/// The /24 (IPv4) or /64 (IPv6) network of an address, as counted.
pub fn network(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

impl Usage {
    pub fn handshake(&mut self, suite: ServedSuite) {
        self.handshakes[suite as usize] += 1;
    }

    /// A request on a connection with `suite`, from `ip` with `user_agent`.
    pub fn request(&mut self, suite: ServedSuite, ip: std::net::IpAddr, user_agent: Option<&str>) {
        self.requests[suite as usize] += 1;
        let clients = &mut self.clients[suite.version() as usize];
        clients.networks.add(&network(ip), 1);
        let ua = user_agent.unwrap_or("-");
        let ua: String = ua
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_USER_AGENT)
            .collect();
        clients.user_agents.add(&ua, 1);
    }

    pub fn refusal(&mut self, offered: Offered) {
        *self.refused.entry(offered).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: &Usage) {
        for i in 0..9 {
            self.handshakes[i] += other.handshakes[i];
            self.requests[i] += other.requests[i];
        }
        for (k, n) in &other.refused {
            *self.refused.entry(*k).or_insert(0) += n;
        }
        for v in 0..2 {
            self.clients[v].networks.merge(&other.clients[v].networks);
            self.clients[v]
                .user_agents
                .merge(&other.clients[v].user_agents);
        }
    }

    pub fn total_handshakes(&self) -> u64 {
        self.handshakes.iter().sum()
    }

    pub fn total_requests(&self) -> u64 {
        self.requests.iter().sum()
    }

    /// What `key` would have refused of this usage.
    pub fn impact(&self, key: PolicyKey) -> Impact {
        let allowed = |s: ServedSuite| key.allows_version(s.version()) && key.allows_suite(s);
        let mut out = Impact {
            handshakes: self.total_handshakes(),
            requests: self.total_requests(),
            ..Impact::default()
        };
        for s in ServedSuite::ALL {
            let (h, r) = (self.handshakes[s as usize], self.requests[s as usize]);
            if !allowed(s) && (h > 0 || r > 0) {
                out.refused_handshakes += h;
                out.refused_requests += r;
                out.by_suite.push((s, h, r));
            }
        }
        for v in ServedVersion::ALL {
            // Clients are counted per version: a version refused whole refuses all of them;
            // one refused only in some suites refuses some (which ones is not counted).
            let suites: Vec<ServedSuite> = ServedSuite::ALL
                .into_iter()
                .filter(|s| s.version() == v)
                .collect();
            let used = suites.iter().filter(|s| self.requests[**s as usize] > 0);
            let refused_used: Vec<bool> = used.map(|s| !allowed(*s)).collect();
            if refused_used.is_empty() || !refused_used.iter().any(|r| *r) {
                continue;
            }
            out.clients.push(VersionClients {
                version: v,
                whole: refused_used.iter().all(|r| *r),
                clients: self.clients[v as usize].clone(),
            });
        }
        out
    }
}

/// What a policy would refuse of some usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Impact {
    pub handshakes: u64,
    pub requests: u64,
    pub refused_handshakes: u64,
    pub refused_requests: u64,
    /// Refused (suite, handshakes, requests).
    pub by_suite: Vec<(ServedSuite, u64, u64)>,
    /// The clients of each version the policy refuses (in part, unless `whole`).
    pub clients: Vec<VersionClients>,
}

/// The clients of a version a policy refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionClients {
    pub version: ServedVersion,
    /// Every suite they used is refused (else only some are).
    pub whole: bool,
    pub clients: Clients,
}

impl Impact {
    /// The refused share of handshakes, 0.0 to 1.0 (0 without traffic).
    pub fn handshake_share(&self) -> f64 {
        share(self.refused_handshakes, self.handshakes)
    }

    pub fn request_share(&self) -> f64 {
        share(self.refused_requests, self.requests)
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{HttpsConfig, TlsConfig, TlsVersion};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(v: &[TlsVersion]) -> PolicyKey {
        HttpsConfig {
            tls: TlsConfig {
                enable: true,
                tls_versions: v.to_vec(),
            },
            cipher_suite: None,
        }
        .effective()
        .unwrap()
        .key
    }

    #[test]
    fn a_tls13_only_policy_refuses_the_tls12_share_and_names_its_clients() {
        let mut u = Usage::default();
        for _ in 0..30 {
            u.handshake(ServedSuite::EcdheEcdsaAes128GcmSha256);
            u.request(
                ServedSuite::EcdheEcdsaAes128GcmSha256,
                ip("127.0.0.2"),
                Some("legacy-client/1.0"),
            );
        }
        for _ in 0..70 {
            u.handshake(ServedSuite::Tls13Aes256GcmSha384);
            u.request(
                ServedSuite::Tls13Aes256GcmSha384,
                ip("10.1.2.3"),
                Some("modern/2.0"),
            );
        }
        let i = u.impact(key(&[TlsVersion::Tls13]));
        assert_eq!((i.handshakes, i.refused_handshakes), (100, 30));
        assert!((i.request_share() - 0.3).abs() < 1e-9);
        assert_eq!(
            i.by_suite,
            [(ServedSuite::EcdheEcdsaAes128GcmSha256, 30, 30)]
        );
        assert_eq!(i.clients.len(), 1);
        let c = &i.clients[0];
        assert!(c.whole && c.version == ServedVersion::Tls12);
        assert_eq!(c.clients.networks.ranked(), [("127.0.0.0/24", 30)]);
        assert_eq!(c.clients.user_agents.ranked(), [("legacy-client/1.0", 30)]);
        // What already allows everything refuses nothing.
        let all = u.impact(PolicyKey::ALL);
        assert_eq!((all.refused_handshakes, all.clients.len()), (0, 0));
    }

    #[test]
    fn windows_merge_and_top_lists_stay_bounded() {
        let mut a = Usage::default();
        let mut b = Usage::default();
        for i in 0..50u8 {
            a.request(
                ServedSuite::Tls13Aes128GcmSha256,
                IpAddr::from([10, 0, i, 1]),
                Some(&format!("agent-{i}\u{1b}")),
            );
        }
        b.refusal(Offered::Tls12);
        b.refusal(Offered::Tls12);
        b.request(ServedSuite::Tls13Aes128GcmSha256, ip("10.0.0.9"), None);
        a.merge(&b);
        assert_eq!(a.total_requests(), 51);
        assert_eq!(a.refused[&Offered::Tls12], 2);
        let nets = &a.clients[1].networks;
        assert_eq!(nets.counts.len(), TOP_N);
        assert_eq!(nets.counts.values().sum::<u64>() + nets.other, 51);
        assert!(a.clients[1]
            .user_agents
            .counts
            .keys()
            .all(|k| !k.contains('\u{1b}')));
        assert_eq!(network(ip("2001:db8:1:2:3::4")), "2001:db8:1:2::/64");
    }
}
