//! The forwarding fast path against the full path alone, on traffic that visits every case
//! the fast path must leave to the full one.

use super::*;
use crate::port::PortKind;

/// Domain 10 with a MAC limit, ARP suppression and 6 s aging; domain 20 plain. Ports: 0, 1
/// access 10; 2 trunk (native 10, tagged 10 and 20); 3 access 20 with a MAC limit and a small
/// MTU; 4, 5 mesh tunnels on 10 in one split-horizon group. A static entry behind port 1.
fn fabric() -> Switch {
    let mut sw = Switch::new();
    sw.add_domain(DomainConfig {
        max_macs: Some(12),
        arp_suppression: true,
        aging: Duration::from_secs(6),
        ..DomainConfig::new(10)
    })
    .unwrap();
    sw.add_domain(DomainConfig::new(20)).unwrap();
    let mesh = Some(HorizonGroup(7));
    let ports = [
        PortConfig::access(10),
        PortConfig::access(10),
        PortConfig::trunk(Some(10), [10, 20].into_iter().collect()),
        PortConfig {
            max_macs: Some(3),
            mtu: 60,
            ..PortConfig::access(20)
        },
        PortConfig {
            kind: PortKind::GreTeb,
            horizon: mesh,
            ..PortConfig::access(10)
        },
        PortConfig {
            kind: PortKind::Vxlan,
            horizon: mesh,
            ..PortConfig::access(10)
        },
    ];
    for (i, p) in ports.into_iter().enumerate() {
        sw.set_port(PortId(i as u16), p).unwrap();
    }
    sw.add_static(10, host(15), PortId(1)).unwrap();
    sw.add_binding(10, Ipv4Addr::new(10, 0, 0, 3), host(3))
        .unwrap();
    sw
}

fn host(n: u64) -> MacAddr {
    MacAddr::from_u64(0x0200_0000_0000 | n)
}

fn frame(dst: MacAddr, src: MacAddr, tag: Option<u16>, ethertype: u16, len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    if let Some(t) = tag {
        f.extend_from_slice(&TPID_8021Q.to_be_bytes());
        f.extend_from_slice(&t.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    if ethertype == ETHERTYPE_ARP {
        // A request from `src` for 10.0.0.3.
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[10, 0, 0, 9, 0, 0, 0, 0, 0, 0, 10, 0, 0, 3]);
    }
    f.resize(f.len().max(14 + len), 0x5a);
    f
}

fn snapshot(sw: &mut Switch) -> String {
    crate::fuzz::state(sw, 7)
}

/// Three fabrics get the same traffic: one decides every frame on the full path alone, one
/// tries the fast path first and counts how often it decided, and one is driven through the
/// public `forward` and `forward_batch`. Their verdicts, egress lists, rewritten frames,
/// counters, events and tables must agree throughout. The traffic is mostly known unicast
/// between hosts that stay behind their port (the fast path's case), with hosts that move,
/// time that passes within a second, by seconds and past the aging time, broadcasts, ARP,
/// tags, frames too big for a port, frames back to their own port or across the mesh, and
/// more new sources than the limits allow.
#[test]
fn fast_path_decides_as_the_full_path() {
    for seed in 1..=8u64 {
        let (mut full, mut parts, mut api) = (fabric(), fabric(), fabric());
        let (mut o1, mut o2, mut o3) = (Egress::default(), Egress::default(), Egress::default());
        let mut outs = vec![Egress::default(); 8];
        let mut verdicts = [Verdict::Flood; 8];
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        // Where each host lives; hosts 12.. are many and new (the limits), 15 is static.
        let mut home: Vec<u16> = (0..24).map(|h| [0, 1, 2, 4, 0, 1, 5, 3][h % 8]).collect();
        // From time 0 on: an absent source on port 0 at second 0 must not look fresh.
        let mut now = Instant::ZERO;
        let (mut fast, mut total) = (0u64, 0u64);
        for step in 0..3000 {
            match rnd(200) {
                0..=179 => {}
                180..=191 => now += Duration::from_millis(250),
                192..=197 => now += Duration::from_secs(1 + rnd(3)),
                _ => now += Duration::from_secs(7),
            }
            for sw in [&mut full, &mut parts, &mut api] {
                sw.handle_timeout(now);
            }
            if rnd(40) == 0 {
                let h = rnd(24) as usize;
                home[h] = rnd(6) as u16;
            }
            let pool = if rnd(10) == 0 { 24 } else { 8 };
            let src = rnd(pool);
            let dst = match rnd(20) {
                0 => MacAddr::BROADCAST,
                1 => MacAddr([1, 0, 0x5e, 0, 0, 1]),
                2 => host(15),
                3 => host(src),
                _ => host(rnd(8)),
            };
            let ingress = match rnd(30) {
                0 => PortId(rnd(7) as u16),
                _ => PortId(home[src as usize]),
            };
            let tag = match (ingress.0, rnd(4)) {
                (2, 0) => Some(20),
                (2, 1) => Some(10),
                (_, 2) if rnd(8) == 0 => Some(0),
                _ => None,
            };
            let ethertype = if rnd(25) == 0 { ETHERTYPE_ARP } else { 0x0800 };
            let len = [46, 46, 46, 64, 200][rnd(5) as usize];
            let mut f = frame(dst, host(src), tag, ethertype, len);
            if rnd(200) == 0 {
                f.truncate(rnd(18) as usize);
            }
            let (mut f1, mut f2) = (f.clone(), f.clone());
            let secs = secs_of(now);

            let mut p1 = Pre::NONE;
            let pre = full.classify(ingress, &f1, &mut p1).map(|()| p1);
            let v1 = full.decide_full(ingress, &mut f1, pre, secs, &mut o1);

            let mut p2 = Pre::NONE;
            let pre = parts.classify(ingress, &f2, &mut p2).map(|()| p2);
            let known = match &pre {
                Ok(p) => parts.forward_known(ingress, p, secs, &mut o2),
                Err(_) => None,
            };
            let v2 = match known {
                Some(v) => {
                    fast += 1;
                    v
                }
                None => parts.decide_full(ingress, &mut f2, pre, secs, &mut o2),
            };
            total += 1;

            // The public entry points, one frame alone or as a batch of one.
            let v3 = if step % 2 == 0 {
                api.forward(ingress, &mut f, now, &mut o3)
            } else {
                let mut batch = [(ingress, f.clone())];
                assert_eq!(
                    api.forward_batch(&mut batch, now, &mut outs, &mut verdicts),
                    1
                );
                f = batch[0].1.clone();
                o3 = outs[0].clone();
                verdicts[0]
            };

            assert_eq!(v1, v2, "seed {seed} step {step}");
            assert_eq!(v1, v3, "seed {seed} step {step}");
            assert_eq!(o1.ports(), o2.ports(), "seed {seed} step {step}");
            assert_eq!(o1.ports(), o3.ports(), "seed {seed} step {step}");
            assert_eq!((o1.vlan(), o1.vlan()), (o2.vlan(), o3.vlan()));
            assert_eq!((&f1, &f1), (&f2, &f), "seed {seed} step {step}");
            if step % 100 == 0 {
                let s = snapshot(&mut full);
                assert_eq!(s, snapshot(&mut parts), "seed {seed} step {step}");
                assert_eq!(s, snapshot(&mut api), "seed {seed} step {step}");
            }
        }
        let s = snapshot(&mut full);
        assert_eq!(s, snapshot(&mut parts), "seed {seed}");
        assert_eq!(s, snapshot(&mut api), "seed {seed}");
        // The traffic went both ways through every case that matters.
        assert!(
            fast * 8 > total,
            "seed {seed}: fast path took {fast} of {total}"
        );
        assert!(
            fast * 10 < total * 9,
            "seed {seed}: fast path took {fast} of {total}"
        );
        let d = *full.domain_stats(10).unwrap();
        assert!(
            d.mac_moves > 0 && d.aged_out > 0 && d.mac_limit_drops > 0,
            "{d:?}"
        );
        assert!(d.static_conflicts > 0 && d.arp_suppressed > 0, "{d:?}");
        let limited = full.port_stats(PortId(3)).unwrap();
        assert!(limited.drops.get(DropReason::TooBig) > 0, "{limited:?}");
    }
}

/// A classification's key words are the complements of the table's keys of its addresses,
/// for untagged and tagged frames, and a key gives back its domain and MAC.
#[test]
fn classified_keys_are_table_keys() {
    let mut sw = fabric();
    let (src, dst) = (
        MacAddr([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]),
        MacAddr([0x0a, 0x99, 0x88, 0x77, 0x66, 0xfe]),
    );
    for (ingress, tag, vlan) in [(0, None, 10), (2, Some(20), 20), (3, None, 20)] {
        let f = frame(dst, src, tag, 0x0800, 46);
        let mut p = Pre::NONE;
        sw.classify(PortId(ingress), &f, &mut p).unwrap();
        let d = sw.domain_index(vlan).unwrap();
        assert_eq!(p.domain(), d);
        assert_eq!((!p.src_want[0], !p.dst_want[0]), (key(d, src), key(d, dst)));
        assert_eq!(p.class.expect, u32::from(ingress) << 16);
        assert_eq!((key_domain(key(d, src)), key_mac(key(d, src))), (d, src));
        assert_eq!(!p.dst_want[0] & MULTICAST, 0);
    }
    // The group bit of the destination, as the fast path and the full path test it.
    let f = frame(MacAddr([1, 0, 0x5e, 0, 0, 1]), src, None, ETHERTYPE_ARP, 46);
    let mut p = Pre::NONE;
    sw.classify(PortId(0), &f, &mut p).unwrap();
    assert_ne!(!p.dst_want[0] & MULTICAST, 0);
    assert_eq!(p.class.expect, ARP_MARK);
    let f = frame(dst, src, Some(20), ETHERTYPE_ARP, 46);
    sw.classify(PortId(2), &f, &mut p).unwrap();
    assert_eq!(p.class.expect, 2 << 16 | ARP_MARK);
    // Learned, the source is listed with its domain's VLAN and found by address.
    let mut f = frame(dst, src, Some(20), 0x0800, 46);
    let mut out = Egress::default();
    sw.forward(PortId(2), &mut f, Instant::ZERO, &mut out);
    assert!(
        sw.entries()
            .any(|(v, m, e)| (v, m, e.port) == (20, src, PortId(2)))
    );
    assert_eq!(sw.lookup(20, src).map(|e| e.port), Some(PortId(2)));
    // A group source is dropped.
    let f = frame(dst, MacAddr([1, 0, 0, 0, 0, 1]), None, 0x0800, 46);
    assert_eq!(
        sw.classify(PortId(0), &f, &mut p),
        Err(DropReason::Malformed)
    );
}

/// A batch of mostly known unicast, whose runs on the fast path span chunks, with frames for
/// the full path at chunk edges and within chunks, decides as `forward` frame by frame.
#[test]
fn long_fast_runs_decide_as_frame_by_frame() {
    let (mut one, mut many) = (fabric(), fabric());
    let mut out = Egress::default();
    let now = Instant::from_secs(3);
    // Hosts 0..4 behind ports 0, 1, 2 (the trunk, untagged) and 4 (a mesh tunnel), all in
    // domain 10, learned this second.
    let homes = [0u16, 1, 2, 4];
    for sw in [&mut one, &mut many] {
        for (h, &p) in homes.iter().enumerate() {
            let mut f = frame(MacAddr::BROADCAST, host(h as u64), None, 0x0800, 46);
            sw.forward(PortId(p), &mut f, now, &mut out);
        }
    }
    for full_at in [vec![], vec![0], vec![15, 16], vec![3, 31, 32, 47], vec![49]] {
        let batch: Vec<(PortId, Vec<u8>)> = (0..50u64)
            .map(|i| {
                let (s, d) = (i % 4, (i / 4 + 1 + i) % 4);
                let d = if d == s { (d + 1) % 4 } else { d };
                let dst = if full_at.contains(&(i as usize)) {
                    MacAddr::BROADCAST
                } else {
                    host(d)
                };
                (
                    PortId(homes[s as usize]),
                    frame(dst, host(s), None, 0x0800, 46),
                )
            })
            .collect();
        let mut frames = batch.clone();
        let mut outs = vec![Egress::default(); 50];
        let mut verdicts = [Verdict::Flood; 50];
        assert_eq!(
            many.forward_batch(&mut frames, now, &mut outs, &mut verdicts),
            50
        );
        for (i, (p, f)) in batch.into_iter().enumerate() {
            let mut f = f;
            let v = one.forward(p, &mut f, now, &mut out);
            assert_eq!(v, verdicts[i], "frame {i} of {full_at:?}");
            assert_eq!(out.ports(), outs[i].ports(), "frame {i} of {full_at:?}");
            assert_eq!(out.vlan(), outs[i].vlan(), "frame {i} of {full_at:?}");
        }
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Forward).count(),
            50 - full_at.len()
        );
        assert_eq!(snapshot(&mut one), snapshot(&mut many));
    }
}
