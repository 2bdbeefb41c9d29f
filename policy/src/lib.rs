//! The tlsfleet domain, free of I/O.
//!
//! * [`BucketName`]: an OSS bucket name, parsed.
//! * [`HttpsConfig`]: the stored policy, exactly the OSS `HttpsConfiguration` schema.
//! * [`EffectivePolicy`]: what rustls can serve of a policy, with the reasons anything was dropped.
//! * [`mod@downgrade`]: whether a change lets in anything the current policy keeps out.
//! * [`xml`]: the OSS XML codec.
//! * [`names`]: endpoint domains, request hosts and paths, parsed strictly (the edge decides on
//!   and forwards only the canonical form).
//! * [`hello`]: the highest TLS version a ClientHello offers (for usage counters).
//! * [`suites`]: every TLS 1.2/1.3 cipher-suite name OpenSSL knows (OpenSSL and IANA spellings)
//!   and which of them rustls serves.
//! * [`tls`]: the mapping of an effective policy to rustls protocol versions and suites.
//! * [`usage`]: a bucket's TLS usage in a window, and what a policy would refuse of it.

pub mod bucket;
pub mod config;
pub mod downgrade;
pub mod effective;
pub mod hello;
pub mod names;
pub mod suites;
pub mod tls;
pub mod usage;
pub mod xml;

pub use bucket::{BucketName, InvalidBucketName};
pub use config::{CipherSuiteConfig, HttpsConfig, TlsConfig, TlsVersion};
pub use downgrade::{downgrade, Downgrade};
pub use effective::{
    CertKeyType, Dropped, EffectivePolicy, PolicyKey, ServedVersion, ValidationError,
    ValidationErrorKind,
};
pub use suites::{CipherSuiteInfo, ServedSuite, SuiteProtocol};
pub use xml::XmlError;
