//! The one thing the edge reads from a ClientHello itself: the highest TLS version the client
//! offers (its `supported_versions` extension, else its legacy version), for the usage
//! counters of refused handshakes. rustls parses the hello for the handshake; this reads a
//! copy of its first bytes and gives up (None) on anything unexpected or cut short.

use crate::usage::Offered;

/// The highest version offered by the ClientHello at the start of `record` (a TLS record as
/// received), or None when `record` is not a whole, well-formed ClientHello prefix.
pub fn offered_version(record: &[u8]) -> Option<Offered> {
    let mut r = Reader(record);
    // Record: type 22 (handshake), version, length.
    if r.u8()? != 22 {
        return None;
    }
    r.u16()?;
    let len = usize::from(r.u16()?);
    let mut r = Reader(r.take(len)?);
    // Handshake: type 1 (ClientHello), 24-bit length.
    if r.u8()? != 1 {
        return None;
    }
    let hs_len = (usize::from(r.u8()?) << 16) | usize::from(r.u16()?);
    let mut r = Reader(r.take(hs_len)?);
    let legacy = r.u16()?;
    r.take(32)?; // random
    let session = usize::from(r.u8()?);
    r.take(session)?;
    let suites = usize::from(r.u16()?);
    r.take(suites)?;
    let compression = usize::from(r.u8()?);
    r.take(compression)?;
    let mut best = legacy;
    if !r.0.is_empty() {
        let ext_len = usize::from(r.u16()?);
        let mut exts = Reader(r.take(ext_len)?);
        while !exts.0.is_empty() {
            let kind = exts.u16()?;
            let len = usize::from(exts.u16()?);
            let mut body = Reader(exts.take(len)?);
            if kind == 0x002b {
                let list = usize::from(body.u8()?);
                let mut versions = Reader(body.take(list)?);
                best = 0;
                while !versions.0.is_empty() {
                    let v = versions.u16()?;
                    // GREASE values (0x?a?a) are not versions.
                    if v & 0x0f0f != 0x0a0a {
                        best = best.max(v);
                    }
                }
            }
        }
    }
    Some(match best {
        v if v >= 0x0304 => Offered::Tls13,
        0x0303 => Offered::Tls12,
        _ => Offered::Older,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record with `legacy` and, if given, a supported_versions list.
    fn hello(legacy: u16, versions: Option<&[u16]>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(legacy.to_be_bytes());
        body.extend([0u8; 32]);
        body.push(0); // session id
        body.extend(2u16.to_be_bytes());
        body.extend(0x1301u16.to_be_bytes());
        body.extend([1, 0]); // compression: null
        let mut exts = Vec::new();
        if let Some(vs) = versions {
            exts.extend(0x002bu16.to_be_bytes());
            exts.extend(u16::try_from(1 + 2 * vs.len()).unwrap().to_be_bytes());
            exts.push(u8::try_from(2 * vs.len()).unwrap());
            for v in vs {
                exts.extend(v.to_be_bytes());
            }
        }
        body.extend(u16::try_from(exts.len()).unwrap().to_be_bytes());
        body.extend(exts);
        let mut hs = vec![1u8];
        hs.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![22u8, 3, 1];
        rec.extend(u16::try_from(hs.len()).unwrap().to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn reads_the_highest_offered_version() {
        assert_eq!(
            offered_version(&hello(0x0303, Some(&[0x0304, 0x0303]))),
            Some(Offered::Tls13)
        );
        // A TLS 1.2-only client that still lists TLS 1.3 suites (rustls does).
        assert_eq!(
            offered_version(&hello(0x0303, Some(&[0x0303]))),
            Some(Offered::Tls12)
        );
        assert_eq!(offered_version(&hello(0x0303, None)), Some(Offered::Tls12));
        assert_eq!(offered_version(&hello(0x0301, None)), Some(Offered::Older));
        // GREASE is ignored.
        assert_eq!(
            offered_version(&hello(0x0303, Some(&[0x7a7a, 0x0303]))),
            Some(Offered::Tls12)
        );
    }

    #[test]
    fn gives_up_on_anything_else() {
        let whole = hello(0x0303, Some(&[0x0304]));
        for cut in 0..whole.len() {
            assert_eq!(offered_version(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(offered_version(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(offered_version(&[]), None);
    }
}
