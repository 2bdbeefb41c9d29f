//! What the Sync stream carries: a [`ControlFrame`] is a `ControlMessage` on the wire, byte
//! for byte (the build checks the two messages have the same fields), that the server may
//! have partly encoded in advance. A live delta goes to many agents: its fields are encoded
//! once ([`SharedDelta`]) and every stream sends the same bytes (shared, not copied), behind
//! the one field that differs per agent, the revision it continues from
//! ([`ControlFrame::delta`]). A client decodes a frame and reads its `kind` as it would a
//! `ControlMessage`'s.

use prost::{
    bytes::{BufMut, Bytes},
    encoding::{self, DecodeContext, WireType},
    DecodeError, Message,
};

use crate::v1::{control_message, ControlMessage, Delta};

/// `ControlMessage.delta`'s field number.
const DELTA_FIELD: u32 = 2;
/// `Delta.from_revision`'s field number.
const FROM_REVISION_FIELD: u32 = 1;

/// A delta's fields but `from_revision`, encoded once for every stream that sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedDelta(Bytes);

impl SharedDelta {
    pub fn new(mut delta: Delta) -> Self {
        // Zero is not encoded (proto3): the bytes hold every other field.
        delta.from_revision = 0;
        Self(Bytes::from(delta.encode_to_vec()))
    }

    /// The encoded size.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A `ControlMessage`, or a delta most of which is encoded already.
#[derive(Clone, Default, PartialEq)]
pub struct ControlFrame {
    /// What a decoded frame holds (None for a pre-encoded one).
    pub kind: Option<control_message::Kind>,
    /// A delta's shared bytes, and the revision it continues from.
    delta: Option<(i64, SharedDelta)>,
}

impl ControlFrame {
    /// `ControlMessage { delta }` where `delta` is `shared` continuing from `from_revision`.
    pub fn delta(from_revision: i64, shared: SharedDelta) -> Self {
        Self {
            kind: None,
            delta: Some((from_revision, shared)),
        }
    }

    /// The frame as a `ControlMessage` (a pre-encoded one is decoded).
    pub fn into_message(self) -> Result<ControlMessage, DecodeError> {
        match self.delta {
            Some(_) => ControlMessage::decode(self.encode_to_vec().as_slice()),
            None => Ok(ControlMessage { kind: self.kind }),
        }
    }

    /// Whether this frame holds pre-encoded bytes.
    pub fn is_encoded(&self) -> bool {
        self.delta.is_some()
    }

    /// The delta's encoded length (inside `ControlMessage.delta`).
    fn delta_len(from: i64, shared: &SharedDelta) -> usize {
        let from_len = if from == 0 {
            0
        } else {
            encoding::int64::encoded_len(FROM_REVISION_FIELD, &from)
        };
        from_len + shared.len()
    }
}

impl From<ControlMessage> for ControlFrame {
    fn from(m: ControlMessage) -> Self {
        Self {
            kind: m.kind,
            delta: None,
        }
    }
}

impl From<control_message::Kind> for ControlFrame {
    fn from(kind: control_message::Kind) -> Self {
        Self {
            kind: Some(kind),
            delta: None,
        }
    }
}

impl std::fmt::Debug for ControlFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.delta {
            Some((from, shared)) => write!(
                f,
                "ControlFrame(delta from {from}, {} bytes encoded)",
                shared.len()
            ),
            None => f
                .debug_struct("ControlFrame")
                .field("kind", &self.kind)
                .finish(),
        }
    }
}

impl Message for ControlFrame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match (&self.delta, &self.kind) {
            (Some((from, shared)), _) => {
                encoding::encode_key(DELTA_FIELD, WireType::LengthDelimited, buf);
                encoding::encode_varint(Self::delta_len(*from, shared) as u64, buf);
                if *from != 0 {
                    encoding::int64::encode(FROM_REVISION_FIELD, from, buf);
                }
                buf.put_slice(&shared.0);
            }
            (None, Some(kind)) => kind.encode(buf),
            (None, None) => {}
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Exactly what a ControlMessage does with the field.
        let mut message = match self.delta.is_some() {
            true => std::mem::take(self).into_message()?,
            false => ControlMessage {
                kind: self.kind.take(),
            },
        };
        let merged = message.merge_field(tag, wire_type, buf, ctx);
        self.kind = message.kind;
        merged
    }

    fn encoded_len(&self) -> usize {
        match (&self.delta, &self.kind) {
            (Some((from, shared)), _) => {
                let inner = Self::delta_len(*from, shared);
                encoding::key_len(DELTA_FIELD) + encoding::encoded_len_varint(inner as u64) + inner
            }
            (None, Some(kind)) => kind.encoded_len(),
            (None, None) => 0,
        }
    }

    fn clear(&mut self) {
        self.kind = None;
        self.delta = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{BucketPolicy, Snapshot};

    fn messages() -> Vec<ControlMessage> {
        let policy = |b: &str| BucketPolicy {
            bucket: b.into(),
            mod_revision: 7,
            ..Default::default()
        };
        vec![
            ControlMessage { kind: None },
            ControlMessage {
                kind: Some(control_message::Kind::Snapshot(Snapshot {
                    revision: 9,
                    policies: vec![policy("a"), policy("b")],
                    more: true,
                    store_id: "s".into(),
                    default_policy: None,
                })),
            },
            ControlMessage {
                kind: Some(control_message::Kind::Delta(Delta {
                    from_revision: 3,
                    revision: 4,
                    upserts: vec![policy("c")],
                    deletes: vec!["d".into()],
                    ..Default::default()
                })),
            },
        ]
    }

    fn deltas() -> Vec<Delta> {
        let policy = |b: &str| BucketPolicy {
            bucket: b.into(),
            mod_revision: 7,
            ..Default::default()
        };
        vec![
            Delta::default(),
            Delta {
                from_revision: 3,
                revision: 4,
                upserts: vec![policy("c")],
                deletes: vec!["d".into()],
                more: true,
                ..Default::default()
            },
            Delta {
                from_revision: 0,
                revision: 1,
                upserts: (0..500).map(|i| policy(&format!("b{i}"))).collect(),
                ..Default::default()
            },
            Delta {
                from_revision: i64::MAX,
                revision: i64::MAX,
                default_cleared: true,
                ..Default::default()
            },
        ]
    }

    #[test]
    fn a_frame_is_a_control_message_on_the_wire_shared_or_not() {
        for m in messages() {
            let bytes = m.encode_to_vec();
            let plain = ControlFrame::from(m.clone());
            assert!(!plain.is_encoded());
            assert_eq!(plain.encode_to_vec(), bytes);
            assert_eq!(plain.encoded_len(), bytes.len());
            let read = ControlFrame::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(read.kind, m.kind);
            assert_eq!(plain.into_message().expect("decodes"), m);
        }
        for d in deltas() {
            let m = ControlMessage {
                kind: Some(control_message::Kind::Delta(d.clone())),
            };
            let bytes = m.encode_to_vec();
            // The same shared bytes, continued from other revisions, are each stream's own.
            let shared = SharedDelta::new(Delta {
                from_revision: 99,
                ..d.clone()
            });
            let frame = ControlFrame::delta(d.from_revision, shared.clone());
            assert!(frame.is_encoded());
            assert_eq!(frame.encode_to_vec(), bytes, "{d:?}");
            assert_eq!(frame.encoded_len(), bytes.len());
            assert_eq!(frame.clone().into_message().expect("decodes"), m);
            let other = ControlFrame::delta(d.from_revision.wrapping_add(1), shared);
            let Some(control_message::Kind::Delta(o)) = other.into_message().expect("decodes").kind
            else {
                panic!("a delta");
            };
            assert_eq!(o.from_revision, d.from_revision.wrapping_add(1));
            assert_eq!((o.revision, o.upserts.len()), (d.revision, d.upserts.len()));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&[0x0a, 0xff][..], &[0xff; 8], &[0x12, 0x03, 0x08]] {
            let _ = ControlFrame::decode(bytes);
        }
        assert!(ControlFrame::decode(&[0x0a, 0xff][..]).is_err());
    }

    #[test]
    fn merging_into_an_encoded_frame_decodes_it_first() {
        let d = deltas()[1].clone();
        let mut frame = ControlFrame::delta(3, SharedDelta::new(d));
        let more = ControlMessage {
            kind: Some(control_message::Kind::Delta(Delta {
                revision: 5,
                ..Default::default()
            })),
        };
        frame
            .merge(more.encode_to_vec().as_slice())
            .expect("merges");
        let Some(control_message::Kind::Delta(d)) = frame.kind else {
            panic!("a delta: {frame:?}");
        };
        assert_eq!((d.from_revision, d.revision, d.upserts.len()), (3, 5, 1));
    }
}
