//! Replays the `flow_key` fuzz target's corpus on stable, so what the fuzzer found stays fixed.

#[test]
fn replay_flow_key_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/flow_key");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory exists") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        gatekit_packet::fuzz::flow_key(&data);
        n += 1;
    }
    assert!(n >= 5, "corpus has seeds ({n})");
}
