//! Batched UDP sockets: `recvmmsg`/`sendmmsg`, UDP GSO and GRO, `SO_REUSEPORT`.

use crate::buf::IoBuf;
use crate::dgram::{Dgram, Framing, HDR_ROOM, Opts, Shape};
use crate::{IoError, PortStats, sys};
use gatekit_packet::{Batch, Instant, Offloads, Pool, PoolBuf, Port, PortCaps, PortError, PortId};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

/// How to open a UDP socket.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// `SO_REUSEPORT`, so each worker binds its own socket to the same address and the
    /// kernel spreads flows over them.
    pub reuse_port: bool,
    /// Send runs of equal-sized datagrams to one destination as one UDP GSO message
    /// (`UDP_SEGMENT`), where the kernel supports it.
    pub gso: bool,
    /// Receive coalesced datagrams (`UDP_GRO`) and cut them here, where supported.
    pub gro: bool,
    /// Most datagrams per `recvmmsg`/`sendmmsg`.
    pub batch: usize,
    /// Socket buffer sizes to ask for (with `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` when allowed).
    pub buffer_bytes: Option<usize>,
    /// Whole IP packets (default) or payloads addressed by [`Meta::peer`](gatekit_packet::Meta).
    pub shape: Shape,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            reuse_port: true,
            gso: true,
            gro: true,
            batch: 64,
            buffer_bytes: Some(4 << 20),
            shape: Shape::Packet,
        }
    }
}

impl UdpConfig {
    /// One datagram per system call and no offloads: the baseline the batching is measured
    /// against.
    pub fn unbatched() -> Self {
        UdpConfig {
            gso: false,
            gro: false,
            batch: 1,
            ..UdpConfig::default()
        }
    }
}

/// Opens a non-blocking UDP socket bound to `addr` with the options of `cfg` (dual-stack when
/// bound to `[::]`). The socket can be moved to another thread and wrapped there in a
/// [`UdpPort`].
pub fn udp_socket(addr: SocketAddr, cfg: &UdpConfig) -> Result<Socket, IoError> {
    let target = addr.to_string();
    let os = |what| {
        let target = target.clone();
        move |e| IoError::os(what, target, e)
    };
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )
    .map_err(os("create UDP socket for"))?;
    if addr.is_ipv6() {
        sock.set_only_v6(false)
            .map_err(os("clear IPV6_V6ONLY on"))?;
    }
    if cfg.reuse_port {
        sock.set_reuse_port(true)
            .map_err(os("set SO_REUSEPORT on"))?;
    }
    if let Some(n) = cfg.buffer_bytes {
        set_buffers(&sock, n);
    }
    let fd = sock.as_fd();
    if addr.is_ipv4() {
        sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
            .map_err(os("set IP_PKTINFO on"))?;
    } else {
        sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
            .map_err(os("set IPV6_RECVPKTINFO on"))?;
        // Dual-stack sockets also get IPv4 destinations.
        let _ = sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
    }
    sock.bind(&addr.into()).map_err(os("bind UDP socket to"))?;
    Ok(sock)
}

pub(crate) fn set_buffers(sock: &Socket, n: usize) {
    let v = n.min(i32::MAX as usize) as libc::c_int;
    let fd = sock.as_fd();
    // Root may exceed rmem_max/wmem_max; others get what the limits allow.
    if sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v).is_err() {
        let _ = sock.set_recv_buffer_size(n);
    }
    if sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v).is_err() {
        let _ = sock.set_send_buffer_size(n);
    }
}

/// A UDP socket as a [`Port`].
///
/// Every received packet carries its sender in [`Meta::peer`](gatekit_packet::Meta). With
/// [`Shape::Payload`] packets are the datagram payloads and are sent to their `Meta::peer`.
/// With [`Shape::Packet`] (the default) they are whole IP packets: on receive the IPv4 (or IPv6) and UDP headers are
/// written back in front of the payload from the addresses the kernel reports (source from
/// the sender, destination from `IP_PKTINFO`; the IPv4 UDP checksum is left zero as the
/// kernel has verified it); on send the destination address and port are read from the
/// packet's headers, which are then skipped (the kernel writes its own; the source address
/// is the socket's). A packet that is not UDP over IP is dropped and counted.
///
/// Up to `batch` datagrams move per system call; with GSO, runs of equal-sized datagrams to
/// one destination go as one message, and with GRO the kernel hands over coalesced runs that
/// are cut back into datagrams here.
pub struct UdpPort<B: IoBuf = PoolBuf> {
    d: Dgram<B>,
}

impl<B: IoBuf> std::fmt::Debug for UdpPort<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpPort")
            .field("local", &self.d.local)
            .field("id", &self.d.id)
            .field("gso", &self.d.gso)
            .field("gro", &self.d.gro)
            .field("stats", &self.d.stats)
            .finish()
    }
}

impl<B: IoBuf> UdpPort<B> {
    /// Opens a socket bound to `addr` and wraps it.
    pub fn bind(
        addr: SocketAddr,
        cfg: &UdpConfig,
        pool: Pool,
        id: PortId,
    ) -> Result<Self, IoError> {
        let sock = udp_socket(addr, cfg)?;
        Self::from_socket(sock, cfg, pool, id)
    }

    /// Wraps a bound socket (from [`udp_socket`], say). The pool's buffers need at least 48
    /// bytes of headroom for the headers written back on receive.
    pub fn from_socket(
        sock: Socket,
        cfg: &UdpConfig,
        pool: Pool,
        id: PortId,
    ) -> Result<Self, IoError> {
        if pool.headroom() < HDR_ROOM {
            return Err(IoError::Invalid {
                field: "pool",
                reason: format!(
                    "headroom {} is below the {HDR_ROOM} bytes a UDP port needs",
                    pool.headroom()
                ),
            });
        }
        let local = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| IoError::Invalid {
                field: "socket",
                reason: "not a bound IP socket".into(),
            })?;
        sock.set_nonblocking(true)
            .map_err(|e| IoError::os("set non-blocking", local.to_string(), e))?;
        let fd = sock.as_fd();
        // Probe GSO with a zero segment size (a no-op that fails on kernels without it).
        let gso = cfg.gso && sys::setsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok();
        let gro = cfg.gro && sys::setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        Ok(UdpPort {
            d: Dgram::new(
                sock,
                local,
                Framing::Udp,
                pool,
                id,
                cfg.batch,
                Opts {
                    shape: cfg.shape,
                    gso,
                    gro,
                },
            ),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.d.local
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

impl<B: IoBuf> AsFd for UdpPort<B> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.d.sock.as_fd()
    }
}

impl<B: IoBuf> Port<B> for UdpPort<B> {
    fn caps(&self) -> PortCaps {
        PortCaps {
            mtu: 65507,
            headroom: 0,
            batch_size: self.d.batch,
            offloads: Offloads {
                udp_gso: self.d.gso,
                ..Offloads::default()
            },
        }
    }
    fn recv(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        self.d.recv(batch, now)
    }
    fn send(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        self.d.send(batch, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatekit_packet::{Meta, PacketBuf};

    #[test]
    fn pool_without_header_room_is_refused() {
        let pool = Pool::new(4, 2048, 16);
        let e = UdpPort::<PoolBuf>::bind(
            "127.0.0.1:0".parse().unwrap(),
            &UdpConfig::default(),
            pool,
            PortId(0),
        )
        .unwrap_err();
        assert!(e.to_string().contains("headroom 16"), "{e}");
    }

    #[test]
    fn reuse_port_lets_each_worker_bind_the_same_address() {
        let pool = Pool::new(8, 2048, 128);
        let cfg = UdpConfig::default();
        let a: UdpPort = UdpPort::bind(
            "127.0.0.1:0".parse().unwrap(),
            &cfg,
            pool.clone(),
            PortId(0),
        )
        .unwrap();
        let b: UdpPort = UdpPort::bind(a.local_addr(), &cfg, pool, PortId(1)).unwrap();
        assert_eq!(a.local_addr(), b.local_addr());
    }

    #[test]
    fn packets_that_are_not_udp_are_counted_not_sent() {
        let pool = Pool::new(8, 2048, 128);
        let mut a: UdpPort = UdpPort::bind(
            "127.0.0.1:0".parse().unwrap(),
            &UdpConfig::default(),
            pool.clone(),
            PortId(0),
        )
        .unwrap();
        let mut batch: Batch<PoolBuf> = Batch::new(4);
        for junk in [&b"\x45garbage"[..], &[0x60; 3][..], &[][..]] {
            let mut b = pool.get().unwrap();
            b.push_back(junk.len()).unwrap().copy_from_slice(junk);
            batch.push(b, Meta::default()).unwrap();
        }
        assert_eq!(a.send(&mut batch, Instant::ZERO).unwrap(), 3);
        assert!(batch.is_empty());
        assert_eq!(a.stats().tx_packets, 0);
        assert_eq!(a.stats().drops.total(), 3);
    }
}
