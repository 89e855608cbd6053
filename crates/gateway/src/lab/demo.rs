//! The demo the gateway runs with no config: the lab's five stories, told as a transcript.

use super::{A1, B1, L2A, L2B, Lab, TcpFailure};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// What the demo showed, for tests and the exit code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DemoOutcome {
    /// The HTTP-like exchange through the ESP/NAT-T tunnel completed.
    pub tcp_ok: bool,
    /// The firewalled port was refused.
    pub blocked_ok: bool,
    /// ARP resolved and pings answered across the bridged sites.
    pub l2_ok: bool,
    /// Advertisements crossed, and traffic kept flowing on the next best route when the
    /// selected ones were disabled.
    pub routing_ok: bool,
    /// Packets written to the pcap files (internet, site-B L2).
    pub captured: (u64, u64),
}

impl DemoOutcome {
    /// Whether every story ended as it should.
    pub fn all_ok(&self) -> bool {
        self.tcp_ok && self.blocked_ok && self.l2_ok && self.routing_ok
    }
}

fn secs(lab: &Lab) -> f64 {
    lab.now.as_nanos() as f64 / 1e9
}

/// Runs the demo, writing the transcript to `out` and, with `pcap_dir`, pcap files there.
pub fn run(out: &mut dyn Write, pcap_dir: Option<&Path>) -> std::io::Result<DemoOutcome> {
    let mut lab = Lab::new().map_err(std::io::Error::other)?;
    let mut outcome = DemoOutcome::default();
    writeln!(
        out,
        "gatekit demo: two sites, two gateways, one NAT, all in memory (simulated time)"
    )?;
    writeln!(out)?;
    writeln!(out, "  site A  a1 {A1} ── lan0 gw-a 198.51.100.1 ─┐")?;
    writeln!(
        out,
        "          l2a {L2A} ── l2 (bridge br0)      │ internet"
    )?;
    writeln!(
        out,
        "  site B  b1 {B1} ── lan0 gw-b 192.168.0.2 ─┴─ NAT 203.0.113.2"
    )?;
    writeln!(out, "          l2b {L2B} ── l2 (bridge br0)")?;
    writeln!(out)?;
    writeln!(
        out,
        "  10.1.0.0/24 <-> 10.2.0.0/24: ESP tunnel mode, AES-GCM-128, in UDP 4500 (NAT-T)"
    )?;
    writeln!(
        out,
        "  br0 <-> br0: Ethernet over GRE (key 42) inside ESP transport mode, ChaCha20-Poly1305"
    )?;
    writeln!(
        out,
        "  gw-b firewall: FORWARD_CUST -p tcp --dport 23 -j REJECT --reject-with tcp-reset"
    )?;
    if let Some(dir) = pcap_dir {
        let (a, b) = lab.capture(dir)?;
        writeln!(out, "  capturing to {} and {}", a.display(), b.display())?;
    }
    writeln!(out)?;

    // 1. NAT traversal: site B's keepalives open the NAT.
    let opened = lab.run_until(Duration::from_secs(5), |l| l.net.nat.mappings().count() > 0);
    let (pub_port, priv_port) = lab.net.nat.mappings().next().unwrap_or((0, 0));
    writeln!(
        out,
        "[{:7.3}s] 1. NAT-T: gw-b's keepalive (RFC 3948) opened the NAT: 192.168.0.2:{priv_port} -> 203.0.113.2:{pub_port}{}",
        secs(&lab),
        if opened { "" } else { " (FAILED)" }
    )?;

    // 2. TCP through the tunnel.
    let req = b"GET /status HTTP/1.0\r\nHost: b1\r\n\r\n";
    let resp = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from site B, through ESP in UDP across a NAT\n";
    writeln!(
        out,
        "[{:7.3}s] 2. TCP: a1 connects to {B1}:80 and sends {:?}",
        secs(&lab),
        String::from_utf8_lossy(&req[..20])
    )?;
    match lab.tcp_exchange(80, req, resp) {
        Ok(got) => {
            outcome.tcp_ok = got == resp;
            let body = String::from_utf8_lossy(&got);
            writeln!(
                out,
                "[{:7.3}s]    a1 received {} bytes: {:?}",
                secs(&lab),
                got.len(),
                body.lines().last().unwrap_or("")
            )?;
        }
        Err(e) => writeln!(out, "[{:7.3}s]    FAILED: {e:?}", secs(&lab))?,
    }
    for (name, gw) in [("gw-a", &lab.gw_a), ("gw-b", &lab.gw_b)] {
        for (_, sa) in gw.esp().iter() {
            if sa.stats().packets > 0 {
                writeln!(
                    out,
                    "             {name} SA spi {:#010x} {:?}: {} packets, {} bytes",
                    sa.spi(),
                    sa.direction(),
                    sa.stats().packets,
                    sa.stats().bytes
                )?;
            }
        }
    }

    // 3. The firewall.
    writeln!(
        out,
        "[{:7.3}s] 3. Firewall: a1 connects to {B1}:23 (telnet), which gw-b rejects",
        secs(&lab)
    )?;
    match lab.tcp_exchange(23, b"login\r\n", b"") {
        Err(TcpFailure::Refused) => {
            outcome.blocked_ok = true;
            writeln!(
                out,
                "[{:7.3}s]    connection refused: gw-b answered the SYN with a TCP RST",
                secs(&lab)
            )?;
        }
        other => writeln!(out, "[{:7.3}s]    UNEXPECTED: {other:?}", secs(&lab))?,
    }
    if let Some(fw) = lab.gw_b.firewall().engine() {
        let hits: u64 = fw.rule_counters().iter().map(|c| c[0]).sum();
        writeln!(
            out,
            "             gw-b firewall: {hits} rule hits, {} flows tracked so far",
            fw.conn_stats().inserted
        )?;
    }

    // 4. L2 bridging over GRE over ESP.
    writeln!(
        out,
        "[{:7.3}s] 4. Bridging: l2a ({L2A}) pings l2b ({L2B}) on the same subnet, one site away",
        secs(&lab)
    )?;
    let replies = lab.l2_ping(3);
    outcome.l2_ok = replies == [0, 1, 2];
    writeln!(
        out,
        "[{:7.3}s]    ARP resolved across sites; {}/3 echo replies",
        secs(&lab),
        replies.len()
    )?;
    for (name, gw) in [("gw-a", &lab.gw_a), ("gw-b", &lab.gw_b)] {
        writeln!(
            out,
            "             {name} learned {} MACs in br0",
            gw.fabric().mac_count()
        )?;
    }

    // 5. The RIB and redistribution.
    outcome.routing_ok = routing_story(&mut lab, out)?;

    let drops_a: Vec<String> = lab
        .gw_a
        .all_drops()
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    let drops_b: Vec<String> = lab
        .gw_b
        .all_drops()
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    writeln!(out)?;
    writeln!(
        out,
        "counters: gw-a {} (underlay rx {} tx {}), gw-b {} (underlay rx {} tx {})",
        if drops_a.is_empty() {
            "no drops".into()
        } else {
            drops_a.join(" ")
        },
        lab.gw_a.underlay_counters.rx_packets,
        lab.gw_a.underlay_counters.tx_packets,
        if drops_b.is_empty() {
            "no drops".into()
        } else {
            drops_b.join(" ")
        },
        lab.gw_b.underlay_counters.rx_packets,
        lab.gw_b.underlay_counters.tx_packets
    )?;
    outcome.captured = lab.captured();
    drop(lab); // flushes the captures
    if pcap_dir.is_some() {
        writeln!(
            out,
            "pcap: {} packets on the internet, {} on site B's bridged segment (open them in Wireshark)",
            outcome.captured.0, outcome.captured.1
        )?;
    }
    writeln!(
        out,
        "{}",
        if outcome.all_ok() {
            "demo: all five stories ended as expected"
        } else {
            "demo: SOMETHING WENT WRONG"
        }
    )?;
    Ok(outcome)
}

/// Story 5: what gw-a advertises reaches gw-b as mesh routes; gw-b's RIB falls back to them.
fn routing_story(lab: &mut Lab, out: &mut dyn Write) -> std::io::Result<bool> {
    use crate::pipeline::NextHop;
    use gatekit_route::Source;
    writeln!(
        out,
        "[{:7.3}s] 5. Routing: each gateway's RIB exports its site prefix into the mesh",
        secs(lab)
    )?;
    for (name, gw) in [("gw-a", &lab.gw_a), ("gw-b", &lab.gw_b)] {
        for a in gw.routing().advert_status() {
            writeln!(
                out,
                "             {name} advertises {} (from {}, metric {}, tag {})",
                a.prefix, a.from, a.metric, a.tag
            )?;
        }
    }
    let (into_b, into_a) = match lab.exchange_advertisements() {
        Ok(n) => n,
        Err(e) => {
            writeln!(out, "             FAILED: {e}")?;
            return Ok(false);
        }
    };
    writeln!(
        out,
        "             handed over in memory (no mesh protocol carries them yet): gw-b imported {into_b}, gw-a {into_a} mesh route(s)"
    )?;
    let site_a: gatekit_route::IpNet = "10.1.0.0/24".parse().map_err(std::io::Error::other)?;
    let show = |lab: &Lab, out: &mut dyn Write| -> std::io::Result<()> {
        let routes = lab.gw_b.snapshot(lab.now).routes;
        for r in routes.iter().filter(|r| r.prefix == "10.1.0.0/24") {
            writeln!(
                out,
                "             gw-b {} {} {:<9} via {} (distance {}, metric {})",
                match (r.selected, r.enabled) {
                    (true, _) => "*",
                    (false, false) => "-",
                    (false, true) => " ",
                },
                r.prefix,
                r.source,
                r.via,
                r.distance,
                r.metric
            )?;
        }
        Ok(())
    };
    show(lab, out)?;
    let peer = NextHop::Ipsec(0);
    for source in [Source::Static, Source::Tunnel] {
        lab.gw_b
            .routing_mut()
            .set_route_enabled(site_a, source, peer, false);
    }
    writeln!(
        out,
        "             gw-b disables its static and tunnel-learned routes to 10.1.0.0/24:"
    )?;
    show(lab, out)?;
    let on_mesh = lab
        .gw_b
        .routing()
        .rib()
        .best(&site_a)
        .first()
        .is_some_and(|r| r.source == Source::Mesh);
    let ok = on_mesh && lab.tcp_exchange(8080, b"ping", b"pong") == Ok(b"pong".to_vec());
    writeln!(
        out,
        "[{:7.3}s]    a1 <-> b1 TCP over the mesh-learned route: {}",
        secs(lab),
        if ok { "ok" } else { "FAILED" }
    )?;
    for source in [Source::Static, Source::Tunnel] {
        lab.gw_b
            .routing_mut()
            .set_route_enabled(site_a, source, peer, true);
    }
    Ok(ok && into_a > 0 && into_b > 0)
}
