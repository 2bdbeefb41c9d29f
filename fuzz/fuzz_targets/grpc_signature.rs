//! The gRPC `authorization` metadata: parsing, and verification against a message digest.
//! Nothing may panic; what parses prints back to the same header.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tlsfleet_control::auth::{Authenticator, Credentials};
use tlsfleet_proto::auth::{SignedHeader, METADATA_KEY};
use tonic::metadata::{MetadataMap, MetadataValue};

fn auth() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        Authenticator::new(
            Credentials::parse(
                "[[key]]\nid='AK'\nsecret='sk'\nallow=['oss:*','tlsfleet:*']\nbuckets=['*']\nnodes=['*']\n",
            )
            .expect("credentials"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(header) = SignedHeader::parse(text) {
        let again = SignedHeader::parse(&header.to_header_value()).expect("round trip");
        assert_eq!(again, header);
    }
    let mut metadata = MetadataMap::new();
    if let Ok(v) = MetadataValue::try_from(text) {
        metadata.insert(METADATA_KEY, v);
    }
    let digest = tlsfleet_proto::auth::message_digest(&tlsfleet_proto::v1::GetRequest {
        bucket: text.chars().take(8).collect(),
    });
    let _ = auth().grpc(&metadata, tlsfleet_proto::v1::methods::HTTPS_CONFIG_SERVICE_GET, &digest);
});
