//! Replays the seed corpora of the fuzz targets (`fuzz/corpus/esp_decap`,
//! `fuzz/corpus/esp_natt_demux`) through the same entry points the targets call, on stable,
//! plus a sweep of truncations and single-byte changes of each seed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn variants(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut v = vec![seed.to_vec()];
    for cut in 0..seed.len().min(80) {
        v.push(seed[..cut].to_vec());
    }
    for i in 0..seed.len().min(80) {
        for x in [0x01u8, 0x80, 0xff] {
            let mut m = seed.to_vec();
            m[i] ^= x;
            v.push(m);
        }
    }
    v
}

#[test]
fn esp_decap_corpus() {
    for seed in corpus("esp_decap") {
        for input in variants(&seed) {
            gatekit_esp::fuzz::decap(&input);
        }
    }
}

#[test]
fn esp_natt_demux_corpus() {
    for seed in corpus("esp_natt_demux") {
        for input in variants(&seed) {
            gatekit_esp::fuzz::natt_demux(&input);
        }
    }
}

/// The null-AEAD seeds are well-formed packets of the fuzz endpoint's null SA (SPI 0x103), so
/// the fuzzer starts past authentication.
#[test]
fn null_seeds_reach_the_inner_packet() {
    use gatekit_esp::{Decap, Direction, Endpoint, KeyMaterial, SaConfig, Suite};
    use gatekit_packet::{Instant, PktBuf};
    let mut ep = Endpoint::default();
    let km = KeyMaterial::new(Suite::Null, &[0x42; 4]).unwrap();
    let (l, p) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    let cfg = SaConfig::new(0x103, Direction::Inbound, Suite::Null, km, l, p).udp_encap(4500, 4500);
    ep.add_sa(&cfg, Instant::ZERO).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/esp_decap");
    let esp = std::fs::read(dir.join("null_tunnel_esp.bin")).unwrap();
    let natt = std::fs::read(dir.join("null_tunnel_natt_ipv4.bin")).unwrap();
    let dummy = std::fs::read(dir.join("null_dummy.bin")).unwrap();
    let t = Instant::ZERO;
    assert!(matches!(
        ep.decap_esp(&mut PktBuf::from_slice(&esp, 0, 0), t),
        Decap::Inner(_)
    ));
    assert!(matches!(
        ep.decap_ip(&mut PktBuf::from_slice(&natt, 0, 0), t),
        Decap::Inner(_)
    ));
    assert!(matches!(
        ep.decap_esp(&mut PktBuf::from_slice(&dummy, 0, 0), t),
        Decap::Dummy(_)
    ));
}
