//! Replays the `ctl_request` fuzz target's corpus on stable, so what the fuzzer found stays
//! fixed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn replay_ctl_request_corpus() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/ctl_request");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory exists") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        gatekit_gateway::control::fuzz::ctl_request(&data);
        n += 1;
    }
    assert!(n >= 5, "corpus has seeds ({n})");
}
