//! Replays the `overlay_registry` fuzz target's corpus on stable, and checks the seeds that
//! were made outside this crate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatekit_overlay::{LoadError, Registry};
use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/overlay_registry")
}

#[test]
fn replay_overlay_registry_corpus() {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus()).expect("corpus directory exists") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        gatekit_overlay::fuzz::registry_file(&data);
        n += 1;
    }
    assert!(n >= 5, "corpus has seeds ({n})");
}

/// `valid_with_crc.toml` was written by hand, its checksum line computed with Python's
/// `zlib.crc32`, and its key is the public key of RFC 7748 §6.1 (Alice's,
/// 8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a) in base64.
#[test]
fn seeds_made_elsewhere_load_as_written() {
    let r = Registry::load(corpus().join("valid_with_crc.toml")).unwrap();
    let alice = r.member_by_name("alice").unwrap();
    assert_eq!(
        alice.key.as_bytes()[..4],
        [0x85, 0x20, 0xf0, 0x09],
        "base64 read as WireGuard writes it"
    );
    assert_eq!(r.quarantined().count(), 1);
    assert!(matches!(
        Registry::load(corpus().join("hand_written.toml")),
        Err(LoadError::NoChecksum)
    ));
    let text = std::fs::read_to_string(corpus().join("hand_written.toml")).unwrap();
    assert_eq!(Registry::from_toml(&text).unwrap().len(), 1);
    assert!(matches!(
        Registry::load(corpus().join("bad_version.toml")).unwrap_err(),
        LoadError::NoChecksum
    ));
    let text = std::fs::read_to_string(corpus().join("overlapping.toml")).unwrap();
    assert_eq!(
        Registry::from_toml(&text).unwrap_err().to_string(),
        "plan: segment eng 10.100.1.0/24 overlaps segment ops 10.100.1.0/25"
    );
}
