//! FlowKey and Meta extraction from arbitrary bytes, as IP packets and as Ethernet frames.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_packet::fuzz::flow_key(data);
});
