//! Per-packet metadata that travels beside the buffer through a pipeline.

use crate::Instant;

/// Identifies a port (device, tunnel, socket) within one pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortId(pub u16);

/// What the pipeline knows about a packet besides its bytes.
///
/// Offsets are from the start of the buffer's current data and are `None` until a stage has
/// parsed that layer. A stage that pushes or pulls headers is responsible for keeping the
/// offsets it leaves behind true (or for clearing them with [`Meta::clear_offsets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// The port the packet came in on.
    pub ingress: PortId,
    /// Offset of the Ethernet header, if the packet has one.
    pub l2: Option<u16>,
    /// Offset of the IP header.
    pub l3: Option<u16>,
    /// Offset of the transport (or ICMP) header; `None` for non-first fragments.
    pub l4: Option<u16>,
    /// The 802.1Q VLAN id (12 bits), if the frame was tagged or assigned to one.
    pub vlan: Option<u16>,
    /// A hash of the flow (see [`FlowKey::hash`](crate::FlowKey::hash)); 0 means not computed.
    pub flow_hash: u32,
    /// A free 32-bit mark (firewall `MARK`, policy routing), 0 by default.
    pub mark: u32,
    /// When the packet was received.
    pub timestamp: Instant,
    /// For datagram ports (UDP sockets, raw IP sockets): the remote endpoint — the source of a
    /// received datagram, the destination of one to send. `None` on device ports (TUN, TAP).
    /// Raw IP sockets use port 0.
    pub peer: Option<core::net::SocketAddr>,
}

impl Meta {
    /// Metadata for a packet just received on `ingress` at `now`.
    pub fn new(ingress: PortId, now: Instant) -> Self {
        Meta {
            ingress,
            timestamp: now,
            ..Meta::default()
        }
    }

    /// Forgets the parsed offsets (after a stage rewrote the headers).
    pub fn clear_offsets(&mut self) {
        self.l2 = None;
        self.l3 = None;
        self.l4 = None;
    }

    /// Fills `l3`/`l4` for an IP packet starting at offset 0 of `data`, without copying.
    /// Returns false (and clears the offsets) if `data` is not a parsable IPv4/IPv6 packet.
    pub fn parse_ip(&mut self, data: &[u8]) -> bool {
        self.clear_offsets();
        // Plain IPv4 from its fixed header; the rest (IPv6, AH) through etherparse.
        match crate::flow::plain_ipv4(data) {
            Some(Ok(ip)) => {
                self.l3 = Some(0);
                self.l4 = ip.carries_transport().then_some(ip.header_len() as u16);
                return true;
            }
            Some(Err(())) => return false,
            None => {}
        }
        match etherparse::IpSlice::from_slice(data) {
            Ok(ip) => {
                self.l3 = Some(0);
                if crate::flow::has_transport_header(&ip) {
                    let payload = ip.payload().payload;
                    let off = payload.as_ptr() as usize - data.as_ptr() as usize;
                    self.l4 = u16::try_from(off).ok();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Fills `l2`/`l3`/`l4`/`vlan` for an Ethernet frame in `data`, without copying.
    /// Returns false if the frame cannot be parsed down to its network layer.
    pub fn parse_ethernet(&mut self, data: &[u8]) -> bool {
        self.clear_offsets();
        let Ok(sliced) = etherparse::SlicedPacket::from_ethernet(data) else {
            return false;
        };
        self.l2 = Some(0);
        if let Some(id) = sliced.vlan_ids().first() {
            self.vlan = Some(id.value());
        }
        let base = data.as_ptr() as usize;
        if let Some(net) = &sliced.net {
            let hdr = match net {
                etherparse::NetSlice::Ipv4(v4) => v4.header().slice(),
                etherparse::NetSlice::Ipv6(v6) => v6.header().slice(),
                _ => return true,
            };
            self.l3 = u16::try_from(hdr.as_ptr() as usize - base).ok();
            if sliced.transport.is_some()
                && let Some(ip) = net.ip_payload_ref()
            {
                self.l4 = u16::try_from(ip.payload.as_ptr() as usize - base).ok();
            }
        }
        true
    }
}
