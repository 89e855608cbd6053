//! A TUN/TAP read with the virtio-net header (GSO segmentation, checksum completion, TCP
//! coalescing checks) and the datagram ports' send-side header parser, on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gatekit_io::fuzz::tun_vnet(data);
});
