//! Readable tables of a [`Snapshot`] for `gatekitctl`.
//!
//! Columns are aligned on the widest cell (text to the left, numbers to the right), separated
//! by two spaces, with no trailing spaces; an empty table says so under its header.

use crate::status::Snapshot;
use std::fmt::Write;

/// Alignment of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}
use Align::{Left, Right};

/// Lays `rows` out under `headers`, aligned; `empty` is printed when there is no row.
fn table(headers: &[(&str, Align)], rows: &[Vec<String>], empty: &str) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, ((_, align), w))) in cells.zip(headers.iter().zip(&widths)).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = match align {
                Left => write!(l, "{cell:<w$}"),
                Right => write!(l, "{cell:>w$}"),
            };
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().map(|(h, _)| *h));
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    if rows.is_empty() {
        out.push_str(empty);
        out.push('\n');
    }
    out
}

/// `3d 4h 5m 6s`, leaving out leading zero units.
pub fn duration(secs: f64) -> String {
    let total = if secs.is_finite() && secs > 0.0 {
        secs as u64
    } else {
        0
    };
    let (d, h, m, s) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

/// The overview: name, uptime, configuration, table sizes, then the interfaces.
pub fn status(s: &Snapshot) -> String {
    let drops: u64 = s.drops.values().sum();
    let selected = s.routes.iter().filter(|r| r.selected).count();
    let mut out = String::new();
    let _ = writeln!(out, "gateway        {}", s.name);
    let _ = writeln!(out, "uptime         {}", duration(s.uptime_secs));
    let _ = writeln!(
        out,
        "configuration  generation {} ({} reloads refused)",
        s.config_generation, s.reload_failures
    );
    let _ = writeln!(out, "SAs            {}", s.sas.len());
    let _ = writeln!(
        out,
        "routes         {} ({selected} selected)",
        s.routes.len()
    );
    let _ = writeln!(
        out,
        "advertised     {} (tag {})",
        s.advertised.len(),
        s.advertise_tag
    );
    let _ = writeln!(out, "MACs           {}", s.macs.len());
    let _ = writeln!(out, "connections    {}", s.conntrack_total);
    let _ = writeln!(
        out,
        "firewall rules {} (packets {}, accepted {}, {} by the flow fast path)",
        s.firewall_rules.len(),
        s.firewall.packets,
        s.firewall.accepted,
        s.firewall.fast_path
    );
    let _ = writeln!(out, "drops          {drops}");
    if s.captures.is_empty() {
        let _ = writeln!(out, "captures       none");
    } else {
        let list: Vec<String> = s
            .captures
            .iter()
            .map(|(p, f)| format!("{p} → {f}"))
            .collect();
        let _ = writeln!(out, "captures       {}", list.join(", "));
    }
    out.push('\n');
    out.push_str(&interfaces(s));
    out
}

/// Per-interface traffic.
pub fn interfaces(s: &Snapshot) -> String {
    let rows: Vec<Vec<String>> = s
        .interfaces
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.kind.clone(),
                i.rx_packets.to_string(),
                i.rx_bytes.to_string(),
                i.tx_packets.to_string(),
                i.tx_bytes.to_string(),
                i.drops.to_string(),
            ]
        })
        .collect();
    table(
        &[
            ("INTERFACE", Left),
            ("KIND", Left),
            ("RX PACKETS", Right),
            ("RX BYTES", Right),
            ("TX PACKETS", Right),
            ("TX BYTES", Right),
            ("DROPS", Right),
        ],
        &rows,
        "(no interfaces)",
    )
}

/// The IPsec SAs.
pub fn sas(s: &Snapshot) -> String {
    let rows: Vec<Vec<String>> = s
        .sas
        .iter()
        .map(|sa| {
            let drops: u64 = sa.drops.values().sum();
            vec![
                sa.peer.clone(),
                format!("{:#010x}", sa.spi),
                sa.direction.clone(),
                sa.mode.clone(),
                sa.suite.clone(),
                sa.encap.clone(),
                sa.packets.to_string(),
                sa.bytes.to_string(),
                drops.to_string(),
                sa.state.clone(),
            ]
        })
        .collect();
    table(
        &[
            ("PEER", Left),
            ("SPI", Left),
            ("DIR", Left),
            ("MODE", Left),
            ("SUITE", Left),
            ("ENCAP", Left),
            ("PACKETS", Right),
            ("BYTES", Right),
            ("DROPS", Right),
            ("STATE", Left),
        ],
        &rows,
        "(no SAs)",
    )
}

/// The RIB; `*` marks the selected routes, `-` the disabled ones.
pub fn routes(s: &Snapshot) -> String {
    let rows: Vec<Vec<String>> = s
        .routes
        .iter()
        .map(|r| {
            vec![
                match (r.selected, r.enabled) {
                    (true, _) => "*",
                    (false, false) => "-",
                    (false, true) => "",
                }
                .to_string(),
                r.prefix.clone(),
                r.via.clone(),
                r.source.clone(),
                r.distance.to_string(),
                r.metric.to_string(),
            ]
        })
        .collect();
    table(
        &[
            ("", Left),
            ("PREFIX", Left),
            ("VIA", Left),
            ("SOURCE", Left),
            ("DISTANCE", Right),
            ("METRIC", Right),
        ],
        &rows,
        "(no routes)",
    )
}

/// What the gateway advertises to the mesh, and the tag it carries.
pub fn advertised(s: &Snapshot) -> String {
    let rows: Vec<Vec<String>> = s
        .advertised
        .iter()
        .map(|a| {
            vec![
                a.prefix.clone(),
                a.from.clone(),
                a.metric.to_string(),
                a.tag.to_string(),
            ]
        })
        .collect();
    table(
        &[
            ("PREFIX", Left),
            ("FROM", Left),
            ("METRIC", Right),
            ("TAG", Right),
        ],
        &rows,
        "(nothing advertised)",
    )
}

/// The MAC tables.
pub fn macs(s: &Snapshot) -> String {
    let rows: Vec<Vec<String>> = s
        .macs
        .iter()
        .map(|m| {
            vec![
                m.bridge.clone(),
                m.mac.clone(),
                m.port.clone(),
                m.vlan.map_or_else(|| "-".into(), |v| v.to_string()),
                if m.is_static { "static" } else { "learned" }.into(),
                if m.is_static {
                    "-".into()
                } else {
                    format!("{}s", m.age_secs)
                },
            ]
        })
        .collect();
    table(
        &[
            ("BRIDGE", Left),
            ("MAC", Left),
            ("PORT", Left),
            ("VLAN", Right),
            ("TYPE", Left),
            ("AGE", Right),
        ],
        &rows,
        "(no MAC addresses)",
    )
}

/// Tracked connections, with a note when the snapshot holds only the first of them.
pub fn conntrack(s: &Snapshot) -> String {
    let rows: Vec<Vec<String>> = s
        .conntrack
        .iter()
        .map(|c| {
            vec![
                c.proto.clone(),
                c.src.clone(),
                c.dst.clone(),
                c.state.clone(),
                c.nat.clone().unwrap_or_else(|| "-".into()),
                c.packets.to_string(),
                format!("{}s", c.expires_secs),
            ]
        })
        .collect();
    let mut out = table(
        &[
            ("PROTO", Left),
            ("SOURCE", Left),
            ("DESTINATION", Left),
            ("STATE", Left),
            ("NAT", Left),
            ("PACKETS", Right),
            ("EXPIRES", Right),
        ],
        &rows,
        "(no connections)",
    );
    let shown = s.conntrack.len() as u64;
    if s.conntrack_total > shown {
        let _ = writeln!(out, "({shown} of {} connections shown)", s.conntrack_total);
    }
    out
}

/// Firewall rules with their hit counters.
pub fn rules(s: &Snapshot) -> String {
    let rows: Vec<Vec<String>> = s
        .firewall_rules
        .iter()
        .map(|r| {
            vec![
                r.chain.clone(),
                r.index.to_string(),
                r.packets.to_string(),
                r.bytes.to_string(),
                r.text.clone(),
            ]
        })
        .collect();
    table(
        &[
            ("CHAIN", Left),
            ("#", Right),
            ("PACKETS", Right),
            ("BYTES", Right),
            ("RULE", Left),
        ],
        &rows,
        "(no firewall rules)",
    )
}

/// Counters: per interface, then drops by reason (data path and per SA).
pub fn counters(s: &Snapshot) -> String {
    let mut out = interfaces(s);
    out.push('\n');
    let mut rows: Vec<Vec<String>> = s
        .drops
        .iter()
        .map(|(reason, n)| vec!["data path".into(), reason.clone(), n.to_string()])
        .collect();
    for sa in &s.sas {
        for (reason, n) in &sa.drops {
            rows.push(vec![
                format!("SA {} {:#010x} {}", sa.peer, sa.spi, sa.direction),
                reason.clone(),
                n.to_string(),
            ]);
        }
    }
    out.push_str(&table(
        &[("WHERE", Left), ("DROP REASON", Left), ("PACKETS", Right)],
        &rows,
        "(no drops)",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ConnStatus, MacStatus, RouteStatus, RuleStatus, SaStatus};

    fn sa(peer: &str, spi: u32, dir: &str, packets: u64) -> SaStatus {
        SaStatus {
            peer: peer.into(),
            spi,
            direction: dir.into(),
            mode: "tunnel".into(),
            suite: "aes128gcm16".into(),
            encap: "udp:198.51.100.2:4500".into(),
            packets,
            bytes: packets * 100,
            state: "active".into(),
            ..SaStatus::default()
        }
    }

    #[test]
    fn sa_table_is_aligned() {
        let mut s = Snapshot {
            sas: vec![
                sa("site-b", 0x1001, "in", 12345),
                sa("hq", 0xc0ffee, "out", 7),
            ],
            ..Snapshot::default()
        };
        s.sas[0].drops.insert("replay".into(), 3);
        let expected = "\
PEER    SPI         DIR  MODE    SUITE        ENCAP                  PACKETS    BYTES  DROPS  STATE
site-b  0x00001001  in   tunnel  aes128gcm16  udp:198.51.100.2:4500    12345  1234500      3  active
hq      0x00c0ffee  out  tunnel  aes128gcm16  udp:198.51.100.2:4500        7      700      0  active
";
        assert_eq!(sas(&s), expected);
    }

    #[test]
    fn empty_tables_say_so() {
        let s = Snapshot::default();
        assert_eq!(
            sas(&s),
            "PEER  SPI  DIR  MODE  SUITE  ENCAP  PACKETS  BYTES  DROPS  STATE\n(no SAs)\n"
        );
        assert!(macs(&s).ends_with("(no MAC addresses)\n"));
        assert!(counters(&s).ends_with("(no drops)\n"));
    }

    #[test]
    fn routes_mark_the_selected() {
        let s = Snapshot {
            routes: vec![
                RouteStatus {
                    prefix: "10.2.0.0/16".into(),
                    via: "ipsec:site-b".into(),
                    source: "static".into(),
                    distance: 1,
                    metric: 0,
                    selected: true,
                    enabled: true,
                },
                RouteStatus {
                    prefix: "10.2.0.0/16".into(),
                    via: "gre:gre-b".into(),
                    source: "mesh".into(),
                    distance: 200,
                    metric: 10,
                    selected: false,
                    enabled: true,
                },
                RouteStatus {
                    prefix: "10.2.0.0/16".into(),
                    via: "ipsec:site-c".into(),
                    source: "static".into(),
                    distance: 1,
                    metric: 0,
                    selected: false,
                    enabled: false,
                },
            ],
            ..Snapshot::default()
        };
        let expected = concat!(
            "   PREFIX       VIA           SOURCE  DISTANCE  METRIC\n",
            "*  10.2.0.0/16  ipsec:site-b  static         1       0\n",
            "   10.2.0.0/16  gre:gre-b     mesh         200      10\n",
            "-  10.2.0.0/16  ipsec:site-c  static         1       0\n",
        );
        assert_eq!(routes(&s), expected);
    }

    #[test]
    fn advertised_lists_prefix_source_metric_tag() {
        use crate::status::AdvertStatus;
        let s = Snapshot {
            advertised: vec![AdvertStatus {
                prefix: "10.1.0.0/24".into(),
                from: "connected".into(),
                metric: 10,
                tag: 65001,
            }],
            advertise_tag: 65001,
            ..Snapshot::default()
        };
        let expected = concat!(
            "PREFIX       FROM       METRIC    TAG\n",
            "10.1.0.0/24  connected      10  65001\n",
        );
        assert_eq!(advertised(&s), expected);
        assert!(status(&s).contains("advertised     1 (tag 65001)"));
        assert!(advertised(&Snapshot::default()).ends_with("(nothing advertised)\n"));
    }

    #[test]
    fn macs_static_and_learned() {
        let s = Snapshot {
            macs: vec![
                MacStatus {
                    bridge: "br0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    port: "tap0".into(),
                    vlan: Some(10),
                    age_secs: 42,
                    is_static: false,
                },
                MacStatus {
                    bridge: "br0".into(),
                    mac: "02:00:00:00:00:02".into(),
                    port: "gre-b".into(),
                    vlan: None,
                    age_secs: 0,
                    is_static: true,
                },
            ],
            ..Snapshot::default()
        };
        let expected = "\
BRIDGE  MAC                PORT   VLAN  TYPE     AGE
br0     02:00:00:00:00:01  tap0     10  learned  42s
br0     02:00:00:00:00:02  gre-b     -  static     -
";
        assert_eq!(macs(&s), expected);
    }

    #[test]
    fn conntrack_notes_truncation() {
        let s = Snapshot {
            conntrack: vec![ConnStatus {
                proto: "tcp".into(),
                src: "10.1.0.2:40000".into(),
                dst: "10.2.0.2:80".into(),
                state: "established".into(),
                nat: None,
                expires_secs: 431999,
                packets: 10,
            }],
            conntrack_total: 5,
            ..Snapshot::default()
        };
        let expected = "\
PROTO  SOURCE          DESTINATION  STATE        NAT  PACKETS  EXPIRES
tcp    10.1.0.2:40000  10.2.0.2:80  established  -         10  431999s
(1 of 5 connections shown)
";
        assert_eq!(conntrack(&s), expected);
    }

    #[test]
    fn rules_and_counters() {
        let mut s = Snapshot {
            firewall_rules: vec![RuleStatus {
                chain: "FORWARD_CUST".into(),
                index: 0,
                text: "-p tcp --dport 23 -j DROP".into(),
                packets: 2,
                bytes: 120,
            }],
            sas: vec![sa("site-b", 0x1001, "in", 1)],
            ..Snapshot::default()
        };
        s.drops.insert("filtered".into(), 2);
        s.sas[0].drops.insert("replay".into(), 1);
        assert_eq!(
            rules(&s),
            "CHAIN         #  PACKETS  BYTES  RULE\nFORWARD_CUST  0        2    120  -p tcp --dport 23 -j DROP\n"
        );
        let c = counters(&s);
        assert!(
            c.contains("\nWHERE                    DROP REASON  PACKETS\n"),
            "{c}"
        );
        assert!(
            c.contains("\ndata path                filtered           2\n"),
            "{c}"
        );
        assert!(
            c.contains("\nSA site-b 0x00001001 in  replay             1\n"),
            "{c}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(5.9), "5s");
        assert_eq!(duration(65.0), "1m 5s");
        assert_eq!(duration(3600.0 * 2.0 + 1.0), "2h 0m 1s");
        assert_eq!(duration(86_400.0 * 3.0 + 3661.0), "3d 1h 1m 1s");
        assert_eq!(duration(f64::NAN), "0s");
        assert_eq!(duration(-4.0), "0s");
    }
}
