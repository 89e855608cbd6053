//! Route-table, update-stream and prefix-list text parsers on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_route::fuzz::text(data);
});
