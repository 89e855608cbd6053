//! The pipeline traits: a [`Stage`] processes packets, a [`Port`] moves them in and out.

use crate::{Batch, Instant, Meta, PacketBuf, PortId};

/// What a stage decided for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Hand the packet to the next stage of the pipeline.
    #[default]
    Continue,
    /// Send the packet out of this port.
    Forward(PortId),
    /// Deliver the packet to the gateway itself (control plane, local socket).
    Local,
    /// Drop the packet, for this reason (the stage has counted it).
    Drop(DropReason),
    /// The stage kept the packet (queued it, reassembled it, answered it); nothing more to do.
    Consumed,
}

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $name:ident = $label:literal, )*) => {
        /// Why a packet was dropped. Drops are values, not errors: a stage returns
        /// [`Action::Drop`] with one of these and counts it (see [`DropCounters`]).
        ///
        /// One list shared by all gatekit crates, so that counters line up across a pipeline.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $name, )*
        }

        impl DropReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [DropReason] = &[ $( DropReason::$name, )* ];
            /// The number of reasons (the size of a counter array indexed by [`Self::index`]).
            pub const COUNT: usize = Self::ALL.len();

            /// A short snake_case label, stable for metrics and logs.
            pub const fn as_str(self) -> &'static str {
                match self { $( DropReason::$name => $label, )* }
            }
        }
    };
}

drop_reasons! {
    /// Headers do not parse: bad version, lengths that disagree, an impossible field.
    Malformed = "malformed",
    /// The packet ends before a header or trailer it announces.
    Truncated = "truncated",
    /// A checksum did not verify.
    BadChecksum = "bad_checksum",
    /// A protocol or next header this stage does not handle.
    Unsupported = "unsupported",
    /// Larger than the egress MTU (and not fragmented).
    TooBig = "too_big",
    /// TTL or hop limit reached zero.
    TtlExceeded = "ttl_exceeded",
    /// No route to the destination.
    NoRoute = "no_route",
    /// Not enough headroom or tailroom to encapsulate.
    NoRoom = "no_room",
    /// A queue or batch was full.
    QueueFull = "queue_full",
    /// No free buffer in the pool.
    NoBuffer = "no_buffer",
    /// A firewall rule said drop or reject.
    Filtered = "filtered",
    /// A firewall policy (chain default) said drop.
    Policy = "policy",
    /// Connection tracking found the packet invalid for its flow's state.
    ConnInvalid = "conn_invalid",
    /// The connection table is full and nothing could be evicted.
    ConnTableFull = "conn_table_full",
    /// Over a rate limit.
    RateLimited = "rate_limited",
    /// ESP: no inbound SA has this SPI.
    UnknownSpi = "unknown_spi",
    /// ESP: sequence number replayed or left of the window.
    Replay = "replay",
    /// ESP or another AEAD user: the ICV did not verify.
    AuthFailed = "auth_failed",
    /// ESP: padding bytes not the monotonic sequence of RFC 4303 §2.4, or pad length too long.
    BadPadding = "bad_padding",
    /// ESP: next header not one the SA may carry.
    UnknownNextHeader = "unknown_next_header",
    /// The SA (or other state) passed its hard lifetime.
    Expired = "expired",
    /// Outbound: no SA or tunnel selected for this packet.
    NoSa = "no_sa",
    /// A NAT-T keepalive (RFC 3948 §2.3) or tunnel keepalive, consumed and counted.
    Keepalive = "keepalive",
    /// GRE/VXLAN: no tunnel for this key, VNI or endpoint.
    UnknownTunnel = "unknown_tunnel",
    /// GRE: sequence number out of order (RFC 2890 §2.2).
    OutOfOrder = "out_of_order",
    /// Switch: learned-MAC limit of the port or domain reached.
    MacLimit = "mac_limit",
    /// Switch: VLAN not allowed on this port.
    VlanMismatch = "vlan_mismatch",
    /// Switch: would go back out a port of the same split-horizon group (or its own port).
    SplitHorizon = "split_horizon",
    /// Overlay: the inner source is not an address of the peer it came from.
    SourceMismatch = "source_mismatch",
    /// The port or tunnel is administratively down.
    PortDown = "port_down",
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DropReason {
    /// A dense index in `0..COUNT`, for counter arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One counter per [`DropReason`]: a fixed array, no allocation, no hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::COUNT]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DropReason::COUNT])
    }
}

impl DropCounters {
    /// Counts one drop and returns the action to return for it.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) -> Action {
        self.0[reason.index()] += 1;
        Action::Drop(reason)
    }
    /// Counts `n` drops.
    #[inline]
    pub fn add(&mut self, reason: DropReason, n: u64) {
        self.0[reason.index()] += n;
    }
    /// Drops counted for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }
    /// All drops counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// The non-zero counters.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.0[r.index()]))
            .filter(|(_, n)| *n > 0)
    }
    /// Adds another set of counters into this one (merging per-worker counters).
    pub fn merge(&mut self, other: &DropCounters) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += *b;
        }
    }
}

/// A sans-IO processing element of a pipeline: it looks at and rewrites packets in place, and
/// decides what happens to each.
///
/// # Contract
///
/// - A stage does no I/O, does not sleep and does not read a clock: `now` is passed in.
/// - [`process`](Self::process) never panics, whatever the packet's bytes; a packet it cannot
///   handle is dropped with a [`DropReason`] that the stage counts.
/// - A stage may push or pull headers; on [`Action::Continue`] and [`Action::Forward`] it
///   leaves `meta` offsets true for the bytes it leaves, or cleared.
/// - [`process_batch`](Self::process_batch) gives the same result as calling `process` on each
///   packet whose action is [`Action::Continue`] in order; packets already decided are left
///   alone. Stages override it to amortise lookups over the batch.
/// - Timers: [`poll_timeout`](Self::poll_timeout) says when the stage next wants
///   [`handle_timeout`](Self::handle_timeout) called (keepalives, aging, rekeying). Calling
///   `handle_timeout` early is harmless.
pub trait Stage<B: PacketBuf> {
    /// Processes one packet.
    fn process(&mut self, buf: &mut B, meta: &mut Meta, now: Instant) -> Action;

    /// Processes every undecided packet of a batch, writing each verdict in the batch.
    fn process_batch(&mut self, batch: &mut Batch<B>, now: Instant) {
        for (buf, meta, action) in batch.iter_mut() {
            if *action == Action::Continue {
                *action = self.process(buf, meta, now);
            }
        }
    }

    /// When the stage next needs [`handle_timeout`](Self::handle_timeout), if ever.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Runs the stage's timers due at `now`.
    fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }
}

/// Offloads a port supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// Transmit checksums may be left for the device (partial checksum).
    pub tx_checksum: bool,
    /// Received checksums were verified by the device.
    pub rx_checksum: bool,
    /// TCP segmentation offload: one large TCP packet may be sent and is cut by the device.
    pub tso: bool,
    /// UDP segmentation offload (UDP GSO).
    pub udp_gso: bool,
    /// Receive coalescing (GRO): received packets may be larger than the MTU.
    pub gro: bool,
}

/// What a port can do: packet sizes, room it needs, batching, offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCaps {
    /// Largest packet the port sends (without link header for L3 ports).
    pub mtu: usize,
    /// Headroom the port needs in buffers it sends (link headers it adds, vnet header).
    pub headroom: usize,
    /// Most packets one `recv` or `send` call moves.
    pub batch_size: usize,
    /// Offloads in effect.
    pub offloads: Offloads,
}

impl Default for PortCaps {
    fn default() -> Self {
        PortCaps {
            mtu: 1500,
            headroom: 0,
            batch_size: 32,
            offloads: Offloads::default(),
        }
    }
}

/// Why a port operation failed (a failure of the port, not of one packet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The other end is gone; the port will not move packets again.
    #[error("port closed")]
    Closed,
    /// The operating system refused, with this errno.
    #[error("os error {errno}")]
    Os {
        /// The errno value.
        errno: i32,
    },
    /// Another failure, described.
    #[error("{0}")]
    Other(&'static str),
}

#[cfg(feature = "std")]
impl From<std::io::Error> for PortError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(errno) => PortError::Os { errno },
            None if e.kind() == std::io::ErrorKind::BrokenPipe => PortError::Closed,
            None => PortError::Other("i/o error"),
        }
    }
}

/// A source and sink of packets: a device, a socket, a tunnel, an in-memory wire.
///
/// # Contract
///
/// - [`recv`](Self::recv) appends up to `batch.remaining()` received packets (with their
///   [`Meta`], `ingress` set to the port's id and `timestamp` to `now`) and returns how many.
///   `Ok(0)` means nothing is ready now; it never blocks.
/// - [`send`](Self::send) sends packets from the front of the batch, in order, removes the
///   ones it sent (dropping the buffers, which returns pooled ones to their pool), and returns
///   how many. Packets it could not send yet stay in the batch, in order. It never blocks.
/// - Packets larger than `caps().mtu` may be dropped by `send` (and counted by the port).
/// - Errors are for the port as a whole; a bad packet is never an error.
pub trait Port<B: PacketBuf> {
    /// The port's capabilities.
    fn caps(&self) -> PortCaps;
    /// Receives a batch of packets.
    fn recv(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError>;
    /// Sends a batch of packets.
    fn send(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PktBuf;

    #[test]
    fn drop_reason_labels_unique_and_indexed() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(!r.as_str().is_empty());
            for s in &DropReason::ALL[i + 1..] {
                assert_ne!(r.as_str(), s.as_str());
            }
        }
        assert_eq!(alloc::format!("{}", DropReason::Replay), "replay");
    }

    #[test]
    fn counters() {
        let mut c = DropCounters::default();
        assert_eq!(c.drop(DropReason::Replay), Action::Drop(DropReason::Replay));
        c.add(DropReason::NoRoute, 3);
        assert_eq!(c.get(DropReason::Replay), 1);
        assert_eq!(c.total(), 4);
        let mut d = DropCounters::default();
        d.merge(&c);
        d.merge(&c);
        assert_eq!(d.get(DropReason::NoRoute), 6);
        let nz: alloc::vec::Vec<_> = d.iter().collect();
        assert_eq!(nz, [(DropReason::NoRoute, 6), (DropReason::Replay, 2)]);
    }

    struct Ttl;
    impl Stage<PktBuf> for Ttl {
        fn process(&mut self, buf: &mut PktBuf, _: &mut Meta, _: Instant) -> Action {
            match buf.data_mut().get_mut(8) {
                Some(0 | 1) => Action::Drop(DropReason::TtlExceeded),
                Some(t) => {
                    *t -= 1;
                    Action::Continue
                }
                None => Action::Drop(DropReason::Truncated),
            }
        }
    }

    #[test]
    fn default_batch_skips_decided_packets() {
        let mut batch = Batch::from_packets(&[&[0u8; 20], &[0u8; 4], &[0u8; 20]], 0, 0);
        batch.get_mut(0).unwrap().0.data_mut()[8] = 5;
        *batch.get_mut(2).unwrap().2 = Action::Consumed;
        Ttl.process_batch(&mut batch, Instant::ZERO);
        assert_eq!(batch.get(0).unwrap().0.data()[8], 4);
        assert_eq!(*batch.get(0).unwrap().2, Action::Continue);
        assert_eq!(
            *batch.get(1).unwrap().2,
            Action::Drop(DropReason::Truncated)
        );
        assert_eq!(*batch.get(2).unwrap().2, Action::Consumed);
        assert_eq!(
            batch.get(2).unwrap().0.data()[8],
            0,
            "decided packet untouched"
        );
        assert_eq!(Stage::<PktBuf>::poll_timeout(&Ttl), None);
    }
}
