//! Interop with scapy (`scapy.layers.ipsec.SecurityAssociation`), an independent ESP
//! implementation: packets sealed by gatekit are opened by scapy, and packets sealed by scapy
//! are opened by gatekit, for AES-GCM-128/256 and ChaCha20-Poly1305 (scapy 2.5+ has it), in
//! tunnel and transport mode, native and NAT-T (on 4500 and on another port pair), 32-bit and
//! extended sequence numbers, IPv4 and IPv6.
//!
//! Driven through `tests/scapy_esp.py` in one python3 process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use gatekit_esp::{Decap, Direction, Encap, Endpoint, Mode, Output, Select, Suite};
use gatekit_packet::{Instant, PacketBuf, PktBuf};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy)]
struct Case {
    suite: Suite,
    mode: Mode,
    encap: Encap,
    esn_high: Option<u32>,
    v6: bool,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let encaps = [
        Encap::Native,
        Encap::Udp {
            local_port: 4500,
            peer_port: 4500,
        },
        Encap::Udp {
            local_port: 4500,
            peer_port: 31337,
        },
    ];
    for suite in [Suite::AesGcm128, Suite::AesGcm256, Suite::ChaCha20Poly1305] {
        for mode in [Mode::Tunnel, Mode::Transport] {
            for encap in encaps {
                for v6 in [false, true] {
                    out.push(Case {
                        suite,
                        mode,
                        encap,
                        esn_high: None,
                        v6,
                    });
                }
            }
        }
        out.push(Case {
            suite,
            mode: Mode::Tunnel,
            encap: encaps[1],
            esn_high: Some(1),
            v6: false,
        });
        out.push(Case {
            suite,
            mode: Mode::Transport,
            encap: encaps[0],
            esn_high: Some(7),
            v6: true,
        });
    }
    out
}

fn addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )
    } else {
        (
            "192.0.2.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
        )
    }
}

/// Inner packets: in tunnel mode between two sites (of either family), in transport mode
/// between the SA's own addresses. Sizes cover every padding length and a full-size packet.
fn inner_packets(c: &Case) -> Vec<Vec<u8>> {
    let (local, peer) = addrs(c.v6);
    let (src, dst): (IpAddr, IpAddr) = match (c.mode, c.v6) {
        (Mode::Transport, _) => (local, peer),
        (Mode::Tunnel, false) => ("10.1.0.5".parse().unwrap(), "10.2.0.9".parse().unwrap()),
        (Mode::Tunnel, true) => (
            "2001:db8:1::5".parse().unwrap(),
            "2001:db8:2::9".parse().unwrap(),
        ),
    };
    let mut v: Vec<Vec<u8>> = [0usize, 1, 2, 3, 4, 100, 1400]
        .iter()
        .map(|&n| udp_packet(src, dst, 5000, 53, n))
        .collect();
    v.push(tcp_packet(src, dst, 33));
    if c.mode == Mode::Tunnel {
        // The other family inside: IPv6 in IPv4 or IPv4 in IPv6.
        let (s, d): (IpAddr, IpAddr) = if c.v6 {
            ("10.1.0.5".parse().unwrap(), "10.2.0.9".parse().unwrap())
        } else {
            (
                "2001:db8:1::5".parse().unwrap(),
                "2001:db8:2::9".parse().unwrap(),
            )
        };
        v.push(udp_packet(s, d, 1, 2, 77));
    }
    v
}

fn sa_line(op: &str, c: &Case, spi: u32, seed: u8) -> String {
    let (local, peer) = addrs(c.v6);
    let (sport, dport) = match c.encap {
        // scapy's header as it leaves the sealer: from its local port to its peer's.
        Encap::Udp {
            local_port,
            peer_port,
        } if op == "seal" => (peer_port.to_string(), local_port.to_string()),
        Encap::Udp {
            local_port,
            peer_port,
        } => (local_port.to_string(), peer_port.to_string()),
        Encap::Native => ("-".into(), "-".into()),
    };
    let mode = if c.mode == Mode::Tunnel {
        "tunnel"
    } else {
        "transport"
    };
    let esn = c.esn_high.map_or("-".to_string(), |h| h.to_string());
    // scapy's SA is the peer: it seals from `peer` to `local`, and opens what `local` sent.
    let (l, p) = if op == "seal" {
        (peer, local)
    } else {
        (local, peer)
    };
    format!(
        "sa {op} {} {} {spi} {mode} {sport} {dport} {esn} {l} {p}\n",
        c.suite.name(),
        key_hex(c.suite, seed)
    )
}

fn run_scapy(script: &str) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scapy_esp.py");
    let mut child = Command::new("python3")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    let script = script.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "scapy_esp.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn gatekit_and_scapy_open_each_others_packets() {
    if !tool_available(
        "python3 with scapy",
        Command::new("python3").args(["-c", "import scapy.layers.ipsec, cryptography"]),
    ) {
        return;
    }
    let now = Instant::ZERO;
    let cases = cases();

    // 1. gatekit seals; scapy opens.
    let mut script = String::new();
    let mut expected = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let (local, peer) = addrs(c.v6);
        let spi = 0x1000 + i as u32;
        let seed = i as u8;
        let mut cfg = sa(
            spi,
            Direction::Outbound,
            c.suite,
            seed,
            c.mode,
            c.encap,
            local,
            peer,
        );
        if let Some(h) = c.esn_high {
            cfg = cfg.esn(true);
            cfg.seq_start = u64::from(h) << 32;
        }
        let mut ep = Endpoint::default();
        let id = ep.add_sa(&cfg, now).unwrap();
        script += &sa_line("open", c, spi, seed);
        for inner in inner_packets(c) {
            let mut buf = PktBuf::from_slice(&inner, 128, 64);
            let sent = ep
                .encap(Select::Sa(id), &mut buf, Output::Packet, now)
                .unwrap();
            script += &format!("pkt {} {}\n", sent.seq as u32, hex(buf.data()));
            expected.push((format!("{c:?}"), inner));
        }
    }
    let answers = run_scapy(&script);
    assert_eq!(answers.len(), expected.len());
    for ((case, inner), answer) in expected.iter().zip(&answers) {
        assert_eq!(
            answer,
            &format!("ok {}", hex(inner)),
            "scapy opening gatekit's packet, {case}"
        );
    }

    // 2. scapy seals; gatekit opens.
    let mut script = String::new();
    let mut expected = Vec::new();
    let mut endpoints = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let (local, peer) = addrs(c.v6);
        let spi = 0x2000 + i as u32;
        let seed = 0x80 + i as u8;
        let mut cfg = sa(
            spi,
            Direction::Inbound,
            c.suite,
            seed,
            c.mode,
            c.encap,
            local,
            peer,
        );
        if let Some(h) = c.esn_high {
            cfg = cfg.esn(true);
            cfg.seq_start = u64::from(h) << 32;
        }
        if c.mode == Mode::Transport && matches!(c.encap, Encap::Udp { .. }) {
            // What IKE would hand over as NAT-OA: no NAT here, the addresses stay, and so
            // do the inner checksums (RFC 3948 §3.1.2).
            cfg = cfg.nat_oa(peer, local);
        }
        let mut ep = Endpoint::default();
        ep.add_sa(&cfg, now).unwrap();
        endpoints.push(ep);
        script += &sa_line("seal", c, spi, seed);
        for (n, inner) in inner_packets(c).into_iter().enumerate() {
            // In transport mode scapy seals what the peer sends: from its address to ours.
            let inner = if c.mode == Mode::Transport {
                swap_addrs(&inner)
            } else {
                inner
            };
            script += &format!("pkt {} {}\n", n + 1, hex(&inner));
            expected.push((i, format!("{c:?}"), inner));
        }
    }
    let answers = run_scapy(&script);
    assert_eq!(answers.len(), expected.len());
    for ((i, case, inner), answer) in expected.iter().zip(&answers) {
        let outer = answer
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("scapy seal failed: {answer}"));
        let mut buf = PktBuf::from_slice(&unhex(outer), 0, 64);
        let got = endpoints[*i].decap_ip(&mut buf, now);
        assert!(
            matches!(got, Decap::Inner(_)),
            "gatekit opening scapy's packet, {case}: {got:?}"
        );
        assert_eq!(hex(buf.data()), hex(inner), "{case}");
    }
    for ep in &endpoints {
        assert_eq!(ep.drops().total(), 0);
    }
}

/// The same packet with source and destination exchanged (IPv4 checksum unchanged: the sum is
/// the same), for what the peer sends in transport mode.
fn swap_addrs(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    if p[0] >> 4 == 4 {
        let (s, d) = (p[12..16].to_vec(), p[16..20].to_vec());
        p[12..16].copy_from_slice(&d);
        p[16..20].copy_from_slice(&s);
    } else {
        let (s, d) = (p[8..24].to_vec(), p[24..40].to_vec());
        p[8..24].copy_from_slice(&d);
        p[24..40].copy_from_slice(&s);
    }
    p
}
