//! The control socket's request parser on arbitrary lines.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_gateway::control::fuzz::ctl_request(data);
});
