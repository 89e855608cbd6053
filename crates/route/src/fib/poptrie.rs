//! The compiled lookup structure: a Poptrie (Asai & Ohara, SIGCOMM 2015).
//!
//! The top `s` bits of an address index a direct array. Each entry is either a leaf (a next
//! hop, or none) or the index of a node of stride 6. A node holds two 64-bit maps: `vector`
//! marks the slots that descend into a child node, `leafvec` marks where a run of equal
//! leaves starts. Children and leaves of a node are stored contiguously, so the index of
//! slot `i`'s child is `base1 + popcount(vector below i)` and its leaf is
//! `leaves[base0 + popcount(leafvec up to i) - 1]`. Equal adjacent leaves are stored once.
//!
//! Every direct slot's subtree is laid out contiguously at the end of the arrays when it is
//! built, so a slot can be rebuilt on its own (the old subtree becomes garbage until the next
//! full build).

use crate::addr::Word;

/// Direct-array entries with this bit set are leaves; the other 31 bits are the next hop.
pub(crate) const LEAF: u32 = 1 << 31;
/// The leaf value meaning "no route".
pub(crate) const NONE: u32 = LEAF - 1;

#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Node {
    vector: u64,
    leafvec: u64,
    base1: u32,
    base0: u32,
}

/// A prefix below the direct bits: left-aligned key, length, next hop.
pub(crate) type Entry = (u128, u8, u32);

#[derive(Clone, Debug)]
pub(crate) struct Poptrie {
    pub(crate) s: u32,
    pub(crate) direct: Vec<u32>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) leaves: Vec<u32>,
}

#[inline(always)]
fn chunk(key: u128, depth: u32) -> usize {
    key.chunk6(depth)
}

impl Poptrie {
    pub(crate) fn new(s: u32) -> Self {
        Poptrie {
            s,
            direct: vec![LEAF | NONE; 1 << s],
            nodes: Vec::new(),
            leaves: Vec::new(),
        }
    }

    /// Bytes used by the lookup arrays.
    pub(crate) fn memory(&self) -> usize {
        self.direct.len() * 4
            + self.nodes.len() * core::mem::size_of::<Node>()
            + self.leaves.len() * 4
    }

    /// One lookup: the next hop, or [`NONE`].
    #[inline(always)]
    pub(crate) fn lookup<W: Word>(&self, w: W) -> u32 {
        let mut e = match self.direct.get(w.top(self.s)) {
            Some(&e) => e,
            None => return NONE,
        };
        let mut depth = self.s;
        while e & LEAF == 0 {
            e = self.step(e, w, depth);
            depth += 6;
        }
        e & !LEAF
    }

    /// Descends one node: the child's index, or `LEAF | next hop`.
    #[inline(always)]
    fn step<W: Word>(&self, e: u32, w: W, depth: u32) -> u32 {
        let Some(node) = self.nodes.get(e as usize) else {
            return LEAF | NONE;
        };
        let i = w.chunk6(depth);
        let bit = 1u64 << i;
        if node.vector & bit != 0 {
            node.base1 + (node.vector & (bit - 1)).count_ones()
        } else {
            let upto = node.leafvec & (bit << 1).wrapping_sub(1);
            let idx = (node.base0 + upto.count_ones()).wrapping_sub(1);
            LEAF | self.leaves.get(idx as usize).copied().unwrap_or(NONE)
        }
    }

    /// Lookups of a batch, interleaved in groups of 8 so that their memory accesses overlap.
    #[inline]
    pub(crate) fn lookup_batch<W: Word>(&self, words: &[W], out: &mut [u32]) {
        const LANES: usize = 8;
        let mut wc = words.chunks_exact(LANES);
        let mut oc = out.chunks_exact_mut(LANES);
        for (w, o) in (&mut wc).zip(&mut oc) {
            let mut e = [0u32; LANES];
            for j in 0..LANES {
                e[j] = self
                    .direct
                    .get(w[j].top(self.s))
                    .copied()
                    .unwrap_or(LEAF | NONE);
            }
            let mut depth = self.s;
            loop {
                let mut pending = 0u32;
                for j in 0..LANES {
                    if e[j] & LEAF == 0 {
                        e[j] = self.step(e[j], w[j], depth);
                        pending |= !e[j] & LEAF;
                    }
                }
                if pending == 0 {
                    break;
                }
                depth += 6;
            }
            for j in 0..LANES {
                o[j] = e[j] & !LEAF;
            }
        }
        for (w, o) in wc.remainder().iter().zip(oc.into_remainder()) {
            *o = self.lookup(*w);
        }
    }

    /// Builds the subtree of one direct slot and returns its direct entry. `entries` are the
    /// prefixes longer than `s` inside the slot, sorted by (key, length); `default` is the
    /// next hop of the longest prefix of at most `s` bits covering the slot.
    pub(crate) fn build_slot(&mut self, default: u32, entries: &[Entry]) -> u32 {
        if entries.is_empty() {
            return LEAF | default;
        }
        let idx = self.nodes.len();
        self.nodes.push(Node::default());
        self.build_node(idx, self.s, default, entries);
        idx as u32
    }

    fn build_node(&mut self, idx: usize, depth: u32, default: u32, entries: &[Entry]) {
        let end = depth + 6;
        let mut leaf = [default; 64];
        let mut runs = [(0usize, 0usize); 64];
        let mut vector = 0u64;
        let mut i = 0;
        // Sorted by (key, length), a prefix comes before every prefix it contains, so painting
        // in order leaves the longest match in each slot. Within one slot the prefixes that
        // end in this node (which start at the slot's first address) precede the deeper ones.
        while i < entries.len() {
            let (key, len, nh) = entries[i];
            let c = chunk(key, depth);
            if u32::from(len) <= end {
                let span = 1usize << (end - u32::from(len));
                for l in &mut leaf[c..(c + span).min(64)] {
                    *l = nh;
                }
                i += 1;
            } else {
                let mut j = i + 1;
                while j < entries.len() && chunk(entries[j].0, depth) == c {
                    j += 1;
                }
                runs[c] = (i, j);
                vector |= 1 << c;
                i = j;
            }
        }
        let base1 = self.nodes.len() as u32;
        let base0 = self.leaves.len() as u32;
        let mut leafvec = 0u64;
        let mut last = None;
        for (c, &l) in leaf.iter().enumerate() {
            if vector & (1 << c) == 0 && last != Some(l) {
                self.leaves.push(l);
                leafvec |= 1 << c;
                last = Some(l);
            }
        }
        let children = vector.count_ones() as usize;
        self.nodes
            .resize(self.nodes.len() + children, Node::default());
        self.nodes[idx] = Node {
            vector,
            leafvec,
            base1,
            base0,
        };
        let mut k = 0;
        for c in 0..64 {
            if vector & (1 << c) != 0 {
                let (a, b) = runs[c];
                self.build_node(base1 as usize + k, end, leaf[c], &entries[a..b]);
                k += 1;
            }
        }
    }

    /// Nodes and leaves in the subtree under a direct entry (to account garbage).
    pub(crate) fn subtree_size(&self, e: u32) -> (usize, usize) {
        if e & LEAF != 0 {
            return (0, 0);
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
