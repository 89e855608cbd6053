//! The compiled classifier against the linear-scan oracle, on random rules and packets,
//! with inserts and deletes between lookups.

use gatekit_firewall::classify::{
    ClassRule, Classifier, FieldBox, Key, LinearClassifier, TreeConfig,
};
use proptest::prelude::*;

/// Ranges from a small pool of boundaries, so that random rules overlap and nest.
fn range(max: u32) -> impl Strategy<Value = (u32, u32)> {
    let bounds = prop_oneof![
        Just(0u32),
        Just(max),
        Just(max / 2),
        Just(max / 4),
        Just(max / 2 + 1),
        0..=max,
    ];
    (bounds.clone(), bounds).prop_map(|(a, b)| (a.min(b), a.max(b)))
}

fn field_box() -> impl Strategy<Value = FieldBox> {
    (
        range(u32::MAX),
        range(u32::MAX),
        range(0xffff),
        range(0xffff),
        prop_oneof![Just((0, 255)), Just((6, 6)), Just((17, 17)), Just((1, 1))],
    )
        .prop_map(|(s, d, sp, dp, p)| FieldBox {
            lo: [s.0, d.0, sp.0, dp.0, p.0],
            hi: [s.1, d.1, sp.1, dp.1, p.1],
        })
}

fn key_in(b: &FieldBox, picks: [u32; 5]) -> Key {
    let mut k = [0; 5];
    for d in 0..5 {
        let span = u64::from(b.hi[d] - b.lo[d]) + 1;
        k[d] = b.lo[d] + (u64::from(picks[d]) % span) as u32;
    }
    k
}

/// The first match by definition: of the rules whose box holds `k`, the one first in
/// (priority, id) order. The linear scan, which tests eight rules at a time, must give it.
fn first_by_definition(rules: &[ClassRule], k: &Key) -> Option<u32> {
    rules
        .iter()
        .filter(|r| r.fields.contains(k))
        .min_by_key(|r| (r.priority, r.id))
        .map(|r| r.id)
}

#[derive(Debug, Clone)]
enum Op {
    Insert(FieldBox, u32),
    Remove(usize),
    Lookup([u32; 5], usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (field_box(), 0u32..64).prop_map(|(b, p)| Op::Insert(b, p)),
        1 => any::<usize>().prop_map(Op::Remove),
        4 => (any::<[u32; 5]>(), any::<usize>()).prop_map(|(k, i)| Op::Lookup(k, i)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn first_match_equals_linear_scan(
        boxes in prop::collection::vec((field_box(), 0u32..50), 1..200),
        picks in prop::collection::vec((any::<usize>(), any::<[u32; 5]>()), 1..200),
        leaf in 1usize..10,
    ) {
        let rules: Vec<ClassRule> = boxes
            .iter()
            .enumerate()
            .map(|(i, (b, p))| ClassRule::new(*b, *p, i as u32))
            .collect();
        let cfg = TreeConfig { leaf_size: leaf, ..TreeConfig::default() };
        let tree = Classifier::build(rules.iter().copied(), cfg).unwrap();
        let lin = LinearClassifier::new(rules.iter().copied()).unwrap();
        for (i, p) in &picks {
            // Half the keys inside some rule, half anywhere.
            let k = if i % 2 == 0 { key_in(&rules[i % rules.len()].fields, *p) } else { *p };
            let k = [k[0], k[1], k[2] & 0xffff, k[3] & 0xffff, k[4] & 0xff];
            prop_assert_eq!(lin.lookup(&k), first_by_definition(&rules, &k), "scan, key {:?}", k);
            prop_assert_eq!(tree.lookup(&k), lin.lookup(&k), "key {:?}", k);
        }
        let keys: Vec<Key> = picks
            .iter()
            .map(|(_, p)| [p[0], p[1], p[2] & 0xffff, p[3] & 0xffff, p[4] & 0xff])
            .collect();
        let mut out = vec![None; keys.len()];
        tree.lookup_batch(&keys, &mut out);
        for (k, o) in keys.iter().zip(&out) {
            prop_assert_eq!(*o, lin.lookup(k), "batch, key {:?}", k);
        }
    }

    /// `lookup_with` (the engine's walk: a predicate for conditions beyond the box, and a
    /// restart after the rule last returned) against a scan in order. Inexact rules fail their
    /// predicate for about half the keys, so a rule that covers a region must not hide the
    /// rules after it unless it is exact.
    #[test]
    fn predicate_search_equals_scan(
        boxes in prop::collection::vec((field_box(), any::<bool>()), 1..150),
        picks in prop::collection::vec((any::<usize>(), any::<[u32; 5]>(), any::<u64>()), 1..150),
        leaf in 1usize..10,
    ) {
        let rules: Vec<ClassRule> = boxes
            .iter()
            .enumerate()
            .map(|(i, (b, exact))| {
                let id = i as u32;
                if *exact { ClassRule::new(*b, id, id) } else { ClassRule::inexact(*b, id, id) }
            })
            .collect();
        let cfg = TreeConfig { leaf_size: leaf, ..TreeConfig::default() };
        let tree = Classifier::build(rules.iter().copied(), cfg).unwrap();
        for (i, p, salt) in &picks {
            let k = if i % 2 == 0 { key_in(&rules[i % rules.len()].fields, *p) } else { *p };
            let k = [k[0], k[1], k[2] & 0xffff, k[3] & 0xffff, k[4] & 0xff];
            let pred = |id: u32| {
                rules[id as usize].exact
                    || (u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt) >> 63 == 1
            };
            // The engine's walk: each match of an inexact rule (one whose action lets the
            // walk go on) continues after it; an exact rule ends the walk.
            let mut want = Vec::new();
            for r in rules.iter().filter(|r| r.fields.contains(&k) && pred(r.id)) {
                want.push(r.id);
                if r.exact {
                    break;
                }
            }
            let mut got = Vec::new();
            let mut after = None;
            while let Some(id) = tree.lookup_with(&k, after, pred) {
                got.push(id);
                if rules[id as usize].exact || got.len() > rules.len() {
                    break;
                }
                after = Some(id);
            }
            prop_assert_eq!(got, want, "key {:?}", k);
        }
    }

    #[test]
    fn updates_between_lookups(
        initial in prop::collection::vec((field_box(), 0u32..64), 0..120),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let cfg = TreeConfig { leaf_size: 4, ..TreeConfig::default() };
        let rules: Vec<ClassRule> = initial
            .iter()
            .enumerate()
            .map(|(i, (b, p))| ClassRule::new(*b, *p, i as u32))
            .collect();
        let mut tree = Classifier::build(rules.iter().copied(), cfg).unwrap();
        let mut lin = LinearClassifier::new(rules.iter().copied()).unwrap();
        let mut live: Vec<ClassRule> = rules;
        let mut next_id = 10_000u32;
        for op in ops {
            match op {
                Op::Insert(b, p) => {
                    let r = ClassRule::new(b, p, next_id);
                    next_id += 1;
                    tree.insert(r).unwrap();
                    lin.insert(r).unwrap();
                    live.push(r);
                }
                Op::Remove(i) if !live.is_empty() => {
                    let r = live.swap_remove(i % live.len());
                    prop_assert!(tree.remove(r.id));
                    prop_assert!(lin.remove(r.id));
                    prop_assert!(!tree.remove(r.id));
                }
                Op::Remove(_) => {}
                Op::Lookup(p, i) => {
                    let k = match live.get(i % live.len().max(1)) {
                        Some(r) if i % 3 != 0 => key_in(&r.fields, p),
                        _ => [p[0], p[1], p[2] & 0xffff, p[3] & 0xffff, p[4] & 0xff],
                    };
                    prop_assert_eq!(lin.lookup(&k), first_by_definition(&live, &k), "scan, key {:?}", k);
                    prop_assert_eq!(tree.lookup(&k), lin.lookup(&k), "key {:?}", k);
                    let mut out = [None];
                    tree.lookup_batch(&[k], &mut out);
                    prop_assert_eq!(out[0], lin.lookup(&k), "batch, key {:?}", k);
                }
            }
        }
        prop_assert_eq!(tree.len(), lin.len());
    }
}

#[test]
fn duplicate_ids_and_bad_boxes_are_refused() {
    let r = ClassRule::new(FieldBox::ANY, 0, 7);
    let mut c = Classifier::new([r]).unwrap();
    assert!(c.insert(r).is_err());
    let mut bad = r;
    bad.id = 8;
    bad.fields.lo[2] = 9;
    bad.fields.hi[2] = 3;
    assert!(c.insert(bad).is_err());
    assert!(Classifier::new([r, r]).is_err());
    assert_eq!(c.len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Random rules as a dual-stack chain of the engine (IPv4 rules and IPv6 twins): over
    /// IPv4 the classified chain and over IPv6 the walked one agree with the linear scan,
    /// and no rule of one family matches a packet of the other.
    #[test]
    fn dual_stack_chain_agrees_with_linear_scan(
        n in 1u8..24,
        body in prop::collection::vec(any::<u8>(), 0..900),
    ) {
        let mut data = vec![0x40 | n];
        data.extend(body);
        gatekit_firewall::fuzz::dual_stack(&data);
    }
}

/// Rounds of inserting and deleting the same rules (which split leaves, shadow regions and
/// rebuild subtrees and whole trees) keep results equal to the linear scan, and memory near
/// what a fresh build takes.
#[test]
fn churn_matches_linear_scan_and_stays_bounded() {
    use gatekit_firewall::classbench::generate;
    let rules = generate(3_000, 5);
    let mut tree = Classifier::new(rules.iter().copied()).unwrap();
    let mut lin = LinearClassifier::new(rules.iter().copied()).unwrap();
    let built = tree.memory_bytes();
    let fresh: Vec<ClassRule> = generate(256, 6)
        .into_iter()
        .enumerate()
        .map(|(i, r)| ClassRule {
            id: 100_000 + i as u32,
            priority: (i as u32 * 7919) % 3_000,
            ..r
        })
        .collect();
    let keys: Vec<Key> = (0..2_000u32)
        .map(|i| {
            let b = &rules[(i as usize * 7) % rules.len()].fields;
            let f = &fresh[i as usize % fresh.len()].fields;
            let src = if i % 2 == 0 { b } else { f };
            let mut k = [0; 5];
            for (d, v) in k.iter_mut().enumerate() {
                let span = u64::from(src.hi[d] - src.lo[d]) + 1;
                let x = u64::from(i.wrapping_mul(0x9e37_79b9).rotate_left(d as u32 * 5));
                *v = src.lo[d] + (x % span) as u32;
            }
            k
        })
        .collect();
    let check = |tree: &Classifier, lin: &LinearClassifier, when: &str| {
        let mut out = vec![None; keys.len()];
        tree.lookup_batch(&keys, &mut out);
        for (k, o) in keys.iter().zip(&out) {
            let want = lin.lookup(k);
            assert_eq!(*o, want, "{when}: batch, key {k:?}");
            assert_eq!(tree.lookup(k), want, "{when}: key {k:?}");
        }
    };
    for round in 0..40 {
        for r in &fresh {
            tree.insert(*r).unwrap();
            lin.insert(*r).unwrap();
        }
        if round % 8 == 0 {
            check(&tree, &lin, "after inserts");
        }
        for (i, r) in fresh.iter().enumerate() {
            assert!(tree.remove(r.id));
            assert!(lin.remove(r.id));
            if round % 8 == 1 && i == fresh.len() / 2 {
                check(&tree, &lin, "halfway through deletes");
            }
        }
        // Early rules of the set cover regions of the trees; deleting one rebuilds them.
        let base: Vec<ClassRule> = (0..32).map(|j| rules[(round * 32 + j) % 400]).collect();
        for r in &base {
            assert!(tree.remove(r.id));
            assert!(lin.remove(r.id));
        }
        if round % 4 == 2 {
            check(&tree, &lin, "without some early rules");
        }
        for r in &base {
            tree.insert(*r).unwrap();
            lin.insert(*r).unwrap();
        }
    }
    check(&tree, &lin, "after all rounds");
    assert_eq!(tree.len(), rules.len());
    assert!(
        tree.memory_bytes() < 3 * built,
        "{} bytes after churn, {built} built",
        tree.memory_bytes()
    );
}
