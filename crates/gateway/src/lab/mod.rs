//! The in-memory lab: two sites with smoltcp hosts behind two gatekit gateways, joined by an
//! in-memory internet with a NAT between them. Deterministic: time is stepped by hand, 1 ms
//! at a time, and nothing is random.
//!
//! ```text
//!  a1 10.1.0.10 ─ lan0 ┐                                   ┌ lan0 ─ b1 10.2.0.10
//!                      gw-a 198.51.100.1 ══ internet ══ NAT 203.0.113.2 ── gw-b 192.168.0.2
//!  l2a 10.9.0.1 ─ l2 ──┘   (ESP in UDP 4500; GRE/TEB inside ESP transport)  └── l2 ─ l2b 10.9.0.2
//! ```
//!
//! The same topology backs the demo (`cargo run --example gateway` with no config) and the
//! deterministic tests of the whole data path.

pub mod demo;
pub mod host;
pub mod net;

use crate::config::Config;
use crate::pipeline::{Egress, Gateway, Ingress, Sink};
use gatekit_packet::{Instant, Meta, PacketBuf, PktBuf, PortId};
use host::Host;
use net::Internet;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use std::fs::File;
use std::io::BufWriter;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

/// Site A's gateway configuration in the lab.
pub const SITE_A: &str = r#"
[gateway]
name = "gw-a"

[underlay]
address = "198.51.100.1"

[[interface]]
name = "lan0"
kind = "tun"
address = "10.1.0.1/24"

[[interface]]
name = "l2"
kind = "tap"

[[route]]
prefix = "10.2.0.0/24"
via = "ipsec:site-b"

# lan0's prefix (10.1.0.0/24) is advertised to the mesh: interfaces advertise by default.
[advertise]
metric = 10

[[ipsec.peer]]
name = "site-b"
remote = "203.0.113.2"
encap = "udp"
keepalive = 0

# Site-to-site tunnel for the routed subnets.
[[ipsec.peer.tunnel]]
mode = "tunnel"
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
spi_out = 0x0000b001
spi_in = 0x0000a001
key_out = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b 0b0b0b01"
key_in = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a 0a0a0a01"

# Transport-mode SA protecting the GRE tunnel between the gateways.
[[ipsec.peer.tunnel]]
mode = "transport"
suite = "chacha20poly1305"
spi_out = 0x0000b002
spi_in = 0x0000a002
key_out = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b 0b0b0b02"
key_in = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a 0a0a0a02"

[[gre]]
name = "gre-b"
remote = "203.0.113.2"
key = 42
mode = "teb"
over_ipsec = "site-b"

[[bridge]]
name = "br0"
ports = ["l2", "gre-b"]
"#;

/// Site B's gateway configuration in the lab: behind a NAT, so it sends keepalives.
pub const SITE_B: &str = r#"
[gateway]
name = "gw-b"

[underlay]
address = "192.168.0.2"

[[interface]]
name = "lan0"
kind = "tun"
address = "10.2.0.1/24"

[[interface]]
name = "l2"
kind = "tap"

[[route]]
prefix = "10.1.0.0/24"
via = "ipsec:site-a"

[[ipsec.peer]]
name = "site-a"
remote = "198.51.100.1"
encap = "udp"
keepalive = 1

[[ipsec.peer.tunnel]]
mode = "tunnel"
local_ts = ["10.2.0.0/24"]
remote_ts = ["10.1.0.0/24"]
spi_out = 0x0000a001
spi_in = 0x0000b001
key_out = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a 0a0a0a01"
key_in = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b 0b0b0b01"

[[ipsec.peer.tunnel]]
mode = "transport"
suite = "chacha20poly1305"
spi_out = 0x0000a002
spi_in = 0x0000b002
key_out = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a 0a0a0a02"
key_in = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b 0b0b0b02"

[[gre]]
name = "gre-a"
remote = "198.51.100.1"
key = 42
mode = "teb"
over_ipsec = "site-a"

[[bridge]]
name = "br0"
ports = ["l2", "gre-a"]

[firewall]
rules = """
FORWARD_CUST -p tcp --dport 23 -j REJECT --reject-with tcp-reset
"""
"#;

/// Buffers for the lab: plain heap buffers with room for every header the gateways push.
struct LabSink {
    out: Vec<(Egress, PktBuf)>,
}

impl Sink<PktBuf> for LabSink {
    fn emit(&mut self, to: Egress, buf: PktBuf, _meta: Meta) {
        self.out.push((to, buf));
    }
    fn alloc(&mut self) -> Option<PktBuf> {
        Some(PktBuf::new(2048, 192))
    }
}

/// A pcap file the lab writes (nanosecond timestamps of simulated time).
struct Capture {
    w: PcapWriter<BufWriter<File>>,
    packets: u64,
}

impl Capture {
    fn create(path: &Path, link: DataLink) -> std::io::Result<Capture> {
        let header = PcapHeader {
            datalink: link,
            ts_resolution: pcap_file::TsResolution::NanoSecond,
            ..PcapHeader::default()
        };
        let w = PcapWriter::with_header(BufWriter::new(File::create(path)?), header)
            .map_err(std::io::Error::other)?;
        Ok(Capture { w, packets: 0 })
    }
    fn write(&mut self, now: Instant, data: &[u8]) {
        let p = PcapPacket::new(
            Duration::from_nanos(now.as_nanos()),
            data.len() as u32,
            data,
        );
        if self.w.write_packet(&p).is_ok() {
            self.packets += 1;
        }
    }
}

/// The whole lab.
pub struct Lab {
    /// Site A's gateway.
    pub gw_a: Gateway,
    /// Site B's gateway.
    pub gw_b: Gateway,
    /// Routed host at site A.
    pub a1: Host,
    /// Routed host at site B.
    pub b1: Host,
    /// Bridged host at site A.
    pub l2a: Host,
    /// Bridged host at site B.
    pub l2b: Host,
    /// The internet between them, with the NAT.
    pub net: Internet,
    /// Simulated time.
    pub now: Instant,
    internet_pcap: Option<Capture>,
    l2_pcap: Option<Capture>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// Site A's routed host address.
pub const A1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
/// Site B's routed host address.
pub const B1: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 10);
/// Site A's bridged host address.
pub const L2A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// Site B's bridged host address.
pub const L2B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

impl Lab {
    /// Builds the lab from the built-in site configs.
    pub fn new() -> Result<Lab, String> {
        Self::with_configs(SITE_A, SITE_B)
    }

    /// Builds the lab from two site configs (same topology, other rules or keys).
    pub fn with_configs(a: &str, b: &str) -> Result<Lab, String> {
        let ca = Config::parse("site-a.toml", a).map_err(|e| e.to_string())?;
        let cb = Config::parse("site-b.toml", b).map_err(|e| e.to_string())?;
        let now = Instant::ZERO;
        let gw_a = Gateway::new(ca, now).map_err(|e| e.to_string())?;
        let gw_b = Gateway::new(cb, now).map_err(|e| e.to_string())?;
        Ok(Lab {
            gw_a,
            gw_b,
            a1: Host::ip("a1", A1, 24, Ipv4Addr::new(10, 1, 0, 1), 1400),
            b1: Host::ip("b1", B1, 24, Ipv4Addr::new(10, 2, 0, 1), 1400),
            l2a: Host::ethernet("l2a", [2, 0, 0, 0, 0, 0x0a], L2A, 24, 1400),
            l2b: Host::ethernet("l2b", [2, 0, 0, 0, 0, 0x0b], L2B, 24, 1400),
            net: Internet::new(
                Ipv4Addr::new(198, 51, 100, 1),
                Ipv4Addr::new(192, 168, 0, 2),
                Ipv4Addr::new(203, 0, 113, 2),
            ),
            now,
            internet_pcap: None,
            l2_pcap: None,
        })
    }

    /// Writes what crosses the internet (raw IP: ESP in UDP, keepalives) and site B's
    /// bridged segment (Ethernet: ARP, ICMP) to two pcap files in `dir`.
    pub fn capture(
        &mut self,
        dir: &Path,
    ) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
        let inet = dir.join("gatekit-lab-internet.pcap");
        let l2 = dir.join("gatekit-lab-site-b-l2.pcap");
        self.internet_pcap = Some(Capture::create(&inet, DataLink::RAW)?);
        self.l2_pcap = Some(Capture::create(&l2, DataLink::ETHERNET)?);
        Ok((inet, l2))
    }

    /// Packets written to the captures (internet, site-B L2).
    pub fn captured(&self) -> (u64, u64) {
        (
            self.internet_pcap.as_ref().map_or(0, |c| c.packets),
            self.l2_pcap.as_ref().map_or(0, |c| c.packets),
        )
    }

    /// Advances the lab by one millisecond: hosts run, gateways process everything queued,
    /// the internet moves packets, timers fire.
    pub fn step(&mut self) {
        self.now += Duration::from_millis(1);
        let now = self.now;
        for h in [&mut self.a1, &mut self.b1, &mut self.l2a, &mut self.l2b] {
            h.poll(now);
        }
        let mut sink = LabSink { out: Vec::new() };
        // Site A: hosts → gateway.
        for (iface, host) in [(0usize, &mut self.a1), (1, &mut self.l2a)] {
            while let Some(p) = host.dev.tx.pop_front() {
                let buf = PktBuf::from_slice(&p, 192, 64);
                self.gw_a.process(
                    Ingress::Iface(iface),
                    buf,
                    Meta::new(PortId(iface as u16), now),
                    now,
                    &mut sink,
                );
            }
        }
        while let Some(p) = self.net.a.down.pop_front() {
            let buf = PktBuf::from_slice(&p, 192, 64);
            self.gw_a.process(
                Ingress::Underlay,
                buf,
                Meta::new(PortId(100), now),
                now,
                &mut sink,
            );
        }
        if self.gw_a.poll_timeout().is_some_and(|t| t <= now) {
            self.gw_a.handle_timeout(now, &mut sink);
        }
        for (to, buf) in sink.out.drain(..) {
            match to {
                Egress::Underlay => self.net.a.up.push_back(buf.data().to_vec()),
                Egress::Iface(0) => self.a1.dev.rx.push_back(buf.data().to_vec()),
                Egress::Iface(_) => self.l2a.dev.rx.push_back(buf.data().to_vec()),
            }
        }
        // Site B.
        for (iface, host) in [(0usize, &mut self.b1), (1, &mut self.l2b)] {
            while let Some(p) = host.dev.tx.pop_front() {
                if iface == 1
                    && let Some(c) = self.l2_pcap.as_mut()
                {
                    c.write(now, &p);
                }
                let buf = PktBuf::from_slice(&p, 192, 64);
                self.gw_b.process(
                    Ingress::Iface(iface),
                    buf,
                    Meta::new(PortId(iface as u16), now),
                    now,
                    &mut sink,
                );
            }
        }
        while let Some(p) = self.net.b.down.pop_front() {
            let buf = PktBuf::from_slice(&p, 192, 64);
            self.gw_b.process(
                Ingress::Underlay,
                buf,
                Meta::new(PortId(100), now),
                now,
                &mut sink,
            );
        }
        if self.gw_b.poll_timeout().is_some_and(|t| t <= now) {
            self.gw_b.handle_timeout(now, &mut sink);
        }
        for (to, buf) in sink.out.drain(..) {
            match to {
                Egress::Underlay => self.net.b.up.push_back(buf.data().to_vec()),
                Egress::Iface(0) => self.b1.dev.rx.push_back(buf.data().to_vec()),
                Egress::Iface(_) => {
                    if let Some(c) = self.l2_pcap.as_mut() {
                        c.write(now, buf.data());
                    }
                    self.l2b.dev.rx.push_back(buf.data().to_vec())
                }
            }
        }
        let pcap = &mut self.internet_pcap;
        self.net.step(|p| {
            if let Some(c) = pcap.as_mut() {
                c.write(now, p);
            }
        });
    }

    /// Steps until `done` holds or `limit` of simulated time passes; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Lab) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            self.step();
            if done(self) {
                return true;
            }
        }
        false
    }

    /// A TCP exchange from a1 to b1:`port`: a1 sends `request`, b1 answers `response` and
    /// closes. Returns what a1 received, or why it failed.
    pub fn tcp_exchange(
        &mut self,
        port: u16,
        request: &[u8],
        response: &[u8],
    ) -> Result<Vec<u8>, TcpFailure> {
        let server = self.b1.tcp_listen(port);
        let client = self.a1.tcp_connect(B1, port, 40_000 + port);
        let mut got_req = Vec::new();
        let mut got_resp = Vec::new();
        let (mut sent_req, mut answered) = (false, false);
        let start = self.now;
        while self.now - start < Duration::from_secs(10) {
            self.step();
            use smoltcp::socket::tcp::State;
            let cs = self.a1.tcp_state(client);
            if cs == State::Closed && !sent_req {
                return Err(TcpFailure::Refused);
            }
            if cs == State::Established && !sent_req {
                sent_req = self.a1.tcp_send(client, request) == request.len();
            }
            self.b1.tcp_recv(server, &mut got_req);
            if !answered && got_req.len() >= request.len() {
                answered = self.b1.tcp_send(server, response) == response.len();
                if answered {
                    self.b1.tcp_close(server);
                }
            }
            self.a1.tcp_recv(client, &mut got_resp);
            if answered && got_resp.len() >= response.len() {
                self.a1.tcp_close(client);
                // Let the FINs cross so both sockets end cleanly.
                self.run_until(Duration::from_millis(200), |_| false);
                return Ok(got_resp);
            }
        }
        Err(if sent_req {
            TcpFailure::NoAnswer
        } else {
            TcpFailure::Timeout
        })
    }

    /// Hands each gateway's advertisements to the other, as the mesh would carry them (no
    /// mesh control protocol exists yet); returns how many routes each imported (gw-a's
    /// into gw-b, gw-b's into gw-a).
    pub fn exchange_advertisements(
        &mut self,
    ) -> Result<(usize, usize), crate::routing::RoutingError> {
        let a = self.gw_a.routing().advertisements();
        let b = self.gw_b.routing().advertisements();
        Ok((
            self.gw_b.import_mesh("site-a", &a)?,
            self.gw_a.import_mesh("site-b", &b)?,
        ))
    }

    /// l2a pings l2b across the bridged sites; returns the echo replies received.
    pub fn l2_ping(&mut self, count: u16) -> Vec<u16> {
        let sock = self.l2a.icmp_socket(0x4242);
        let mut replies = Vec::new();
        for seq in 0..count {
            self.l2a.ping(sock, L2B, 0x4242, seq);
            self.run_until(Duration::from_secs(2), |lab| {
                replies.extend(lab.l2a.ping_replies(sock));
                replies.contains(&seq)
            });
        }
        replies
    }
}

/// Why a lab TCP exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpFailure {
    /// The connection was refused (a TCP RST came back).
    Refused,
    /// No connection within the time limit (SYNs dropped).
    Timeout,
    /// Connected and sent, but no full answer.
    NoAnswer,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_tells_all_three_stories_and_writes_pcaps() {
        let dir = std::env::temp_dir().join(format!("gatekit-demo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut out = Vec::new();
        let o = demo::run(&mut out, Some(&dir)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(o.all_ok(), "{text}");
        assert!(o.captured.0 > 10 && o.captured.1 > 3, "{o:?}");
        assert!(text.contains("connection refused"), "{text}");
        // The pcaps read back as pcaps with the packets counted.
        let f = std::fs::File::open(dir.join("gatekit-lab-internet.pcap")).unwrap();
        let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
        let mut n = 0;
        while let Some(p) = r.next_packet() {
            p.unwrap();
            n += 1;
        }
        assert_eq!(n, o.captured.0);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn lab_configs_are_valid() {
        Lab::new().unwrap();
    }

    #[test]
    fn tcp_through_esp_natt() {
        let mut lab = Lab::new().unwrap();
        // Site B's keepalives open the NAT before anything else crosses.
        assert!(lab.run_until(Duration::from_secs(3), |l| l.net.nat.mappings().count() > 0));
        let resp = lab
            .tcp_exchange(
                80,
                b"GET / HTTP/1.0\r\n\r\n",
                b"HTTP/1.0 200 OK\r\n\r\nhello from site B",
            )
            .unwrap();
        assert_eq!(resp, b"HTTP/1.0 200 OK\r\n\r\nhello from site B");
        let sas: Vec<_> = lab
            .gw_a
            .esp()
            .iter()
            .map(|(_, sa)| (sa.spi(), sa.stats().packets))
            .collect();
        assert!(
            sas.iter().any(|(spi, n)| *spi == 0xb001 && *n >= 3),
            "{sas:?}"
        );
        assert!(
            sas.iter().any(|(spi, n)| *spi == 0xa001 && *n >= 3),
            "{sas:?}"
        );
    }

    #[test]
    fn firewall_rejects_a_port_and_allows_others() {
        let mut lab = Lab::new().unwrap();
        assert!(lab.run_until(Duration::from_secs(3), |l| l.net.nat.mappings().count() > 0));
        assert_eq!(
            lab.tcp_exchange(23, b"hi", b"there"),
            Err(TcpFailure::Refused)
        );
        assert!(
            lab.gw_b.firewall().rule_counter(0)[0] > 0,
            "the REJECT rule counted its hit"
        );
        // Port 80 still works afterwards, through the same firewall and conntrack.
        assert_eq!(lab.tcp_exchange(80, b"a", b"b"), Ok(b"b".to_vec()));
        assert!(lab.gw_b.firewall().engine().unwrap().conn_stats().inserted > 0);
    }

    #[test]
    fn l2_bridging_over_gre_over_esp() {
        let mut lab = Lab::new().unwrap();
        assert!(lab.run_until(Duration::from_secs(3), |l| l.net.nat.mappings().count() > 0));
        let replies = lab.l2_ping(3);
        assert_eq!(replies, vec![0, 1, 2]);
        // Both sites learned both MACs: the local one on the TAP, the remote one on GRE.
        assert_eq!(lab.gw_a.fabric().mac_count(), 2);
        assert_eq!(lab.gw_b.fabric().mac_count(), 2);
        // The status snapshot lists them, by bridge and port, as gatekitctl shows them.
        let macs: Vec<(String, String, String)> = lab
            .gw_a
            .snapshot(lab.now)
            .macs
            .into_iter()
            .map(|m| (m.bridge, m.mac, m.port))
            .collect();
        assert_eq!(
            macs,
            [
                (
                    "br0".to_string(),
                    "02:00:00:00:00:0a".to_string(),
                    "l2".to_string()
                ),
                (
                    "br0".to_string(),
                    "02:00:00:00:00:0b".to_string(),
                    "gre-b".to_string()
                ),
            ]
        );
    }
}
