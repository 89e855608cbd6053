//! GRE inside IPsec: an Ethernet frame is encapsulated in GRE/TEB, the GRE packet is protected
//! by a transport-mode ESP SA (gatekit-esp), and the far side opens ESP and decapsulates GRE —
//! all on one buffer, without the frame's bytes ever moving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use core::net::IpAddr;
use etherparse::{IpNumber, IpSlice, PacketBuilder};
use gatekit_esp::{
    Decap as EspDecap, Direction, Endpoint, KeyMaterial, Mode, Output, SaConfig, Select, Suite,
};
use gatekit_gre::{Decap, Encap, GreEndpoint, GreMode, GreTunnelConfig, protocol};
use gatekit_packet::{DropReason, Instant, PacketBuf, PktBuf};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn gre_teb_in_transport_mode_esp_on_one_buffer() {
    let now = Instant::ZERO;
    let (a, b) = (ip("192.0.2.1"), ip("198.51.100.2"));
    let key = KeyMaterial::from_hex(
        Suite::AesGcm128,
        "4c80cdefbb5d10da906ac73c3613a634 2e443b68",
    )
    .unwrap();
    let sa = |dir, local, peer| {
        SaConfig::new(0x2000, dir, Suite::AesGcm128, key.clone(), local, peer).mode(Mode::Transport)
    };
    let gre = |local, remote| GreTunnelConfig {
        mode: GreMode::Ethernet,
        key: Some(7),
        sequence: true,
        check_sequence: true,
        ..GreTunnelConfig::new(local, remote)
    };
    let (mut gre_a, mut gre_b) = (GreEndpoint::new(), GreEndpoint::new());
    let ta = gre_a.add_tunnel(gre(a, b)).unwrap();
    let tb = gre_b.add_tunnel(gre(b, a)).unwrap();
    let (mut esp_a, mut esp_b) = (Endpoint::default(), Endpoint::default());
    let out = esp_a.add_sa(&sa(Direction::Outbound, a, b), now).unwrap();
    esp_b.add_sa(&sa(Direction::Inbound, b, a), now).unwrap();

    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(4000, 5000)
        .write(&mut frame, b"bridged and encrypted")
        .unwrap();

    for n in 0..3u64 {
        let mut buf = PktBuf::from_slice(&frame, 128, 64);
        let at = buf.data().as_ptr();

        assert_eq!(gre_a.encap(ta, &mut buf), Encap::Ready);
        let sent = esp_a
            .encap(Select::Sa(out), &mut buf, Output::Packet, now)
            .unwrap();
        assert_eq!(sent.seq, n + 1);
        // On the wire: IPv4 carrying ESP; neither the GRE header nor the frame shows.
        let wire = IpSlice::from_slice(buf.data()).unwrap();
        assert_eq!(
            wire.payload().ip_number,
            IpNumber::ENCAPSULATING_SECURITY_PAYLOAD
        );
        assert!(!buf.data().windows(6).any(|w| w == [2, 0, 0, 0, 0, 2]));

        match esp_b.decap_ip(&mut buf, now) {
            EspDecap::Inner(d) => {
                assert_eq!(
                    (d.spi, d.seq, d.next_header, d.mode),
                    (0x2000, n + 1, 47, Mode::Transport)
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            gre_b.decap(&mut buf),
            Decap::Packet {
                tunnel: tb,
                protocol: protocol::TEB
            }
        );
        assert_eq!(buf.data(), &frame[..]);
        assert_eq!(buf.data().as_ptr(), at, "the frame never moved: no copy");
    }

    // Tampering is caught by ESP before GRE sees anything.
    let mut buf = PktBuf::from_slice(&frame, 128, 64);
    gre_a.encap(ta, &mut buf);
    esp_a
        .encap(Select::Sa(out), &mut buf, Output::Packet, now)
        .unwrap();
    let n = buf.len();
    buf.data_mut()[n - 20] ^= 1;
    assert_eq!(
        esp_b.decap_ip(&mut buf, now),
        EspDecap::Drop(DropReason::AuthFailed)
    );
    assert_eq!(gre_b.stats(tb).unwrap().rx_packets, 3);
}
