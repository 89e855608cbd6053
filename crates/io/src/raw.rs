//! Raw IP sockets for protocols the kernel does not terminate here: native ESP (50) and
//! GRE (47).

use crate::buf::IoBuf;
use crate::dgram::{Dgram, Framing, HDR_ROOM, Opts, Shape};
use crate::udp::set_buffers;
use crate::{IoError, PortStats, sys};
use gatekit_packet::{Batch, Instant, Offloads, Pool, PoolBuf, Port, PortCaps, PortError, PortId};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};

/// IP protocol number of ESP (RFC 4303).
pub const IPPROTO_ESP: u8 = 50;
/// IP protocol number of GRE (RFC 2784).
pub const IPPROTO_GRE: u8 = 47;

/// How to open a raw socket.
#[derive(Debug, Clone, Copy)]
pub struct RawConfig {
    /// Most packets per `recvmmsg`/`sendmmsg`.
    pub batch: usize,
    /// Whole IP packets (default) or payloads addressed by [`Meta::peer`](gatekit_packet::Meta).
    pub shape: Shape,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            batch: 64,
            shape: Shape::Packet,
        }
    }
}

/// A raw IP socket for one protocol as a [`Port`], batched with `recvmmsg`/`sendmmsg`.
///
/// Every received packet carries its sender in [`Meta::peer`](gatekit_packet::Meta) (port 0).
/// With [`Shape::Payload`] packets are the IP payloads (the ESP or GRE header first) and are
/// sent to their `Meta::peer`. With [`Shape::Packet`] (the default) they are whole IP
/// packets. IPv4: the kernel hands over the IPv4 header and
/// takes ours as it is (`IP_HDRINCL`; it fills in the total length and checksum, and the
/// source and id when zero). IPv6: the header is written back on receive and read for the
/// destination then skipped on send. Every packet of the protocol that reaches the host is
/// received, whatever its destination port-less flow; pair the port with a firewall stage.
pub struct RawPort<B: IoBuf = PoolBuf> {
    d: Dgram<B>,
}

impl<B: IoBuf> std::fmt::Debug for RawPort<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPort")
            .field("local", &self.d.local)
            .field("id", &self.d.id)
            .field("stats", &self.d.stats)
            .finish()
    }
}

impl<B: IoBuf> RawPort<B> {
    /// Opens a raw socket for `protocol`, bound to `local` (use the unspecified address for
    /// all), and wraps it. Needs `CAP_NET_RAW`.
    pub fn open(
        local: IpAddr,
        protocol: u8,
        cfg: &RawConfig,
        pool: Pool,
        id: PortId,
    ) -> Result<Self, IoError> {
        let target = format!("{local} protocol {protocol}");
        let os = |what| {
            let target = target.clone();
            move |e| IoError::os(what, target, e)
        };
        if pool.headroom() < HDR_ROOM {
            return Err(IoError::Invalid {
                field: "pool",
                reason: format!(
                    "headroom {} is below the {HDR_ROOM} bytes a raw port needs",
                    pool.headroom()
                ),
            });
        }
        let addr = SocketAddr::new(local, 0);
        let sock = Socket::new(
            Domain::for_address(addr),
            Type::RAW.nonblocking().cloexec(),
            Some(Protocol::from(i32::from(protocol))),
        )
        .map_err(os("open raw socket for"))?;
        let fd = sock.as_fd();
        let framing = if local.is_ipv4() && cfg.shape == Shape::Payload {
            Framing::RawV4
        } else if local.is_ipv4() {
            sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_HDRINCL, 1)
                .map_err(os("set IP_HDRINCL on"))?;
            Framing::RawV4
        } else {
            sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
                .map_err(os("set IPV6_RECVPKTINFO on"))?;
            Framing::RawV6(protocol)
        };
        set_buffers(&sock, 4 << 20);
        sock.bind(&addr.into()).map_err(os("bind raw socket to"))?;
        Ok(RawPort {
            d: Dgram::new(
                sock,
                addr,
                framing,
                pool,
                id,
                cfg.batch,
                Opts {
                    shape: cfg.shape,
                    ..Opts::default()
                },
            ),
        })
    }

    /// The port's counters.
    pub fn stats(&self) -> &PortStats {
        &self.d.stats
    }
    /// The port id stamped on received packets.
    pub fn id(&self) -> PortId {
        self.d.id
    }
    /// The socket, for options this type does not cover.
    pub fn socket(&self) -> &Socket {
        &self.d.sock
    }
}

impl<B: IoBuf> AsFd for RawPort<B> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.d.sock.as_fd()
    }
}

impl<B: IoBuf> Port<B> for RawPort<B> {
    fn caps(&self) -> PortCaps {
        PortCaps {
            mtu: 65535,
            headroom: 0,
            batch_size: self.d.batch,
            offloads: Offloads::default(),
        }
    }
    fn recv(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        self.d.recv(batch, now)
    }
    fn send(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        self.d.send(batch, now)
    }
}
