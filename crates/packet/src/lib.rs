//! Packet buffers and the pipeline traits every gatekit crate composes through.
//!
//! This crate is deliberately small and dependency-light (`no_std` + `alloc` capable). It provides:
//!
//! - [`PacketBuf`]: one packet in one buffer with headroom and tailroom, so that encapsulation
//!   pushes headers in front and trailers behind without copying. Implemented by [`PktBuf`], by
//!   [`PoolBuf`] and, behind the `bytes` feature, by `bytes::BytesMut`.
//! - [`Pool`]: preallocated fixed-size buffers, recycled when dropped, so the steady state of a
//!   data path allocates nothing.
//! - [`Batch`]: a fixed-capacity batch of buffers with their [`Meta`] and verdict ([`Action`]).
//! - [`Stage`] and [`Port`]: the sans-IO processing element and the device abstraction that
//!   pipelines are built from.
//! - [`FlowKey`]: the 5-tuple of an IPv4/IPv6 packet, read in place with etherparse.
//! - [`checksum`]: the Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! It does not parse or build protocol headers beyond what [`FlowKey`] and [`Meta::parse_ip`]
//! need: Ethernet, IP, UDP and TCP come from etherparse; tunnel headers live in their crates.
//!
//! # Example
//!
//! ```
//! use gatekit_packet::{PacketBuf, Pool, FlowKey, Transport};
//!
//! // A pool of 4 buffers of 2048 bytes, each handed out with 128 bytes of headroom.
//! let pool = Pool::new(4, 2048, 128);
//! let mut buf = pool.get().expect("pool has free buffers");
//!
//! // Write an IPv4/UDP packet (built here with etherparse) into the buffer.
//! let builder = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(5000, 53);
//! let payload = b"hello";
//! let len = builder.size(payload.len());
//! builder.write(&mut &mut buf.push_back(len)?[..], payload).unwrap();
//!
//! let key = FlowKey::from_ip(buf.data())?;
//! assert_eq!(key.proto, 17);
//! assert_eq!(key.transport, Transport::Ports { src: 5000, dst: 53 });
//!
//! // Encapsulate: 8 bytes of a made-up outer header go in front, without copying the packet.
//! buf.push_front(8)?.copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1]);
//! assert_eq!(buf.headroom(), 120);
//! buf.pull_front(8)?;
//! assert_eq!(FlowKey::from_ip(buf.data())?, key);
//!
//! drop(buf); // back to the pool
//! assert_eq!(pool.available(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `std` (default): `std::error::Error` impls and conversions from `std::io::Error`.
//! - `alloc`: [`PktBuf`], [`Pool`] and [`Batch`] (all need an allocator, none allocates per packet).
//! - `bytes`: [`PacketBuf`] for `bytes::BytesMut`.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(not(feature = "alloc"))]
compile_error!("gatekit-packet needs the `alloc` feature (enabled by default through `std`)");

mod buf;
pub mod checksum;
mod flow;
mod meta;
mod pool;
mod stage;
mod time;

pub use buf::{BufError, PacketBuf, PktBuf};
pub use flow::{FlowError, FlowKey, PlainIpv4, Transport, plain_ipv4_lengths};
pub use meta::{Meta, PortId};
pub use pool::{Batch, BatchFull, Pool, PoolBuf};
pub use stage::{Action, DropCounters, DropReason, Offloads, Port, PortCaps, PortError, Stage};
pub use time::Instant;

/// Entry points shared by the fuzz targets in `fuzz/` and the corpus-replay tests, so that
/// what is fuzzed on nightly is also replayed on stable. Not a stable API.
#[doc(hidden)]
pub mod fuzz {
    use crate::{FlowKey, Meta};

    /// FlowKey and Meta extraction from arbitrary bytes; checks the invariants that must hold
    /// whatever the input (offsets inside the data, reversal is an involution).
    pub fn flow_key(data: &[u8]) {
        // The IPv4 fast path reads what etherparse reads.
        let general = etherparse::IpSlice::from_slice(data)
            .map_err(|_| crate::FlowError::NotIp)
            .and_then(|ip| FlowKey::from_ip_slice(&ip));
        assert_eq!(FlowKey::from_ip(data), general);
        for key in [FlowKey::from_ip(data), FlowKey::from_ethernet(data)]
            .into_iter()
            .flatten()
        {
            assert_eq!(key.reversed().reversed(), key);
            assert_eq!(key.hash(true), key.reversed().hash(true));
        }
        let mut meta = Meta::default();
        if meta.parse_ip(data) {
            assert_eq!(meta.l3, Some(0));
        }
        check_offsets(&meta, data);
        if meta.parse_ethernet(data) {
            assert_eq!(meta.l2, Some(0));
        }
        check_offsets(&meta, data);
    }

    fn check_offsets(meta: &Meta, data: &[u8]) {
        for off in [meta.l2, meta.l3, meta.l4].into_iter().flatten() {
            assert!(usize::from(off) <= data.len());
        }
    }
}
