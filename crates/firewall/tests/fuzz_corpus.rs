//! Replays the fuzz seed corpus (`fuzz/corpus/fw_*`) through the same entry points the fuzz
//! targets call, on stable.
#![allow(clippy::panic)]

use std::path::Path;

type Target = (&'static str, fn(&[u8]));

#[test]
fn replay_fuzz_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let targets: [Target; 4] = [
        ("fw_iptables", gatekit_firewall::fuzz::iptables),
        ("fw_classbench", gatekit_firewall::fuzz::classbench),
        ("fw_classify", gatekit_firewall::fuzz::classify),
        ("fw_conntrack", gatekit_firewall::fuzz::conntrack),
    ];
    let mut n = 0;
    for (name, f) in targets {
        let Ok(dir) = std::fs::read_dir(root.join(name)) else {
            panic!("missing corpus directory fuzz/corpus/{name}");
        };
        for e in dir.flatten() {
            let data = std::fs::read(e.path()).unwrap_or_default();
            f(&data);
            n += 1;
        }
    }
    assert!(n >= 4, "corpus files replayed: {n}");
}
