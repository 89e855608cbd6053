//! ESP decapsulation of arbitrary bytes: as an outer IP packet, a NAT-T datagram and a bare
//! ESP packet, against real-key SAs and a null-AEAD SA (so fuzzing reaches the trailer,
//! padding, next-header and inner-packet checks behind authentication).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_esp::fuzz::decap(data);
});
