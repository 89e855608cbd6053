//! The anti-replay window (RFC 4303 §3.4.3) as the bitmap of RFC 6479, and the inference of
//! the high half of extended sequence numbers (RFC 4303 Appendix A2.2).
//!
//! The window is checked before decryption ([`ReplayWindow::check`]) and advanced only after
//! the ICV verified ([`ReplayWindow::accept`]), so forged packets cannot move it.

/// Smallest window size accepted.
pub const MIN_WINDOW: u32 = 64;
/// Largest window size accepted.
pub const MAX_WINDOW: u32 = 1 << 20;
/// Default window size.
pub const DEFAULT_WINDOW: u32 = 1024;

const BLOCK_BITS: u64 = 64;

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Seen before (its bit is set).
    Duplicate,
    /// Left of the window: too old to tell.
    TooOld,
    /// Sequence number 0 (never sent: the first packet of an SA carries 1, RFC 4303 §3.3.3),
    /// or an ESN whose high half would fall below zero.
    Invalid,
}

/// A sliding anti-replay window of `size` packets over 64-bit sequence numbers.
///
/// Semantics, exactly: a number `s` is accepted if `s > top` (the highest accepted so far), or
/// if `top - s < size` and `s` was not accepted before. The bitmap (RFC 6479) keeps one spare
/// 64-bit block so that advancing never has to shift bits; memory is allocated once, at
/// creation.
#[derive(Clone)]
pub struct ReplayWindow {
    bitmap: Box<[u64]>,
    /// `bitmap.len() - 1`; the length is a power of two.
    mask: usize,
    size: u64,
    top: u64,
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("size", &self.size)
            .field("top", &self.top)
            .finish()
    }
}

impl ReplayWindow {
    /// A window of `size` packets, clamped to `MIN_WINDOW..=MAX_WINDOW`. Nothing accepted yet.
    pub fn new(size: u32) -> Self {
        let size = u64::from(size.clamp(MIN_WINDOW, MAX_WINDOW));
        let blocks = (size.div_ceil(BLOCK_BITS) + 1).next_power_of_two() as usize;
        ReplayWindow {
            bitmap: vec![0u64; blocks].into_boxed_slice(),
            mask: blocks - 1,
            size,
            top: 0,
        }
    }

    /// A window whose highest accepted number is already `top` (an SA moved from elsewhere,
    /// or restored): numbers above it are accepted, and those within the window below it
    /// once each.
    pub fn starting_at(size: u32, top: u64) -> Self {
        let mut w = ReplayWindow::new(size);
        w.top = top;
        w
    }

    /// The window size in packets.
    pub fn size(&self) -> u32 {
        self.size as u32
    }

    /// The highest sequence number accepted so far (0 before the first).
    pub fn top(&self) -> u64 {
        self.top
    }

    #[inline]
    fn slot(&self, seq: u64) -> (usize, u64) {
        (
            ((seq / BLOCK_BITS) as usize) & self.mask,
            1u64 << (seq % BLOCK_BITS),
        )
    }

    /// Whether `seq` would be accepted. Does not change the window.
    #[inline]
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::Invalid);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= self.size {
            return Err(ReplayError::TooOld);
        }
        let (i, bit) = self.slot(seq);
        if self.bitmap[i] & bit != 0 {
            return Err(ReplayError::Duplicate);
        }
        Ok(())
    }

    /// Checks `seq` and, if accepted, records it (advancing the window if it is the newest).
    #[inline]
    pub fn accept(&mut self, seq: u64) -> Result<(), ReplayError> {
        self.check(seq)?;
        if seq > self.top {
            let old_block = self.top / BLOCK_BITS;
            let new_block = seq / BLOCK_BITS;
            // Clear the blocks the window slides over; at most the whole bitmap.
            let n = (new_block - old_block).min(self.bitmap.len() as u64);
            for b in 1..=n {
                let i = ((old_block + b) as usize) & self.mask;
                self.bitmap[i] = 0;
            }
            self.top = seq;
        }
        let (i, bit) = self.slot(seq);
        self.bitmap[i] |= bit;
        Ok(())
    }

    /// The full 64-bit sequence number of a packet carrying the low half `seq_low`, inferred
    /// from the window (RFC 4303 Appendix A2.2). The ICV, which covers the high half, decides
    /// whether the guess was right.
    #[inline]
    pub fn infer_esn(&self, seq_low: u32) -> Result<u64, ReplayError> {
        let w = self.size;
        let tl = self.top & 0xffff_ffff;
        let th = self.top >> 32;
        let sl = u64::from(seq_low);
        let sh = if tl >= w - 1 {
            // Case A: the window lies within one sequence-number subspace.
            if sl >= tl - (w - 1) { th } else { th + 1 }
        } else {
            // Case B: the window spans two subspaces.
            let bottom = tl.wrapping_sub(w - 1) & 0xffff_ffff;
            if sl >= bottom {
                th.checked_sub(1).ok_or(ReplayError::Invalid)?
            } else {
                th
            }
        };
        Ok(sh << 32 | sl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The naive oracle: the set of every number accepted, and the highest.
    struct Oracle {
        seen: BTreeSet<u64>,
        top: u64,
        size: u64,
    }

    impl Oracle {
        fn accept(&mut self, s: u64) -> bool {
            let ok =
                s != 0 && (s > self.top || (self.top - s < self.size && !self.seen.contains(&s)));
            if ok {
                self.seen.insert(s);
                self.top = self.top.max(s);
            }
            ok
        }
    }

    #[test]
    fn basics() {
        let mut w = ReplayWindow::new(1024);
        assert_eq!(w.size(), 1024);
        assert_eq!(w.check(0), Err(ReplayError::Invalid));
        assert_eq!(w.accept(1), Ok(()));
        assert_eq!(w.accept(1), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(5000), Ok(()));
        assert_eq!(w.accept(5000 - 1024), Err(ReplayError::TooOld));
        assert_eq!(w.accept(5000 - 1023), Ok(()));
        assert_eq!(w.accept(5000 - 1023), Err(ReplayError::Duplicate));
        // A jump far beyond the bitmap clears it entirely.
        assert_eq!(w.accept(1 << 40), Ok(()));
        assert_eq!(w.accept((1 << 40) - 1), Ok(()));
        assert_eq!(w.top(), 1 << 40);
    }

    #[test]
    fn esn_inference_rfc4303_a2() {
        let mut w = ReplayWindow::new(1024);
        // Case A, in the same subspace and just past it.
        w.accept(0x1_0000_2000).unwrap();
        assert_eq!(w.infer_esn(0x2001).unwrap(), 0x1_0000_2001);
        assert_eq!(w.infer_esn(0x2000 - 1023).unwrap(), 0x1_0000_2000 - 1023);
        assert_eq!(w.infer_esn(0x2000 - 1024).unwrap(), 0x2_0000_2000 - 1024);
        // Case B: top just past a 2^32 boundary; low numbers near 2^32 belong to the previous
        // subspace.
        let mut w = ReplayWindow::new(1024);
        w.accept(0x2_0000_0010).unwrap();
        assert_eq!(w.infer_esn(0xffff_fff0).unwrap(), 0x1_ffff_fff0);
        assert_eq!(w.infer_esn(0x20).unwrap(), 0x2_0000_0020);
        // Case B with high half 0: a number "before zero" cannot exist.
        let mut w = ReplayWindow::new(1024);
        w.accept(5).unwrap();
        assert_eq!(w.infer_esn(0xffff_fff0), Err(ReplayError::Invalid));
        assert_eq!(w.infer_esn(6).unwrap(), 6);
    }

    proptest! {
        #[test]
        fn matches_set_oracle(
            size in prop_oneof![Just(64u32), Just(1024u32), 64u32..3000],
            start in prop_oneof![Just(0u64), Just(0xffff_f000u64), any::<u32>().prop_map(u64::from)],
            steps in proptest::collection::vec((-2100i64..2100, any::<bool>()), 1..400),
        ) {
            let mut w = ReplayWindow::new(size);
            let mut o = Oracle { seen: BTreeSet::new(), top: 0, size: u64::from(w.size()) };
            let mut cur = start;
            for (delta, jump) in steps {
                cur = if jump { cur.saturating_add(delta.unsigned_abs() * 40) } else { cur.saturating_add_signed(delta) };
                let s = cur;
                let expect = o.accept(s);
                prop_assert_eq!(w.accept(s).is_ok(), expect, "seq {} top {}", s, w.top());
                prop_assert_eq!(w.top(), o.top);
            }
        }

        /// The sender counts up through the 2^32 boundary; the receiver sees only the low
        /// half, reordered within the window, and must recover every full number.
        #[test]
        fn esn_wrap_recovers_full_numbers(
            start in 0xffff_fc00u64..0xffff_ffff,
            shuffle in proptest::collection::vec(0usize..64, 300),
        ) {
            let mut w = ReplayWindow::new(1024);
            let mut o = Oracle { seen: BTreeSet::new(), top: 0, size: 1024 };
            let mut sent: Vec<u64> = (start..start + 2000).collect();
            // Reorder by bounded swaps so every packet stays within the window.
            for (i, s) in shuffle.iter().enumerate() {
                let a = (i * 7) % (sent.len() - 64);
                sent.swap(a, a + s);
            }
            for &full in &sent {
                let low = full as u32;
                let inferred = w.infer_esn(low);
                if o.top != 0 {
                    prop_assert_eq!(inferred, Ok(full));
                }
                let expect = o.accept(full);
                prop_assert_eq!(w.accept(full).is_ok(), expect);
            }
        }
    }
}
