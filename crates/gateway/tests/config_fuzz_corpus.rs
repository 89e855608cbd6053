//! Replays the `gateway_config` fuzz target's corpus on stable (the example and demo configs,
//! broken ones, and whatever the fuzzer found), plus truncations and byte flips of each seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn replay_gateway_config_corpus() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/gateway_config");
    let mut seeds = 0;
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory exists") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&data).into_owned();
        if gatekit_gateway::config::Config::parse("seed.toml", &text).is_ok() {
            parsed += 1;
        }
        gatekit_gateway::config::fuzz::config(&data);
        // Cut at every fourth line end, and flip one byte in every 211 (each call builds a
        // whole pipeline when the text passes: a debug build takes its time).
        for (i, _) in data
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .step_by(4)
        {
            gatekit_gateway::config::fuzz::config(&data[..i]);
        }
        for i in (0..data.len()).step_by(211) {
            let mut v = data.clone();
            v[i] ^= 0x21;
            gatekit_gateway::config::fuzz::config(&v);
        }
        seeds += 1;
    }
    assert!(seeds >= 6, "corpus has seeds ({seeds})");
    // The example configs are among the seeds, and they are valid.
    assert!(parsed >= 4, "valid configs among the seeds: {parsed}");
}
