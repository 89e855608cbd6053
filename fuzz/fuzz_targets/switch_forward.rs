//! The switch fabric forwarding a stream of arbitrary frames on arbitrary ports over time.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_switch::fuzz::switch_forward(data);
});
