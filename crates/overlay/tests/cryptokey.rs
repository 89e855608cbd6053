//! Cryptokey routing against a linear scan of the registry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use etherparse::PacketBuilder;
use gatekit_overlay::*;
use gatekit_packet::{Action, DropCounters, DropReason, Instant};
use proptest::prelude::*;
use std::net::IpAddr;

fn registry(n: u32, disabled_every: u32) -> Registry {
    let plan = AddressPlan::new(PlanSpec {
        prefixes: vec![
            "10.40.0.0/16".parse().unwrap(),
            "fd40::/48".parse().unwrap(),
        ],
        segments: vec![
            SegmentSpec::new(
                "a",
                [
                    "10.40.0.0/17".parse().unwrap(),
                    "fd40:0:0:1::/64".parse().unwrap(),
                ],
            ),
            SegmentSpec::new("b", ["10.40.128.0/17".parse().unwrap()]),
        ],
        ..PlanSpec::default()
    })
    .unwrap();
    let mut r = Registry::new(plan);
    for i in 0..n {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_be_bytes());
        let seg = if i % 3 == 0 { "b" } else { "a" };
        let id = r
            .add_member(
                NewMember::new(PublicKey::from_bytes(b), &format!("m{i}"), seg),
                Instant::ZERO,
            )
            .unwrap();
        if disabled_every > 0 && i % disabled_every == 0 {
            r.set_enabled(id, false, Instant::ZERO).unwrap();
        }
    }
    r
}

fn naive(r: &Registry, a: IpAddr) -> Option<MemberId> {
    r.members()
        .find(|m| m.enabled && m.addresses.contains(&a))
        .map(|m| m.id)
}

proptest! {
    #[test]
    fn lookups_agree_with_a_linear_scan(n in 1u32..200, dis in 0u32..5, probes in proptest::collection::vec(any::<(u16, bool)>(), 50)) {
        let r = registry(n, dis);
        let t = CryptokeyTable::build(&r);
        for (x, v6) in probes {
            let a: IpAddr = if v6 {
                IpAddr::V6(format!("fd40:0:0:1::{:x}", x % 300).parse().unwrap())
            } else {
                IpAddr::V4([10, 40, (x >> 8) as u8 & 0x81, x as u8].into())
            };
            prop_assert_eq!(t.lookup(a), naive(&r, a));
            if let Some(owner) = naive(&r, a) {
                prop_assert!(t.allows(owner, a));
                prop_assert!(!t.allows(MemberId(owner.0 + 1), a));
            }
        }
    }
}

#[test]
fn packets_inbound_and_outbound() {
    let r = registry(10, 0);
    let t = CryptokeyTable::build(&r);
    assert_eq!(t.revision(), r.revision());
    let m1 = r.member_by_name("m1").unwrap().clone();
    let m2 = r.member_by_name("m2").unwrap().clone();
    let (IpAddr::V4(a1), IpAddr::V6(a1v6)) = (m1.addresses[0], m1.addresses[1]) else {
        panic!("m1 is dual-stack")
    };
    let IpAddr::V4(a2) = m2.addresses[0] else {
        panic!()
    };
    let mut v4 = Vec::new();
    PacketBuilder::ipv4(a1.octets(), a2.octets(), 64)
        .udp(1, 2)
        .write(&mut v4, b"x")
        .unwrap();
    let mut v6 = Vec::new();
    PacketBuilder::ipv6(
        a1v6.octets(),
        "fd40::99".parse::<std::net::Ipv6Addr>().unwrap().octets(),
        64,
    )
    .udp(1, 2)
    .write(&mut v6, b"x")
    .unwrap();
    let mut drops = DropCounters::default();
    assert_eq!(t.route(&v4, &mut drops), Ok(m2.id));
    assert_eq!(t.check_inbound(m1.id, &v4, &mut drops), Action::Continue);
    assert_eq!(t.check_inbound(m1.id, &v6, &mut drops), Action::Continue);
    // Sent by m2's key but with m1's source: spoofed.
    assert_eq!(
        t.check_inbound(m2.id, &v4, &mut drops),
        Action::Drop(DropReason::SourceMismatch)
    );
    assert_eq!(
        t.route(&v6, &mut drops),
        Err(Action::Drop(DropReason::NoRoute))
    );
    assert_eq!(
        t.check_inbound(m1.id, &v4[..19], &mut drops),
        Action::Drop(DropReason::Truncated)
    );
    assert_eq!(
        t.check_inbound(m1.id, &[0x50; 40], &mut drops),
        Action::Drop(DropReason::Malformed)
    );
    assert_eq!(
        t.check_inbound(m1.id, &[], &mut drops),
        Action::Drop(DropReason::Truncated)
    );
    assert_eq!(drops.get(DropReason::SourceMismatch), 1);
    assert_eq!(drops.get(DropReason::NoRoute), 1);
    assert_eq!(drops.total(), 5);
    // Disabled members are routed nowhere.
    let mut r = r;
    r.set_enabled(m2.id, false, Instant::ZERO).unwrap();
    let t = CryptokeyTable::build(&r);
    assert_eq!(t.lookup(IpAddr::V4(a2)), None);
}
