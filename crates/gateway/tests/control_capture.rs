//! Run-time pcap capture: start, record, stop, and read the files back with pcap-file and
//! tshark.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatekit_gateway::control::{Captures, LinkType};
use gatekit_gateway::status::{Command, Reply};
use gatekit_packet::{Instant, PortId};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn temp_file(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("gatekit-cap-{}-{tag}.pcap", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn udp_packet(payload: &[u8], dport: u16) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ipv4([10, 1, 0, 2], [10, 2, 0, 2], 64).udp(40000, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

fn ethernet_frame(payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 3, 0, 1], [10, 3, 0, 2], 64)
        .udp(1234, 5678);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

fn read_back(path: &Path) -> (DataLink, Vec<(Duration, Vec<u8>)>) {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let link = r.header().datalink;
    let mut pkts = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        pkts.push((p.timestamp, p.data.into_owned()));
    }
    (link, pkts)
}

/// `tshark -r` fields, one line per packet; `None` when tshark is absent outside CI.
fn tshark(path: &Path, fields: &[&str]) -> Option<Vec<String>> {
    let mut args = vec![
        "-r".to_string(),
        path.display().to_string(),
        "-T".into(),
        "fields".into(),
    ];
    for f in fields {
        args.push("-e".into());
        args.push((*f).into());
    }
    let out = match std::process::Command::new("tshark").args(&args).output() {
        Ok(o) => o,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: tshark is required: {e}"
            );
            eprintln!("skipping the tshark check: {e}");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn capture_ip_and_ethernet_ports() {
    // The runtime's clock read zero at this wall-clock time.
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut caps = Captures::new(epoch);
    caps.register("lan0", PortId(0), LinkType::RawIp).unwrap();
    caps.register("tap0", PortId(1), LinkType::Ethernet)
        .unwrap();
    caps.register("wan0", PortId(2), LinkType::RawIp).unwrap();
    assert!(!caps.any_active());

    let ip_file = temp_file("lan0");
    let eth_file = temp_file("tap0");
    caps.start("lan0", &ip_file).unwrap();
    caps.start("tap0", &eth_file).unwrap();
    assert!(caps.any_active());
    assert_eq!(
        caps.active().into_iter().collect::<Vec<_>>(),
        vec![
            ("lan0".to_string(), ip_file.display().to_string()),
            ("tap0".to_string(), eth_file.display().to_string()),
        ]
    );
    // A second start of the same port is refused; an existing file is never overwritten.
    assert!(caps.start("lan0", temp_file("other")).is_err());
    assert!(caps.start("wan0", &ip_file).is_err());

    let pkts: Vec<Vec<u8>> = (0..3u16)
        .map(|i| udp_packet(&[i as u8; 10], 5000 + i))
        .collect();
    for (i, p) in pkts.iter().enumerate() {
        let now = Instant::from_millis(1500 + i as u64);
        caps.record(PortId(0), now, p);
        caps.record(PortId(2), now, p); // not captured
    }
    let frame = ethernet_frame(b"bridged");
    caps.record(PortId(1), Instant::from_secs(2), &frame);

    let ip_mode = std::fs::metadata(&ip_file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&ip_mode.permissions()) & 0o777,
        0o600
    );
    assert_eq!(caps.stop("lan0").unwrap(), 3);
    assert_eq!(caps.stop("tap0").unwrap(), 1);
    assert!(caps.active().is_empty());
    // After stop, recording is a no-op again.
    caps.record(PortId(0), Instant::ZERO, &pkts[0]);

    let (link, got) = read_back(&ip_file);
    assert_eq!(link, DataLink::RAW);
    assert_eq!(got.len(), 3);
    for (i, (ts, data)) in got.iter().enumerate() {
        assert_eq!(data, &pkts[i]);
        assert_eq!(
            *ts,
            Duration::from_secs(1_700_000_001) + Duration::from_millis(500 + i as u64)
        );
    }
    let (link, got) = read_back(&eth_file);
    assert_eq!(link, DataLink::ETHERNET);
    assert_eq!(got, vec![(Duration::from_secs(1_700_000_002), frame)]);

    if let Some(lines) = tshark(&ip_file, &["ip.src", "ip.dst", "udp.dstport"]) {
        assert_eq!(
            lines,
            vec![
                "10.1.0.2\t10.2.0.2\t5000",
                "10.1.0.2\t10.2.0.2\t5001",
                "10.1.0.2\t10.2.0.2\t5002"
            ]
        );
    }
    if let Some(lines) = tshark(&eth_file, &["eth.src", "ip.dst", "udp.srcport"]) {
        assert_eq!(lines, vec!["02:00:00:00:00:01\t10.3.0.2\t1234"]);
    }
    let _ = std::fs::remove_file(&ip_file);
    let _ = std::fs::remove_file(&eth_file);
}

#[test]
fn capture_commands_answer_with_replies() {
    let mut caps = Captures::new(SystemTime::UNIX_EPOCH);
    caps.register("lan0", PortId(4), LinkType::RawIp).unwrap();
    let file = temp_file("cmd");
    let start = Command::CaptureStart {
        port: "lan0".into(),
        file: file.display().to_string(),
    };
    assert!(matches!(caps.execute(&start), Some(Reply::Ok { .. })));
    caps.record(PortId(4), Instant::from_secs(1), &udp_packet(b"x", 53));
    let stop = Command::CaptureStop {
        port: "lan0".into(),
    };
    match caps.execute(&stop) {
        Some(Reply::Ok { message }) => assert!(message.contains("after 1 packets"), "{message}"),
        other => panic!("{other:?}"),
    }
    match caps.execute(&Command::CaptureStart {
        port: "eth9".into(),
        file: "/tmp/x".into(),
    }) {
        Some(Reply::Error { message }) => {
            assert_eq!(message, "no port named `eth9`; expected one of: lan0")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(caps.execute(&Command::Status), None);
    let (_, got) = read_back(&file);
    assert_eq!(got.len(), 1);
    let _ = std::fs::remove_file(&file);
}
