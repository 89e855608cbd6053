//! UDP throughput over veth between two network namespaces: batched ports
//! (`recvmmsg`/`sendmmsg`, then with UDP GSO/GRO on top) against the baseline of one system
//! call per datagram, all measured in the same run.
//!
//! Each iteration moves a chunk of 1400-byte datagrams (an ESP-in-UDP packet's size under a
//! 1500 MTU) from a sender thread in one namespace to an event-loop worker in the other (it
//! sleeps in epoll while there is nothing to read, so the two sides do not fight over the
//! cores); the receive buffer holds a whole chunk, so nothing is lost and a chunk's time is
//! from the first send to the last datagram counted. Needs root and `ip`; without them it
//! prints why and measures nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatekit::io::netcfg::{NetNs, enter_netns, ip};
use gatekit::io::{Event, EventLoop, EventLoopConfig, Interest, Token, UdpConfig, UdpPort, Worker};
use gatekit::packet::{Batch, Instant as PktInstant, Meta, PacketBuf, Pool, PoolBuf, Port, PortId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 1400;
const CHUNK: u64 = 20_000;

struct Link {
    go_send: mpsc::Sender<u64>,
    received: Arc<AtomicU64>,
    _receiver: EventLoop,
}

fn usable() -> Result<(), String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        return Err("needs root".into());
    }
    ip(&["-V"]).map(drop).map_err(|e| e.to_string())
}

/// The receiving side: an event-loop worker that sleeps in epoll until datagrams arrive and
/// then drains the socket, counting.
struct Sink {
    port: UdpPort,
    batch: Batch<PoolBuf>,
    received: Arc<AtomicU64>,
}

impl Worker for Sink {
    fn on_event(&mut self, _: Event, now: PktInstant) {
        loop {
            let n = self.port.recv(&mut self.batch, now).unwrap_or(0);
            self.batch.clear();
            if n == 0 {
                break;
            }
            self.received.fetch_add(n as u64, Ordering::Release);
        }
    }
}

/// Starts a sender thread in `a` and a receiver worker in `b` using `cfg`; the sender sends
/// a chunk on command, as fast as the socket takes it.
fn start(a: &str, b: &str, a_ip: &str, b_ip: &str, port: u16, cfg: UdpConfig) -> Link {
    let src: SocketAddr = format!("{a_ip}:{port}").parse().unwrap();
    let dst: SocketAddr = format!("{b_ip}:{port}").parse().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let (go_send, send_rx) = mpsc::channel::<u64>();
    let receiver = {
        let (b, cfg, received) = (b.to_string(), cfg.clone(), received.clone());
        let lcfg = EventLoopConfig {
            workers: 1,
            ..EventLoopConfig::default()
        };
        EventLoop::spawn(&lcfg, move |ctx| {
            enter_netns(&b)?;
            let pool = Pool::new(4096, 2048, 128);
            let port: UdpPort = UdpPort::bind(dst, &cfg, pool, PortId(1))?;
            ctx.registry.register(&port, Token(0), Interest::READABLE)?;
            Ok(Sink {
                port,
                batch: Batch::new(64),
                received: received.clone(),
            })
        })
        .unwrap()
    };
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let a = a.to_string();
    std::thread::spawn(move || {
        enter_netns(&a).unwrap();
        let pool = Pool::new(4096, 2048, 128);
        let mut port: UdpPort = UdpPort::bind(src, &cfg, pool.clone(), PortId(0)).unwrap();
        let mut packet = Vec::new();
        let (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
            panic!()
        };
        etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            .udp(src.port(), dst.port())
            .write(&mut packet, &[0x5a; PAYLOAD])
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut batch: Batch<PoolBuf> = Batch::new(64);
        while let Ok(n) = send_rx.recv() {
            let mut sent = 0u64;
            while sent < n {
                while (batch.len() as u64) < (n - sent).min(64) {
                    let mut b = pool.get().unwrap();
                    b.push_back(packet.len()).unwrap().copy_from_slice(&packet);
                    batch.push(b, Meta::default()).unwrap();
                }
                let k = port.send(&mut batch, PktInstant::ZERO).unwrap();
                if k == 0 {
                    std::thread::yield_now();
                }
                sent += k as u64;
            }
        }
    });
    ready_rx.recv().unwrap();
    Link {
        go_send,
        received,
        _receiver: receiver,
    }
}

/// Sends a chunk and waits for the receiver to count it; returns the time and any loss.
fn run_chunk(link: &Link) -> (Duration, u64) {
    let base = link.received.load(Ordering::Acquire);
    let start = Instant::now();
    link.go_send.send(CHUNK).unwrap();
    let mut last = base;
    let mut last_change = Instant::now();
    loop {
        let now = link.received.load(Ordering::Acquire);
        if now >= base + CHUNK {
            return (start.elapsed(), 0);
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(2) {
            let lost = base + CHUNK - now;
            // Count the lost ones as arrived, so the next chunk starts from a clean base.
            link.received.fetch_add(lost, Ordering::AcqRel);
            return (start.elapsed() - Duration::from_secs(2), lost);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn udp_veth(c: &mut Criterion) {
    if let Err(why) = usable() {
        eprintln!("io bench skipped: {why}");
        return;
    }
    let id = std::process::id() % 100_000;
    let a = NetNs::create(&format!("gkbench-a{id}")).unwrap();
    let b = NetNs::create(&format!("gkbench-b{id}")).unwrap();
    let (va, vb) = (format!("gkba{id}"), format!("gkbb{id}"));
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
    a.ip(&["addr", "add", "10.97.0.1/24", "dev", &va]).unwrap();
    b.ip(&["addr", "add", "10.97.0.2/24", "dev", &vb]).unwrap();
    a.ip(&["link", "set", &va, "up"]).unwrap();
    b.ip(&["link", "set", &vb, "up"]).unwrap();

    // Socket buffers that hold a whole chunk, so that no mode loses datagrams to them.
    let big = Some(64 << 20);
    let modes = [
        (
            "one_syscall_per_datagram",
            UdpConfig {
                buffer_bytes: big,
                ..UdpConfig::unbatched()
            },
        ),
        (
            "mmsg_batch64",
            UdpConfig {
                gso: false,
                gro: false,
                buffer_bytes: big,
                ..UdpConfig::default()
            },
        ),
        (
            "mmsg_batch64_gso_gro",
            UdpConfig {
                buffer_bytes: big,
                ..UdpConfig::default()
            },
        ),
    ];
    let mut g = c.benchmark_group("io_udp_veth");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Bytes(CHUNK * PAYLOAD as u64));
    for (i, (name, cfg)) in modes.into_iter().enumerate() {
        let link = start(
            a.name(),
            b.name(),
            "10.97.0.1",
            "10.97.0.2",
            6000 + i as u16,
            cfg,
        );
        let mut lost = 0;
        g.bench_function(format!("{name}/{PAYLOAD}"), |bch| {
            bch.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (t, l) = run_chunk(&link);
                    total += t;
                    lost += l;
                }
                total
            })
        });
        if lost > 0 {
            eprintln!("{name}: {lost} datagrams lost (rates above are then optimistic)");
        }
    }
    g.finish();
}

criterion_group!(benches, udp_veth);
criterion_main!(benches);
