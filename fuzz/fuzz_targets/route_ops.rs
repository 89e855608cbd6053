//! Insert / remove / lookup / commit sequences on the FIB and the LPM table, checked against a
//! naive oracle.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_route::fuzz::ops(data);
});
