//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Checksums are handled as host-order `u16` values equal to the big-endian field on the wire:
//! read a field with `u16::from_be_bytes` and write it back with `to_be_bytes`.

/// Adds `data` to a running one's-complement sum (RFC 1071 §4.1: 16-bit big-endian words, an
/// odd final byte padded with zero). Chain calls on even-length pieces, then [`fold`].
#[inline]
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    if let Ok(h) = <&[u8; 20]>::try_from(data) {
        // An IPv4 header without options, the most common input: five 32-bit words, whose
        // sum (below 2^35) folds like that of the ten 16-bit words (RFC 1071 §2(C)).
        let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
        return add_carry(acc, w(0) + w(4) + w(8) + w(12) + w(16));
    }
    if data.len() < SHORT {
        return sum_tail(acc, data);
    }
    let (blocks, rest) = data.as_chunks::<BLOCK>();
    for run in blocks.chunks(RUN) {
        let mut lanes = [0u32; WORDS];
        for b in run {
            add_block(&mut lanes, b);
        }
        acc = add_lanes(acc, &lanes);
    }
    sum_tail(acc, rest)
}

/// Copies `src` into `dst` (which must have the same length) and returns `sum(acc, src)`.
/// For cutting a super-packet into segments, whose payload is copied and checksummed anyway.
///
/// # Panics
///
/// If the lengths differ, as `copy_from_slice` does.
// The compiler turns the copy into a `memcpy` of each run, and the sum then reads the run
// again while it is in the cache, with the widening vector adds of [`sum`]. Not inlined:
// inlined into a caller, the sum has been seen to fall back to 8-byte scalar loads, at a
// third of the speed. The call costs nothing next to a segment's worth of bytes.
#[inline(never)]
pub fn copy_and_sum(mut acc: u64, src: &[u8], dst: &mut [u8]) -> u64 {
    assert_eq!(src.len(), dst.len(), "copy_and_sum: lengths differ");
    let (from, rest) = src.as_chunks::<BLOCK>();
    let (to, rest_to) = dst.as_chunks_mut::<BLOCK>();
    for (run_from, run_to) in from.chunks(RUN).zip(to.chunks_mut(RUN)) {
        let mut lanes = [0u32; WORDS];
        for (s, d) in run_from.iter().zip(run_to) {
            *d = *s;
            add_block(&mut lanes, s);
        }
        acc = add_lanes(acc, &lanes);
    }
    rest_to.copy_from_slice(rest);
    sum_tail(acc, rest)
}

/// Below this many bytes (headers, small packets) the serial sum is faster than setting up
/// and folding the lanes.
const SHORT: usize = 128;
/// Bytes per block of the bulk loop.
const BLOCK: usize = 32;
/// 16-bit words of a block, each summed in a 32-bit lane of its own.
const WORDS: usize = BLOCK / 2;
/// Blocks a run of lanes takes before it is folded: a lane overflows only past 65,536 words
/// of 0xffff.
const RUN: usize = 65_536;

/// Adds a block's 16-bit words, in the machine's byte order, each to its own 32-bit lane: no
/// carry ripples from one word to the next, so the compiler widens and adds them four at a
/// time (one widening load and one vector add per 8 bytes).
#[inline(always)]
fn add_block(lanes: &mut [u32; WORDS], b: &[u8; BLOCK]) {
    let (words, _) = b.as_chunks::<2>();
    for (l, w) in lanes.iter_mut().zip(words) {
        *l += u32::from(u16::from_ne_bytes(*w));
    }
}

/// Folds a run's lanes into the running sum. Summing in the machine's byte order and
/// swapping the folded result gives the big-endian sum (RFC 1071 §2(B), byte order
/// independence).
#[inline(always)]
fn add_lanes(acc: u64, lanes: &[u32; WORDS]) -> u64 {
    let bulk = fold(lanes.iter().map(|&l| u64::from(l)).sum());
    add_carry(acc, u64::from(u16::from_be(bulk)))
}

/// The bytes after the last whole block: eight at a time into the running sum, then 16-bit
/// words, then an odd byte.
#[inline(always)]
fn sum_tail(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc = add_carry(acc, w);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc = add_carry(acc, u64::from(u16::from_be_bytes([w[0], w[1]])));
    }
    if let [last] = words.remainder() {
        acc = add_carry(acc, u64::from(*last) << 8);
    }
    acc
}

/// Folds a running sum to 16 bits (end-around carry), without complementing it.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data`: the one's complement of the one's-complement sum. Over a
/// header whose checksum field holds the right value, this returns 0.
#[inline]
pub fn internet(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// The sum of the IPv4 pseudo-header (RFC 768, RFC 793) for a transport checksum.
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u64 {
    let acc = sum(0, &src);
    let acc = sum(acc, &dst);
    // End-around carry: the address sum may already be near u64::MAX (all-ones addresses).
    add_carry(acc, u64::from(proto) + u64::from(len))
}

/// One's-complement addition of `v` to a running sum: a carry out of bit 63 wraps around.
#[inline]
fn add_carry(acc: u64, v: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(v);
    s + u64::from(carry)
}

/// Adds two running sums, as if their bytes had been summed in one call (the first piece of
/// even length).
#[inline]
pub fn add(a: u64, b: u64) -> u64 {
    add_carry(a, b)
}

/// The sum of the IPv6 pseudo-header (RFC 8200 §8.1) for a transport checksum.
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], next_header: u8, len: u32) -> u64 {
    let acc = sum(0, &src);
    let acc = sum(acc, &dst);
    add_carry(
        acc,
        u64::from(len >> 16) + u64::from(len & 0xffff) + u64::from(next_header),
    )
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word of the covered data changes from
/// `old` to `new`: `HC' = ~(~HC + ~m + m')`. Unlike eqn. 2 it never yields 0xFFFF for a
/// non-zero sum (RFC 1624 §3).
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!hc) + u64::from(!old) + u64::from(new);
    !fold(acc)
}

/// [`update16`] for a 32-bit field (an IPv4 address, a TCP sequence number).
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let acc = u64::from(!hc)
        + u64::from(!(old >> 16) & 0xffff)
        + u64::from(!old & 0xffff)
        + u64::from(new >> 16)
        + u64::from(new & 0xffff);
    !fold(acc)
}

/// [`update16`] for a field of any even length (an IPv6 address). If the lengths differ or
/// are odd, the checksum is returned unchanged and `false`: the caller must recompute.
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> (u16, bool) {
    if old.len() != new.len() || !old.len().is_multiple_of(2) {
        return (hc, false);
    }
    let mut acc = u64::from(!hc);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u64::from(!u16::from_be_bytes([o[0], o[1]]));
        acc += u64::from(u16::from_be_bytes([n[0], n[1]]));
    }
    (!fold(acc), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_header_of_all_ones_addresses_keeps_its_carry() {
        // The address words alone bring the 64-bit accumulator to its top; the protocol and
        // length must carry around (RFC 1071 §2(B)), not overflow. Against a 16-bit
        // reference sum of the same pseudo-header words.
        let reference = |words: &[u16]| {
            let mut acc: u32 = 0;
            for w in words {
                acc += u32::from(*w);
                acc = (acc & 0xffff) + (acc >> 16);
            }
            acc as u16
        };
        let v6 = pseudo_v6([0xff; 16], [0xff; 16], 6, 0x1_0010);
        let mut words = [0xffffu16; 19];
        words[16..].copy_from_slice(&[0x0001, 0x0010, 6]);
        assert_eq!(fold(v6), reference(&words));
        let v4 = pseudo_v4([0xff; 4], [0xff; 4], 17, 1000);
        let mut words = [0xffffu16; 6];
        words[4..].copy_from_slice(&[17, 1000]);
        assert_eq!(fold(v4), reference(&words));
    }

    /// RFC 1071 §3, the worked example: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2
    /// ("The checksum is 0x220d", the complement of that sum).
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(internet(&data), 0x220d);
        // Byte order independence (RFC 1071 §2(B)): the swapped sum is the swapped result.
        let swapped = [0x01, 0x00, 0x03, 0xf2, 0xf5, 0xf4, 0xf7, 0xf6];
        assert_eq!(fold(sum(0, &swapped)), 0xf2dd);
    }

    /// RFC 1624 §4: m = 0x5555 changes to m' = 0x3285, the rest of the header sums to 0xCD7A;
    /// HC = 0xDD2F and the correct new checksum is 0x0000 (eqn. 2 would give 0xFFFF).
    #[test]
    fn rfc1624_example() {
        let hc = !fold(0xCD7A + 0x5555);
        assert_eq!(hc, 0xDD2F);
        assert_eq!(update16(hc, 0x5555, 0x3285), 0x0000);
        assert_eq!(!fold(0xCD7A + 0x3285), 0x0000);
    }

    /// The worked IPv4 header of the "Internet checksum" example in the Wikipedia IPv4 article
    /// (192.168.0.1 → 192.168.0.199, UDP): its checksum is 0xB861, and it then verifies to 0.
    #[test]
    fn ipv4_header() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(internet(&h), 0);
        // Rewrite the destination address incrementally and check against a full recompute.
        let old = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
        let new = u32::from_be_bytes([10, 1, 2, 3]);
        let inc = update32(0xb861, old, new);
        h[16..20].copy_from_slice(&new.to_be_bytes());
        h[10] = 0;
        h[11] = 0;
        assert_eq!(inc, internet(&h));
        let (inc2, ok) = update_bytes(0xb861, &old.to_be_bytes(), &new.to_be_bytes());
        assert!(ok);
        assert_eq!(inc2, inc);
        assert_eq!(update_bytes(1, &[1], &[2]), (1, false));
    }

    /// RFC 1071 §4.1 as written: 16-bit big-endian words into a 32-bit accumulator, carries
    /// folded in at the end. The oracle for the block-wise sum.
    fn rfc1071_reference(acc: u16, data: &[u8]) -> u16 {
        let mut sum = u64::from(acc);
        for w in data.chunks(2) {
            let hi = u64::from(w[0]) << 8;
            sum += hi | w.get(1).map_or(0, |b| u64::from(*b));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    proptest::proptest! {
        #[test]
        fn block_sum_and_copy_match_rfc1071(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..700),
            ones in 0usize..700,
            acc in proptest::prelude::any::<u16>(),
        ) {
            // Runs of 0xff bytes reach the carry corner cases (sums of all-ones words).
            let mut data = data;
            let n = ones.min(data.len());
            data[..n].fill(0xff);
            let want = rfc1071_reference(acc, &data);
            // Exactly equal, not only as one's-complement values: both give 0 only when
            // everything summed is zero, 0xffff otherwise.
            let got = fold(sum(u64::from(acc), &data));
            proptest::prop_assert_eq!(got, want, "sum");
            let mut copy = vec![0u8; data.len()];
            let got = fold(copy_and_sum(u64::from(acc), &data, &mut copy));
            proptest::prop_assert_eq!(got, want, "copy_and_sum");
            proptest::prop_assert_eq!(&copy, &data);
        }

        /// Twenty bytes (an IPv4 header without options) take their own path in `sum`.
        #[test]
        fn twenty_bytes_match_rfc1071(
            data in proptest::prelude::any::<[u8; 20]>(),
            ones in 0usize..=20,
            acc in proptest::prelude::any::<u64>(),
        ) {
            // Runs of 0xff bytes and any running sum, up to all ones: the carry corners.
            let mut data = data;
            data[..ones].fill(0xff);
            let want = rfc1071_reference(fold(acc), &data);
            proptest::prop_assert_eq!(fold(sum(acc, &data)), want);
        }
    }

    #[test]
    fn inputs_longer_than_a_lane_run_keep_every_carry() {
        // All-ones words are the most a 32-bit lane can take: past `RUN` blocks one more
        // would overflow it, so the sum must fold its lanes and go on.
        for len in [
            RUN * BLOCK - 2,
            RUN * BLOCK,
            RUN * BLOCK + 34,
            2 * RUN * BLOCK + 101,
        ] {
            let ones = vec![0xffu8; len];
            assert_eq!(
                fold(sum(0, &ones)),
                rfc1071_reference(0, &ones),
                "ones, {len}"
            );
            let mixed: Vec<u8> = (0..len).map(|i| (i * 131 + i / 977) as u8).collect();
            assert_eq!(
                fold(sum(7, &mixed)),
                rfc1071_reference(7, &mixed),
                "mixed, {len}"
            );
            let mut copy = vec![0u8; len];
            let got = fold(copy_and_sum(0, &ones, &mut copy));
            assert_eq!(got, rfc1071_reference(0, &ones), "copy_and_sum, {len}");
            assert!(copy == ones, "copy_and_sum copies, {len}");
        }
    }

    #[test]
    fn odd_length_and_chunk_boundaries() {
        // The same bytes summed in one go and in even pieces agree.
        let data: [u8; 23] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let whole = fold(sum(0, &data));
        let parts = fold(sum(sum(sum(0, &data[..2]), &data[2..10]), &data[10..]));
        assert_eq!(whole, parts);
        // Odd trailing byte is padded with zero on the right.
        assert_eq!(fold(sum(0, &[0xab])), 0xab00);
        assert_eq!(internet(&[]), 0xffff);
    }

    #[test]
    fn pseudo_headers_match_etherparse() {
        let mut out = alloc::vec::Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000)
            .write(&mut out, b"abc")
            .unwrap();
        let udp = &out[20..];
        let acc = pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 17, udp.len() as u16);
        assert_eq!(
            !fold(sum(acc, udp)),
            0,
            "etherparse's UDP checksum verifies"
        );

        let mut out6 = alloc::vec::Vec::new();
        let (s, d) = (
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xfe; 16],
        );
        etherparse::PacketBuilder::ipv6(s, d, 64)
            .udp(1, 2)
            .write(&mut out6, b"hello")
            .unwrap();
        let udp6 = &out6[40..];
        let acc6 = pseudo_v6(s, d, 17, udp6.len() as u32);
        assert_eq!(!fold(sum(acc6, udp6)), 0);
    }
}
