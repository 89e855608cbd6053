//! The forwarding table: prefix → next-hop id, compiled for lookups and published atomically.

mod poptrie;

use crate::addr::{Address, mask};
use crate::lpm::Lpm;
use arc_swap::ArcSwap;
use poptrie::{Entry, LEAF, Leaf, NONE, Poptrie, Trie, each};
use std::sync::Arc;

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
    /// (or [`FibTable::NO_ROUTE`]). Lookups are interleaved so that their cache misses
    /// overlap: several times faster than a loop of [`lookup`](Self::lookup) on a large table.
    /// Only `min(addrs.len(), out.len())` addresses are looked up.
    #[inline]
    pub fn lookup_batch(&self, addrs: &[A], out: &mut [NextHopId]) {
        const CHUNK: usize = 64;
        let n = addrs.len().min(out.len());
        let mut words = [A::to_word(addrs.first().copied().unwrap_or(A::from_key(0))); CHUNK];
        for (a, o) in addrs[..n].chunks(CHUNK).zip(out[..n].chunks_mut(CHUNK)) {
            for (w, x) in words.iter_mut().zip(a) {
                *w = x.to_word();
            }
            each!(&self.trie, t => t.lookup_batch(&words[..a.len()], o));
        }
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
/// stalls or half-applies for them. Batch many changes per commit: a commit copies the
/// compiled arrays once (a few MiB for a full IPv4 table) whatever the batch size.
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
    /// Longer prefixes, per direct slot, sorted by (key, length).
    long: SlotMap,
    long_count: usize,
    dirty: Vec<u32>,
    dirty_mark: Vec<u64>,
    full_pending: bool,
    /// The largest next hop ever inserted (it decides the leaf width).
    max_nh: NextHopId,
    /// Slots of the current table that are no longer referenced (nodes, leaves).
    garbage: (usize, usize),
    table: Arc<FibTable<A>>,
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
            full_pending: self.full_pending,
            max_nh: self.max_nh,
            garbage: self.garbage,
            table: self.table.clone(),
            shared: Arc::new(ArcSwap::new(self.table.clone())),
        }
    }
}

impl<A: Address> Default for Fib<A> {
    fn default() -> Self {
        Self::new()
    }
}

type SlotMap = std::collections::HashMap<
    usize,
    Vec<Entry>,
    core::hash::BuildHasherDefault<crate::addr::KeyHasher>,
>;

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
            long: SlotMap::default(),
            long_count: 0,
            dirty: Vec::new(),
            dirty_mark: vec![0; (1 << s) / 64],
            full_pending: false,
            max_nh: 0,
            garbage: (0, 0),
            shared: Arc::new(ArcSwap::new(table.clone())),
            table,
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
        let slot = Self::slot_of(key);
        let list = self.long.entry(slot).or_default();
        let old = match list.binary_search_by(|e| (e.0, e.1).cmp(&(key, len))) {
            Ok(i) => Some(core::mem::replace(&mut list[i].2, next_hop)),
            Err(i) => {
                list.insert(i, (key, len, next_hop));
                self.long_count += 1;
                None
            }
        };
        if old != Some(next_hop) {
            self.mark(slot);
        }
        Ok(old)
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
        let slot = Self::slot_of(key);
        let list = self.long.get_mut(&slot)?;
        let i = list
            .binary_search_by(|e| (e.0, e.1).cmp(&(key, len)))
            .ok()?;
        let old = list.remove(i).2;
        if list.is_empty() {
            self.long.remove(&slot);
        }
        self.long_count -= 1;
        self.mark(slot);
        Some(old)
    }

    /// The next hop stored for exactly `prefix` (committed or not).
    pub fn get(&self, prefix: &A::Prefix) -> Option<NextHopId> {
        let (key, len) = A::prefix_parts(prefix);
        if u32::from(len) <= s_of::<A>() {
            return self.short.get(prefix).copied();
        }
        let list = self.long.get(&Self::slot_of(key))?;
        let i = list
            .binary_search_by(|e| (e.0, e.1).cmp(&(key, len)))
            .ok()?;
        Some(list[i].2)
    }

    /// Every prefix and next hop (committed or not), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (A::Prefix, NextHopId)> + '_ {
        let short = self.short.iter().map(|(p, v)| (p, *v));
        short.chain(
            self.long
                .values()
                .flatten()
                .map(|&(k, l, nh)| (A::make_prefix(k, l), nh)),
        )
    }

    /// True if changes are waiting for [`commit`](Self::commit).
    pub fn has_pending(&self) -> bool {
        self.full_pending || !self.dirty.is_empty()
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
            || old_nodes + old_leaves == 0
            || self.dirty.len() > Self::full_threshold()
            || !self.table.trie.holds(self.max_nh)
            || self.garbage.0 + self.garbage.1 > live.max(4096);
        let slots_rebuilt = if full { 1 << s } else { self.dirty.len() };
        let trie = if full {
            self.garbage = (0, 0);
            let mut trie = Trie::new(s, self.max_nh);
            each!(&mut trie, t => self.build_full(t, old_nodes, old_leaves));
            trie
        } else {
            let mut trie = self.table.trie.clone();
            let mut garbage = self.garbage;
            each!(&mut trie, t => self.patch(t, &mut garbage));
            self.garbage = garbage;
            trie
        };
        for &slot in &self.dirty {
            if let Some(m) = self.dirty_mark.get_mut(slot as usize / 64) {
                *m = 0;
            }
        }
        self.dirty.clear();
        self.full_pending = false;
        self.table = Arc::new(FibTable {
            trie,
            routes: self.len(),
            _family: core::marker::PhantomData,
        });
        self.shared.store(self.table.clone());
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

    /// Rebuilds the dirty slots at the end of `trie`'s arrays.
    fn patch<L: Leaf>(&self, trie: &mut Poptrie<L>, garbage: &mut (usize, usize)) {
        for &slot in &self.dirty {
            let slot = slot as usize;
            let Some(&old) = trie.direct.get(slot) else {
                continue;
            };
            let (gn, gl) = trie.subtree_size(old);
            garbage.0 += gn;
            garbage.1 += gl;
            let default = self.default_of(slot);
            let list = self.long.get(&slot).map_or(&[][..], |l| &l[..]);
            trie.direct[slot] = trie.build_slot(default, list);
        }
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
        let mut slots: Vec<usize> = self.long.keys().copied().collect();
        slots.sort_unstable();
        for slot in slots {
            let list = self.long.get(&slot).map_or(&[][..], |l| &l[..]);
            if let Some(&d) = trie.direct.get(slot) {
                trie.direct[slot] = trie.build_slot(d & !LEAF, list);
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
}
