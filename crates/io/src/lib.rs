//! The OS side of gatekit: TUN/TAP devices, batched UDP and raw sockets, and the event loop.
//!
//! This is the only gatekit crate that makes system calls (and the only one with `unsafe`,
//! confined to `sys.rs`, each block with its reason). Everything it opens is a
//! [`Port`](gatekit_packet::Port), so a pipeline built from gatekit stages runs on real
//! devices exactly as it runs on the in-memory ports of the test kit.
//!
//! - [`Tun`] / [`TunPort`]: TUN (IP) and TAP (Ethernet) devices, multi-queue
//!   (`IFF_MULTI_QUEUE`, one queue per worker), with the virtio-net header (`IFF_VNET_HDR`)
//!   and the TSO/USO/checksum offloads the kernel agrees to (`TUNSETOFFLOAD`). Received GSO
//!   super-packets are cut into MTU-sized segments with every checksum fixed, so the pipeline
//!   only sees ordinary packets; sent TCP segments of one flow are coalesced back into one
//!   super-packet per write.
//! - [`UdpPort`]: a UDP socket moved with `recvmmsg`/`sendmmsg`, UDP GSO (`UDP_SEGMENT`) and
//!   GRO (`UDP_GRO`), `SO_REUSEPORT` for one socket per worker.
//! - [`RawPort`]: raw IP sockets for native ESP (protocol 50) and GRE (47), batched the same
//!   way.
//! - [`EventLoop`]: one worker thread per core, each polling the sources it owns with epoll and
//!   calling a [`Worker`] with readiness events and timers (`poll_timeout` /
//!   `handle_timeout`), stopped gracefully through a [`StopHandle`].
//! - [`netcfg`]: addresses, MTU and link state through the `ip` command, and network
//!   namespaces (configuration paths only, never the data path).
//!
//! By default every port hands the pipeline whole IP packets (TUN, UDP, raw) or Ethernet
//! frames (TAP): a socket port writes the outer IP/UDP headers back in front of what the
//! kernel received and reads the destination out of them on send. Socket ports can instead
//! move bare payloads addressed by `Meta::peer` ([`Shape::Payload`]); either way they set
//! `Meta::peer` to the sender on receive. Buffers come from a per-worker
//! [`Pool`](gatekit_packet::Pool): ports implement `Port<PoolBuf>` for the data path (nothing
//! allocated per packet) and `Port<PktBuf>` too (see [`IoBuf`]).
//!
//! What it does not do: no async runtime, no routing or neighbour tables of its own, no
//! `AF_XDP`; configuration other than address/MTU/up is left to the operator's tools.
//! Linux only.
//!
//! # Example
//!
//! Two UDP ports on loopback; a packet is built as a whole IPv4/UDP packet, sent through one
//! and received from the other with its headers written back.
//!
//! ```
//! use gatekit_io::{UdpConfig, UdpPort};
//! use gatekit_packet::{Batch, Instant, Meta, PacketBuf, Pool, PoolBuf, Port, PortId};
//!
//! let pool = Pool::new(64, 2048, 128);
//! let cfg = UdpConfig::default();
//! let mut a: UdpPort = UdpPort::bind("127.0.0.1:0".parse()?, &cfg, pool.clone(), PortId(1))?;
//! let mut b: UdpPort = UdpPort::bind("127.0.0.1:0".parse()?, &cfg, pool.clone(), PortId(2))?;
//!
//! let mut buf = pool.get().unwrap();
//! let builder = etherparse::PacketBuilder::ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
//!     .udp(a.local_addr().port(), b.local_addr().port());
//! let len = builder.size(5);
//! builder.write(&mut &mut buf.push_back(len)?[..], b"hello")?;
//! let mut out: Batch<PoolBuf> = Batch::new(8);
//! out.push(buf, Meta::default()).unwrap();
//! assert_eq!(a.send(&mut out, Instant::ZERO)?, 1);
//!
//! let mut got: Batch<PoolBuf> = Batch::new(8);
//! while b.recv(&mut got, Instant::ZERO)? == 0 {}
//! let (pkt, meta, _) = got.get(0).unwrap();
//! assert_eq!(meta.ingress, PortId(2));
//! assert_eq!(&pkt.data()[28..], b"hello");
//! let ip = etherparse::Ipv4HeaderSlice::from_slice(pkt.data())?;
//! assert_eq!(ip.source(), [127, 0, 0, 1]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("gatekit-io supports Linux only");

mod buf;
mod clock;
mod dgram;
mod error;
mod event;
pub mod netcfg;
mod raw;
mod stats;
mod sys;
mod tun;
mod udp;
pub mod vnet;

pub use buf::IoBuf;
pub use clock::Clock;
pub use dgram::Shape;
pub use error::IoError;
pub use event::{
    Event, EventLoop, EventLoopConfig, Interest, Registry, StopHandle, Token, Worker, WorkerCtx,
};
pub use raw::{IPPROTO_ESP, IPPROTO_GRE, RawConfig, RawPort};
pub use stats::PortStats;
pub use tun::{Tun, TunConfig, TunKind, TunPort, TunQueue};
pub use udp::{UdpConfig, UdpPort, udp_socket};

/// Entry points shared by the fuzz targets in `fuzz/` and the corpus-replay tests, so that
/// what is fuzzed on nightly is also replayed on stable. Not a stable API.
#[doc(hidden)]
pub mod fuzz {
    use crate::vnet::{self, Segmenter, VNET_HDR_LEN, VnetHeader};

    /// A virtio-net header and packet as a TUN/TAP device would hand them over: parsing,
    /// segmentation and the TCP coalescing checks never panic, and segments account for
    /// every payload byte exactly once.
    pub fn tun_vnet(data: &[u8]) {
        crate::dgram::fuzz_parse_out(data);
        let Ok(hdr) = VnetHeader::parse(data) else {
            return;
        };
        let pkt = &data[VNET_HDR_LEN..];
        let mut l3s = vec![0];
        if let Ok(l3) = vnet::l3_offset_ethernet(pkt) {
            l3s.push(l3);
        }
        for l3 in l3s {
            let Ok(seg) = Segmenter::new(&hdr, pkt, l3) else {
                continue;
            };
            let n = seg.count();
            assert!(n >= 1);
            let lens: Vec<usize> = (0..n).map(|i| seg.segment_len(i)).collect();
            assert!(lens.iter().all(|l| *l <= pkt.len()));
            if n > 1 {
                let first_hdr = lens[0] - usize::from(hdr.gso_size).min(lens[0]);
                let payload: usize = lens.iter().map(|l| l - first_hdr).sum();
                assert_eq!(
                    payload + first_hdr,
                    pkt.len(),
                    "segments cover the payload once"
                );
            }
            // Write the first few and the last segment.
            for i in (0..n.min(8)).chain(std::iter::once(n - 1)) {
                let mut out = vec![0u8; lens[i]];
                let _ = seg.write(i, &mut out);
            }
            assert_eq!(seg.segment_len(n), 0);
        }
        if let Some(a) = vnet::tcp_segment(pkt) {
            assert!(a.hdr_end <= pkt.len() && a.l4 < a.hdr_end);
            let _ = vnet::tcp_can_merge(pkt, &a, 1, &a, pkt, &a);
            let _ = vnet::tcp_run([pkt, pkt].into_iter(), 64, 65535);
        }
    }
}
