//! The batched datagram engine under [`UdpPort`](crate::UdpPort) and
//! [`RawPort`](crate::RawPort): `recvmmsg`/`sendmmsg`, UDP GSO/GRO, and the outer IP header
//! the pipeline sees on every packet.
//!
//! The pipeline works on whole IP packets everywhere, so that an ESP-in-UDP packet looks the
//! same whether it came from a socket or from an in-memory test port. On receive the kernel
//! has already taken the outer headers off (except for IPv4 raw sockets), so they are written
//! back into the buffer's headroom from the addresses the kernel reports; on send they are
//! read for the destination and skipped.

use crate::PortStats;
use crate::buf::{IoBuf, room};
use crate::sys::{MultiRecv, MultiSend, RecvInfo};
use gatekit_packet::{
    Batch, DropReason, Instant, Meta, PacketBuf, Pool, PortError, PortId, checksum,
};
use socket2::Socket;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;

/// Room kept in front of received payloads for the outer headers written back.
pub(crate) const HDR_ROOM: usize = 48;
/// Largest datagram the kernel hands over with UDP GRO.
const GRO_BUF: usize = 65535;
/// Smallest segment size received by scattering into pool buffers; smaller segments are
/// copied out of a GRO buffer (more than 64 pool buffers per datagram otherwise).
const SCATTER_MIN_SEG: usize = GRO_BUF.div_ceil(GSO_MAX_SEGS);
/// Datagrams one UDP GSO send may carry (the kernel's UDP_MAX_SEGMENTS is 64 or more).
const GSO_MAX_SEGS: usize = 64;
/// Largest payload of one UDP GSO send.
const GSO_MAX_BYTES: usize = 65000;

/// What a datagram port hands over and takes: whole IP packets or datagram payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// Whole IP packets (the default): outer headers are written back on receive and read
    /// for the destination on send, so socket ports look like any other L3 port.
    #[default]
    Packet,
    /// The datagram payload only (the ESP packet of a NAT-T datagram, say); the remote
    /// endpoint is in [`Meta::peer`] on receive and is taken from it on send.
    Payload,
}

/// Which outer headers the engine writes back on receive and strips on send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// UDP: an IPv4 or IPv6 header and the UDP header.
    Udp,
    /// A raw IPv4 socket: the kernel gives and takes the IPv4 header (`IP_HDRINCL`).
    RawV4,
    /// A raw IPv6 socket of protocol `proto`: an IPv6 header.
    RawV6(u8),
}

pub(crate) struct Dgram<B: IoBuf> {
    pub(crate) sock: Socket,
    pub(crate) local: SocketAddr,
    pub(crate) framing: Framing,
    pub(crate) shape: Shape,
    pub(crate) pool: Pool,
    pub(crate) id: PortId,
    pub(crate) gso: bool,
    pub(crate) gro: bool,
    pub(crate) batch: usize,
    pub(crate) stats: PortStats,
    rx: MultiRecv,
    tx: MultiSend,
    pending: Vec<B>,
    /// Per message of the send being built: (packets, payload bytes).
    groups: Vec<(usize, usize)>,
    gro_bufs: Vec<Box<[u8]>>,
    /// The segment size of the coalesced datagrams received last (0 before the first): the
    /// size of the pool-buffer pieces a coalesced datagram is scattered into.
    gro_seg: usize,
    /// Segments per coalesced datagram in the last scattering receive (at least 1): how
    /// many datagrams to ask for so that a receive brings about what the batch has room
    /// for (see [`Dgram::recv_scatter`]).
    gro_fill: usize,
    /// Buffers lent to a scattering receive and not filled, kept for the next one.
    spare: Vec<B>,
    backlog: VecDeque<(B, Meta)>,
}

/// The shape of packets, and UDP segmentation (send) and coalescing (receive) in use.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Opts {
    pub(crate) shape: Shape,
    pub(crate) gso: bool,
    pub(crate) gro: bool,
}

/// Where a packet to send goes and which bytes of it are the datagram.
struct Out {
    dst: SocketAddr,
    start: usize,
    end: usize,
}

impl<B: IoBuf> Dgram<B> {
    pub(crate) fn new(
        sock: Socket,
        local: SocketAddr,
        framing: Framing,
        pool: Pool,
        id: PortId,
        batch: usize,
        opts: Opts,
    ) -> Self {
        let Opts { shape, gso, gro } = opts;
        let batch = batch.clamp(1, 1024);
        let gro_slots = if gro { batch.min(8) } else { 0 };
        Dgram {
            sock,
            local,
            framing,
            shape,
            pool,
            id,
            gso,
            gro,
            batch,
            stats: PortStats::default(),
            rx: MultiRecv::new(batch),
            tx: MultiSend::new(batch, (batch * 8).max(2 * GSO_MAX_SEGS)),
            pending: Vec::with_capacity(batch),
            groups: Vec::with_capacity(batch),
            gro_bufs: (0..gro_slots)
                .map(|_| vec![0u8; GRO_BUF].into_boxed_slice())
                .collect(),
            gro_seg: 0,
            gro_fill: GSO_MAX_SEGS,
            spare: Vec::new(),
            backlog: VecDeque::new(),
        }
    }

    pub(crate) fn recv(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        let mut n = 0;
        while !batch.is_full() {
            let Some((b, meta)) = self.backlog.pop_front() else {
                break;
            };
            if let Err(full) = batch.push(b, meta) {
                self.backlog.push_front((full.packet, meta));
                break;
            }
            n += 1;
        }
        if batch.is_full() {
            return Ok(n);
        }
        if self.gro {
            return self.recv_gro(batch, now).map(|m| m + n);
        }
        let want = batch.remaining().min(self.batch);
        while self.pending.len() < want {
            match B::take(&self.pool) {
                Some(b) => self.pending.push(b),
                None => break,
            }
        }
        if self.pending.is_empty() {
            return Ok(n);
        }
        let head_off = self.room_offset();
        let got = match self.rx.recv(
            self.sock.as_fd(),
            self.pending.iter_mut().map(|b| {
                let r = room(b);
                let off = head_off.min(r.len());
                &mut r[off..]
            }),
        ) {
            Ok(got) => got,
            Err(e) => return recv_error(e).map(|()| n),
        };
        self.stats.rx_calls += 1;
        // The first `got` buffers hold datagrams; hand them over in order.
        let mut pending = std::mem::take(&mut self.pending);
        for (i, mut b) in pending.drain(..got.min(pending.len())).enumerate() {
            let info = self.rx.info(i);
            if info.truncated {
                self.stats.drop(DropReason::TooBig);
                continue;
            }
            let head = b.block().headroom();
            if b.block()
                .set_window(head + head_off, head + head_off + info.len)
                .is_err()
            {
                self.stats.drop(DropReason::TooBig);
                continue;
            }
            if let Err(reason) = self.shape_rx(&mut b, &info, info.len) {
                self.stats.drop(reason);
                continue;
            }
            n += self.deliver(b, &info, batch, now);
        }
        self.pending = pending;
        Ok(n)
    }

    /// Gives a received datagram the shape the port hands over: outer headers written back
    /// ([`Shape::Packet`]) or taken off ([`Shape::Payload`]).
    fn shape_rx(&self, b: &mut B, info: &RecvInfo, len: usize) -> Result<(), DropReason> {
        match (self.shape, self.framing) {
            (Shape::Packet, framing) => {
                if frame(b, framing, self.local, info, len) {
                    Ok(())
                } else {
                    Err(DropReason::NoRoom)
                }
            }
            (Shape::Payload, Framing::RawV4) => {
                let ihl = b.data().first().map_or(0, |v| usize::from(v & 0x0f) * 4);
                if ihl < 20 {
                    return Err(DropReason::Malformed);
                }
                b.pull_front(ihl).map_err(|_| DropReason::Truncated)
            }
            (Shape::Payload, _) => Ok(()),
        }
    }

    /// Hands a received packet to the batch (or the backlog when the batch is full); returns
    /// 1 if it went into the batch.
    fn deliver(&mut self, b: B, info: &RecvInfo, batch: &mut Batch<B>, now: Instant) -> usize {
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += b.len() as u64;
        let mut meta = Meta::new(self.id, now);
        meta.peer = info.src.map(|s| SocketAddr::new(unmap(s.ip()), s.port()));
        match batch.push(b, meta) {
            Ok(()) => 1,
            Err(full) => {
                self.backlog.push_back((full.packet, meta));
                0
            }
        }
    }

    fn room_offset(&self) -> usize {
        if self.shape == Shape::Payload {
            return 0;
        }
        match self.framing {
            Framing::RawV4 => 0,
            Framing::Udp | Framing::RawV6(_) => HDR_ROOM,
        }
    }

    /// Receives coalesced datagrams. Once the segment size is known, straight into pool
    /// buffers, one segment each ([`Dgram::recv_scatter`]); until then, and when the pool
    /// runs short, into the GRO buffers, cut into pool buffers by copying.
    fn recv_gro(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        if self.gro_seg >= SCATTER_MIN_SEG
            && let Some(n) = self.recv_scatter(batch, now)
        {
            return n;
        }
        self.recv_gro_copy(batch, now)
    }

    /// Receives up to the GRO slots' worth of coalesced datagrams, each scattered by the
    /// kernel over pool buffers of `gro_seg` bytes, so that a segment of the learned size
    /// lands in a buffer of its own and nothing is copied. A datagram coalesced with another
    /// segment size (the sender changed it) is gathered and cut by copying, and the new
    /// size is learned. `None` when the pool cannot lend a whole datagram's worth.
    ///
    /// It asks for as many datagrams as, at the last receive's segments per datagram, fill
    /// the batch's room, and no more: the kernel writes every segment it hands over, and
    /// segments beyond the batch wait in the backlog. Eight datagrams (one per GRO slot) of
    /// 45 segments fill 360 pool buffers, about 830 KB, as much as a core's L2 cache here,
    /// so the first ones were out of the cache again before the pipeline read them.
    fn recv_scatter(
        &mut self,
        batch: &mut Batch<B>,
        now: Instant,
    ) -> Option<Result<usize, PortError>> {
        let seg = self.gro_seg;
        // Room for the largest coalesced datagram whatever its segment size, so that none is
        // ever cut short: at most 64 pieces, as segments are at least SCATTER_MIN_SEG bytes.
        let per_msg = GRO_BUF.div_ceil(seg);
        let slots = self
            .gro_bufs
            .len()
            .min(batch.remaining().div_ceil(self.gro_fill).max(1));
        let head_off = self.room_offset();
        while self.pending.len() < slots * per_msg {
            match B::take(&self.pool) {
                Some(b) => self.pending.push(b),
                None => break,
            }
        }
        let msgs = self.pending.len() / per_msg;
        if msgs == 0 {
            return None;
        }
        let mut pending = std::mem::take(&mut self.pending);
        // Every buffer comes from the one pool, so the first tells the size of all.
        if pending
            .first_mut()
            .is_some_and(|b| room(b).len() < head_off + seg)
        {
            // Buffers too small for a segment: stay with the copying receive.
            self.gro_seg = 0;
            self.pending = pending;
            return None;
        }
        let got = self.rx.recv_scatter(
            self.sock.as_fd(),
            pending
                .iter_mut()
                .take(msgs * per_msg)
                .enumerate()
                .map(|(k, b)| (k / per_msg, &mut room(b)[head_off..head_off + seg])),
        );
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                self.pending = pending;
                return Some(recv_error(e).map(|()| 0));
            }
        };
        self.stats.rx_calls += 1;
        let mut n = 0;
        let mut spare = std::mem::take(&mut self.spare);
        let mut bufs = pending.drain(..);
        let mut segs = 0;
        for i in 0..got {
            let info = self.rx.info(i);
            segs += info.len.div_ceil(match info.gro_size {
                Some(g) => usize::from(g).max(1),
                None => info.len.max(1),
            });
            let mine = (&mut bufs).take(per_msg);
            let fits = !info.truncated
                && match info.gro_size {
                    Some(g) => usize::from(g) == seg,
                    None => info.len <= seg,
                };
            if !fits {
                // Another segment size, or a single datagram longer than a piece: gather it
                // and cut it by copying. The buffers go back for the next receive.
                if info.truncated {
                    self.stats.drop(DropReason::TooBig);
                    spare.extend(mine);
                } else {
                    n += self.regather(mine, &info, head_off, seg, batch, &mut spare, now);
                }
                if let Some(g) = info.gro_size {
                    self.gro_seg = usize::from(g).max(1);
                }
                continue;
            }
            if info.gro_size.is_some() && info.len > seg {
                self.stats.rx_coalesced += 1;
                self.stats.rx_scattered += 1;
            }
            let mut left = info.len;
            for mut b in mine {
                if left == 0 {
                    spare.push(b);
                    continue;
                }
                let len = left.min(seg);
                left -= len;
                let head = b.block().headroom();
                if b.block()
                    .set_window(head + head_off, head + head_off + len)
                    .is_err()
                {
                    self.stats.drop(DropReason::TooBig);
                    continue;
                }
                if let Err(reason) = self.shape_rx(&mut b, &info, len) {
                    self.stats.drop(reason);
                    continue;
                }
                n += self.deliver(b, &info, batch, now);
            }
        }
        if got > 0 {
            self.gro_fill = segs.div_ceil(got).clamp(1, GSO_MAX_SEGS);
        }
        // The messages that did not arrive keep their buffers.
        spare.extend(bufs);
        self.pending = spare;
        self.spare = pending;
        Some(Ok(n))
    }

    /// A datagram the kernel scattered over `bufs` (pieces of `seg` bytes at `head_off`)
    /// that does not fit one segment per piece: its bytes are gathered into a GRO buffer
    /// and cut by its own segment size into fresh pool buffers. The pieces go to `spare`.
    #[allow(clippy::too_many_arguments)]
    fn regather(
        &mut self,
        bufs: impl Iterator<Item = B>,
        info: &RecvInfo,
        head_off: usize,
        seg: usize,
        batch: &mut Batch<B>,
        spare: &mut Vec<B>,
        now: Instant,
    ) -> usize {
        let mut gro_bufs = std::mem::take(&mut self.gro_bufs);
        let mut len = 0;
        if let Some(dst) = gro_bufs.first_mut() {
            for mut b in bufs {
                let take = info.len.saturating_sub(len).min(seg);
                if take > 0
                    && let (Some(d), Some(s)) = (
                        dst.get_mut(len..len + take),
                        room(&mut b).get(head_off..head_off + take),
                    )
                {
                    d.copy_from_slice(s);
                    len += take;
                }
                spare.push(b);
            }
        }
        let n = match gro_bufs.first() {
            Some(d) if len == info.len => self.cut(&d[..len], info, batch, now),
            _ => {
                self.stats.drop(DropReason::TooBig);
                0
            }
        };
        self.gro_bufs = gro_bufs;
        n
    }

    /// Cuts a coalesced datagram into pool buffers, one per segment, by copying.
    fn cut(&mut self, data: &[u8], info: &RecvInfo, batch: &mut Batch<B>, now: Instant) -> usize {
        let seg = match info.gro_size {
            Some(s) => usize::from(s).max(1),
            None => data.len().max(1),
        };
        if info.gro_size.is_some() && data.len() > seg {
            self.stats.rx_coalesced += 1;
        }
        let mut n = 0;
        for chunk in data.chunks(seg) {
            let Some(mut b) = B::take(&self.pool) else {
                self.stats.drop(DropReason::NoBuffer);
                continue;
            };
            let ok = b
                .push_back(chunk.len())
                .map(|d| d.copy_from_slice(chunk))
                .is_ok();
            if !ok {
                self.stats.drop(DropReason::NoRoom);
                continue;
            }
            if let Err(reason) = self.shape_rx(&mut b, info, chunk.len()) {
                self.stats.drop(reason);
                continue;
            }
            n += self.deliver(b, info, batch, now);
        }
        n
    }

    /// Receives coalesced datagrams into the GRO buffers and cuts them into pool buffers.
    fn recv_gro_copy(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        let slots = self.gro_bufs.len().min(batch.remaining().max(1));
        let got = match self.rx.recv(
            self.sock.as_fd(),
            self.gro_bufs.iter_mut().take(slots).map(|b| &mut b[..]),
        ) {
            Ok(got) => got,
            Err(e) => return recv_error(e).map(|()| 0),
        };
        self.stats.rx_calls += 1;
        let mut n = 0;
        // Lend the GRO buffers out while their contents are cut into pool buffers.
        let gro_bufs = std::mem::take(&mut self.gro_bufs);
        for i in 0..got {
            let info = self.rx.info(i);
            let Some(data) = gro_bufs.get(i).and_then(|b| b.get(..info.len)) else {
                continue;
            };
            if let Some(g) = info.gro_size {
                // The sender's segment size: from now on, receive straight into pool buffers.
                self.gro_seg = usize::from(g).max(1);
            }
            n += self.cut(data, &info, batch, now);
        }
        self.gro_bufs = gro_bufs;
        Ok(n)
    }

    pub(crate) fn send(&mut self, batch: &mut Batch<B>, _now: Instant) -> Result<usize, PortError> {
        let total = batch.len();
        let mut done = 0;
        let (framing, local, shape) = (self.framing, self.local, self.shape);
        let mut gso_now = self.gso;
        'rounds: while done < total {
            let mut dropped_front = 0;
            self.groups.clear();
            let res = {
                let mut tx = self.tx.start();
                let mut i = done;
                while i < total {
                    let Some((b, meta, _)) = batch.get(i) else {
                        break;
                    };
                    let data = b.data();
                    let out = match parse_out(framing, shape, local, meta, data) {
                        Ok(o) => o,
                        Err(reason) => {
                            if tx.len() == 0 {
                                self.stats.drop(reason);
                                dropped_front += 1;
                                i += 1;
                                continue;
                            }
                            break;
                        }
                    };
                    let seg_len = out.end - out.start;
                    // UDP GSO: following packets to the same destination with the same size
                    // (the last may be shorter) ride in this message.
                    let mut run = 1;
                    if gso_now && framing == Framing::Udp && seg_len > 0 {
                        let mut sum = seg_len;
                        while run < GSO_MAX_SEGS && i + run < total {
                            let Some((nb, nm, _)) = batch.get(i + run) else {
                                break;
                            };
                            let Ok(no) = parse_out(framing, shape, local, nm, nb.data()) else {
                                break;
                            };
                            let nl = no.end - no.start;
                            if no.dst != out.dst
                                || nl > seg_len
                                || nl == 0
                                || sum + nl > GSO_MAX_BYTES
                            {
                                break;
                            }
                            sum += nl;
                            run += 1;
                            if nl < seg_len {
                                break;
                            }
                        }
                    }
                    if !tx.has_room(run) {
                        break;
                    }
                    let seg = (run > 1).then_some(seg_len as u16);
                    tx.push_msg(&out.dst, seg);
                    let mut bytes = 0;
                    for k in i..i + run {
                        if let Some((b, m, _)) = batch.get(k) {
                            let d = b.data();
                            let piece = match parse_out(framing, shape, local, m, d) {
                                Ok(o) => &d[o.start..o.end],
                                Err(_) => &d[..0],
                            };
                            bytes += piece.len();
                            tx.push_piece(piece);
                        }
                    }
                    self.groups.push((run, bytes));
                    i += run;
                }
                if tx.len() == 0 {
                    None
                } else {
                    Some(tx.send(self.sock.as_fd()))
                }
            };
            done += dropped_front;
            let Some(res) = res else {
                if dropped_front == 0 {
                    break;
                }
                continue;
            };
            match res {
                Ok(k) => {
                    self.stats.tx_calls += 1;
                    let mut sent = 0;
                    for (run, bytes) in self.groups.iter().take(k) {
                        sent += run;
                        self.stats.tx_bytes += *bytes as u64;
                        self.stats.tx_coalesced += u64::from(*run > 1);
                    }
                    self.stats.tx_packets += sent as u64;
                    done += sent;
                    if k < self.groups.len() {
                        break 'rounds;
                    }
                }
                Err(e) => {
                    let first = self.groups.first().map_or(1, |g| g.0);
                    match e.raw_os_error() {
                        Some(libc::EAGAIN | libc::ENOBUFS) => break 'rounds,
                        Some(libc::EINTR) => continue,
                        Some(libc::EIO) if first > 1 => {
                            // The egress device cannot do GSO: send one datagram per packet.
                            self.gso = false;
                            gso_now = false;
                            continue;
                        }
                        Some(libc::EINVAL | libc::EMSGSIZE) if first > 1 => {
                            // Segments too large for the egress MTU, say: retry them one by
                            // one (the kernel may fragment) for the rest of this batch.
                            gso_now = false;
                            continue;
                        }
                        Some(
                            libc::EMSGSIZE
                            | libc::EINVAL
                            | libc::ECONNREFUSED
                            | libc::EHOSTUNREACH
                            | libc::ENETUNREACH
                            | libc::EPERM
                            | libc::EACCES
                            | libc::EADDRNOTAVAIL
                            | libc::EAFNOSUPPORT
                            | libc::EDESTADDRREQ
                            | libc::EHOSTDOWN
                            | libc::ENETDOWN,
                        ) => {
                            let reason = match e.raw_os_error() {
                                Some(libc::EMSGSIZE) => DropReason::TooBig,
                                Some(libc::ENETDOWN | libc::EHOSTDOWN) => DropReason::PortDown,
                                Some(libc::EINVAL) => DropReason::Malformed,
                                _ => DropReason::NoRoute,
                            };
                            self.stats.drops.add(reason, first as u64);
                            done += first;
                        }
                        _ => {
                            batch.consume_front(done);
                            return Err(PortError::from(e));
                        }
                    }
                }
            }
        }
        batch.consume_front(done);
        Ok(done)
    }
}

/// Reads the destination of a packet to send and the datagram bytes in it.
fn parse_out(
    framing: Framing,
    shape: Shape,
    local: SocketAddr,
    meta: &Meta,
    p: &[u8],
) -> Result<Out, DropReason> {
    if shape == Shape::Payload {
        let peer = meta.peer.ok_or(DropReason::NoRoute)?;
        let ip = match (unmap(peer.ip()), local) {
            (IpAddr::V4(v4), SocketAddr::V6(_)) => IpAddr::V6(v4.to_ipv6_mapped()),
            (IpAddr::V6(_), SocketAddr::V4(_)) => return Err(DropReason::NoRoute),
            (ip, _) => ip,
        };
        let port = if framing == Framing::Udp {
            peer.port()
        } else {
            0
        };
        return Ok(Out {
            dst: SocketAddr::new(ip, port),
            start: 0,
            end: p.len(),
        });
    }
    let first = *p.first().ok_or(DropReason::Truncated)?;
    let (dst_ip, l4, total, proto): (IpAddr, usize, usize, u8) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 || p.len() < ihl {
                return Err(DropReason::Malformed);
            }
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if total < ihl || total > p.len() {
                return Err(DropReason::Malformed);
            }
            let dst = [p[16], p[17], p[18], p[19]];
            (IpAddr::from(dst), ihl, total, p[9])
        }
        6 => {
            if p.len() < 40 {
                return Err(DropReason::Truncated);
            }
            let total = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            if total > p.len() {
                return Err(DropReason::Malformed);
            }
            let mut d = [0u8; 16];
            d.copy_from_slice(&p[24..40]);
            (IpAddr::from(d), 40, total, p[6])
        }
        _ => return Err(DropReason::Malformed),
    };
    let dst_ip = match (dst_ip, local) {
        (IpAddr::V4(v4), SocketAddr::V6(_)) => IpAddr::V6(v4.to_ipv6_mapped()),
        (IpAddr::V6(_), SocketAddr::V4(_)) => return Err(DropReason::NoRoute),
        (ip, _) => ip,
    };
    match framing {
        Framing::Udp => {
            if proto != 17 {
                return Err(DropReason::Unsupported);
            }
            if total < l4 + 8 {
                return Err(DropReason::Truncated);
            }
            let port = u16::from_be_bytes([p[l4 + 2], p[l4 + 3]]);
            Ok(Out {
                dst: SocketAddr::new(dst_ip, port),
                start: l4 + 8,
                end: total,
            })
        }
        Framing::RawV4 => {
            if first >> 4 != 4 {
                return Err(DropReason::NoRoute);
            }
            Ok(Out {
                dst: SocketAddr::new(dst_ip, 0),
                start: 0,
                end: total,
            })
        }
        Framing::RawV6(want) => {
            if first >> 4 != 6 {
                return Err(DropReason::NoRoute);
            }
            if proto != want {
                return Err(DropReason::Unsupported);
            }
            Ok(Out {
                dst: SocketAddr::new(dst_ip, 0),
                start: 40,
                end: total,
            })
        }
    }
}

fn recv_error(e: io::Error) -> Result<(), PortError> {
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EINTR) => Ok(()),
        // An ICMP error queued for an earlier send (unconnected sockets rarely see these):
        // not a failure of the port.
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH) => Ok(()),
        _ => Err(PortError::from(e)),
    }
}

/// Writes the outer headers of a received datagram of `len` bytes (already in the buffer)
/// into its headroom. False if there is no room.
fn frame<B: IoBuf>(
    b: &mut B,
    framing: Framing,
    local: SocketAddr,
    info: &RecvInfo,
    len: usize,
) -> bool {
    let src = info.src.map(|s| (unmap(s.ip()), s.port()));
    let dst_ip = unmap(info.dst.unwrap_or(local.ip()));
    match framing {
        Framing::RawV4 => true,
        Framing::Udp => {
            let (sip, sport) = src.unwrap_or((dst_ip, 0));
            let udp_len = len + 8;
            match (sip, dst_ip) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    let Ok(h) = b.push_front(28) else {
                        return false;
                    };
                    write_v4(h, 17, udp_len, s.octets(), d.octets());
                    let u = &mut h[20..28];
                    u[0..2].copy_from_slice(&sport.to_be_bytes());
                    u[2..4].copy_from_slice(&local.port().to_be_bytes());
                    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
                    u[6..8].fill(0); // RFC 768: zero means no checksum (already verified)
                    true
                }
                (s, d) => {
                    let s6 = to_v6(s);
                    let d6 = to_v6(d);
                    let Ok(h) = b.push_front(48) else {
                        return false;
                    };
                    write_v6(h, 17, udp_len, s6.octets(), d6.octets());
                    let u = &mut h[40..48];
                    u[0..2].copy_from_slice(&sport.to_be_bytes());
                    u[2..4].copy_from_slice(&local.port().to_be_bytes());
                    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
                    u[6..8].fill(0);
                    // IPv6 has no zero-checksum UDP (RFC 8200 §8.1): compute it.
                    let data = b.data();
                    let pseudo = checksum::pseudo_v6(s6.octets(), d6.octets(), 17, udp_len as u32);
                    let mut c = !checksum::fold(checksum::sum(pseudo, &data[40..]));
                    if c == 0 {
                        c = 0xffff;
                    }
                    b.data_mut()[46..48].copy_from_slice(&c.to_be_bytes());
                    true
                }
            }
        }
        Framing::RawV6(proto) => {
            let s6 = to_v6(src.map(|s| s.0).unwrap_or(dst_ip));
            let d6 = to_v6(dst_ip);
            let Ok(h) = b.push_front(40) else {
                return false;
            };
            write_v6(h, proto, len, s6.octets(), d6.octets());
            true
        }
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn write_v4(h: &mut [u8], proto: u8, payload: usize, src: [u8; 4], dst: [u8; 4]) {
    let total = (20 + payload) as u16;
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].fill(0);
    h[6..8].copy_from_slice(&[0x40, 0]); // DF
    h[8] = 64;
    h[9] = proto;
    h[10..12].fill(0);
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let c = checksum::internet(&h[..20]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

fn write_v6(h: &mut [u8], next: u8, payload: usize, src: [u8; 16], dst: [u8; 16]) {
    h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&src);
    h[24..40].copy_from_slice(&dst);
}

/// Runs the send-side header parser over arbitrary bytes in every framing and shape (for the
/// fuzz target): it must return a verdict, never panic, and never point outside the packet.
pub(crate) fn fuzz_parse_out(p: &[u8]) {
    let metas = [
        Meta::default(),
        Meta {
            peer: Some(SocketAddr::from(([192, 0, 2, 1], 4500))),
            ..Meta::default()
        },
    ];
    for local in [
        SocketAddr::from(([0, 0, 0, 0], 4500)),
        SocketAddr::from(([0u16; 8], 4500)),
    ] {
        for framing in [Framing::Udp, Framing::RawV4, Framing::RawV6(50)] {
            for shape in [Shape::Packet, Shape::Payload] {
                for meta in &metas {
                    if let Ok(out) = parse_out(framing, shape, local, meta, p) {
                        assert!(out.start <= out.end && out.end <= p.len());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatekit_packet::PktBuf;

    fn received(
        payload: &[u8],
        src: SocketAddr,
        dst: IpAddr,
        framing: Framing,
        local: SocketAddr,
    ) -> PktBuf {
        let mut b = PktBuf::from_slice(payload, 64, 0);
        let info = RecvInfo {
            len: payload.len(),
            src: Some(src),
            dst: Some(dst),
            ..RecvInfo::default()
        };
        assert!(frame(&mut b, framing, local, &info, payload.len()));
        b
    }

    #[test]
    fn ipv6_udp_headers_written_back_verify_with_etherparse() {
        let src: SocketAddr = "[fd00::1]:4500".parse().unwrap();
        let local: SocketAddr = "[::]:4501".parse().unwrap();
        let b = received(
            b"esp-in-udp",
            src,
            "fd00::2".parse().unwrap(),
            Framing::Udp,
            local,
        );
        let s = etherparse::SlicedPacket::from_ip(b.data()).unwrap();
        let Some(etherparse::NetSlice::Ipv6(v6)) = &s.net else {
            panic!("not IPv6")
        };
        let Some(etherparse::TransportSlice::Udp(u)) = &s.transport else {
            panic!("not UDP")
        };
        let want = u
            .to_header()
            .calc_checksum_ipv6(&v6.header().to_header(), u.payload())
            .unwrap();
        assert_eq!(
            u.checksum(),
            want,
            "RFC 8200 §8.1: IPv6 UDP checksum is mandatory"
        );
        assert_eq!((u.source_port(), u.destination_port()), (4500, 4501));
        assert_eq!(u.payload(), b"esp-in-udp");
    }

    #[test]
    fn mapped_ipv4_on_a_dual_stack_socket_gets_an_ipv4_header() {
        let src: SocketAddr = "[::ffff:192.0.2.1]:500".parse().unwrap();
        let local: SocketAddr = "[::]:500".parse().unwrap();
        let b = received(
            b"ike",
            src,
            "::ffff:192.0.2.2".parse().unwrap(),
            Framing::Udp,
            local,
        );
        let ip = etherparse::Ipv4HeaderSlice::from_slice(b.data()).unwrap();
        assert_eq!(
            (ip.source(), ip.destination()),
            ([192, 0, 2, 1], [192, 0, 2, 2])
        );
        let h = ip.to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        // Sent back out as it is, its destination reads as a mapped address for the socket.
        let out = parse_out(
            Framing::Udp,
            Shape::Packet,
            local,
            &Meta::default(),
            b.data(),
        )
        .unwrap();
        assert_eq!(out.dst, "[::ffff:192.0.2.2]:500".parse().unwrap());
        assert_eq!(&b.data()[out.start..out.end], b"ike");
    }

    #[test]
    fn raw_ipv6_header_written_back() {
        let src: SocketAddr = "[fd00::1]:0".parse().unwrap();
        let b = received(
            b"\0\0\0\x01esp",
            src,
            "fd00::2".parse().unwrap(),
            Framing::RawV6(50),
            "[::]:0".parse().unwrap(),
        );
        let ip = etherparse::Ipv6HeaderSlice::from_slice(b.data()).unwrap();
        assert_eq!(ip.next_header(), etherparse::IpNumber(50));
        assert_eq!(usize::from(ip.payload_length()), 7);
        let out = parse_out(
            Framing::RawV6(50),
            Shape::Packet,
            "[::]:0".parse().unwrap(),
            &Meta::default(),
            b.data(),
        )
        .unwrap();
        assert_eq!(&b.data()[out.start..out.end], b"\0\0\0\x01esp");
    }

    #[test]
    fn send_side_verdicts() {
        let v4: SocketAddr = "0.0.0.0:4500".parse().unwrap();
        let mut udp = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(4500, 4501)
            .write(&mut udp, b"x")
            .unwrap();
        let m = Meta::default();
        let ok = parse_out(Framing::Udp, Shape::Packet, v4, &m, &udp).unwrap();
        assert_eq!(ok.dst, "10.0.0.2:4501".parse().unwrap());
        let mut tcp = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 0, 100)
            .write(&mut tcp, b"x")
            .unwrap();
        assert_eq!(
            parse_out(Framing::Udp, Shape::Packet, v4, &m, &tcp).err(),
            Some(DropReason::Unsupported)
        );
        assert_eq!(
            parse_out(Framing::Udp, Shape::Packet, v4, &m, &[]).err(),
            Some(DropReason::Truncated)
        );
        assert_eq!(
            parse_out(Framing::Udp, Shape::Packet, v4, &m, &udp[..25]).err(),
            Some(DropReason::Malformed)
        );
        let mut v6 = Vec::new();
        etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .udp(1, 2)
            .write(&mut v6, b"x")
            .unwrap();
        assert_eq!(
            parse_out(Framing::Udp, Shape::Packet, v4, &m, &v6).err(),
            Some(DropReason::NoRoute)
        );
        assert_eq!(
            parse_out(Framing::Udp, Shape::Payload, v4, &m, b"esp").err(),
            Some(DropReason::NoRoute)
        );
        let to = Meta {
            peer: Some("192.0.2.9:4500".parse().unwrap()),
            ..Meta::default()
        };
        let p = parse_out(Framing::Udp, Shape::Payload, v4, &to, b"esp").unwrap();
        assert_eq!(
            (p.dst, p.start, p.end),
            ("192.0.2.9:4500".parse().unwrap(), 0, 3)
        );
    }
}
