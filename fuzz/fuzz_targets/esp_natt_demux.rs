//! The RFC 3948 demultiplexer of port 4500 (ESP / IKE / keepalive) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_esp::fuzz::natt_demux(data);
});
