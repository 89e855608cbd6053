//! The classifier against the linear scan on rules and keys made from arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_firewall::fuzz::classify(data);
});
