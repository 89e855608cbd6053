//! A [`Snapshot`] as Prometheus text exposition format 0.0.4.
//!
//! Every family gets its `# HELP` and `# TYPE` lines, even when it has no sample, so that a
//! dashboard sees the metric exists. Counters end in `_total`; label values are escaped as the
//! format requires (`\\`, `\"`, `\n`).

use crate::status::{InterfaceStatus, SaStatus, Snapshot};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The `Content-Type` of what [`render_prometheus`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `s` as Prometheus text (format 0.0.4).
pub fn render_prometheus(s: &Snapshot) -> String {
    let mut out = Families(String::with_capacity(4096));
    let gw = [("gateway", s.name.as_str())];

    out.family("gatekit_info", "gauge", "The gateway's name, as a label.");
    out.sample("gatekit_info", &gw, 1.0);
    out.family(
        "gatekit_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
    );
    out.sample("gatekit_uptime_seconds", &[], s.uptime_secs);
    out.family(
        "gatekit_config_generation",
        "gauge",
        "Configurations applied so far (1 after start, +1 per successful reload).",
    );
    out.sample("gatekit_config_generation", &[], s.config_generation);
    out.family(
        "gatekit_reload_failures_total",
        "counter",
        "Reloads refused because the new configuration was bad.",
    );
    out.sample("gatekit_reload_failures_total", &[], s.reload_failures);

    type Counter = fn(&InterfaceStatus) -> u64;
    let ifaces: [(&str, &str, Counter); 5] = [
        (
            "gatekit_interface_rx_packets_total",
            "Packets received on the interface.",
            |i| i.rx_packets,
        ),
        (
            "gatekit_interface_rx_bytes_total",
            "Bytes received on the interface.",
            |i| i.rx_bytes,
        ),
        (
            "gatekit_interface_tx_packets_total",
            "Packets sent on the interface.",
            |i| i.tx_packets,
        ),
        (
            "gatekit_interface_tx_bytes_total",
            "Bytes sent on the interface.",
            |i| i.tx_bytes,
        ),
        (
            "gatekit_interface_drops_total",
            "Packets dropped at the interface (errors, full queues, too big).",
            |i| i.drops,
        ),
    ];
    for (name, help, get) in ifaces {
        out.family(name, "counter", help);
        for i in &s.interfaces {
            out.sample(name, &[("interface", &i.name), ("kind", &i.kind)], get(i));
        }
    }

    let sa_labels = |sa: &SaStatus| {
        [
            ("peer", sa.peer.clone()),
            ("spi", format!("{:#x}", sa.spi)),
            ("direction", sa.direction.clone()),
        ]
    };
    out.family(
        "gatekit_sa_packets_total",
        "counter",
        "Packets processed by the IPsec SA.",
    );
    for sa in &s.sas {
        out.sample_owned("gatekit_sa_packets_total", &sa_labels(sa), sa.packets);
    }
    out.family(
        "gatekit_sa_bytes_total",
        "counter",
        "Bytes processed by the IPsec SA.",
    );
    for sa in &s.sas {
        out.sample_owned("gatekit_sa_bytes_total", &sa_labels(sa), sa.bytes);
    }
    out.family(
        "gatekit_sa_drops_total",
        "counter",
        "Packets dropped by the IPsec SA, by reason.",
    );
    for sa in &s.sas {
        for (reason, n) in &sa.drops {
            let [p, spi, d] = sa_labels(sa);
            out.sample_owned(
                "gatekit_sa_drops_total",
                &[p, spi, d, ("reason", reason.clone())],
                *n,
            );
        }
    }
    out.family(
        "gatekit_sa_state",
        "gauge",
        "1 for the state the IPsec SA is in (active, soft-expired, expired, retiring).",
    );
    for sa in &s.sas {
        let [p, spi, d] = sa_labels(sa);
        out.sample_owned(
            "gatekit_sa_state",
            &[p, spi, d, ("state", sa.state.clone())],
            1.0,
        );
    }

    out.family(
        "gatekit_drops_total",
        "counter",
        "Packets dropped by the data path, by reason.",
    );
    for (reason, n) in &s.drops {
        out.sample("gatekit_drops_total", &[("reason", reason)], *n);
    }

    out.family(
        "gatekit_firewall_rule_packets_total",
        "counter",
        "Packets matched by the firewall rule.",
    );
    for r in &s.firewall_rules {
        let index = r.index.to_string();
        out.sample(
            "gatekit_firewall_rule_packets_total",
            &[("chain", &r.chain), ("index", &index)],
            r.packets,
        );
    }
    out.family(
        "gatekit_firewall_rule_bytes_total",
        "counter",
        "Bytes matched by the firewall rule.",
    );
    for r in &s.firewall_rules {
        let index = r.index.to_string();
        out.sample(
            "gatekit_firewall_rule_bytes_total",
            &[("chain", &r.chain), ("index", &index)],
            r.bytes,
        );
    }

    out.family(
        "gatekit_firewall_packets_total",
        "counter",
        "Packets through the firewall engine, by outcome (accepted ones also by path).",
    );
    let f = &s.firewall;
    for (outcome, n) in [
        ("seen", f.packets),
        ("accepted", f.accepted),
        ("rejected", f.rejected),
        ("translated", f.translated),
        ("fast_path", f.fast_path),
    ] {
        out.sample("gatekit_firewall_packets_total", &[("outcome", outcome)], n);
    }

    out.family("gatekit_conntrack_entries", "gauge", "Connections tracked.");
    out.sample("gatekit_conntrack_entries", &[], s.conntrack_total);

    let mut macs: BTreeMap<&str, u64> = BTreeMap::new();
    for m in &s.macs {
        *macs.entry(&m.bridge).or_default() += 1;
    }
    out.family(
        "gatekit_mac_entries",
        "gauge",
        "MAC addresses in the bridge domain's table.",
    );
    for (bridge, n) in macs {
        out.sample("gatekit_mac_entries", &[("bridge", bridge)], n);
    }

    let mut routes: BTreeMap<(&str, bool), u64> = BTreeMap::new();
    for r in &s.routes {
        *routes.entry((&r.source, r.selected)).or_default() += 1;
    }
    out.family(
        "gatekit_route_entries",
        "gauge",
        "Routes in the RIB, by source and whether they are selected (in the FIB).",
    );
    for ((source, selected), n) in routes {
        let selected = if selected { "true" } else { "false" };
        out.sample(
            "gatekit_route_entries",
            &[("source", source), ("selected", selected)],
            n,
        );
    }

    out.family(
        "gatekit_advertised_routes",
        "gauge",
        "Prefixes this gateway advertises to the mesh (its export policy applied to the RIB).",
    );
    out.sample("gatekit_advertised_routes", &[], s.advertised.len() as u64);

    out.family(
        "gatekit_captures_active",
        "gauge",
        "Ports being captured to pcap.",
    );
    out.sample("gatekit_captures_active", &[], s.captures.len());
    out.0
}

struct Families(String);

impl Families {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // HELP text escapes only backslash and newline (format 0.0.4).
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Num>) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(k);
                self.0.push_str("=\"");
                escape_label(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        self.0.push(' ');
        match value.into() {
            Num::Int(n) => {
                let _ = write!(self.0, "{n}");
            }
            Num::Float(v) => write_value(&mut self.0, v),
        }
        self.0.push('\n');
    }

    fn sample_owned(&mut self, name: &str, labels: &[(&str, String)], value: impl Into<Num>) {
        let borrowed: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.sample(name, &borrowed, value);
    }
}

/// A sample's value: counters stay exact integers, whatever their size.
enum Num {
    Int(u64),
    Float(f64),
}

impl From<u64> for Num {
    fn from(n: u64) -> Self {
        Num::Int(n)
    }
}

impl From<usize> for Num {
    fn from(n: usize) -> Self {
        Num::Int(n as u64)
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Self {
        Num::Float(v)
    }
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Display prints integers without a fraction and never uses an exponent.
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MacStatus;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label(&mut s, "a\"b\\c\nd");
        assert_eq!(s, r#"a\"b\\c\nd"#);
    }

    #[test]
    fn special_values() {
        let mut s = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 3.0, 0.25] {
            write_value(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "NaN +Inf -Inf 3 0.25 ");
    }

    #[test]
    fn families_have_help_and_type_even_when_empty() {
        let text = render_prometheus(&Snapshot::default());
        for family in [
            "gatekit_sa_packets_total",
            "gatekit_drops_total",
            "gatekit_mac_entries",
        ] {
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }
    }

    #[test]
    fn interface_and_mac_samples() {
        let s = Snapshot {
            interfaces: vec![InterfaceStatus {
                name: "lan0".into(),
                kind: "tun".into(),
                rx_packets: 7,
                ..InterfaceStatus::default()
            }],
            macs: vec![
                MacStatus {
                    bridge: "br0".into(),
                    ..MacStatus::default()
                },
                MacStatus {
                    bridge: "br0".into(),
                    ..MacStatus::default()
                },
            ],
            ..Snapshot::default()
        };
        let text = render_prometheus(&s);
        assert!(
            text.contains(
                "gatekit_interface_rx_packets_total{interface=\"lan0\",kind=\"tun\"} 7\n"
            )
        );
        assert!(text.contains("gatekit_mac_entries{bridge=\"br0\"} 2\n"));
    }
}
