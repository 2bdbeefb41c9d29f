//! The OSS XML codec for `<HttpsConfiguration>`: no namespace, lowercase booleans,
//! order-preserving de-duplication of lists.

use crate::HttpsConfig;

/// Why a body is not a valid `<HttpsConfiguration>` (`400 MalformedXML`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct XmlError(pub String);

/// Maximum element nesting accepted before the parser gives up.
pub const MAX_DEPTH: usize = 8;

/// Parses a PUT body. Structure errors (not XML, wrong root, missing `<TLS>`/`<Enable>`,
/// non-boolean, unknown version string, too deep) are `XmlError`. Semantic checks
/// (`Enable=true` without versions, cipher names) are [`HttpsConfig::effective`]'s job.
pub fn parse(body: &[u8]) -> Result<HttpsConfig, XmlError> {
    let _ = body;
    todo!()
}

/// Prints a GET body (with the `<?xml …?>` declaration). Always includes `<TLS><Enable>`.
pub fn print(config: &HttpsConfig) -> String {
    let _ = config;
    todo!()
}
