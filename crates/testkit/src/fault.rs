//! Seeded fault injection on a port's send path.

use crate::Rng;
use gatekit_packet::{Batch, Instant, Meta, PacketBuf, Port, PortCaps, PortError};

/// Probabilities (0.0..=1.0) of each fault, applied per packet sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultConfig {
    /// The packet is lost.
    pub drop: f64,
    /// The packet is sent twice.
    pub duplicate: f64,
    /// The packet is held back and sent after the next one.
    pub reorder: f64,
    /// One random bit of the packet is flipped.
    pub corrupt: f64,
}

/// What a [`FaultPort`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Packets dropped.
    pub dropped: u64,
    /// Packets duplicated.
    pub duplicated: u64,
    /// Packets held back for reordering.
    pub reordered: u64,
    /// Packets with a flipped bit.
    pub corrupted: u64,
}

/// A port that mangles what it sends, from a seed, so a failing test replays exactly.
#[derive(Debug)]
pub struct FaultPort<P, B> {
    inner: P,
    cfg: FaultConfig,
    rng: Rng,
    held: Option<(B, Meta)>,
    /// What was done so far.
    pub stats: FaultStats,
}

impl<P, B> FaultPort<P, B> {
    /// Wraps `inner`.
    pub fn new(inner: P, cfg: FaultConfig, seed: u64) -> Self {
        FaultPort {
            inner,
            cfg,
            rng: Rng::new(seed),
            held: None,
            stats: FaultStats::default(),
        }
    }
    /// The wrapped port.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }
}

impl<B, P> Port<B> for FaultPort<P, B>
where
    B: PacketBuf + From<gatekit_packet::PktBuf>,
    P: Port<B>,
{
    fn caps(&self) -> PortCaps {
        self.inner.caps()
    }

    fn recv(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        self.inner.recv(batch, now)
    }

    fn send(&mut self, batch: &mut Batch<B>, now: Instant) -> Result<usize, PortError> {
        let n = batch.len();
        let mut out: Batch<B> = Batch::new(n * 2 + 1);
        for (mut buf, meta, _) in batch.drain() {
            if self.rng.chance(self.cfg.drop) {
                self.stats.dropped += 1;
                continue;
            }
            if self.rng.chance(self.cfg.corrupt) && !buf.is_empty() {
                let bit = self.rng.below(buf.len() * 8);
                buf.data_mut()[bit / 8] ^= 1 << (bit % 8);
                self.stats.corrupted += 1;
            }
            if self.rng.chance(self.cfg.duplicate) {
                let copy = gatekit_packet::PktBuf::from_slice(buf.data(), buf.headroom(), 0);
                let _ = out.push(B::from(copy), meta);
                self.stats.duplicated += 1;
            }
            if self.held.is_none() && self.rng.chance(self.cfg.reorder) {
                self.held = Some((buf, meta));
                self.stats.reordered += 1;
                continue;
            }
            let _ = out.push(buf, meta);
            if let Some((h, hm)) = self.held.take() {
                let _ = out.push(h, hm);
            }
        }
        self.inner.send(&mut out, now)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use gatekit_packet::PktBuf;

    fn run(cfg: FaultConfig, seed: u64) -> (Vec<Vec<u8>>, FaultStats) {
        let (a, mut b) = wire(1500, 0);
        let mut f: FaultPort<_, PktBuf> = FaultPort::new(a, cfg, seed);
        let pkts: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; 4]).collect();
        let refs: Vec<&[u8]> = pkts.iter().map(|p| p.as_slice()).collect();
        let mut batch = Batch::from_packets(&refs, 0, 0);
        assert_eq!(f.send(&mut batch, Instant::ZERO).unwrap(), 200);
        (b.recv_all_bytes(), f.stats)
    }

    #[test]
    fn faults_are_seeded_and_happen() {
        let cfg = FaultConfig {
            drop: 0.1,
            duplicate: 0.1,
            reorder: 0.1,
            corrupt: 0.1,
        };
        let (a, sa) = run(cfg, 7);
        let (b, sb) = run(cfg, 7);
        assert_eq!(a, b, "same seed, same faults");
        assert_eq!(sa, sb);
        assert!(sa.dropped > 5 && sa.duplicated > 5 && sa.reordered > 5 && sa.corrupted > 5);
        let (c, _) = run(cfg, 8);
        assert_ne!(a, c, "another seed, other faults");
    }

    #[test]
    fn no_faults_is_a_plain_wire() {
        let (got, stats) = run(FaultConfig::default(), 1);
        assert_eq!(stats, FaultStats::default());
        let want: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; 4]).collect();
        assert_eq!(got, want);
    }
}
