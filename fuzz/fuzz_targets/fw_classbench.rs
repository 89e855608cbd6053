//! The ClassBench rule and trace parsers on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_firewall::fuzz::classbench(data);
});
