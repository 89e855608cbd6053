//! Test kit for gatekit: in-memory ports, pcap capture, fault injection, packet strategies.
//!
//! - [`wire`]: a pair of connected in-memory [`Port`](gatekit_packet::Port)s (a cable), stepped by hand.
//! - [`PcapPort`]: wraps any port and writes everything that crosses it to a pcap file that
//!   Wireshark and tshark open.
//! - [`FaultPort`]: wraps any port and, from a seed, drops, duplicates, reorders and corrupts
//!   what it sends.
//! - [`strategy`]: proptest strategies for Ethernet, IPv4, IPv6, UDP and TCP packets.
//!
//! ```
//! use gatekit_packet::{Batch, Instant, Meta, PacketBuf, PktBuf, Port};
//! let (mut a, mut b) = gatekit_testkit::wire(1500, 64);
//! let mut out = Batch::new(4);
//! out.push(PktBuf::from_slice(b"hello", 0, 0), Meta::default()).unwrap();
//! assert_eq!(a.send(&mut out, Instant::ZERO).unwrap(), 1);
//! let mut got: Batch<PktBuf> = Batch::new(4);
//! assert_eq!(b.recv(&mut got, Instant::ZERO).unwrap(), 1);
//! assert_eq!(got.get(0).unwrap().0.data(), b"hello");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod fault;
mod pcap;
pub mod strategy;
mod wire;

pub use fault::{FaultConfig, FaultPort, FaultStats};
pub use pcap::{LinkType, PcapPort, PcapSink};
pub use wire::{WirePort, wire};

/// A small deterministic PRNG (xorshift64*), so seeded tests replay exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `p` (0.0..=1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
    /// A value in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}
