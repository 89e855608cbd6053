//! Three sites in a full mesh of GRE/TEB tunnels, in memory: each site is a `Switch` with two
//! host ports, and a `GreEndpoint` whose outer packets cross testkit wires. Shows learning
//! across sites, forwarding without flooding once learned, aging, and that a broadcast storm
//! delivers every frame exactly once and then stops — and that without split horizon the same
//! mesh loops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use core::net::IpAddr;
use core::time::Duration;
use gatekit_gre::{Decap, Encap, GreEndpoint, GreMode, GreTunnelConfig, TunnelId};
use gatekit_packet::{Instant, PacketBuf, PktBuf, PortId};
use gatekit_switch::{
    DomainConfig, Egress, HorizonGroup, MacAddr, PortConfig, PortKind, Switch, Verdict, retag,
};
use gatekit_testkit::{WirePort, wire};
use std::collections::HashMap;

const SITES: usize = 3;
const HOSTS: usize = 2;

fn addr(site: usize) -> IpAddr {
    IpAddr::from([192, 0, 2, site as u8 + 1])
}

fn host_mac(site: usize, host: usize) -> MacAddr {
    MacAddr([2, 0, 0, 0, site as u8, host as u8])
}

fn tunnel_port(peer: usize) -> PortId {
    PortId(10 + peer as u16)
}

struct Site {
    sw: Switch,
    gre: GreEndpoint,
    /// Our end of each host's cable, by host port.
    hosts: Vec<WirePort>,
    /// The test's end (the host itself).
    host_ends: Vec<WirePort>,
    /// Underlay cable to each peer site, and the tunnel to it.
    underlay: HashMap<usize, (WirePort, TunnelId)>,
    out: Egress,
}

struct Mesh {
    sites: Vec<Site>,
    now: Instant,
}

impl Mesh {
    fn new(split_horizon: bool) -> Mesh {
        let mut sites: Vec<Site> = (0..SITES)
            .map(|_| {
                let mut sw = Switch::new();
                sw.add_domain(DomainConfig::new(10)).unwrap();
                let (mut hosts, mut host_ends) = (Vec::new(), Vec::new());
                for h in 0..HOSTS {
                    sw.set_port(PortId(h as u16), PortConfig::access(10))
                        .unwrap();
                    let (a, b) = wire(1600, 64);
                    hosts.push(a);
                    host_ends.push(b);
                }
                Site {
                    sw,
                    gre: GreEndpoint::new(),
                    hosts,
                    host_ends,
                    underlay: HashMap::new(),
                    out: Egress::with_capacity(8),
                }
            })
            .collect();
        for a in 0..SITES {
            for b in a + 1..SITES {
                let (wa, wb) = wire(1600, 64);
                for (me, peer, w) in [(a, b, wa), (b, a, wb)] {
                    let cfg = GreTunnelConfig {
                        mode: GreMode::Ethernet,
                        key: Some(100),
                        sequence: true,
                        check_sequence: true,
                        ..GreTunnelConfig::new(addr(me), addr(peer))
                    };
                    let s = &mut sites[me];
                    let id = s.gre.add_tunnel(cfg).unwrap();
                    let group = if split_horizon {
                        Some(HorizonGroup(1))
                    } else {
                        None
                    };
                    s.sw.set_port(
                        tunnel_port(peer),
                        PortConfig {
                            horizon: group,
                            ..PortConfig::tunnel(PortKind::GreTeb, 10, HorizonGroup(1))
                        },
                    )
                    .unwrap();
                    s.underlay.insert(peer, (w, id));
                }
            }
        }
        Mesh {
            sites,
            now: Instant::from_secs(1),
        }
    }

    /// Host `h` of `site` sends a frame.
    fn send(&mut self, site: usize, h: usize, frame: &[u8]) {
        self.sites[site].host_ends[h].send_bytes(frame);
    }

    /// Moves every queued packet one hop; returns how many packets moved.
    fn step(&mut self) -> usize {
        let mut moved = 0;
        for s in 0..SITES {
            let site = &mut self.sites[s];
            // From hosts.
            let mut inbound: Vec<(PortId, PktBuf)> = Vec::new();
            for (h, port) in site.hosts.iter_mut().enumerate() {
                for f in port.recv_all_bytes() {
                    inbound.push((PortId(h as u16), PktBuf::from_slice(&f, 64, 0)));
                }
            }
            // From peers, decapsulated.
            let peers: Vec<usize> = site.underlay.keys().copied().collect();
            for peer in peers {
                let pkts = site.underlay.get_mut(&peer).unwrap().0.recv_all_bytes();
                for p in pkts {
                    let mut buf = PktBuf::from_slice(&p, 64, 0);
                    match site.gre.decap(&mut buf) {
                        Decap::Packet { tunnel, .. } => {
                            assert_eq!(tunnel, site.underlay[&peer].1);
                            inbound.push((tunnel_port(peer), buf));
                        }
                        other => panic!("site {s}: unexpected {other:?}"),
                    }
                }
            }
            moved += inbound.len();
            for (ingress, mut buf) in inbound {
                let v = site
                    .sw
                    .forward(ingress, buf.data_mut(), self.now, &mut site.out);
                if !matches!(v, Verdict::Forward | Verdict::Flood) {
                    continue;
                }
                for e in site.out.ports().to_vec() {
                    let mut copy = PktBuf::from_slice(buf.data(), 64, 0);
                    retag(&mut copy, e.tag).unwrap();
                    if e.port.0 < 10 {
                        site.hosts[usize::from(e.port.0)].send_bytes(copy.data());
                    } else {
                        let peer = usize::from(e.port.0 - 10);
                        let (w, id) = site.underlay.get_mut(&peer).unwrap();
                        assert_eq!(site.gre.encap(*id, &mut copy), Encap::Ready);
                        w.send_bytes(copy.data());
                    }
                }
            }
        }
        moved
    }

    /// Steps until nothing moves; returns the number of steps, or None if still busy after
    /// `limit` steps (a loop).
    fn settle(&mut self, limit: usize) -> Option<usize> {
        (1..=limit).find(|_| self.step() == 0)
    }

    fn received(&mut self, site: usize, h: usize) -> Vec<Vec<u8>> {
        self.sites[site].host_ends[h].recv_all_bytes()
    }

    fn age(&mut self, d: Duration) {
        self.now += d;
        for s in &mut self.sites {
            if s.sw.poll_timeout().is_some_and(|t| t <= self.now) {
                s.sw.handle_timeout(self.now);
            }
        }
    }
}

fn frame(dst: MacAddr, src: MacAddr, seq: u32) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(60, 0);
    f
}

#[test]
fn broadcast_storm_no_loop_no_duplicate() {
    let mut mesh = Mesh::new(true);
    const N: u32 = 200;
    for seq in 0..N {
        for s in 0..SITES {
            for h in 0..HOSTS {
                mesh.send(s, h, &frame(MacAddr::BROADCAST, host_mac(s, h), seq));
            }
        }
    }
    let steps = mesh.settle(10).expect("the storm must die out");
    assert!(
        steps <= 4,
        "host -> site -> peer site -> host, then quiet: {steps}"
    );
    for s in 0..SITES {
        for h in 0..HOSTS {
            let got = mesh.received(s, h);
            let mut seen = std::collections::HashSet::new();
            for f in &got {
                assert!(seen.insert(f.clone()), "site {s} host {h}: duplicate frame");
                assert_ne!(&f[6..12], &host_mac(s, h).0, "own frame came back");
            }
            let others = (SITES * HOSTS - 1) as u32;
            assert_eq!(got.len() as u32, others * N, "site {s} host {h}");
        }
    }
    // Every site learned every host, remote ones behind the tunnel to their site.
    for s in 0..SITES {
        for t in 0..SITES {
            for h in 0..HOSTS {
                let want = if s == t {
                    PortId(h as u16)
                } else {
                    tunnel_port(t)
                };
                let e = mesh.sites[s].sw.lookup(10, host_mac(t, h)).unwrap();
                assert_eq!(e.port, want, "site {s} learned site {t} host {h}");
            }
        }
        assert_eq!(mesh.sites[s].sw.domain_stats(10).unwrap().mac_moves, 0);
    }
}

#[test]
fn unicast_after_learning_then_aging() {
    let mut mesh = Mesh::new(true);
    // Site 0 host 0 announces itself; everyone learns it.
    mesh.send(0, 0, &frame(MacAddr::BROADCAST, host_mac(0, 0), 0));
    mesh.settle(10).unwrap();
    for s in 0..SITES {
        for h in 0..HOSTS {
            mesh.received(s, h);
        }
    }
    // Site 2 host 1 answers by unicast: only site 0 host 0 receives it, nothing else moves.
    let reply = frame(host_mac(0, 0), host_mac(2, 1), 1);
    mesh.send(2, 1, &reply);
    mesh.settle(10).unwrap();
    assert_eq!(mesh.received(0, 0), vec![reply.clone()]);
    for (s, h) in [(0, 1), (1, 0), (1, 1), (2, 0)] {
        assert!(
            mesh.received(s, h).is_empty(),
            "site {s} host {h} got a copy"
        );
    }
    let from_2 = mesh.sites[1].underlay[&2].1;
    assert_eq!(
        mesh.sites[1].gre.stats(from_2).unwrap().rx_packets,
        0,
        "the unicast never crossed to site 1"
    );
    // After 400 s of silence (300 s aging), the entries are gone and unicast floods again.
    for _ in 0..40 {
        mesh.age(Duration::from_secs(10));
    }
    for s in 0..SITES {
        assert_eq!(
            mesh.sites[s].sw.lookup(10, host_mac(0, 0)),
            None,
            "site {s}"
        );
    }
    mesh.send(2, 1, &reply);
    mesh.settle(10).unwrap();
    assert_eq!(mesh.received(0, 0), vec![reply.clone()]);
    assert_eq!(
        mesh.received(1, 0),
        vec![reply],
        "flooded again once forgotten"
    );
}

/// The control: the same mesh without split horizon loops on a single broadcast (so the
/// storm test above would catch a fabric that ignored horizon groups).
#[test]
fn without_split_horizon_the_mesh_loops() {
    let mut mesh = Mesh::new(false);
    mesh.send(0, 0, &frame(MacAddr::BROADCAST, host_mac(0, 0), 0));
    assert_eq!(mesh.settle(50), None, "a looping broadcast never settles");
}
