//! Replays the fuzz targets' seed corpora (`fuzz/corpus/route_*`) through the same entry points,
//! on stable, as part of the normal test run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        f(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

#[test]
fn route_ops_corpus() {
    replay("route_ops", gatekit_route::fuzz::ops);
}

#[test]
fn route_text_corpus() {
    replay("route_text", gatekit_route::fuzz::text);
}
