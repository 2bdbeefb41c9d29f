//! Rendering an [`Outcome`]: aligned text for people, or one JSON document for scripts.

mod human;
mod json;

use crate::{args::Format, commands::Outcome};

/// The whole stdout of a command, ending with a newline. `now_unix_ms` dates "last seen"
/// ages in human output (a parameter so that tests are deterministic).
pub fn render(outcome: &Outcome, format: Format, now_unix_ms: i64) -> String {
    match format {
        Format::Human => human::render(outcome, now_unix_ms),
        Format::Json => {
            // Serialising a `Value` cannot fail: every map key is a string.
            let mut out = serde_json::to_string_pretty(&json::render(outcome)).unwrap_or_default();
            out.push('\n');
            out
        }
    }
}
