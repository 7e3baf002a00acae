//! The Merkle digest of a replica's state.
//!
//! Owns a fixed-shape tree over the hash space of keys: 2^20 leaves, fan-out
//! 16, five inner levels (level 0 is the root, level 5 the leaves). A key
//! lives in the leaf named by the top 20 bits of its [`key_hash`]. A leaf is
//! the XOR of the first 16 bytes of its live entries' [`entry_hash`]es, so a
//! write updates it in O(1) and the leaf depends only on the set of entries,
//! never on the order they arrived in.
//!
//! Tombstones are not in the digest. Replicas collect tombstones at
//! different moments (each when it learns that every member holds them), so
//! a digest over tombstones would differ between replicas holding equal live
//! data, and `verify` would report divergence that is not there. The root is
//! therefore a function of the live entries only: equal live data gives
//! equal roots at every moment. Tombstones still travel: the feed carries
//! them, and anti-entropy's leaf exchange lists every record of a differing
//! leaf, tombstones included, so a delete that wins over a value one side
//! still holds is sent across. Inner nodes are blake3 over their children,
//! recomputed lazily (on the next read) along the paths marked dirty; an
//! all-empty subtree hashes to zero, so an empty replica's tree is all zero
//! pages and costs no resident memory until keys arrive.
//!
//! The number of leaves trades bytes exchanged against precision: with 1M
//! keys a leaf holds about one key, so the leaf exchange of anti-entropy
//! sends about one summary per differing key (see `benches/core.rs`).
//!
//! [`key_hash`]: super::types::key_hash
//! [`entry_hash`]: super::types::entry_hash

use super::types::Hash;

/// log2 of the fan-out of inner nodes.
pub const FANOUT_BITS: u32 = 4;
/// Children per inner node.
pub const FANOUT: usize = 1 << FANOUT_BITS;
/// The level of the leaves; the root is level 0.
pub const LEAF_LEVEL: u8 = 5;
/// log2 of the number of leaves.
pub const LEAF_BITS: u32 = FANOUT_BITS * LEAF_LEVEL as u32;
/// Number of leaves.
pub const LEAVES: usize = 1 << LEAF_BITS;
/// Bytes of a [`Fingerprint`].
pub const FINGERPRINT_BYTES: usize = 6;
/// The truncated node hash that anti-entropy exchanges below the root. Six
/// bytes keep the descent's traffic within the design's budget; two
/// different subtrees look equal with probability 2^-48 per comparison, and
/// such a miss only delays their repair until either subtree changes.
pub type Fingerprint = [u8; FINGERPRINT_BYTES];

type LeafHash = [u8; 16];

/// Number of nodes at `level` (0..=LEAF_LEVEL).
pub fn level_width(level: u8) -> usize {
    1 << (FANOUT_BITS * u32::from(level))
}

/// The leaf a key hash falls in.
pub fn leaf_of(key_hash: u64) -> u32 {
    (key_hash >> (64 - LEAF_BITS)) as u32
}

/// The inclusive range of key hashes that `leaf` covers.
pub fn leaf_key_hash_range(leaf: u32) -> (u64, u64) {
    let shift = 64 - LEAF_BITS;
    let lo = u64::from(leaf) << shift;
    (lo, lo | ((1u64 << shift) - 1))
}

/// The incremental Merkle tree (see the module docs).
pub struct Digest {
    leaves: Vec<LeafHash>,
    /// `inner[l]` holds the 16^l nodes of level `l` (0..LEAF_LEVEL).
    inner: Vec<Vec<Hash>>,
    /// Nodes of each inner level whose hash is stale, without duplicates.
    dirty: Vec<Vec<u32>>,
    dirty_bits: Vec<Vec<u64>>,
}

impl Default for Digest {
    fn default() -> Self {
        Digest::new()
    }
}

impl Digest {
    /// The digest of an empty replica: every node zero.
    pub fn new() -> Digest {
        let levels = usize::from(LEAF_LEVEL);
        Digest {
            leaves: vec![[0u8; 16]; LEAVES],
            inner: (0..levels)
                .map(|l| vec![[0u8; 32]; level_width(l as u8)])
                .collect(),
            dirty: vec![Vec::new(); levels],
            dirty_bits: (0..levels)
                .map(|l| vec![0u64; level_width(l as u8).div_ceil(64)])
                .collect(),
        }
    }

    /// Adds an entry hash to its key's leaf, or removes it again: XOR is its own inverse.
    pub fn toggle(&mut self, key_hash: u64, part: &LeafHash) {
        let leaf = leaf_of(key_hash);
        let slot = &mut self.leaves[leaf as usize];
        for (a, b) in slot.iter_mut().zip(part) {
            *a ^= b;
        }
        self.mark_dirty(LEAF_LEVEL - 1, leaf >> FANOUT_BITS);
    }

    fn mark_dirty(&mut self, level: u8, index: u32) {
        let l = usize::from(level);
        let (word, bit) = (index as usize / 64, index % 64);
        if self.dirty_bits[l][word] & (1 << bit) == 0 {
            self.dirty_bits[l][word] |= 1 << bit;
            self.dirty[l].push(index);
        }
    }

    /// Recomputes every stale inner node, bottom up.
    fn flush(&mut self) {
        for level in (0..LEAF_LEVEL).rev() {
            let l = usize::from(level);
            if self.dirty[l].is_empty() {
                continue;
            }
            let dirty = std::mem::take(&mut self.dirty[l]);
            for &index in &dirty {
                self.inner[l][index as usize] = self.compute(level, index);
                self.dirty_bits[l][index as usize / 64] &= !(1 << (index % 64));
                if level > 0 {
                    self.mark_dirty(level - 1, index >> FANOUT_BITS);
                }
            }
            // Give the allocation back for reuse.
            let mut dirty = dirty;
            dirty.clear();
            self.dirty[l] = dirty;
        }
    }

    fn compute(&self, level: u8, index: u32) -> Hash {
        let first = index as usize * FANOUT;
        let mut h = blake3::Hasher::new();
        let mut empty = true;
        if level + 1 == LEAF_LEVEL {
            for leaf in &self.leaves[first..first + FANOUT] {
                empty &= *leaf == [0u8; 16];
                h.update(leaf);
            }
        } else {
            for node in &self.inner[usize::from(level) + 1][first..first + FANOUT] {
                empty &= *node == [0u8; 32];
                h.update(node);
            }
        }
        if empty {
            [0u8; 32]
        } else {
            *h.finalize().as_bytes()
        }
    }

    /// The root hash: equal for equal states, whatever their history.
    pub fn root(&mut self) -> Hash {
        self.flush();
        self.inner[0][0]
    }

    /// The truncated hash of node `index` at `level` (1..=LEAF_LEVEL).
    pub fn fingerprint(&mut self, level: u8, index: u32) -> Fingerprint {
        debug_assert!((1..=LEAF_LEVEL).contains(&level));
        let mut f = [0u8; FINGERPRINT_BYTES];
        if level == LEAF_LEVEL {
            f.copy_from_slice(&self.leaves[index as usize][..FINGERPRINT_BYTES]);
        } else {
            self.flush();
            f.copy_from_slice(&self.inner[usize::from(level)][index as usize][..FINGERPRINT_BYTES]);
        }
        f
    }

    /// The fingerprints of the children (at `level`) of each of `parents`
    /// (at `level - 1`), parent by parent.
    pub fn children(&mut self, level: u8, parents: &[u32]) -> Vec<Fingerprint> {
        self.flush();
        let mut out = Vec::with_capacity(parents.len() * FANOUT);
        for &p in parents {
            for c in 0..FANOUT as u32 {
                out.push(self.fingerprint(level, (p << FANOUT_BITS) | c));
            }
        }
        out
    }

    /// Compares the children of `parents` with `theirs` (as made by
    /// [`Digest::children`] on the other side) and returns the indices at
    /// `level` that differ, at most `max` of them.
    pub fn differing_children(
        &mut self,
        level: u8,
        parents: &[u32],
        theirs: &[Fingerprint],
        max: usize,
    ) -> Vec<u32> {
        debug_assert_eq!(theirs.len(), parents.len() * FANOUT);
        self.flush();
        let mut out = Vec::new();
        for (i, &p) in parents.iter().enumerate() {
            for c in 0..FANOUT {
                let index = (p << FANOUT_BITS) | c as u32;
                if self.fingerprint(level, index) != theirs[i * FANOUT + c] {
                    if out.len() == max {
                        return out;
                    }
                    out.push(index);
                }
            }
        }
        out
    }
}

/// Every leaf where `a` and `b` differ, found by the same level-by-level
/// descent that anti-entropy runs over the network.
pub fn differing_leaves(a: &mut Digest, b: &mut Digest) -> Vec<u32> {
    if a.root() == b.root() {
        return Vec::new();
    }
    let mut parents = vec![0u32];
    for level in 1..=LEAF_LEVEL {
        let theirs = b.children(level, &parents);
        parents = a.differing_children(level, &parents, &theirs, usize::MAX);
    }
    parents
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(x: u8) -> [u8; 16] {
        [x; 16]
    }

    #[test]
    fn empty_root_is_zero_and_toggle_is_reversible() {
        let mut d = Digest::new();
        assert_eq!(d.root(), [0u8; 32]);
        d.toggle(0x1234_5678_9abc_def0, &part(7));
        let r = d.root();
        assert_ne!(r, [0u8; 32]);
        d.toggle(0x1234_5678_9abc_def0, &part(7));
        assert_eq!(d.root(), [0u8; 32]);
    }

    #[test]
    fn root_is_independent_of_order() {
        let mut a = Digest::new();
        let mut b = Digest::new();
        let items = [(1u64 << 63, 1u8), (5, 2), (u64::MAX, 3), (1 << 40, 4)];
        for (k, p) in items {
            a.toggle(k, &part(p));
        }
        for (k, p) in items.iter().rev() {
            b.toggle(*k, &part(*p));
            b.root();
        }
        assert_eq!(a.root(), b.root());
    }

    #[test]
    fn descent_finds_exactly_the_differing_leaves() {
        let mut a = Digest::new();
        let mut b = Digest::new();
        for i in 0..1000u64 {
            let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            a.toggle(k, &part(1));
            b.toggle(k, &part(1));
        }
        let extra = [3u64 << 60, 77u64 << 50];
        for k in extra {
            b.toggle(k, &part(9));
        }
        let mut want: Vec<u32> = extra.iter().map(|k| leaf_of(*k)).collect();
        want.sort();
        assert_eq!(differing_leaves(&mut a, &mut b), want);
    }

    #[test]
    fn leaf_ranges_partition_the_hash_space() {
        assert_eq!(leaf_key_hash_range(0).0, 0);
        assert_eq!(leaf_key_hash_range(LEAVES as u32 - 1).1, u64::MAX);
        let (lo, hi) = leaf_key_hash_range(5);
        assert_eq!(leaf_of(lo), 5);
        assert_eq!(leaf_of(hi), 5);
        assert_eq!(leaf_of(hi + 1), 6);
    }
}
