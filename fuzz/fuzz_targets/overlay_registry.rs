//! Registry files from arbitrary bytes: refused with an error or loaded whole, and a loaded
//! registry saves and loads back unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_overlay::fuzz::registry_file(data);
});
