//! Interoperability with independent implementations: tshark dissects what gatekit builds,
//! gatekit decapsulates what scapy builds, and the Linux kernel's VXLAN driver exchanges
//! frames with gatekit's VXLAN in network namespaces created here (root needed).
//!
//! With `CI` set, a missing tool or missing privileges fail the test; otherwise the test is
//! skipped with a printed reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use core::net::IpAddr;
use etherparse::PacketBuilder;
use gatekit_gre::{
    Decap, Encap, GreEndpoint, GreMode, GreTunnelConfig, TunnelId, Vtep, VtepConfig, protocol,
};
use gatekit_packet::{Instant, PacketBuf, PktBuf};
use gatekit_testkit::{LinkType, PcapSink};
use std::process::{Command, Stdio};

/// Whether `tool` runs; panics under CI when it does not.
fn have(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required in CI (scripts/install-deps.sh installs it)");
        }
        eprintln!("skipping: {tool} not available");
    }
    ok
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn inner_frame(seq: u8) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1000 + u16::from(seq), 2000)
        .write(&mut f, b"gatekit")
        .unwrap();
    f
}

fn tshark_fields(pcap: &std::path::Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec![
        "-r".to_string(),
        pcap.display().to_string(),
        "-T".into(),
        "fields".into(),
    ];
    for f in fields {
        args.push("-e".into());
        args.push((*f).into());
    }
    args.extend(["-E".into(), "separator=|".into()]);
    let out = Command::new("tshark").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// GRE/TEB built by gatekit, over IPv4 and IPv6, with key, sequence number and checksum:
/// tshark reads every field back, verifies the GRE checksum and dissects the inner Ethernet.
#[test]
fn tshark_dissects_gre_teb() {
    if !have("tshark", &["-v"]) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("gatekit-gre-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("gre.pcap");
    let sink = PcapSink::create(&pcap, LinkType::RawIp).unwrap();
    for (l, r) in [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")] {
        let mut ep = GreEndpoint::new();
        let id = ep
            .add_tunnel(GreTunnelConfig {
                mode: GreMode::Ethernet,
                key: Some(0x00c0_ffee),
                sequence: true,
                checksum: true,
                ..GreTunnelConfig::new(ip(l), ip(r))
            })
            .unwrap();
        for seq in 0..3u8 {
            let mut buf = PktBuf::from_slice(&inner_frame(seq), 64, 0);
            assert_eq!(ep.encap(id, &mut buf), Encap::Ready);
            sink.write(Instant::from_secs(1), buf.data()).unwrap();
        }
    }
    // VXLAN too, with UDP checksums.
    let mut v = Vtep::new(VtepConfig {
        udp_checksum_v4: true,
        ..VtepConfig::new(ip("192.0.2.1"))
    })
    .unwrap();
    let vid = v.add_tunnel(ip("192.0.2.9"), 4242).unwrap();
    let mut buf = PktBuf::from_slice(&inner_frame(9), 64, 0);
    assert_eq!(v.encap(vid, &mut buf), Encap::Ready);
    sink.write(Instant::from_secs(2), buf.data()).unwrap();
    sink.flush().unwrap();
    drop(sink);

    let rows = tshark_fields(
        &pcap,
        &[
            "gre.key",
            "gre.sequence_number",
            "gre.proto",
            "gre.checksum.status",
            "eth.src",
            "eth.dst",
            "udp.srcport",
            "vxlan.vni",
        ],
    );
    assert_eq!(rows.len(), 7, "{rows:?}");
    for (i, row) in rows[..6].iter().enumerate() {
        assert_eq!(row[0], "0x00c0ffee", "key, packet {i}: {row:?}");
        assert_eq!(row[1], (i % 3).to_string(), "sequence, packet {i}");
        assert_eq!(row[2], "0x6558", "protocol");
        assert_eq!(row[3], "1", "checksum status good, packet {i}: {row:?}");
        assert_eq!(row[4], "02:00:00:00:00:01", "inner eth.src");
        assert_eq!(row[5], "02:00:00:00:00:02", "inner eth.dst");
        assert_eq!(row[6], (1000 + i % 3).to_string(), "inner UDP port");
    }
    let vx = &rows[6];
    assert_eq!(vx[7], "4242", "VNI: {vx:?}");
    assert_eq!(vx[4], "02:00:00:00:00:01");
    // tshark lists the outer UDP port first, then the inner one.
    let ports: Vec<&str> = vx[6].split(',').collect();
    let outer: u16 = ports[0].parse().unwrap();
    assert!(outer >= 49152, "{ports:?}");
    assert_eq!(ports[1], "1009");
    let _ = std::fs::remove_dir_all(&dir);
}

const SCAPY: &str = r#"
from scapy.all import IP, IPv6, GRE, Ether, ICMP, UDP, raw
from scapy.layers.vxlan import VXLAN
eth = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")/IP(src="10.0.0.1", dst="10.0.0.2")/ICMP()/b"scapy"
ip4 = IP(src="10.1.0.1", dst="10.1.0.2")/UDP(sport=1, dport=2)/b"l3 over v6"
ip6 = IPv6(src="2001:db8:1::1", dst="2001:db8:1::2")/UDP(sport=3, dport=4)/b"v6 in v4"
pkts = [
    ("teb4", IP(src="192.0.2.2", dst="192.0.2.1")/GRE(key_present=1, key=0x1234, seqnum_present=1, sequence_number=5, chksum_present=1, proto=0x6558)/eth, eth),
    ("l3v6", IPv6(src="2001:db8::2", dst="2001:db8::1")/GRE(key_present=1, key=7, proto=0x0800)/ip4, ip4),
    ("v6in4", IP(src="192.0.2.2", dst="192.0.2.1")/GRE(proto=0x86dd)/ip6, ip6),
    ("vxlan", IP(src="192.0.2.2", dst="192.0.2.1")/UDP(sport=50000, dport=4789)/VXLAN(vni=0xabcdef, flags=0x08)/eth, eth),
]
for name, outer, inner in pkts:
    print(name, raw(outer).hex(), raw(inner).hex())
"#;

/// GRE and VXLAN packets crafted by scapy decapsulate to exactly scapy's inner bytes.
#[test]
fn scapy_crafted_packets_decapsulate() {
    if !have("python3", &["-c", "import scapy.all"]) {
        return;
    }
    let out = Command::new("python3")
        .args(["-c", SCAPY])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scapy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut gre = GreEndpoint::new();
    let teb = gre
        .add_tunnel(GreTunnelConfig {
            mode: GreMode::Ethernet,
            key: Some(0x1234),
            check_sequence: true,
            ..GreTunnelConfig::new(ip("192.0.2.1"), ip("192.0.2.2"))
        })
        .unwrap();
    let l3v6 = gre
        .add_tunnel(GreTunnelConfig {
            key: Some(7),
            ..GreTunnelConfig::new(ip("2001:db8::1"), ip("2001:db8::2"))
        })
        .unwrap();
    let v6in4 = gre
        .add_tunnel(GreTunnelConfig::new(ip("192.0.2.1"), ip("192.0.2.2")))
        .unwrap();
    let mut vtep = Vtep::new(VtepConfig::new(ip("192.0.2.1"))).unwrap();
    let vx = vtep.add_tunnel(ip("192.0.2.2"), 0xabcdef).unwrap();
    let want: &[(&str, TunnelId, u16)] = &[
        ("teb4", teb, protocol::TEB),
        ("l3v6", l3v6, protocol::IPV4),
        ("v6in4", v6in4, protocol::IPV6),
        ("vxlan", vx, protocol::TEB),
    ];
    let mut n = 0;
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [name, outer, inner] = parts[..] else {
            panic!("{line}")
        };
        let (_, tunnel, proto) = want.iter().find(|w| w.0 == name).unwrap();
        let mut buf = PktBuf::from_slice(&hex(outer), 0, 0);
        let got = if name == "vxlan" {
            vtep.decap(&mut buf)
        } else {
            gre.decap(&mut buf)
        };
        assert_eq!(
            got,
            Decap::Packet {
                tunnel: *tunnel,
                protocol: *proto
            },
            "{name}"
        );
        assert_eq!(buf.data(), &hex(inner)[..], "{name}: inner bytes");
        n += 1;
    }
    assert_eq!(n, 4);
}

mod kernel_vxlan {
    use super::*;
    use etherparse::{
        ArpEthIpv4Packet, ArpOperation, ArpPacket, EtherType, Ethernet2Header, Icmpv4Type,
        NetSlice, SlicedPacket, TransportSlice,
    };
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant as StdInstant};

    const PEER_ENV: &str = "GATEKIT_VXLAN_PEER";
    const VNI: u32 = 42;
    const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0x42, 2];
    const OUR_IP: [u8; 4] = [192, 168, 242, 2];
    const KERNEL_IP: [u8; 4] = [192, 168, 242, 1];
    const UNDERLAY_A: &str = "10.242.0.1";
    const UNDERLAY_B: &str = "10.242.0.2";

    struct Netns(Vec<String>);
    impl Drop for Netns {
        fn drop(&mut self) {
            for ns in &self.0 {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }

    fn run(args: &[&str]) {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The kernel side (namespace A) has a VXLAN device; namespace B runs gatekit's VXLAN over
    /// a plain UDP socket (receive) and a raw IP socket (send: gatekit builds IP, UDP and
    /// VXLAN itself), answering ARP and ping for 192.168.242.2. The kernel pings it: ARP and
    /// ICMP go kernel -> gatekit (decap) and back gatekit -> kernel (encap, VNI, UDP checksum
    /// all checked by the kernel driver).
    #[test]
    fn linux_vxlan_pings_gatekit() {
        if !have("ip", &["netns", "list"]) || !have("ping", &["-V"]) {
            return;
        }
        let pid = std::process::id();
        let (a, b) = (format!("gkvxa{pid}"), format!("gkvxb{pid}"));
        let (va, vb) = (format!("gkva{pid}"), format!("gkvb{pid}"));
        if Command::new("ip")
            .args(["netns", "add", &a])
            .status()
            .map_or(true, |s| !s.success())
        {
            if std::env::var_os("CI").is_some() {
                panic!("cannot create network namespaces (root needed)");
            }
            eprintln!("skipping: cannot create network namespaces (not root?)");
            return;
        }
        let _guard = Netns(vec![a.clone(), b.clone()]);
        run(&["ip", "netns", "add", &b]);
        run(&[
            "ip", "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
        ]);
        run(&[
            "ip",
            "-n",
            &a,
            "addr",
            "add",
            &format!("{UNDERLAY_A}/24"),
            "dev",
            &va,
        ]);
        run(&[
            "ip",
            "-n",
            &b,
            "addr",
            "add",
            &format!("{UNDERLAY_B}/24"),
            "dev",
            &vb,
        ]);
        for (ns, dev) in [(&a, &va), (&b, &vb)] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&[
            "ip",
            "-n",
            &a,
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            &VNI.to_string(),
            "remote",
            UNDERLAY_B,
            "local",
            UNDERLAY_A,
            "dstport",
            "4789",
            "dev",
            &va,
        ]);
        run(&[
            "ip",
            "-n",
            &a,
            "addr",
            "add",
            "192.168.242.1/24",
            "dev",
            "vx0",
        ]);
        run(&["ip", "-n", &a, "link", "set", "vx0", "up"]);

        let exe = std::env::current_exe().unwrap();
        let peer = Command::new("ip")
            .args(["netns", "exec", &b])
            .arg(&exe)
            .args([
                "--exact",
                "kernel_vxlan::peer_process",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(PEER_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let ping = Command::new("ip")
            .args([
                "netns",
                "exec",
                &a,
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
                "192.168.242.2",
            ])
            .output()
            .unwrap();
        let neigh = Command::new("ip")
            .args(["-n", &a, "neigh", "show", "dev", "vx0"])
            .output()
            .unwrap();
        // The peer serves a few seconds then exits with a summary; wait for it (it is ours).
        let out = peer.wait_with_output().unwrap();
        let peer_log = String::from_utf8_lossy(&out.stdout);
        assert!(
            ping.status.success(),
            "ping over kernel VXLAN to gatekit failed:\n{}\npeer:\n{peer_log}\n{}",
            String::from_utf8_lossy(&ping.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&ping.stdout).contains("3 received"));
        let neigh = String::from_utf8_lossy(&neigh.stdout);
        assert!(
            neigh.contains("192.168.242.2 lladdr 02:00:00:00:42:02"),
            "kernel ARP entry: {neigh}"
        );
        assert!(peer_log.contains("arp_replies="), "{peer_log}");
        assert!(out.status.success(), "peer failed: {peer_log}");
    }

    /// Helper process for `linux_vxlan_pings_gatekit`, started by it inside namespace B; does
    /// nothing unless that test set `GATEKIT_VXLAN_PEER`.
    #[test]
    #[ignore = "helper process of linux_vxlan_pings_gatekit"]
    fn peer_process() {
        if std::env::var_os(PEER_ENV).is_none() {
            return;
        }
        let local = ip(UNDERLAY_B);
        let kernel = ip(UNDERLAY_A);
        let mut vtep = Vtep::new(VtepConfig {
            udp_checksum_v4: true,
            ..VtepConfig::new(local)
        })
        .unwrap();
        let tunnel = vtep.add_tunnel(kernel, VNI).unwrap();
        let sock = UdpSocket::bind(SocketAddr::new(local, 4789)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let raw = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(255)),
        )
        .unwrap();
        let dst: socket2::SockAddr = SocketAddr::new(kernel, 0).into();
        let (mut arp_replies, mut echo_replies) = (0, 0);
        let start = StdInstant::now();
        let mut rx = [0u8; 2048];
        while start.elapsed() < Duration::from_secs(6) && echo_replies < 3 {
            let Ok((n, from)) = sock.recv_from(&mut rx) else {
                continue;
            };
            let mut buf = PktBuf::from_slice(&rx[..n], 128, 0);
            let Decap::Packet { tunnel: t, .. } = vtep.decap_udp_payload(&mut buf, from.ip())
            else {
                println!("dropped a datagram from {from}");
                continue;
            };
            assert_eq!(t, tunnel);
            let Some(reply) = answer(buf.data()) else {
                continue;
            };
            if reply.1 {
                arp_replies += 1
            } else {
                echo_replies += 1
            }
            let mut out = PktBuf::from_slice(&reply.0, 128, 0);
            assert_eq!(vtep.encap(tunnel, &mut out), Encap::Ready);
            raw.send_to(out.data(), &dst).unwrap();
        }
        println!("arp_replies={arp_replies} echo_replies={echo_replies}");
        assert!(echo_replies >= 3 && arp_replies >= 1);
    }

    /// The reply to an ARP request or ICMP echo request for our address, and whether it is ARP.
    fn answer(frame: &[u8]) -> Option<(Vec<u8>, bool)> {
        let (eth, rest) = Ethernet2Header::from_slice(frame).ok()?;
        if eth.ether_type == EtherType::ARP {
            let req = ArpPacket::from_slice(rest).ok()?.try_eth_ipv4().ok()?;
            if req.operation != ArpOperation::REQUEST || req.target_ipv4 != OUR_IP {
                return None;
            }
            let mut f = Ethernet2Header {
                source: OUR_MAC,
                destination: eth.source,
                ether_type: EtherType::ARP,
            }
            .to_bytes()
            .to_vec();
            f.extend_from_slice(
                &ArpEthIpv4Packet {
                    operation: ArpOperation::REPLY,
                    sender_mac: OUR_MAC,
                    sender_ipv4: OUR_IP,
                    target_mac: req.sender_mac,
                    target_ipv4: req.sender_ipv4,
                }
                .to_bytes(),
            );
            return Some((f, true));
        }
        let s = SlicedPacket::from_ethernet(frame).ok()?;
        let Some(NetSlice::Ipv4(v4)) = &s.net else {
            return None;
        };
        if v4.header().destination() != OUR_IP || v4.header().source() != KERNEL_IP {
            return None;
        }
        let Some(TransportSlice::Icmpv4(icmp)) = &s.transport else {
            return None;
        };
        let Icmpv4Type::EchoRequest(echo) = icmp.icmp_type() else {
            return None;
        };
        let mut f = Vec::new();
        PacketBuilder::ethernet2(OUR_MAC, eth.source)
            .ipv4(OUR_IP, KERNEL_IP, 64)
            .icmpv4_echo_reply(echo.id, echo.seq)
            .write(&mut f, icmp.payload())
            .ok()?;
        Some((f, false))
    }
}
