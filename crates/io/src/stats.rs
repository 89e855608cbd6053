//! Per-port counters.

use gatekit_packet::{DropCounters, DropReason};

/// What a port has moved and dropped. Each port keeps its own (ports belong to one worker);
/// merge them with [`PortStats::merge`] for a device-wide view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets handed to the pipeline.
    pub rx_packets: u64,
    /// Bytes handed to the pipeline.
    pub rx_bytes: u64,
    /// Receive system calls that returned data.
    pub rx_calls: u64,
    /// Offloaded super-packets (TUN GSO, UDP GRO) cut into segments on receive.
    pub rx_coalesced: u64,
    /// Coalesced datagrams (UDP GRO) the kernel scattered straight into pool buffers, one
    /// segment each, so that nothing was copied to cut them.
    pub rx_scattered: u64,
    /// Packets the kernel accepted.
    pub tx_packets: u64,
    /// Bytes the kernel accepted.
    pub tx_bytes: u64,
    /// Send system calls made.
    pub tx_calls: u64,
    /// Super-packets (TUN TSO, UDP GSO) built on send out of several packets.
    pub tx_coalesced: u64,
    /// Packets dropped by the port, by reason.
    pub drops: DropCounters,
}

impl PortStats {
    /// Adds another port's counters into these.
    pub fn merge(&mut self, o: &PortStats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.rx_calls += o.rx_calls;
        self.rx_coalesced += o.rx_coalesced;
        self.rx_scattered += o.rx_scattered;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_calls += o.tx_calls;
        self.tx_coalesced += o.tx_coalesced;
        self.drops.merge(&o.drops);
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.drops.add(reason, 1);
    }
}
