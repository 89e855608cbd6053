//! Helpers shared by the integration tests: inner packets and external tools.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_arguments
)]

use gatekit_esp::{Direction, Encap, KeyMaterial, Mode, SaConfig, Suite};
use std::net::IpAddr;
use std::process::Command;

/// Whether a tool is usable. Outside CI a missing tool skips the test (with a message);
/// with `CI` set it fails it.
pub fn tool_available(name: &str, probe: &mut Command) -> bool {
    let ok = probe.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is needed by this test and is missing (CI is set, so this fails)");
        }
        eprintln!("skipping: {name} is not installed");
    }
    ok
}

/// A deterministic key for a suite: bytes 0x10, 0x11, ... (key ‖ salt).
pub fn key_hex(suite: Suite, seed: u8) -> String {
    (0..suite.keymat_len())
        .map(|i| format!("{:02x}", seed.wrapping_add(i as u8)))
        .collect()
}

pub fn key(suite: Suite, seed: u8) -> KeyMaterial {
    KeyMaterial::from_hex(suite, &key_hex(suite, seed)).unwrap()
}

/// An SA config for one side.
pub fn sa(
    spi: u32,
    dir: Direction,
    suite: Suite,
    seed: u8,
    mode: Mode,
    encap: Encap,
    local: IpAddr,
    peer: IpAddr,
) -> SaConfig {
    let mut c = SaConfig::new(spi, dir, suite, key(suite, seed), local, peer).mode(mode);
    c.encap = encap;
    c
}

/// An IPv4 or IPv6 UDP packet from `src` to `dst` with `len` bytes of payload.
pub fn udp_packet(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64).udp(sport, dport)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64).udp(sport, dport)
        }
        _ => panic!("mixed families"),
    };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

/// An IPv4 or IPv6 TCP packet.
pub fn tcp_packet(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64)
        }
        _ => panic!("mixed families"),
    }
    .tcp(40000, 443, 12345, 1000);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
