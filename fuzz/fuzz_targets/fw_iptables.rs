//! The iptables-dialect parser and rule-set validation on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_firewall::fuzz::iptables(data);
});
