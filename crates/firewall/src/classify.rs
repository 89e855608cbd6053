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
//! is a few dependent loads per tree plus a short scan, independent of the number of rules;
//! tuple-space search (TupleMerge) costs one hash probe per tuple visited, and ClassBench sets
//! at 10K rules keep tens of tuples. The figures are in the crate README.
//!
//! Updates are incremental: an insert descends to the leaves its box overlaps and splits a
//! leaf that grows past twice the leaf size; a delete removes the rule from its leaves, and
//! rebuilds only the subtree where it had shadowed other rules.

use std::collections::HashMap;

use crate::ir::{AddrRange, PortRange};

/// Number of fields: source address, destination address, source port, destination port,
/// protocol.
pub const DIMS: usize = 5;

/// A packet's five fields, host order: `[src, dst, sport, dport, proto]`. Protocols without
/// ports have ports 0.
pub type Key = [u32; DIMS];

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
        // Non-short-circuit on purpose: five compares beat five branches.
        (self.lo[0] <= k[0])
            & (k[0] <= self.hi[0])
            & (self.lo[1] <= k[1])
            & (k[1] <= self.hi[1])
            & (self.lo[2] <= k[2])
            & (k[2] <= self.hi[2])
            & (self.lo[3] <= k[3])
            & (k[3] <= self.hi[3])
            & (self.lo[4] <= k[4])
            & (k[4] <= self.hi[4])
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
#[derive(Debug, Clone, Default)]
pub struct LinearClassifier {
    rules: Vec<ClassRule>,
}

impl LinearClassifier {
    /// A classifier holding `rules`.
    pub fn new(rules: impl IntoIterator<Item = ClassRule>) -> Result<Self, ClassifyError> {
        let mut c = LinearClassifier::default();
        for r in rules {
            c.insert(r)?;
        }
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
        Ok(())
    }
    /// Removes the rule with this id; false if there was none.
    pub fn remove(&mut self, id: u32) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        self.rules.len() != before
    }
    /// The id of the first rule matching `key`.
    pub fn lookup(&self, key: &Key) -> Option<u32> {
        self.rules
            .iter()
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
            memory_factor: 16,
            wide_bits: 16,
        }
    }
}

const LEAF: u8 = u8::MAX;
const NO_SHADOW: u64 = u64::MAX;
/// Node 0 of every tree: the shared empty leaf that empty regions point to.
const EMPTY: u32 = 0;

#[derive(Debug, Clone, Copy)]
struct Node {
    /// The field cut, or [`LEAF`].
    dim: u8,
    shift: u8,
    mask: u32,
    /// First child slot in `children`, or the leaf index.
    first: u32,
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
    /// The order (priority and id) of a rule that covers the region and caused
    /// lower-priority rules to be left out of this subtree; deleting it rebuilds the subtree.
    shadow: u64,
    /// For a leaf: the size past which an insert splits it (twice its size when built, so
    /// that a leaf no cut could split is not rebuilt on every insert).
    split_at: usize,
}

#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<Node>,
    info: Vec<NodeInfo>,
    children: Vec<u32>,
    leaves: Vec<Vec<ClassRule>>,
    root: u32,
    /// A lower bound of the order of every rule in the tree.
    min_order: u64,
    rules: usize,
    /// Ids of rules recorded as a node's shadow (may hold stale ids).
    shadowers: std::collections::HashSet<u32>,
}

impl Tree {
    fn new() -> Tree {
        let empty = Node {
            dim: LEAF,
            shift: 0,
            mask: 0,
            first: 0,
        };
        Tree {
            nodes: vec![empty],
            info: vec![NodeInfo {
                region: Region::ROOT,
                shadow: NO_SHADOW,
                split_at: 0,
            }],
            children: Vec::new(),
            leaves: vec![Vec::new()],
            root: EMPTY,
            min_order: u64::MAX,
            rules: 0,
            shadowers: std::collections::HashSet::new(),
        }
    }

    fn build(
        &mut self,
        mut rules: Vec<ClassRule>,
        region: Region,
        cfg: &TreeConfig,
        depth: u32,
        budget: usize,
    ) -> u32 {
        let mut shadow = NO_SHADOW;
        if let Some(i) = rules
            .iter()
            .position(|r| r.exact && region.covered_by(&r.fields))
            && i + 1 < rules.len()
        {
            shadow = rules[i].order();
            self.shadowers.insert(rules[i].id);
            rules.truncate(i + 1);
        }
        if rules.is_empty() {
            return EMPTY;
        }
        let n = rules.len();
        let cut = if n <= cfg.leaf_size || depth > 40 || budget < n + 4 {
            None
        } else {
            choose_cut(&rules, &region, cfg, budget)
        };
        let Some((d, k)) = cut else {
            return self.new_leaf(rules, region, shadow);
        };
        let id = self.nodes.len() as u32;
        let first = self.children.len() as u32;
        let count = 1usize << k;
        self.nodes.push(Node {
            dim: d as u8,
            shift: region.bits[d] - k,
            mask: (1u32 << k) - 1,
            first,
        });
        self.info.push(NodeInfo {
            region,
            shadow,
            split_at: 0,
        });
        self.children.resize(self.children.len() + count, EMPTY);
        let mut parts: Vec<Vec<ClassRule>> = vec![Vec::new(); count];
        for r in &rules {
            let (a, b) = region.span(&r.fields, d, k);
            for p in &mut parts[a as usize..=b as usize] {
                p.push(*r);
            }
        }
        drop(rules);
        // Share the subtree's budget among the children by size, so that no subtree can
        // grow the whole tree past its memory bound.
        let total: usize = parts.iter().map(Vec::len).sum::<usize>().max(1);
        let spare = budget.saturating_sub(count);
        for (i, part) in parts.into_iter().enumerate() {
            let b = spare * part.len() / total;
            let child = self.build(part, region.child(d, k, i as u32), cfg, depth + 1, b);
            self.children[first as usize + i] = child;
        }
        id
    }

    fn new_leaf(&mut self, rules: Vec<ClassRule>, region: Region, shadow: u64) -> u32 {
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            dim: LEAF,
            shift: 0,
            mask: 0,
            first: self.leaves.len() as u32,
        });
        self.info.push(NodeInfo {
            region,
            shadow,
            split_at: 2 * rules.len(),
        });
        self.leaves.push(rules);
        id
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
        let mut n = self.nodes[self.root as usize];
        while n.dim != LEAF {
            let v = key[n.dim as usize];
            let slot = n.first as usize + ((v >> n.shift) & n.mask) as usize;
            n = self.nodes[self.children[slot] as usize];
        }
        for r in &self.leaves[n.first as usize] {
            let o = r.order();
            if o >= *best {
                break;
            }
            if o >= min && r.fields.contains(key) && pred(r.id) {
                *best = o;
                return Some(r.id);
            }
        }
        None
    }

    /// Adds `rule` under `node` (reached through child slot `slot`, or the root if `None`).
    fn insert(
        &mut self,
        node: u32,
        slot: Option<usize>,
        region: Region,
        rule: ClassRule,
        cfg: &TreeConfig,
    ) {
        if node == EMPTY {
            let leaf = self.new_leaf(vec![rule], region, NO_SHADOW);
            self.set_slot(slot, leaf);
            return;
        }
        let info = self.info[node as usize];
        if info.shadow < rule.order() {
            // A rule covering this whole region comes first: `rule` can never win here.
            return;
        }
        let n = self.nodes[node as usize];
        if n.dim == LEAF {
            let leaf = &mut self.leaves[n.first as usize];
            let at = leaf.partition_point(|r| r.order() < rule.order());
            leaf.insert(at, rule);
            if leaf.len() > info.split_at.max(2 * cfg.leaf_size) {
                let rules = core::mem::take(leaf);
                let shadow = info.shadow;
                let b = cfg.memory_factor * rules.len() + 64;
                let new = self.build(rules, info.region, cfg, 0, b);
                if new != EMPTY && self.info[new as usize].shadow == NO_SHADOW {
                    self.info[new as usize].shadow = shadow;
                }
                self.set_slot(slot, new);
            }
            return;
        }
        let d = n.dim as usize;
        let k = n.mask.count_ones() as u8;
        let (a, b) = info.region.span(&rule.fields, d, k);
        for i in a..=b {
            let s = n.first as usize + i as usize;
            let child = self.children[s];
            self.insert(child, Some(s), info.region.child(d, k, i), rule, cfg);
        }
    }

    fn set_slot(&mut self, slot: Option<usize>, node: u32) {
        match slot {
            Some(s) => self.children[s] = node,
            None => self.root = node,
        }
    }

    /// Removes `rule` under `node`. Where it shadowed other rules, rebuilds that subtree
    /// from `all` (every rule of the tree).
    fn remove(
        &mut self,
        node: u32,
        slot: Option<usize>,
        rule: &ClassRule,
        all: &[ClassRule],
        cfg: &TreeConfig,
    ) {
        if node == EMPTY {
            return;
        }
        let info = self.info[node as usize];
        if info.shadow == rule.order() {
            let region = info.region;
            let rules: Vec<ClassRule> = all
                .iter()
                .filter(|r| r.id != rule.id && region.overlaps(&r.fields))
                .copied()
                .collect();
            let b = cfg.memory_factor * rules.len() + 64;
            let new = self.build(rules, region, cfg, 0, b);
            self.set_slot(slot, new);
            return;
        }
        let n = self.nodes[node as usize];
        if n.dim == LEAF {
            self.leaves[n.first as usize].retain(|r| r.id != rule.id);
            return;
        }
        let d = n.dim as usize;
        let k = n.mask.count_ones() as u8;
        let (a, b) = info.region.span(&rule.fields, d, k);
        for i in a..=b {
            let s = n.first as usize + i as usize;
            let child = self.children[s];
            self.remove(child, Some(s), rule, all, cfg);
        }
    }

    fn memory(&self) -> usize {
        self.nodes.capacity() * core::mem::size_of::<Node>()
            + self.info.capacity() * core::mem::size_of::<NodeInfo>()
            + self.children.capacity() * 4
            + self.leaves.capacity() * core::mem::size_of::<Vec<ClassRule>>()
            + self
                .leaves
                .iter()
                .map(|l| l.capacity() * core::mem::size_of::<ClassRule>())
                .sum::<usize>()
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
        let max_k = region.bits[d].min(cfg.max_cut_bits);
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
    rules: HashMap<u32, (u8, ClassRule)>,
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
            rules: HashMap::new(),
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
        let mut parts: Vec<Vec<ClassRule>> = vec![Vec::new(); 4];
        for r in rules {
            if !r.fields.is_valid() {
                return Err(ClassifyError::BadBox(r.id));
            }
            let t = c.tree_of(&r.fields);
            if c.rules.insert(r.id, (t, r)).is_some() {
                return Err(ClassifyError::DuplicateId(r.id));
            }
            parts[t as usize].push(r);
        }
        for (t, mut part) in parts.into_iter().enumerate() {
            part.sort_unstable_by_key(|r| r.order());
            let tree = &mut c.trees[t];
            tree.min_order = part.first().map_or(u64::MAX, |r| r.order());
            tree.rules = part.len();
            let b = cfg.memory_factor * part.len() + 1024;
            tree.root = tree.build(part, Region::ROOT, &cfg, 0, b);
        }
        Ok(c)
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
        if self.rules.contains_key(&rule.id) {
            return Err(ClassifyError::DuplicateId(rule.id));
        }
        let t = self.tree_of(&rule.fields);
        self.rules.insert(rule.id, (t, rule));
        let cfg = self.cfg;
        let tree = &mut self.trees[t as usize];
        tree.min_order = tree.min_order.min(rule.order());
        tree.rules += 1;
        let root = tree.root;
        tree.insert(root, None, Region::ROOT, rule, &cfg);
        Ok(())
    }

    /// Removes the rule with this id; false if there was none.
    pub fn remove(&mut self, id: u32) -> bool {
        let Some((t, rule)) = self.rules.remove(&id) else {
            return false;
        };
        let cfg = self.cfg;
        let tree = &mut self.trees[t as usize];
        tree.rules -= 1;
        let root = tree.root;
        let shadows = tree.shadowers.remove(&id);
        let all: Vec<ClassRule> = if shadows {
            let mut v: Vec<ClassRule> = self
                .rules
                .values()
                .filter(|(tt, _)| *tt == t)
                .map(|(_, r)| *r)
                .collect();
            v.sort_unstable_by_key(|r| r.order());
            v
        } else {
            Vec::new()
        };
        let tree = &mut self.trees[t as usize];
        tree.remove(root, None, &rule, &all, &cfg);
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
            Some(id) => match self.rules.get(&id) {
                Some((_, r)) => r.order() + 1,
                None => return None,
            },
        };
        let mut best = u64::MAX;
        let mut found = None;
        for tree in &self.trees {
            if tree.min_order >= best || tree.rules == 0 {
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
    /// Keys go down each tree a level at a time in groups, so that the memory loads of
    /// different keys overlap instead of waiting on one another.
    pub fn lookup_batch(&self, keys: &[Key], out: &mut [Option<u32>]) {
        const G: usize = 16;
        for (kc, oc) in keys.chunks(G).zip(out.chunks_mut(G)) {
            let n = kc.len().min(oc.len());
            let mut best = [u64::MAX; G];
            let mut found = [None; G];
            for tree in &self.trees {
                if tree.rules == 0 {
                    continue;
                }
                let mut cur = [tree.nodes[tree.root as usize]; G];
                loop {
                    let mut more = false;
                    for i in 0..n {
                        let c = cur[i];
                        if c.dim != LEAF {
                            let v = kc[i][c.dim as usize];
                            let slot = c.first as usize + ((v >> c.shift) & c.mask) as usize;
                            cur[i] = tree.nodes[tree.children[slot] as usize];
                            more = true;
                        }
                    }
                    if !more {
                        break;
                    }
                }
                for i in 0..n {
                    if tree.min_order >= best[i] {
                        continue;
                    }
                    for r in &tree.leaves[cur[i].first as usize] {
                        let o = r.order();
                        if o >= best[i] {
                            break;
                        }
                        if r.fields.contains(&kc[i]) {
                            best[i] = o;
                            found[i] = Some(r.id);
                            break;
                        }
                    }
                }
            }
            oc[..n].copy_from_slice(&found[..n]);
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }
    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule with this id.
    pub fn get(&self, id: u32) -> Option<&ClassRule> {
        self.rules.get(&id).map(|(_, r)| r)
    }

    /// Approximate heap bytes used by the trees and the rule index.
    pub fn memory_bytes(&self) -> usize {
        self.trees.iter().map(Tree::memory).sum::<usize>()
            + self.rules.capacity() * (core::mem::size_of::<(u32, (u8, ClassRule))>() + 1)
    }

    /// Shape of the trees, for tuning: (rules, nodes, leaves, leaf entries) per tree.
    pub fn stats(&self) -> Vec<(usize, usize, usize, usize)> {
        self.trees
            .iter()
            .map(|t| {
                (
                    t.rules,
                    t.nodes.len(),
                    t.leaves.len(),
                    t.leaves.iter().map(Vec::len).sum(),
                )
            })
            .collect()
    }
}
