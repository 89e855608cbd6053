//! IPsec ESP (RFC 4303) with UDP encapsulation for NAT traversal (RFC 3948), as a sans-IO data
//! plane: security associations from static keys, the SAD and SPD, anti-replay, and in-place
//! AEAD encapsulation and decapsulation on any [`PacketBuf`](gatekit_packet::PacketBuf).
//!
//! What it does:
//!
//! - **SAs** ([`SaConfig`], [`SecurityAssociation`]): AES-GCM-128/256 with a 16-byte ICV
//!   (RFC 4106) and ChaCha20-Poly1305 (RFC 7634); tunnel and transport mode; native ESP or
//!   UDP-encapsulated on any port pair; 32-bit or extended sequence numbers; lifetimes in
//!   bytes, packets and time (soft → [`Event::SoftExpired`], hard → dropped as `expired`);
//!   keys zeroized on drop and never printed.
//! - **The endpoint** ([`Endpoint`]): inbound SAs by SPI in O(1), outbound SAs by traffic
//!   selector (policy-based VPN, several child SAs per peer) or by tunnel id (route-based
//!   VPN), atomic rekeying with a grace period for the old inbound SA, NAT-T demultiplexing
//!   of ESP / IKE / keepalive on one socket, keepalives driven by
//!   [`poll_timeout`](Endpoint::poll_timeout), per-SA counters and a
//!   [`DropReason`](gatekit_packet::DropReason) for every failure.
//! - **In place, no allocation per packet**: headers are pushed into the buffer's headroom,
//!   the trailer into its tailroom, and the AEAD seals and opens where the bytes lie.
//!   [`Endpoint::encap`] / [`Endpoint::decap_ip`] take one packet; [`Endpoint::encap_batch`] /
//!   [`Endpoint::decap_batch`] a [`Batch`](gatekit_packet::Batch); [`Outbound`] and [`Inbound`]
//!   are the same as pipeline [`Stage`](gatekit_packet::Stage)s.
//! - **Wire views** ([`wire`]): the ESP header as `EspPacket` + `EspRepr`, and the RFC 3948
//!   classifier.
//!
//! What it does not do: IKE (the control plane negotiates SAs and hands them over as
//! [`SaConfig`]s), sockets (see `gatekit-io`), fragmentation or reassembly of outer packets
//! (fragments are dropped as `unsupported`), non-AEAD suites (CBC + HMAC), and IPv6
//! extension headers in front of ESP in transport mode (refused as `unsupported`).
//!
//! In transport mode over UDP the inner TCP/UDP checksums are fixed up on decap (RFC 3948
//! §3.1.2): moved incrementally to the addresses the packet arrived with when the SA knows
//! the sender's original addresses ([`SaConfig::nat_oa`]), recomputed otherwise.
//!
//! # Example
//!
//! ```
//! use gatekit_esp::{Direction, Endpoint, KeyMaterial, Output, SaConfig, Select, Suite, Decap};
//! use gatekit_packet::{Instant, PacketBuf, PktBuf};
//!
//! let key = KeyMaterial::from_hex(Suite::AesGcm128, "4c80cdefbb5d10da906ac73c3613a634 2e443b68")?;
//! let (a, b) = ("192.0.2.1".parse()?, "198.51.100.2".parse()?);
//! let now = Instant::ZERO;
//!
//! // Gateway A sends on SPI 0x1000, UDP-encapsulated on 4500 ↔ 4500; gateway B receives.
//! let mut gw_a = Endpoint::default();
//! let out = gw_a.add_sa(
//!     &SaConfig::new(0x1000, Direction::Outbound, Suite::AesGcm128, key.clone(), a, b).udp_encap(4500, 4500),
//!     now,
//! )?;
//! let mut gw_b = Endpoint::default();
//! gw_b.add_sa(
//!     &SaConfig::new(0x1000, Direction::Inbound, Suite::AesGcm128, key, b, a).udp_encap(4500, 4500),
//!     now,
//! )?;
//!
//! // An inner IPv4/UDP packet, with room around it for the outer headers and the trailer.
//! let mut inner = vec![0u8; 28 + 5];
//! etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 1, 0, 1], 64)
//!     .udp(1000, 53)
//!     .write(&mut &mut inner[..], b"hello")?;
//! let mut buf = PktBuf::from_slice(&inner, 64, 48);
//!
//! let sent = gw_a.encap(Select::Sa(out), &mut buf, Output::Packet, now).map_err(|r| r.as_str())?;
//! assert_eq!((sent.spi, sent.seq), (0x1000, 1));
//! // IPv4, UDP, ESP header and IV, the 33-byte packet, 13 bytes of padding (to a 16-byte
//! // boundary, see DEFAULT_PAD_TO), pad length and next header, ICV.
//! assert_eq!(buf.len(), 20 + 8 + 16 + 33 + 13 + 2 + 16);
//!
//! match gw_b.decap_ip(&mut buf, now) {
//!     Decap::Inner(d) => assert_eq!((d.spi, d.seq), (0x1000, 1)),
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(buf.data(), &inner[..]);
//! assert_eq!(gw_b.decap_ip(&mut PktBuf::from_slice(&[0x45], 0, 0), now), Decap::Drop(gatekit_packet::DropReason::Truncated));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `ring` (default): the ring AEAD backend.
//! - `rustcrypto`: the RustCrypto backend (`aes-gcm`, `chacha20poly1305`), chosen per SA
//!   with [`SaConfig::backend`]; with both enabled, ring stays the default.
//! - `fuzzing`: private, for `fuzz/` only: adds a null AEAD so fuzzing reaches the code
//!   behind authentication.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(not(any(feature = "ring", feature = "rustcrypto")))]
compile_error!(
    "gatekit-esp needs an AEAD backend: enable the `ring` (default) or `rustcrypto` feature"
);

mod crypto;
mod endpoint;
mod error;
mod ip;
mod policy;
pub mod replay;
mod sa;
mod stage;
pub mod wire;

pub use crypto::{Backend, ICV_LEN, IV_LEN, KeyMaterial, SALT_LEN, Suite};
pub use endpoint::{
    Decap, Decapped, Encapped, Endpoint, EndpointConfig, Event, Keepalive, Output, SaId, Select,
};
pub use error::ConfigError;
pub use policy::TrafficSelector;
pub use replay::ReplayWindow;
pub use sa::{
    DEFAULT_PAD_TO, Direction, ESP_MAX_TRAILER_LEN, ESP_PREFIX_LEN, Encap, Lifetime, MAX_PAD_TO,
    Mode, OriginalAddrs, SaConfig, SaState, SaStats, SecurityAssociation, TunnelId,
};
pub use stage::{Inbound, Outbound};

/// Entry points shared by the fuzz targets in `fuzz/` and the corpus-replay tests. Not a
/// stable API.
#[doc(hidden)]
pub mod fuzz {
    use crate::*;
    use gatekit_packet::{Instant, PacketBuf, PktBuf};

    const SPI_GCM: u32 = 0x0000_0100;
    const SPI_CHACHA: u32 = 0x0000_0101;
    const SPI_ESN: u32 = 0x0000_0102;
    #[cfg(feature = "fuzzing")]
    const SPI_NULL: u32 = 0x0000_0103;
    /// Null-AEAD transport-mode NAT-T SAs, with and without NAT-OA addresses: the
    /// RFC 3948 §3.1.2 checksum fix-up on arbitrary decrypted segments.
    #[cfg(feature = "fuzzing")]
    const SPI_NULL_OA: u32 = 0x0000_0104;
    #[cfg(feature = "fuzzing")]
    const SPI_NULL_NO_OA: u32 = 0x0000_0105;

    fn endpoint() -> Endpoint {
        let mut ep = Endpoint::default();
        let (l, p) = (
            core::net::IpAddr::from([192, 0, 2, 1]),
            core::net::IpAddr::from([192, 0, 2, 2]),
        );
        let sas = [
            (SPI_GCM, Suite::AesGcm128, Mode::Tunnel, false),
            (SPI_CHACHA, Suite::ChaCha20Poly1305, Mode::Transport, false),
            (SPI_ESN, Suite::AesGcm256, Mode::Tunnel, true),
            #[cfg(feature = "fuzzing")]
            (SPI_NULL, Suite::Null, Mode::Tunnel, false),
        ];
        for (spi, suite, mode, esn) in sas {
            let key = vec![0x42; suite.keymat_len()];
            if let Ok(km) = KeyMaterial::new(suite, &key) {
                let cfg = SaConfig::new(spi, Direction::Inbound, suite, km, l, p)
                    .mode(mode)
                    .esn(esn)
                    .udp_encap(4500, 4500);
                let _ = ep.add_sa(&cfg, Instant::ZERO);
            }
        }
        #[cfg(feature = "fuzzing")]
        for (spi, oa) in [(SPI_NULL_OA, true), (SPI_NULL_NO_OA, false)] {
            if let Ok(km) = KeyMaterial::new(Suite::Null, &[0; 4]) {
                let mut cfg = SaConfig::new(spi, Direction::Inbound, Suite::Null, km, l, p)
                    .mode(Mode::Transport)
                    .udp_encap(4500, 4500);
                if oa {
                    cfg = cfg.nat_oa(core::net::IpAddr::from([10, 0, 0, 9]), l);
                }
                let _ = ep.add_sa(&cfg, Instant::ZERO);
            }
        }
        ep
    }

    fn check(input: &[u8], buf: &PktBuf, v: Decap) {
        if let Decap::Inner(_) | Decap::Dummy(_) = v {
            assert!(buf.len() < input.len() + 60, "decap grew the packet");
        }
    }

    /// Decapsulation of arbitrary bytes as an outer IP packet, a NAT-T payload and an ESP
    /// packet, against real-key SAs and (with the `fuzzing` feature) a null-AEAD SA, whose
    /// SPI is also forced into the input so the trailer checks are reached.
    pub fn decap(data: &[u8]) {
        let mut ep = endpoint();
        let now = Instant::from_secs(1);
        let mut b = PktBuf::from_slice(data, 64, 64);
        let v = ep.decap_ip(&mut b, now);
        check(data, &b, v);
        let mut b = PktBuf::from_slice(data, 64, 64);
        let v = ep.decap_udp(&mut b, now);
        check(data, &b, v);
        let mut b = PktBuf::from_slice(data, 0, 0);
        let v = ep.decap_esp(&mut b, now);
        check(data, &b, v);
        #[cfg(feature = "fuzzing")]
        {
            let mut forced = data.to_vec();
            if forced.len() >= 4 {
                forced[..4].copy_from_slice(&SPI_NULL.to_be_bytes());
            }
            let mut b = PktBuf::from_slice(&forced, 64, 0);
            let v = ep.decap_esp(&mut b, now);
            check(&forced, &b, v);
            // Twice: the second is a replay unless the first was refused before the window.
            let mut b2 = PktBuf::from_slice(&forced, 64, 0);
            let v2 = ep.decap_esp(&mut b2, now);
            if let Decap::Inner(_) | Decap::Dummy(_) = v {
                assert_eq!(v2, Decap::Drop(gatekit_packet::DropReason::Replay));
            }
            // The same bytes as a UDP-encapsulated transport-mode packet from a peer behind
            // a NAT: whatever the decrypted segment holds, the IP header that comes out is
            // whole and the packet no longer than what went in.
            for spi in [SPI_NULL_OA, SPI_NULL_NO_OA] {
                if forced.len() >= 4 {
                    forced[..4].copy_from_slice(&spi.to_be_bytes());
                }
                let mut pkt = Vec::with_capacity(28 + forced.len());
                let total = (28 + forced.len()).min(usize::from(u16::MAX)) as u16;
                pkt.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
                pkt[2..4].copy_from_slice(&total.to_be_bytes());
                pkt.extend_from_slice(&[203, 0, 113, 7, 192, 0, 2, 1]);
                pkt.extend_from_slice(&[0x79, 0x18, 0x11, 0x94]);
                pkt.extend_from_slice(&(total - 20).to_be_bytes());
                pkt.extend_from_slice(&[0, 0]);
                pkt.extend_from_slice(&forced);
                let mut b = PktBuf::from_slice(&pkt, 64, 0);
                if let Decap::Inner(_) = ep.decap_ip(&mut b, now) {
                    let out = b.data();
                    assert!(out.len() <= pkt.len(), "transport decap grew the packet");
                    assert_eq!(out[0], 0x45);
                    assert_eq!(usize::from(u16::from_be_bytes([out[2], out[3]])), out.len());
                    assert_eq!(gatekit_packet::checksum::internet(&out[..20]), 0);
                }
            }
        }
        assert!(ep.drops().total() <= 12);
    }

    /// The NAT-T demultiplexer on arbitrary bytes: the classifier and the endpoint agree.
    pub fn natt_demux(data: &[u8]) {
        let kind = wire::classify_udp_payload(data);
        assert_eq!(kind == wire::UdpPayloadKind::Keepalive, data == [0xff]);
        let mut ep = endpoint();
        let mut b = PktBuf::from_slice(data, 64, 64);
        let v = ep.decap_udp(&mut b, Instant::ZERO);
        match kind {
            wire::UdpPayloadKind::Keepalive => assert_eq!(v, Decap::Keepalive),
            wire::UdpPayloadKind::Ike => {
                assert_eq!(v, Decap::Ike);
                assert_eq!(b.data(), data, "IKE is left untouched");
            }
            wire::UdpPayloadKind::Malformed => assert!(matches!(v, Decap::Drop(_))),
            wire::UdpPayloadKind::Esp => assert!(!matches!(v, Decap::Ike | Decap::Keepalive)),
        }
    }
}
