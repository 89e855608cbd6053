//! The gateway's TOML config parser and validator, then the pipeline built from what passes,
//! on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_gateway::config::fuzz::config(data);
});
