//! Replays the fuzz seed corpus `fuzz/corpus/switch_forward` through the entry point the fuzz
//! target calls, on stable, plus byte-flipped variants of each seed.
#![allow(clippy::panic)]

use std::path::PathBuf;

#[test]
fn switch_forward_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/switch_forward");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let seed = std::fs::read(entry.map(|e| e.path()).unwrap_or_default()).unwrap_or_default();
        gatekit_switch::fuzz::switch_forward(&seed);
        for i in 0..seed.len() {
            let mut m = seed.clone();
            m[i] ^= 0xa5;
            gatekit_switch::fuzz::switch_forward(&m);
        }
        n += 1;
    }
    assert!(n > 0, "empty corpus");
}
