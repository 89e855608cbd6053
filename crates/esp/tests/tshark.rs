//! tshark decrypts a capture of gatekit's ESP: the packets are written with the testkit's
//! pcap sink, tshark is given the SA keys through its `esp.enable_encryption_decode`
//! preference and the `esp_sa` table, and the inner packets it dissects must be the ones
//! that were sent (addresses, ports and payload), for native ESP and NAT-T, IPv4 and IPv6.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use gatekit_esp::{Direction, Encap, Endpoint, Mode, Output, Select, Suite};
use gatekit_packet::{Instant, PacketBuf, PktBuf};
use gatekit_testkit::{LinkType, PcapSink};
use std::net::IpAddr;
use std::process::Command;

struct Flow {
    spi: u32,
    local: IpAddr,
    peer: IpAddr,
    encap: Encap,
    inner_src: IpAddr,
    inner_dst: IpAddr,
}

fn uat_row(f: &Flow, suite: Suite) -> String {
    let family = if f.local.is_ipv4() { "IPv4" } else { "IPv6" };
    format!(
        "\"{family}\",\"{}\",\"{}\",\"{:#010x}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"",
        f.local,
        f.peer,
        f.spi,
        key_hex(suite, f.spi as u8)
    )
}

#[test]
fn tshark_decrypts_gatekit_esp() {
    if !tool_available("tshark", Command::new("tshark").arg("--version")) {
        return;
    }
    let suite = Suite::AesGcm128;
    let flows = [
        Flow {
            spi: 0x0000_1001,
            local: "192.0.2.1".parse().unwrap(),
            peer: "198.51.100.2".parse().unwrap(),
            encap: Encap::Native,
            inner_src: "10.1.0.5".parse().unwrap(),
            inner_dst: "10.2.0.9".parse().unwrap(),
        },
        Flow {
            spi: 0x0000_1002,
            local: "192.0.2.1".parse().unwrap(),
            peer: "198.51.100.3".parse().unwrap(),
            encap: Encap::Udp {
                local_port: 4500,
                peer_port: 4500,
            },
            inner_src: "10.1.0.6".parse().unwrap(),
            inner_dst: "10.3.0.9".parse().unwrap(),
        },
        Flow {
            spi: 0x0000_1003,
            local: "2001:db8::1".parse().unwrap(),
            peer: "2001:db8::2".parse().unwrap(),
            encap: Encap::Native,
            inner_src: "2001:db8:1::5".parse().unwrap(),
            inner_dst: "2001:db8:2::9".parse().unwrap(),
        },
    ];
    let dir = std::env::temp_dir().join(format!("gatekit-esp-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("esp.pcap");
    let sink = PcapSink::create(&pcap, LinkType::RawIp).unwrap();
    let mut ep = Endpoint::default();
    let mut sent = Vec::new();
    let mut t = Instant::from_secs(1);
    for f in &flows {
        let cfg = sa(
            f.spi,
            Direction::Outbound,
            suite,
            f.spi as u8,
            Mode::Tunnel,
            f.encap,
            f.local,
            f.peer,
        );
        let id = ep.add_sa(&cfg, t).unwrap();
        for n in 0..4u16 {
            let inner = udp_packet(
                f.inner_src,
                f.inner_dst,
                41000 + n,
                40100 + n,
                10 + usize::from(n) * 37,
            );
            let mut buf = PktBuf::from_slice(&inner, 128, 64);
            ep.encap(Select::Sa(id), &mut buf, Output::Packet, t)
                .unwrap();
            sink.write(t, buf.data()).unwrap();
            t += std::time::Duration::from_millis(1);
            let payload = inner[inner.len() - (10 + usize::from(n) * 37)..].to_vec();
            sent.push((
                f.spi,
                f.inner_src,
                f.inner_dst,
                41000 + n,
                40100 + n,
                payload,
            ));
        }
    }
    sink.flush().unwrap();
    drop(sink);

    let uat: Vec<String> = flows
        .iter()
        .map(|f| format!("uat:esp_sa:{}", uat_row(f, suite)))
        .collect();
    let mut cmd = Command::new("tshark");
    cmd.arg("-n")
        .arg("-r")
        .arg(&pcap)
        .args(["-o", "esp.enable_encryption_decode:TRUE"]);
    for u in &uat {
        cmd.args(["-o", u]);
    }
    cmd.args([
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "esp.spi",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "ipv6.src",
        "-e",
        "ipv6.dst",
        "-e",
        "udp.srcport",
        "-e",
        "udp.dstport",
        "-e",
        "data.data",
    ]);
    let out = cmd.output().expect("tshark runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "tshark failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), sent.len(), "{stdout}\n{stderr}");
    for (line, (spi, src, dst, sport, dport, payload)) in lines.iter().zip(&sent) {
        let cols: Vec<&str> = line.split('|').collect();
        assert_eq!(cols[0], format!("{spi:#010x}"), "{line}");
        // The inner addresses are the last of each list (the outer header comes first).
        let (srcs, dsts) = if src.is_ipv4() {
            (cols[1], cols[2])
        } else {
            (cols[3], cols[4])
        };
        assert_eq!(srcs.rsplit(',').next().unwrap(), src.to_string(), "{line}");
        assert_eq!(dsts.rsplit(',').next().unwrap(), dst.to_string(), "{line}");
        assert_eq!(
            cols[5].rsplit(',').next().unwrap(),
            sport.to_string(),
            "{line}"
        );
        assert_eq!(
            cols[6].rsplit(',').next().unwrap(),
            dport.to_string(),
            "{line}"
        );
        assert_eq!(cols[7], hex(payload), "{line}");
    }
}
