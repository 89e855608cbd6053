//! RIB selection, ECMP, enable/disable, and redistribution scenarios; and the RIB's published
//! forwarding table against a naive selection over the same routes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatekit_packet::{FlowKey, PortId};
use gatekit_route::{
    IpNet, NextHop, PrefixList, Redistribution, Redistributor, Rib, RibError, Route, Source,
};
use proptest::prelude::*;
use std::net::IpAddr;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn hop(port: u16, via: &str) -> NextHop {
    NextHop::via(PortId(port), ip(via))
}

#[test]
fn distance_then_metric_and_fallback_on_withdraw() {
    let mut rib = Rib::new();
    let reader = rib.reader();
    let mesh = hop(3, "100.64.0.3");
    let stat = hop(2, "192.0.2.2");
    let conn = NextHop::port(PortId(1));
    rib.add(Route::new(net("10.0.0.0/16"), Source::Mesh, mesh))
        .unwrap();
    rib.add(Route::new(net("10.0.0.0/16"), Source::Static, stat))
        .unwrap();
    rib.add(Route::new(net("10.0.0.0/16"), Source::Connected, conn))
        .unwrap();
    // Not visible before commit.
    assert_eq!(reader.load().lookup(ip("10.0.1.1"), 0), None);
    rib.commit();
    assert_eq!(reader.load().lookup(ip("10.0.1.1"), 0), Some(conn));
    assert_eq!(rib.best(&net("10.0.0.0/16"))[0].source, Source::Connected);

    rib.withdraw(&net("10.0.0.0/16"), Source::Connected, &conn)
        .unwrap();
    rib.commit();
    assert_eq!(reader.load().lookup(ip("10.0.1.1"), 0), Some(stat));
    // A static route with a worse distance than the mesh loses to it.
    rib.add(Route::new(net("10.0.0.0/16"), Source::Static, stat).distance(200))
        .unwrap();
    rib.commit();
    assert_eq!(reader.load().lookup(ip("10.0.1.1"), 0), Some(mesh));
    // Within one distance the lower metric wins.
    let mesh2 = hop(4, "100.64.0.4");
    rib.add(Route::new(net("10.0.0.0/16"), Source::Mesh, mesh2).metric(5))
        .unwrap();
    rib.add(Route::new(net("10.0.0.0/16"), Source::Mesh, mesh).metric(10))
        .unwrap();
    rib.commit();
    assert_eq!(reader.load().lookup(ip("10.0.1.1"), 0), Some(mesh2));
    assert_eq!(rib.withdraw_source(Source::Mesh), 2);
    assert_eq!(rib.withdraw_prefix(&net("10.0.0.0/16"), Source::Static), 1);
    rib.commit();
    assert_eq!(reader.load().lookup(ip("10.0.1.1"), 0), None);
    assert!(rib.is_empty());
}

#[test]
fn longest_prefix_wins_over_distance() {
    let mut rib = Rib::new();
    let a = NextHop::port(PortId(1));
    let b = hop(2, "2001:db8::2");
    rib.add(Route::new(net("2001:db8::/32"), Source::Connected, a))
        .unwrap();
    rib.add(Route::new(net("2001:db8:1::/48"), Source::Mesh, b))
        .unwrap();
    rib.add(Route::new(net("::/0"), Source::Static, b)).unwrap();
    rib.commit();
    let f = rib.reader().load();
    assert_eq!(f.lookup(ip("2001:db8:1::9"), 0), Some(b));
    assert_eq!(f.lookup(ip("2001:db8:2::9"), 0), Some(a));
    assert_eq!(f.lookup(ip("2001:db9::1"), 0), Some(b));
    let (p, best) = rib.lookup(ip("2001:db8:1::9")).unwrap();
    assert_eq!((p, best[0].source), (net("2001:db8:1::/48"), Source::Mesh));
}

#[test]
fn ecmp_group_and_flow_hash_selection() {
    let mut rib = Rib::new();
    let hops = [
        hop(1, "192.0.2.1"),
        hop(2, "192.0.2.2"),
        hop(3, "192.0.2.3"),
    ];
    for h in hops {
        rib.add(Route::new(net("0.0.0.0/0"), Source::Mesh, h).metric(10))
            .unwrap();
    }
    // A worse path is not part of the group.
    rib.add(Route::new(net("0.0.0.0/0"), Source::Mesh, hop(9, "192.0.2.9")).metric(11))
        .unwrap();
    rib.commit();
    let f = rib.reader().load();
    let id = f.v4.lookup("198.51.100.1".parse().unwrap()).unwrap();
    assert_eq!(f.group(id), &hops[..]);
    // Hash-threshold (RFC 2992 section 4): the hash space is cut into equal regions in order.
    assert_eq!(f.select(id, 0), Some(hops[0]));
    assert_eq!(f.select(id, u32::MAX / 3 + 1), Some(hops[1]));
    assert_eq!(f.select(id, u32::MAX), Some(hops[2]));
    // Real flows spread over all paths, and one flow always takes the same one.
    let mut seen = [0; 3];
    for port in 0..300u16 {
        let key = FlowKey {
            src: ip("10.0.0.1"),
            dst: ip("198.51.100.1"),
            proto: 17,
            transport: gatekit_packet::Transport::Ports {
                src: 1000 + port,
                dst: 53,
            },
        };
        let h = f.lookup(key.dst, key.hash(false)).unwrap();
        assert_eq!(f.lookup(key.dst, key.hash(false)), Some(h));
        seen[hops.iter().position(|x| *x == h).unwrap()] += 1;
    }
    assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    // Fewer paths allowed: the lowest next hops are kept.
    rib.set_max_paths(2);
    rib.withdraw(&net("0.0.0.0/0"), Source::Mesh, &hops[2])
        .unwrap();
    rib.add(Route::new(net("0.0.0.0/0"), Source::Mesh, hops[2]).metric(10))
        .unwrap();
    rib.commit();
    let f = rib.reader().load();
    let id = f.v4.lookup("198.51.100.1".parse().unwrap()).unwrap();
    assert_eq!(f.group(id), &hops[..2]);
}

#[test]
fn enable_disable_route_source_and_port() {
    let mut rib = Rib::new();
    let reader = rib.reader();
    let t = hop(5, "203.0.113.5");
    let m = hop(6, "100.64.0.6");
    let p = net("172.16.0.0/12");
    rib.add(Route::new(p, Source::Tunnel, t)).unwrap();
    rib.add(Route::new(p, Source::Mesh, m)).unwrap();
    rib.commit();
    let at = || reader.load().lookup(ip("172.16.1.1"), 0);
    assert_eq!(at(), Some(t));
    assert!(rib.set_route_enabled(&p, Source::Tunnel, &t, false));
    rib.commit();
    assert_eq!(at(), Some(m));
    // Replacing a disabled route keeps it disabled.
    rib.add(Route::new(p, Source::Tunnel, t).metric(1)).unwrap();
    rib.commit();
    assert_eq!(at(), Some(m));
    assert!(rib.set_route_enabled(&p, Source::Tunnel, &t, true));
    rib.set_source_enabled(Source::Tunnel, false);
    rib.commit();
    assert_eq!(at(), Some(m));
    rib.set_source_enabled(Source::Tunnel, true);
    rib.set_port_up(PortId(6), false);
    rib.commit();
    assert_eq!(at(), Some(t));
    rib.set_port_up(PortId(5), false);
    rib.commit();
    assert_eq!(at(), None);
    assert_eq!(
        rib.candidates(&p).len(),
        2,
        "disabled routes stay in the RIB"
    );
    rib.set_port_up(PortId(5), true);
    rib.commit();
    assert_eq!(at(), Some(t));
    assert!(!rib.set_route_enabled(&p, Source::Static, &t, false));
}

#[test]
fn bad_routes_are_refused() {
    let mut rib = Rib::new();
    let err = rib
        .add(Route::new(
            net("10.0.0.0/8"),
            Source::Static,
            hop(1, "2001:db8::1"),
        ))
        .unwrap_err();
    assert!(matches!(err, RibError::FamilyMismatch { .. }));
    assert!(err.to_string().contains("10.0.0.0/8"));
    assert!("ospf".parse::<Source>().is_err());
    assert_eq!("Mesh".parse::<Source>().unwrap(), Source::Mesh);
    assert!(rib.is_empty());
}

#[test]
fn prefix_lists_follow_ios_semantics() {
    // Examples from the Cisco IOS IP routing configuration guide's prefix-list section.
    let pl = PrefixList::parse("permit 10.0.0.0/8 ge 16 le 24").unwrap();
    assert!(pl.permits(&net("10.1.0.0/16")));
    assert!(pl.permits(&net("10.1.1.0/24")));
    assert!(!pl.permits(&net("10.0.0.0/8")));
    assert!(!pl.permits(&net("10.1.1.0/25")));
    assert!(!pl.permits(&net("11.1.0.0/16")));
    let exact = PrefixList::parse("permit 192.168.0.0/16").unwrap();
    assert!(exact.permits(&net("192.168.0.0/16")));
    assert!(!exact.permits(&net("192.168.1.0/24")));
    let ge = PrefixList::parse("deny 0.0.0.0/0 ge 25\npermit 0.0.0.0/0 le 32").unwrap();
    assert!(!ge.permits(&net("192.0.2.1/32")));
    assert!(ge.permits(&net("192.0.2.0/24")));
    assert!(!ge.permits(&net("2001:db8::/32")), "families do not mix");
    for (bad, line) in [
        ("permit 10.0.0.0/8 ge 4", 1),
        ("permit 10.0.0.0/8\npermit 10.0.0.0/8 le 33", 2),
        ("permit 10.0.0.0/8 ge 24 le 16", 1),
        ("\n\nallow 10.0.0.0/8", 3),
        ("permit 10.0.0.0", 1),
        ("permit 10.0.0.0/8 le", 1),
        ("permit 10.0.0.0/8 le 24 le 25", 1),
    ] {
        match PrefixList::parse(bad) {
            Err(gatekit_route::PolicyError::Syntax { line: l, .. }) => assert_eq!(l, line, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

/// Two gateways of a mesh. Each advertises its site subnets into the mesh tagged with its
/// own id, imports the other's routes, and re-advertises mesh routes (transit). Neither may
/// import its own routes back, and site subnets also go into the overlay.
#[test]
fn redistribution_between_two_gateways_without_loops() {
    fn policy(my_tag: u32) -> Redistributor {
        Redistributor::new(vec![
            // Export: site subnets (10/8 up to /24) into the mesh, metric 10, our tag.
            Redistribution::new(&[Source::Connected, Source::Static], Source::Mesh)
                .prefix_list(PrefixList::parse("permit 10.0.0.0/8 le 24").unwrap())
                .set_metric(10)
                .set_tag(my_tag),
            // Transit: mesh routes re-advertised one hop further, keeping their tag.
            Redistribution::new(&[Source::Mesh], Source::Mesh)
                .add_metric(1)
                .deny_tag(my_tag),
            // Site subnets into the overlay as well.
            Redistribution::new(&[Source::Connected], Source::Overlay).set_tag(my_tag),
        ])
    }
    // Import: whatever mesh peers send, except routes carrying our own tag.
    fn import(my_tag: u32) -> Redistributor {
        Redistributor::new(vec![
            Redistribution::new(&[Source::Mesh], Source::Mesh).deny_tag(my_tag),
        ])
    }
    let (pa, pb) = (policy(1), policy(2));
    let (ia, ib) = (import(1), import(2));
    let (mut a, mut b) = (Rib::new(), Rib::new());
    let lan = NextHop::port(PortId(1));
    a.add(Route::new(net("10.1.0.0/16"), Source::Connected, lan))
        .unwrap();
    a.add(Route::new(
        net("10.1.5.0/24"),
        Source::Static,
        hop(1, "10.1.0.254"),
    ))
    .unwrap();
    a.add(Route::new(
        net("10.1.6.128/25"),
        Source::Static,
        hop(1, "10.1.0.254"),
    ))
    .unwrap();
    a.add(Route::new(net("192.168.0.0/24"), Source::Connected, lan))
        .unwrap();
    b.add(Route::new(net("10.2.0.0/16"), Source::Connected, lan))
        .unwrap();

    let to_b = hop(7, "100.64.0.2");
    let to_a = hop(7, "100.64.0.1");
    // A → mesh: its 10/8 subnets only, /25 excluded, metric and tag rewritten.
    let from_a = pa.export(&a, Source::Mesh);
    let got: Vec<_> = from_a
        .iter()
        .map(|r| (r.prefix.to_string(), r.metric, r.tag))
        .collect();
    assert_eq!(
        got,
        [("10.1.0.0/16".into(), 10, 1), ("10.1.5.0/24".into(), 10, 1)]
    );
    assert!(
        from_a
            .iter()
            .all(|r| r.source == Source::Mesh && r.distance == 100)
    );
    // B imports them (next hop: the tunnel to A), then re-advertises its table.
    let via_a = from_a.iter().map(|r| Route {
        next_hop: to_a,
        ..*r
    });
    assert_eq!(ib.import(&mut b, Source::Mesh, via_a).unwrap(), 2);
    b.commit();
    assert_eq!(b.reader().load().lookup(ip("10.1.5.1"), 0), Some(to_a));
    let from_b = pb.export(&b, Source::Mesh);
    let got: Vec<_> = from_b
        .iter()
        .map(|r| (r.prefix.to_string(), r.metric, r.tag))
        .collect();
    assert_eq!(
        got,
        [
            ("10.1.0.0/16".into(), 11, 1),
            ("10.1.5.0/24".into(), 11, 1),
            ("10.2.0.0/16".into(), 10, 2)
        ]
    );
    // A imports B's advertisement: its own routes (tag 1) are refused, B's subnet accepted.
    let via_b = from_b.iter().map(|r| Route {
        next_hop: to_b,
        ..*r
    });
    assert_eq!(ia.import(&mut a, Source::Mesh, via_b).unwrap(), 1);
    a.commit();
    let f = a.reader().load();
    assert_eq!(f.lookup(ip("10.2.0.1"), 0), Some(to_b));
    assert_eq!(f.lookup(ip("10.1.5.1"), 0), Some(hop(1, "10.1.0.254")));
    assert!(
        a.candidates(&net("10.1.0.0/16"))
            .iter()
            .all(|c| c.route.source != Source::Mesh)
    );
    // The overlay gets the connected subnets, including ones outside 10/8.
    let ov: Vec<_> = pa
        .export(&a, Source::Overlay)
        .iter()
        .map(|r| r.prefix.to_string())
        .collect();
    assert_eq!(ov, ["10.1.0.0/16", "192.168.0.0/24"]);
    // B's subnet learned from the mesh is not sent back into the mesh by A with A's tag.
    let again = pa.export(&a, Source::Mesh);
    let b_sub = again
        .iter()
        .find(|r| r.prefix == net("10.2.0.0/16"))
        .unwrap();
    assert_eq!((b_sub.tag, b_sub.metric), (2, 11));
    // Withdrawal at B removes the route at A once re-imported.
    a.withdraw_prefix(&net("10.2.0.0/16"), Source::Mesh);
    a.commit();
    assert_eq!(a.reader().load().lookup(ip("10.2.0.1"), 0), None);
}

#[derive(Debug, Clone)]
enum Op {
    Add(usize, u8, u8, u32),
    Withdraw(usize, u8, u8),
    Disable(u8),
    Enable(u8),
}

const PREFIXES: [&str; 6] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "192.0.2.0/24",
];

fn source(i: u8) -> Source {
    Source::ALL[usize::from(i) % Source::ALL.len()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The published table forwards as a naive selection over every eligible route would:
    /// longest prefix that has an eligible route, then lowest (distance, metric), all ties.
    #[test]
    fn forwarding_matches_naive_selection(ops in proptest::collection::vec(prop_oneof![
        (0..PREFIXES.len(), 0u8..6, 0u8..4, 0u32..3).prop_map(|(p, s, h, m)| Op::Add(p, s, h, m)),
        (0..PREFIXES.len(), 0u8..6, 0u8..4).prop_map(|(p, s, h)| Op::Withdraw(p, s, h)),
        (0u8..6).prop_map(Op::Disable),
        (0u8..6).prop_map(Op::Enable),
    ], 1..60)) {
        let mut rib = Rib::new();
        let mut model: Vec<Route> = Vec::new();
        let mut disabled = [false; 6];
        let nh = |h: u8| NextHop::via(PortId(u16::from(h)), IpAddr::from([192, 0, 2, h]));
        for op in ops {
            match op {
                Op::Add(p, s, h, m) => {
                    let r = Route::new(net(PREFIXES[p]), source(s), nh(h)).metric(m);
                    model.retain(|x| !(x.prefix == r.prefix && x.source == r.source && x.next_hop == r.next_hop));
                    model.push(r);
                    rib.add(r).unwrap();
                }
                Op::Withdraw(p, s, h) => {
                    let before = model.len();
                    model.retain(|x| !(x.prefix == net(PREFIXES[p]) && x.source == source(s) && x.next_hop == nh(h)));
                    let gone = rib.withdraw(&net(PREFIXES[p]), source(s), &nh(h));
                    prop_assert_eq!(gone.is_some(), model.len() < before);
                }
                Op::Disable(s) => {
                    disabled[usize::from(s)] = true;
                    rib.set_source_enabled(source(s), false);
                }
                Op::Enable(s) => {
                    disabled[usize::from(s)] = false;
                    rib.set_source_enabled(source(s), true);
                }
            }
        }
        rib.commit();
        let f = rib.reader().load();
        for addr in ["10.1.2.3", "10.1.2.4", "10.1.3.1", "10.2.0.1", "11.0.0.1", "192.0.2.77"] {
            let a = ip(addr);
            let eligible: Vec<&Route> = model
                .iter()
                .filter(|r| r.prefix.contains(&a) && !disabled[Source::ALL.iter().position(|s| *s == r.source).unwrap()])
                .collect();
            let want: Vec<NextHop> = match eligible.iter().map(|r| r.prefix.prefix_len()).max() {
                None => vec![],
                Some(len) => {
                    let at_len: Vec<&&Route> = eligible.iter().filter(|r| r.prefix.prefix_len() == len).collect();
                    let best = at_len.iter().map(|r| (r.distance, r.metric)).min().unwrap();
                    let mut hops: Vec<NextHop> = at_len.iter().filter(|r| (r.distance, r.metric) == best).map(|r| r.next_hop).collect();
                    hops.sort();
                    hops.dedup();
                    hops
                }
            };
            let IpAddr::V4(a4) = a else { unreachable!() };
            let got = f.v4.lookup(a4).map(|id| f.group(id).to_vec()).unwrap_or_default();
            prop_assert_eq!(got, want, "addr {}", addr);
        }
    }
}
