//! Names: the `--domain` suffixes, and what an SNI name or a request host designates.

/// What a (normalised) host or SNI name designates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind<'a> {
    /// One of the domains itself: the endpoint (path-style requests).
    Bare,
    /// `<label>.<domain>`: virtual-hosted; `label` is not yet checked to be a bucket name.
    Bucket(&'a str),
    /// Anything else: an IP address or a name outside every domain.
    Other,
}

/// The `--domain` suffixes, normalised, most specific first.
#[derive(Clone, Debug, Default)]
pub struct Domains(Vec<String>);

impl Domains {
    /// Normalises (lowercase, no trailing dot) and de-duplicates; empty names are skipped.
    pub fn new<S: AsRef<str>>(domains: impl IntoIterator<Item = S>) -> Self {
        let mut v: Vec<String> = domains
            .into_iter()
            .map(|d| normalize_name(d.as_ref()))
            .filter(|d| !d.is_empty())
            .collect();
        // Longest first, so `abc.internal.oss.test` is bucket `abc` of `internal.oss.test`
        // rather than the invalid bucket `abc.internal` of `oss.test`.
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        Self(v)
    }

    /// The domains, most specific first.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Classifies a normalised name (see [`normalize_name`]).
    pub fn classify<'a>(&self, name: &'a str) -> HostKind<'a> {
        if self.0.iter().any(|d| d == name) {
            return HostKind::Bare;
        }
        for domain in &self.0 {
            if let Some(label) = name
                .strip_suffix(domain.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
            {
                if !label.is_empty() {
                    return HostKind::Bucket(label);
                }
            }
        }
        HostKind::Other
    }
}

/// Lowercase, without a trailing dot: how names are compared.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The host of an authority (`host[:port]`, `[v6]:port`), normalised.
pub fn host_of_authority(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets; a port may follow the closing one.
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    normalize_name(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_names() {
        let d = Domains::new(["OSS.test.", "internal.oss.test"]);
        assert_eq!(d.classify("oss.test"), HostKind::Bare);
        assert_eq!(d.classify("internal.oss.test"), HostKind::Bare);
        assert_eq!(d.classify("abc.oss.test"), HostKind::Bucket("abc"));
        assert_eq!(d.classify("abc.internal.oss.test"), HostKind::Bucket("abc"));
        assert_eq!(d.classify("a.b.oss.test"), HostKind::Bucket("a.b"));
        assert_eq!(d.classify("xoss.test"), HostKind::Other);
        assert_eq!(d.classify(".oss.test"), HostKind::Other);
        assert_eq!(d.classify("127.0.0.1"), HostKind::Other);
    }

    #[test]
    fn strips_ports_and_normalises() {
        assert_eq!(host_of_authority("ABC.oss.test.:8443"), "abc.oss.test");
        assert_eq!(host_of_authority("abc.oss.test"), "abc.oss.test");
        assert_eq!(host_of_authority("[::1]:443"), "[::1]");
        assert_eq!(host_of_authority("[::1]"), "[::1]");
        assert_eq!(host_of_authority("127.0.0.1:80"), "127.0.0.1");
    }
}
