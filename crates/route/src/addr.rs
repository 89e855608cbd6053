//! The two address families behind one trait, so that every table is written once.
//!
//! Inside the crate a prefix is a *key* (the address bits left-aligned in a `u128`, host bits
//! zero) and a length. IPv4 keys are the 32 address bits shifted to the top, so the same bit
//! arithmetic serves both families.

use core::fmt::{Debug, Display};
use core::hash::Hash;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

mod sealed {
    pub trait Sealed {}
    impl Sealed for core::net::Ipv4Addr {}
    impl Sealed for core::net::Ipv6Addr {}
    impl Sealed for u32 {}
    impl Sealed for u128 {}
}

/// An address family: [`Ipv4Addr`] or [`Ipv6Addr`]. Sealed.
pub trait Address:
    sealed::Sealed + Copy + Eq + Ord + Hash + Debug + Display + Send + Sync + 'static
{
    /// The prefix type of the family (`ipnet`'s [`Ipv4Net`] or [`Ipv6Net`]).
    type Prefix: Copy + Eq + Ord + Hash + Debug + Display + Send + Sync + 'static;
    /// The native integer the lookup paths work on (`u32` or `u128`).
    type Word: Word;
    /// Address width in bits.
    const BITS: u8;
    /// How many leading bits the compiled FIB resolves with one direct-indexed array.
    const DIRECT_BITS: u8;

    /// The address as its native integer.
    fn to_word(self) -> Self::Word;
    /// The address bits, left-aligned in a `u128`.
    fn to_key(self) -> u128;
    /// The address whose left-aligned bits are `key`.
    fn from_key(key: u128) -> Self;
    /// A prefix's left-aligned key (host bits cleared) and length.
    fn prefix_parts(prefix: &Self::Prefix) -> (u128, u8);
    /// The prefix of `len` bits starting at the left-aligned `key` (host bits are cleared).
    fn make_prefix(key: u128, len: u8) -> Self::Prefix;
    /// This family's part of an [`IpAddr`].
    fn from_ip(addr: IpAddr) -> Option<Self>;
    /// This family's part of an [`IpNet`].
    fn from_net(net: IpNet) -> Option<Self::Prefix>;
    /// The prefix as an [`IpNet`].
    fn to_net(prefix: Self::Prefix) -> IpNet;
}

/// The integer an address is looked up as: slices of its bits index the FIB's arrays. Sealed.
pub trait Word: sealed::Sealed + Copy + Default + Send + Sync + 'static {
    /// The top `s` bits (`1 <= s <= 24`), as an index.
    fn top(self, s: u32) -> usize;
    /// The 6 bits starting at bit `depth` (from the most significant), zero-padded past the end.
    fn chunk6(self, depth: u32) -> usize;
    /// The word without its first `n` bits (`n` below the width): shifted left, zero-filled.
    fn skip(self, n: u32) -> Self;
    /// The first 6 bits, as an index.
    fn head6(self) -> usize;
    /// The first 64 bits (zero-padded).
    fn head64(self) -> u64;
    /// The word's bits, left-aligned in a `u128`.
    #[doc(hidden)]
    fn to_key(self) -> u128;
    /// The word whose left-aligned bits are `key`.
    #[doc(hidden)]
    fn from_key(key: u128) -> Self;
}

impl Word for u32 {
    #[inline(always)]
    fn top(self, s: u32) -> usize {
        (self >> (32 - s)) as usize
    }
    #[inline(always)]
    fn chunk6(self, depth: u32) -> usize {
        match self.checked_shl(depth) {
            Some(v) => (v >> 26) as usize,
            None => 0,
        }
    }
    #[inline(always)]
    fn skip(self, n: u32) -> Self {
        self << (n & 31)
    }
    #[inline(always)]
    fn head6(self) -> usize {
        (self >> 26) as usize
    }
    #[inline(always)]
    fn head64(self) -> u64 {
        u64::from(self) << 32
    }
    #[inline(always)]
    fn to_key(self) -> u128 {
        u128::from(self) << 96
    }
    #[inline(always)]
    fn from_key(key: u128) -> Self {
        (key >> 96) as u32
    }
}

impl Word for u128 {
    #[inline(always)]
    fn top(self, s: u32) -> usize {
        (self >> (128 - s)) as usize
    }
    #[inline(always)]
    fn chunk6(self, depth: u32) -> usize {
        match self.checked_shl(depth) {
            Some(v) => (v >> 122) as usize,
            None => 0,
        }
    }
    #[inline(always)]
    fn skip(self, n: u32) -> Self {
        self << (n & 127)
    }
    #[inline(always)]
    fn head6(self) -> usize {
        (self >> 122) as usize
    }
    #[inline(always)]
    fn head64(self) -> u64 {
        (self >> 64) as u64
    }
    #[inline(always)]
    fn to_key(self) -> u128 {
        self
    }
    #[inline(always)]
    fn from_key(key: u128) -> Self {
        key
    }
}

/// The mask of the first `len` bits of a left-aligned key.
#[inline]
pub(crate) fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl Address for Ipv4Addr {
    type Prefix = Ipv4Net;
    type Word = u32;
    const BITS: u8 = 32;
    const DIRECT_BITS: u8 = 18;

    #[inline(always)]
    fn to_word(self) -> u32 {
        self.to_bits()
    }
    #[inline]
    fn to_key(self) -> u128 {
        u128::from(self.to_bits()) << 96
    }
    #[inline]
    fn from_key(key: u128) -> Self {
        Ipv4Addr::from_bits((key >> 96) as u32)
    }
    #[inline]
    fn prefix_parts(prefix: &Ipv4Net) -> (u128, u8) {
        let len = prefix.prefix_len();
        (prefix.addr().to_key() & mask(len), len)
    }
    #[inline]
    fn make_prefix(key: u128, len: u8) -> Ipv4Net {
        let len = len.min(32);
        // `len` is clamped to the family width, so `new` cannot fail.
        Ipv4Net::new(Self::from_key(key & mask(len)), len).unwrap_or_default()
    }
    fn from_ip(addr: IpAddr) -> Option<Self> {
        match addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
    fn from_net(net: IpNet) -> Option<Ipv4Net> {
        match net {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        }
    }
    fn to_net(prefix: Ipv4Net) -> IpNet {
        IpNet::V4(prefix)
    }
}

impl Address for Ipv6Addr {
    type Prefix = Ipv6Net;
    type Word = u128;
    const BITS: u8 = 128;
    const DIRECT_BITS: u8 = 18;

    #[inline(always)]
    fn to_word(self) -> u128 {
        self.to_bits()
    }
    #[inline]
    fn to_key(self) -> u128 {
        self.to_bits()
    }
    #[inline]
    fn from_key(key: u128) -> Self {
        Ipv6Addr::from_bits(key)
    }
    #[inline]
    fn prefix_parts(prefix: &Ipv6Net) -> (u128, u8) {
        let len = prefix.prefix_len();
        (prefix.addr().to_bits() & mask(len), len)
    }
    #[inline]
    fn make_prefix(key: u128, len: u8) -> Ipv6Net {
        let len = len.min(128);
        Ipv6Net::new(Self::from_key(key & mask(len)), len).unwrap_or_default()
    }
    fn from_ip(addr: IpAddr) -> Option<Self> {
        match addr {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
    fn from_net(net: IpNet) -> Option<Ipv6Net> {
        match net {
            IpNet::V6(n) => Some(n),
            IpNet::V4(_) => None,
        }
    }
    fn to_net(prefix: Ipv6Net) -> IpNet {
        IpNet::V6(prefix)
    }
}

/// A fast hasher for left-aligned keys (a multiply-xorshift finaliser); table keys are not
/// attacker-chosen in bulk, and SipHash would cost more than the rest of a lookup.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl core::hash::Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 29;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^ (h >> 32)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    #[inline]
    fn write_usize(&mut self, k: usize) {
        self.0 = (self.0 ^ k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    #[inline]
    fn write_u128(&mut self, k: u128) {
        let folded = (k as u64) ^ ((k >> 64) as u64).rotate_left(23);
        self.0 = (self.0 ^ folded).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type KeyMap<V> =
    std::collections::HashMap<u128, V, core::hash::BuildHasherDefault<KeyHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_left_aligned() {
        let a = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(a.to_key() >> 96, 0x0a01_0203);
        assert_eq!(Ipv4Addr::from_key(a.to_key()), a);
        let p: Ipv4Net = "10.1.2.3/16".parse().unwrap();
        let (k, l) = Ipv4Addr::prefix_parts(&p);
        assert_eq!((k >> 96, l), (0x0a01_0000, 16));
        assert_eq!(Ipv4Addr::make_prefix(k, l).to_string(), "10.1.0.0/16");
        let q: Ipv6Net = "2001:db8::1/32".parse().unwrap();
        let (k, l) = Ipv6Addr::prefix_parts(&q);
        assert_eq!(Ipv6Addr::make_prefix(k, l).to_string(), "2001:db8::/32");
    }

    #[test]
    fn chunks_agree_between_widths() {
        let a: u32 = 0xdead_beef;
        let k = u128::from(a) << 96;
        for d in (0..40).step_by(3) {
            assert_eq!(a.chunk6(d), k.chunk6(d), "depth {d}");
        }
        assert_eq!(a.top(18), k.top(18));
        // Skipping bits and reading the head is chunk6 (zero-padded past the end alike).
        for d in 0..32 {
            assert_eq!(a.skip(d).head6(), a.chunk6(d), "u32 depth {d}");
        }
        for d in 0..128 {
            let w = k ^ 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
            assert_eq!(w.skip(d).head6(), w.chunk6(d), "u128 depth {d}");
        }
        // Within the first 64 bits, the 6 bits at a depth are cut from head64 alike.
        for d in 0..=58 {
            let w = k ^ 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
            assert_eq!(((w.head64() << d) >> 58) as usize, w.chunk6(d), "u128 {d}");
            assert_eq!(((a.head64() << d) >> 58) as usize, a.chunk6(d), "u32 {d}");
        }
        assert_eq!(0xffff_ffffu32.chunk6(30), 0b11_0000);
        assert_eq!(mask(0), 0);
        assert_eq!(mask(128), u128::MAX);
        assert_eq!(mask(1), 1 << 127);
    }
}
