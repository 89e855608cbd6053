use super::*;

const SITE: &str = r#"
[gateway]
name = "site-a"

[underlay]
address = "192.0.2.1"

[[interface]]
name = "lan0"
kind = "tun"
address = "10.1.0.1/24"

[[interface]]
name = "ovl0"
kind = "tun"
address = "169.254.100.1/30"
advertise = false

[overlay]
prefixes = ["10.100.0.0/16", "fd00:100::/48"]
interface = "ovl0"
underlay = ["172.31.0.0/16"]

[[overlay.segment]]
name = "eng"
prefixes = ["10.100.1.0/24"]

[advertise]
tag = 65001
metric = 10
prefix_list = """
deny 10.1.128.0/17 le 32
permit 0.0.0.0/0 le 32
permit ::/0 le 128
"""
"#;

fn err(text: &str) -> ConfigError {
    Config::parse("site.toml", text).unwrap_err()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn overlay_and_advertise_parse() {
    let c = Config::parse("site.toml", SITE).unwrap();
    let o = c.overlay.as_ref().unwrap();
    assert_eq!(o.interface.get_ref(), "ovl0");
    assert!(o.advertise);
    let plan = c.overlay_plan().unwrap().unwrap();
    assert_eq!(plan.segment("eng").unwrap().prefixes.len(), 1);
    // The first host of each prefix is the gateway's, unless the section says otherwise.
    assert_eq!(plan.gateway()[0].to_string(), "10.100.0.1");
    assert_eq!(c.site_subnets(), ["10.1.0.0/24".parse::<IpNet>().unwrap()]);
    assert_eq!(c.advertise.tag_for(&c.gateway.name), 65001);
    let pl = c.advertise.parsed_prefix_list().unwrap().unwrap();
    assert!(!pl.permits(&"10.1.200.0/24".parse().unwrap()));
    // Without a tag the name decides it: stable, and distinct between gateways.
    let none = Advertise::default();
    assert_eq!(none.tag_for("site-a"), none.tag_for("site-a"));
    assert_ne!(none.tag_for("site-a"), none.tag_for("site-b"));
}

#[test]
fn overlay_errors_name_key_and_line() {
    let e = err(&SITE.replace("interface = \"ovl0\"", "interface = \"ovl0\"\nmtu = 1400"));
    assert_eq!(e.key, "overlay.mtu");
    assert!(e.message.contains("unknown field `mtu`"), "{e}");
    assert_eq!(e.line, line_of(SITE, "interface = \"ovl0\"") + 1);

    let bad = SITE.replace("\"10.100.0.0/16\"", "\"10.100.0.0/33\"");
    let e = err(&bad);
    assert_eq!(e.key, "overlay.prefixes[0]", "{e}");
    assert_eq!(e.line, line_of(&bad, "10.100.0.0/33"));

    let e = err(&SITE.replace("\"10.100.0.0/16\"", "\"10.100.7.0/16\""));
    assert_eq!(e.key, "overlay.prefixes");
    assert!(
        e.message.contains("host bits") && e.message.contains("10.100.0.0/16"),
        "{e}"
    );

    // A site subnet inside the overlay: lan0's connected prefix.
    let e = err(&SITE.replace("10.1.0.1/24", "10.100.9.1/24"));
    assert_eq!(e.key, "overlay.prefixes");
    assert!(
        e.message.contains("overlaps") && e.message.contains("10.100.9.0/24"),
        "{e}"
    );
    let e = err(&SITE.replace("172.31.0.0/16", "10.0.0.0/8"));
    assert!(e.message.contains("underlay"), "{e}");

    let e = err(&SITE.replace("\"10.100.1.0/24\"", "\"10.200.1.0/24\""));
    assert_eq!(e.key, "overlay.segment");
    assert!(e.message.contains("segment eng"), "{e}");

    let bad = SITE.replace("interface = \"ovl0\"", "interface = \"ovl9\"");
    let e = err(&bad);
    assert_eq!(e.key, "overlay.interface");
    assert_eq!(e.line, line_of(&bad, "ovl9"));
    assert!(
        e.message.contains("`ovl9`: expected the name of a `tun`"),
        "{e}"
    );

    let e = err(&SITE.replace("interface = \"ovl0\"\n", ""));
    assert!(e.message.contains("missing field `interface`"), "{e}");
    let e = err(&SITE.replace("\"10.100.0.0/16\", \"fd00:100::/48\"", ""));
    assert_eq!(e.key, "overlay.prefixes");
    assert!(e.message.contains("no prefix"), "{e}");
}

#[test]
fn advertise_and_route_errors() {
    let bad = SITE.replace("permit 0.0.0.0/0 le 32", "permit 0.0.0.0/0 le 33");
    let e = err(&bad);
    assert_eq!(e.key, "advertise.prefix_list");
    assert_eq!(e.line, line_of(&bad, "le 33"), "{e}");
    assert!(e.message.starts_with("line 2 of the list"), "{e}");
    let bad = SITE.replace("deny 10.1.128.0/17", "refuse 10.1.128.0/17");
    let e = err(&bad);
    assert_eq!(e.line, line_of(&bad, "refuse"), "{e}");
    assert!(e.message.contains("expected `permit` or `deny`"), "{e}");

    let e = err(&SITE.replace("metric = 10", "metric = 10\nmetirc = 3"));
    assert_eq!(e.key, "advertise.metirc");

    let route = "\n[[route]]\nprefix = \"10.3.0.0/16\"\nvia = \"interface:lan0\"\ndistance = 0\n";
    let e = err(&format!("{SITE}{route}"));
    assert_eq!(e.key, "route[0].distance");
    assert!(e.message.contains("expected 1 to 255"), "{e}");
    let e = err(&format!("{SITE}{}", route.replace("= 0", "= 256")));
    assert_eq!(e.key, "route[0].distance");

    let gre = "\n[[gre]]\nname = \"g1\"\nremote = \"192.0.2.9\"\nsubnets = [\"10.5.0.0/16\"]\n";
    let e = err(&format!("{SITE}{gre}"));
    assert_eq!(e.key, "gre[0].subnets");
    assert!(e.message.contains("`teb`"), "{e}");
    let ok = format!("{SITE}{}", gre.replace("subnets", "mode = \"ip\"\nsubnets"));
    Config::parse("site.toml", &ok).unwrap();
}
