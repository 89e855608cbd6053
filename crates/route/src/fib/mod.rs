//! The forwarding table: prefix → next-hop id, compiled for lookups and published atomically.

mod poptrie;

use crate::addr::{Address, Word, mask};
use crate::lpm::Lpm;
use arc_swap::ArcSwap;
use poptrie::{Entry, FreeRanges, LEAF, Leaf, NONE, PatchLog, Poptrie, Trie, each};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A fast hash for the prefixes of one batch (not exposed to untrusted keys for long: a
/// map lives for one slot of one batch).
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(26) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
}

type Mix = BuildHasherDefault<MixHasher>;

/// The real changes of a batch to one slot, by prefix: the next hop before the batch and now.
type Pending = HashMap<(u128, u8), (Option<NextHopId>, Option<NextHopId>), Mix>;

/// The changes of a batch to one prefix, which apply as their last one: the next hop the
/// first sets (none for a removal), and how many of the others change the one before.
#[derive(Clone, Copy, Debug)]
struct Sequence {
    first: Option<NextHopId>,
    inner: u32,
}

/// How many changes of the sequence of change `i` change a route, when the prefix's next
/// hop before them is `before`.
fn counted(seq: &[Sequence], i: usize, before: Option<NextHopId>) -> usize {
    seq.get(i)
        .map_or(0, |q| usize::from(before != q.first) + q.inner as usize)
}

/// The next hop a change leaves its prefix with.
fn value_of<P>(c: &Change<P>) -> Option<NextHopId> {
    match *c {
        Change::Insert(_, nh) => Some(nh),
        Change::Remove(_) => None,
    }
}

/// The id of a next hop (or of an ECMP group) as the FIB stores it: an index into the
/// caller's own table of adjacencies. At most [`MAX_NEXT_HOP`].
pub type NextHopId = u32;

/// The largest next-hop id a [`Fib`] stores (ids are 31-bit).
pub const MAX_NEXT_HOP: NextHopId = NONE - 1;

/// A FIB operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FibError {
    /// The next-hop id does not fit the table's 31-bit leaves.
    #[error("next-hop id {id} is larger than the maximum {max}", max = MAX_NEXT_HOP)]
    NextHopTooLarge {
        /// The id that was given.
        id: NextHopId,
    },
}

/// One change of a batch for [`Fib::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change<P> {
    /// Set the next hop of a prefix (as [`Fib::insert`]).
    Insert(P, NextHopId),
    /// Remove a prefix (as [`Fib::remove`]).
    Remove(P),
}

/// The index bits of an entry of [`Fib::sequences`]'s table.
const INDEX: u32 = (1 << 20) - 1;

/// A batch merges its changes into a slot's list (instead of inserting them one by one)
/// when the list is longer than this.
const MERGE_MIN: usize = 64;

/// Sorts `v` by the `bits` bits above its low 32, stably (a least-significant-digit radix
/// sort): the low 32 bits, an index in increasing order, keep their order within a key.
fn radix_sort(v: &mut Vec<u64>, bits: u32) {
    const DIGIT: u32 = 9;
    if v.len() < 256 {
        v.sort_unstable();
        return;
    }
    let mut tmp = vec![0u64; v.len()];
    let mut shift = 32;
    while shift < 32 + bits {
        let mut count = [0usize; 1 << DIGIT];
        let digit = |x: u64| (x >> shift) as usize & ((1 << DIGIT) - 1);
        for &x in v.iter() {
            count[digit(x)] += 1;
        }
        let mut sum = 0;
        for c in &mut count {
            let n = *c;
            *c = sum;
            sum += n;
        }
        for &x in v.iter() {
            let d = &mut count[digit(x)];
            if let Some(t) = tmp.get_mut(*d) {
                *t = x;
            }
            *d += 1;
        }
        core::mem::swap(v, &mut tmp);
        shift += DIGIT;
    }
}

/// Lookups [`lower_bounds`] advances together.
const SEARCH_LANES: usize = 16;

/// Where the route (`key`, `len`) is in a slot's list, sorted by (key, length): its index,
/// or where it would go.
fn search<W: Word>(list: &[Entry<W>], key: u128, len: u8) -> Result<usize, usize> {
    list.binary_search_by(|e| (e.0.to_key(), e.1).cmp(&(key, len)))
}

/// For each lane `j`, the index in `lists[j]` (sorted by (key, length)) of the first entry
/// not below `keys[j]`. The binary searches advance in lockstep, one step of every lane at a
/// time without a branch per lane, so that their cache misses overlap instead of each
/// search waiting for its own chain of loads.
fn lower_bounds<W: Word>(lists: &[&[Entry<W>]], keys: &[(u128, u8)], out: &mut [usize]) {
    let n = lists.len().min(keys.len()).min(out.len()).min(SEARCH_LANES);
    // (key, length) below `k`, as the borrow of a subtraction: no branch to mispredict.
    let below = |e: Option<&Entry<W>>, k: (u128, u8)| {
        let (ek, el) = e.map_or((u128::MAX, u8::MAX), |e| (e.0.to_key(), e.1));
        let (t, b1) = ek.overflowing_sub(k.0);
        let (_, b2) = t.overflowing_sub(u128::from(el < k.1));
        usize::from(b1 | b2)
    };
    let mut base = [0usize; SEARCH_LANES];
    let mut size = [0usize; SEARCH_LANES];
    let mut max = 0;
    for j in 0..n {
        size[j] = lists[j].len();
        max = max.max(size[j]);
    }
    while max > 1 {
        max -= max / 2;
        for j in 0..n {
            let half = size[j] / 2;
            // `mid` is inside the list while `size` > 1; a lane that is done adds nothing.
            let go = below(lists[j].get(base[j] + half), keys[j]);
            base[j] += half & go.wrapping_neg();
            size[j] -= half;
        }
    }
    for j in 0..n {
        out[j] = base[j] + below(lists[j].get(base[j]), keys[j]);
    }
}

/// A compiled, immutable forwarding table for one family: what the data path looks up.
///
/// Get one from [`Fib::table`] or a [`FibReader`]; it never changes, so any number of threads
/// may look up in it while the [`Fib`] that made it prepares the next one.
#[derive(Clone, Debug)]
pub struct FibTable<A: Address> {
    trie: Trie,
    routes: usize,
    _family: core::marker::PhantomData<A>,
}

impl<A: Address> FibTable<A> {
    /// The next hop of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: A) -> Option<NextHopId> {
        let nh = each!(&self.trie, t => t.lookup(addr.to_word()));
        (nh != NONE).then_some(nh)
    }

    /// Looks up every address of `addrs`, writing each next hop to the same index of `out`
    /// (or [`FibTable::NO_ROUTE`]). Groups of addresses are advanced level by level together,
    /// so their cache misses overlap; one call per batch also saves the table dispatch per
    /// address.
    /// Only `min(addrs.len(), out.len())` addresses are looked up.
    #[inline]
    pub fn lookup_batch(&self, addrs: &[A], out: &mut [NextHopId]) {
        let n = addrs.len().min(out.len());
        each!(&self.trie, t => t.lookup_batch(&addrs[..n], &mut out[..n]));
    }

    /// The value [`lookup_batch`](Self::lookup_batch) writes for an address without a route.
    pub const NO_ROUTE: NextHopId = NONE;

    /// Bytes of memory the lookup arrays use.
    pub fn memory(&self) -> usize {
        each!(&self.trie, t => t.memory())
    }

    /// The sizes of the lookup arrays.
    pub fn shape(&self) -> TableShape {
        each!(&self.trie, t => TableShape {
            direct: t.direct.len(),
            nodes: t.nodes.len(),
            leaves: t.leaves.len(),
            leaf_bytes: core::mem::size_of_val(&t.leaves[..]) / t.leaves.len().max(1),
        })
    }

    /// Number of prefixes the table was compiled from.
    pub fn len(&self) -> usize {
        self.routes
    }

    /// True if the table has no route at all.
    pub fn is_empty(&self) -> bool {
        self.routes == 0
    }
}

/// The sizes of a [`FibTable`]'s arrays (garbage from partial rebuilds included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableShape {
    /// Entries of the direct array.
    pub direct: usize,
    /// 64-ary nodes.
    pub nodes: usize,
    /// Stored leaves (and inline leaf maps of compact nodes).
    pub leaves: usize,
    /// Bytes per leaf: 2 when every next hop is below 65535, else 4.
    pub leaf_bytes: usize,
}

/// A handle that readers (data-path workers) keep to load the latest [`FibTable`].
/// Loading is wait-free and never blocks the writer.
#[derive(Clone, Debug)]
pub struct FibReader<A: Address> {
    shared: Arc<ArcSwap<FibTable<A>>>,
}

impl<A: Address> FibReader<A> {
    /// The table published last. Hold it for a batch, then load again.
    pub fn load(&self) -> Arc<FibTable<A>> {
        self.shared.load_full()
    }
}

/// What a [`Fib::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    /// Direct slots whose subtree was rebuilt.
    pub slots_rebuilt: usize,
    /// Whether the whole table was rebuilt (first build, many changes, or to reclaim garbage).
    pub full_rebuild: bool,
    /// Bytes of the published table.
    pub memory: usize,
}

/// The writable forwarding table for one family: prefix → [`NextHopId`].
///
/// Changes ([`insert`](Self::insert), [`remove`](Self::remove)) go to the writer's own copy of
/// the routes and mark the parts of the compiled table they touch; [`commit`](Self::commit)
/// recompiles only those parts into a new [`FibTable`] and publishes it with an atomic pointer
/// swap. Readers keep using the table they loaded until they load again, so an update never
/// stalls or half-applies for them. Batch many changes per commit: a commit has a fixed
/// cost besides its changes (it copies the compiled arrays, a few MiB for a full IPv4
/// table, or only what the commit before changed when no reader holds the table before
/// the current one).
///
/// The compiled form is a Poptrie: an `2^18`-entry direct array followed by 64-ary nodes
/// with popcount-compressed children and leaves.
///
/// ```
/// use gatekit_route::Fib;
/// use std::net::Ipv4Addr;
///
/// let mut fib = Fib::<Ipv4Addr>::new();
/// fib.insert("0.0.0.0/0".parse()?, 1)?;
/// fib.insert("192.0.2.0/24".parse()?, 2)?;
/// fib.commit();
/// let reader = fib.reader();            // give clones of this to workers
/// let table = reader.load();
/// assert_eq!(table.lookup(Ipv4Addr::new(192, 0, 2, 9)), Some(2));
/// let mut out = [0; 2];
/// table.lookup_batch(&[Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(192, 0, 2, 1)], &mut out);
/// assert_eq!(out, [1, 2]);
///
/// fib.remove(&"0.0.0.0/0".parse()?);
/// fib.commit();
/// assert_eq!(reader.load().lookup(Ipv4Addr::new(8, 8, 8, 8)), None);
/// assert_eq!(table.lookup(Ipv4Addr::new(8, 8, 8, 8)), Some(1), "old snapshot unchanged");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Fib<A: Address> {
    /// Prefixes of at most `DIRECT_BITS` bits: they set the defaults of direct slots.
    short: Lpm<A, NextHopId>,
    /// Longer prefixes, per direct slot (indexed by slot), sorted by (key, length).
    long: Vec<Vec<Entry<A::Word>>>,
    long_count: usize,
    dirty: Vec<u32>,
    dirty_mark: Vec<u64>,
    /// Full nodes below the direct array whose subtree is to be rebuilt, as (key, depth):
    /// a change to a long prefix rebuilds only the deepest existing node above it, not its
    /// whole slot (an IPv6 slot can hold tens of thousands of prefixes).
    dirty_units: Vec<(u128, u32)>,
    full_pending: bool,
    /// The largest next hop ever inserted (it decides the leaf width).
    max_nh: NextHopId,
    /// The table [`apply`](Self::apply) finds the repeated prefixes of a batch with, kept
    /// between batches for its memory.
    seen: Vec<u32>,
    /// Slots of the current table that are no longer referenced (nodes, leaves).
    garbage: (usize, usize),
    /// The leaf ranges of the current table's garbage that rebuilt slots can reuse.
    free: FreeRanges,
    table: Arc<FibTable<A>>,
    /// The arrays of the table before the current one, when no reader held it any more as
    /// it was replaced: the next commit copies the current table into them instead of into
    /// fresh memory.
    spare: Option<Trie>,
    /// What the commit that made the current table changed in place in a copy of the one
    /// before (none after a full build): bringing `spare` up to date copies only that and
    /// what it appended.
    log: Option<PatchLog>,
    shared: Arc<ArcSwap<FibTable<A>>>,
}

impl<A: Address> core::fmt::Debug for Fib<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Fib")
            .field("routes", &self.len())
            .field("pending_slots", &self.dirty.len())
            .field("memory", &self.table.memory())
            .finish()
    }
}

/// A clone has the same routes and pending changes, and publishes to its own readers.
impl<A: Address> Clone for Fib<A> {
    fn clone(&self) -> Self {
        Fib {
            short: self.short.clone(),
            long: self.long.clone(),
            long_count: self.long_count,
            dirty: self.dirty.clone(),
            dirty_mark: self.dirty_mark.clone(),
            dirty_units: self.dirty_units.clone(),
            full_pending: self.full_pending,
            max_nh: self.max_nh,
            seen: Vec::new(),
            garbage: self.garbage,
            free: self.free.clone(),
            table: self.table.clone(),
            spare: None,
            log: None,
            shared: Arc::new(ArcSwap::new(self.table.clone())),
        }
    }
}

impl<A: Address> Default for Fib<A> {
    fn default() -> Self {
        Self::new()
    }
}

const fn s_of<A: Address>() -> u32 {
    A::DIRECT_BITS as u32
}

impl<A: Address> Fib<A> {
    /// An empty table (already published: lookups find no route).
    pub fn new() -> Self {
        let s = s_of::<A>();
        let table = Arc::new(FibTable {
            trie: Trie::new(s, 0),
            routes: 0,
            _family: core::marker::PhantomData,
        });
        Fib {
            short: Lpm::new(),
            long: vec![Vec::new(); 1 << s],
            long_count: 0,
            dirty: Vec::new(),
            dirty_mark: vec![0; (1 << s) / 64],
            dirty_units: Vec::new(),
            full_pending: false,
            max_nh: 0,
            seen: Vec::new(),
            garbage: (0, 0),
            free: FreeRanges::default(),
            shared: Arc::new(ArcSwap::new(table.clone())),
            table,
            spare: None,
            log: None,
        }
    }

    /// Builds a table from `(prefix, next hop)` pairs and publishes it.
    pub fn from_routes(
        routes: impl IntoIterator<Item = (A::Prefix, NextHopId)>,
    ) -> Result<Self, FibError> {
        let mut fib = Self::new();
        for (p, nh) in routes {
            fib.insert(p, nh)?;
        }
        fib.commit();
        Ok(fib)
    }

    /// Number of prefixes (committed or not).
    pub fn len(&self) -> usize {
        self.short.len() + self.long_count
    }

    /// True if the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A commit that touches more direct slots than this rebuilds the whole table: past that
    /// point a full build is cheaper than copying and patching.
    fn full_threshold() -> usize {
        (1usize << s_of::<A>()) / 8
    }

    fn slot_of(key: u128) -> usize {
        (key >> (128 - s_of::<A>())) as usize
    }

    fn mark(&mut self, slot: usize) {
        let (w, b) = (slot / 64, 1u64 << (slot % 64));
        if let Some(m) = self.dirty_mark.get_mut(w)
            && *m & b == 0
        {
            *m |= b;
            self.dirty.push(slot as u32);
        }
    }

    fn mark_range(&mut self, key: u128, len: u8) {
        let s = s_of::<A>();
        let first = Self::slot_of(key);
        let count = 1usize << (s - u32::from(len));
        if count > Self::full_threshold() {
            // A short prefix (a default route, a /8) touches so many slots that the commit
            // rebuilds everything anyway.
            self.full_pending = true;
            return;
        }
        for slot in first..first + count {
            self.mark(slot);
        }
    }

    /// Sets the next hop of `prefix` (host bits are ignored); returns the one it replaced.
    /// Takes effect for readers at the next [`commit`](Self::commit).
    pub fn insert(
        &mut self,
        prefix: A::Prefix,
        next_hop: NextHopId,
    ) -> Result<Option<NextHopId>, FibError> {
        if next_hop > MAX_NEXT_HOP {
            return Err(FibError::NextHopTooLarge { id: next_hop });
        }
        self.max_nh = self.max_nh.max(next_hop);
        let (key, len) = A::prefix_parts(&prefix);
        if u32::from(len) <= s_of::<A>() {
            let old = self.short.insert_key(key, len, next_hop);
            if old != Some(next_hop) {
                self.mark_range(key, len);
            }
            return Ok(old);
        }
        Ok(self.insert_long(key, len, next_hop))
    }

    /// Sets a prefix longer than the direct bits (`key` left-aligned, host bits clear).
    fn insert_long(&mut self, key: u128, len: u8, next_hop: NextHopId) -> Option<NextHopId> {
        let slot = Self::slot_of(key);
        let list = self.long.get_mut(slot)?;
        let old = match search(list, key, len) {
            Ok(i) => Some(core::mem::replace(&mut list[i].2, next_hop)),
            Err(i) => {
                list.insert(i, (A::Word::from_key(key), len, next_hop));
                self.long_count += 1;
                None
            }
        };
        if old != Some(next_hop) {
            self.mark_long(key, len);
        }
        old
    }

    /// Marks what a change of a prefix longer than the direct bits rebuilds: the full node
    /// whose 6 bits the prefix ends in or below (or the slot, for a prefix that ends in the
    /// slot's first node).
    fn mark_long(&mut self, key: u128, len: u8) {
        let s = s_of::<A>();
        let depth = s + 6 * ((u32::from(len) - s - 1) / 6);
        if depth == s {
            self.mark(Self::slot_of(key));
        } else {
            self.dirty_units.push((key & mask(depth as u8), depth));
        }
    }

    fn is_marked(&self, slot: usize) -> bool {
        self.dirty_mark
            .get(slot / 64)
            .is_some_and(|m| m & (1 << (slot % 64)) != 0)
    }

    /// The routes of the node at (`key`, `depth`) in `slot`: the next hop of the longest
    /// prefix of at most `depth` bits covering it, and the longer prefixes under it.
    fn unit_routes(&self, slot: usize, key: u128, depth: u32) -> (u32, &[Entry<A::Word>]) {
        let list = self.long.get(slot).map_or(&[][..], |l| &l[..]);
        let s = s_of::<A>();
        let default = (s + 1..=depth)
            .rev()
            .find_map(|len| {
                let len = len as u8;
                let k = key & mask(len);
                let i = search(list, k, len).ok()?;
                list.get(i).map(|e| e.2)
            })
            .unwrap_or_else(|| self.default_of(slot));
        let lo = list.partition_point(|e| (e.0.to_key(), e.1) <= (key, depth as u8));
        let hi = match key.checked_add(1u128 << (128 - depth)) {
            Some(end) => list.partition_point(|e| e.0.to_key() < end),
            None => list.len(),
        };
        (default, list.get(lo..hi).unwrap_or_default())
    }

    /// Removes a prefix longer than the direct bits.
    fn remove_long(&mut self, key: u128, len: u8) -> Option<NextHopId> {
        let slot = Self::slot_of(key);
        let list = self.long.get_mut(slot)?;
        let i = search(list, key, len).ok()?;
        let old = list.remove(i).2;
        if list.is_empty() {
            // Give the memory back: a slot that empties rarely fills again soon.
            *list = Vec::new();
        }
        self.long_count -= 1;
        self.mark_long(key, len);
        Some(old)
    }

    /// Applies a batch of changes in order, as the same sequence of [`insert`](Self::insert)
    /// and [`remove`](Self::remove) calls would, and returns how many of them changed a route.
    /// Takes effect for readers at the next [`commit`](Self::commit).
    ///
    /// Faster than single calls on a large table: only the last change of each prefix is
    /// applied (update streams announce the same prefixes many times), the changes are
    /// grouped by the part of the table they touch and applied in address order, their
    /// look-ups overlap, and a change that changes nothing touches nothing. Nothing is
    /// applied if a next hop is out of range.
    pub fn apply(&mut self, changes: &[Change<A::Prefix>]) -> Result<usize, FibError> {
        if let Some(id) = changes.iter().find_map(|c| match *c {
            Change::Insert(_, nh) if nh > MAX_NEXT_HOP => Some(nh),
            _ => None,
        }) {
            return Err(FibError::NextHopTooLarge { id });
        }
        // Indices travel in the low 20 bits of the table of prefixes seen (and in the low 32
        // of the sort keys).
        Ok(changes
            .chunks(INDEX as usize - 1)
            .map(|chunk| self.apply_chunk(chunk))
            .sum())
    }

    /// What each change of a batch stands for, and whether it is the last change of its
    /// prefix (the one applied). An update stream announces the same prefixes again and again
    /// (a batch of 65,536 RIS updates holds 29% distinct IPv4 prefixes, 14% IPv6), so the
    /// repeats are found first, in one pass over the batch with an open-addressing table of
    /// the last change of each prefix, before anything is sorted or looked up in the routes.
    /// The last change of a prefix records the next hop the first one set and how many of
    /// the others change the one before.
    fn sequences(&mut self, changes: &[Change<A::Prefix>]) -> (Vec<Sequence>, Vec<bool>) {
        let mut seq: Vec<Sequence> = Vec::with_capacity(changes.len());
        let mut last = vec![true; changes.len()];
        let bits = (changes.len() * 2)
            .next_power_of_two()
            .max(16)
            .trailing_zeros();
        let cap = 1usize << bits;
        // Entries: a tag of the prefix's hash (high 12 bits) and 1 + the index of the latest
        // change of the prefix (low 20 bits); empty ones are 0.
        let table = &mut self.seen;
        table.clear();
        table.resize(cap, 0);
        let mut max_nh = self.max_nh;
        for (i, c) in changes.iter().enumerate() {
            let v = value_of(c);
            if let Some(nh) = v {
                max_nh = max_nh.max(nh);
            }
            let (Change::Insert(p, _) | Change::Remove(p)) = c;
            let (key, len) = A::prefix_parts(p);
            let h = (((key >> 64) as u64).rotate_left(29) ^ (key as u64) ^ u64::from(len))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let here = ((h >> 32) as u32 & !INDEX) | (i as u32 + 1);
            let mut at = (h >> (64 - bits)) as usize;
            let mut q = Sequence { first: v, inner: 0 };
            while let Some(e) = table.get_mut(at) {
                if *e == 0 {
                    *e = here;
                    break;
                }
                let j = ((*e & INDEX) as usize).wrapping_sub(1);
                if (*e ^ here) & !INDEX == 0
                    && let Some(prev @ (Change::Insert(pp, _) | Change::Remove(pp))) =
                        changes.get(j)
                    && A::prefix_parts(pp) == (key, len)
                {
                    if let (Some(pq), Some(l)) = (seq.get(j).copied(), last.get_mut(j)) {
                        q = Sequence {
                            first: pq.first,
                            inner: pq.inner + u32::from(value_of(prev) != v),
                        };
                        *l = false;
                    }
                    *e = here;
                    break;
                }
                at = (at + 1) & (cap - 1);
            }
            seq.push(q);
        }
        self.max_nh = max_nh;
        (seq, last)
    }

    fn apply_chunk(&mut self, changes: &[Change<A::Prefix>]) -> usize {
        let s = s_of::<A>();
        let mut changed = 0;
        let (seq, last) = self.sequences(changes);
        // The last change of each long prefix, as (slot << 32 | index): sorting them orders
        // the batch by slot.
        let mut order = Vec::with_capacity(changes.len() / 2);
        for (i, c) in changes.iter().enumerate() {
            if last.get(i).is_none_or(|&l| !l) {
                continue;
            }
            let (Change::Insert(p, _) | Change::Remove(p)) = c;
            let (key, len) = A::prefix_parts(p);
            if u32::from(len) > s {
                order.push(((Self::slot_of(key) as u64) << 32) | i as u64);
            } else {
                // Short prefixes live apart from the long ones: their order among these
                // does not matter.
                let old = self.apply_one(c);
                changed += counted(&seq, i, old);
            }
        }
        radix_sort(&mut order, s);
        let seq = &seq[..];
        // The changes of each slot, as (slot, end in `order`).
        let mut groups: Vec<(u32, u32)> = Vec::new();
        let mut k = 0;
        while k < order.len() {
            let slot = (order[k] >> 32) as u32;
            let end = k + order[k..]
                .iter()
                .take_while(|&&o| (o >> 32) as u32 == slot)
                .count();
            groups.push((slot, end as u32));
            k = end;
        }
        // The slots are visited in increasing order, but their route lists are far apart in
        // memory. The groups go in windows of `WINDOW`, in three stages a window apart: read
        // the list headers of the groups two windows ahead, then the list contents of the
        // next window, then apply the changes of this one. The loads of a stage do not
        // depend on each other, so their cache misses overlap (a load whose value is folded
        // into `touched` serves as a prefetch) instead of each change waiting for its own.
        const WINDOW: usize = 16;
        let mut touched = 0usize;
        let mut start = 0usize;
        let mut lanes = Vec::new();
        for (w, window) in groups.chunks(WINDOW).enumerate() {
            for &(slot, _) in groups
                .get((w + 2) * WINDOW..(w + 3) * WINDOW)
                .unwrap_or_default()
            {
                touched ^= self.long.get(slot as usize).map_or(0, Vec::len);
            }
            for &(slot, _) in groups
                .get((w + 1) * WINDOW..(w + 2) * WINDOW)
                .unwrap_or_default()
            {
                if let Some(list) = self.long.get(slot as usize) {
                    // Every cache line of a short list (two entries a line), else the
                    // lines the binary search reads first.
                    if list.len() <= 8 {
                        for e in list.iter().step_by(2) {
                            touched ^= usize::from(e.1);
                        }
                    } else {
                        let mid = list.get(list.len() / 2).map_or(0, |e| e.1);
                        touched ^= usize::from(mid ^ list.first().map_or(0, |e| e.1));
                    }
                }
            }
            lanes.clear();
            for &(slot, end) in window {
                let slot = slot as usize;
                let group = order.get(start..end as usize).unwrap_or_default();
                start = end as usize;
                if group.len() > 1 && self.long.get(slot).is_some_and(|l| l.len() > MERGE_MIN) {
                    changed += self.merge_slot(slot, group, changes, seq);
                } else {
                    lanes.extend_from_slice(group);
                }
            }
            // Slots are independent: the changes to short lists go after the merged ones.
            for ops in lanes.chunks(SEARCH_LANES) {
                changed += self.apply_short(ops, changes, seq);
            }
        }
        core::hint::black_box(touched);
        changed
    }

    /// Applies the changes of one slot (`group`: sorted (slot, index) keys into `changes`)
    /// whose list is long. Most changes of a routing update stream change nothing (a route
    /// announced again with the same next hop): each change is looked up in the list, and
    /// only the real changes are merged into it, in one pass (instead of one insertion or
    /// removal each, which moves half a long list every time). Returns how many changed a
    /// route.
    fn merge_slot(
        &mut self,
        slot: usize,
        group: &[u64],
        changes: &[Change<A::Prefix>],
        seq: &[Sequence],
    ) -> usize {
        let Some(list) = self.long.get(slot) else {
            return 0;
        };
        let mut pending: Pending = HashMap::default();
        let mut changed = 0;
        let mut max_nh = self.max_nh;
        // The list does not change until the end: the changes are looked up in it in
        // lockstep, SEARCH_LANES at a time.
        let lists = [&list[..]; SEARCH_LANES];
        for window in group.chunks(SEARCH_LANES) {
            let mut keys = [(0u128, 0u8); SEARCH_LANES];
            let mut new = [None; SEARCH_LANES];
            for ((&o, key), new) in window.iter().zip(&mut keys).zip(&mut new) {
                let p = match changes.get(o as u32 as usize) {
                    Some(&Change::Insert(p, nh)) => {
                        max_nh = max_nh.max(nh);
                        *new = Some(nh);
                        p
                    }
                    Some(&Change::Remove(p)) => p,
                    None => continue,
                };
                *key = A::prefix_parts(&p);
            }
            let n = window.len();
            let mut at = [0usize; SEARCH_LANES];
            lower_bounds(&lists[..n], &keys[..n], &mut at[..n]);
            for (j, &o) in window.iter().enumerate() {
                let (key, new, i) = (keys[j], new[j], o as u32 as usize);
                if !pending.is_empty()
                    && let Some(e) = pending.get_mut(&key)
                {
                    changed += counted(seq, i, e.1);
                    e.1 = new;
                    continue;
                }
                let cur = list
                    .get(at[j])
                    .filter(|e| (e.0.to_key(), e.1) == key)
                    .map(|e| e.2);
                changed += counted(seq, i, cur);
                if cur != new {
                    pending.insert(key, (cur, new));
                }
            }
        }
        self.max_nh = max_nh;
        let mut ops: Vec<(u128, u8, Option<NextHopId>, Option<NextHopId>)> = pending
            .into_iter()
            .filter(|(_, (orig, now))| orig != now)
            .map(|((k, l), (orig, now))| (k, l, orig, now))
            .collect();
        if ops.is_empty() {
            return changed;
        }
        ops.sort_unstable_by_key(|o| (o.0, o.1));
        let Some(list) = self.long.get_mut(slot) else {
            return changed;
        };
        // In place: next hops are overwritten, removed entries closed up in one pass, and new
        // ones merged in from the back, so that each entry moves at most twice and the long
        // list is not copied into new memory.
        let mut gone = Vec::new();
        let mut new = Vec::new();
        for &(key, len, orig, now) in &ops {
            if orig.is_none() {
                if let Some(nh) = now {
                    new.push((A::Word::from_key(key), len, nh));
                }
                continue;
            }
            if let Ok(i) = search(list, key, len)
                && let Some(e) = list.get_mut(i)
            {
                match now {
                    Some(nh) => e.2 = nh,
                    None => gone.push(i),
                }
            }
        }
        let removed = gone.len();
        if removed > 0 {
            let (mut i, mut k) = (0, 0);
            list.retain(|_| {
                let keep = gone.get(k) != Some(&i);
                k += usize::from(!keep);
                i += 1;
                keep
            });
        }
        let added = new.len();
        if added > 0 {
            let mut end = list.len();
            list.resize(end + added, (A::Word::default(), 0, 0));
            let mut w = list.len();
            for &e in new.iter().rev() {
                let pos = list
                    .get(..end)
                    .unwrap_or_default()
                    .partition_point(|x| (x.0.to_key(), x.1) < (e.0.to_key(), e.1));
                let shift = w - end;
                list.copy_within(pos..end, pos + shift);
                w = pos + shift - 1;
                if let Some(x) = list.get_mut(w) {
                    *x = e;
                }
                end = pos;
            }
        }
        self.long_count = self.long_count + added - removed;
        for (key, len, _, _) in ops {
            self.mark_long(key, len);
        }
        changed
    }

    /// Applies changes to slots with short lists (`ops`: at most [`SEARCH_LANES`] sorted
    /// (slot, index) keys into `changes`). Their prefixes are first looked up together, in
    /// lockstep: a change that changes nothing (most of an update stream) ends there; the
    /// others, and every change after a real one in the same slot, are applied one by one.
    fn apply_short(
        &mut self,
        ops: &[u64],
        changes: &[Change<A::Prefix>],
        seq: &[Sequence],
    ) -> usize {
        let n = ops.len().min(SEARCH_LANES);
        let mut cur = [None; SEARCH_LANES];
        {
            let mut keys = [(0u128, 0u8); SEARCH_LANES];
            let mut lists: [&[Entry<A::Word>]; SEARCH_LANES] = [&[]; SEARCH_LANES];
            for ((&o, key), list) in ops.iter().zip(&mut keys).zip(&mut lists) {
                if let Some(Change::Insert(p, _) | Change::Remove(p)) =
                    changes.get(o as u32 as usize)
                {
                    *key = A::prefix_parts(p);
                }
                *list = self.long.get((o >> 32) as usize).map_or(&[], |l| &l[..]);
            }
            let mut at = [0usize; SEARCH_LANES];
            lower_bounds(&lists[..n], &keys[..n], &mut at[..n]);
            for j in 0..n {
                cur[j] = lists[j]
                    .get(at[j])
                    .filter(|e| (e.0.to_key(), e.1) == keys[j])
                    .map(|e| e.2);
            }
        }
        let mut changed = 0;
        let mut modified = usize::MAX;
        for (&o, cur) in ops.iter().zip(cur) {
            let slot = (o >> 32) as usize;
            let i = o as u32 as usize;
            let Some(c) = changes.get(i) else {
                continue;
            };
            let new = value_of(c);
            if cur == new && slot != modified {
                changed += counted(seq, i, cur);
                continue;
            }
            let old = self.apply_one(c);
            changed += counted(seq, i, old);
            if old != new {
                modified = slot;
            }
        }
        changed
    }

    /// One change of [`apply`](Self::apply), whose next hop is in range; returns the next
    /// hop the prefix had before.
    fn apply_one(&mut self, c: &Change<A::Prefix>) -> Option<NextHopId> {
        match *c {
            Change::Insert(p, nh) => {
                self.max_nh = self.max_nh.max(nh);
                let (key, len) = A::prefix_parts(&p);
                if u32::from(len) <= s_of::<A>() {
                    let old = self.short.insert_key(key, len, nh);
                    if old != Some(nh) {
                        self.mark_range(key, len);
                    }
                    old
                } else {
                    self.insert_long(key, len, nh)
                }
            }
            Change::Remove(p) => self.remove(&p),
        }
    }

    /// Removes `prefix`; returns its next hop if it was there.
    /// Takes effect for readers at the next [`commit`](Self::commit).
    pub fn remove(&mut self, prefix: &A::Prefix) -> Option<NextHopId> {
        let (key, len) = A::prefix_parts(prefix);
        if u32::from(len) <= s_of::<A>() {
            let old = self.short.remove_key(key, len)?;
            self.mark_range(key, len);
            return Some(old);
        }
        self.remove_long(key, len)
    }

    /// The next hop stored for exactly `prefix` (committed or not).
    pub fn get(&self, prefix: &A::Prefix) -> Option<NextHopId> {
        let (key, len) = A::prefix_parts(prefix);
        if u32::from(len) <= s_of::<A>() {
            return self.short.get(prefix).copied();
        }
        let list = self.long.get(Self::slot_of(key))?;
        let i = search(list, key, len).ok()?;
        Some(list[i].2)
    }

    /// Every prefix and next hop (committed or not), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (A::Prefix, NextHopId)> + '_ {
        let short = self.short.iter().map(|(p, v)| (p, *v));
        short.chain(
            self.long
                .iter()
                .flatten()
                .map(|&(k, l, nh)| (A::make_prefix(k.to_key(), l), nh)),
        )
    }

    /// True if changes are waiting for [`commit`](Self::commit).
    pub fn has_pending(&self) -> bool {
        self.full_pending || !self.dirty.is_empty() || !self.dirty_units.is_empty()
    }

    /// Compiles the pending changes into a new table and publishes it to every reader.
    pub fn commit(&mut self) -> CommitStats {
        if !self.has_pending() {
            return CommitStats {
                memory: self.table.memory(),
                ..CommitStats::default()
            };
        }
        let s = s_of::<A>();
        let (old_nodes, old_leaves) = each!(&self.table.trie, t => (t.nodes.len(), t.leaves.len()));
        let live = (old_nodes - self.garbage.0) + (old_leaves - self.garbage.1);
        // Rebuild everything when there is no compiled table yet, when many slots changed,
        // when a next hop needs wider leaves, or when garbage from earlier slot rebuilds
        // outweighs the live part.
        let full = self.full_pending
            || each!(&self.table.trie, t => t.is_blank())
            || self.dirty.len() > Self::full_threshold()
            || !self.table.trie.holds(self.max_nh)
            || self.garbage.0 + self.garbage.1 > live.max(4096);
        let (trie, slots_rebuilt) = if full {
            self.garbage = (0, 0);
            self.free.clear();
            let mut trie = Trie::new(s, self.max_nh);
            each!(&mut trie, t => self.build_full(t, old_nodes, old_leaves));
            self.log = None;
            (trie, 1 << s)
        } else {
            let mut trie = match self.spare.take() {
                Some(mut t) => {
                    t.copy_from(&self.table.trie, self.log.as_ref());
                    t
                }
                None => self.table.trie.clone(),
            };
            let mut garbage = self.garbage;
            let mut free = core::mem::take(&mut self.free);
            let mut log = self.log.take().unwrap_or_default();
            log.slots.clear();
            log.nodes.clear();
            log.leaves.clear();
            let slots = each!(&mut trie, t => self.patch(t, &mut garbage, &mut free, &mut log));
            self.log = Some(log);
            self.garbage = garbage;
            self.free = free;
            (trie, slots)
        };
        for &slot in &self.dirty {
            if let Some(m) = self.dirty_mark.get_mut(slot as usize / 64) {
                *m = 0;
            }
        }
        self.dirty.clear();
        self.dirty_units.clear();
        self.full_pending = false;
        let routes = self.len();
        let old = core::mem::replace(
            &mut self.table,
            Arc::new(FibTable {
                trie,
                routes,
                _family: core::marker::PhantomData,
            }),
        );
        self.shared.store(self.table.clone());
        // Readers that still hold the old table keep it alive; otherwise its arrays are
        // reused (copying into memory already mapped saves the page faults of a fresh copy).
        self.spare = Arc::try_unwrap(old).ok().map(|t| t.trie);
        CommitStats {
            slots_rebuilt,
            full_rebuild: full,
            memory: self.table.memory(),
        }
    }

    /// The next hop of the longest prefix of at most `DIRECT_BITS` covering `slot`.
    fn default_of(&self, slot: usize) -> u32 {
        let s = s_of::<A>();
        let key = (slot as u128) << (128 - s);
        match self.short.longest_key(key, s as u8) {
            Some((_, &nh)) => nh,
            None => NONE,
        }
    }

    /// Rebuilds the dirty nodes and slots at the end of `trie`'s arrays; returns how many
    /// slots were rebuilt whole.
    fn patch<L: Leaf>(
        &self,
        trie: &mut Poptrie<L>,
        garbage: &mut (usize, usize),
        free: &mut FreeRanges,
        log: &mut PatchLog,
    ) -> usize {
        let mut slots: Vec<usize> = self.dirty.iter().map(|&s| s as usize).collect();
        let mut units = self.dirty_units.clone();
        units.sort_unstable();
        units.dedup();
        for (key, depth) in units {
            let slot = Self::slot_of(key);
            if self.is_marked(slot) {
                continue; // rebuilt whole below
            }
            // Where the path stops short of `depth`, the node that gains a child is rebuilt.
            match trie.node_at(key, depth) {
                Some((n, d)) => {
                    let (gn, gl) = trie.subtree_size(n as u32);
                    garbage.0 += gn.saturating_sub(1); // the node itself is rewritten in place
                    garbage.1 += gl;
                    let (default, entries) = self.unit_routes(slot, key & mask(d as u8), d);
                    trie.rebuild_node(n, d, default, entries);
                    log.nodes.push(n as u32);
                }
                // No full node under the slot yet.
                None => slots.push(slot),
            }
        }
        slots.sort_unstable();
        slots.dedup();
        let rebuilt = slots.len();
        for slot in slots {
            let Some(&old) = trie.direct.get(slot) else {
                continue;
            };
            let (gn, gl) = trie.subtree_size(old);
            garbage.0 += gn;
            garbage.1 += gl;
            // The old compact node's range may take the new one (the arrays are this
            // commit's own copy: readers of the published table never see the change).
            trie.release(old, free);
            let before = free.total();
            let default = self.default_of(slot);
            let list = self.long.get(slot).map_or(&[][..], |l| &l[..]);
            let e = trie.build_slot(default, list, free);
            trie.direct[slot] = e;
            log.slots.push(slot as u32);
            log.leaves.extend(trie.compact_range(e));
            garbage.1 = garbage.1.saturating_sub(before - free.total());
        }
        rebuilt
    }

    fn build_full<L: Leaf>(&self, trie: &mut Poptrie<L>, nodes: usize, leaves: usize) {
        let s = s_of::<A>();
        trie.nodes
            .reserve(nodes.saturating_sub(self.garbage.0) + 64);
        trie.leaves
            .reserve(leaves.saturating_sub(self.garbage.1) + 64);
        // Paint the short prefixes, shortest first, over the direct array.
        let mut short: Vec<(u8, u128, u32)> = self
            .short
            .iter()
            .map(|(p, &nh)| {
                let (k, l) = A::prefix_parts(&p);
                (l, k, nh)
            })
            .collect();
        short.sort_unstable();
        for (len, key, nh) in short {
            let first = Self::slot_of(key & mask(len));
            let count = 1usize << (s - u32::from(len));
            if let Some(run) = trie.direct.get_mut(first..first + count) {
                run.fill(LEAF | nh);
            }
        }
        // Slots in address order, so that the arrays are laid out in address order too.
        for (slot, list) in self.long.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            if let Some(&d) = trie.direct.get(slot) {
                trie.direct[slot] = trie.build_slot(d & !LEAF, list, &mut FreeRanges::default());
            }
        }
    }

    /// The table published last.
    pub fn table(&self) -> Arc<FibTable<A>> {
        self.table.clone()
    }

    /// A handle for readers, which always loads the table published last.
    pub fn reader(&self) -> FibReader<A> {
        FibReader {
            shared: self.shared.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn p(s: &str) -> ipnet::Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn leaves_widen_when_a_large_next_hop_arrives() {
        let mut fib = Fib::<Ipv4Addr>::new();
        fib.insert(p("10.0.0.0/8"), 1).unwrap();
        fib.insert(p("10.1.2.0/24"), 2).unwrap();
        fib.insert(p("10.1.2.128/25"), 3).unwrap();
        fib.commit();
        assert_eq!(fib.table().shape().leaf_bytes, 2);
        fib.insert(p("10.1.3.0/24"), 70_000).unwrap();
        let stats = fib.commit();
        assert!(stats.full_rebuild);
        let t = fib.table();
        assert_eq!(t.shape().leaf_bytes, 4);
        assert_eq!(t.lookup(Ipv4Addr::new(10, 1, 3, 1)), Some(70_000));
        assert_eq!(t.lookup(Ipv4Addr::new(10, 1, 2, 200)), Some(3));
        assert_eq!(t.lookup(Ipv4Addr::new(10, 1, 2, 1)), Some(2));
        assert_eq!(t.lookup(Ipv4Addr::new(10, 9, 9, 9)), Some(1));
        assert_eq!(
            fib.insert(p("10.0.0.0/8"), MAX_NEXT_HOP + 1),
            Err(FibError::NextHopTooLarge {
                id: MAX_NEXT_HOP + 1
            })
        );
        assert_eq!(fib.insert(p("10.0.0.0/8"), MAX_NEXT_HOP), Ok(Some(1)));
        fib.commit();
        assert_eq!(
            fib.table().lookup(Ipv4Addr::new(10, 9, 9, 9)),
            Some(MAX_NEXT_HOP)
        );
    }

    #[test]
    fn slot_rebuilds_reuse_the_table_until_garbage_dominates() {
        let mut fib = Fib::<Ipv4Addr>::new();
        for i in 0..=255u8 {
            fib.insert(
                ipnet::Ipv4Net::new(Ipv4Addr::new(10, i, 0, 0), 24).unwrap(),
                1,
            )
            .unwrap();
        }
        assert!(fib.commit().full_rebuild);
        fib.insert(p("10.3.0.128/25"), 2).unwrap();
        let stats = fib.commit();
        assert!(!stats.full_rebuild);
        assert_eq!(stats.slots_rebuilt, 1);
        assert_eq!(fib.table().lookup(Ipv4Addr::new(10, 3, 0, 129)), Some(2));
        assert_eq!(fib.table().lookup(Ipv4Addr::new(10, 3, 0, 1)), Some(1));
        assert!(
            !fib.commit().full_rebuild,
            "nothing pending, nothing rebuilt"
        );
    }

    #[test]
    fn reused_arrays_leave_held_tables_unchanged() {
        let mut fib = Fib::<Ipv4Addr>::new();
        let net = |i: u32| ipnet::Ipv4Net::new(Ipv4Addr::from_bits(0x0a00_0000 | (i << 12)), 24);
        let mut held = Vec::new();
        for round in 0..8u32 {
            for i in 0..64 {
                fib.insert(net(i).unwrap(), round).unwrap();
            }
            let stats = fib.commit();
            assert_eq!(stats.full_rebuild, round == 0);
            // Every other table is dropped at once, so that its arrays are reused.
            if round % 2 == 0 {
                held.push((round, fib.table()));
            }
        }
        for (round, t) in held {
            for i in 0..64 {
                let a = Ipv4Addr::from_bits(0x0a00_0000 | (i << 12) | 5);
                assert_eq!(
                    t.lookup(a),
                    Some(round),
                    "{a} in the table of round {round}"
                );
            }
        }
    }

    /// Commits that patch the arrays of the table before (no reader holds any table) copy
    /// only what the commit before changed; every table must still answer as the oracle.
    #[test]
    fn patched_spare_arrays_match_the_oracle() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut fib = Fib::<Ipv4Addr>::new();
        let mut oracle = Lpm::<Ipv4Addr, NextHopId>::new();
        let mut full = 0;
        for round in 0..60 {
            for _ in 0..40 {
                let r = next();
                // A few slots of 10.0.0.0/12, prefixes from /14 (whole slots) to /32.
                let len = 14 + (r % 19) as u8;
                let a = Ipv4Addr::from_bits(0x0a00_0000 | ((r >> 8) as u32 & 0x000f_ffff));
                let p = ipnet::Ipv4Net::new(a, len).unwrap().trunc();
                if r >> 62 == 0 {
                    fib.remove(&p);
                    oracle.remove(&p);
                } else {
                    let nh = (r >> 32) as u32 % 5;
                    fib.insert(p, nh).unwrap();
                    oracle.insert(p, nh);
                }
            }
            full += usize::from(fib.commit().full_rebuild);
            let t = fib.table();
            for _ in 0..2000 {
                let a = Ipv4Addr::from_bits(0x0a00_0000 | (next() as u32 & 0x000f_ffff));
                let want = oracle.lookup(a).map(|(_, &v)| v);
                assert_eq!(t.lookup(a), want, "{a} after round {round}");
            }
        }
        assert!(
            full < 30,
            "most commits patch the table ({full} full builds)"
        );
    }

    /// `spread` masks the address bits that vary: few per slot (one change at a time) or all
    /// in one slot (the changes merged into its list).
    fn batch_matches_single_changes(spread: u32) {
        // Enough changes for the radix sort, with repeated prefixes whose order matters.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut changes = Vec::new();
        for _ in 0..5000 {
            let r = next();
            let len = 8 + (r % 25) as u8;
            let a = Ipv4Addr::from_bits(0x0a00_0000 | ((r >> 8) as u32 & spread));
            let p = ipnet::Ipv4Net::new(a, len).unwrap().trunc();
            changes.push(if r >> 61 == 0 {
                Change::Remove(p)
            } else {
                Change::Insert(p, (r >> 40) as u32 % 4)
            });
        }
        let mut one = Fib::<Ipv4Addr>::new();
        let mut batch = Fib::<Ipv4Addr>::new();
        for chunk in changes.chunks(2000) {
            let mut changed = 0;
            for c in chunk {
                changed += usize::from(match *c {
                    Change::Insert(p, nh) => one.insert(p, nh).unwrap() != Some(nh),
                    Change::Remove(p) => one.remove(&p).is_some(),
                });
            }
            assert_eq!(batch.apply(chunk), Ok(changed));
            one.commit();
            batch.commit();
        }
        assert_eq!(one.len(), batch.len());
        let mut a: Vec<_> = one.iter().collect();
        let mut b: Vec<_> = batch.iter().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        let (t, u) = (one.table(), batch.table());
        for c in &changes {
            let (Change::Insert(p, _) | Change::Remove(p)) = *c;
            for a in [p.network(), p.broadcast()] {
                assert_eq!(t.lookup(a), u.lookup(a), "{a}");
            }
        }
        assert_eq!(
            batch.apply(&[Change::Insert(p("10.0.0.0/8"), MAX_NEXT_HOP + 1)]),
            Err(FibError::NextHopTooLarge {
                id: MAX_NEXT_HOP + 1
            })
        );
    }

    #[test]
    fn a_large_batch_matches_single_changes() {
        batch_matches_single_changes(0x00ff_f000);
    }

    #[test]
    fn a_batch_into_a_long_slot_list_matches_single_changes() {
        batch_matches_single_changes(0x0000_3fff);
    }
}
