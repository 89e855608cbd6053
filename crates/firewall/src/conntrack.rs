//! Connection tracking: a bounded table of flows, each known by its original and its reply
//! tuple, with a simplified TCP state machine, timeouts, and the NAT binding of the flow.
//!
//! The table is generic over its key: [`Tuple`] for IPv4 flows (16 bytes, the NAT binding
//! in the reply tuple) and [`Tuple6`] for IPv6 flows (38 bytes, no NAT). The engine keeps
//! one table of each, so IPv4 entries stay as small as they were before IPv6 support.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::Duration;

use gatekit_packet::Instant;

/// A flow tuple in one direction. ICMP echo flows use the identifier as both ports, so that
/// a request and its reply are each other's reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Tuple {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port (or echo identifier).
    pub sport: u16,
    /// Destination port (or echo identifier).
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

impl Tuple {
    /// The tuple of the other direction.
    #[inline]
    pub fn reversed(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

impl core::hash::Hash for Tuple {
    /// The whole tuple in one 128-bit word: one call into the hasher per lookup.
    #[inline]
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        let ports =
            u64::from(self.sport) << 24 | u64::from(self.dport) << 8 | u64::from(self.proto);
        state.write_u128(
            u128::from(self.src) << 96 | u128::from(self.dst) << 64 | u128::from(ports),
        );
    }
}

/// An IPv6 flow tuple in one direction (ICMPv6 echo uses the identifier as both ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple6 {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Source port (or echo identifier).
    pub sport: u16,
    /// Destination port (or echo identifier).
    pub dport: u16,
    /// Upper-layer protocol (the next header after the extension headers).
    pub proto: u8,
}

impl Tuple6 {
    /// The tuple of the other direction.
    #[inline]
    pub fn reversed(&self) -> Tuple6 {
        Tuple6 {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

/// A key of the flow table: a tuple that knows its reverse and its protocol.
pub trait FlowKey: Copy + Eq + core::hash::Hash + core::fmt::Debug {
    /// The tuple of the other direction.
    fn reverse(&self) -> Self;
    /// The IP protocol (upper-layer protocol for IPv6).
    fn protocol(&self) -> u8;
}

impl FlowKey for Tuple {
    #[inline]
    fn reverse(&self) -> Tuple {
        Tuple::reversed(self)
    }
    #[inline]
    fn protocol(&self) -> u8 {
        self.proto
    }
}

impl FlowKey for Tuple6 {
    #[inline]
    fn reverse(&self) -> Tuple6 {
        Tuple6::reversed(self)
    }
    #[inline]
    fn protocol(&self) -> u8 {
        self.proto
    }
}

/// A flow tuple of either family, as log records carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowTuple {
    /// An IPv4 flow.
    V4(Tuple),
    /// An IPv6 flow.
    V6(Tuple6),
}

/// Which way a packet goes relative to the flow's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Same way as the first packet.
    Original,
    /// The answer.
    Reply,
}

/// TCP states, simplified from the kernel's: enough to time flows out sensibly and to tell
/// a new connection from a stray segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// A SYN was seen.
    SynSent,
    /// The SYN-ACK was seen.
    SynRecv,
    /// The handshake completed.
    Established,
    /// One side sent FIN.
    FinWait,
    /// Both sides sent FIN.
    TimeWait,
    /// A RST was seen.
    Close,
}

/// The protocol state of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtoState {
    /// TCP with its state and which directions have sent FIN (bit 0 original, bit 1 reply).
    Tcp {
        /// The state.
        state: TcpState,
        /// FIN seen per direction.
        fins: u8,
    },
    /// UDP, ICMP and other protocols: only "replied" matters.
    Other,
}

/// How long flows live without traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after a SYN.
    pub tcp_syn_sent: Duration,
    /// TCP after the SYN-ACK.
    pub tcp_syn_recv: Duration,
    /// Established TCP.
    pub tcp_established: Duration,
    /// TCP after a FIN.
    pub tcp_fin_wait: Duration,
    /// TCP after both FINs.
    pub tcp_time_wait: Duration,
    /// TCP after a RST.
    pub tcp_close: Duration,
    /// UDP before a reply.
    pub udp: Duration,
    /// UDP once replied.
    pub udp_stream: Duration,
    /// ICMP and ICMPv6 echo.
    pub icmp: Duration,
    /// Other protocols.
    pub generic: Duration,
}

impl Default for Timeouts {
    /// The Linux defaults (nf_conntrack sysctls).
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: Duration::from_secs(120),
            tcp_syn_recv: Duration::from_secs(60),
            tcp_established: Duration::from_secs(432_000),
            tcp_fin_wait: Duration::from_secs(120),
            tcp_time_wait: Duration::from_secs(120),
            tcp_close: Duration::from_secs(10),
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
            generic: Duration::from_secs(600),
        }
    }
}

/// One tracked flow, keyed by [`Tuple`] (IPv4) or [`Tuple6`] (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn<K = Tuple> {
    /// The first packet's tuple, before any translation.
    pub original: K,
    /// The tuple replies carry, after translation: with NAT it is not the reverse of
    /// `original`.
    pub reply: K,
    /// Protocol state.
    pub proto: ProtoState,
    /// Whether a packet went the reply way.
    pub replied: bool,
    /// When the flow expires unless traffic refreshes it.
    pub expires: Instant,
    /// Packets seen per direction (original, reply).
    pub packets: [u64; 2],
    /// Bytes seen per direction.
    pub bytes: [u64; 2],
}

impl Conn<Tuple> {
    /// Whether the source was translated.
    pub fn src_nat(&self) -> bool {
        self.reply.dst != self.original.src || self.reply.dport != self.original.sport
    }
    /// Whether the destination was translated.
    pub fn dst_nat(&self) -> bool {
        self.reply.src != self.original.dst || self.reply.sport != self.original.dport
    }
}

impl<K: FlowKey> Conn<K> {
    /// A new flow from its first packet's tuple.
    pub fn new(original: K, now: Instant) -> Conn<K> {
        Conn {
            original,
            reply: original.reverse(),
            proto: if original.protocol() == 6 {
                ProtoState::Tcp {
                    state: TcpState::SynSent,
                    fins: 0,
                }
            } else {
                ProtoState::Other
            },
            replied: false,
            expires: now,
            packets: [0; 2],
            bytes: [0; 2],
        }
    }

    /// What a packet going `dir` looks like once fully translated.
    pub fn translated(&self, dir: Direction) -> K {
        match dir {
            Direction::Original => self.reply.reverse(),
            Direction::Reply => self.original.reverse(),
        }
    }

    /// Advances the state for a packet going `dir` with these TCP flags (0 for non-TCP) and
    /// sets the expiry. Returns false if the packet does not fit the state (counted as
    /// invalid by the caller, the state is left alone).
    pub fn update(
        &mut self,
        dir: Direction,
        tcp_flags: u8,
        len: usize,
        t: &Timeouts,
        now: Instant,
    ) -> bool {
        const FIN: u8 = 0x01;
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
        let d = (dir == Direction::Reply) as usize;
        self.packets[d] += 1;
        self.bytes[d] += len as u64;
        if dir == Direction::Reply {
            self.replied = true;
        }
        let timeout = match &mut self.proto {
            ProtoState::Tcp { state, fins } => {
                let f = tcp_flags;
                let next = if f & RST != 0 {
                    TcpState::Close
                } else if f & SYN != 0 && f & ACK == 0 {
                    if dir == Direction::Original
                        && matches!(state, TcpState::TimeWait | TcpState::Close)
                    {
                        // A new connection reusing the tuple.
                        *fins = 0;
                        self.replied = false;
                        TcpState::SynSent
                    } else if matches!(state, TcpState::SynSent | TcpState::SynRecv) {
                        *state
                    } else {
                        return false;
                    }
                } else if f & SYN != 0 {
                    // SYN-ACK: only the answer to a SYN.
                    if dir == Direction::Reply
                        && matches!(state, TcpState::SynSent | TcpState::SynRecv)
                    {
                        TcpState::SynRecv
                    } else {
                        return false;
                    }
                } else if f & FIN != 0 {
                    *fins |= 1 << d;
                    if *fins == 3 {
                        TcpState::TimeWait
                    } else {
                        TcpState::FinWait
                    }
                } else if *state == TcpState::SynRecv && dir == Direction::Original && f & ACK != 0
                {
                    TcpState::Established
                } else {
                    *state
                };
                *state = next;
                match next {
                    TcpState::SynSent => t.tcp_syn_sent,
                    TcpState::SynRecv => t.tcp_syn_recv,
                    TcpState::Established => t.tcp_established,
                    TcpState::FinWait => t.tcp_fin_wait,
                    TcpState::TimeWait => t.tcp_time_wait,
                    TcpState::Close => t.tcp_close,
                }
            }
            ProtoState::Other => match self.original.protocol() {
                17 | 136 if self.replied => t.udp_stream,
                17 | 136 => t.udp,
                1 | 58 => t.icmp,
                _ => t.generic,
            },
        };
        self.expires = now + timeout;
        true
    }
}

/// Connection table counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnStats {
    /// Flows added.
    pub inserted: u64,
    /// Flows removed because they timed out.
    pub expired: u64,
    /// Flows removed early to make room.
    pub evicted: u64,
    /// Flows refused because the table was full and nothing could be evicted.
    pub refused: u64,
    /// Packets that fit no valid state.
    pub invalid: u64,
}

/// The connection table: a slab of flows, indexed by both tuples, bounded in size.
///
/// When full, an insert looks at a few flows from a moving clock hand and evicts the first
/// one that has expired or was never answered (the kernel's early drop also prefers
/// unanswered flows); if none qualifies the insert is refused and counted.
#[derive(Debug, Clone)]
pub struct ConnTrack<K = Tuple> {
    /// Both tuples of every flow. The hasher is keyed at random per table (aHash), so the
    /// buckets a sender's tuples fall into cannot be predicted.
    map: HashMap<K, (u32, Direction), ahash::RandomState>,
    slots: Vec<Option<Conn<K>>>,
    free: Vec<u32>,
    capacity: usize,
    hand: usize,
    /// Timeouts in force.
    pub timeouts: Timeouts,
    stats: ConnStats,
}

/// How many flows an insert into a full table examines for eviction.
const EVICT_SCAN: usize = 16;

impl<K: FlowKey> ConnTrack<K> {
    /// An empty table for at most `capacity` flows.
    pub fn new(capacity: usize) -> ConnTrack<K> {
        ConnTrack {
            map: HashMap::with_capacity_and_hasher(
                capacity.min(1 << 20) * 2,
                ahash::RandomState::new(),
            ),
            slots: Vec::new(),
            free: Vec::new(),
            capacity,
            hand: 0,
            timeouts: Timeouts::default(),
            stats: ConnStats::default(),
        }
    }

    /// An empty table for at most `capacity` flows that allocates as it fills (the
    /// engine's IPv6 table: most deployments carry few IPv6 flows).
    pub fn growing(capacity: usize) -> ConnTrack<K> {
        let mut t = ConnTrack::new(0);
        t.capacity = capacity;
        t
    }

    /// Changes the most flows the table holds (flows beyond it stay until they expire or
    /// are evicted by an insert).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// Counters.
    pub fn stats(&self) -> ConnStats {
        self.stats
    }
    /// Counts a packet that fit no valid state.
    pub fn count_invalid(&mut self) {
        self.stats.invalid += 1;
    }
    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.map.len() / 2
    }
    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// The most flows the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The flow a packet with tuple `t` belongs to and its direction, if the flow is known
    /// and not expired at `now` (an expired flow is removed).
    pub fn lookup(&mut self, t: &K, now: Instant) -> Option<(u32, Direction)> {
        let (id, dir) = *self.map.get(t)?;
        let expired = self.slots.get(id as usize)?.as_ref()?.expires <= now;
        if expired {
            self.remove(id);
            self.stats.expired += 1;
            return None;
        }
        Some((id, dir))
    }

    /// Whether some flow uses `t` as its original or reply tuple.
    pub fn tuple_in_use(&self, t: &K) -> bool {
        self.map.contains_key(t)
    }

    /// The flow with this id.
    pub fn get(&self, id: u32) -> Option<&Conn<K>> {
        self.slots.get(id as usize)?.as_ref()
    }
    /// The flow with this id, writable. Do not change its tuples (use remove and insert).
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Conn<K>> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    /// Adds a flow; `Err(conn)` if the table is full and nothing could be evicted, or if
    /// one of its tuples is already in use.
    pub fn insert(&mut self, conn: Conn<K>, now: Instant) -> Result<u32, Conn<K>> {
        if self.map.contains_key(&conn.original) || self.map.contains_key(&conn.reply) {
            return Err(conn);
        }
        if self.len() >= self.capacity && !self.evict_one(now) {
            self.stats.refused += 1;
            return Err(conn);
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(conn);
                id
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() as u32 - 1
            }
        };
        self.map.insert(conn.original, (id, Direction::Original));
        self.map.insert(conn.reply, (id, Direction::Reply));
        self.stats.inserted += 1;
        Ok(id)
    }

    /// Removes a flow.
    pub fn remove(&mut self, id: u32) -> Option<Conn<K>> {
        let conn = self.slots.get_mut(id as usize)?.take()?;
        self.map.remove(&conn.original);
        self.map.remove(&conn.reply);
        self.free.push(id);
        Some(conn)
    }

    fn evict_one(&mut self, now: Instant) -> bool {
        let n = self.slots.len();
        for _ in 0..EVICT_SCAN.min(n) {
            self.hand = (self.hand + 1) % n;
            let victim = match &self.slots[self.hand] {
                Some(c) if c.expires <= now => Some(true),
                Some(c) if !c.replied => Some(false),
                _ => None,
            };
            if let Some(expired) = victim {
                self.remove(self.hand as u32);
                if expired {
                    self.stats.expired += 1;
                } else {
                    self.stats.evicted += 1;
                }
                return true;
            }
        }
        false
    }

    /// Removes up to `budget` expired flows, continuing where the last sweep stopped.
    /// Returns how many were removed.
    pub fn sweep(&mut self, now: Instant, budget: usize) -> usize {
        let n = self.slots.len();
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            self.hand = (self.hand + 1) % n;
            if self.slots[self.hand]
                .as_ref()
                .is_some_and(|c| c.expires <= now)
            {
                self.remove(self.hand as u32);
                self.stats.expired += 1;
                removed += 1;
            }
        }
        removed
    }

    /// The earliest expiry among flows, if any (a linear scan: call it from timers, not per
    /// packet).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|c| c.expires).min()
    }

    /// Every flow, with its id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Conn<K>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i as u32, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sport: u16) -> Tuple {
        Tuple {
            src: 1,
            dst: 2,
            sport,
            dport: 80,
            proto: 6,
        }
    }

    #[test]
    fn tcp_handshake_and_close() {
        let to = Timeouts::default();
        let now = Instant::from_secs(1);
        let mut c = Conn::new(t(1000), now);
        assert!(c.update(Direction::Original, 0x02, 60, &to, now));
        assert!(c.update(Direction::Reply, 0x12, 60, &to, now));
        assert_eq!(
            c.proto,
            ProtoState::Tcp {
                state: TcpState::SynRecv,
                fins: 0
            }
        );
        assert!(c.update(Direction::Original, 0x10, 52, &to, now));
        assert!(matches!(
            c.proto,
            ProtoState::Tcp {
                state: TcpState::Established,
                ..
            }
        ));
        assert_eq!(c.expires, now + to.tcp_established);
        assert!(
            !c.update(Direction::Original, 0x02, 60, &to, now),
            "SYN in established"
        );
        assert!(c.update(Direction::Original, 0x11, 52, &to, now));
        assert!(c.update(Direction::Reply, 0x11, 52, &to, now));
        assert!(matches!(
            c.proto,
            ProtoState::Tcp {
                state: TcpState::TimeWait,
                ..
            }
        ));
        assert!(
            c.update(Direction::Original, 0x02, 60, &to, now),
            "tuple reuse"
        );
        assert!(c.update(Direction::Reply, 0x04, 40, &to, now));
        assert_eq!(c.expires, now + to.tcp_close);
    }

    /// The per-flow footprint: IPv4 entries are what they were before IPv6 flows had a
    /// table of their own (a 16-byte tuple, an 80-byte flow); IPv6 ones are larger.
    #[test]
    fn entry_sizes() {
        use core::mem::size_of;
        assert_eq!(size_of::<Tuple>(), 16);
        assert_eq!(size_of::<Option<Conn<Tuple>>>(), 80);
        assert_eq!(size_of::<(Tuple, (u32, Direction))>(), 24);
        assert_eq!(size_of::<Tuple6>(), 38);
        assert!(size_of::<Option<Conn<Tuple6>>>() <= 128);
    }

    #[test]
    fn v6_flows_and_icmpv6_timeout() {
        let to = Timeouts::default();
        let now = Instant::from_secs(1);
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let echo = Tuple6 {
            src: a,
            dst: b,
            sport: 7,
            dport: 7,
            proto: 58,
        };
        let mut ct: ConnTrack<Tuple6> = ConnTrack::new(4);
        let mut c = Conn::new(echo, now);
        assert!(c.update(Direction::Original, 0, 64, &to, now));
        assert_eq!(c.expires, now + to.icmp);
        let id = ct.insert(c, now).unwrap();
        assert_eq!(
            ct.lookup(&echo.reversed(), now),
            Some((id, Direction::Reply))
        );
        assert_eq!(ct.lookup(&echo, now + to.icmp), None, "expired");
    }

    #[test]
    fn bounded_with_eviction_and_refusal() {
        let now = Instant::from_secs(10);
        let mut ct = ConnTrack::new(2);
        let fresh = |sport| {
            let mut c = Conn::new(t(sport), now);
            c.expires = now + Duration::from_secs(5);
            c
        };
        let a = ct.insert(fresh(1), now).unwrap();
        let _b = ct.insert(fresh(2), now).unwrap();
        assert_eq!(
            ct.lookup(&t(1).reversed(), now),
            Some((a, Direction::Reply))
        );
        // Both unreplied: the third evicts one.
        let mut c3 = Conn::new(t(3), now);
        c3.replied = true;
        c3.expires = now + Duration::from_secs(5);
        ct.insert(c3, now).unwrap();
        assert_eq!(ct.stats().evicted, 1);
        // Mark the rest replied and alive: the next insert is refused.
        for id in 0..3 {
            if let Some(c) = ct.get_mut(id) {
                c.replied = true;
                c.expires = now + Duration::from_secs(5);
            }
        }
        assert!(ct.insert(fresh(4), now).is_err());
        assert_eq!(ct.stats().refused, 1);
        assert_eq!(ct.len(), 2);
        // Later, everything has expired.
        let later = now + Duration::from_secs(6);
        assert_eq!(ct.sweep(later, 10), 2);
        assert!(ct.is_empty());
        assert!(ct.insert(Conn::new(t(4), later), later).is_ok());
    }
}
