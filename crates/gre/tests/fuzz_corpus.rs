//! Replays the fuzz seed corpora (`fuzz/corpus/gre_decap`, `fuzz/corpus/vxlan_decap`) through
//! the same entry points the fuzz targets call, on stable, plus some truncations of each.
#![allow(clippy::panic)]

use std::path::PathBuf;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.map(|e| e.path()).unwrap_or_default()).unwrap_or_default())
        .collect();
    assert!(!out.is_empty(), "empty corpus {name}");
    out.sort();
    out
}

#[test]
fn gre_decap_corpus() {
    for seed in corpus("gre_decap") {
        for cut in 0..=seed.len() {
            gatekit_gre::fuzz::gre_decap(&seed[..cut]);
        }
    }
}

#[test]
fn vxlan_decap_corpus() {
    for seed in corpus("vxlan_decap") {
        for cut in 0..=seed.len() {
            gatekit_gre::fuzz::vxlan_decap(&seed[..cut]);
        }
    }
}
