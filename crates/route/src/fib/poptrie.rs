//! The compiled lookup structure: a Poptrie (Asai & Ohara, SIGCOMM 2015), with leaf-only
//! nodes inlined beside their leaves.
//!
//! The top `s` bits of an address index a direct array. Each entry is a leaf (a next hop, or
//! none), a *compact* node, or the index of a full node; nodes have stride 6.
//!
//! - A full node holds two 64-bit maps: `vector` marks the slots that descend into a child
//!   node, `leafvec` marks where a run of equal leaves starts. Children and leaves of a node
//!   are contiguous, so slot `i`'s child is `nodes[base1 + popcount(vector below i)]` and its
//!   leaf is `leaves[base0 + popcount(leafvec up to i) - 1]`. Equal adjacent leaves are
//!   stored once.
//! - A compact node is a node without children (the usual case: a /18 holding /19–/24
//!   routes). It has only a `leafvec`, stored in the leaf array right before its leaves, so
//!   a lookup reads one cache line after the direct array.
//!
//! Leaves are `u16` when every next hop fits (half the memory), `u32` otherwise. Every direct
//! slot's subtree is laid out contiguously when it is built, so a slot can be rebuilt on its
//! own. A rebuilt slot's compact node goes into a free range of the leaf array that fits (left
//! by earlier rebuilds, `FreeRanges`) before it goes at the end; other old subtrees are
//! garbage until the next full build.

use crate::addr::{Address, Word};
use prefetch_index::prefetch_index;

/// Direct entries with this bit set are leaves; the other 31 bits are the next hop.
pub(crate) const LEAF: u32 = 1 << 31;
/// Direct entries with this bit (and not [`LEAF`]) set are compact nodes at this leaf offset.
const COMPACT: u32 = 1 << 30;
/// The leaf value meaning "no route".
pub(crate) const NONE: u32 = LEAF - 1;

/// A leaf: a next hop in 16 or 32 bits.
pub(crate) trait Leaf:
    Copy + Eq + Default + core::fmt::Debug + Send + Sync + 'static
{
    /// Leaves per 64-bit map stored inline.
    const PER_MAP: usize;
    /// Largest next hop it holds (its all-ones value means none).
    const MAX: u32;
    fn from_nh(nh: u32) -> Self;
    fn nh(self) -> u32;
    fn from_bits(v: u64, i: usize) -> Self;
    fn bits(self, i: usize) -> u64;
}

impl Leaf for u16 {
    const PER_MAP: usize = 4;
    const MAX: u32 = 0xfffe;
    #[inline(always)]
    fn from_nh(nh: u32) -> Self {
        if nh > <u16 as Leaf>::MAX {
            u16::MAX
        } else {
            nh as u16
        }
    }
    #[inline(always)]
    fn nh(self) -> u32 {
        if self == u16::MAX {
            NONE
        } else {
            u32::from(self)
        }
    }
    fn from_bits(v: u64, i: usize) -> Self {
        (v >> (16 * i)) as u16
    }
    #[inline(always)]
    fn bits(self, i: usize) -> u64 {
        u64::from(self) << (16 * i)
    }
}

impl Leaf for u32 {
    const PER_MAP: usize = 2;
    const MAX: u32 = NONE - 1;
    #[inline(always)]
    fn from_nh(nh: u32) -> Self {
        nh.min(NONE)
    }
    #[inline(always)]
    fn nh(self) -> u32 {
        self
    }
    fn from_bits(v: u64, i: usize) -> Self {
        (v >> (32 * i)) as u32
    }
    #[inline(always)]
    fn bits(self, i: usize) -> u64 {
        u64::from(self) << (32 * i)
    }
}

/// Aligned to 32 bytes, so that no node spans two cache lines.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C, align(32))]
pub(crate) struct Node {
    vector: u64,
    leafvec: u64,
    base1: u32,
    base0: u32,
}

/// A prefix below the direct bits: key (the family's address word, host bits clear),
/// length, next hop. 12 bytes for IPv4, 32 for IPv6.
pub(crate) type Entry<W> = (W, u8, u32);

#[derive(Clone, Debug)]
pub(crate) struct Poptrie<L> {
    pub(crate) s: u32,
    pub(crate) direct: Vec<u32>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) leaves: Vec<L>,
}

/// The index of an address's entry in a direct array of exactly `2^DIRECT` entries: its top
/// bits, taken modulo the array's length so that indexing needs no bounds check.
#[inline(always)]
fn direct_slot<A: Address>(a: &A) -> usize {
    a.to_word().top(DIRECT) % (1 << DIRECT)
}

/// Lookups a batch advances together.
const LANES: usize = 32;
/// Bits every family resolves with the direct array ([`Address::DIRECT_BITS`]).
pub(crate) const DIRECT: u32 = 18;

impl<L: Leaf> Poptrie<L> {
    pub(crate) fn new(s: u32) -> Self {
        Poptrie {
            s,
            direct: vec![LEAF | NONE; 1 << s],
            nodes: Vec::new(),
            // An empty map for the branch-free lookups to read (see `first`).
            leaves: vec![L::default(); L::PER_MAP],
        }
    }

    /// Makes `self` a copy of `other`, in the memory `self` already has.
    fn copy_from(&mut self, other: &Self) {
        self.s = other.s;
        self.direct.clone_from(&other.direct);
        self.nodes.clone_from(&other.nodes);
        self.leaves.clone_from(&other.leaves);
    }

    /// Makes `self`, a copy of the table `other` was patched from, a copy of `other`: what
    /// the patch changed in place (`log`) and what it appended are copied, not the rest.
    /// False (and nothing done) if the arrays do not fit that.
    fn sync_from(&mut self, other: &Self, log: &PatchLog) -> bool {
        if self.s != other.s
            || self.direct.len() != other.direct.len()
            || self.nodes.len() > other.nodes.len()
            || self.leaves.len() > other.leaves.len()
        {
            return false;
        }
        for &slot in &log.slots {
            if let (Some(d), Some(&e)) = (
                self.direct.get_mut(slot as usize),
                other.direct.get(slot as usize),
            ) {
                *d = e;
            }
        }
        for &n in &log.nodes {
            if let (Some(d), Some(&e)) =
                (self.nodes.get_mut(n as usize), other.nodes.get(n as usize))
            {
                *d = e;
            }
        }
        for &(o, len) in &log.leaves {
            let r = o as usize..o as usize + len as usize;
            if let (Some(d), Some(e)) = (self.leaves.get_mut(r.clone()), other.leaves.get(r)) {
                d.copy_from_slice(e);
            }
        }
        let (n, l) = (self.nodes.len(), self.leaves.len());
        self.nodes
            .extend_from_slice(other.nodes.get(n..).unwrap_or_default());
        self.leaves
            .extend_from_slice(other.leaves.get(l..).unwrap_or_default());
        true
    }

    /// The leaf range of a compact-node direct entry.
    pub(crate) fn compact_range(&self, e: u32) -> Option<(u32, u32)> {
        if e & (LEAF | COMPACT) != COMPACT {
            return None;
        }
        let o = e & !COMPACT;
        Some((o, L::PER_MAP as u32 + self.map_at(o as usize).count_ones()))
    }

    /// True before anything was built into the arrays.
    pub(crate) fn is_blank(&self) -> bool {
        self.nodes.is_empty() && self.leaves.len() <= L::PER_MAP
    }

    /// Bytes used by the lookup arrays.
    pub(crate) fn memory(&self) -> usize {
        self.direct.len() * 4
            + self.nodes.len() * core::mem::size_of::<Node>()
            + self.leaves.len() * core::mem::size_of::<L>()
    }

    #[inline(always)]
    fn map_at(&self, o: usize) -> u64 {
        // One bounds check for the whole map, so the leaves are read as a single word.
        match self.leaves.get(o..o + L::PER_MAP) {
            Some(m) => m.iter().enumerate().fold(0, |v, (k, l)| v | l.bits(k)),
            None => 0,
        }
    }

    #[inline(always)]
    fn leaf(&self, idx: usize) -> u32 {
        self.leaves.get(idx).map_or(NONE, |l| l.nh())
    }

    /// One lookup: the next hop, or [`NONE`].
    #[inline(always)]
    pub(crate) fn lookup<W: Word>(&self, w: W) -> u32 {
        let e = self
            .direct
            .get(w.top(self.s))
            .copied()
            .unwrap_or(LEAF | NONE);
        if e & LEAF != 0 {
            return e & !LEAF;
        }
        let mut w = w.skip(self.s);
        let mut e = self.first(e, w);
        if e & LEAF != 0 {
            return e & !LEAF;
        }
        loop {
            e = self.descend(e, w);
            if e & LEAF != 0 {
                return self.leaf((e & !LEAF) as usize);
            }
            w = w.skip(6);
        }
    }

    /// Resolves a compact-node direct entry to `LEAF | next hop`; passes leaves and full-node
    /// indices through. `w` is the address without the direct bits.
    #[inline(always)]
    fn first<W: Word>(&self, e: u32, w: W) -> u32 {
        if e & (LEAF | COMPACT) == COMPACT {
            self.compact(e & !COMPACT, w)
        } else {
            e
        }
    }

    /// The `LEAF | next hop` of a compact node at leaf offset `o`, for the address `w`
    /// without the direct bits.
    #[inline(always)]
    fn compact<W: Word>(&self, o: u32, w: W) -> u32 {
        let o = o as usize;
        let lv = self.map_at(o);
        // The map shifted so that slot `i` is its top bit: the set bits left are the slot's
        // and those below it, counted without a mask to build.
        let idx = o + L::PER_MAP + (lv << (63 - (w.head6() & 63))).count_ones() as usize;
        LEAF | self.leaf(idx.wrapping_sub(1))
    }

    /// Descends one full node by the first 6 bits of `w`: the child's index, or `LEAF` and
    /// the index of the leaf where the lookup ends.
    #[inline(always)]
    fn descend<W: Word>(&self, e: u32, w: W) -> u32 {
        let Some(node) = self.nodes.get(e as usize) else {
            // No such leaf either: its lookup finds no route.
            return LEAF | NONE;
        };
        let bit = 1u64 << (w.head6() & 63);
        // A branch: most steps descend, and a select without one measured slower.
        if node.vector & bit != 0 {
            node.base1
                .wrapping_add((node.vector & (bit - 1)).count_ones())
        } else {
            let leaf = node
                .base0
                .wrapping_add((node.leafvec & (bit | (bit - 1))).count_ones())
                .wrapping_sub(1);
            LEAF | leaf
        }
    }

    /// Lookups of a batch, in groups of [`LANES`] advanced stage by stage: the direct entries
    /// of the whole group, then the compact nodes of the lanes that have one, then one level
    /// of full nodes at a time for the lanes still descending, then the leaves of the lanes
    /// that ended in a full node. The loads of a stage are independent, so they overlap,
    /// and a lane's depth does not hold up the lookups after it (a loop of single lookups
    /// waits for each one's chain of loads).
    ///
    /// The lanes a stage concerns are a bit mask, walked lowest bit first, so that a stage
    /// spends nothing on the lanes that are done: most random IPv6 addresses end in the
    /// direct array, and a group that advanced every lane to the depth of its deepest one
    /// (the code before) spent 44 instructions a lookup on them. A lane that ends in a full
    /// node keeps the index of its leaf and reads it once, at the end, instead of every
    /// lane reading a leaf (or a dummy) at every level: 395 instructions a lookup on
    /// table-derived IPv6 addresses before, 247 after (216 with the 64-bit cut in
    /// `descend_lanes`).
    ///
    /// The direct array is taken as an array of exactly `2^DIRECT` entries, so that the top
    /// bits of an address index it with no mask and no bounds check; the group's entries
    /// are worked on in place, and the state of the full-node levels is only set up when a
    /// lane reaches one. Random IPv6 addresses: 21 instructions a lookup before, 10 now.
    #[inline]
    pub(crate) fn lookup_batch<A: Address>(&self, addrs: &[A], out: &mut [u32]) {
        let direct = match <&[u32; 1 << DIRECT]>::try_from(&self.direct[..]) {
            Ok(d) if self.s == DIRECT => d,
            // Not built by `Trie::new` (every family resolves DIRECT bits directly).
            _ => {
                for (a, o) in addrs.iter().zip(out) {
                    *o = self.lookup(a.to_word());
                }
                return;
            }
        };
        let mut groups = addrs.chunks_exact(LANES);
        let mut outs = out.chunks_exact_mut(LANES);
        // The direct entries of the group after the one being finished are asked for: they
        // are on their way while this group's nodes are read (a stream of addresses finds
        // few of them in the cache).
        let mut ahead = addrs.chunks_exact(LANES).skip(1);
        for (a, o) in (&mut groups).zip(&mut outs) {
            if let (Ok(a), Ok(o)) = (<&[A; LANES]>::try_from(a), <&mut [u32; LANES]>::try_from(o)) {
                let mut e = [0u32; LANES];
                for (e, a) in e.iter_mut().zip(a) {
                    *e = direct[direct_slot(a)];
                }
                if let Some(next) = ahead.next() {
                    for a in next {
                        prefetch_index(&direct[..], direct_slot(a));
                    }
                }
                self.finish(a, o, &mut e);
            }
        }
        for (a, o) in groups.remainder().iter().zip(outs.into_remainder()) {
            *o = self.lookup(a.to_word());
        }
    }

    /// The rest of the lookups of one group of [`LANES`] addresses, given their direct
    /// entries.
    #[inline(always)]
    fn finish<A: Address>(&self, a: &[A; LANES], o: &mut [u32; LANES], e: &mut [u32; LANES]) {
        // Lanes at a compact node and lanes at a full node, one bit each.
        let (mut compact, mut full) = (0u32, 0u32);
        for (j, &x) in e.iter().enumerate() {
            let kind = x & (LEAF | COMPACT);
            compact |= u32::from(kind == COMPACT) << j;
            full |= u32::from(kind == 0) << j;
        }
        if compact | full == 0 {
            for j in 0..LANES {
                o[j] = e[j] & !LEAF;
            }
            return;
        }
        let mut bits = compact;
        while bits != 0 {
            let j = bits.trailing_zeros() as usize & (LANES - 1);
            bits &= bits - 1;
            e[j] = self.compact(e[j] & !COMPACT, a[j].to_word().skip(self.s));
        }
        if full != 0 {
            self.descend_lanes(a, e, full);
        }
        for j in 0..LANES {
            o[j] = e[j] & !LEAF;
        }
    }

    /// The full-node levels of a group: `full` marks the lanes whose direct entries are
    /// full nodes. Each ends with its next hop in `e`.
    #[inline(always)]
    fn descend_lanes<A: Address>(&self, a: &[A; LANES], e: &mut [u32; LANES], mut full: u32) {
        let mut head = [0u64; LANES];
        let mut bits = full;
        while bits != 0 {
            let j = bits.trailing_zeros() as usize & (LANES - 1);
            bits &= bits - 1;
            head[j] = a[j].to_word().head64();
        }
        // Full nodes: a lane that ends in a node keeps the index of its leaf (tagged), which
        // is read once at the end, not at every level.
        // The lanes still descending are all at the same depth: while its 6 bits are in the
        // first 64 of the address, they are cut from those (the whole word only past them).
        let deep = full;
        let mut depth = self.s;
        while full != 0 {
            let mut bits = full;
            let near = depth <= 58;
            while bits != 0 {
                let j = bits.trailing_zeros() as usize & (LANES - 1);
                bits &= bits - 1;
                let i = if near {
                    ((head[j] << (depth & 63)) >> 58) as usize
                } else {
                    a[j].to_word().chunk6(depth)
                };
                // `descend`, with the lane's end taken in the branch that finds it, and
                // the line the lane reads next asked for: it is on the way while the other
                // lanes take their step (1.2-1.3x on table-derived IPv6 addresses with the
                // caches shared with another table, as in the bench).
                // Each map shifted so that slot `i` is its top bit: the set bits left are the
                // slot's and those below it (no mask to build).
                let up = 63 - (i & 63);
                match self.nodes.get(e[j] as usize) {
                    Some(node) if ((node.vector << up) as i64) < 0 => {
                        let child = node
                            .base1
                            .wrapping_add((node.vector << up).count_ones())
                            .wrapping_sub(1);
                        prefetch_index(&self.nodes, child as usize);
                        e[j] = child;
                    }
                    Some(node) => {
                        let leaf = node
                            .base0
                            .wrapping_add((node.leafvec << up).count_ones())
                            .wrapping_sub(1);
                        prefetch_index(&self.leaves, leaf as usize);
                        e[j] = LEAF | leaf;
                        full &= !(1 << j);
                    }
                    None => {
                        e[j] = LEAF | NONE;
                        full &= !(1 << j);
                    }
                }
            }
            depth += 6;
        }
        let mut bits = deep;
        while bits != 0 {
            let j = bits.trailing_zeros() as usize & (LANES - 1);
            bits &= bits - 1;
            e[j] = LEAF | self.leaf((e[j] & !LEAF) as usize);
        }
    }

    /// Builds the subtree of one direct slot and returns its direct entry. `entries` are the
    /// prefixes longer than `s` inside the slot, sorted by (key, length); `default` is the
    /// next hop of the longest prefix of at most `s` bits covering the slot.
    pub(crate) fn build_slot<W: Word>(
        &mut self,
        default: u32,
        entries: &[Entry<W>],
        free: &mut FreeRanges,
    ) -> u32 {
        if entries.is_empty() {
            return LEAF | default;
        }
        let plan = Plan::new(self.s, default, entries);
        if plan.vector == 0 {
            let (leafvec, runs, n) = plan.runs();
            let len = L::PER_MAP + n;
            let o = match free.take(len) {
                Some(o) => o as usize,
                None => {
                    let o = self.leaves.len();
                    self.leaves.resize(o + len, L::default());
                    o
                }
            };
            if let Some(dst) = self.leaves.get_mut(o..o + len) {
                let (map, leaves) = dst.split_at_mut(L::PER_MAP);
                for (k, m) in map.iter_mut().enumerate() {
                    *m = L::from_bits(leafvec, k);
                }
                for (d, &nh) in leaves.iter_mut().zip(&runs[..n]) {
                    *d = L::from_nh(nh);
                }
            }
            return COMPACT | o as u32;
        }
        let idx = self.nodes.len();
        self.nodes.push(Node::default());
        self.emit(idx, self.s, &plan, entries);
        idx as u32
    }

    /// Gives the leaf range of a compact-node direct entry `e` (no longer referenced) to
    /// `free`; returns its length, or 0 for other entries.
    pub(crate) fn release(&self, e: u32, free: &mut FreeRanges) -> usize {
        if e & (LEAF | COMPACT) != COMPACT {
            return 0;
        }
        let o = e & !COMPACT;
        let len = L::PER_MAP + self.map_at(o as usize).count_ones() as usize;
        free.put(o, len);
        len
    }

    /// The deepest full node on the path of `key` at `depth` or above: its index and depth.
    /// None if the direct entry of `key` is no full node.
    pub(crate) fn node_at(&self, key: u128, depth: u32) -> Option<(usize, u32)> {
        let e = *self.direct.get(key.top(self.s))?;
        if e & (LEAF | COMPACT) != 0 {
            return None;
        }
        let mut n = e as usize;
        let mut d = self.s;
        while d < depth {
            let node = self.nodes.get(n)?;
            let bit = 1u64 << key.chunk6(d);
            if node.vector & bit == 0 {
                break;
            }
            n = (node.base1 + (node.vector & (bit - 1)).count_ones()) as usize;
            d += 6;
        }
        Some((n, d))
    }

    /// Rebuilds the subtree of the full node `n` at `depth` in place: the node is rewritten,
    /// its children and leaves are appended. `entries` are the prefixes longer than `depth`
    /// under it, sorted by (key, length); `default` is the next hop of the longest shorter
    /// prefix covering it. Its parent still points to it, so nothing above changes.
    pub(crate) fn rebuild_node<W: Word>(
        &mut self,
        n: usize,
        depth: u32,
        default: u32,
        entries: &[Entry<W>],
    ) {
        let plan = Plan::new(depth, default, entries);
        self.emit(n, depth, &plan, entries);
    }

    /// Appends the leaves of the plan's leaf slots, one per run; returns the leafvec.
    fn push_leaves(&mut self, plan: &Plan) -> u64 {
        let (leafvec, runs, n) = plan.runs();
        self.leaves
            .extend(runs[..n].iter().map(|&nh| L::from_nh(nh)));
        leafvec
    }

    fn emit<W: Word>(&mut self, idx: usize, depth: u32, plan: &Plan, entries: &[Entry<W>]) {
        let base1 = self.nodes.len() as u32;
        let base0 = self.leaves.len() as u32;
        let leafvec = self.push_leaves(plan);
        let children = plan.vector.count_ones() as usize;
        self.nodes
            .resize(self.nodes.len() + children, Node::default());
        self.nodes[idx] = Node {
            vector: plan.vector,
            leafvec,
            base1,
            base0,
        };
        let mut k = 0;
        for c in 0..64 {
            if plan.vector & (1 << c) != 0 {
                let (a, b) = plan.runs[c];
                let sub = &entries[a..b];
                let child = Plan::new(depth + 6, plan.leaf[c], sub);
                self.emit(base1 as usize + k, depth + 6, &child, sub);
                k += 1;
            }
        }
    }

    /// Nodes and leaves in the subtree under a direct entry (to account garbage).
    pub(crate) fn subtree_size(&self, e: u32) -> (usize, usize) {
        if e & LEAF != 0 {
            return (0, 0);
        }
        if e & COMPACT != 0 {
            let lv = self.map_at((e & !COMPACT) as usize);
            return (0, L::PER_MAP + lv.count_ones() as usize);
        }
        let mut stack = vec![e as usize];
        let (mut nodes, mut leaves) = (0, 0);
        while let Some(n) = stack.pop() {
            let Some(node) = self.nodes.get(n) else {
                continue;
            };
            nodes += 1;
            leaves += node.leafvec.count_ones() as usize;
            let base = node.base1 as usize;
            stack.extend(base..base + node.vector.count_ones() as usize);
        }
        (nodes, leaves)
    }
}

/// What one node's 64 slots hold: a leaf value each, and which descend (with the range of
/// `entries` below them).
struct Plan {
    leaf: [u32; 64],
    runs: [(usize, usize); 64],
    vector: u64,
}

impl Plan {
    /// The leaf runs of the plan's leaf slots: the leafvec, the leaf of each run, how many.
    fn runs(&self) -> (u64, [u32; 64], usize) {
        let mut leafvec = 0u64;
        let mut runs = [0u32; 64];
        let mut n = 0;
        let mut last = None;
        for (c, &l) in self.leaf.iter().enumerate() {
            if self.vector & (1 << c) == 0 && last != Some(l) {
                runs[n & 63] = l;
                n += 1;
                leafvec |= 1 << c;
                last = Some(l);
            }
        }
        (leafvec, runs, n)
    }

    fn new<W: Word>(depth: u32, default: u32, entries: &[Entry<W>]) -> Plan {
        let end = depth + 6;
        let mut plan = Plan {
            leaf: [default; 64],
            runs: [(0, 0); 64],
            vector: 0,
        };
        let mut i = 0;
        // Sorted by (key, length), a prefix comes before every prefix it contains, so painting
        // in order leaves the longest match in each slot. Within one slot the prefixes that
        // end in this node (which start at the slot's first address) precede the deeper ones.
        while i < entries.len() {
            let (key, len, nh) = entries[i];
            let c = key.chunk6(depth);
            if u32::from(len) <= end {
                let span = 1usize << (end - u32::from(len));
                for l in &mut plan.leaf[c..(c + span).min(64)] {
                    *l = nh;
                }
                i += 1;
            } else {
                let mut j = i + 1;
                while j < entries.len() && entries[j].0.chunk6(depth) == c {
                    j += 1;
                }
                plan.runs[c] = (i, j);
                plan.vector |= 1 << c;
                i = j;
            }
        }
        plan
    }
}

/// Ranges of the leaf array that no compact node uses any more (left by rebuilt slots), by
/// length. A rebuilt slot's compact node goes into a free range that fits before it goes at
/// the end of the array, so a table under a stream of updates keeps its size instead of
/// growing until the next full build.
#[derive(Clone, Debug, Default)]
pub(crate) struct FreeRanges {
    by_len: Vec<Vec<u32>>,
    /// Leaves in the lists.
    total: usize,
}

impl FreeRanges {
    /// Ranges shorter than this hold no compact node (a map and at least one leaf).
    const MIN: usize = 3;
    /// Longest range length kept apart; longer ones are listed here too.
    const MAX: usize = 70;

    pub(crate) fn put(&mut self, off: u32, len: usize) {
        if len < Self::MIN {
            return;
        }
        let k = len.min(Self::MAX);
        if self.by_len.len() <= k {
            self.by_len.resize(k + 1, Vec::new());
        }
        if let Some(list) = self.by_len.get_mut(k) {
            // Longer ranges are recorded at the longest length kept apart.
            list.push(off);
            self.total += k;
        }
    }

    /// A free range of at least `len` leaves (the smallest that fits); what is left of it
    /// after `len` goes back to the lists.
    pub(crate) fn take(&mut self, len: usize) -> Option<u32> {
        let (k, off) = self
            .by_len
            .iter_mut()
            .enumerate()
            .skip(len)
            .find_map(|(k, list)| Some((k, list.pop()?)))?;
        self.total -= k;
        self.put(off + len as u32, k - len);
        Some(off)
    }

    /// Leaves in free ranges.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    pub(crate) fn clear(&mut self) {
        self.by_len.clear();
        self.total = 0;
    }
}

/// A Poptrie with the narrowest leaves that hold every next hop.
#[derive(Debug)]
pub(crate) enum Trie {
    Narrow(Poptrie<u16>),
    Wide(Poptrie<u32>),
}

impl Clone for Trie {
    fn clone(&self) -> Self {
        match self {
            Trie::Narrow(t) => Trie::Narrow(t.clone()),
            Trie::Wide(t) => Trie::Wide(t.clone()),
        }
    }

    /// Copies into the arrays `self` already has when the leaf widths agree.
    fn clone_from(&mut self, source: &Self) {
        match (self, source) {
            (Trie::Narrow(a), Trie::Narrow(b)) => a.copy_from(b),
            (Trie::Wide(a), Trie::Wide(b)) => a.copy_from(b),
            (a, b) => *a = b.clone(),
        }
    }
}

/// What a commit that patched a copy of the table changed in place, besides what it
/// appended: direct slots, full nodes rewritten, and leaf ranges reused.
#[derive(Clone, Debug, Default)]
pub(crate) struct PatchLog {
    pub(crate) slots: Vec<u32>,
    pub(crate) nodes: Vec<u32>,
    pub(crate) leaves: Vec<(u32, u32)>,
}

impl Trie {
    /// Makes `self` a copy of `source`. When `log` says how `source` was patched from a copy
    /// of `self` (the table before it), only what the patch changed is copied, not the
    /// whole arrays.
    pub(crate) fn copy_from(&mut self, source: &Self, log: Option<&PatchLog>) {
        let synced = match (&mut *self, source, log) {
            (Trie::Narrow(a), Trie::Narrow(b), Some(log)) => a.sync_from(b, log),
            (Trie::Wide(a), Trie::Wide(b), Some(log)) => a.sync_from(b, log),
            _ => false,
        };
        if !synced {
            self.clone_from(source);
        }
    }

    /// An empty trie whose leaves hold next hops up to `max_nh`.
    pub(crate) fn new(s: u32, max_nh: u32) -> Self {
        if max_nh <= <u16 as Leaf>::MAX {
            Trie::Narrow(Poptrie::new(s))
        } else {
            Trie::Wide(Poptrie::new(s))
        }
    }

    pub(crate) fn holds(&self, nh: u32) -> bool {
        match self {
            Trie::Narrow(_) => nh <= <u16 as Leaf>::MAX,
            Trie::Wide(_) => true,
        }
    }
}

macro_rules! each {
    ($t:expr, $p:ident => $e:expr) => {
        match $t {
            Trie::Narrow($p) => $e,
            Trie::Wide($p) => $e,
        }
    };
}
pub(crate) use each;
