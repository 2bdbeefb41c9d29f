//! The ClientHello reader of the usage counters: any bytes the network sends give an answer or
//! None, never a panic; a prefix of what was read whole is never read differently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsfleet_policy::hello::offered_version;

fuzz_target!(|data: &[u8]| {
    if let Some(v) = offered_version(data) {
        // Bytes after a whole record change nothing.
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"trailing");
        assert_eq!(offered_version(&longer), Some(v));
    }
});
