//! Arbitrary packets through the stateful engine (conntrack, NAT, reject, limits).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_firewall::fuzz::conntrack(data);
});
