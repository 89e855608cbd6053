use super::*;

const GOOD: &str = r#"
[gateway]
name = "site-a"
metrics = "127.0.0.1:9100"

[underlay]
address = "192.0.2.1"

[[interface]]
name = "lan0"
kind = "tun"
address = "10.1.0.1/24"

[[route]]
prefix = "10.2.0.0/16"
via = "ipsec:site-b"

[[ipsec.peer]]
name = "site-b"
remote = "198.51.100.2"
encap = "udp"

[[ipsec.peer.tunnel]]
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.2.0.0/16"]
spi_out = 0x2001
spi_in = 0x1001
key_out = "0102030405060708090a0b0c0d0e0f10 11121314"
key_in = "1102030405060708090a0b0c0d0e0f10 21222324"
"#;

#[test]
fn good_config_parses() {
    let c = Config::parse("a.toml", GOOD).unwrap();
    assert_eq!(c.gateway.name, "site-a");
    assert_eq!(c.resolve_via("ipsec:site-b"), Some(Via::Ipsec(0)));
    assert_eq!(c.ipsec.peer[0].tunnel[0].suite, Suite::Aes128Gcm);
    assert_eq!(c.ipsec.peer[0].keepalive, 20);
}

fn err(text: &str) -> ConfigError {
    Config::parse("site.toml", text).unwrap_err()
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = err(&GOOD.replace("encap = \"udp\"", "encap = \"udp\"\nencapsulation = 1"));
    assert_eq!(e.key, "ipsec.peer[0].encapsulation");
    assert_eq!(e.line, 22);
    assert!(e.message.contains("unknown field `encapsulation`"), "{e}");
    assert!(e.to_string().starts_with("site.toml:22:"), "{e}");
}

#[test]
fn bad_values_say_what_was_expected() {
    let e = err(&GOOD.replace("10.2.0.0/16\"\nvia", "10.2.0.0/33\"\nvia"));
    assert_eq!(e.key, "route[0].prefix");
    assert_eq!(e.line, 15);
    let e = err(&GOOD.replace("encap = \"udp\"", "encap = \"tcp\""));
    assert!(e.message.contains("expected `native` or `udp`"), "{e}");
    let e = err(&GOOD.replace("via = \"ipsec:site-b\"", "via = \"ipsec:site-c\""));
    assert_eq!((e.key.as_str(), e.line), ("route[0].via", 16));
    let e = err(&GOOD.replace(" 11121314\"", "\""));
    assert_eq!(e.key, "ipsec.peer[0].tunnel[0].key_out");
    assert!(
        e.message.contains("16 bytes of key material, expected 20"),
        "{e}"
    );
    let e = err(&GOOD.replace("spi_in = 0x1001", "spi_in = 7"));
    assert!(e.message.contains("reserved"), "{e}");
    let e = err(&GOOD.replace("127.0.0.1:9100", "0.0.0.0:9100"));
    assert_eq!(e.key, "gateway.metrics");
    let e = err("[gateway\nname=1");
    assert_eq!(e.line, 1);
    assert_eq!(e.key, "-");
}

#[test]
fn hex() {
    assert_eq!(decode_hex("0x0a:0B ff"), Some(vec![10, 11, 255]));
    assert_eq!(decode_hex("abc"), None);
    assert_eq!(decode_hex("zz"), None);
}
