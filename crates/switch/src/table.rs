//! The MAC table: (bridge domain, MAC) → port.
//!
//! A lookup of a 1M-entry table is a cache miss, often a TLB miss too, so the table is laid
//! out for one memory access per lookup: open addressing over 64-byte buckets of four slots,
//! the bucket's four full keys first (compared together, with no branch per slot) and then
//! their four entries (no separate control bytes on another page, as a general-purpose hash
//! map has). A key's home bucket comes from a multiplicative hash (the keys are 64-bit
//! integers, not attacker-chosen strings that need SipHash: a flood of chosen MACs is bounded
//! by the learning limits instead); a full bucket spills into the next one. The table is kept
//! at most half full, so a lookup almost always reads one cache line (and a MAC takes 32 to
//! 64 bytes: 32 MiB for 1M MACs), and a batch of lookups can ask for its lines ahead of need
//! so that the misses overlap ([`Lines::prefetch`]).

use gatekit_packet::PortId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for small integer keys (the ARP bindings): [`hash`] of each word.
#[derive(Default, Clone, Copy)]
pub(crate) struct MulHasher(u64);

impl Hasher for MulHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }
    #[inline]
    fn write_u64(&mut self, k: u64) {
        self.0 = hash(k ^ self.0);
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<MulHasher>>;

/// How a MAC entry came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Learned from a source address; ages out.
    Learned,
    /// Configured; never ages, never moves.
    Static,
}

/// One MAC table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacEntry {
    /// The port the address is behind.
    pub port: PortId,
    /// Learned or static.
    pub kind: EntryKind,
    /// When it was last seen as a source, in whole seconds of [`Instant`](gatekit_packet::Instant).
    pub last_seen_secs: u32,
}

/// The key of (domain index, MAC): the domain index in the low 16 bits, above it the MAC's
/// six bytes in the order of a little-endian word, as a frame's header has them (a frame's
/// address is one load and a shift away from its key).
#[inline]
pub(crate) fn key(domain: u16, mac: crate::MacAddr) -> u64 {
    let ([d0, d1], [m0, m1, m2, m3, m4, m5]) = (domain.to_le_bytes(), mac.0);
    u64::from_le_bytes([d0, d1, m0, m1, m2, m3, m4, m5])
}

/// The domain index of key `k`.
#[inline]
pub(crate) fn key_domain(k: u64) -> u16 {
    k as u16
}

/// The MAC of key `k`.
#[inline]
pub(crate) fn key_mac(k: u64) -> crate::MacAddr {
    let [_, _, m0, m1, m2, m3, m4, m5] = k.to_le_bytes();
    crate::MacAddr([m0, m1, m2, m3, m4, m5])
}

/// The hash of a table key: [`hash`] of its complement, the word a bucket holds for it (what
/// a lookup has at hand, see [`Lines::meta_of`]).
#[inline]
pub(crate) fn key_hash(k: u64) -> u64 {
    hash(!k)
}

/// A 64x64→128 multiply folded to 64 bits: every key bit reaches the low bits. The
/// multiplier is not the golden ratio's `0x9e37_79b9_7f4a_7c15`, from which generated MAC
/// sequences are often made (the bench's are): such keys, hashed by the same multiplier,
/// fill the buckets unevenly (6.8% of 1M such keys past their home bucket, against 3.2%
/// with this one; sequential, random or per-domain MACs put 0.8% to 4.1% there with either).
#[inline]
pub(crate) fn hash(k: u64) -> u64 {
    let m = u128::from(k) * 0xd6e8_feb8_6659_fd93u128;
    (m as u64) ^ ((m >> 64) as u64)
}

const EMPTY: u64 = 0;
/// A removed entry: lookups go on past it, inserts reuse it.
const TOMB: u64 = 1;
/// The state of a learned entry; a static one's is this plus one.
pub(crate) const LEARNED: u64 = 2;
const STATIC: u64 = LEARNED | 1;

const SLOTS: usize = 4;
/// Bytes of a bucket: one cache line.
const LINE: usize = 64;
/// A bucket: the four slots' key words, then their meta words (see [`Slot`]).
type Bucket = [u8; LINE];
const MIN_BUCKETS: usize = 4;
/// Tables from this size on ask for transparent huge pages: 2 MiB pages, so that the TLB
/// covers a 1M-entry table and a lookup is no TLB miss.
const HUGE: usize = 2 << 20;

/// A slot: the key, and a word holding state (bits 0..8), port (16..32) and the second the
/// address was last seen (32..64). A bucket stores the complement of each key (0 in a slot
/// without one), so that a key is found by comparing key words alone: no key is all ones (its
/// domain index would be `u16::MAX`, which no domain has), so no complement is 0. All zero is
/// an empty bucket, so fresh memory is an empty table.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u64,
    meta: u64,
}

impl Slot {
    fn new(key: u64, e: MacEntry) -> Self {
        Slot {
            key,
            meta: meta(state_of(e.kind), e.port, e.last_seen_secs),
        }
    }
    #[inline]
    fn state(&self) -> u64 {
        self.meta & 0xff
    }
    #[inline]
    fn entry(&self) -> MacEntry {
        entry_of(self.meta)
    }
    #[inline]
    fn live(&self) -> bool {
        self.state() >= LEARNED
    }
}

#[inline]
fn entry_of(meta: u64) -> MacEntry {
    MacEntry {
        port: PortId((meta >> 16) as u16),
        kind: if meta & 0xff == STATIC {
            EntryKind::Static
        } else {
            EntryKind::Learned
        },
        last_seen_secs: (meta >> 32) as u32,
    }
}

#[inline]
fn meta(state: u64, port: PortId, secs: u32) -> u64 {
    state | (u64::from(port.0) << 16) | (u64::from(secs) << 32)
}

fn state_of(kind: EntryKind) -> u64 {
    match kind {
        EntryKind::Learned => LEARNED,
        EntryKind::Static => STATIC,
    }
}

/// The eight words of a bucket.
#[inline]
fn words(b: &Bucket) -> [u64; 2 * SLOTS] {
    let (w, _) = b.as_chunks::<8>();
    core::array::from_fn(|i| u64::from_ne_bytes(w[i]))
}

/// The meta word of the slot whose key word is the word `want` holds twice, or 0 when there
/// is none (at most one slot holds a key), selected without a branch (where in its bucket a
/// key sits is random: a branch on it would be mispredicted): compares and masks the compiler
/// does two slots at a time in vector registers, `want` read as one of them.
#[inline(always)]
fn select(w: &[u64; 2 * SLOTS], want: &[u64; 2]) -> u64 {
    let mut hit = 0;
    for i in 0..SLOTS {
        hit |= w[SLOTS + i] & 0u64.wrapping_sub(u64::from(w[i] == want[i % 2]));
    }
    hit
}

/// The meta word of the key whose complement is `want` in one bucket (0 when absent), if a
/// lookup ends at this bucket: the key is in it, or it has an empty slot.
#[inline(always)]
fn scan(bucket: &Bucket, want: &[u64; 2]) -> Option<u64> {
    let w = words(bucket);
    let hit = select(&w, want);
    (hit != 0 || has_empty(&w)).then_some(hit)
}

/// Whether a bucket has an empty slot: a probe sequence ends there (slots only ever empty all
/// at once, in a rebuild, so no key lies past an empty slot).
#[inline(always)]
fn has_empty(w: &[u64; 2 * SLOTS]) -> bool {
    w[SLOTS..].iter().any(|m| m & 0xff == EMPTY)
}

/// Word `i` of a bucket, for writing.
#[inline]
fn word_mut(b: &mut Bucket, i: usize) -> &mut [u8; 8] {
    let (w, _) = b.as_chunks_mut::<8>();
    &mut w[i % (2 * SLOTS)]
}

#[inline]
fn set_word(b: &mut Bucket, i: usize, v: u64) {
    *word_mut(b, i) = v.to_ne_bytes();
}

/// The table's memory: zeroed 64-byte buckets. An anonymous mapping (page aligned, so each
/// bucket is one cache line; huge pages asked for when large), or the heap if mapping fails.
#[derive(Debug)]
enum Store {
    Map(memmap2::MmapMut),
    Heap(Box<[u8]>),
}

impl Store {
    fn zeroed(buckets: usize) -> Self {
        let bytes = buckets * LINE;
        if let Ok(m) = memmap2::MmapMut::map_anon(bytes) {
            #[cfg(target_os = "linux")]
            if bytes >= HUGE {
                // A hint: without THP the table works the same, only slower.
                let _ = m.advise(memmap2::Advice::HugePage);
            }
            if m.len() == bytes {
                return Store::Map(m);
            }
        }
        Store::Heap(vec![0; bytes].into_boxed_slice())
    }
    #[inline]
    fn buckets(&self) -> &[Bucket] {
        let bytes: &[u8] = match self {
            Store::Map(m) => m,
            Store::Heap(h) => h,
        };
        bytes.as_chunks().0
    }
    #[inline]
    fn buckets_mut(&mut self) -> &mut [Bucket] {
        let bytes: &mut [u8] = match self {
            Store::Map(m) => m,
            Store::Heap(h) => h,
        };
        bytes.as_chunks_mut().0
    }
}

/// Where a key's slot is: its bucket and its slot in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRef {
    bucket: usize,
    slot: usize,
}

/// A live entry, with in-place access to what learning updates.
pub(crate) struct EntryMut<'a>(&'a mut [u8; 8]);

impl EntryMut<'_> {
    #[inline]
    fn get(&self) -> u64 {
        u64::from_ne_bytes(*self.0)
    }
    #[inline]
    pub(crate) fn port(&self) -> PortId {
        PortId((self.get() >> 16) as u16)
    }
    #[inline]
    pub(crate) fn is_static(&self) -> bool {
        self.get() & 0xff == STATIC
    }
    /// Marks the entry seen at `secs`, writing only if that changes it (most frames come
    /// within the second of the last one: the line stays clean).
    #[inline]
    pub(crate) fn touch_secs(&mut self, secs: u32) {
        let old = self.get();
        let m = (old & 0xffff_ffff) | (u64::from(secs) << 32);
        if old != m {
            *self.0 = m.to_ne_bytes();
        }
    }
    #[inline]
    pub(crate) fn set_port(&mut self, port: PortId) {
        let m = (self.get() & !0xffff_0000) | (u64::from(port.0) << 16);
        *self.0 = m.to_ne_bytes();
    }
}

/// The buckets of a table, read by the forwarding fast path: their number is a power of
/// two, so that a home bucket's index is a hash masked by the number less one, in range
/// whenever there is a bucket (a batch checks [`is_empty`](Self::is_empty) once, and its
/// lookups need no index check of their own).
#[derive(Clone, Copy)]
pub(crate) struct Lines<'a>(&'a [Bucket]);

impl Lines<'_> {
    /// Whether there are no buckets (never, in a table: a check that lets a batch's
    /// lookups go without one).
    #[inline(always)]
    pub(crate) fn is_empty(self) -> bool {
        self.0.is_empty()
    }

    /// The home bucket of a key hashed to `h`.
    #[inline(always)]
    fn home(self, h: u64) -> usize {
        h as usize & self.0.len().wrapping_sub(1)
    }

    /// Asks the memory system for the home bucket's line of the key hashed to `h`, without
    /// waiting for it: a batch starts the memory accesses of its next lookups while it works
    /// on the ones before.
    #[inline(always)]
    pub(crate) fn prefetch(self, h: u64) {
        prefetch_index::prefetch_index(self.0, self.home(h));
    }

    /// The meta word of the key whose complement `want` holds twice (what a bucket holds for
    /// it, as a pair of slots is compared), hashed to `h`: 0 when the key is absent (a live
    /// slot's word is never 0). The forwarding fast path reads only this: the home bucket
    /// inline, the rare rest of the probe sequence out of line.
    #[inline(always)]
    pub(crate) fn meta_of(self, want: &[u64; 2], h: u64) -> u64 {
        let b = self.home(h);
        match self.0.get(b).map(|bucket| scan(bucket, want)) {
            Some(Some(hit)) => hit,
            Some(None) => self.probe(want[0], b),
            None => 0,
        }
    }

    /// [`meta_of`](Self::meta_of) past a full home bucket `home`.
    #[cold]
    #[inline(never)]
    fn probe(self, want: u64, home: usize) -> u64 {
        let mut b = home;
        // Half full at most: there is always an empty slot, so this ends.
        loop {
            b = (b + 1) & self.0.len().wrapping_sub(1);
            let Some(bucket) = self.0.get(b) else {
                return 0;
            };
            if let Some(hit) = scan(bucket, &[want; 2]) {
                return hit;
            }
        }
    }
}

/// The MAC table.
#[derive(Debug)]
pub(crate) struct MacTable {
    store: Store,
    /// Number of buckets - 1 (a power of two minus one).
    mask: usize,
    len: usize,
    tombs: usize,
}

impl Default for MacTable {
    fn default() -> Self {
        Self::with_buckets(MIN_BUCKETS)
    }
}

impl MacTable {
    fn with_buckets(n: usize) -> Self {
        let n = n.max(MIN_BUCKETS).next_power_of_two();
        MacTable {
            store: Store::zeroed(n),
            mask: n - 1,
            len: 0,
            tombs: 0,
        }
    }

    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn buckets(&self) -> usize {
        self.mask + 1
    }

    /// Most live entries plus tombstones before the table grows or is rebuilt: half the slots.
    fn limit(&self) -> usize {
        self.buckets() * SLOTS / 2
    }

    /// Makes room for `n` more entries without rebuilding.
    pub(crate) fn reserve(&mut self, n: usize) {
        let want = self.len.saturating_add(n);
        if want.saturating_add(self.tombs) > self.limit() {
            self.rebuild(want);
        }
    }

    /// Rebuilds the table with room for `n` entries, dropping the tombstones.
    fn rebuild(&mut self, n: usize) {
        self.rehash(n.saturating_mul(2).div_ceil(SLOTS));
    }

    /// Every live slot.
    fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.store
            .buckets()
            .iter()
            .flat_map(|b| {
                let w = words(b);
                (0..SLOTS).map(move |i| Slot {
                    key: !w[i],
                    meta: w[SLOTS + i],
                })
            })
            .filter(Slot::live)
    }

    /// Moves the live entries into a fresh table of `buckets` buckets.
    fn rehash(&mut self, buckets: usize) {
        let old = core::mem::replace(self, Self::with_buckets(buckets));
        for s in old.slots() {
            self.place(s);
        }
    }

    /// Puts a slot of a key known to be absent in the first free place of its probe sequence.
    fn place(&mut self, s: Slot) {
        debug_assert_ne!(s.key, u64::MAX, "no domain has index u16::MAX");
        let mut b = self.home(key_hash(s.key));
        let mask = self.mask;
        let buckets = self.store.buckets_mut();
        loop {
            let Some(bucket) = buckets.get_mut(b) else {
                return;
            };
            let w = words(bucket);
            if let Some(free) = (0..SLOTS).find(|&i| w[SLOTS + i] & 0xff < LEARNED) {
                if w[SLOTS + free] & 0xff == TOMB {
                    self.tombs -= 1;
                }
                set_word(bucket, free, !s.key);
                set_word(bucket, SLOTS + free, s.meta);
                self.len += 1;
                return;
            }
            b = (b + 1) & mask;
        }
    }

    /// The home bucket of a key hashed to `h`.
    #[inline]
    fn home(&self, h: u64) -> usize {
        h as usize & self.mask
    }

    /// The buckets, for the lookups of a batch.
    #[inline(always)]
    pub(crate) fn lines(&self) -> Lines<'_> {
        let buckets = self.store.buckets();
        debug_assert_eq!(buckets.len(), self.mask + 1);
        Lines(buckets)
    }

    /// Finds `k`, hashed to `h`, and returns where it is with its meta word.
    #[inline]
    fn find(&self, k: u64, h: u64) -> Option<(SlotRef, u64)> {
        let mut b = self.home(h);
        let buckets = self.store.buckets();
        let want = !k;
        // Half full at most: there is always an empty slot, so this ends.
        loop {
            let w = words(buckets.get(b)?);
            // The four keys compared at once, without a branch per slot (where in its
            // bucket a key sits is random: a branch on it would be mispredicted). A slot
            // without a key holds 0, which no key's complement is.
            let mut hit = 0u32;
            for (i, &kw) in w[..SLOTS].iter().enumerate() {
                hit |= u32::from(kw == want) << i;
            }
            if hit != 0 {
                let slot = hit.trailing_zeros() as usize % SLOTS;
                return Some((SlotRef { bucket: b, slot }, w[SLOTS + slot]));
            }
            // No empty slot comes before a key in its probe sequence (slots only ever empty
            // all at once, in a rebuild): an empty slot ends the search.
            if w[SLOTS..].iter().any(|m| m & 0xff == EMPTY) {
                return None;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// The meta word of `k`, hashed to `h`: 0 when the key is absent.
    #[inline]
    pub(crate) fn meta_h(&self, k: u64, h: u64) -> u64 {
        self.lines().meta_of(&[!k; 2], h)
    }

    /// The entry for `k`, hashed to `h`.
    #[inline]
    pub(crate) fn get_h(&self, k: u64, h: u64) -> Option<MacEntry> {
        self.find(k, h).map(|(_, meta)| entry_of(meta))
    }

    /// The port behind `k`, hashed to `h`.
    #[inline]
    pub(crate) fn port_h(&self, k: u64, h: u64) -> Option<PortId> {
        let meta = self.meta_h(k, h);
        (meta != 0).then_some(PortId((meta >> 16) as u16))
    }

    /// The entry for `k`.
    pub(crate) fn get(&self, k: u64) -> Option<MacEntry> {
        self.get_h(k, key_hash(k))
    }

    /// In-place access to the entry for `k`, hashed to `h`.
    #[inline]
    pub(crate) fn get_mut_h(&mut self, k: u64, h: u64) -> Option<EntryMut<'_>> {
        let (r, _) = self.find(k, h)?;
        let bucket = self.store.buckets_mut().get_mut(r.bucket)?;
        Some(EntryMut(word_mut(bucket, SLOTS + r.slot)))
    }

    /// Inserts a key known to be absent (hashed to `h`).
    #[inline]
    pub(crate) fn insert_new_h(&mut self, k: u64, h: u64, e: MacEntry) {
        if self.len + self.tombs >= self.limit() {
            self.rebuild((self.len + 1).max(self.len.saturating_mul(2)));
        }
        debug_assert_eq!(key_hash(k), h);
        self.place(Slot::new(k, e));
    }

    /// Inserts or replaces the entry for `k`; returns the old one.
    pub(crate) fn insert(&mut self, k: u64, e: MacEntry) -> Option<MacEntry> {
        let h = key_hash(k);
        if let Some((r, old)) = self.find(k, h)
            && let Some(bucket) = self.store.buckets_mut().get_mut(r.bucket)
        {
            set_word(bucket, SLOTS + r.slot, Slot::new(k, e).meta);
            return Some(entry_of(old));
        }
        self.insert_new_h(k, h, e);
        None
    }

    /// Keeps the entries for which `f` says so.
    pub(crate) fn retain(&mut self, mut f: impl FnMut(u64, &MacEntry) -> bool) {
        let mut removed = 0;
        for bucket in self.store.buckets_mut() {
            let w = words(bucket);
            for i in 0..SLOTS {
                let s = Slot {
                    key: !w[i],
                    meta: w[SLOTS + i],
                };
                if s.live() && !f(s.key, &s.entry()) {
                    set_word(bucket, i, 0);
                    set_word(bucket, SLOTS + i, TOMB);
                    removed += 1;
                }
            }
        }
        self.len -= removed;
        self.tombs += removed;
        // A bucket whose slots are all tombstones or live makes lookups go on; when many
        // went, start afresh (keeping the capacity for the entries to come back).
        if removed > 0 && self.tombs > self.limit() / 4 {
            self.rehash(self.buckets());
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, MacEntry)> + '_ {
        self.slots().map(|s| (s.key, s.entry()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn e(port: u16, secs: u32) -> MacEntry {
        MacEntry {
            port: PortId(port),
            kind: EntryKind::Learned,
            last_seen_secs: secs,
        }
    }

    #[test]
    fn behaves_like_a_map() {
        let mut t = MacTable::default();
        let mut m = HashMap::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        for round in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct keys (collisions and reuse), zero and high-domain keys included.
            let k = match x % 7 {
                0 => 0,
                1 => 0xffff << 48 | (x >> 40),
                _ => x % 3000,
            };
            match (x >> 20) % 5 {
                0 | 1 => assert_eq!(
                    t.insert(k, e(round as u16, round)),
                    m.insert(k, e(round as u16, round))
                ),
                2 => {
                    let keep = !(x >> 30).is_multiple_of(3);
                    t.retain(|k2, _| keep || k2.is_multiple_of(2));
                    m.retain(|k2, _| keep || k2.is_multiple_of(2));
                }
                _ => assert_eq!(t.get(k), m.get(&k).copied()),
            }
            assert_eq!(t.len(), m.len());
        }
        let mut all: Vec<_> = t.iter().collect();
        all.sort_by_key(|(k, _)| *k);
        let mut want: Vec<_> = m.into_iter().collect();
        want.sort_by_key(|(k, _)| *k);
        assert_eq!(all, want);
        t.reserve(100_000);
        assert_eq!(t.len(), want.len());
        for (k, v) in want {
            assert_eq!(t.get(k), Some(v));
        }
    }
}
