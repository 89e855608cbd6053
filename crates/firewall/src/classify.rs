//! Packet classification on five fields: first match by priority, the way a linear scan of
//! the rules would find it, but through a compiled structure.
//!
//! # Why decision trees
//!
//! [`Classifier`] is a HiCuts-style decision tree, split EffiCuts-style into a few trees by
//! which address fields of a rule are wide, so that wildcard rules are not copied into every
//! leaf. Each inner node cuts one field into `2^k` equal parts (a shift and a mask, no
//! search), each leaf holds at most a handful of rules in priority order, and a node whose
//! region is wholly covered by one rule drops every lower-priority rule below it. Lookup cost
//! is one load per level (a parent's child slot holds the child node itself) plus a short
//! scan, independent of the number of rules; tuple-space search (TupleMerge) costs one hash
//! probe per tuple visited, and ClassBench sets at 10K rules keep tens of tuples. The figures
//! are in the crate README.
//!
//! A node cuts not its whole region but the smallest aligned box inside it that holds its
//! rules (HyperCuts' region compaction). ACL rules name hosts of one subnet: below the first
//! cuts they sit in a sliver of the field, which equal cuts of the whole region cannot
//! separate within the space factor, so the node stayed a leaf (acl1 had leaves of 20 rules
//! on average and a lookup scanned 7 entries; with compaction 2.6). A header outside the box
//! still reaches some child, where no rule can match it, which is the right answer: no rule
//! of the node reaches outside the box, and an insert that would is handled by rebuilding
//! the node.
//!
//! Every node holds the lowest priority of the rules below it, and the trees are searched
//! in the order in which they most often hold the first match (sampled at build): a lookup
//! that has found a match stops in the other trees as soon as it reaches a node with no
//! rule before that match, usually at or next to the root. Without this a set whose headers
//! mostly hit its first, wide rules (the linear scan's best case) paid the full depth of
//! every tree. Each entry of the first tree searched also records whether any rule of the
//! other trees that meets its box (within its leaf) comes before it: a batch key that
//! matches an entry with nothing before it skips the other trees altogether. An entry with
//! a few such rules (at most eight) keeps them as its list, and a batch key that matches it
//! tests those few boxes instead of walking the other trees: on ipc1, 373 of the 390
//! headers in 4,096 whose match in the first tree had rules of other trees before it, and
//! none of the 632 walks they took found anything. (Not in sets whose batches take each
//! group of keys through all the trees, nor where under one entry in 64 would have a list:
//! the test costs every key a little.) Each leaf and empty slot of that tree also records
//! which other trees hold no rule that meets the headers reaching it (and which hold none
//! meeting its region, for headers that match one of its entries): a batch key leaves
//! those trees out, where it would otherwise walk them for nothing (on ipc1, the keys that
//! match nothing in the first tree).
//!
//! Updates are incremental: an insert descends to the leaves its box overlaps and splits a
//! leaf that grows past twice the leaf size, and clears the records of the other trees'
//! entries that its box meets (or, where that would visit more than a few nodes, sets a
//! cap for the whole tree), drops the lists of those that come after it, and drops what
//! the first tree's leaves record about its tree until the next build; a delete removes
//! the rule from its leaves, drops the lists that hold it (as its insert would have), and
//! rebuilds only the subtree where it had shadowed other rules, from its tree's rule list.
//! New entries record nothing until their tree is rebuilt. The slot blocks, leaf blocks and
//! node records of replaced subtrees are reused, so an update allocates nothing in the
//! common case; a tree that updates have left much larger than a build of its rules would
//! be (leaves split for rules since deleted) is rebuilt, which keeps memory bounded under
//! churn at an amortised cost.

use std::collections::{HashMap, HashSet};

use crate::ir::{AddrRange, PortRange};

/// Number of fields: source address, destination address, source port, destination port,
/// protocol.
pub const DIMS: usize = 5;

/// A packet's five fields, host order: `[src, dst, sport, dport, proto]`. Protocols without
/// ports have ports 0.
pub type Key = [u32; DIMS];

/// Whether `k` lies in the box `lo..=hi`, field by field.
#[inline(always)]
fn in_box(lo: &Key, hi: &Key, k: &Key) -> bool {
    // Non-short-circuit on purpose: five compares beat five branches.
    (lo[0] <= k[0])
        & (k[0] <= hi[0])
        & (lo[1] <= k[1])
        & (k[1] <= hi[1])
        & (lo[2] <= k[2])
        & (k[2] <= hi[2])
        & (lo[3] <= k[3])
        & (k[3] <= hi[3])
        & (lo[4] <= k[4])
        & (k[4] <= hi[4])
}

const DIM_BITS: [u8; DIMS] = [32, 32, 16, 16, 8];

/// A rule's five fields as inclusive ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldBox {
    /// Lower bounds.
    pub lo: Key,
    /// Upper bounds.
    pub hi: Key,
}

impl FieldBox {
    /// The box that holds every packet.
    pub const ANY: FieldBox = FieldBox {
        lo: [0; DIMS],
        hi: [u32::MAX, u32::MAX, 0xffff, 0xffff, 0xff],
    };

    /// A box from its five fields; `proto: None` means any protocol.
    pub fn new(
        src: AddrRange,
        dst: AddrRange,
        sport: PortRange,
        dport: PortRange,
        proto: Option<u8>,
    ) -> FieldBox {
        let (plo, phi) = proto.map_or((0, 255), |p| (p, p));
        FieldBox {
            lo: [
                src.lo,
                dst.lo,
                u32::from(sport.lo),
                u32::from(dport.lo),
                u32::from(plo),
            ],
            hi: [
                src.hi,
                dst.hi,
                u32::from(sport.hi),
                u32::from(dport.hi),
                u32::from(phi),
            ],
        }
    }

    /// Whether the key is inside the box.
    #[inline(always)]
    pub fn contains(&self, k: &Key) -> bool {
        in_box(&self.lo, &self.hi, k)
    }

    /// The box implied by a rule's matches: the source and destination ranges, protocol and
    /// port ranges it requires (a port list gives its hull; negations and sets give the
    /// whole field). Every packet the rule matches is inside it.
    pub fn from_matches(matches: &[crate::ir::Match]) -> FieldBox {
        crate::compile::field_box(matches)
    }

    /// Whether every bound is inside its field and no range is empty.
    pub fn is_valid(&self) -> bool {
        (0..DIMS).all(|d| self.lo[d] <= self.hi[d] && self.hi[d] <= FieldBox::ANY.hi[d])
    }
}

/// A rule as the classifier sees it: its box, its priority (lower wins) and its id (which
/// breaks ties between equal priorities, lower wins, and names the rule in results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassRule {
    /// The fields.
    pub fields: FieldBox,
    /// Priority: lower wins.
    pub priority: u32,
    /// Identifier, unique within a classifier.
    pub id: u32,
    /// Whether the box is the whole rule. A rule with conditions beyond the five fields
    /// (checked by the predicate of [`Classifier::lookup_with`]) is not exact: it may fail
    /// for a packet inside its box, so it never hides the rules after it, even where its box
    /// covers a whole region of a tree.
    pub exact: bool,
}

impl ClassRule {
    /// An exact rule: its box is all it matches on.
    pub const fn new(fields: FieldBox, priority: u32, id: u32) -> ClassRule {
        ClassRule {
            fields,
            priority,
            id,
            exact: true,
        }
    }

    /// A rule with conditions beyond its box, checked by the lookup's predicate.
    pub const fn inexact(fields: FieldBox, priority: u32, id: u32) -> ClassRule {
        ClassRule {
            fields,
            priority,
            id,
            exact: false,
        }
    }

    #[inline(always)]
    fn order(&self) -> u64 {
        (u64::from(self.priority) << 32) | u64::from(self.id)
    }
}

/// Why an update was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifyError {
    /// A rule with this id is already present.
    #[error("rule id {0} is already in the classifier")]
    DuplicateId(u32),
    /// A range is empty or exceeds its field.
    #[error("rule id {0} has an empty or out-of-range field")]
    BadBox(u32),
}

/// The reference classifier: every rule in order, scanned until the first match. Used as the
/// test oracle and the benchmark baseline.
///
/// The scan tests eight rules at a time: their boxes are also kept field by field, as low
/// corners and widths in rows of eight, so that one rule test is a subtraction and a compare
/// per field that the compiler does eight lanes at a time in AVX2 registers (four in SSE),
/// with no branch but the one that asks whether any of the eight matched; the first block
/// where one did is then tested rule by rule. A rule at a time, from the rule structs, took
/// 1.55 ns a rule on the ClassBench sets at 10K rules (x86-64-v2 build).
#[derive(Debug, Clone, Default)]
pub struct LinearClassifier {
    /// Every rule, in order (priority, then id).
    rules: Vec<ClassRule>,
    /// The same boxes, eight to a block.
    blocks: Vec<ScanBlock>,
}

/// Rules a [`ScanBlock`] holds.
const SCAN_LANES: usize = 8;

/// Eight rule boxes, field by field: `lo[d][j]` and `width[d][j]` are field `d` of rule `j`
/// (a key's field `x` is in the range when `x - lo` wraps to at most `width`).
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct ScanBlock {
    lo: [[u32; SCAN_LANES]; DIMS],
    width: [[u32; SCAN_LANES]; DIMS],
}

impl ScanBlock {
    /// The block of `rules` (one to eight). Lanes past the last rule repeat it, so that a
    /// key meets a lane of the block exactly when it meets one of `rules`.
    fn of(rules: &[ClassRule]) -> ScanBlock {
        let mut b = ScanBlock::default();
        for j in 0..SCAN_LANES {
            if let Some(r) = rules.get(j).or(rules.last()) {
                for d in 0..DIMS {
                    b.lo[d][j] = r.fields.lo[d];
                    b.width[d][j] = r.fields.hi[d].wrapping_sub(r.fields.lo[d]);
                }
            }
        }
        b
    }

    /// Whether any of the block's rules holds `key`: all eight tested at once, with no
    /// branch (which of them comes first is then found by testing the block's rules in
    /// turn, once a lookup).
    #[inline(always)]
    fn any(&self, key: &Key) -> bool {
        let mut m = [u32::MAX; SCAN_LANES];
        for (d, &k) in key.iter().enumerate() {
            let (lo, width) = (&self.lo[d], &self.width[d]);
            for j in 0..SCAN_LANES {
                m[j] &= 0u32.wrapping_sub(u32::from(k.wrapping_sub(lo[j]) <= width[j]));
            }
        }
        m.iter().fold(0, |a, &v| a | v) != 0
    }
}

impl LinearClassifier {
    /// A classifier holding `rules`.
    pub fn new(rules: impl IntoIterator<Item = ClassRule>) -> Result<Self, ClassifyError> {
        let rules: Vec<ClassRule> = rules.into_iter().collect();
        let mut ids = HashSet::with_capacity(rules.len());
        for r in &rules {
            if !r.fields.is_valid() {
                return Err(ClassifyError::BadBox(r.id));
            }
            if !ids.insert(r.id) {
                return Err(ClassifyError::DuplicateId(r.id));
            }
        }
        let mut c = LinearClassifier {
            rules,
            blocks: Vec::new(),
        };
        c.rules.sort_by_key(ClassRule::order);
        c.reblock(0);
        Ok(c)
    }
    /// Adds a rule.
    pub fn insert(&mut self, rule: ClassRule) -> Result<(), ClassifyError> {
        if !rule.fields.is_valid() {
            return Err(ClassifyError::BadBox(rule.id));
        }
        if self.rules.iter().any(|r| r.id == rule.id) {
            return Err(ClassifyError::DuplicateId(rule.id));
        }
        let at = self.rules.partition_point(|r| r.order() < rule.order());
        self.rules.insert(at, rule);
        self.reblock(at);
        Ok(())
    }
    /// Removes the rule with this id; false if there was none.
    pub fn remove(&mut self, id: u32) -> bool {
        let Some(at) = self.rules.iter().position(|r| r.id == id) else {
            return false;
        };
        self.rules.remove(at);
        self.reblock(at);
        true
    }
    /// Rebuilds the blocks from the one holding rule `at` on (the rules from there on
    /// moved by one).
    fn reblock(&mut self, at: usize) {
        let first = at / SCAN_LANES;
        self.blocks.truncate(first);
        self.blocks.extend(
            self.rules
                .get(first * SCAN_LANES..)
                .unwrap_or_default()
                .chunks(SCAN_LANES)
                .map(ScanBlock::of),
        );
    }
    /// The id of the first rule matching `key`.
    pub fn lookup(&self, key: &Key) -> Option<u32> {
        let b = self.blocks.iter().position(|b| b.any(key))?;
        let rules = self.rules.get(b * SCAN_LANES..)?;
        rules
            .iter()
            .take(SCAN_LANES)
            .find(|r| r.fields.contains(key))
            .map(|r| r.id)
    }
    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }
    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Tuning of the decision trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeConfig {
    /// Most rules in a leaf after a build (HiCuts `binth`).
    pub leaf_size: usize,
    /// Space factor: a node's children may hold at most `space_factor` times its rules
    /// (HiCuts `spfac`).
    pub space_factor: usize,
    /// Most bits one node cuts (at most `2^max_cut_bits` children).
    pub max_cut_bits: u8,
    /// Memory bound: a tree holds at most about `memory_factor` leaf entries per rule
    /// (replicas of wide rules included); past it, leaves grow instead of the tree.
    pub memory_factor: usize,
    /// A rule's address field is wide when it spans at least `2^wide_bits` addresses; rules
    /// go to one of four trees by whether their source and destination are wide.
    pub wide_bits: u8,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            leaf_size: 8,
            space_factor: 4,
            max_cut_bits: 12,
            memory_factor: 32,
            wide_bits: 24,
        }
    }
}

const LEAF: u8 = u8::MAX;
/// Keys a batch walks down a tree together (see [`Classifier::lookup_batch`]). A group
/// takes as many rounds as its deepest key, and every round passes over every key of the
/// group, with the per-key loops unrolled. Eight keep more loads in flight than six at
/// about the same instructions per key, and mispredict fewer branches (in alternating
/// runs, ipc1 ran 5% faster, acl1 4%, generated 50K 4%); four leave too few in flight, and
/// ten or twelve cost more instructions (twelve a third more).
const G: usize = 8;
/// Keys a batch takes through the trees at a time: whole groups, and at most 256 (a key's
/// place in the chunk is a byte).
const CHUNK: usize = 248;
const NO_SHADOW: u64 = u64::MAX;

/// A node as its parent's child slot holds it, so that a lookup takes one load per level.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Inner node: first child slot in `slots`. Leaf: first entry in `entries`.
    first: u32,
    /// A lower bound of the priority of every rule below: a lookup that already holds a
    /// better match stops here. `u32::MAX` for an empty region.
    min: u32,
    /// Index into `info`.
    info: u32,
    /// Inner node: the mask of the cut. Leaf: how many entries it holds (saturated at
    /// `u16::MAX`).
    mask: u16,
    /// The field cut, or [`LEAF`].
    dim: u8,
    /// Inner node: the shift of the cut. Leaf or empty slot of the first tree searched:
    /// its skip byte (see [`Tree::skip_mask`]), 0 elsewhere.
    shift: u8,
}

/// A leaf's `mask`: its number of entries, saturated (a scan of a saturated leaf goes on to
/// its end marker).
fn leaf_len(n: usize) -> u16 {
    n.min(usize::from(u16::MAX)) as u16
}

/// The empty leaf that empty regions hold: entry 0 (the end marker), info 0.
const EMPTY: Node = Node {
    first: 0,
    min: u32::MAX,
    info: 0,
    mask: 0,
    dim: LEAF,
    shift: 0,
};

impl Node {
    #[inline(always)]
    fn pruned(&self, best: u64) -> bool {
        (u64::from(self.min) << 32) >= best
    }
    fn is_empty(&self) -> bool {
        self.info == 0
    }
}

/// A leaf entry: the rule's box and order, in 48 bytes. The box is kept as its low
/// corner and widths, so that each field is one subtraction and one compare. The
/// protocol's width takes the low 8 bits of `width[4]`; the high 24 hold the entry's
/// bound: no rule of another tree that overlaps the part of the box inside the leaf's
/// region has a smaller priority (saturated at `2^24 - 1`, 0 when not known). The
/// protocol's low bound likewise takes the low 8 bits of `lo[4]`; the high 24 hold where
/// the entry's list starts in its tree's `pre` (0: none). The list holds, in order, the
/// rules of other trees that come before the entry and meet that part of its box: a key
/// that matches the entry has its first match among the list's rules or else the entry,
/// with no other tree to search. An insert into another tree that meets the box before
/// the entry drops the list, as it lowers the bound.
#[derive(Debug, Clone, Copy)]
struct Entry {
    lo: Key,
    width: Key,
    order: u64,
}

/// The largest bound an entry holds.
const BOUND_MAX: u32 = 0xff_ffff;

/// Ends every leaf: its order stops the scan.
const END: Entry = Entry {
    lo: [u32::MAX; DIMS],
    width: [0; DIMS],
    order: u64::MAX,
};

impl Entry {
    fn of(r: &ClassRule) -> Entry {
        let (lo, hi) = (r.fields.lo, r.fields.hi);
        Entry {
            lo,
            width: core::array::from_fn(|d| hi[d] - lo[d]),
            order: r.order(),
        }
    }
    /// Whether the key is in the box: its first [`DIMS`] fields (a batch pads its keys to
    /// eight).
    #[inline(always)]
    fn contains<const N: usize>(&self, k: &[u32; N]) -> bool {
        self.contains_as::<N, true>(k)
    }
    /// [`Entry::contains`]; with `LISTED` false, for an entry known to have no list (all of
    /// a tree's entries but those of the first tree a batch searches tree by tree), whose
    /// protocol low bound needs no mask.
    #[inline(always)]
    fn contains_as<const N: usize, const LISTED: bool>(&self, k: &[u32; N]) -> bool {
        const { assert!(N >= DIMS) };
        let (lo, w) = (&self.lo, &self.width);
        let proto_lo = if LISTED { lo[4] & 0xff } else { lo[4] };
        // Non-short-circuit on purpose, as in `in_box`.
        (k[0].wrapping_sub(lo[0]) <= w[0])
            & (k[1].wrapping_sub(lo[1]) <= w[1])
            & (k[2].wrapping_sub(lo[2]) <= w[2])
            & (k[3].wrapping_sub(lo[3]) <= w[3])
            & (k[4].wrapping_sub(proto_lo) <= w[4] & 0xff)
    }
    /// Where the entry's list starts in its tree's `pre` (see [`Entry`]).
    #[inline(always)]
    fn list(&self) -> usize {
        (self.lo[4] >> 8) as usize
    }
    fn set_list(&mut self, at: u32) {
        self.lo[4] = (self.lo[4] & 0xff) | (at << 8);
    }
    /// See [`Entry`].
    #[inline(always)]
    fn bound(&self) -> u32 {
        self.width[4] >> 8
    }
    fn lower_bound(&mut self, b: u32) {
        if b < self.bound() {
            self.width[4] = (self.width[4] & 0xff) | (b << 8);
        }
    }
    fn set_bound(&mut self, b: u32) {
        self.width[4] = (self.width[4] & 0xff) | (b.min(BOUND_MAX) << 8);
    }
    /// The width of field `d`, without the bound.
    fn width(&self, d: usize) -> u32 {
        self.width[d] & if d == 4 { 0xff } else { u32::MAX }
    }
    /// The low bound of field `d`, without the list.
    fn lo(&self, d: usize) -> u32 {
        self.lo[d] & if d == 4 { 0xff } else { u32::MAX }
    }
    /// Whether the box meets `b`.
    fn overlaps(&self, b: &FieldBox) -> bool {
        (0..DIMS)
            .all(|d| self.lo(d) <= b.hi[d] && b.lo[d] - self.lo(d).min(b.lo[d]) <= self.width(d))
    }
    /// The box, clipped to `r`.
    fn clipped(&self, r: &Region) -> FieldBox {
        FieldBox {
            lo: core::array::from_fn(|d| self.lo(d).max(r.base[d])),
            hi: core::array::from_fn(|d| (self.lo(d) + self.width(d)).min(r.hi(d))),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Region {
    base: Key,
    bits: [u8; DIMS],
}

impl Region {
    const ROOT: Region = Region {
        base: [0; DIMS],
        bits: DIM_BITS,
    };
    #[inline]
    fn hi(&self, d: usize) -> u32 {
        let w = if self.bits[d] >= 32 {
            u32::MAX
        } else {
            (1u32 << self.bits[d]) - 1
        };
        self.base[d] | w
    }
    fn overlaps(&self, b: &FieldBox) -> bool {
        (0..DIMS).all(|d| b.lo[d] <= self.hi(d) && b.hi[d] >= self.base[d])
    }
    fn covered_by(&self, b: &FieldBox) -> bool {
        (0..DIMS).all(|d| b.lo[d] <= self.base[d] && b.hi[d] >= self.hi(d))
    }
    /// The child indexes (inclusive) a box spans when cutting `d` into `2^k` parts.
    fn span(&self, b: &FieldBox, d: usize, k: u8) -> (u32, u32) {
        let shift = self.bits[d] - k;
        let mask = (1u32 << k) - 1;
        let lo = b.lo[d].max(self.base[d]);
        let hi = b.hi[d].min(self.hi(d));
        ((lo >> shift) & mask, (hi >> shift) & mask)
    }
    /// The smallest region, aligned field by field like a cut's part, that holds every
    /// rule's box within this region. Cutting it instead of the whole region separates
    /// rules that cluster in a small part of a field (hosts of one subnet), which equal
    /// cuts of the whole field cannot reach within the space factor.
    fn compact(&self, rules: &[ClassRule]) -> Region {
        let mut r = *self;
        for d in 0..DIMS {
            let (mut lo, mut hi) = (u32::MAX, 0);
            for x in rules {
                lo = lo.min(x.fields.lo[d].max(self.base[d]));
                hi = hi.max(x.fields.hi[d].min(self.hi(d)));
            }
            let bits = (32 - (lo ^ hi).leading_zeros()) as u8;
            if bits < self.bits[d] {
                r.bits[d] = bits;
                r.base[d] = if bits == 0 {
                    lo
                } else {
                    lo & !((1u32 << bits) - 1)
                };
            }
        }
        r
    }
    /// Whether the part of `b` inside `outer` lies in this region (its compaction).
    fn holds(&self, b: &FieldBox, outer: &Region) -> bool {
        (0..DIMS).all(|d| {
            b.lo[d].max(outer.base[d]) >= self.base[d] && b.hi[d].min(outer.hi(d)) <= self.hi(d)
        })
    }
    fn child(&self, d: usize, k: u8, i: u32) -> Region {
        let mut r = *self;
        r.bits[d] -= k;
        r.base[d] |= i << r.bits[d];
        r
    }
}

#[derive(Debug, Clone, Copy)]
struct NodeInfo {
    region: Region,
    /// For an inner node: the part of `region` its cut divides, the smallest aligned box
    /// holding its rules ([`Region::compact`]). A header outside it reaches some child
    /// all the same, but no rule there can match it: an insert that would break this
    /// rebuilds the node.
    cut: Region,
    /// The order (priority and id) of a rule that covers the region and caused
    /// lower-priority rules to be left out of this subtree; deleting it rebuilds the subtree.
    shadow: u64,
    /// For a leaf: the size past which an insert splits it (twice its size when built, so
    /// that a leaf no cut could split is not rebuilt on every insert).
    split_at: u32,
    /// For a leaf: rules in it, and entries reserved for it (the end marker included).
    len: u32,
    cap: u32,
}

/// Where a node hangs: a child slot, or the root.
type At = Option<usize>;

#[derive(Debug, Clone)]
struct Tree {
    /// Child slots of the inner nodes, each holding its child node.
    slots: Vec<Node>,
    info: Vec<NodeInfo>,
    /// Leaf contents, each leaf in priority order and ended by [`END`].
    entries: Vec<Entry>,
    root: Node,
    /// The tree's rules, in no order (`Classifier::index` holds their positions).
    list: Vec<ClassRule>,
    /// A lower bound of the order of every rule in the tree.
    min_order: u64,
    /// Slots and entries no longer reachable and too large to reuse: past a bound the tree
    /// is rebuilt, so that updates do not grow it without end.
    dead: usize,
    /// Blocks of replaced subtrees and moved leaves, for reuse: entry blocks by size, slot
    /// blocks by cut bits, info records.
    free_entries: Vec<Vec<u32>>,
    free_slots: Vec<Vec<u32>>,
    free_info: Vec<u32>,
    /// Slots and entries in use, and in use after the last full build: updates that leave
    /// the tree much larger than a build would (splits of leaves whose rules are deleted
    /// again) rebuild it.
    used: usize,
    built: usize,
    /// A bound below every entry's own: inserts into other trees whose rules reach more
    /// leaves here than an insert should visit lower this instead (see
    /// [`Tree::lower_bounds`]).
    cap: u32,
    /// The trees whose bits in the skip bytes still hold: an insert into a tree clears its
    /// bit, until this tree's bounds are set again.
    skip_ok: u8,
    /// The entries' lists (see [`Entry`]), each ended by [`END`]; `pre[0]` is the empty
    /// list.
    pre: Vec<Entry>,
    /// The ids of the rules in `pre`: deleting one of them drops the lists of the entries it
    /// meets here, as inserting it would.
    pre_ids: HashSet<u32>,
}

/// Makes room for `add` more elements, growing by an eighth rather than doubling: the
/// arrays of a tree are its memory, and a built tree holds them at their size.
fn grow<T>(v: &mut Vec<T>, add: usize) {
    if v.len() + add > v.capacity() {
        v.reserve_exact(add.max(v.capacity() / 8).max(64));
    }
}

/// Nodes a search for an entry's bound visits in each other tree before giving up (and
/// leaving the bound at 0).
const BOUND_BUDGET: u32 = 16;

/// Most rules in an entry's list (see [`Entry`]): an entry that more rules of other trees
/// come before has no bound.
const LIST_MAX: usize = 8;

/// Nodes a search for an entry's list visits in each other tree before giving up.
const LIST_BUDGET: u32 = 64;

/// A tree's entries have lists only when at least one in this many has one.
const LIST_SHARE: usize = 64;

/// Entry blocks up to this size are reused; larger ones count as dead.
const REUSE_MAX: usize = 64;

impl Tree {
    fn new() -> Tree {
        Tree {
            slots: Vec::new(),
            info: vec![NodeInfo {
                region: Region::ROOT,
                cut: Region::ROOT,
                shadow: NO_SHADOW,
                split_at: 0,
                len: 0,
                cap: 1,
            }],
            entries: vec![END],
            root: EMPTY,
            list: Vec::new(),
            min_order: u64::MAX,
            dead: 0,
            free_entries: vec![Vec::new(); REUSE_MAX + 1],
            free_slots: vec![Vec::new(); 17],
            free_info: Vec::new(),
            used: 0,
            built: 0,
            cap: 0,
            skip_ok: 0,
            pre: vec![END],
            pre_ids: HashSet::new(),
        }
    }

    /// Builds the tree anew from its rule list (whose order is kept: the index holds
    /// positions in it).
    fn rebuild(&mut self, cfg: &TreeConfig) {
        let list = core::mem::take(&mut self.list);
        let mut rules = list.clone();
        rules.sort_unstable_by_key(ClassRule::order);
        *self = Tree::new();
        self.list = list;
        self.min_order = rules.first().map_or(u64::MAX, ClassRule::order);
        let b = cfg.memory_factor * rules.len() + 1024;
        self.root = self.build(rules, Region::ROOT, cfg, 0, b, true);
        self.built = self.used;
        self.slots.shrink_to_fit();
        self.info.shrink_to_fit();
        self.entries.shrink_to_fit();
    }

    /// Whether replaced subtrees hold enough dead space to rebuild.
    fn bloated(&self) -> bool {
        (self.dead > 65_536 && 2 * self.dead > self.entries.len() + self.slots.len())
            || self.used > 2 * self.built + 4096
    }

    fn get(&self, at: At) -> Node {
        match at {
            Some(s) => self.slots[s],
            None => self.root,
        }
    }

    fn set(&mut self, at: At, node: Node) {
        match at {
            Some(s) => self.slots[s] = node,
            None => self.root = node,
        }
    }

    /// A record in `info`.
    fn new_info(&mut self, info: NodeInfo) -> u32 {
        match self.free_info.pop() {
            Some(i) => {
                self.info[i as usize] = info;
                i
            }
            None => {
                grow(&mut self.info, 1);
                self.info.push(info);
                (self.info.len() - 1) as u32
            }
        }
    }

    /// A block of `1 << k` empty child slots.
    fn new_slots(&mut self, k: u8) -> usize {
        let count = 1usize << k;
        self.used += count;
        match self.free_slots[usize::from(k)].pop() {
            Some(first) => {
                let first = first as usize;
                self.slots[first..first + count].fill(EMPTY);
                first
            }
            None => {
                let first = self.slots.len();
                grow(&mut self.slots, count);
                self.slots.resize(first + count, EMPTY);
                first
            }
        }
    }

    /// A block of `cap` entries holding `rules` and end markers.
    fn new_entries(&mut self, rules: impl Iterator<Item = Entry>, cap: usize) -> usize {
        self.used += cap;
        match self.free_entries.get_mut(cap).and_then(Vec::pop) {
            Some(first) => {
                let first = first as usize;
                let mut i = first;
                for e in rules {
                    self.entries[i] = e;
                    i += 1;
                }
                self.entries[i..first + cap].fill(END);
                first
            }
            None => {
                let first = self.entries.len();
                grow(&mut self.entries, cap);
                self.entries.extend(rules);
                self.entries.resize(first + cap, END);
                first
            }
        }
    }

    fn free_entry_block(&mut self, first: usize, cap: usize) {
        self.used -= cap;
        match self.free_entries.get_mut(cap) {
            Some(list) => list.push(first as u32),
            None => self.dead += cap,
        }
    }

    /// Builds a subtree for `rules` (in order) over `region`. With `truncate`, a rule that
    /// covers a node's region drops the rules after it below that node (and deleting it
    /// rebuilds the node); a leaf that splits on insert is built without, so that the rule
    /// just inserted does not become one whose deletion rebuilds.
    fn build(
        &mut self,
        mut rules: Vec<ClassRule>,
        region: Region,
        cfg: &TreeConfig,
        depth: u32,
        budget: usize,
        truncate: bool,
    ) -> Node {
        let mut shadow = NO_SHADOW;
        if truncate
            && let Some(i) = rules
                .iter()
                .position(|r| r.exact && region.covered_by(&r.fields))
            && i + 1 < rules.len()
        {
            shadow = rules[i].order();
            rules.truncate(i + 1);
        }
        if rules.is_empty() {
            return EMPTY;
        }
        let n = rules.len();
        let cr = region.compact(&rules);
        let cut = if n <= cfg.leaf_size || depth > 40 || budget < n + 4 {
            None
        } else {
            choose_cut(&rules, &cr, cfg, budget)
        };
        let Some((d, k)) = cut else {
            return self.new_leaf(&rules, region, shadow);
        };
        let info = self.new_info(NodeInfo {
            region,
            cut: cr,
            shadow,
            split_at: 0,
            len: 0,
            cap: 0,
        });
        let first = self.new_slots(k);
        let count = 1usize << k;
        let mut parts: Vec<Vec<ClassRule>> = vec![Vec::new(); count];
        for r in &rules {
            let (a, b) = cr.span(&r.fields, d, k);
            for p in &mut parts[a as usize..=b as usize] {
                p.push(*r);
            }
        }
        let min = rules[0].priority;
        drop(rules);
        // Share the subtree's budget among the children by size, so that no subtree can
        // grow the whole tree past its memory bound.
        let total: usize = parts.iter().map(Vec::len).sum::<usize>().max(1);
        let spare = budget.saturating_sub(count);
        for (i, part) in parts.into_iter().enumerate() {
            let b = spare * part.len() / total;
            let r = cr.child(d, k, i as u32);
            let child = self.build(part, r, cfg, depth + 1, b, truncate);
            self.slots[first + i] = child;
        }
        Node {
            first: first as u32,
            min,
            info,
            mask: ((1u32 << k) - 1) as u16,
            dim: d as u8,
            shift: cr.bits[d] - k,
        }
    }

    fn new_leaf(&mut self, rules: &[ClassRule], region: Region, shadow: u64) -> Node {
        // One spare entry, so that the first insert does not move the leaf.
        let cap = rules.len() + 2;
        let first = self.new_entries(rules.iter().map(Entry::of), cap);
        let info = self.new_info(NodeInfo {
            region,
            cut: region,
            shadow,
            split_at: 2 * rules.len() as u32,
            len: rules.len() as u32,
            cap: cap as u32,
        });
        Node {
            first: first as u32,
            min: rules.first().map_or(u32::MAX, |r| r.priority),
            info,
            mask: leaf_len(rules.len()),
            dim: LEAF,
            shift: 0,
        }
    }

    /// Frees a replaced subtree's slots, entries and info records for reuse.
    fn bury(&mut self, n: Node) {
        if n.is_empty() {
            return;
        }
        self.free_info.push(n.info);
        if n.dim == LEAF {
            let cap = self.info[n.info as usize].cap as usize;
            self.free_entry_block(n.first as usize, cap);
            return;
        }
        let count = usize::from(n.mask) + 1;
        self.free_slots[count.trailing_zeros() as usize].push(n.first);
        self.used -= count;
        for s in n.first as usize..n.first as usize + count {
            let c = self.slots[s];
            self.bury(c);
        }
    }

    /// The first rule (in order, from `min`, before `best`) matching `key` and `pred`.
    #[inline]
    fn lookup<F: FnMut(u32) -> bool>(
        &self,
        key: &Key,
        min: u64,
        best: &mut u64,
        pred: &mut F,
    ) -> Option<u32> {
        let mut n = self.root;
        while n.dim != LEAF {
            if n.pruned(*best) {
                return None;
            }
            let v = key[n.dim as usize];
            n = self.slots[n.first as usize + ((v >> n.shift) & u32::from(n.mask)) as usize];
        }
        for e in &self.entries[n.first as usize..] {
            let o = e.order;
            if o >= *best {
                break;
            }
            if o >= min && e.contains(key) && pred(o as u32) {
                *best = o;
                return Some(o as u32);
            }
        }
        None
    }

    /// Whether a rule of the tree that meets `bx` has a priority of at most `p`; also
    /// when finding out would take more than `budget` nodes.
    fn any_before(&self, bx: &FieldBox, p: u32, mut budget: u32) -> bool {
        !self.none_before(self.root, bx, p, &mut budget)
    }

    fn none_before(&self, n: Node, bx: &FieldBox, p: u32, budget: &mut u32) -> bool {
        if n.min > p {
            return true;
        }
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        if n.dim == LEAF {
            return self.entries[n.first as usize..]
                .iter()
                .take_while(|e| e.order != u64::MAX && (e.order >> 32) as u32 <= p)
                .all(|e| !e.overlaps(bx));
        }
        let cut = self.info[n.info as usize].cut;
        if !cut.overlaps(bx) {
            return true;
        }
        let (d, k) = (n.dim as usize, n.mask.count_ones() as u8);
        let (a, b) = cut.span(bx, d, k);
        (a..=b).all(|i| self.none_before(self.slots[n.first as usize + i as usize], bx, p, budget))
    }

    /// Adds to `out` the entries below `n` that come before `order` and meet `bx` (each rule
    /// once); false when they are more than `max`, or finding them would take more than
    /// `budget` nodes.
    fn collect_before(
        &self,
        n: Node,
        bx: &FieldBox,
        order: u64,
        budget: &mut u32,
        out: &mut Vec<Entry>,
        max: usize,
    ) -> bool {
        if u64::from(n.min) << 32 >= order {
            return true;
        }
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        if n.dim == LEAF {
            for e in &self.entries[n.first as usize..] {
                if e.order >= order {
                    break;
                }
                if e.overlaps(bx) && !out.iter().any(|x| x.order == e.order) {
                    if out.len() == max {
                        return false;
                    }
                    let mut c = *e;
                    c.set_bound(0);
                    c.set_list(0);
                    out.push(c);
                }
            }
            return true;
        }
        let cut = self.info[n.info as usize].cut;
        if !cut.overlaps(bx) {
            return true;
        }
        let (d, k) = (n.dim as usize, n.mask.count_ones() as u8);
        let (a, b) = cut.span(bx, d, k);
        (a..=b).all(|i| {
            let c = self.slots[n.first as usize + i as usize];
            self.collect_before(c, bx, order, budget, out, max)
        })
    }

    /// Lowers to `p` the bounds of the entries whose boxes meet `bx` (a rule of priority
    /// `p` inserted into another tree) and drops the lists of those after it, or lowers the
    /// tree's cap when that would take more than a few nodes.
    fn lower_bounds(&mut self, bx: &FieldBox, p: u32) {
        if self.cap <= p {
            return;
        }
        let mut budget = BOUND_BUDGET;
        if !self.lower_node(self.root, bx, p, &mut budget) {
            self.cap = p;
        }
    }

    fn lower_node(&mut self, n: Node, bx: &FieldBox, p: u32, budget: &mut u32) -> bool {
        if n.is_empty() {
            return true;
        }
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        let info = self.info[n.info as usize];
        if n.dim == LEAF {
            let s = n.first as usize;
            for e in &mut self.entries[s..s + info.len as usize] {
                if e.overlaps(bx) {
                    e.lower_bound(p);
                    if (e.order >> 32) as u32 >= p {
                        e.set_list(0);
                    }
                }
            }
            return true;
        }
        if !info.cut.overlaps(bx) {
            return true;
        }
        let (d, k) = (n.dim as usize, n.mask.count_ones() as u8);
        let (a, b) = info.cut.span(bx, d, k);
        (a..=b).all(|i| {
            let c = self.slots[n.first as usize + i as usize];
            self.lower_node(c, bx, p, budget)
        })
    }

    /// The trees a header can skip after this one (a bit by tree index), from the skip
    /// byte of the leaf or empty slot it reached here and whether it matched there. The low
    /// four bits of the byte are the trees that hold no rule meeting any header that can
    /// reach the node (a header outside a node's cut part still reaches one of its
    /// children); the high four, the trees that hold none meeting the leaf's region, where
    /// a header that matches one of the leaf's entries lies. 0 where unknown (leaves made
    /// by updates, and in the other trees).
    #[inline(always)]
    fn skip_mask(&self, byte: u8, matched: bool) -> u8 {
        let m = if matched { byte | byte >> 4 } else { byte };
        m & self.skip_ok
    }

    /// Lowers each key's best match (order, `u64::MAX` for none) to its first match in
    /// this tree, walking the keys down together a level at a time. `lim` is what nodes
    /// are pruned against: the best match, or 0 once an entry's bound shows that no other
    /// tree has anything better. `fresh`: no key has a match yet, so no node is pruned.
    /// With `fresh`, `skip` gets the skip byte of each key's leaf (see
    /// [`Tree::skip_mask`]). `LISTS`: the tree's entries may have lists (see [`Entry`]),
    /// which settle the keys that match them.
    #[inline(always)]
    fn walk_group<const LISTS: bool>(
        &self,
        k: &[[u32; 8]; G],
        best: &mut [u64; G],
        lim: &mut [u64; G],
        skip: &mut [u8; G],
        fresh: bool,
    ) {
        let mut cur = [self.root; G];
        // The slice itself, not the vector through `self`: its base and length stay in
        // registers across the unrolled steps instead of being read again at each.
        let slots = &self.slots[..];
        loop {
            let mut more = false;
            for i in 0..G {
                let c = cur[i];
                if c.dim != LEAF {
                    if !fresh && c.pruned(lim[i]) {
                        cur[i] = EMPTY;
                        continue;
                    }
                    let v = k[i][usize::from(c.dim & 7)];
                    let slot = c.first as usize + ((v >> c.shift) & u32::from(c.mask)) as usize;
                    cur[i] = slots[slot];
                    more = true;
                }
            }
            if !more {
                break;
            }
        }
        // Start every key's leaf loading before scanning any: the scans branch on what
        // they find, which would otherwise leave one miss in flight at a time.
        let mut touch = 0u64;
        for c in &cur {
            touch ^= self.entries[c.first as usize].order;
        }
        std::hint::black_box(touch);
        let cap = self.cap;
        for i in 0..G {
            if fresh {
                skip[i] = cur[i].shift;
            }
            if cur[i].pruned(lim[i]) {
                continue;
            }
            let start = cur[i].first as usize;
            if fresh && cur[i].mask != u16::MAX {
                // No key has a match yet: the scan ends at the leaf's first match or its
                // last entry, with no test of the order.
                let leaf = &self.entries[start..start + usize::from(cur[i].mask)];
                if let Some(e) = leaf.iter().find(|e| e.contains_as::<8, LISTS>(&k[i])) {
                    self.take::<LISTS>(e, &k[i], &mut best[i], &mut lim[i], cap);
                }
                continue;
            }
            for e in &self.entries[start..] {
                if e.order >= best[i] {
                    break;
                }
                if e.contains_as::<8, LISTS>(&k[i]) {
                    self.take::<LISTS>(e, &k[i], &mut best[i], &mut lim[i], cap);
                    break;
                }
            }
        }
    }

    /// Makes `e`, which holds the key and comes before `best`, the key's best match, and
    /// sets the key's limit from the entry's bound and list.
    #[inline(always)]
    fn take<const LISTS: bool>(
        &self,
        e: &Entry,
        k: &[u32; 8],
        best: &mut u64,
        lim: &mut u64,
        cap: u32,
    ) {
        *best = e.order;
        // Nothing in the other trees comes before this match: done.
        let p = e.order >> 32;
        let done = p < u64::from(e.bound().min(cap));
        *lim = if done { 0 } else { e.order };
        if LISTS && !done && e.list() != 0 && p < u64::from(cap) {
            // Nothing but the rules of its list: done with the first of them that matches,
            // if any.
            *lim = 0;
            for c in &self.pre[e.list()..] {
                if c.order >= *best {
                    break;
                }
                if c.contains(k) {
                    *best = c.order;
                    break;
                }
            }
        }
    }

    /// Adds `rule` under the node at `at`, whose region is `region`. `index` finds the
    /// tree's rules by id (a leaf that splits is rebuilt from them).
    fn insert(
        &mut self,
        at: At,
        region: Region,
        rule: &ClassRule,
        index: &HashMap<u32, (u8, u32)>,
        cfg: &TreeConfig,
    ) {
        let mut n = self.get(at);
        if n.is_empty() {
            let leaf = self.new_leaf(core::slice::from_ref(rule), region, NO_SHADOW);
            self.set(at, leaf);
            return;
        }
        let info = self.info[n.info as usize];
        if info.shadow < rule.order() {
            // A rule covering this whole region comes first: `rule` can never win here.
            return;
        }
        if rule.priority < n.min {
            n.min = rule.priority;
            self.set(at, n);
        }
        if n.dim == LEAF {
            let (start, len, cap) = (n.first as usize, info.len as usize, info.cap as usize);
            let o = rule.order();
            let at_pos = start + self.entries[start..start + len].partition_point(|e| e.order < o);
            if len + 1 < cap {
                self.entries
                    .copy_within(at_pos..start + len + 1, at_pos + 1);
                self.entries[at_pos] = Entry::of(rule);
            } else {
                // Move the leaf to a block with room to grow.
                let new_cap = 2 * cap;
                let mut block = [END; REUSE_MAX];
                let moved: &[Entry] = if len < REUSE_MAX {
                    block[..at_pos - start].copy_from_slice(&self.entries[start..at_pos]);
                    block[at_pos - start] = Entry::of(rule);
                    block[at_pos - start + 1..=len]
                        .copy_from_slice(&self.entries[at_pos..start + len]);
                    &block[..=len]
                } else {
                    &[]
                };
                let new = if len < REUSE_MAX {
                    self.new_entries(moved.iter().copied(), new_cap)
                } else {
                    let new = self.entries.len();
                    grow(&mut self.entries, new_cap);
                    self.entries.extend_from_within(start..at_pos);
                    self.entries.push(Entry::of(rule));
                    self.entries.extend_from_within(at_pos..start + len);
                    self.entries.resize(new + new_cap, END);
                    self.used += new_cap;
                    new
                };
                self.free_entry_block(start, cap);
                self.info[n.info as usize].cap = new_cap as u32;
                n.first = new as u32;
                self.set(at, n);
            }
            let li = &mut self.info[n.info as usize];
            li.len += 1;
            let (len, split_at) = (li.len as usize, li.split_at as usize);
            n.mask = leaf_len(len);
            self.set(at, n);
            if len > split_at.max(2 * cfg.leaf_size) {
                let s = n.first as usize;
                let rules: Vec<ClassRule> = self.entries[s..s + len]
                    .iter()
                    .map(|e| {
                        let pos = index.get(&(e.order as u32)).map_or(0, |x| x.1);
                        self.list[pos as usize]
                    })
                    .collect();
                let b = cfg.memory_factor * rules.len() + 64;
                let mut new = self.build(rules, info.region, cfg, 0, b, true);
                if !new.is_empty() && self.info[new.info as usize].shadow == NO_SHADOW {
                    self.info[new.info as usize].shadow = info.shadow;
                }
                new.min = new.min.min(n.min);
                self.bury(n);
                self.set(at, new);
            }
            return;
        }
        if !info.cut.holds(&rule.fields, &info.region) {
            // The rule reaches outside the part the node cuts: rebuild the node from the
            // tree's rules (`rule` among them).
            let region = info.region;
            let mut new = self.build_region(region, cfg);
            if !new.is_empty() && self.info[new.info as usize].shadow == NO_SHADOW {
                self.info[new.info as usize].shadow = info.shadow;
            }
            new.min = new.min.min(n.min);
            self.bury(n);
            self.set(at, new);
            return;
        }
        let d = n.dim as usize;
        let k = n.mask.count_ones() as u8;
        let (a, b) = info.cut.span(&rule.fields, d, k);
        for i in a..=b {
            let s = n.first as usize + i as usize;
            self.insert(Some(s), info.cut.child(d, k, i), rule, index, cfg);
        }
    }

    /// A fresh subtree for `region`, built from the tree's rules that overlap it.
    fn build_region(&mut self, region: Region, cfg: &TreeConfig) -> Node {
        let mut rules: Vec<ClassRule> = self
            .list
            .iter()
            .filter(|r| region.overlaps(&r.fields))
            .copied()
            .collect();
        rules.sort_unstable_by_key(ClassRule::order);
        let b = cfg.memory_factor * rules.len() + 64;
        self.build(rules, region, cfg, 0, b, true)
    }

    /// Removes `rule` under the node at `at`. Where it shadowed other rules, rebuilds that
    /// subtree from the tree's rule list (from which `rule` is already gone).
    fn remove(&mut self, at: At, rule: &ClassRule, cfg: &TreeConfig) {
        let n = self.get(at);
        if n.is_empty() {
            return;
        }
        let info = self.info[n.info as usize];
        let o = rule.order();
        if info.shadow == o {
            let region = info.region;
            let new = self.build_region(region, cfg);
            self.bury(n);
            self.set(at, new);
            return;
        }
        if n.dim == LEAF {
            let (start, len) = (n.first as usize, info.len as usize);
            if let Some(p) = self.entries[start..start + len]
                .iter()
                .position(|e| e.order == o)
            {
                self.entries
                    .copy_within(start + p + 1..start + len + 1, start + p);
                self.info[n.info as usize].len -= 1;
                let mut m = n;
                m.mask = leaf_len(len - 1);
                self.set(at, m);
            }
            return;
        }
        let d = n.dim as usize;
        let k = n.mask.count_ones() as u8;
        let (a, b) = info.cut.span(&rule.fields, d, k);
        for i in a..=b {
            let s = n.first as usize + i as usize;
            self.remove(Some(s), rule, cfg);
        }
    }

    fn memory(&self) -> usize {
        self.slots.capacity() * core::mem::size_of::<Node>()
            + self.info.capacity() * core::mem::size_of::<NodeInfo>()
            + self.entries.capacity() * core::mem::size_of::<Entry>()
            + self.list.capacity() * core::mem::size_of::<ClassRule>()
            + self.pre.capacity() * core::mem::size_of::<Entry>()
            + self.pre_ids.capacity() * (core::mem::size_of::<u32>() + 1)
    }

    /// (inner nodes + leaves, leaves, leaf entries) reachable from `n`.
    fn shape(&self, n: Node) -> (usize, usize, usize) {
        if n.is_empty() {
            return (0, 0, 0);
        }
        if n.dim == LEAF {
            return (1, 1, self.info[n.info as usize].len as usize);
        }
        let mut s = (1, 0, 0);
        for i in 0..=usize::from(n.mask) {
            let c = self.shape(self.slots[n.first as usize + i]);
            s = (s.0 + c.0, s.1 + c.1, s.2 + c.2);
        }
        s
    }
}

/// Picks the cut: for each field, the most parts (up to `2^max_cut_bits`) whose rule
/// copies fit the space factor and the budget; among fields, the one whose fullest part
/// holds the fewest rules (HyperCuts-style, which separates port ranges better than HiCuts'
/// distinct-projection count). `None` when no cut leaves any part smaller than the node.
fn choose_cut(
    rules: &[ClassRule],
    region: &Region,
    cfg: &TreeConfig,
    budget: usize,
) -> Option<(usize, u8)> {
    let n = rules.len();
    let limit = (cfg.space_factor * n).min(budget);
    let mut best: Option<(usize, u8, usize, usize)> = None;
    let mut diff: Vec<i32> = Vec::new();
    for d in 0..DIMS {
        let max_k = region.bits[d].min(cfg.max_cut_bits).min(16);
        let mut pick: Option<(u8, usize, usize)> = None;
        for k in 1..=max_k {
            let parts = 1usize << k;
            diff.clear();
            diff.resize(parts + 1, 0);
            let mut sum = parts;
            for r in rules {
                let (a, b) = region.span(&r.fields, d, k);
                diff[a as usize] += 1;
                diff[b as usize + 1] -= 1;
                sum += (b - a + 1) as usize;
            }
            if sum > limit {
                break;
            }
            let mut run = 0i32;
            let mut fullest = 0i32;
            for x in &diff[..parts] {
                run += x;
                fullest = fullest.max(run);
            }
            pick = Some((k, fullest as usize, sum));
            if fullest <= 1 {
                break;
            }
        }
        if let Some((k, fullest, sum)) = pick
            && fullest < n
            && best.is_none_or(|(_, _, bf, bs)| (fullest, sum) < (bf, bs))
        {
            best = Some((d, k, fullest, sum));
        }
    }
    best.map(|(d, k, _, _)| (d, k))
}

/// The compiled classifier: first match by (priority, id), as [`LinearClassifier`] finds it,
/// through decision trees. See the [module documentation](self) for the design.
#[derive(Debug, Clone)]
pub struct Classifier {
    cfg: TreeConfig,
    trees: Vec<Tree>,
    /// Each rule's tree and position in that tree's rule list.
    index: HashMap<u32, (u8, u32)>,
    /// The order trees are searched in (see [`Classifier::order_trees`]).
    search: [usize; 4],
    /// Whether most headers go on past the first tree into most of the others (sampled at
    /// build): a batch then takes each group of keys through all the trees, rather than a
    /// chunk of keys through one tree at a time.
    grouped: bool,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::with_config(TreeConfig::default())
    }
}

impl Classifier {
    /// An empty classifier with this tuning.
    pub fn with_config(cfg: TreeConfig) -> Classifier {
        Classifier {
            cfg,
            trees: (0..4).map(|_| Tree::new()).collect(),
            index: HashMap::new(),
            search: [0, 1, 2, 3],
            grouped: false,
        }
    }

    /// Compiles `rules` with the default tuning.
    pub fn new(rules: impl IntoIterator<Item = ClassRule>) -> Result<Classifier, ClassifyError> {
        Classifier::build(rules, TreeConfig::default())
    }

    /// Compiles `rules`.
    pub fn build(
        rules: impl IntoIterator<Item = ClassRule>,
        cfg: TreeConfig,
    ) -> Result<Classifier, ClassifyError> {
        let mut c = Classifier::with_config(cfg);
        for r in rules {
            if !r.fields.is_valid() {
                return Err(ClassifyError::BadBox(r.id));
            }
            let t = c.tree_of(&r.fields);
            let list = &mut c.trees[t as usize].list;
            if c.index.insert(r.id, (t, list.len() as u32)).is_some() {
                return Err(ClassifyError::DuplicateId(r.id));
            }
            list.push(r);
        }
        for tree in &mut c.trees {
            tree.rebuild(&cfg);
        }
        c.order_trees();
        c.bound_tree(c.search[0]);
        Ok(c)
    }

    /// Orders the trees by how often each holds the first match of headers drawn inside
    /// the rules' boxes (the way ClassBench traces are made). A lookup that finds its match
    /// in the first tree it searches stops near the roots of the others: every node holds
    /// the lowest priority below it.
    fn order_trees(&mut self) {
        let total: usize = self.trees.iter().map(|t| t.list.len()).sum();
        let mut wins = [0usize; 4];
        let mut sample = Vec::new();
        if total > 0 {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            for _ in 0..512 {
                let mut i = (next() % total as u64) as usize;
                let mut t = 0;
                while i >= self.trees[t].list.len() {
                    i -= self.trees[t].list.len();
                    t += 1;
                }
                let b = self.trees[t].list[i].fields;
                let mut key = [0u32; DIMS];
                for (d, v) in key.iter_mut().enumerate() {
                    let span = u64::from(b.hi[d] - b.lo[d]) + 1;
                    *v = b.lo[d] + (next() % span) as u32;
                }
                sample.push(key);
                let mut best = u64::MAX;
                let mut winner = None;
                for (t, tree) in self.trees.iter().enumerate() {
                    if tree.lookup(&key, 0, &mut best, &mut |_| true).is_some() {
                        winner = Some(t);
                    }
                }
                if let Some(t) = winner {
                    wins[t] += 1;
                }
            }
        }
        let mut search = [0, 1, 2, 3];
        search.sort_by_key(|&t| {
            (
                core::cmp::Reverse(wins[t]),
                core::cmp::Reverse(self.trees[t].list.len()),
            )
        });
        self.search = search;
        // How many of the sampled headers go on into each tree after the first.
        let (mut pairs, mut live) = (0, 0);
        for key in &sample {
            let mut best = u64::MAX;
            self.trees[search[0]].lookup(key, 0, &mut best, &mut |_| true);
            for &t in &search[1..] {
                let root = self.trees[t].root;
                if !root.is_empty() {
                    pairs += 1;
                    live += usize::from(!root.pruned(best));
                }
            }
        }
        self.grouped = 2 * live >= pairs && pairs > 0;
    }

    /// Sets the bound and list of every entry of tree `t` (see [`Entry`]) and the skip mask
    /// of every leaf and empty slot (see [`Tree::skip_mask`]) from the other trees, and its
    /// cap to none.
    fn bound_tree(&mut self, t: usize) {
        let tree = &self.trees[t];
        let mut bounds = Vec::with_capacity(tree.entries.len());
        let mut skips = Vec::new();
        let mut pre = vec![END];
        let mut pre_ids = HashSet::new();
        // Lists by their rules' orders: entries of one rule in neighbouring leaves often
        // share one.
        let mut lists: HashMap<Vec<u64>, u32> = HashMap::new();
        let mut out = Vec::new();
        // The trees other than `t` that hold no rule meeting `bx`, as bits by tree.
        let clear = |bx: &FieldBox| {
            (self.trees.iter().enumerate())
                .filter(|&(u, other)| u != t && !other.any_before(bx, u32::MAX, BOUND_BUDGET))
                .fold(0u8, |m, (u, _)| m | 1 << u)
        };
        // Each node with the smallest box that holds every header reaching it: a cut
        // narrows it only where the part it divides is the whole box (else headers outside
        // that part reach its children too).
        let mut stack = vec![(None, tree.root, FieldBox::ANY)];
        while let Some((at, n, reach)) = stack.pop() {
            let s = n.first as usize;
            if n.dim != LEAF {
                let (d, k) = (n.dim as usize, n.mask.count_ones() as u8);
                let cut = tree.info[n.info as usize].cut;
                let whole = cut.base[d] == reach.lo[d] && cut.hi(d) == reach.hi[d];
                for i in 0..=u32::from(n.mask) {
                    let mut r = reach;
                    if whole {
                        let c = cut.child(d, k, i);
                        (r.lo[d], r.hi[d]) = (c.base[d], c.hi(d));
                    }
                    stack.push((Some(s + i as usize), tree.slots[s + i as usize], r));
                }
                continue;
            }
            let any = clear(&reach);
            if n.is_empty() {
                skips.push((at, any));
                continue;
            }
            let info = &tree.info[n.info as usize];
            let rb = FieldBox {
                lo: info.region.base,
                hi: core::array::from_fn(|d| info.region.hi(d)),
            };
            skips.push((at, any | (any | clear(&rb)) << 4));
            for (j, e) in tree.entries[s..s + info.len as usize].iter().enumerate() {
                // Only whether the bound is above the entry's priority matters: a bound
                // of one more than it when so, else 0.
                let p = (e.order >> 32) as u32;
                let bx = e.clipped(&info.region);
                let before = (self.trees.iter().enumerate())
                    .any(|(u, other)| u != t && other.any_before(&bx, p, BOUND_BUDGET));
                if !before {
                    bounds.push((s + j, p.saturating_add(1), 0));
                    continue;
                }
                // Some rules of other trees come first: with few enough, they make the
                // entry's list. Not where batches take each group of keys through all the
                // trees: a group skips a tree only when none of its keys can improve there,
                // and a list settles too few keys for that.
                out.clear();
                let listed = !self.grouped
                    && (self.trees.iter().enumerate()).all(|(u, other)| {
                        let mut budget = LIST_BUDGET;
                        u == t
                            || other.collect_before(
                                other.root,
                                &bx,
                                e.order,
                                &mut budget,
                                &mut out,
                                LIST_MAX,
                            )
                    });
                if !listed {
                    bounds.push((s + j, 0, 0));
                    continue;
                }
                if out.is_empty() {
                    // None after all (the first search gave up).
                    bounds.push((s + j, p.saturating_add(1), 0));
                    continue;
                }
                out.sort_unstable_by_key(|c| c.order);
                let at = *lists
                    .entry(out.iter().map(|c| c.order).collect())
                    .or_insert_with(|| {
                        let at = pre.len() as u32;
                        pre.extend_from_slice(&out);
                        pre.push(END);
                        pre_ids.extend(out.iter().map(|c| c.order as u32));
                        at
                    });
                bounds.push((s + j, 0, if at <= BOUND_MAX { at } else { 0 }));
            }
        }
        // Lists cost every batch a test per key: where few entries have one, none do.
        let listed = bounds.iter().filter(|&&(_, _, at)| at != 0).count();
        if listed * LIST_SHARE < bounds.len() {
            pre.truncate(1);
            pre_ids.clear();
        }
        let tree = &mut self.trees[t];
        for (j, b, at) in bounds {
            tree.entries[j].set_bound(b);
            tree.entries[j].set_list(if pre.len() > 1 { at } else { 0 });
        }
        pre.shrink_to_fit();
        tree.pre = pre;
        tree.pre_ids = pre_ids;
        let any_skip = skips.iter().any(|&(_, m)| m != 0);
        for (at, m) in skips {
            let mut n = tree.get(at);
            n.shift = m;
            tree.set(at, n);
        }
        tree.cap = u32::MAX;
        tree.skip_ok = if any_skip { 0xf } else { 0 };
    }

    fn tree_of(&self, b: &FieldBox) -> u8 {
        let wide = |d: usize| (b.hi[d] - b.lo[d]) >> self.cfg.wide_bits.min(31) != 0;
        u8::from(wide(0)) | (u8::from(wide(1)) << 1)
    }

    /// Adds a rule without rebuilding.
    pub fn insert(&mut self, rule: ClassRule) -> Result<(), ClassifyError> {
        if !rule.fields.is_valid() {
            return Err(ClassifyError::BadBox(rule.id));
        }
        let t = self.tree_of(&rule.fields);
        let tree = &mut self.trees[t as usize];
        match self.index.entry(rule.id) {
            std::collections::hash_map::Entry::Occupied(_) => {
                return Err(ClassifyError::DuplicateId(rule.id));
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((t, tree.list.len() as u32));
            }
        }
        tree.list.push(rule);
        tree.min_order = tree.min_order.min(rule.order());
        tree.insert(None, Region::ROOT, &rule, &self.index, &self.cfg);
        if tree.bloated() {
            tree.rebuild(&self.cfg);
            if self.search[0] == usize::from(t) {
                self.bound_tree(usize::from(t));
            }
        }
        for (u, other) in self.trees.iter_mut().enumerate() {
            if u != usize::from(t) {
                other.lower_bounds(&rule.fields, rule.priority);
                other.skip_ok &= !(1 << t);
            }
        }
        Ok(())
    }

    /// Removes the rule with this id; false if there was none.
    pub fn remove(&mut self, id: u32) -> bool {
        let Some((t, pos)) = self.index.remove(&id) else {
            return false;
        };
        let tree = &mut self.trees[t as usize];
        let rule = tree.list.swap_remove(pos as usize);
        if let Some(moved) = tree.list.get(pos as usize)
            && let Some(x) = self.index.get_mut(&moved.id)
        {
            x.1 = pos;
        }
        tree.remove(None, &rule, &self.cfg);
        if tree.bloated() {
            tree.rebuild(&self.cfg);
            if self.search[0] == usize::from(t) {
                self.bound_tree(usize::from(t));
            }
        }
        // Entries whose lists hold the rule lose them: its deletion may uncover rules that it
        // hid in its tree (see [`Tree::build`]), which no list holds.
        for other in &mut self.trees {
            if !other.pre_ids.is_empty() && other.pre_ids.remove(&id) {
                other.lower_bounds(&rule.fields, rule.priority);
            }
        }
        true
    }

    /// The id of the first rule matching `key`.
    #[inline]
    pub fn lookup(&self, key: &Key) -> Option<u32> {
        self.lookup_with(key, None, |_| true)
    }

    /// The id of the first rule after the rule `after` (by priority order) whose box
    /// matches `key` and for which `pred(id)` holds. `pred` is called on candidates in no
    /// particular order and must have no side effects; it is how rules with conditions
    /// beyond the five fields ([`ClassRule::inexact`]) are checked.
    ///
    /// `after` continues a walk: it is `None` or the rule this key's previous lookup
    /// returned. An exact rule ends a walk (the rules it covers may be left out of the
    /// trees), so `after` is never an exact rule, nor after one that matches `key`.
    #[inline]
    pub fn lookup_with<F: FnMut(u32) -> bool>(
        &self,
        key: &Key,
        after: Option<u32>,
        mut pred: F,
    ) -> Option<u32> {
        let min = match after {
            None => 0,
            Some(id) => match self.get(id) {
                Some(r) => r.order() + 1,
                None => return None,
            },
        };
        let mut best = u64::MAX;
        let mut found = None;
        for &t in &self.search {
            let tree = &self.trees[t];
            if tree.min_order >= best {
                continue;
            }
            if let Some(id) = tree.lookup(key, min, &mut best, &mut pred) {
                found = Some(id);
            }
        }
        found
    }

    /// Classifies a batch: `out[i]` gets the first match of `keys[i]`. Extra slots of the
    /// longer slice are left alone.
    ///
    /// A chunk of keys goes through the trees one tree at a time. In each tree, the keys
    /// that may still find something better there (the root holds a rule before their
    /// best match so far, no entry bound has settled them, and their leaf in the first
    /// tree does not skip this tree) go down together in
    /// groups, a level at a time, so that the memory loads of different keys overlap
    /// instead of waiting on one another; a key stops as soon as the node it reached holds
    /// no rule before its best match.
    pub fn lookup_batch(&self, keys: &[Key], out: &mut [Option<u32>]) {
        if self.grouped {
            // Sets whose first tree skips nothing (its rules are the wide ones) go without.
            let skips = self.trees[self.search[0]].skip_ok != 0;
            for (kc, oc) in keys.chunks(G).zip(out.chunks_mut(G)) {
                let n = kc.len().min(oc.len());
                let k: [[u32; 8]; G] = padded(kc, n);
                let best = if skips {
                    self.lookup_group::<true>(&k)
                } else {
                    self.lookup_group::<false>(&k)
                };
                for (o, b) in oc[..n].iter_mut().zip(&best[..n]) {
                    *o = (*b != u64::MAX).then_some(*b as u32);
                }
            }
            return;
        }
        let mut search = (self.search.iter())
            .map(|&t| (1u8 << t, &self.trees[t]))
            .filter(|(_, tree)| tree.min_order != u64::MAX);
        let Some((_, head)) = search.next() else {
            out.iter_mut().take(keys.len()).for_each(|o| *o = None);
            return;
        };
        let lists = head.pre.len() > 1;
        for (kc, oc) in keys.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            let n = kc.len().min(oc.len());
            let k: [[u32; 8]; CHUNK] = padded(kc, n);
            let mut best = [u64::MAX; CHUNK];
            let mut lim = [u64::MAX; CHUNK];
            let mut skip = [0u8; CHUNK];
            let mut live = [0u8; CHUNK];
            // Every key through the first tree, group by group.
            for_groups(n, &k, &mut best, &mut lim, &mut skip, |kg, bg, lg, sg| {
                if lists {
                    head.walk_group::<true>(kg, bg, lg, sg, true);
                } else {
                    head.walk_group::<false>(kg, bg, lg, sg, true);
                }
            });
            // The keys the first tree left unsettled, each with the trees to skip.
            let mut open = [0u8; CHUNK];
            let mut no = 0;
            for i in 0..n {
                open[no] = i as u8;
                no += usize::from(lim[i] != 0);
                skip[i] = head.skip_mask(skip[i], best[i] != u64::MAX);
            }
            for (bit, tree) in search.clone() {
                // The keys that may find a better match in this tree, gathered without
                // branches: the root holds a rule before their best match, and their
                // leaf in the first tree does not skip this tree.
                let root = u64::from(tree.root.min) << 32;
                let mut m = 0;
                for &c in &open[..no] {
                    let i = usize::from(c);
                    live[m] = c;
                    m += usize::from((lim[i] > root) & (skip[i] & bit == 0));
                }
                if 4 * m >= 3 * n {
                    // Most keys go on: walk the groups as they are, skipping those with
                    // none that can.
                    for_groups(n, &k, &mut best, &mut lim, &mut skip, |kg, bg, lg, sg| {
                        walk_unskipped(tree, bit, kg, bg, lg, sg);
                    });
                } else if m > 0 {
                    // Few do: walk only those, gathered into groups (the last one repeats
                    // its last key).
                    let padded = m.next_multiple_of(G);
                    let last = live[m - 1];
                    live[m..padded].fill(last);
                    for g in live[..padded].chunks_exact(G) {
                        let mut kg = [[0u32; 8]; G];
                        let mut bg = [0u64; G];
                        let mut lg = [0u64; G];
                        for j in 0..G {
                            let i = usize::from(g[j]);
                            kg[j] = k[i];
                            bg[j] = best[i];
                            lg[j] = lim[i];
                        }
                        tree.walk_group::<false>(&kg, &mut bg, &mut lg, &mut [0; G], false);
                        for j in 0..G {
                            best[usize::from(g[j])] = bg[j];
                            lim[usize::from(g[j])] = lg[j];
                        }
                    }
                }
            }
            for (o, b) in oc[..n].iter_mut().zip(&best[..n]) {
                *o = (*b != u64::MAX).then_some(*b as u32);
            }
        }
    }

    /// The best match (order) of each key of a group, `u64::MAX` for none, taking the
    /// group through all the trees; with `SKIP`, leaving out of each tree the keys whose
    /// leaf in the first tree skips it.
    #[inline]
    fn lookup_group<const SKIP: bool>(&self, k: &[[u32; 8]; G]) -> [u64; G] {
        let mut best = [u64::MAX; G];
        let mut lim = [u64::MAX; G];
        let mut skip = [0u8; G];
        let mut first = true;
        for &t in &self.search {
            let tree = &self.trees[t];
            if tree.min_order == u64::MAX {
                continue;
            }
            if first {
                tree.walk_group::<false>(k, &mut best, &mut lim, &mut skip, true);
                for i in 0..G {
                    skip[i] = tree.skip_mask(skip[i], best[i] != u64::MAX);
                }
                first = false;
            } else if SKIP {
                walk_unskipped(tree, 1 << t, k, &mut best, &mut lim, &skip);
            } else if !lim.iter().all(|&b| tree.root.pruned(b)) {
                tree.walk_group::<false>(k, &mut best, &mut lim, &mut skip, false);
            }
        }
        best
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.index.len()
    }
    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The rule with this id.
    pub fn get(&self, id: u32) -> Option<&ClassRule> {
        let (t, pos) = self.index.get(&id)?;
        self.trees[*t as usize].list.get(*pos as usize)
    }

    /// Approximate heap bytes used by the trees and the rule index.
    pub fn memory_bytes(&self) -> usize {
        self.trees.iter().map(Tree::memory).sum::<usize>()
            + self.index.capacity() * (core::mem::size_of::<(u32, (u8, u32))>() + 1)
    }

    /// Shape of the trees, for tuning: (rules, nodes, leaves, leaf entries) per tree.
    pub fn stats(&self) -> Vec<(usize, usize, usize, usize)> {
        self.trees
            .iter()
            .map(|t| {
                let (nodes, leaves, entries) = t.shape(t.root);
                (t.list.len(), nodes, leaves, entries)
            })
            .collect()
    }
}

/// Calls `f` on each group of `G` of the first `n` keys of a chunk (the last group padded),
/// with the keys' best matches, pruning limits and skip bytes.
#[inline(always)]
fn for_groups<const N: usize>(
    n: usize,
    k: &[[u32; 8]; N],
    best: &mut [u64; N],
    lim: &mut [u64; N],
    skip: &mut [u8; N],
    mut f: impl FnMut(&[[u32; 8]; G], &mut [u64; G], &mut [u64; G], &mut [u8; G]),
) {
    let groups = k
        .chunks_exact(G)
        .zip(best.chunks_exact_mut(G))
        .zip(lim.chunks_exact_mut(G))
        .zip(skip.chunks_exact_mut(G))
        .take(n.div_ceil(G));
    for (((kg, bg), lg), sg) in groups {
        let (Ok(kg), Ok(bg), Ok(lg), Ok(sg)) = (
            <&[_; G]>::try_from(kg),
            <&mut [_; G]>::try_from(bg),
            <&mut [_; G]>::try_from(lg),
            <&mut [_; G]>::try_from(sg),
        ) else {
            continue;
        };
        f(kg, bg, lg, sg);
    }
}

/// Takes a group of keys down a tree after the first, leaving out the keys whose leaf in
/// the first tree skips it (`bit` in their `skip`), and the whole group when none of its
/// keys can find anything better there.
#[inline(always)]
fn walk_unskipped(
    tree: &Tree,
    bit: u8,
    k: &[[u32; 8]; G],
    best: &mut [u64; G],
    lim: &mut [u64; G],
    skip: &[u8; G],
) {
    // A skipped key walks with a limit of 0, which prunes it at the root.
    let mut l: [u64; G] = core::array::from_fn(|i| if skip[i] & bit == 0 { lim[i] } else { 0 });
    if l.iter().all(|&b| tree.root.pruned(b)) {
        return;
    }
    tree.walk_group::<false>(k, best, &mut l, &mut [0; G], false);
    for i in 0..G {
        if skip[i] & bit == 0 {
            lim[i] = l[i];
        }
    }
}

/// The first `n` (at least one) of `keys` as `N` whole keys for a batch, so that the per-key
/// loops run a constant count and unroll: the keys past `n` repeat the last one. Each key is
/// padded to eight fields (a field index is then masked, not bounds-checked).
#[inline(always)]
fn padded<const N: usize>(keys: &[Key], n: usize) -> [[u32; 8]; N] {
    core::array::from_fn(|i| {
        let x = &keys[i.min(n - 1)];
        [x[0], x[1], x[2], x[3], x[4], 0, 0, 0]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_scan_finds_the_first_match_across_blocks() {
        let proto = |p: u32| {
            let mut b = FieldBox::ANY;
            (b.lo[4], b.hi[4]) = (p, p);
            b
        };
        // 19 rules, three blocks: TCP keys are held by rule 8 (the first lane of the second
        // block), 17 and 18 (the last block, whose lanes past rule 18 repeat it).
        let rules = (0..19).map(|i| {
            let p = if [8, 17, 18].contains(&i) { 6 } else { 17 };
            ClassRule::new(proto(p), i, i)
        });
        let mut lin = LinearClassifier::new(rules).unwrap();
        let tcp = [1, 2, 3, 4, 6];
        assert_eq!(lin.lookup(&tcp), Some(8));
        assert_eq!(lin.lookup(&[1, 2, 3, 4, 1]), None);
        assert!(lin.remove(8));
        assert_eq!(lin.lookup(&tcp), Some(17));
        assert!(lin.remove(17));
        assert_eq!(lin.lookup(&tcp), Some(18));
        assert!(lin.remove(18) && !lin.remove(18));
        assert_eq!(lin.lookup(&tcp), None);
        // A rule inserted first moves every other one a lane on.
        lin.insert(ClassRule::new(proto(6), 0, 40)).unwrap();
        assert_eq!(lin.lookup(&tcp), Some(40));
        assert_eq!(lin.lookup(&[1, 2, 3, 4, 17]), Some(0));
        assert_eq!(lin.len(), 17);
        assert_eq!(
            lin.insert(ClassRule::new(proto(6), 0, 40)),
            Err(ClassifyError::DuplicateId(40))
        );
        assert!(LinearClassifier::new([]).unwrap().lookup(&tcp).is_none());
    }

    fn host(a: u32) -> AddrRange {
        AddrRange { lo: a, hi: a }
    }

    fn ports(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi }
    }

    /// A first tree of host pairs, one of whose entries (`e`, priority 50) has two rules of
    /// the wide-source tree before it in its list, and the key that all three match.
    fn listed() -> (Classifier, Key) {
        let any = AddrRange {
            lo: 0,
            hi: u32::MAX,
        };
        let mut rules: Vec<ClassRule> = (0..30)
            .map(|i| {
                let b = FieldBox::new(
                    host(0x1e00_0000 + i),
                    host(0x2800_0001),
                    ports(0, 0xffff),
                    ports(0, 0xffff),
                    Some(6),
                );
                ClassRule::new(b, i, i)
            })
            .collect();
        let (src, dst) = (0x0a00_0001, 0x1400_0001);
        let e = FieldBox::new(
            host(src),
            host(dst),
            ports(0, 0xffff),
            ports(80, 80),
            Some(6),
        );
        let s = FieldBox::new(any, host(dst), ports(1000, 2000), ports(80, 80), Some(6));
        let h = FieldBox::new(any, host(dst), ports(1500, 3000), ports(80, 80), Some(6));
        rules.push(ClassRule::new(e, 50, 50));
        rules.push(ClassRule::new(s, 45, 45));
        rules.push(ClassRule::new(h, 47, 47));
        let c = Classifier::new(rules).unwrap();
        (c, [src, dst, 1500, 80, 6])
    }

    fn batch(c: &Classifier, k: Key) -> Option<u32> {
        let mut out = [None];
        c.lookup_batch(&[k], &mut out);
        out[0]
    }

    #[test]
    fn deleting_a_listed_rule_drops_the_lists_that_hold_it() {
        let (mut c, k) = listed();
        let head = &c.trees[c.search[0]];
        assert!(!c.grouped && head.pre.len() > 1, "the set makes lists");
        assert_eq!(batch(&c, k), Some(45));
        assert!(c.remove(45));
        assert_eq!(batch(&c, k), Some(47));
        assert!(c.remove(47));
        assert_eq!(batch(&c, k), Some(50));
    }

    /// Random rules near the listed entry's box, inserted and deleted between batches, keep
    /// the batch equal to the linear scan.
    #[test]
    fn listed_entries_under_churn_match_the_linear_scan() {
        let (mut c, k) = listed();
        let mut lin =
            LinearClassifier::new((0..c.trees.len()).flat_map(|t| c.trees[t].list.clone()))
                .unwrap();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |m: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(m)) as u32
        };
        let mut live: Vec<u32> = Vec::new();
        for id in 100..400 {
            if !live.is_empty() && next(3) == 0 {
                let id = live.swap_remove(next(live.len() as u32) as usize);
                assert_eq!(c.remove(id), lin.remove(id));
            } else {
                let src = if next(2) == 0 {
                    AddrRange {
                        lo: 0,
                        hi: u32::MAX,
                    }
                } else {
                    host(k[0])
                };
                let sp = next(3000) as u16;
                let b = FieldBox::new(
                    src,
                    host(k[1]),
                    ports(sp, sp + next(1000) as u16),
                    ports(80, 80),
                    Some(6),
                );
                let r = ClassRule::new(b, 30 + next(40), id);
                c.insert(r).unwrap();
                lin.insert(r).unwrap();
                live.push(id);
            }
            let keys: Vec<Key> = (0..8).map(|_| [k[0], k[1], next(4000), 80, 6]).collect();
            let mut out = [None; 8];
            c.lookup_batch(&keys, &mut out);
            for (key, o) in keys.iter().zip(out) {
                assert_eq!(o, lin.lookup(key), "key {key:?}");
            }
        }
    }

    /// A leaf too long for its node to count its entries is still scanned to its end.
    #[test]
    fn leaf_past_the_counted_length_is_scanned_whole() {
        let (src, dst) = (host(0x0a00_0001), host(0x1400_0001));
        let a = FieldBox::new(src, dst, ports(0, 0xffff), ports(80, 80), Some(6));
        let b = FieldBox::new(src, dst, ports(0, 0xffff), ports(0, 0xffff), Some(6));
        let n = u32::from(u16::MAX) + 100;
        let rules = (0..n)
            .map(|i| ClassRule::new(a, i, i))
            .chain([ClassRule::new(b, n, n)]);
        let c = Classifier::new(rules).unwrap();
        assert_eq!(c.stats()[0].2, 1, "one leaf");
        assert_eq!(batch(&c, [0x0a00_0001, 0x1400_0001, 9, 443, 6]), Some(n));
        assert_eq!(batch(&c, [0x0a00_0001, 0x1400_0001, 9, 80, 6]), Some(0));
    }

    #[test]
    fn inserting_before_a_listed_entry_drops_its_list() {
        let (mut c, k) = listed();
        assert_eq!(batch(&c, k), Some(45));
        let any = AddrRange {
            lo: 0,
            hi: u32::MAX,
        };
        let x = FieldBox::new(any, host(k[1]), ports(0, 0xffff), ports(80, 80), Some(6));
        c.insert(ClassRule::new(x, 40, 40)).unwrap();
        assert_eq!(batch(&c, k), Some(40));
    }
}
