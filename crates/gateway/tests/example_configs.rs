//! The example configs shipped for operators stay valid, and the error for a broken one
//! names its line and key.

use std::path::Path;

#[test]
fn shipped_configs_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let summary = gatekit_gateway::runtime::check(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(summary.contains(": ok ("), "{summary}");
            n += 1;
        }
    }
    assert!(n >= 2, "found {n} configs");
}

#[test]
fn broken_config_points_at_the_line() {
    let dir = std::env::temp_dir().join(format!("gatekit-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/configs/site-a.toml"),
    )
    .unwrap();
    let bad = src.replace(
        "encap = \"native\"",
        "encap = \"native\"\nkeepalive = \"often\"",
    );
    let p = dir.join("bad.toml");
    std::fs::write(&p, &bad).unwrap();
    let e = gatekit_gateway::runtime::check(&p).unwrap_err();
    let line = bad
        .lines()
        .position(|l| l.starts_with("keepalive"))
        .unwrap()
        + 1;
    assert!(e.contains(&format!("bad.toml:{line}:")), "{e}");
    assert!(e.contains("ipsec.peer[0].keepalive"), "{e}");
    // Rules that do not parse are refused by --check too, with the rule's line.
    let bad_rules = src.replace("--dport 23 -j REJECT", "--dport 23 -j REJECTT");
    std::fs::write(&p, &bad_rules).unwrap();
    let e = gatekit_gateway::runtime::check(&p).unwrap_err();
    assert!(e.contains("firewall"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn site_a_routes_its_overlay_and_advertises_it() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/configs/site-a.toml");
    let cfg = gatekit_gateway::config::Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.overlay.is_some());
    let gw = gatekit_gateway::pipeline::Gateway::new(cfg, gatekit_packet::Instant::ZERO)
        .unwrap_or_else(|e| panic!("{e}"));
    let adv: Vec<String> = gw
        .routing()
        .advertisements()
        .iter()
        .map(|a| format!("{} {} {}", a.prefix, a.metric, a.tag))
        .collect();
    assert_eq!(adv, ["10.1.0.0/24 10 65001", "10.100.0.0/16 10 65001"]);
    let s = gw.snapshot(gatekit_packet::Instant::ZERO);
    assert!(
        s.routes
            .iter()
            .any(|r| r.prefix == "10.100.0.0/16" && r.via == "interface:ovl0" && r.selected)
    );
}
