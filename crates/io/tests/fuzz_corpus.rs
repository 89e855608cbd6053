//! Replays the `tun_vnet` fuzz target's corpus on stable, so what the fuzzer found stays fixed.

#[test]
fn replay_tun_vnet_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/tun_vnet");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory exists") {
        let data = std::fs::read(entry.expect("entry").path()).expect("readable seed");
        gatekit_io::fuzz::tun_vnet(&data);
        // Every prefix too: truncation is the commonest malformation.
        for cut in (0..data.len()).step_by(7) {
            gatekit_io::fuzz::tun_vnet(&data[..cut]);
        }
        n += 1;
    }
    assert!(n >= 5, "corpus has seeds ({n})");
}
