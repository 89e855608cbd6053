//! The assembled data path forwards by the RIB: connected, static, overlay, tunnel-learned and
//! mesh routes, best path by distance then metric, ECMP by flow, fallback when the selected
//! route is disabled, withdrawn or its next hop goes down; and the redistribution policy
//! decides what the gateway advertises and which mesh routes it takes in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatekit_gateway::config::Config;
use gatekit_gateway::pipeline::{Egress, Gateway, Ingress, NextHop, Sink};
use gatekit_gateway::routing::Advertisement;
use gatekit_packet::{DropReason, Instant, Meta, PacketBuf, PktBuf, PortId};
use gatekit_route::{IpNet, Source};
use std::net::{IpAddr, Ipv4Addr};

const CFG: &str = r#"
[gateway]
name = "r1"

[underlay]
address = "192.0.2.1"

[[interface]]
name = "lan0"
kind = "tun"
address = "10.1.0.1/24"

[[interface]]
name = "lan1"
kind = "tun"
address = "10.3.0.1/24"
advertise = false

[[interface]]
name = "ovl0"
kind = "tun"
address = "169.254.100.1/30"
advertise = false

[overlay]
prefixes = ["10.100.0.0/16"]
interface = "ovl0"

# 10.2.0.0/24: a static route over GRE beats the tunnel-learned one over IPsec.
[[route]]
prefix = "10.2.0.0/24"
via = "gre:g1"

# 10.7.0.0/16: a floating static route (distance 200) behind the mesh route (100) over g1.
[[route]]
prefix = "10.7.0.0/16"
via = "interface:lan1"
distance = 200

# 10.8.0.0/16: two equal-cost paths.
[[route]]
prefix = "10.8.0.0/16"
via = "gre:g1"
metric = 5

[[route]]
prefix = "10.8.0.0/16"
via = "gre:g2"
metric = 5

# 10.8.0.0/16 through lan1 too, but with a worse metric: not part of the ECMP group.
[[route]]
prefix = "10.8.0.0/16"
via = "interface:lan1"
metric = 6

# Advertised static routes: one the prefix list lets through, one it stops.
[[route]]
prefix = "10.1.64.0/24"
via = "interface:lan0"
advertise = true

[[route]]
prefix = "10.1.128.0/24"
via = "interface:lan0"
advertise = true

[[ipsec.peer]]
name = "site-b"
remote = "198.51.100.2"
encap = "native"

[[ipsec.peer.tunnel]]
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.2.0.0/24"]
spi_out = 0x2001
spi_in = 0x1001
key_out = "0102030405060708090a0b0c0d0e0f10 11121314"
key_in = "1102030405060708090a0b0c0d0e0f10 21222324"

[[gre]]
name = "g1"
remote = "198.51.100.1"
mode = "ip"
mesh_prefixes = ["10.7.0.0/16"]

[[gre]]
name = "g2"
remote = "198.51.100.9"
mode = "ip"

[advertise]
tag = 65001
metric = 10
prefix_list = """
deny 10.1.128.0/17 le 32
permit 0.0.0.0/0 le 32
"""
"#;

struct Out(Vec<(Egress, PktBuf)>);

impl Sink<PktBuf> for Out {
    fn emit(&mut self, to: Egress, buf: PktBuf, _meta: Meta) {
        self.0.push((to, buf));
    }
    fn alloc(&mut self) -> Option<PktBuf> {
        Some(PktBuf::new(2048, 192))
    }
}

fn gateway() -> Gateway {
    let cfg = Config::parse("r1.toml", CFG).unwrap_or_else(|e| panic!("{e}"));
    Gateway::new(cfg, Instant::ZERO).unwrap_or_else(|e| panic!("{e}"))
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Where the data path sends a UDP packet from lan0 (10.1.0.5:`sport`) to `dst`: the
/// interface, or for the underlay the outer protocol and destination.
#[derive(Debug, PartialEq, Eq)]
enum Went {
    Iface(usize),
    Underlay(u8, Ipv4Addr),
    Nowhere,
}

fn send(gw: &mut Gateway, dst: &str, sport: u16) -> Went {
    send_from(gw, "10.1.0.5", dst, sport, 17)
}

fn send_from(gw: &mut Gateway, src: &str, dst: &str, sport: u16, proto: u8) -> Went {
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut bytes = Vec::new();
    let b = etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
    if proto == 1 {
        b.icmpv4_echo_request(7, 1)
            .write(&mut bytes, b"ping")
            .unwrap();
    } else {
        b.udp(sport, 53).write(&mut bytes, b"query").unwrap();
    }
    let mut out = Out(Vec::new());
    let now = Instant::from_secs(1);
    let buf = PktBuf::from_slice(&bytes, 192, 256);
    gw.process(
        Ingress::Iface(0),
        buf,
        Meta::new(PortId(0), now),
        now,
        &mut out,
    );
    match out.0.first() {
        None => Went::Nowhere,
        Some((Egress::Iface(i), _)) => Went::Iface(*i),
        Some((Egress::Underlay, b)) => {
            let d = b.data();
            Went::Underlay(d[9], Ipv4Addr::new(d[16], d[17], d[18], d[19]))
        }
    }
}

const GRE: u8 = 47;
const ESP: u8 = 50;
fn g1() -> Went {
    Went::Underlay(GRE, Ipv4Addr::new(198, 51, 100, 1))
}
fn g2() -> Went {
    Went::Underlay(GRE, Ipv4Addr::new(198, 51, 100, 9))
}

#[test]
fn each_source_routes_by_distance() {
    let mut gw = gateway();
    assert_eq!(send(&mut gw, "10.3.0.7", 1000), Went::Iface(1), "connected");
    assert_eq!(send(&mut gw, "10.2.0.7", 1000), g1(), "static beats tunnel");
    assert_eq!(send(&mut gw, "10.100.5.5", 1000), Went::Iface(2), "overlay");
    assert_eq!(send(&mut gw, "10.7.1.1", 1000), g1(), "mesh beats floating");
    assert_eq!(send(&mut gw, "172.16.0.1", 1000), Went::Nowhere, "no route");
    // The gateway's overlay address (first host of the prefix) is its own: it answers.
    assert_eq!(
        send_from(&mut gw, "10.1.0.5", "10.100.0.1", 0, 1),
        Went::Iface(0),
        "echo reply back to lan0"
    );

    // What status shows: every candidate, the selected ones marked, sources and distances.
    let s = gw.snapshot(Instant::from_secs(1));
    let rows: Vec<(&str, &str, &str, u32, bool)> = s
        .routes
        .iter()
        .filter(|r| r.prefix == "10.2.0.0/24" || r.prefix == "10.7.0.0/16")
        .map(|r| {
            (
                r.prefix.as_str(),
                r.via.as_str(),
                r.source.as_str(),
                r.distance,
                r.selected,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("10.2.0.0/24", "gre:g1", "static", 1, true),
            ("10.2.0.0/24", "ipsec:site-b", "tunnel", 10, false),
            ("10.7.0.0/16", "interface:lan1", "static", 200, false),
            ("10.7.0.0/16", "gre:g1", "mesh", 100, true),
        ]
    );
    assert!(
        s.routes
            .iter()
            .any(|r| r.prefix == "10.100.0.0/16" && r.source == "overlay" && r.selected)
    );
    assert!(
        s.routes
            .iter()
            .any(|r| r.prefix == "10.100.0.1/32" && r.via == "local" && r.selected)
    );
}

#[test]
fn disabled_withdrawn_or_down_falls_back_to_the_next_best() {
    let mut gw = gateway();
    let p = net("10.2.0.0/24");
    assert!(
        gw.routing_mut()
            .set_route_enabled(p, Source::Static, NextHop::Gre(0), false)
    );
    assert_eq!(
        send(&mut gw, "10.2.0.7", 1000),
        Went::Underlay(ESP, Ipv4Addr::new(198, 51, 100, 2)),
        "the tunnel-learned route over IPsec takes over"
    );
    let s = gw.snapshot(Instant::ZERO);
    let row = |source: &str| {
        let r = s
            .routes
            .iter()
            .find(|r| r.prefix == "10.2.0.0/24" && r.source == source)
            .unwrap();
        (r.selected, r.enabled)
    };
    assert_eq!(row("static"), (false, false), "shown disabled");
    assert_eq!(row("tunnel"), (true, true));
    assert!(
        gw.routing_mut()
            .set_route_enabled(p, Source::Static, NextHop::Gre(0), true)
    );
    assert_eq!(send(&mut gw, "10.2.0.7", 1000), g1(), "and gives way again");
    assert!(
        gw.routing_mut()
            .withdraw(p, Source::Static, NextHop::Gre(0))
    );
    assert_eq!(
        send(&mut gw, "10.2.0.7", 1000),
        Went::Underlay(ESP, Ipv4Addr::new(198, 51, 100, 2))
    );
    assert!(
        gw.routing_mut()
            .withdraw(p, Source::Tunnel, NextHop::Ipsec(0))
    );
    assert_eq!(send(&mut gw, "10.2.0.7", 1000), Went::Nowhere);

    // g1 down: the mesh route through it gives way to the floating static route.
    gw.routing_mut().set_up(NextHop::Gre(0), false);
    assert_eq!(send(&mut gw, "10.7.1.1", 1000), Went::Iface(1));
    // ... and the ECMP group of 10.8/16 shrinks to g2.
    for sport in 0..32 {
        assert_eq!(send(&mut gw, "10.8.0.1", 2000 + sport), g2());
    }
    gw.routing_mut().set_up(NextHop::Gre(1), false);
    assert_eq!(send(&mut gw, "10.8.0.1", 2000), Went::Iface(1), "metric 6");
    gw.routing_mut().set_up(NextHop::Gre(0), true);
    assert_eq!(send(&mut gw, "10.7.1.1", 1000), g1());
}

#[test]
fn equal_cost_paths_spread_flows_and_keep_each_on_one() {
    let mut gw = gateway();
    let (mut n1, mut n2) = (0, 0);
    for sport in 0..64 {
        let first = send(&mut gw, "10.8.3.3", 3000 + sport);
        assert_eq!(
            send(&mut gw, "10.8.3.3", 3000 + sport),
            first,
            "a flow keeps its path"
        );
        match first {
            w if w == g1() => n1 += 1,
            w if w == g2() => n2 += 1,
            w => panic!("{w:?}"),
        }
    }
    assert!(n1 > 8 && n2 > 8, "spread: {n1} / {n2}");
    let best = gw.routing().rib().best(&net("10.8.0.0/16")).len();
    assert_eq!(best, 2, "the worse metric is not in the group");
}

#[test]
fn advertises_the_marked_prefixes_through_the_policy() {
    let mut gw = gateway();
    let adv: Vec<(String, u32, u32)> = gw
        .routing()
        .advertisements()
        .iter()
        .map(|a| (a.prefix.to_string(), a.metric, a.tag))
        .collect();
    // lan0 (connected, advertised by default), the static 10.1.64.0/24 and the overlay;
    // not lan1 or ovl0 (advertise = false), not 10.1.128.0/24 (denied by the prefix list),
    // not the routes to other sites.
    assert_eq!(
        adv,
        [
            ("10.1.0.0/24".to_string(), 10, 65001),
            ("10.1.64.0/24".to_string(), 10, 65001),
            ("10.100.0.0/16".to_string(), 10, 65001),
        ]
    );
    let s = gw.snapshot(Instant::ZERO);
    assert_eq!(s.advertise_tag, 65001);
    let from: Vec<&str> = s.advertised.iter().map(|a| a.from.as_str()).collect();
    assert_eq!(from, ["connected", "static", "overlay"]);

    // The advertisement follows the RIB: with lan0 down, its prefixes have no route left.
    gw.routing_mut().set_up(NextHop::Iface(0), false);
    let adv: Vec<String> = gw
        .routing()
        .advertisements()
        .iter()
        .map(|a| a.prefix.to_string())
        .collect();
    assert_eq!(adv, ["10.100.0.0/16"]);
}

#[test]
fn imports_mesh_routes_without_loops_and_keeps_them_on_reload() {
    let mut gw = gateway();
    let offered = [
        Advertisement {
            prefix: net("10.20.0.0/16"),
            metric: 10,
            tag: 7,
        },
        // Our own advertisement, come back round the mesh: refused.
        Advertisement {
            prefix: net("10.1.0.0/24"),
            metric: 20,
            tag: 65001,
        },
    ];
    assert_eq!(gw.import_mesh("site-b", &offered).unwrap(), 1);
    // Routed into site-b, whose SAs' selectors do not cover it: the ESP endpoint drops it.
    assert_eq!(send(&mut gw, "10.20.1.1", 1000), Went::Nowhere);
    assert_eq!(gw.all_drops().get(gatekit_packet::DropReason::NoSa), 1);
    assert_eq!(
        gw.routing().lookup(IpAddr::from([10, 20, 1, 1]), 0),
        Some(NextHop::Ipsec(0))
    );
    let rib = gw.routing().rib();
    let r = rib.best(&net("10.20.0.0/16"))[0];
    assert_eq!(
        (r.source, r.distance, r.metric, r.tag),
        (Source::Mesh, 100, 10, 7)
    );
    assert_eq!(rib.best(&net("10.1.0.0/24"))[0].source, Source::Connected);
    // Mesh routes are not re-advertised (no transit by default).
    assert!(
        gw.routing()
            .advertisements()
            .iter()
            .all(|a| a.prefix != net("10.20.0.0/16"))
    );
    assert!(gw.import_mesh("nobody", &offered).is_err());

    // A reload keeps what was imported at run time.
    let cfg = gw.config().clone();
    gw.reconfigure(cfg, Instant::from_secs(2)).unwrap();
    assert_eq!(
        gw.routing().lookup(IpAddr::from([10, 20, 1, 1]), 0),
        Some(NextHop::Ipsec(0))
    );
    // A new import from the same peer replaces the old one.
    assert_eq!(gw.import_mesh("site-b", &[]).unwrap(), 0);
    assert_eq!(gw.routing().lookup(IpAddr::from([10, 20, 1, 1]), 0), None);
}

#[test]
fn two_gateways_learn_each_others_site() {
    let mut a = gateway();
    let b_cfg = CFG
        .replace("name = \"r1\"", "name = \"r2\"")
        .replace("10.1.0.1/24", "10.11.0.1/24")
        .replace("10.1.64.0/24", "10.11.64.0/24")
        .replace("10.1.128.0/", "10.11.128.0/")
        .replace("10.100.0.0/16", "10.101.0.0/16")
        .replace("tag = 65001", "tag = 65002")
        .replace(
            "local_ts = [\"10.1.0.0/16\"]",
            "local_ts = [\"10.11.0.0/16\"]",
        );
    let mut b = Gateway::new(
        Config::parse("r2.toml", &b_cfg).unwrap_or_else(|e| panic!("{e}")),
        Instant::ZERO,
    )
    .unwrap();
    let from_a = a.routing().advertisements();
    let from_b = b.routing().advertisements();
    assert_eq!(b.import_mesh("g2", &from_a).unwrap(), 3);
    assert_eq!(a.import_mesh("g2", &from_b).unwrap(), 3);
    assert_eq!(send(&mut a, "10.11.64.9", 1000), g2());
    assert_eq!(send(&mut a, "10.101.2.3", 1000), g2());
    // What b advertises back does not include what it learned from a.
    let back = b.routing().advertisements();
    assert!(back.iter().all(|x| x.tag == 65002), "{back:?}");
    assert_eq!(a.import_mesh("g2", &back).unwrap(), 3);
}

/// Two IPsec peers whose tunnels both take 10.50.0.0/16: the routes decide which peer seals
/// a packet, not the order of the SAs.
const TWO_PEERS: &str = r#"
[gateway]
name = "r2"

[underlay]
address = "192.0.2.1"

[[interface]]
name = "lan0"
kind = "tun"
address = "10.1.0.1/24"

# One /24 of the shared range pinned to site-c.
[[route]]
prefix = "10.50.9.0/24"
via = "ipsec:site-c"

# A route to site-b for a range none of its SAs takes.
[[route]]
prefix = "10.70.0.0/16"
via = "ipsec:site-b"

[[ipsec.peer]]
name = "site-b"
remote = "198.51.100.2"
encap = "native"

[[ipsec.peer.tunnel]]
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.50.0.0/16"]
spi_out = 0x2001
spi_in = 0x1001
key_out = "0102030405060708090a0b0c0d0e0f10 11121314"
key_in = "1102030405060708090a0b0c0d0e0f10 21222324"

[[ipsec.peer]]
name = "site-c"
remote = "198.51.100.3"
encap = "native"

[[ipsec.peer.tunnel]]
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.50.0.0/16"]
spi_out = 0x3001
spi_in = 0x1002
key_out = "2102030405060708090a0b0c0d0e0f10 31323334"
key_in = "3102030405060708090a0b0c0d0e0f10 41424344"
"#;

/// The outer destination and SPI of what the gateway sends for a UDP packet from lan0, if
/// it sent native ESP.
fn esp_out(gw: &mut Gateway, dst: &str, sport: u16) -> Option<(Ipv4Addr, u32)> {
    let dst: Ipv4Addr = dst.parse().unwrap();
    let mut bytes = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 1, 0, 5], dst.octets(), 64)
        .udp(sport, 53)
        .write(&mut bytes, b"query")
        .unwrap();
    let mut out = Out(Vec::new());
    let now = Instant::from_secs(1);
    gw.process(
        Ingress::Iface(0),
        PktBuf::from_slice(&bytes, 192, 256),
        Meta::new(PortId(0), now),
        now,
        &mut out,
    );
    let (to, b) = out.0.first()?;
    assert_eq!(*to, Egress::Underlay);
    let d = b.data();
    assert_eq!(d[9], ESP, "native ESP");
    Some((
        Ipv4Addr::new(d[16], d[17], d[18], d[19]),
        u32::from_be_bytes([d[20], d[21], d[22], d[23]]),
    ))
}

#[test]
fn routes_choose_the_ipsec_peer() {
    let cfg = Config::parse("r2.toml", TWO_PEERS).unwrap_or_else(|e| panic!("{e}"));
    let mut gw = Gateway::new(cfg, Instant::ZERO).unwrap_or_else(|e| panic!("{e}"));
    let site_b = (Ipv4Addr::new(198, 51, 100, 2), 0x2001);
    let site_c = (Ipv4Addr::new(198, 51, 100, 3), 0x3001);

    // Both peers' tunnels install 10.50.0.0/16 at the same distance: an ECMP group whose
    // flows spread over both peers, each flow staying with one, sealed by that peer's SA.
    let (mut nb, mut nc) = (0, 0);
    for sport in 0..64 {
        let first = esp_out(&mut gw, "10.50.1.1", 4000 + sport);
        assert_eq!(esp_out(&mut gw, "10.50.1.1", 4000 + sport), first);
        match first {
            Some(w) if w == site_b => nb += 1,
            Some(w) if w == site_c => nc += 1,
            w => panic!("{w:?}"),
        }
    }
    assert!(nb > 8 && nc > 8, "spread over both peers: {nb} / {nc}");

    // The static route pins a /24 of the shared range to site-c, though site-b's SA comes
    // first.
    for sport in 0..16 {
        assert_eq!(esp_out(&mut gw, "10.50.9.7", 5000 + sport), Some(site_c));
    }

    // A route to a peer none of whose SAs takes the flow: dropped and counted, not sealed
    // by another peer's SA.
    let before = gw.all_drops().get(DropReason::NoSa);
    assert_eq!(esp_out(&mut gw, "10.70.0.1", 6000), None);
    assert_eq!(gw.all_drops().get(DropReason::NoSa), before + 1);
}
