//! GRE decapsulation (and re-encapsulation) of arbitrary bytes as outer IP packets.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_gre::fuzz::gre_decap(data);
});
