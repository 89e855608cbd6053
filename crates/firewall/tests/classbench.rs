//! Every ClassBench set in the shared data classifies each trace header (and generated
//! headers) exactly like the linear scan. Runs on generated sets when the data is absent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use std::io::Read;
use std::path::{Path, PathBuf};

use gatekit_firewall::classbench::{parse_rules, parse_trace};
use gatekit_firewall::classify::{ClassRule, Classifier, FieldBox, Key, LinearClassifier};
use gatekit_testkit::Rng;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/classbench")
}

fn gunzip(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    flate2::read::GzDecoder::new(f)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// Headers that hit rule corners and random points, as the trace generator would not.
fn probe_keys(rules: &[ClassRule], rng: &mut Rng, n: usize) -> Vec<Key> {
    (0..n)
        .map(|_| {
            let r = &rules[rng.below(rules.len())].fields;
            let mut k = [0u32; 5];
            for d in 0..5 {
                k[d] = match rng.below(4) {
                    0 => r.lo[d],
                    1 => r.hi[d],
                    2 => {
                        r.lo[d]
                            + (rng.next_u64() as u32) % (r.hi[d] - r.lo[d]).saturating_add(1).max(1)
                    }
                    _ => (rng.next_u64() as u32) & FieldBox::ANY.hi[d],
                };
            }
            k
        })
        .collect()
}

fn check_set(name: &str, rules: &[ClassRule], trace: &[Key]) {
    let lin = LinearClassifier::new(rules.iter().copied()).unwrap();
    let tree = Classifier::new(rules.iter().copied()).unwrap();
    let mut mismatches = 0;
    for k in trace {
        let (a, b) = (lin.lookup(k), tree.lookup(k));
        if a != b {
            mismatches += 1;
            if mismatches < 5 {
                eprintln!("{name}: {k:?}: linear {a:?}, tree {b:?}");
            }
        }
    }
    assert_eq!(
        mismatches,
        0,
        "{name}: {mismatches} of {} differ",
        trace.len()
    );
    let mut batch = vec![None; trace.len()];
    tree.lookup_batch(trace, &mut batch);
    let single: Vec<Option<u32>> = trace.iter().map(|k| lin.lookup(k)).collect();
    assert!(
        batch == single,
        "{name}: batch lookup differs from the linear scan"
    );
}

#[test]
fn shared_classbench_sets_match_linear_scan() {
    let dir = data_dir();
    let mut sets = 0;
    for sub in ["lyxocs", "neurocuts"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let fname = path.file_name().unwrap().to_string_lossy().into_owned();
            if fname.contains("trace") || !fname.ends_with(".gz") {
                continue;
            }
            let Some(text) = gunzip(&path) else { continue };
            let rules = parse_rules(&text).unwrap_or_else(|e| panic!("{fname}: {e}"));
            let mut rng = Rng::new(rules.len() as u64);
            let mut keys = probe_keys(&rules, &mut rng, 5_000);
            let trace_path = path.with_file_name(fname.replace(".gz", "_trace.gz"));
            if let Some(t) = gunzip(&trace_path) {
                let trace = parse_trace(&t).unwrap_or_else(|e| panic!("{fname} trace: {e}"));
                // Every 4th header keeps the run short in debug builds; all kinds still hit.
                keys.extend(trace.iter().step_by(4));
            }
            check_set(&format!("{sub}/{fname}"), &rules, &keys);
            sets += 1;
        }
    }
    eprintln!("checked {sets} shared ClassBench sets");
    if std::env::var_os("CI").is_some() {
        assert!(
            sets > 0,
            "CI: the shared ClassBench data is missing at {}",
            dir.display()
        );
    }
}

#[test]
fn generated_sets_match_linear_scan() {
    for seed in 0..4u64 {
        let mut rng = Rng::new(seed);
        let rules = gatekit_firewall::classbench::generate(2_000, seed);
        let keys = probe_keys(&rules, &mut rng, 20_000);
        check_set(&format!("generated {seed}"), &rules, &keys);
    }
}

/// Rules of another set inserted into a built ClassBench set (and some deleted again): the
/// batch lookup must keep agreeing with the linear scan while what the build recorded about
/// the first tree searched (entry bounds, the trees a leaf skips) goes out of date.
#[test]
fn updates_on_classbench_sets_match_linear_scan() {
    let load = |name: &str, seed: u64| {
        gunzip(&data_dir().join("lyxocs").join(name))
            .map(|t| parse_rules(&t).unwrap_or_else(|e| panic!("{name}: {e}")))
            .unwrap_or_else(|| gatekit_firewall::classbench::generate(1_000, seed))
    };
    for (base, extra) in [("ipc1_1k.gz", "fw1_1k.gz"), ("acl1_1k.gz", "ipc1_1k.gz")] {
        let rules = load(base, 1);
        let mut rng = Rng::new(rules.len() as u64);
        let fresh: Vec<ClassRule> = load(extra, 2)
            .into_iter()
            .enumerate()
            .map(|(i, r)| ClassRule {
                id: 1_000_000 + i as u32,
                priority: rng.below(rules.len() + 1) as u32,
                ..r
            })
            .collect();
        let mut keys = probe_keys(&rules, &mut rng, 1_000);
        keys.extend(probe_keys(&fresh, &mut rng, 1_000));
        let mut tree = Classifier::new(rules.iter().copied()).unwrap();
        let mut lin = LinearClassifier::new(rules.iter().copied()).unwrap();
        let mut out = vec![None; keys.len()];
        for (i, r) in fresh.iter().enumerate() {
            tree.insert(*r).unwrap();
            lin.insert(*r).unwrap();
            if i % 3 == 2 {
                let gone = fresh[i - 1 - rng.below(2)].id;
                assert_eq!(tree.remove(gone), lin.remove(gone));
            }
            if i % 25 == 0 || i + 1 == fresh.len() {
                tree.lookup_batch(&keys, &mut out);
                for (k, o) in keys.iter().zip(&out) {
                    assert_eq!(
                        *o,
                        lin.lookup(k),
                        "{base} + {i} rules of {extra}: key {k:?}"
                    );
                }
            }
        }
    }
}
