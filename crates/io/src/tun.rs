//! TUN and TAP devices: multi-queue, with the virtio-net header and the kernel's offloads.

use crate::buf::{IoBuf, fill, room};
use crate::vnet::{self, F_NEEDS_CSUM, GsoType, Segmenter, VNET_HDR_LEN, VnetError, VnetHeader};
use crate::{IoError, PortStats, netcfg, sys};
use gatekit_packet::{
    Batch, DropReason, Instant, Meta, Offloads, Pool, PoolBuf, Port, PortCaps, PortError, PortId,
    checksum,
};
use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Largest packet the kernel hands over with offloads on (a 64 KiB GSO super-packet).
const MAX_SUPER: usize = 65535;
/// Most segments coalesced into one super-packet on send.
const MAX_RUN: usize = 64;

/// Layer 3 (TUN: IP packets) or layer 2 (TAP: Ethernet frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunKind {
    /// IP packets, no link header.
    Tun,
    /// Ethernet frames.
    Tap,
}

/// How to create a TUN/TAP device.
#[derive(Debug, Clone)]
pub struct TunConfig {
    /// Interface name; `""` or a pattern with `%d` lets the kernel pick.
    pub name: String,
    /// TUN or TAP.
    pub kind: TunKind,
    /// Queues to open (`IFF_MULTI_QUEUE` when more than one): one per worker.
    pub queues: usize,
    /// Ask for the virtio-net header and the TSO/USO/checksum offloads (`IFF_VNET_HDR`,
    /// `TUNSETOFFLOAD`). Ports then cut super-packets into MTU-sized segments on receive and
    /// coalesce TCP segments on send.
    pub offload: bool,
    /// MTU to set, if any.
    pub mtu: Option<u32>,
    /// Addresses to add (`addr`, prefix length).
    pub addresses: Vec<(IpAddr, u8)>,
    /// Bring the link up after configuring it.
    pub up: bool,
}

impl TunConfig {
    /// A TUN device named `name`, one queue, offloads on, brought up.
    pub fn tun(name: &str) -> Self {
        TunConfig {
            name: name.to_string(),
            kind: TunKind::Tun,
            queues: 1,
            offload: true,
            mtu: None,
            addresses: Vec::new(),
            up: true,
        }
    }
    /// A TAP device named `name`, one queue, offloads on, brought up.
    pub fn tap(name: &str) -> Self {
        TunConfig {
            kind: TunKind::Tap,
            ..TunConfig::tun(name)
        }
    }
    /// Sets the number of queues.
    pub fn queues(mut self, n: usize) -> Self {
        self.queues = n;
        self
    }
    /// Turns the virtio-net header and offloads on or off.
    pub fn offload(mut self, on: bool) -> Self {
        self.offload = on;
        self
    }
    /// Sets the MTU.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    /// Adds an address.
    pub fn address(mut self, addr: IpAddr, prefix: u8) -> Self {
        self.addresses.push((addr, prefix));
        self
    }
    /// Whether to bring the link up.
    pub fn up(mut self, up: bool) -> Self {
        self.up = up;
        self
    }
}

/// One queue of a TUN/TAP device: a file descriptor that can be moved to the worker thread
/// that will own it (then wrapped in a [`TunPort`]).
#[derive(Debug)]
pub struct TunQueue {
    fd: OwnedFd,
    kind: TunKind,
    vnet: bool,
    offloads: Offloads,
    mtu: usize,
}

impl AsFd for TunQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A TUN/TAP device: its name, what offloads the kernel agreed to, and its queues. The device
/// lives while any of its queues is open.
#[derive(Debug)]
pub struct Tun {
    name: String,
    kind: TunKind,
    offloads: Offloads,
    queues: Vec<TunQueue>,
}

impl Tun {
    /// Creates the device (or attaches to an existing one of that name), opens its queues and
    /// configures MTU, addresses and link state. Needs `CAP_NET_ADMIN`.
    pub fn create(cfg: &TunConfig) -> Result<Tun, IoError> {
        if cfg.queues == 0 {
            return Err(IoError::Invalid {
                field: "queues",
                reason: "a device needs at least one queue".into(),
            });
        }
        let mut flags = libc::IFF_NO_PI;
        flags |= match cfg.kind {
            TunKind::Tun => libc::IFF_TUN,
            TunKind::Tap => libc::IFF_TAP,
        };
        if cfg.offload {
            flags |= libc::IFF_VNET_HDR;
        }
        if cfg.queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let mut name = cfg.name.clone();
        let mut fds = Vec::with_capacity(cfg.queues);
        for _ in 0..cfg.queues {
            let fd = sys::open_rw_nonblock(c"/dev/net/tun")
                .map_err(|e| IoError::os("open", "/dev/net/tun", e))?;
            name = sys::tun_set_iff(fd.as_fd(), &name, flags as libc::c_short)
                .map_err(|e| IoError::os("create TUN/TAP device", &cfg.name, e))?;
            fds.push(fd);
        }
        let mut offloads = Offloads::default();
        if cfg.offload {
            for fd in &fds {
                sys::ioctl_int(
                    fd.as_fd(),
                    libc::TUNSETVNETHDRSZ,
                    VNET_HDR_LEN as libc::c_int,
                )
                .map_err(|e| IoError::os("set vnet header size on", &name, e))?;
                offloads = set_offload(fd.as_fd())
                    .map_err(|e| IoError::os("set offloads on", &name, e))?;
            }
        }
        if let Some(mtu) = cfg.mtu {
            netcfg::set_mtu(&name, mtu)?;
        }
        for (addr, prefix) in &cfg.addresses {
            netcfg::add_address(&name, *addr, *prefix)?;
        }
        if cfg.up {
            netcfg::set_up(&name)?;
        }
        let mtu = match cfg.mtu {
            Some(m) => m as usize,
            None => read_mtu(&name).unwrap_or(1500),
        };
        let queues = fds
            .into_iter()
            .map(|fd| TunQueue {
                fd,
                kind: cfg.kind,
                vnet: cfg.offload,
                offloads,
                mtu,
            })
            .collect();
        Ok(Tun {
            name,
            kind: cfg.kind,
            offloads,
            queues,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// TUN or TAP.
    pub fn kind(&self) -> TunKind {
        self.kind
    }
    /// Offloads the kernel agreed to (all off without the virtio-net header).
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }
    /// Takes the queues out, to hand one to each worker. The device stays up while they are
    /// open.
    pub fn into_queues(self) -> Vec<TunQueue> {
        self.queues
    }
    /// The queues, still owned by the device.
    pub fn queues(&self) -> &[TunQueue] {
        &self.queues
    }
}

fn read_mtu(name: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Asks for checksum offload, TSO and (kernel 6.2+) USO, falling back step by step.
fn set_offload(fd: BorrowedFd<'_>) -> io::Result<Offloads> {
    let base = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    let with_uso = base | libc::TUN_F_USO4 | libc::TUN_F_USO6;
    let full = |tso, uso| Offloads {
        tx_checksum: true,
        rx_checksum: true,
        tso,
        udp_gso: uso,
        gro: tso,
    };
    if sys::ioctl_value(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(with_uso)).is_ok() {
        return Ok(full(true, true));
    }
    if sys::ioctl_value(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(base)).is_ok() {
        return Ok(full(true, false));
    }
    sys::ioctl_value(
        fd,
        libc::TUNSETOFFLOAD,
        libc::c_ulong::from(libc::TUN_F_CSUM),
    )?;
    Ok(full(false, false))
}

/// One queue of a TUN/TAP device as a [`Port`]: IP packets (TUN) or Ethernet frames (TAP).
///
/// With the virtio-net header, `recv` cuts the kernel's GSO super-packets into segments of the
/// device MTU (completing partial checksums), so the pipeline only ever sees MTU-sized
/// packets; `send` coalesces runs of consecutive in-order TCP segments of one flow into one
/// super-packet per write (the kernel's GRO done in user space; like GRO, it takes only
/// segments whose checksums are right, since the kernel fills the super-packet's afresh),
/// and writes everything else one packet per `write`. TUN has no batched read or write, so offloads are what amortises
/// the system calls here.
pub struct TunPort<B: IoBuf = PoolBuf> {
    q: TunQueue,
    pool: Pool,
    id: PortId,
    scratch: Box<[u8]>,
    gather: sys::Gather,
    backlog: VecDeque<B>,
    coalesce: bool,
    max_reads: usize,
    stats: PortStats,
}

impl<B: IoBuf> std::fmt::Debug for TunPort<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunPort")
            .field("id", &self.id)
            .field("kind", &self.q.kind)
            .field("vnet", &self.q.vnet)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<B: IoBuf> TunPort<B> {
    /// Wraps a queue; received packets go into buffers from `pool` and carry `id` as their
    /// ingress. The pool's buffers must hold an MTU-sized packet after their headroom.
    pub fn new(queue: TunQueue, pool: Pool, id: PortId) -> Result<Self, IoError> {
        let link = if queue.kind == TunKind::Tap { 18 } else { 0 };
        let need = queue.mtu + link;
        let room = pool.buf_size().saturating_sub(pool.headroom());
        if room < need {
            return Err(IoError::Invalid {
                field: "pool",
                reason: format!(
                    "buffers hold {room} bytes after headroom, the device needs {need}"
                ),
            });
        }
        // Coalescing reads the packets as IP: a TAP device carries Ethernet frames.
        let coalesce = queue.vnet && queue.kind == TunKind::Tun;
        Ok(TunPort {
            coalesce,
            scratch: vec![0u8; VNET_HDR_LEN + MAX_SUPER].into_boxed_slice(),
            gather: sys::Gather::new(MAX_RUN + 1),
            q: queue,
            pool,
            id,
            backlog: VecDeque::new(),
            max_reads: 64,
            stats: PortStats::default(),
        })
    }

    /// Turns TCP coalescing on send on or off (on by default on a TUN device with the
    /// virtio-net header; never on a TAP device, whose frames are not IP packets).
    pub fn set_coalesce(&mut self, on: bool) {
        self.coalesce = on && self.q.vnet && self.q.kind == TunKind::Tun;
    }

    /// The port's counters.
    pub fn stats(&self) -> &PortStats {
        &self.stats
    }

    /// The port id stamped on received packets.
    pub fn id(&self) -> PortId {
        self.id
    }

    /// Reads one packet (or super-packet) from the device; `Ok(false)` when none is ready.
    fn read_one(
        &mut self,
        batch: &mut Batch<B>,
        now: Instant,
        n: &mut usize,
    ) -> Result<bool, PortError> {
        if !self.q.vnet {
            let Some(mut b) = B::take(&self.pool) else {
                return Ok(false);
            };
            match sys::read(self.q.fd.as_fd(), room(&mut b)) {
                Ok(len) => {
                    self.stats.rx_calls += 1;
                    fill(&mut b, len);
                    self.deliver(b, batch, now, n);
                    Ok(true)
                }
                Err(e) => read_error(e),
            }
        } else {
            let len = match sys::read(self.q.fd.as_fd(), &mut self.scratch) {
                Ok(len) => len,
                Err(e) => return read_error(e),
            };
            self.stats.rx_calls += 1;
            // Lend the scratch out while the segments are written into pool buffers.
            let scratch = std::mem::take(&mut self.scratch);
            if let Some(data) = scratch.get(..len)
                && let Err(e) = self.split(data, batch, now, n)
            {
                self.stats.drop(vnet_drop(e));
            }
            self.scratch = scratch;
            Ok(true)
        }
    }

    fn split(
        &mut self,
        data: &[u8],
        batch: &mut Batch<B>,
        now: Instant,
        n: &mut usize,
    ) -> Result<(), VnetError> {
        let hdr = VnetHeader::parse(data)?;
        let pkt = &data[VNET_HDR_LEN..];
        let l3 = match (hdr.gso_type, self.q.kind) {
            (GsoType::None, _) | (_, TunKind::Tun) => 0,
            (_, TunKind::Tap) => vnet::l3_offset_ethernet(pkt)?,
        };
        let seg = Segmenter::new(&hdr, pkt, l3)?;
        if seg.count() > 1 {
            self.stats.rx_coalesced += 1;
        }
        for i in 0..seg.count() {
            let Some(mut b) = B::take(&self.pool) else {
                self.stats
                    .drops
                    .add(DropReason::NoBuffer, (seg.count() - i) as u64);
                return Ok(());
            };
            let len = seg.segment_len(i);
            match b.push_back(len) {
                Ok(out) => seg.write(i, out)?,
                Err(_) => {
                    self.stats.drop(DropReason::TooBig);
                    continue;
                }
            }
            self.deliver(b, batch, now, n);
        }
        Ok(())
    }

    fn deliver(&mut self, b: B, batch: &mut Batch<B>, now: Instant, n: &mut usize) {
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += b.len() as u64;
        if let Err(full) = batch.push(b, Meta::new(self.id, now)) {
            self.backlog.push_back(full.packet);
        } else {
            *n += 1;
        }
    }

    /// Writes packets `i..j` of the batch as one TCP super-packet; returns false if the
    /// kernel would block.
    fn write_coalesced(&mut self, batch: &Batch<B>, i: usize, j: usize) -> Result<bool, PortError> {
        let Some((first, _, _)) = batch.get(i) else {
            return Ok(true);
        };
        let a = first.data();
        let Some(head) = vnet::tcp_segment(a) else {
            return Ok(true);
        };
        let (l4, hdr_end) = (head.l4, head.hdr_end);
        // The headers of the super-packet (after the vnet header) are the first segment's,
        // with lengths, PSH and checksums fixed; the payloads are gathered from the segments'
        // own buffers, without copying them.
        let mut ip_len = a.len();
        let mut psh = false;
        for k in i + 1..j {
            if let Some((b, _, _)) = batch.get(k) {
                ip_len += b.len() - hdr_end;
                psh |= b.data().get(l4 + 13).is_some_and(|f| f & 0x08 != 0);
            }
        }
        let hdr = &mut self.scratch[..VNET_HDR_LEN + hdr_end];
        hdr[VNET_HDR_LEN..].copy_from_slice(&a[..hdr_end]);
        let h = &mut hdr[VNET_HDR_LEN..];
        if head.v6 {
            h[4..6].copy_from_slice(&((ip_len - 40) as u16).to_be_bytes());
        } else {
            h[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            h[10..12].fill(0);
            let c = checksum::internet(&h[..20]);
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        if psh {
            h[l4 + 13] |= 0x08;
        }
        // The checksum field holds the pseudo-header sum; the kernel completes it per segment
        // (NEEDS_CSUM with csum_start/csum_offset, virtio 1.x §5.1.6.2).
        let pseudo = vnet::pseudo_sum(h, head.v6, 6, ip_len - l4);
        h[l4 + 16..l4 + 18].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        VnetHeader {
            flags: F_NEEDS_CSUM,
            gso_type: if head.v6 {
                GsoType::TcpV6
            } else {
                GsoType::TcpV4
            },
            ecn: false,
            hdr_len: hdr_end as u16,
            gso_size: head.payload as u16,
            csum_start: l4 as u16,
            csum_offset: 16,
        }
        .emit(&mut hdr[..VNET_HDR_LEN]);
        let hdr: &[u8] = hdr;
        let payloads = (i..j)
            .filter_map(|k| batch.get(k))
            .map(|(b, _, _)| &b.data()[hdr_end..]);
        let res = self
            .gather
            .writev(self.q.fd.as_fd(), std::iter::once(hdr).chain(payloads));
        match res {
            Ok(_) => {
                self.stats.tx_calls += 1;
                self.stats.tx_coalesced += 1;
                self.stats.tx_packets += (j - i) as u64;
                self.stats.tx_bytes += ip_len as u64;
                Ok(true)
            }
            Err(e) => self.write_error(e, (j - i) as u64),
        }
    }

    /// How many packets from `i` on form one coalescable TCP run (1 if none).
    fn run_len(&self, batch: &Batch<B>, i: usize) -> usize {
        let packets = (i..).map_while(|k| batch.get(k)).map(|(b, _, _)| b.data());
        vnet::tcp_run(packets, MAX_RUN, MAX_SUPER)
    }

    fn write_error(&mut self, e: io::Error, packets: u64) -> Result<bool, PortError> {
        match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(false),
            Some(libc::EIO) => {
                // The device is down (or being torn down): the packet is lost, the port is not.
                self.stats.drops.add(DropReason::PortDown, packets);
                Ok(true)
            }
            Some(libc::EINVAL | libc::EMSGSIZE | libc::EFAULT) => {
                self.stats.drops.add(DropReason::Malformed, packets);
                Ok(true)
            }
            _ => Err(PortError::from(e)),
        }
    }
}

fn read_error(e: io::Error) -> Result<bool, PortError> {
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EINTR) => Ok(false),
        _ => Err(PortError::from(e)),
    }
}

fn vnet_drop(e: VnetError) -> DropReason {
    match e {
        VnetError::Truncated { .. } => DropReason::Truncated,
        VnetError::Malformed(_) => DropReason::Malformed,
        VnetError::Unsupported(_) => DropReason::Unsupported,
        VnetError::NoBuffer { .. } => DropReason::NoBuffer,
    }
}

impl<B: IoBuf> AsFd for TunPort<B> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.q.fd.as_fd()
    }
}

impl<B: IoBuf> Port<B> for TunPort<B> {
    fn caps(&self) -> PortCaps {
        PortCaps {
            mtu: self.q.mtu,
            headroom: if self.q.vnet { VNET_HDR_LEN } else { 0 },
            batch_size: 64,
            offloads: Offloads {
                // What the pipeline sees: segments are cut and checksums completed here.
                gro: false,
                ..self.q.offloads
            },
        }
    }

    fn recv(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        let mut n = 0;
        while !batch.is_full() {
            let Some(b) = self.backlog.pop_front() else {
                break;
            };
            if let Err(full) = batch.push(b, Meta::new(self.id, now)) {
                self.backlog.push_front(full.packet);
                break;
            }
            n += 1;
        }
        let mut reads = 0;
        while !batch.is_full() && reads < self.max_reads {
            reads += 1;
            if !self.read_one(batch, now, &mut n)? {
                break;
            }
        }
        Ok(n)
    }

    fn send(&mut self, batch: &mut Batch<B>, _now: Instant) -> Result<usize, PortError> {
        let mut i = 0;
        let total = batch.len();
        while i < total {
            let run = if self.coalesce {
                self.run_len(batch, i)
            } else {
                1
            };
            if run > 1 {
                if !self.write_coalesced(batch, i, i + run)? {
                    break;
                }
                i += run;
                continue;
            }
            let Some((b, _, _)) = batch.get_mut(i) else {
                break;
            };
            let len = b.len();
            let res = if !self.q.vnet {
                sys::writev(self.q.fd.as_fd(), &[b.data()])
            } else if let Ok(h) = b.push_front(VNET_HDR_LEN) {
                h.fill(0);
                let r = sys::writev(self.q.fd.as_fd(), &[b.data()]);
                let _ = b.pull_front(VNET_HDR_LEN);
                r
            } else {
                sys::writev(self.q.fd.as_fd(), &[&[0u8; VNET_HDR_LEN], b.data()])
            };
            match res {
                Ok(_) => {
                    self.stats.tx_calls += 1;
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += len as u64;
                }
                Err(e) => {
                    if !self.write_error(e, 1)? {
                        break;
                    }
                }
            }
            i += 1;
        }
        batch.consume_front(i);
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configuration_is_a_clear_error() {
        let e = Tun::create(&TunConfig::tun("gk0").queues(0)).unwrap_err();
        assert!(e.to_string().contains("queues"), "{e}");
        let e = Tun::create(&TunConfig::tun("a-name-longer-than-fifteen")).unwrap_err();
        assert!(e.to_string().contains("a-name-longer-than-fifteen"), "{e}");
    }
}
