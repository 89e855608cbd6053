//! Traffic selectors (RFC 4301 §4.4.1): which inner packets an SA carries.

use core::net::IpAddr;
use gatekit_packet::{FlowKey, Transport};
use ipnet::IpNet;

/// A traffic selector, written from this gateway's side: packets from `local` to `remote` go
/// out through the SA; packets from `remote` to `local` may come in through it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// Addresses on this side of the tunnel.
    pub local: IpNet,
    /// Addresses on the peer's side.
    pub remote: IpNet,
    /// The IP protocol, or any.
    pub proto: Option<u8>,
    /// Ports on this side (inclusive range; `0..=65535` for any).
    pub local_ports: (u16, u16),
    /// Ports on the peer's side (inclusive range).
    pub remote_ports: (u16, u16),
}

impl TrafficSelector {
    /// Any protocol and port between two prefixes.
    pub fn new(local: IpNet, remote: IpNet) -> Self {
        TrafficSelector {
            local,
            remote,
            proto: None,
            local_ports: (0, u16::MAX),
            remote_ports: (0, u16::MAX),
        }
    }

    /// Every packet of one address family (`0.0.0.0/0` or `::/0` both ways).
    pub fn any(v6: bool) -> Self {
        let net = if v6 {
            IpNet::V6(ipnet::Ipv6Net::default())
        } else {
            IpNet::V4(ipnet::Ipv4Net::default())
        };
        TrafficSelector::new(net, net)
    }

    /// Restricts the selector to one protocol.
    pub fn with_proto(mut self, proto: u8) -> Self {
        self.proto = Some(proto);
        self
    }

    /// Restricts the ports on each side.
    pub fn with_ports(mut self, local: (u16, u16), remote: (u16, u16)) -> Self {
        self.local_ports = local;
        self.remote_ports = remote;
        self
    }

    fn ports_match(&self, local: u16, remote: u16) -> bool {
        (self.local_ports.0..=self.local_ports.1).contains(&local)
            && (self.remote_ports.0..=self.remote_ports.1).contains(&remote)
    }

    fn full_port_range(&self) -> bool {
        self.local_ports == (0, u16::MAX) && self.remote_ports == (0, u16::MAX)
    }

    fn check(
        &self,
        local: IpAddr,
        remote: IpAddr,
        key: &FlowKey,
        local_port: u16,
        remote_port: u16,
    ) -> bool {
        if !self.local.contains(&local) || !self.remote.contains(&remote) {
            return false;
        }
        if let Some(p) = self.proto
            && p != key.proto
        {
            return false;
        }
        match key.transport {
            Transport::Ports { .. } => self.ports_match(local_port, remote_port),
            // Without ports (ICMP, fragments, other protocols) only a selector that does not
            // restrict ports matches (RFC 4301 §4.4.1.1, OPAQUE).
            _ => self.full_port_range(),
        }
    }

    /// Whether an outgoing packet (from `local` to `remote`) matches.
    pub fn matches_outbound(&self, key: &FlowKey) -> bool {
        self.check(key.src, key.dst, key, key.src_port(), key.dst_port())
    }

    /// Whether an incoming packet (from `remote` to `local`) matches.
    pub fn matches_inbound(&self, key: &FlowKey) -> bool {
        self.check(key.dst, key.src, key, key.dst_port(), key.src_port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: &str, dst: &str, proto: u8, sp: u16, dp: u16) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            transport: if proto == 1 {
                Transport::Icmp {
                    ty: 8,
                    code: 0,
                    id: 1,
                }
            } else {
                Transport::Ports { src: sp, dst: dp }
            },
        }
    }

    #[test]
    fn prefixes_protocol_and_ports() {
        let ts = TrafficSelector::new(
            "10.1.0.0/16".parse().unwrap(),
            "10.2.0.0/16".parse().unwrap(),
        )
        .with_proto(6)
        .with_ports((0, u16::MAX), (443, 443));
        assert!(ts.matches_outbound(&key("10.1.2.3", "10.2.0.9", 6, 40000, 443)));
        assert!(!ts.matches_outbound(&key("10.1.2.3", "10.2.0.9", 6, 40000, 80)));
        assert!(!ts.matches_outbound(&key("10.1.2.3", "10.2.0.9", 17, 40000, 443)));
        assert!(!ts.matches_outbound(&key("10.3.2.3", "10.2.0.9", 6, 40000, 443)));
        // Inbound is the mirror image.
        assert!(ts.matches_inbound(&key("10.2.0.9", "10.1.2.3", 6, 443, 40000)));
        assert!(!ts.matches_inbound(&key("10.1.2.3", "10.2.0.9", 6, 40000, 443)));
        // A port-restricted selector does not match ICMP; an unrestricted one does.
        assert!(!ts.matches_outbound(&key("10.1.2.3", "10.2.0.9", 1, 0, 0)));
        let any = TrafficSelector::any(false);
        assert!(any.matches_outbound(&key("10.1.2.3", "10.2.0.9", 1, 0, 0)));
        assert!(!any.matches_outbound(&key("2001:db8::1", "2001:db8::2", 1, 0, 0)));
        assert!(TrafficSelector::any(true).matches_inbound(&key(
            "2001:db8::1",
            "2001:db8::2",
            17,
            1,
            2
        )));
    }
}
