//! System tests in network namespaces the tests create: TUN up in a namespace and pinged
//! through (a kernel ICMP socket judges the replies), UDP batches between two namespaces over veth (checked against plain kernel
//! sockets), raw ESP sent and received (checked against a Python raw socket), and a TCP
//! transfer relayed between two TUN devices with offloads.
//!
//! They need root, `ip` and (for some) `python3` and `iperf3`. Outside CI a test
//! without them prints why and passes; with `CI` set it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatekit_io::netcfg::{NetNs, ip};
use gatekit_io::{
    Event, EventLoop, EventLoopConfig, IPPROTO_ESP, Interest, PortStats, RawConfig, RawPort, Shape,
    Token, Tun, TunConfig, TunPort, TunQueue, UdpConfig, UdpPort, Worker,
};
use gatekit_packet::{Batch, Instant, Meta, PacketBuf, Pool, PoolBuf, Port, PortId, checksum};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short unique suffix for namespace and interface names.
fn uniq() -> String {
    format!(
        "{}{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the test can run; fails under CI when it cannot.
fn can_run(tools: &[&str]) -> bool {
    // SAFETY-free check of the effective uid through /proc.
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    let mut missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if !root {
        missing.push("root");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun");
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and this test needs {missing:?}");
    }
    eprintln!("skipping: needs {missing:?}");
    false
}

/// Two namespaces joined by a veth pair, 10.X.0.1/24 in `a` and 10.X.0.2/24 in `b`.
struct Pair {
    a: NetNs,
    b: NetNs,
    a_ip: IpAddr,
    b_ip: IpAddr,
}

fn veth_pair(net: u8) -> Pair {
    let u = uniq();
    let a = NetNs::create(&format!("gka{u}")).unwrap();
    let b = NetNs::create(&format!("gkb{u}")).unwrap();
    let (va, vb) = (format!("gva{u}"), format!("gvb{u}"));
    ip(&[
        "link",
        "add",
        &va,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &vb,
        "netns",
        b.name(),
    ])
    .unwrap();
    a.ip(&["addr", "add", &format!("10.{net}.0.1/24"), "dev", &va])
        .unwrap();
    b.ip(&["addr", "add", &format!("10.{net}.0.2/24"), "dev", &vb])
        .unwrap();
    a.ip(&["link", "set", &va, "up"]).unwrap();
    b.ip(&["link", "set", &vb, "up"]).unwrap();
    Pair {
        a,
        b,
        a_ip: format!("10.{net}.0.1").parse().unwrap(),
        b_ip: format!("10.{net}.0.2").parse().unwrap(),
    }
}

/// Runs `f` on a thread that has entered namespace `ns`.
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        gatekit_io::netcfg::enter_netns(&ns).unwrap();
        f()
    })
}

fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8], buf: &mut PoolBuf) {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("v4 only")
    };
    let b = etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64).udp(src.port(), dst.port());
    let len = b.size(payload.len());
    b.write(&mut &mut buf.push_back(len).unwrap()[..], payload)
        .unwrap();
}

/// Receives into batches of 64 until `got` holds `n` UDP payloads (the IPv4 and UDP headers
/// the port writes back cut off), or for at most 5 s.
fn recv_payloads(port: &mut UdpPort, n: usize, got: &mut Vec<Vec<u8>>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got.len() < n && std::time::Instant::now() < deadline {
        let mut batch: Batch<PoolBuf> = Batch::new(64);
        port.recv(&mut batch, Instant::ZERO).unwrap();
        got.extend(batch.drain().map(|(b, _, _)| b.data()[28..].to_vec()));
    }
}

fn payload_for(i: usize, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|k| (k as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect();
    p[..4].copy_from_slice(&(i as u32).to_be_bytes());
    p
}

/// UdpPort (sendmmsg + GSO) to a plain kernel socket, then a plain kernel socket to UdpPort
/// (recvmmsg + GRO): every datagram arrives whole and separate, in both directions.
#[test]
fn udp_batches_between_namespaces() {
    if !can_run(&["ip"]) {
        return;
    }
    let p = veth_pair(77);
    let a_addr = SocketAddr::new(p.a_ip, 5000);
    let b_addr = SocketAddr::new(p.b_ip, 5001);
    const N: usize = 640;

    // Receiver in b: a plain socket, one recv per datagram (the kernel is the oracle).
    let plain = in_ns(p.b.name(), move || {
        std::net::UdpSocket::bind(b_addr).unwrap()
    });
    let plain = plain.join().unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    // The plain receiver reads concurrently and acknowledges each batch, so that its default
    // socket buffer is never overrun.
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 2000];
        for i in 0..N {
            let (n, from) = plain.recv_from(&mut buf).unwrap();
            assert_eq!(from, a_addr);
            let want = payload_for(i, if i % 64 == 63 { 300 } else { 1200 });
            assert_eq!(&buf[..n], &want[..], "datagram {i}");
            if i % 64 == 63 {
                ack_tx.send(()).unwrap();
            }
        }
    });
    let sender = in_ns(p.a.name(), move || {
        let pool = Pool::new(256, 2048, 128);
        let mut port: UdpPort =
            UdpPort::bind(a_addr, &UdpConfig::default(), pool.clone(), PortId(1)).unwrap();
        let mut i = 0;
        while i < N {
            let mut batch: Batch<PoolBuf> = Batch::new(64);
            while !batch.is_full() && i < N {
                let mut b = pool.get().unwrap();
                // Runs of 1200-byte datagrams (GSO material) ending in a short one.
                let len = if i % 64 == 63 { 300 } else { 1200 };
                udp_packet(a_addr, b_addr, &payload_for(i, len), &mut b);
                batch.push(b, Meta::default()).unwrap();
                i += 1;
            }
            while !batch.is_empty() {
                port.send(&mut batch, Instant::ZERO).unwrap();
            }
            ack_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        port.stats().clone()
    });
    let tx: PortStats = sender.join().unwrap();
    reader.join().unwrap();
    assert_eq!(tx.tx_packets, N as u64);
    assert!(tx.tx_calls <= (N / 64 + 2) as u64, "batched: {tx:?}");
    assert!(tx.tx_coalesced > 0, "UDP GSO used: {tx:?}");

    // The other way: plain sends, UdpPort (recvmmsg + GRO) receives after all are queued.
    let plain_a = in_ns(p.a.name(), move || {
        std::net::UdpSocket::bind(SocketAddr::new(a_addr.ip(), 5002)).unwrap()
    })
    .join()
    .unwrap();
    let plain_src = plain_a.local_addr().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let receiver = in_ns(p.b.name(), move || {
        let pool = Pool::new(1024, 2048, 128);
        let addr = SocketAddr::new(b_addr.ip(), 5003);
        let mut port: UdpPort =
            UdpPort::bind(addr, &UdpConfig::default(), pool, PortId(7)).unwrap();
        ready_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < N && std::time::Instant::now() < deadline {
            let mut batch: Batch<PoolBuf> = Batch::new(64);
            port.recv(&mut batch, Instant::ZERO).unwrap();
            for (b, m, _) in batch.drain() {
                assert_eq!(m.ingress, PortId(7));
                got.push((b.data().to_vec(), m.peer));
            }
        }
        (got, port.stats().clone())
    });
    ready_rx.recv().unwrap();
    for i in 0..N {
        plain_a
            .send_to(&payload_for(i, 1000), SocketAddr::new(b_addr.ip(), 5003))
            .unwrap();
    }
    go_tx.send(()).unwrap();
    let (got, rx) = receiver.join().unwrap();
    assert_eq!(got.len(), N, "{rx:?}");
    assert!(rx.rx_calls < N as u64 / 4, "batched: {rx:?}");
    for (i, (pkt, peer)) in got.iter().enumerate() {
        assert_eq!(*peer, Some(plain_src));
        // The headers written back parse as IPv4/UDP (etherparse checks lengths and the
        // IPv4 header checksum) and carry the real addresses.
        let s = etherparse::SlicedPacket::from_ip(pkt).unwrap();
        let Some(etherparse::NetSlice::Ipv4(v4)) = &s.net else {
            panic!()
        };
        let h = v4.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(IpAddr::from(h.source), plain_src.ip());
        assert_eq!(IpAddr::from(h.destination), b_addr.ip());
        let Some(etherparse::TransportSlice::Udp(u)) = &s.transport else {
            panic!()
        };
        assert_eq!(
            (u.source_port(), u.destination_port()),
            (plain_src.port(), 5003)
        );
        assert_eq!(u.payload(), &payload_for(i, 1000)[..], "datagram {i}");
    }
    eprintln!("udp: tx {tx:?}\nudp: rx {rx:?}");

    // Port to port: GSO runs sent, GRO (where the kernel keeps them whole across veth)
    // received and cut back; every datagram in order with its bytes. The datagram size
    // changes twice, so the receive that scatters a coalesced datagram over pool buffers of
    // the learned segment size meets segments of another size, smaller and larger.
    let sizes = [1200usize, 1100, 1300];
    let size_of = move |i: usize| sizes[(i / N).min(sizes.len() - 1)];
    let total = N * sizes.len();
    let dst = SocketAddr::new(b_addr.ip(), 5005);
    let src = SocketAddr::new(a_addr.ip(), 5004);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let receiver = in_ns(p.b.name(), move || {
        let pool = Pool::new(2048, 2048, 128);
        let mut port: UdpPort = UdpPort::bind(dst, &UdpConfig::default(), pool, PortId(8)).unwrap();
        ready_tx.send(()).unwrap();
        let mut got = Vec::new();
        recv_payloads(&mut port, total, &mut got);
        (got, port.stats().clone())
    });
    ready_rx.recv().unwrap();
    in_ns(p.a.name(), move || {
        let pool = Pool::new(256, 2048, 128);
        let mut port: UdpPort =
            UdpPort::bind(src, &UdpConfig::default(), pool.clone(), PortId(1)).unwrap();
        for chunk in 0..total / 64 {
            let mut batch: Batch<PoolBuf> = Batch::new(64);
            for i in chunk * 64..chunk * 64 + 64 {
                let mut b = pool.get().unwrap();
                udp_packet(src, dst, &payload_for(i, size_of(i)), &mut b);
                batch.push(b, Meta::default()).unwrap();
            }
            while !batch.is_empty() {
                port.send(&mut batch, Instant::ZERO).unwrap();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .join()
    .unwrap();
    let (got, rx) = receiver.join().unwrap();
    assert_eq!(got.len(), total, "{rx:?}");
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &payload_for(i, size_of(i)), "datagram {i}");
    }
    // GSO runs cross veth whole and reach a UDP_GRO socket unsegmented (Linux 5.x+).
    assert!(rx.rx_coalesced > 0, "GRO delivered coalesced runs: {rx:?}");
    // After the first coalesced datagram taught the port the segment size, they arrive
    // scattered over pool buffers.
    assert!(rx.rx_scattered > 0, "coalesced runs were scattered: {rx:?}");
    eprintln!("udp port to port: rx {rx:?}");

    // A GSO run of datagrams larger than the link MTU is refused by the kernel; the port
    // falls back to one datagram per packet (which the kernel fragments) and loses nothing.
    let big_dst = SocketAddr::new(b_addr.ip(), 5006);
    let plain_big = in_ns(p.b.name(), move || {
        std::net::UdpSocket::bind(big_dst).unwrap()
    })
    .join()
    .unwrap();
    plain_big
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let tx = in_ns(p.a.name(), move || {
        let src = SocketAddr::new(a_addr.ip(), 5007);
        let pool = Pool::new(16, 4096, 128);
        let mut port: UdpPort =
            UdpPort::bind(src, &UdpConfig::default(), pool.clone(), PortId(1)).unwrap();
        let mut batch: Batch<PoolBuf> = Batch::new(8);
        for i in 0..4 {
            let mut b = pool.get().unwrap();
            udp_packet(src, big_dst, &payload_for(i, 2000), &mut b);
            batch.push(b, Meta::default()).unwrap();
        }
        while !batch.is_empty() {
            port.send(&mut batch, Instant::ZERO).unwrap();
        }
        port.stats().clone()
    })
    .join()
    .unwrap();
    assert_eq!((tx.tx_packets, tx.drops.total()), (4, 0), "{tx:?}");
    let mut buf = [0u8; 4000];
    for i in 0..4 {
        let (n, _) = plain_big.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &payload_for(i, 2000)[..]);
    }
}

/// A coalescing receive asks for no more datagrams than the batch has room for. With eight
/// GSO runs of 45 datagrams queued at once, one receive into a batch of 64 takes at most two
/// runs (the kernel writes every segment it hands over, and what the batch cannot take
/// waits), not the eight its GRO slots could hold; later receives bring the rest, in order
/// and whole.
#[test]
fn gro_receive_takes_what_the_batch_has_room_for() {
    if !can_run(&["ip"]) {
        return;
    }
    const RUN: usize = 45;
    const RUNS: usize = 8;
    let p = veth_pair(84);
    let dst = SocketAddr::new(p.b_ip, 5010);
    let src = SocketAddr::new(p.a_ip, 5011);
    // The sender sends a run each time it is told to, then says it is done.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<usize>();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
    let sender = in_ns(p.a.name(), move || {
        let pool = Pool::new(256, 2048, 128);
        let mut port: UdpPort =
            UdpPort::bind(src, &UdpConfig::default(), pool.clone(), PortId(1)).unwrap();
        let mut next = 0;
        while let Ok(runs) = go_rx.recv() {
            for _ in 0..runs {
                let mut batch: Batch<PoolBuf> = Batch::new(64);
                for i in next..next + RUN {
                    let mut b = pool.get().unwrap();
                    udp_packet(src, dst, &payload_for(i, 1200), &mut b);
                    batch.push(b, Meta::default()).unwrap();
                }
                next += RUN;
                while !batch.is_empty() {
                    port.send(&mut batch, Instant::ZERO).unwrap();
                }
            }
            sent_tx.send(()).unwrap();
        }
        port.stats().clone()
    });
    let receiver = in_ns(p.b.name(), move || {
        let pool = Pool::new(2048, 2048, 128);
        let mut port: UdpPort = UdpPort::bind(dst, &UdpConfig::default(), pool, PortId(2)).unwrap();
        let mut got: Vec<Vec<u8>> = Vec::new();
        // Two runs one at a time: the port learns the segment size and how many segments a
        // datagram brings.
        for k in 1..=2 {
            go_tx.send(1).unwrap();
            sent_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            recv_payloads(&mut port, k * RUN, &mut got);
        }
        // Eight runs queued in the socket, then one receive.
        go_tx.send(RUNS).unwrap();
        sent_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        drop(go_tx);
        // The peer's side of the veth hands them to the socket in a softirq: let it.
        std::thread::sleep(Duration::from_millis(100));
        let before = port.stats().clone();
        let mut batch: Batch<PoolBuf> = Batch::new(64);
        let n = port.recv(&mut batch, Instant::ZERO).unwrap();
        let after = port.stats().clone();
        got.extend(batch.drain().map(|(b, _, _)| b.data()[28..].to_vec()));
        recv_payloads(&mut port, (2 + RUNS) * RUN, &mut got);
        (got, n, before, after, port.stats().clone())
    });
    let (got, n, before, after, rx) = receiver.join().unwrap();
    let tx = sender.join().unwrap();
    assert_eq!(tx.tx_packets, ((2 + RUNS) * RUN) as u64, "{tx:?}");
    assert_eq!(got.len(), (2 + RUNS) * RUN, "{rx:?}");
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &payload_for(i, 1200), "datagram {i}");
    }
    // The runs crossed whole and were scattered over pool buffers.
    assert!(rx.rx_scattered >= RUNS as u64, "{rx:?}");
    // One system call, and at most two runs' worth taken by it.
    assert_eq!(after.rx_calls - before.rx_calls, 1, "{after:?}");
    let taken = after.rx_packets - before.rx_packets;
    assert!(
        n > 0 && taken <= (2 * RUN) as u64,
        "one receive into a batch of 64 took {taken} datagrams: {after:?}"
    );
}

/// Raw ESP between namespaces: a Python raw socket sends, a RawPort receives the whole IPv4
/// packet; a RawPort sends (IP_HDRINCL), another receives; and payload shape with Meta.peer.
#[test]
fn raw_esp_between_namespaces() {
    if !can_run(&["ip", "python3"]) {
        return;
    }
    let p = veth_pair(78);
    let (a_ip, b_ip) = (p.a_ip, p.b_ip);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let receiver = in_ns(p.b.name(), move || {
        let pool = Pool::new(64, 2048, 128);
        let mut port: RawPort =
            RawPort::open(b_ip, IPPROTO_ESP, &RawConfig::default(), pool, PortId(3)).unwrap();
        ready_tx.send(()).unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < 2 && std::time::Instant::now() < deadline {
            let mut batch: Batch<PoolBuf> = Batch::new(8);
            port.recv(&mut batch, Instant::ZERO).unwrap();
            for (b, m, _) in batch.drain() {
                got.push((b.data().to_vec(), m.peer));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    });
    ready_rx.recv().unwrap();
    // An independent sender: Python's raw socket (the kernel adds the IPv4 header).
    let esp = b"\x00\x00\x10\x01\x00\x00\x00\x01python-esp-payload";
    let script = format!(
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_RAW, 50); s.sendto({esp}, ('{b_ip}', 0))",
        esp = bytes_literal(esp)
    );
    p.a.exec(&["python3", "-c", &script]).unwrap();
    // Ours: a whole IPv4/ESP packet with IP_HDRINCL.
    let sender = in_ns(p.a.name(), move || {
        let pool = Pool::new(8, 2048, 128);
        let mut port: RawPort = RawPort::open(
            a_ip,
            IPPROTO_ESP,
            &RawConfig::default(),
            pool.clone(),
            PortId(4),
        )
        .unwrap();
        let mut b = pool.get().unwrap();
        let body = b"\x00\x00\x10\x02\x00\x00\x00\x07gatekit-esp-payload";
        let (IpAddr::V4(s), IpAddr::V4(d)) = (a_ip, b_ip) else {
            panic!()
        };
        let hdr = etherparse::Ipv4Header::new(
            body.len() as u16,
            64,
            etherparse::IpNumber(50),
            s.octets(),
            d.octets(),
        )
        .unwrap();
        hdr.write(&mut &mut b.push_back(20).unwrap()[..]).unwrap();
        b.push_back(body.len()).unwrap().copy_from_slice(body);
        let mut batch: Batch<PoolBuf> = Batch::new(4);
        batch.push(b, Meta::default()).unwrap();
        assert_eq!(port.send(&mut batch, Instant::ZERO).unwrap(), 1);
        port.stats().clone()
    });
    let tx = sender.join().unwrap();
    assert_eq!(tx.tx_packets, 1, "{tx:?}");
    let got = receiver.join().unwrap();
    assert_eq!(got.len(), 2, "both ESP packets arrived: {got:?}");
    let mut bodies = Vec::new();
    for (pkt, peer) in &got {
        let ip = etherparse::Ipv4HeaderSlice::from_slice(pkt).unwrap();
        assert_eq!(ip.protocol(), etherparse::IpNumber(50));
        assert_eq!(IpAddr::from(ip.source()), a_ip);
        assert_eq!(*peer, Some(SocketAddr::new(a_ip, 0)));
        bodies.push(pkt[20..].to_vec());
    }
    bodies.sort();
    assert_eq!(bodies[0], esp.to_vec());
    assert_eq!(
        bodies[1],
        b"\x00\x00\x10\x02\x00\x00\x00\x07gatekit-esp-payload".to_vec()
    );

    // Payload shape: ESP only, addressed by Meta.peer, both ways.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let receiver = in_ns(p.b.name(), move || {
        let pool = Pool::new(64, 2048, 128);
        let cfg = RawConfig {
            shape: Shape::Payload,
            ..RawConfig::default()
        };
        let mut port: RawPort = RawPort::open(b_ip, IPPROTO_ESP, &cfg, pool, PortId(3)).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let mut batch: Batch<PoolBuf> = Batch::new(8);
            port.recv(&mut batch, Instant::ZERO).unwrap();
            if let Some((b, m, _)) = batch.drain().next() {
                return Some((b.data().to_vec(), m.peer));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    });
    ready_rx.recv().unwrap();
    in_ns(p.a.name(), move || {
        let pool = Pool::new(8, 2048, 128);
        let cfg = RawConfig {
            shape: Shape::Payload,
            ..RawConfig::default()
        };
        let mut port: RawPort =
            RawPort::open(a_ip, IPPROTO_ESP, &cfg, pool.clone(), PortId(4)).unwrap();
        let mut b = pool.get().unwrap();
        b.push_back(12)
            .unwrap()
            .copy_from_slice(b"\x00\x00\x10\x03shape!!!");
        let meta = Meta {
            peer: Some(SocketAddr::new(b_ip, 0)),
            ..Meta::default()
        };
        let mut batch: Batch<PoolBuf> = Batch::new(4);
        batch.push(b, meta).unwrap();
        assert_eq!(port.send(&mut batch, Instant::ZERO).unwrap(), 1);
    })
    .join()
    .unwrap();
    let (body, peer) = receiver
        .join()
        .unwrap()
        .expect("payload-shaped ESP arrived");
    assert_eq!(body, b"\x00\x00\x10\x03shape!!!");
    assert_eq!(peer, Some(SocketAddr::new(a_ip, 0)));
}

fn bytes_literal(b: &[u8]) -> String {
    let mut s = String::from("b'");
    for c in b {
        s.push_str(&format!("\\x{c:02x}"));
    }
    s.push('\'');
    s
}

/// An ICMP echo responder on a TUN queue, run by the event loop.
struct Responder {
    port: TunPort,
    pool: Pool,
    replies: Arc<AtomicU32>,
}

impl Worker for Responder {
    fn on_event(&mut self, _: Event, now: Instant) {
        let _ = &self.pool;
        let mut batch: Batch<PoolBuf> = Batch::new(32);
        if self.port.recv(&mut batch, now).is_err() {
            return;
        }
        let mut out: Batch<PoolBuf> = Batch::new(32);
        for (mut b, m, _) in batch.drain() {
            let d = b.data_mut();
            // IPv4, no options, ICMP echo request.
            if d.len() < 28 || d[0] != 0x45 || d[9] != 1 || d[20] != 8 {
                continue;
            }
            let (src, dst) = ([d[12], d[13], d[14], d[15]], [d[16], d[17], d[18], d[19]]);
            d[12..16].copy_from_slice(&dst);
            d[16..20].copy_from_slice(&src);
            let old = u16::from_be_bytes([d[20], d[21]]);
            d[20] = 0; // echo reply
            let new = u16::from_be_bytes([d[20], d[21]]);
            let c = checksum::update16(u16::from_be_bytes([d[22], d[23]]), old, new);
            d[22..24].copy_from_slice(&c.to_be_bytes());
            let _ = out.push(b, m);
            self.replies.fetch_add(1, Ordering::SeqCst);
        }
        let _ = self.port.send(&mut out, now);
    }
}

/// A two-queue TUN device up in a namespace, each queue owned and answered by its own
/// event-loop worker: ICMP echo through it succeeds, judged by the kernel's ping socket.
#[test]
fn tun_ping_through_event_loop() {
    if !can_run(&["ip", "python3"]) {
        return;
    }
    let u = uniq();
    let ns = NetNs::create(&format!("gkt{u}")).unwrap();
    let name = format!("gkt{u}");
    let tun = {
        let name = name.clone();
        in_ns(ns.name(), move || {
            Tun::create(
                &TunConfig::tun(&name)
                    .queues(2)
                    .mtu(1400)
                    .address("10.79.0.1".parse().unwrap(), 24),
            )
            .unwrap()
        })
        .join()
        .unwrap()
    };
    assert_eq!(tun.name(), name);
    assert_eq!(
        tun.queues().len(),
        2,
        "one queue per worker (IFF_MULTI_QUEUE)"
    );
    let queues: Arc<Mutex<Vec<TunQueue>>> = Arc::new(Mutex::new(tun.into_queues()));
    let replies = Arc::new(AtomicU32::new(0));
    let r = replies.clone();
    let cfg = EventLoopConfig {
        workers: 2,
        ..EventLoopConfig::default()
    };
    let lp = EventLoop::spawn(&cfg, move |ctx| {
        let q = queues.lock().unwrap().pop().unwrap();
        let pool = Pool::new(256, 2048, 128);
        let port = TunPort::new(q, pool.clone(), PortId(9))?;
        ctx.registry.register(&port, Token(0), Interest::READABLE)?;
        Ok(Responder {
            port,
            pool,
            replies: r.clone(),
        })
    })
    .unwrap();
    // An ICMP "ping socket": the kernel builds the requests and verifies the replies'
    // checksums before handing them over, so it is the judge of what the worker sent.
    ns.exec(&[
        "sh",
        "-c",
        "echo 0 2147483647 > /proc/sys/net/ipv4/ping_group_range",
    ])
    .unwrap();
    let script = "import socket, struct\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)\n\
        s.settimeout(3)\n\
        ok = 0\n\
        for i in range(3):\n\
        \x20   s.sendto(struct.pack('!BBHHH', 8, 0, 0, 0, i) + b'gatekit-ping', ('10.79.0.2', 0))\n\
        \x20   d, a = s.recvfrom(1500)\n\
        \x20   ok += d[0] == 0 and d[8:] == b'gatekit-ping' and a[0] == '10.79.0.2'\n\
        print('%d received' % ok)\n";
    let out = ns.exec(&["python3", "-c", script]);
    lp.stop().unwrap();
    let out = out.unwrap();
    assert!(out.contains("3 received"), "{out}");
    assert!(replies.load(Ordering::SeqCst) >= 3);
}

/// Forwards everything between two TUN queues, batch by batch.
struct Relay {
    a: TunPort,
    b: TunPort,
}

impl Worker for Relay {
    fn on_event(&mut self, ev: Event, now: Instant) {
        let (from, to) = if ev.token == Token(0) {
            (&mut self.a, &mut self.b)
        } else {
            (&mut self.b, &mut self.a)
        };
        let mut batch: Batch<PoolBuf> = Batch::new(64);
        if from.recv(&mut batch, now).is_ok() {
            let _ = to.send(&mut batch, now);
        }
    }
}

/// Runs iperf3 (one TCP stream, `bytes` bytes) from namespace `a` (10.N.1.1 on tun A) to `b`
/// (10.N.2.1 on tun B) through a relay of the two TUN devices; returns Gbit/s and the two
/// ports' stats.
fn relay_iperf(net: u8, offload: bool, bytes: &str) -> (f64, f64, PortStats, PortStats) {
    let u = uniq();
    let a = NetNs::create(&format!("gra{u}")).unwrap();
    let b = NetNs::create(&format!("grb{u}")).unwrap();
    let open = |ns: &NetNs, name: String, addr: String, peer_net: String| {
        in_ns(ns.name(), move || {
            let t = Tun::create(
                &TunConfig::tun(&name)
                    .offload(offload)
                    .mtu(1500)
                    .address(addr.parse().unwrap(), 24),
            )
            .unwrap();
            gatekit_io::netcfg::ip(&["route", "add", &peer_net, "dev", &name]).unwrap();
            t
        })
        .join()
        .unwrap()
    };
    let ta = open(
        &a,
        format!("gta{u}"),
        format!("10.{net}.1.1"),
        format!("10.{net}.2.0/24"),
    );
    let tb = open(
        &b,
        format!("gtb{u}"),
        format!("10.{net}.2.1"),
        format!("10.{net}.1.0/24"),
    );
    let qa = Mutex::new(Some(ta.into_queues().pop().unwrap()));
    let qb = Mutex::new(Some(tb.into_queues().pop().unwrap()));
    let stats = Arc::new(Mutex::new((PortStats::default(), PortStats::default())));
    let st = stats.clone();
    struct Reporting(Relay, Arc<Mutex<(PortStats, PortStats)>>);
    impl Worker for Reporting {
        fn on_event(&mut self, ev: Event, now: Instant) {
            self.0.on_event(ev, now);
        }
        fn on_stop(&mut self, _: Instant) {
            *self.1.lock().unwrap() = (self.0.a.stats().clone(), self.0.b.stats().clone());
        }
    }
    let cfg = EventLoopConfig {
        workers: 1,
        ..EventLoopConfig::default()
    };
    let lp = EventLoop::spawn(&cfg, move |ctx| {
        let pool = Pool::new(4096, 2048, 128);
        let a = TunPort::new(qa.lock().unwrap().take().unwrap(), pool.clone(), PortId(0))?;
        let b = TunPort::new(qb.lock().unwrap().take().unwrap(), pool, PortId(1))?;
        ctx.registry.register(&a, Token(0), Interest::READABLE)?;
        ctx.registry.register(&b, Token(1), Interest::READABLE)?;
        Ok(Reporting(Relay { a, b }, st.clone()))
    })
    .unwrap();
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            b.name(),
            "iperf3",
            "-s",
            "-1",
            "-B",
            &format!("10.{net}.2.1"),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut server = server;
    // The server may take a moment to listen on a loaded machine: retry the connect.
    let cpu_before = process_cpu_secs();
    let mut out = a.exec(&["true"]);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        out = a.exec(&["iperf3", "-c", &format!("10.{net}.2.1"), "-n", bytes, "-J"]);
        if out.is_ok() {
            break;
        }
    }
    if out.is_err() {
        let _ = server.kill();
    }
    let _ = server.wait();
    lp.stop().unwrap();
    let out = out.unwrap();
    let bps = out
        .split("\"sum_received\"")
        .nth(1)
        .and_then(|s| s.split("\"bits_per_second\":").nth(1))
        .and_then(|s| s.split([',', '\n', '}']).next())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no throughput in iperf3 output: {out}"));
    let (sa, sb) = stats.lock().unwrap().clone();
    // The relay worker is the only busy thread of this process during the transfer.
    let received_bits = out
        .split("\"sum_received\"")
        .nth(1)
        .and_then(|s| s.split("\"bytes\":").nth(1))
        .and_then(|s| s.split([',', '\n', '}']).next())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        * 8.0;
    let cpu = (process_cpu_secs() - cpu_before) / (received_bits / bps).max(1e-9);
    (bps / 1e9, cpu, sa, sb)
}

/// A TCP transfer relayed between two TUN devices: with offloads, the kernel's TSO
/// super-packets are cut into segments on one side and coalesced back on the other, and
/// the transfer (whose bytes TCP checks end to end) completes.
#[test]
fn tcp_through_tun_relay_with_offloads() {
    if !can_run(&["ip", "iperf3"]) {
        return;
    }
    let (gbps, cpu, a, b) = relay_iperf(81, true, "64M");
    eprintln!(
        "tun relay with offloads: {gbps:.2} Gbit/s, relay CPU {:.0}% of a core\n a: {a:?}\n b: {b:?}",
        cpu * 100.0
    );
    assert!(a.rx_coalesced > 0, "super-packets were cut: {a:?}");
    assert!(b.tx_coalesced > 0, "segments were coalesced: {b:?}");
    assert_eq!(a.drops.total() + b.drops.total(), 0);
    let (gbps_plain, cpu_plain, _, _) = relay_iperf(82, false, "64M");
    eprintln!(
        "tun relay without offloads: {gbps_plain:.2} Gbit/s, relay CPU {:.0}% of a core (offloads x{:.1})",
        cpu_plain * 100.0,
        gbps / gbps_plain
    );
}

const TAP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Answers ARP and ICMP echo for one address on a TAP queue, in Ethernet frames.
struct TapResponder {
    port: TunPort,
    ip: [u8; 4],
}

impl Worker for TapResponder {
    fn on_event(&mut self, _: Event, now: Instant) {
        let mut batch: Batch<PoolBuf> = Batch::new(32);
        if self.port.recv(&mut batch, now).is_err() {
            return;
        }
        let mut out: Batch<PoolBuf> = Batch::new(32);
        for (mut b, m, _) in batch.drain() {
            let f = b.data_mut();
            if f.len() < 42 {
                continue;
            }
            let peer_mac: [u8; 6] = f[6..12].try_into().unwrap();
            let answer = match u16::from_be_bytes([f[12], f[13]]) {
                // ARP request for our address (RFC 826): turn it into the reply.
                0x0806 if f[20..22] == [0, 1] && f[38..42] == self.ip => {
                    let (sha, spa): ([u8; 6], [u8; 4]) =
                        (f[22..28].try_into().unwrap(), f[28..32].try_into().unwrap());
                    f[21] = 2;
                    f[32..38].copy_from_slice(&sha);
                    f[38..42].copy_from_slice(&spa);
                    f[22..28].copy_from_slice(&TAP_MAC);
                    f[28..32].copy_from_slice(&self.ip);
                    true
                }
                0x0800 if f[14] == 0x45 && f[23] == 1 && f[34] == 8 && f[30..34] == self.ip => {
                    let (src, dst): ([u8; 4], [u8; 4]) =
                        (f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap());
                    f[26..30].copy_from_slice(&dst);
                    f[30..34].copy_from_slice(&src);
                    let old = u16::from_be_bytes([f[34], f[35]]);
                    f[34] = 0;
                    let new = u16::from_be_bytes([f[34], f[35]]);
                    let c = checksum::update16(u16::from_be_bytes([f[36], f[37]]), old, new);
                    f[36..38].copy_from_slice(&c.to_be_bytes());
                    true
                }
                _ => false,
            };
            if answer {
                f[0..6].copy_from_slice(&peer_mac);
                f[6..12].copy_from_slice(&TAP_MAC);
                let _ = out.push(b, m);
            }
        }
        let _ = self.port.send(&mut out, now);
    }
}

/// A TAP device (Ethernet, virtio-net header on) in a namespace: the kernel resolves the
/// responder's address with ARP and gets ICMP echo replies, judged by a ping socket.
#[test]
fn tap_arp_and_echo() {
    if !can_run(&["ip", "python3"]) {
        return;
    }
    let u = uniq();
    let ns = NetNs::create(&format!("gkp{u}")).unwrap();
    let name = format!("gkp{u}");
    let tap = {
        let name = name.clone();
        in_ns(ns.name(), move || {
            Tun::create(&TunConfig::tap(&name).address("10.83.0.1".parse().unwrap(), 24)).unwrap()
        })
        .join()
        .unwrap()
    };
    assert_eq!(tap.kind(), gatekit_io::TunKind::Tap);
    let q = Mutex::new(tap.into_queues().pop());
    let cfg = EventLoopConfig {
        workers: 1,
        ..EventLoopConfig::default()
    };
    let lp = EventLoop::spawn(&cfg, move |ctx| {
        let pool = Pool::new(256, 2048, 128);
        let port = TunPort::new(q.lock().unwrap().take().unwrap(), pool, PortId(5))?;
        ctx.registry.register(&port, Token(0), Interest::READABLE)?;
        Ok(TapResponder {
            port,
            ip: [10, 83, 0, 2],
        })
    })
    .unwrap();
    ns.exec(&[
        "sh",
        "-c",
        "echo 0 2147483647 > /proc/sys/net/ipv4/ping_group_range",
    ])
    .unwrap();
    let script = "import socket, struct\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)\n\
        s.settimeout(3)\n\
        ok = 0\n\
        for i in range(3):\n\
        \x20   s.sendto(struct.pack('!BBHHH', 8, 0, 0, 0, i) + b'gatekit-tap', ('10.83.0.2', 0))\n\
        \x20   d, a = s.recvfrom(1500)\n\
        \x20   ok += d[0] == 0 and d[8:] == b'gatekit-tap'\n\
        print('%d received' % ok)\n";
    let out = ns.exec(&["python3", "-c", script]);
    let neigh = ns.ip(&["neigh", "show", "10.83.0.2"]);
    lp.stop().unwrap();
    assert!(out.unwrap().contains("3 received"));
    assert!(
        neigh.unwrap().contains("02:00:00:00:00:02"),
        "ARP learned our MAC"
    );
}

/// CPU time (user + system) this process has used, in seconds, from /proc/self/stat.
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}
