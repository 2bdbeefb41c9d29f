//! The OSS XML codec: any body either parses or is refused with an error, never a panic;
//! what parses prints back to a document that parses to the same policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsfleet_policy::xml;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = xml::parse(data) else {
        return;
    };
    let printed = xml::print(&config);
    let again = xml::parse(printed.as_bytes()).expect("a printed document parses");
    assert_eq!(again, config, "print/parse round trip");
    // Validation is total too (bounded lists, known names).
    let _ = config.effective();
});
