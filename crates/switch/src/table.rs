//! The MAC table: (bridge domain, MAC) → port.
//!
//! A lookup of a 1M-entry table is a cache miss, often a TLB miss too, so the table is laid
//! out for one memory access per lookup: open addressing over 64-byte buckets of four 16-byte
//! slots, each slot holding its full key and its entry (no separate control bytes on another
//! page, as a general-purpose hash map has). A key's home bucket comes from a multiplicative
//! hash (the keys are 64-bit integers, not attacker-chosen strings that need SipHash: a flood
//! of chosen MACs is bounded by the learning limits instead); a full bucket spills into the
//! next one. The table is kept at most half full, so a lookup almost always reads one cache
//! line, and a batch of lookups can touch all their lines first to overlap the misses
//! ([`MacTable::touch`]).

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

/// The key of (domain index, MAC).
#[inline]
pub(crate) fn key(domain: u16, mac: crate::MacAddr) -> u64 {
    (u64::from(domain) << 48) | mac.to_u64()
}

/// A 64x64→128 multiply folded to 64 bits: every key bit reaches the low bits.
#[inline]
pub(crate) fn hash(k: u64) -> u64 {
    let m = u128::from(k) * 0x9e37_79b9_7f4a_7c15u128;
    (m as u64) ^ ((m >> 64) as u64)
}

const EMPTY: u64 = 0;
/// A removed entry: lookups go on past it, inserts reuse it.
const TOMB: u64 = 1;
const LEARNED: u64 = 2;
const STATIC: u64 = 3;

const SLOTS: usize = 4;
/// Words of a bucket: a key and a word of port, kind and time per slot.
const WORDS: usize = 2 * SLOTS;
const MIN_BUCKETS: usize = 4;
/// Tables from this size on ask for transparent huge pages: 2 MiB pages, so that the TLB
/// covers a 1M-entry table and a lookup is no TLB miss.
const HUGE: usize = 2 << 20;

/// A slot: the key, and a word holding state (bits 0..8), port (16..32) and the second the
/// address was last seen (32..64). All zero is an empty slot, so fresh memory is an empty table.
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
        MacEntry {
            port: PortId((self.meta >> 16) as u16),
            kind: if self.state() == STATIC {
                EntryKind::Static
            } else {
                EntryKind::Learned
            },
            last_seen_secs: (self.meta >> 32) as u32,
        }
    }
    #[inline]
    fn live(&self) -> bool {
        self.state() >= LEARNED
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

/// The table's memory: zeroed words, each bucket one 64-byte line. An anonymous mapping (page
/// aligned, so are the buckets; huge pages asked for when large), or the heap if mapping
/// fails.
#[derive(Debug)]
enum Store {
    Map(memmap2::MmapMut),
    Heap(Box<[u64]>),
}

impl Store {
    fn zeroed(words: usize) -> Self {
        let bytes = words * 8;
        if let Ok(m) = memmap2::MmapMut::map_anon(bytes) {
            #[cfg(target_os = "linux")]
            if bytes >= HUGE {
                // A hint: without THP the table works the same, only slower.
                let _ = m.advise(memmap2::Advice::HugePage);
            }
            if bytemuck::try_cast_slice::<u8, u64>(&m).is_ok_and(|w| w.len() == words) {
                return Store::Map(m);
            }
        }
        Store::Heap(vec![0; words].into_boxed_slice())
    }
    #[inline]
    fn words(&self) -> &[u64] {
        match self {
            Store::Map(m) => bytemuck::try_cast_slice(m).unwrap_or(&[]),
            Store::Heap(h) => h,
        }
    }
    #[inline]
    fn words_mut(&mut self) -> &mut [u64] {
        match self {
            Store::Map(m) => bytemuck::try_cast_slice_mut(m).unwrap_or(&mut []),
            Store::Heap(h) => h,
        }
    }
}

/// Where a key's slot is: the index of its key word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRef(usize);

/// A live entry, with in-place access to what learning updates.
pub(crate) struct EntryMut<'a>(&'a mut u64);

impl EntryMut<'_> {
    #[inline]
    pub(crate) fn port(&self) -> PortId {
        PortId((*self.0 >> 16) as u16)
    }
    #[inline]
    pub(crate) fn is_static(&self) -> bool {
        *self.0 & 0xff == STATIC
    }
    /// Marks the entry seen at `secs`, writing only if that changes it (most frames come
    /// within the second of the last one: the line stays clean).
    #[inline]
    pub(crate) fn touch_secs(&mut self, secs: u32) {
        let m = (*self.0 & 0xffff_ffff) | (u64::from(secs) << 32);
        if *self.0 != m {
            *self.0 = m;
        }
    }
    #[inline]
    pub(crate) fn set_port(&mut self, port: PortId) {
        *self.0 = (*self.0 & !0xffff_0000) | (u64::from(port.0) << 16);
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
            store: Store::zeroed(n * WORDS),
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
            .words()
            .chunks_exact(2)
            .map(|w| Slot {
                key: w[0],
                meta: w[1],
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
        let mut b = self.home(hash(s.key));
        let mask = self.mask;
        let words = self.store.words_mut();
        loop {
            let Some(bucket) = words.get_mut(b * WORDS..(b + 1) * WORDS) else {
                return;
            };
            if let Some(free) = bucket.chunks_exact_mut(2).find(|w| w[1] & 0xff < LEARNED) {
                if free[1] & 0xff == TOMB {
                    self.tombs -= 1;
                }
                free[0] = s.key;
                free[1] = s.meta;
                self.len += 1;
                return;
            }
            b = (b + 1) & mask;
        }
    }

    /// The home bucket of a key hashed to `h`.
    #[inline]
    pub(crate) fn home(&self, h: u64) -> usize {
        h as usize & self.mask
    }

    /// Reads the home bucket's line and returns a word of it, so that a batch can start the
    /// memory accesses of several lookups before it needs any of them.
    #[inline]
    pub(crate) fn touch(&self, h: u64) -> u64 {
        self.store
            .words()
            .get(self.home(h) * WORDS)
            .copied()
            .unwrap_or(0)
    }

    /// Finds `k`, hashed to `h`.
    #[inline]
    pub(crate) fn find(&self, k: u64, h: u64) -> Option<SlotRef> {
        let mut b = self.home(h);
        let words = self.store.words();
        // Half full at most: there is always an empty slot, so this ends.
        loop {
            let bucket: &[u64; WORDS] = words.get(b * WORDS..(b + 1) * WORDS)?.try_into().ok()?;
            // The four slots compared at once, without a branch per slot (where in its
            // bucket a key sits is random: a branch on it would be mispredicted). No empty
            // slot comes before a key in its probe sequence (slots only ever empty all at
            // once, in a rebuild), so a match anywhere in the bucket is the key.
            let (mut hit, mut empty) = (0u32, 0u32);
            for i in 0..SLOTS {
                let state = bucket[2 * i + 1] & 0xff;
                hit |= u32::from(bucket[2 * i] == k && state >= LEARNED) << i;
                empty |= u32::from(state == EMPTY) << i;
            }
            if hit != 0 {
                return Some(SlotRef(b * WORDS + 2 * hit.trailing_zeros() as usize));
            }
            if empty != 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// The entry for `k`, hashed to `h`.
    #[inline]
    pub(crate) fn get_h(&self, k: u64, h: u64) -> Option<MacEntry> {
        let r = self.find(k, h)?;
        let meta = *self.store.words().get(r.0 + 1)?;
        Some(Slot { key: k, meta }.entry())
    }

    /// The entry for `k`.
    pub(crate) fn get(&self, k: u64) -> Option<MacEntry> {
        self.get_h(k, hash(k))
    }

    /// In-place access to the entry for `k`, hashed to `h`.
    #[inline]
    pub(crate) fn get_mut_h(&mut self, k: u64, h: u64) -> Option<EntryMut<'_>> {
        let r = self.find(k, h)?;
        self.store.words_mut().get_mut(r.0 + 1).map(EntryMut)
    }

    /// Inserts a key known to be absent (hashed to `h`).
    #[inline]
    pub(crate) fn insert_new_h(&mut self, k: u64, h: u64, e: MacEntry) {
        if self.len + self.tombs >= self.limit() {
            self.rebuild((self.len + 1).max(self.len.saturating_mul(2)));
        }
        debug_assert_eq!(hash(k), h);
        self.place(Slot::new(k, e));
    }

    /// Inserts or replaces the entry for `k`; returns the old one.
    pub(crate) fn insert(&mut self, k: u64, e: MacEntry) -> Option<MacEntry> {
        let h = hash(k);
        if let Some(r) = self.find(k, h)
            && let Some(m) = self.store.words_mut().get_mut(r.0 + 1)
        {
            let old = Slot { key: k, meta: *m }.entry();
            *m = Slot::new(k, e).meta;
            return Some(old);
        }
        self.insert_new_h(k, h, e);
        None
    }

    /// Keeps the entries for which `f` says so.
    pub(crate) fn retain(&mut self, mut f: impl FnMut(u64, &MacEntry) -> bool) {
        let mut removed = 0;
        for w in self.store.words_mut().chunks_exact_mut(2) {
            let s = Slot {
                key: w[0],
                meta: w[1],
            };
            if s.live() && !f(s.key, &s.entry()) {
                w[1] = TOMB;
                removed += 1;
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
