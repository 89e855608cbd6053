//! The IPv4 fast path of `FlowKey::from_ip` against etherparse's general parser (the
//! oracle): the same key or the same error for well-formed packets and for every kind of
//! damage to their headers.
#![allow(clippy::unwrap_used)]

use etherparse::{IpSlice, PacketBuilder};
use gatekit_packet::{FlowError, FlowKey, PlainIpv4, plain_ipv4_lengths};
use proptest::prelude::*;

/// The key as etherparse reads it, independently of the fast path.
fn oracle(p: &[u8]) -> Result<FlowKey, FlowError> {
    let ip = IpSlice::from_slice(p).map_err(|_| FlowError::NotIp)?;
    FlowKey::from_ip_slice(&ip)
}

fn packet(proto: u8, payload_len: usize, options: usize) -> Vec<u8> {
    let payload = vec![0xa5u8; payload_len];
    let mut out = Vec::new();
    let b = PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 7], 64);
    match proto {
        6 => b.tcp(1234, 80, 1, 1000).write(&mut out, &payload).unwrap(),
        17 => b.udp(4500, 4501).write(&mut out, &payload).unwrap(),
        1 => b
            .icmpv4_echo_request(77, 1)
            .write(&mut out, &payload)
            .unwrap(),
        _ => {
            let mut h = etherparse::Ipv4Header::new(
                payload_len as u16,
                64,
                etherparse::IpNumber(proto),
                [192, 0, 2, 1],
                [198, 51, 100, 7],
            )
            .unwrap();
            h.header_checksum = h.calc_header_checksum();
            h.write(&mut out).unwrap();
            out.extend_from_slice(&payload);
        }
    }
    if options > 0 {
        // Insert NOP options and fix IHL and the total length.
        let words = options.min(10);
        let opts = vec![1u8; words * 4];
        out.splice(20..20, opts);
        out[0] = 0x40 | (5 + words as u8);
        let total = out.len() as u16;
        out[2..4].copy_from_slice(&total.to_be_bytes());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fast_path_reads_what_etherparse_reads(
        proto in prop::sample::select(vec![6u8, 17, 1, 47, 50, 51, 132, 255]),
        payload_len in 0usize..64,
        options in 0usize..3,
        damage in prop::collection::vec((0usize..40, any::<u8>()), 0..4),
        cut in prop::option::of(0usize..8),
        extra in 0usize..8,
    ) {
        let mut p = packet(proto, payload_len, options);
        for (at, v) in damage {
            if let Some(b) = p.get_mut(at) {
                *b = v;
            }
        }
        p.extend(std::iter::repeat_n(0xee, extra));
        if let Some(cut) = cut {
            p.truncate(p.len().saturating_sub(cut));
        }
        prop_assert_eq!(FlowKey::from_ip(&p), oracle(&p), "{:02x?}", p);
        // The lengths the fast paths read are etherparse's, for the packets they take.
        let sliced = etherparse::Ipv4Slice::from_slice(&p).ok().filter(|s| s.header().protocol().0 != 51);
        prop_assert_eq!(
            plain_ipv4_lengths(&p),
            sliced.map(|s| (s.header().slice().len(), usize::from(s.header().total_len())))
        );
        // And so are the fixed fields.
        let sliced = etherparse::Ipv4Slice::from_slice(&p).ok().filter(|s| s.header().protocol().0 != 51);
        prop_assert_eq!(
            PlainIpv4::parse(&p).map(|ip| (
                ip.header_len(),
                ip.total_len(),
                ip.proto(),
                ip.src(),
                ip.dst(),
                ip.is_fragment()
            )),
            sliced.map(|s| {
                let h = s.header();
                (
                    h.slice().len(),
                    usize::from(h.total_len()),
                    h.protocol().0,
                    h.source_addr(),
                    h.destination_addr(),
                    h.more_fragments() || h.fragments_offset().value() != 0,
                )
            })
        );
    }

    #[test]
    fn arbitrary_bytes_read_as_etherparse_reads_them(
        first in prop::sample::select(vec![0x45u8, 0x46, 0x44, 0x4f, 0x60, 0x00]),
        rest in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let p: Vec<u8> = std::iter::once(first).chain(rest).collect();
        prop_assert_eq!(FlowKey::from_ip(&p), oracle(&p));
    }
}

/// `Meta::parse_ip` as etherparse reads the packet: IP header at 0, transport header
/// where etherparse's payload starts unless the packet is a non-first fragment.
fn meta_oracle(p: &[u8]) -> Option<(Option<u16>, Option<u16>)> {
    let ip = IpSlice::from_slice(p).ok()?;
    let first = match &ip {
        IpSlice::Ipv4(v4) => v4.header().fragments_offset().value() == 0,
        IpSlice::Ipv6(_) => !ip.payload().fragmented,
    };
    let l4 = (first || !ip.payload().fragmented)
        .then(|| (ip.payload().payload.as_ptr() as usize - p.as_ptr() as usize) as u16);
    Some((Some(0), l4))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn meta_offsets_are_etherparse_offsets(
        proto in prop::sample::select(vec![6u8, 17, 1, 47, 51]),
        payload_len in 0usize..64,
        options in 0usize..3,
        damage in prop::collection::vec((0usize..40, any::<u8>()), 0..4),
        cut in prop::option::of(0usize..8),
    ) {
        let mut p = packet(proto, payload_len, options);
        for (at, v) in damage {
            if let Some(b) = p.get_mut(at) {
                *b = v;
            }
        }
        if let Some(cut) = cut {
            p.truncate(p.len().saturating_sub(cut));
        }
        let mut m = gatekit_packet::Meta::default();
        let ok = m.parse_ip(&p);
        let want = meta_oracle(&p);
        prop_assert_eq!(ok, want.is_some());
        if let Some((l3, l4)) = want {
            prop_assert_eq!((m.l3, m.l4), (l3, l4), "{:02x?}", p);
        }
    }
}
