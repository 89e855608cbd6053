//! The metrics/status HTTP endpoint over real TCP: `/metrics` checked by an independent
//! Prometheus text parser (Python's `prometheus_client`), `/status` round-tripped into a
//! `Snapshot`, and clients that misbehave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatekit_gateway::control::{ControlPlane, MetricsServer};
use gatekit_gateway::status::{
    InterfaceStatus, MacStatus, RouteStatus, RuleStatus, SaStatus, Snapshot,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn snapshot() -> Snapshot {
    let mut s = Snapshot {
        name: "site-a".into(),
        uptime_secs: 12.5,
        config_generation: 3,
        reload_failures: 1,
        interfaces: vec![
            InterfaceStatus {
                name: "lan0".into(),
                kind: "tun".into(),
                rx_packets: 100,
                rx_bytes: 15_000,
                tx_packets: 90,
                tx_bytes: 13_500,
                drops: 2,
            },
            InterfaceStatus {
                // A name that needs escaping in a label value.
                name: "odd \"name\"\\x\ny".into(),
                kind: "udp".into(),
                // Above 2^53: must come out exact, not rounded through a float.
                rx_packets: 9_007_199_254_740_993,
                ..InterfaceStatus::default()
            },
        ],
        sas: vec![SaStatus {
            peer: "site-b".into(),
            spi: 0x1001,
            direction: "in".into(),
            mode: "tunnel".into(),
            suite: "aes128gcm16".into(),
            encap: "udp:198.51.100.2:4500".into(),
            packets: 42,
            bytes: 4200,
            drops: BTreeMap::from([("replay".to_string(), 5)]),
            state: "active".into(),
        }],
        routes: vec![RouteStatus {
            prefix: "10.2.0.0/16".into(),
            via: "ipsec:site-b".into(),
            source: "static".into(),
            distance: 1,
            metric: 0,
            selected: true,
            enabled: true,
        }],
        advertised: vec![gatekit_gateway::status::AdvertStatus {
            prefix: "10.1.0.0/24".into(),
            from: "connected".into(),
            metric: 10,
            tag: 65001,
        }],
        macs: vec![
            MacStatus {
                bridge: "br0".into(),
                mac: "02:00:00:00:00:01".into(),
                port: "tap0".into(),
                ..MacStatus::default()
            },
            MacStatus {
                bridge: "br0".into(),
                mac: "02:00:00:00:00:02".into(),
                port: "gre-b".into(),
                ..MacStatus::default()
            },
        ],
        conntrack_total: 7,
        firewall_rules: vec![RuleStatus {
            chain: "FORWARD_CUST".into(),
            index: 0,
            text: "-p tcp --dport 23 -j DROP".into(),
            packets: 3,
            bytes: 180,
        }],
        ..Snapshot::default()
    };
    s.drops.insert("replay".into(), 5);
    s.drops.insert("filtered".into(), 3);
    s.captures.insert("lan0".into(), "/tmp/lan0.pcap".into());
    s
}

fn start() -> (ControlPlane, MetricsServer) {
    let control = ControlPlane::new();
    control.publish(snapshot());
    let server =
        MetricsServer::start("127.0.0.1:0".parse().unwrap(), control.handle()).expect("starts");
    (control, server)
}

/// One HTTP exchange; returns (status code, headers, body).
fn get(addr: SocketAddr, request: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head, raw[split + 4..].to_vec())
}

fn python_has_prometheus_client() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: python3 with prometheus_client is required (pip install prometheus-client)"
        );
        eprintln!("skipping: python3 -c 'import prometheus_client' failed");
    }
    ok
}

/// Parses Prometheus text with `prometheus_client` and returns its samples as
/// `name{sorted labels} value` lines, plus `TYPE name type` lines for the families.
fn parse_with_prometheus_client(text: &[u8]) -> Vec<String> {
    const SCRIPT: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    print("TYPE", fam.name, fam.type)
    for s in fam.samples:
        labels = ",".join("%s=%r" % (k, v) for k, v in sorted(s.labels.items()))
        print("%s{%s} %r" % (s.name, labels, float(s.value)))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn metrics_parse_with_an_independent_parser() {
    let (_control, server) = start();
    let (code, head, body) = get(
        server.local_addr(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(code, 200);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    if !python_has_prometheus_client() {
        return;
    }
    let lines = parse_with_prometheus_client(&body);
    let has = |l: &str| {
        assert!(
            lines.iter().any(|x| x == l),
            "missing `{l}` in\n{}",
            lines.join("\n")
        )
    };
    // prometheus_client names counter families without `_total`; samples keep it.
    has("TYPE gatekit_interface_rx_packets counter");
    has("TYPE gatekit_conntrack_entries gauge");
    has("gatekit_interface_rx_packets_total{interface='lan0',kind='tun'} 100.0");
    has("gatekit_interface_tx_bytes_total{interface='lan0',kind='tun'} 13500.0");
    has("gatekit_interface_drops_total{interface='lan0',kind='tun'} 2.0");
    // The escaped label came back as the original string.
    has(
        r#"gatekit_interface_rx_packets_total{interface='odd "name"\\x\ny',kind='udp'} 9007199254740992.0"#,
    );
    has("gatekit_sa_packets_total{direction='in',peer='site-b',spi='0x1001'} 42.0");
    has("gatekit_sa_bytes_total{direction='in',peer='site-b',spi='0x1001'} 4200.0");
    has("gatekit_sa_drops_total{direction='in',peer='site-b',reason='replay',spi='0x1001'} 5.0");
    has("gatekit_drops_total{reason='replay'} 5.0");
    has("gatekit_drops_total{reason='filtered'} 3.0");
    has("gatekit_firewall_rule_packets_total{chain='FORWARD_CUST',index='0'} 3.0");
    has("gatekit_firewall_rule_bytes_total{chain='FORWARD_CUST',index='0'} 180.0");
    has("gatekit_conntrack_entries{} 7.0");
    has("gatekit_config_generation{} 3.0");
    has("gatekit_reload_failures_total{} 1.0");
    has("gatekit_uptime_seconds{} 12.5");
    has("gatekit_mac_entries{bridge='br0'} 2.0");
    has("gatekit_route_entries{selected='true',source='static'} 1.0");
    has("gatekit_advertised_routes{} 1.0");
    has("gatekit_captures_active{} 1.0");
    has("gatekit_info{gateway='site-a'} 1.0");
    // The exact integer is in the text (the parser reads it into a float).
    assert!(
        String::from_utf8_lossy(&body).contains("} 9007199254740993\n"),
        "counters are printed exactly"
    );
}

#[test]
fn status_round_trips_into_a_snapshot() {
    let (_control, server) = start();
    let (code, head, body) = get(server.local_addr(), "GET /status HTTP/1.0\r\n\r\n");
    assert_eq!(code, 200);
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let back: Snapshot = serde_json::from_slice(&body).unwrap();
    assert_eq!(back, snapshot());
}

#[test]
fn publish_is_seen_by_the_next_scrape() {
    let (control, server) = start();
    let mut s = snapshot();
    s.config_generation = 4;
    control.publish(s);
    let (_, _, body) = get(server.local_addr(), "GET /metrics HTTP/1.1\r\n\r\n");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("\ngatekit_config_generation 4\n"), "{text}");
}

#[test]
fn health_not_found_and_methods() {
    let (_control, server) = start();
    let addr = server.local_addr();
    let (code, _, body) = get(addr, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!((code, body.as_slice()), (200, &b"ok\n"[..]));
    assert_eq!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(get(addr, "GET /metricsx HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(get(addr, "garbage\r\n\r\n").0, 400);
    let (code, head, body) = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(code, 200);
    assert!(
        body.is_empty() && !head.contains("Content-Length: 0"),
        "{head}"
    );
}

#[test]
fn hostile_clients_neither_hang_nor_crash_it() {
    let (_control, server) = start();
    let addr = server.local_addr();

    // A client that never finishes its request line holds nothing but its own connection.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1").unwrap();
    let t = Instant::now();
    assert_eq!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n").0, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "served beside the slow client"
    );

    // And it is cut off after the request deadline with 408.
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 408 "), "{answer:?}");
    assert!(t.elapsed() < Duration::from_secs(5));

    // A huge head is refused without reading it all.
    let mut big = TcpStream::connect(addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = b"GET /metrics HTTP/1.1\r\nX-Junk: ".to_vec();
    request.resize(64 * 1024, b'a');
    // The server may close before taking it all: a failed write is fine, the answer counts.
    let _ = big.write_all(&request);
    let mut answer = Vec::new();
    let _ = big.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // Clients that connect and vanish, or send binary noise.
    for _ in 0..20 {
        drop(TcpStream::connect(addr).unwrap());
    }
    let mut noise = TcpStream::connect(addr).unwrap();
    let _ = noise.write_all(&[0xff, 0x00, 0x13, 0x37, b'\r', b'\n', b'\r', b'\n']);
    drop(noise);

    // Still serving (a 503 while the noise's connections wind down is fair; a hang is not).
    let t = Instant::now();
    loop {
        let (code, _, _) = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        if code == 200 {
            break;
        }
        assert_eq!(code, 503);
        assert!(t.elapsed() < Duration::from_secs(3), "busy for too long");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stops_when_told() {
    let (_control, server) = start();
    let addr = server.local_addr();
    let t = Instant::now();
    server.stop();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens any more"
    );
}
