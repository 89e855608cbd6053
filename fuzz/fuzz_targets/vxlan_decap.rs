//! VXLAN decapsulation of arbitrary bytes, as outer IP packets and as UDP payloads.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_gre::fuzz::vxlan_decap(data);
});
