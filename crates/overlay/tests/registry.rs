//! Members, allocation, conflicts and the registry file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatekit_overlay::*;
use gatekit_packet::Instant;
use std::net::IpAddr;
use std::time::Duration;

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(i: u32) -> PublicKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[31] = 0x55;
    PublicKey::from_bytes(b)
}

fn plan() -> AddressPlan {
    AddressPlan::new(PlanSpec {
        prefixes: vec![
            "10.100.0.0/16".parse().unwrap(),
            "fd00:100::/48".parse().unwrap(),
        ],
        underlay: vec!["172.31.0.0/16".parse().unwrap()],
        reserved: vec![a("10.100.1.2")],
        segments: vec![
            SegmentSpec::new(
                "eng",
                [
                    "10.100.1.0/24".parse().unwrap(),
                    "fd00:100:0:1::/64".parse().unwrap(),
                ],
            ),
            SegmentSpec::new("eng-web", ["10.100.1.128/26".parse().unwrap()]).inside("eng"),
            SegmentSpec::new("ops", ["10.100.2.0/30".parse().unwrap()]),
        ],
        quarantine_secs: 60,
        ..PlanSpec::default()
    })
    .unwrap()
}

const T0: Instant = Instant::from_secs(1_764_000_000);

#[test]
fn allocation_is_dual_stack_lowest_free_and_skips_reserved() {
    let mut r = Registry::new(plan());
    let id = r
        .add_member(NewMember::new(key(1), "alice", "eng").tag("dev"), T0)
        .unwrap();
    let m = r.member(id).unwrap();
    // 10.100.1.0 is the network address, .1 the first free, .2 reserved by the plan.
    assert_eq!(m.addresses, [a("10.100.1.1"), a("fd00:100:0:1::1")]);
    assert_eq!((m.created, m.updated, m.enabled), (T0, T0, true));
    let id2 = r
        .add_member(NewMember::new(key(2), "bob", "eng"), T0)
        .unwrap();
    assert_eq!(r.member(id2).unwrap().addresses[0], a("10.100.1.3"));
    // The child segment's range is the child's: a parent member never gets 10.100.1.128/26.
    let web = r
        .add_member(NewMember::new(key(3), "web1", "eng-web"), T0)
        .unwrap();
    assert_eq!(r.member(web).unwrap().addresses, [a("10.100.1.129")]);
    assert_eq!(r.member_by_address(a("10.100.1.129")).unwrap().name, "web1");
    assert_eq!(r.member_by_key(&key(2)).unwrap().id, id2);
    assert_eq!(r.member_by_name("alice").unwrap().id, id);
}

#[test]
fn conflicts_say_what_conflicts_with_what() {
    let mut r = Registry::new(plan());
    r.add_member(
        NewMember::new(key(1), "alice", "eng").address(a("10.100.1.7")),
        T0,
    )
    .unwrap();
    let err = |r: &mut Registry, n: NewMember| r.add_member(n, T0).unwrap_err().to_string();
    assert_eq!(
        err(
            &mut r,
            NewMember::new(key(2), "bob", "eng").address(a("10.100.1.7"))
        ),
        "address 10.100.1.7 belongs to member alice"
    );
    assert_eq!(
        err(
            &mut r,
            NewMember::new(key(2), "bob", "eng").address(a("10.100.1.2"))
        ),
        "address 10.100.1.2 is reserved by the plan"
    );
    assert_eq!(
        err(
            &mut r,
            NewMember::new(key(2), "bob", "eng").address(a("10.100.1.255"))
        ),
        "address 10.100.1.255 is a broadcast address"
    );
    assert_eq!(
        err(
            &mut r,
            NewMember::new(key(2), "bob", "eng").address(a("10.100.0.1"))
        ),
        "address 10.100.0.1 is the gateway's own address"
    );
    assert_eq!(
        err(
            &mut r,
            NewMember::new(key(2), "bob", "eng").address(a("10.100.1.130"))
        ),
        "address 10.100.1.130 is not in segment eng (it is in segment eng-web)"
    );
    assert_eq!(
        err(
            &mut r,
            NewMember::new(key(2), "bob", "eng").address(a("10.100.9.9"))
        ),
        "address 10.100.9.9 is not in segment eng (it is in no segment)"
    );
    assert_eq!(
        err(
            &mut r,
            NewMember::new(key(2), "bob", "eng").address(a("192.0.2.1"))
        ),
        "address 192.0.2.1 is not in segment eng (it is outside the overlay)"
    );
    assert_eq!(
        err(&mut r, NewMember::new(key(1), "bob", "eng")),
        format!("key {} already belongs to member alice", key(1))
    );
    assert_eq!(
        err(&mut r, NewMember::new(key(2), "alice", "eng")),
        "member name alice is taken"
    );
    assert_eq!(
        err(&mut r, NewMember::new(key(2), "bob", "nope")),
        "segment nope does not exist"
    );
    assert!(matches!(
        r.add_member(NewMember::new(key(2), "bob", "eng").tag("no spaces"), T0),
        Err(RegistryError::Name(PlanError::BadName { what: "tag", .. }))
    ));
    assert!(matches!(
        r.add_member(
            NewMember::new(key(2), "bob", "eng")
                .address(a("10.100.1.8"))
                .address(a("10.100.1.9")),
            T0
        ),
        Err(RegistryError::SameFamily(..))
    ));
    // A failed add leaves nothing behind: 10.100.1.8 is still free.
    r.check_address("eng", a("10.100.1.8")).unwrap();
    assert_eq!(r.len(), 1);
}

#[test]
fn segment_full_and_atomic_rollback() {
    let mut r = Registry::new(plan());
    // ops is a /30: network and broadcast reserved, two usable addresses.
    r.add_member(NewMember::new(key(1), "o1", "ops"), T0)
        .unwrap();
    r.add_member(NewMember::new(key(2), "o2", "ops"), T0)
        .unwrap();
    assert_eq!(
        r.add_member(NewMember::new(key(3), "o3", "ops"), T0)
            .unwrap_err(),
        RegistryError::SegmentFull {
            segment: "ops".into(),
            family: "IPv4"
        }
    );
    assert_eq!(r.free_addresses("ops").unwrap(), (0, 0));
}

#[test]
fn release_quarantine_then_reuse() {
    let mut r = Registry::new(plan());
    let id = r
        .add_member(NewMember::new(key(1), "o1", "ops"), T0)
        .unwrap();
    let gone = r.remove_member(id, T0).unwrap();
    assert_eq!(gone.addresses, [a("10.100.2.1")]);
    let until = T0 + Duration::from_secs(60);
    assert_eq!(r.poll_timeout(), Some(until));
    assert_eq!(
        r.check_address("ops", a("10.100.2.1")).unwrap_err(),
        RegistryError::AddressQuarantined {
            addr: a("10.100.2.1"),
            until
        }
    );
    // During quarantine the next member gets the other address, and a third finds none.
    let id2 = r
        .add_member(NewMember::new(key(2), "o2", "ops"), T0)
        .unwrap();
    assert_eq!(r.member(id2).unwrap().addresses, [a("10.100.2.2")]);
    assert!(
        r.add_member(
            NewMember::new(key(3), "o3", "ops"),
            until - Duration::from_millis(1)
        )
        .is_err()
    );
    // At the end of the quarantine the address is handed out again; ids are never reused.
    let id3 = r
        .add_member(NewMember::new(key(3), "o3", "ops"), until)
        .unwrap();
    assert_eq!(r.member(id3).unwrap().addresses, [a("10.100.2.1")]);
    assert_eq!(id3, MemberId(2));
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn updates_touch_updated_time() {
    let mut r = Registry::new(plan());
    let id = r
        .add_member(NewMember::new(key(1), "alice", "eng"), T0)
        .unwrap();
    let t1 = T0 + Duration::from_secs(5);
    let rev = r.revision();
    r.set_enabled(id, false, t1).unwrap();
    r.set_endpoint(id, Some("203.0.113.9:51820".parse().unwrap()), t1)
        .unwrap();
    r.set_tags(id, ["admin".to_string()].into(), t1).unwrap();
    let m = r.member(id).unwrap();
    assert_eq!((m.enabled, m.updated, m.created), (false, t1, T0));
    assert_eq!(m.endpoint.unwrap().port(), 51820);
    assert!(r.revision() > rev);
    assert!(r.set_enabled(MemberId(99), true, t1).is_err());
}

fn populated() -> Registry {
    let mut r = Registry::new(plan());
    for i in 0..20 {
        let seg = if i % 3 == 0 { "eng-web" } else { "eng" };
        let mut n = NewMember::new(key(i), &format!("m{i}"), seg).tag(if i % 2 == 0 {
            "even"
        } else {
            "odd"
        });
        n.endpoint = Some(format!("198.51.100.{i}:4500").parse().unwrap());
        r.add_member(n, T0 + Duration::from_secs(u64::from(i)))
            .unwrap();
    }
    r.remove_member(MemberId(4), T0 + Duration::from_secs(30))
        .unwrap();
    r.set_enabled(MemberId(5), false, T0 + Duration::from_secs(31))
        .unwrap();
    r.set_policy(Policy {
        associations: vec![Association {
            from: "eng".into(),
            to: "ops".into(),
            both_ways: false,
        }],
        rules: vec![PolicyRule {
            from: "tag:even".parse().unwrap(),
            to: "segment:ops".parse().unwrap(),
            proto: Some(Proto::TCP),
            ports: Some("22".parse().unwrap()),
            verdict: Verdict::Allow,
        }],
        ..Policy::default()
    })
    .unwrap();
    r
}

#[test]
fn file_round_trip_keeps_everything() {
    let r = populated();
    let text = r.to_file_text().unwrap();
    let back = Registry::from_file_bytes(text.as_bytes()).unwrap();
    assert_eq!(back.to_file_text().unwrap(), text);
    assert_eq!(back.len(), 19);
    assert_eq!(back.next_id(), 20);
    assert_eq!(back.policy(), r.policy());
    for m in r.members() {
        assert_eq!(back.member(m.id), Some(m));
    }
    let q: Vec<_> = back.quarantined().collect();
    assert_eq!(q.len(), 2, "v4 and v6 of the removed member: {q:?}");
    // Quarantine survives the round trip: the removed member's address is not handed out.
    let removed = r.quarantined().next().unwrap().1;
    assert!(matches!(
        back.check_address("eng", removed),
        Err(RegistryError::AddressQuarantined { .. })
    ));
    // The file is readable TOML that names things the way an operator does.
    assert!(
        text.contains("[[member]]") && text.contains("name = \"m7\""),
        "{text}"
    );
    assert!(text.contains("format = 1"));
}

#[test]
fn save_and_load_through_the_filesystem() {
    let dir = std::env::temp_dir().join(format!("gk-overlay-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("registry.toml");
    let r = populated();
    r.save(&path).unwrap();
    r.save(&path).unwrap(); // replacing works too
    let back = Registry::load(&path).unwrap();
    assert_eq!(back.to_toml().unwrap(), r.to_toml().unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file left after a clean save"
    );
    assert!(matches!(
        Registry::load(dir.join("missing.toml")),
        Err(LoadError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_files_are_refused_whole() {
    let text = populated().to_file_text().unwrap();
    // Cut at every line boundary: a prefix of the file is never accepted.
    for (i, _) in text.match_indices('\n') {
        let cut = &text[..=i];
        if cut.len() == text.len() {
            continue;
        }
        assert!(
            Registry::from_file_bytes(cut.as_bytes()).is_err(),
            "accepted a cut at {i}"
        );
    }
    // One flipped bit anywhere is caught.
    for pos in (0..text.len()).step_by(97) {
        let mut b = text.clone().into_bytes();
        b[pos] ^= 0x04;
        assert!(
            Registry::from_file_bytes(&b).is_err(),
            "accepted a flip at {pos}"
        );
    }
    let mut b = text.clone().into_bytes();
    let pos = text.find("m7").unwrap() + 1;
    b[pos] = b'8';
    let e = Registry::from_file_bytes(&b).unwrap_err();
    assert!(matches!(e, LoadError::Checksum { .. }), "{e}");
    assert!(matches!(
        Registry::from_file_bytes(&[0xff, 0xfe]),
        Err(LoadError::NotText { offset: 0 })
    ));
}

#[test]
fn hand_written_text_errors_point_at_the_problem() {
    let ok = "format = 1\nnext_id = 0\n[plan]\nprefixes = [\"10.9.0.0/16\"]\n[[plan.segment]]\nname = \"a\"\nprefixes = [\"10.9.1.0/24\"]\n";
    let r = Registry::from_toml(ok).unwrap();
    assert!(r.plan().segment("a").is_some());

    let e = Registry::from_toml("format = 2\nnext_id = 0\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "format 2 is not supported (this version reads formats 1 to 1)"
    );
    let e = Registry::from_toml(&ok.replace("10.9.1.0/24", "10.9.1.0/33")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LoadError::Syntax(_)));
    assert!(msg.contains("line 7"), "{msg}");
    let e = Registry::from_toml(&ok.replace("prefixes = [\"10.9.1", "prefixs = [\"10.9.1"))
        .unwrap_err();
    assert!(e.to_string().contains("prefixs"), "{e}");
    let e = Registry::from_toml(&ok.replace("10.9.1.0/24", "10.8.1.0/24")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "plan: segment a: prefix 10.8.1.0/24 is not inside the overlay prefixes"
    );
    let member = format!(
        "[[member]]\nid = 0\nkey = \"{}\"\nname = \"x\"\nsegment = \"a\"\naddresses = [\"10.9.2.1\"]\nenabled = true\ncreated_ms = 0\nupdated_ms = 0\n",
        key(1)
    );
    let e = Registry::from_toml(&format!(
        "{}{member}",
        ok.replace("next_id = 0", "next_id = 1")
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "member x (id 0): address 10.9.2.1 is not in segment a (it is in no segment)"
    );
    let e = Registry::from_toml(&format!("{ok}{member}")).unwrap_err();
    assert!(
        matches!(&e, LoadError::Member { source, .. } if matches!(**source, RegistryError::BadId { .. })),
        "{e}"
    );
}
