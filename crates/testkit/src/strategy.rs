//! proptest strategies for well-formed packets, built with etherparse.
//!
//! Every strategy yields bytes that etherparse itself parses back, so tests can use them as
//! valid input and mutate them for invalid input.

use etherparse::PacketBuilder;
use proptest::prelude::*;

/// Transport of a generated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// UDP with these ports.
    Udp(u16, u16),
    /// TCP with these ports and flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    Tcp(u16, u16, u8),
    /// ICMP(v6) echo request with this identifier.
    IcmpEcho(u16),
}

fn l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        (any::<u16>(), any::<u16>()).prop_map(|(s, d)| L4::Udp(s, d)),
        (any::<u16>(), any::<u16>(), any::<u8>()).prop_map(|(s, d, f)| L4::Tcp(s, d, f & 0x3f)),
        any::<u16>().prop_map(L4::IcmpEcho),
    ]
}

fn write_l4(
    step: etherparse::PacketBuilderStep<etherparse::IpHeaders>,
    l4: L4,
    v6: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    // The builders only fail on writer errors, which a Vec does not produce; an error would
    // surface as an empty packet that every test's parse would reject loudly.
    let _ = match l4 {
        L4::Udp(s, d) => step.udp(s, d).write(&mut out, payload),
        L4::Tcp(s, d, flags) => {
            let mut t = step.tcp(s, d, 1000, 64_000);
            if flags & 0x01 != 0 {
                t = t.fin();
            }
            if flags & 0x02 != 0 {
                t = t.syn();
            }
            if flags & 0x04 != 0 {
                t = t.rst();
            }
            if flags & 0x08 != 0 {
                t = t.psh();
            }
            if flags & 0x10 != 0 {
                t = t.ack(1);
            }
            t.write(&mut out, payload)
        }
        L4::IcmpEcho(id) if v6 => step.icmpv6_echo_request(id, 1).write(&mut out, payload),
        L4::IcmpEcho(id) => step.icmpv4_echo_request(id, 1).write(&mut out, payload),
    };
    out
}

/// Payload bytes, up to `max` long.
pub fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

/// An IPv4 packet carrying UDP, TCP or ICMP echo, with its transport.
pub fn ipv4_packet() -> impl Strategy<Value = (Vec<u8>, L4)> {
    (
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        1u8..,
        l4(),
        payload(256),
    )
        .prop_map(|(s, d, ttl, l4, pl)| {
            (write_l4(PacketBuilder::ipv4(s, d, ttl), l4, false, &pl), l4)
        })
}

/// An IPv6 packet carrying UDP, TCP or ICMPv6 echo, with its transport.
pub fn ipv6_packet() -> impl Strategy<Value = (Vec<u8>, L4)> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        1u8..,
        l4(),
        payload(256),
    )
        .prop_map(|(s, d, hl, l4, pl)| (write_l4(PacketBuilder::ipv6(s, d, hl), l4, true, &pl), l4))
}

/// An IPv4 or IPv6 packet.
pub fn ip_packet() -> impl Strategy<Value = (Vec<u8>, L4)> {
    prop_oneof![ipv4_packet(), ipv6_packet()]
}

/// An IPv4 UDP packet (no other transports).
pub fn ipv4_udp() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        any::<(u16, u16)>(),
        payload(1400),
    )
        .prop_map(|(s, d, (sp, dp), pl)| {
            write_l4(PacketBuilder::ipv4(s, d, 64), L4::Udp(sp, dp), false, &pl)
        })
}

/// An IPv6 TCP packet.
pub fn ipv6_tcp() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<(u16, u16, u8)>(),
        payload(1400),
    )
        .prop_map(|(s, d, (sp, dp, f), pl)| {
            write_l4(
                PacketBuilder::ipv6(s, d, 64),
                L4::Tcp(sp, dp, f & 0x3f),
                true,
                &pl,
            )
        })
}

/// A unicast MAC address (group bit clear).
pub fn unicast_mac() -> impl Strategy<Value = [u8; 6]> {
    any::<[u8; 6]>().prop_map(|mut m| {
        m[0] &= 0xfe;
        m
    })
}

/// An Ethernet II frame carrying an IPv4 or IPv6 packet, optionally 802.1Q-tagged.
pub fn ethernet_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        unicast_mac(),
        any::<[u8; 6]>(),
        proptest::option::of(1u16..4095),
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        l4(),
        payload(256),
    )
        .prop_map(|(src, dst, vlan, v6, a, b, l4, pl)| {
            let eth = PacketBuilder::ethernet2(src, dst);
            let vlan_id = vlan.and_then(|v| etherparse::VlanId::try_new(v).ok());
            match (vlan_id, v6) {
                (Some(id), true) => write_l4(eth.single_vlan(id).ipv6(a, b, 64), l4, true, &pl),
                (Some(id), false) => {
                    let (s, d) = ([a[0], a[1], a[2], a[3]], [b[0], b[1], b[2], b[3]]);
                    write_l4(eth.single_vlan(id).ipv4(s, d, 64), l4, false, &pl)
                }
                (None, true) => write_l4(eth.ipv6(a, b, 64), l4, true, &pl),
                (None, false) => {
                    let (s, d) = ([a[0], a[1], a[2], a[3]], [b[0], b[1], b[2], b[3]]);
                    write_l4(eth.ipv4(s, d, 64), l4, false, &pl)
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatekit_packet::{FlowKey, Transport};

    proptest! {
        #[test]
        fn ip_packets_parse_back((pkt, l4) in ip_packet()) {
            let k = FlowKey::from_ip(&pkt).unwrap();
            match l4 {
                L4::Udp(s, d) => {
                    prop_assert_eq!(k.proto, 17);
                    prop_assert_eq!(k.transport, Transport::Ports { src: s, dst: d });
                }
                L4::Tcp(s, d, _) => {
                    prop_assert_eq!(k.proto, 6);
                    prop_assert_eq!(k.transport, Transport::Ports { src: s, dst: d });
                }
                L4::IcmpEcho(id) => {
                    let is_echo = matches!(k.transport, Transport::Icmp { id: i, .. } if i == id);
                    prop_assert!(is_echo);
                }
            }
        }

        #[test]
        fn frames_parse_back(frame in ethernet_frame()) {
            prop_assert!(FlowKey::from_ethernet(&frame).is_ok());
        }

        #[test]
        fn udp_and_tcp_parse_back(a in ipv4_udp(), b in ipv6_tcp()) {
            prop_assert_eq!(FlowKey::from_ip(&a).unwrap().proto, 17);
            prop_assert_eq!(FlowKey::from_ip(&b).unwrap().proto, 6);
        }
    }
}
