//! The receipt log as an RFC 9162 Merkle tree: pure math, no storage.
//!
//! Leaf `i` is receipt `chain.seq = i`; its bytes are the receipt's stored
//! RFC 8785 bytes *with* its `signature` (what `chain.prev_hash` hashes).
//! Hashes follow RFC 9162 §2.1.1: leaf `SHA-256(0x00 ‖ leaf)`, interior node
//! `SHA-256(0x01 ‖ left ‖ right)`.
//!
//! Storage sits behind [`NodeReader`]: a log keeps the hash of every
//! *complete* subtree ([`NodeId`]: `2^level` leaves starting at a multiple of
//! `2^level`). Those never change once written, an append creates at most
//! `1 + log2 n` of them ([`Frontier::append`]), and every node an RFC 9162
//! proof for a tree of size `n` needs is either one of them or a suffix
//! `[a, n)` of the tree that the complete subtrees of `n`'s binary
//! decomposition give. So a proof costs O(log n) reads at any size and
//! nothing is rebuilt on start. Verification is [`ct_merkle`]'s.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Errors building proofs and roots.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogError {
    /// The asked-for index or size is not in the tree.
    #[error("{0}")]
    OutOfRange(String),
    /// A complete subtree the log should hold is missing from storage.
    #[error("the log is missing node (level {level}, index {index})")]
    MissingNode {
        /// Height of the subtree.
        level: u8,
        /// Its position among subtrees of that height.
        index: u64,
    },
    /// Storage failed.
    #[error("log storage: {0}")]
    Storage(String),
}

/// A complete subtree: leaves `[index·2^level, (index+1)·2^level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId {
    /// Height (0 = a leaf).
    pub level: u8,
    /// Position among the subtrees of that height.
    pub index: u64,
}

impl NodeId {
    /// Storage key: `level` (one byte) then `index` (u64 big-endian), so the
    /// leaves sort first and in order.
    pub fn key(&self) -> [u8; 9] {
        let mut k = [0u8; 9];
        k[0] = self.level;
        k[1..].copy_from_slice(&self.index.to_be_bytes());
        k
    }

    fn start(&self) -> u64 {
        self.index << self.level
    }
}

/// Reads stored complete-subtree hashes.
pub trait NodeReader {
    /// The hash of `node`; [`TlogError::MissingNode`] when it is not stored.
    fn read(&self, node: NodeId) -> Result<Hash, TlogError>;
}

/// `SHA-256(0x00 ‖ leaf)` (RFC 9162 §2.1.1).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)` (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256("")` (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The complete subtrees whose concatenation is a tree of `size` leaves,
/// largest (leftmost) first: one per set bit of `size`.
fn decomposition(size: u64) -> impl Iterator<Item = NodeId> {
    let mut start = 0u64;
    (0..64u8).rev().filter(move |bit| size & (1u64 << bit) != 0).map(move |level| {
        let node = NodeId { level, index: start >> level };
        start += 1u64 << level;
        node
    })
}

/// Largest power of two strictly below `n` (`n >= 2`): RFC 9162's `k`.
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The right edge of a tree: the hashes of its decomposition's complete
/// subtrees. Enough to append leaves and compute the root in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<(NodeId, Hash)>,
}

impl Frontier {
    /// The frontier of the stored tree of `size` leaves (`popcount(size)` reads).
    pub fn load(size: u64, reader: &impl NodeReader) -> Result<Self, TlogError> {
        let nodes = decomposition(size).map(|n| Ok((n, reader.read(n)?))).collect::<Result<_, TlogError>>()?;
        Ok(Self { size, nodes })
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf by its hash; returns the complete subtrees it created
    /// (the leaf itself first), all of which must be stored with it.
    pub fn append(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let mut created = vec![(NodeId { level: 0, index: self.size }, leaf)];
        self.nodes.push((NodeId { level: 0, index: self.size }, leaf));
        while let [.., (l, lh), (r, rh)] = self.nodes.as_slice() {
            if l.level != r.level {
                break;
            }
            let parent = (NodeId { level: r.level + 1, index: r.index >> 1 }, node_hash(lh, rh));
            self.nodes.truncate(self.nodes.len() - 2);
            self.nodes.push(parent);
            created.push(parent);
        }
        self.size += 1;
        created
    }

    /// The tree's root (RFC 9162 `MTH(D[0:size])`).
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        match nodes.next() {
            None => empty_root(),
            Some((_, last)) => nodes.fold(*last, |acc, (_, h)| node_hash(h, &acc)),
        }
    }
}

/// A tree of `size` leaves over stored nodes, with its right-edge suffix
/// hashes computed once so that every `MTH` a proof needs is one read.
struct View<'a, R> {
    size: u64,
    reader: &'a R,
    /// `(a, MTH(D[a:size]))` for each start `a` of the decomposition.
    suffixes: Vec<(u64, Hash)>,
}

impl<'a, R: NodeReader> View<'a, R> {
    fn new(size: u64, reader: &'a R) -> Result<Self, TlogError> {
        let frontier = Frontier::load(size, reader)?;
        let mut suffixes = Vec::with_capacity(frontier.nodes.len());
        let mut acc: Option<Hash> = None;
        for (node, hash) in frontier.nodes.iter().rev() {
            let h = match acc {
                None => *hash,
                Some(right) => node_hash(hash, &right),
            };
            acc = Some(h);
            suffixes.push((node.start(), h));
        }
        Ok(Self { size, reader, suffixes })
    }

    /// `MTH(D[start:end])` for a range of the RFC's recursion over this
    /// tree: a complete subtree, or a suffix ending at `size`.
    fn mth(&self, start: u64, end: u64) -> Result<Hash, TlogError> {
        let len = end - start;
        if len.is_power_of_two() && start.is_multiple_of(len) {
            let level = u8::try_from(len.trailing_zeros()).unwrap_or(u8::MAX);
            return self.reader.read(NodeId { level, index: start >> level });
        }
        if end == self.size
            && let Some((_, h)) = self.suffixes.iter().find(|(a, _)| *a == start)
        {
            return Ok(*h);
        }
        // INVARIANT: the recursions below only ask for such ranges.
        Err(TlogError::OutOfRange(format!("range [{start}, {end}) is not a node of the tree of size {}", self.size)))
    }

    /// RFC 9162 §2.1.3.1 `PATH(m, D[start:end])`, `m` absolute.
    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) -> Result<(), TlogError> {
        if end - start <= 1 {
            return Ok(());
        }
        let k = split(end - start);
        if m < start + k {
            self.path(m, start, start + k, out)?;
            out.push(self.mth(start + k, end)?);
        } else {
            self.path(m, start + k, end, out)?;
            out.push(self.mth(start, start + k)?);
        }
        Ok(())
    }

    /// RFC 9162 §2.1.4.1 `SUBPROOF(m, D[start:end], b)`, `old` = start + m.
    fn subproof(&self, old: u64, start: u64, end: u64, b: bool, out: &mut Vec<Hash>) -> Result<(), TlogError> {
        let n = end - start;
        if old == end {
            if !b {
                out.push(self.mth(start, end)?);
            }
            return Ok(());
        }
        let k = split(n);
        if old - start <= k {
            self.subproof(old, start, start + k, b, out)?;
            out.push(self.mth(start + k, end)?);
        } else {
            self.subproof(old, start + k, end, false, out)?;
            out.push(self.mth(start, start + k)?);
        }
        Ok(())
    }
}

/// `MTH(D[0:size])` of the stored tree (`popcount(size)` reads).
pub fn root_at(size: u64, reader: &impl NodeReader) -> Result<Hash, TlogError> {
    Ok(Frontier::load(size, reader)?.root())
}

/// The inclusion proof (audit path) of leaf `index` in the tree of `size`
/// leaves, leaf-side sibling first (RFC 9162 §2.1.3.1).
pub fn inclusion_proof(index: u64, size: u64, reader: &impl NodeReader) -> Result<Vec<Hash>, TlogError> {
    if index >= size {
        return Err(TlogError::OutOfRange(format!("leaf {index} is not in a tree of {size} leaves")));
    }
    let view = View::new(size, reader)?;
    let mut out = Vec::with_capacity(64);
    view.path(index, 0, size, &mut out)?;
    Ok(out)
}

/// The consistency proof from the tree of `old` leaves to the tree of `new`
/// leaves (RFC 9162 §2.1.4.1); empty when they are equal.
pub fn consistency_proof(old: u64, new: u64, reader: &impl NodeReader) -> Result<Vec<Hash>, TlogError> {
    if old == 0 || old > new {
        return Err(TlogError::OutOfRange(format!(
            "no consistency proof from size {old} to size {new}: need 1 <= first <= second"
        )));
    }
    let view = View::new(new, reader)?;
    let mut out = Vec::with_capacity(64);
    view.subproof(old, 0, new, true, &mut out)?;
    Ok(out)
}

/// Check that `leaf` is leaf `index` of the tree with `root` and `size`,
/// with [`ct_merkle`]'s RFC 6962/9162 verifier. Does not panic.
pub fn verify_inclusion(
    leaf: &[u8],
    index: u64,
    size: u64,
    root: &Hash,
    proof: &[Hash],
) -> Result<(), ct_merkle::InclusionVerifError> {
    let root = ct_merkle::RootHash::<Sha256>::new((*root).into(), size);
    let digests = proof.iter().map(|h| sha2::digest::Output::<Sha256>::from(*h)).collect::<Vec<_>>();
    let proof = ct_merkle::InclusionProof::<Sha256>::from_digests(digests.iter());
    root.verify_inclusion(&leaf, index, &proof)
}

/// Check that the tree (`old_size`, `old_root`) is a prefix of
/// (`new_size`, `new_root`), with [`ct_merkle`]'s verifier. Does not panic.
pub fn verify_consistency(
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ct_merkle::ConsistencyVerifError> {
    let old = ct_merkle::RootHash::<Sha256>::new((*old_root).into(), old_size);
    let new = ct_merkle::RootHash::<Sha256>::new((*new_root).into(), new_size);
    let digests = proof.iter().map(|h| sha2::digest::Output::<Sha256>::from(*h)).collect::<Vec<_>>();
    let proof = ct_merkle::ConsistencyProof::<Sha256>::from_digests(digests.iter());
    new.verify_consistency(&old, &proof)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use std::collections::HashMap;

    use super::*;

    /// An in-memory node store built only by [`Frontier::append`].
    #[derive(Default)]
    struct Mem(HashMap<NodeId, Hash>);

    impl NodeReader for Mem {
        fn read(&self, node: NodeId) -> Result<Hash, TlogError> {
            self.0.get(&node).copied().ok_or(TlogError::MissingNode { level: node.level, index: node.index })
        }
    }

    fn build(leaves: &[Vec<u8>]) -> (Mem, Frontier) {
        let mut mem = Mem::default();
        let mut f = Frontier::default();
        for l in leaves {
            for (n, h) in f.append(leaf_hash(l)) {
                assert!(mem.0.insert(n, h).is_none(), "node {n:?} written twice");
            }
        }
        (mem, f)
    }

    // Reference: RFC 9162 §2.1.1 MTH straight from the definition.
    fn mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => leaf_hash(&d[0]),
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    // Reference: RFC 9162 §2.1.3.1 PATH(m, D[n]).
    fn path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let n = d.len();
        if n == 1 {
            return vec![];
        }
        let k = split(n as u64) as usize;
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    // Reference: RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b).
    fn subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = split(n as u64) as usize;
        if m <= k {
            let mut p = subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }

    // Reference: the RFC 9162 §2.1.3.2 verification algorithm, step by step.
    fn rfc_verify_inclusion(leaf: &[u8], index: u64, size: u64, root: &Hash, proof: &[Hash]) -> bool {
        if index >= size {
            return false;
        }
        let (mut fnn, mut sn) = (index, size - 1);
        let mut r = leaf_hash(leaf);
        for p in proof {
            if sn == 0 {
                return false;
            }
            if fnn & 1 == 1 || fnn == sn {
                r = node_hash(p, &r);
                if fnn & 1 == 0 {
                    while fnn & 1 == 0 && fnn != 0 {
                        fnn >>= 1;
                        sn >>= 1;
                    }
                }
            } else {
                r = node_hash(&r, p);
            }
            fnn >>= 1;
            sn >>= 1;
        }
        sn == 0 && &r == root
    }

    // Reference: the RFC 9162 §2.1.4.2 verification algorithm, step by step.
    fn rfc_verify_consistency(m: u64, old: &Hash, n: u64, new: &Hash, proof: &[Hash]) -> bool {
        if m == n {
            return proof.is_empty() && old == new;
        }
        let mut proof: Vec<Hash> = proof.to_vec();
        if m.is_power_of_two() {
            proof.insert(0, *old);
        }
        let Some((first, rest)) = proof.split_first() else { return false };
        let (mut fnn, mut sn) = (m - 1, n - 1);
        if fnn & 1 == 1 {
            while fnn & 1 == 1 {
                fnn >>= 1;
                sn >>= 1;
            }
        }
        let (mut fr, mut sr) = (*first, *first);
        for c in rest {
            if sn == 0 {
                return false;
            }
            if fnn & 1 == 1 || fnn == sn {
                fr = node_hash(c, &fr);
                sr = node_hash(c, &sr);
                if fnn & 1 == 0 {
                    while fnn & 1 == 0 && fnn != 0 {
                        fnn >>= 1;
                        sn >>= 1;
                    }
                }
            } else {
                sr = node_hash(&sr, c);
            }
            fnn >>= 1;
            sn >>= 1;
        }
        &fr == old && &sr == new && sn == 0
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("receipt {i}").into_bytes()).collect()
    }

    #[test]
    // Roots, inclusion and consistency proofs from stored nodes equal the
    // RFC's recursive definitions, and verify with both ct-merkle and the
    // RFC's own verification algorithms, for every index and every pair of
    // sizes up to 70 (powers of two and everything between).
    fn proofs_match_rfc_9162_for_every_index_of_every_size() {
        let all = leaves(70);
        let (mem, _) = build(&all);
        for n in 1..=all.len() {
            let d = &all[..n];
            let root = root_at(n as u64, &mem).unwrap();
            assert_eq!(root, mth(d), "root of size {n}");
            for m in 0..n {
                let proof = inclusion_proof(m as u64, n as u64, &mem).unwrap();
                assert_eq!(proof, path(m, d), "PATH({m}, D[{n}])");
                verify_inclusion(&d[m], m as u64, n as u64, &root, &proof).unwrap();
                assert!(rfc_verify_inclusion(&d[m], m as u64, n as u64, &root, &proof), "§2.1.3.2 ({m}, {n})");
                // Another leaf, index or size does not verify.
                assert!(verify_inclusion(b"other", m as u64, n as u64, &root, &proof).is_err());
                if n > 1 {
                    let other = (m + 1) % n;
                    assert!(verify_inclusion(&d[m], other as u64, n as u64, &root, &proof).is_err());
                    assert!(!rfc_verify_inclusion(&d[m], other as u64, n as u64, &root, &proof));
                }
            }
            for m in 1..=n {
                let old_root = mth(&d[..m]);
                let proof = consistency_proof(m as u64, n as u64, &mem).unwrap();
                assert_eq!(proof, subproof(m, d, true), "PROOF({m}, D[{n}])");
                verify_consistency(m as u64, &old_root, n as u64, &root, &proof).unwrap();
                assert!(rfc_verify_consistency(m as u64, &old_root, n as u64, &root, &proof), "§2.1.4.2 ({m}, {n})");
                if m < n {
                    let forged = mth(&[&d[..m - 1], &[b"forged".to_vec()]].concat());
                    assert!(verify_consistency(m as u64, &forged, n as u64, &root, &proof).is_err());
                    assert!(!rfc_verify_consistency(m as u64, &forged, n as u64, &root, &proof));
                }
            }
        }
    }

    #[test]
    // Larger, irregular sizes: a sample of indices against the definitions.
    fn proofs_match_rfc_9162_at_larger_sizes() {
        let all = leaves(1029);
        let (mem, f) = build(&all);
        assert_eq!(f.root(), mth(&all));
        for n in [255usize, 256, 257, 511, 513, 1000, 1023, 1024, 1029] {
            let d = &all[..n];
            for m in (0..n).step_by(7).chain([n - 1]) {
                assert_eq!(inclusion_proof(m as u64, n as u64, &mem).unwrap(), path(m, d));
            }
            for m in (1..=n).step_by(13).chain([n]) {
                assert_eq!(consistency_proof(m as u64, n as u64, &mem).unwrap(), subproof(m, d, true));
            }
        }
    }

    fn hd(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    // Known answers: the classic Certificate Transparency vectors, as
    // published in transparency-dev/merkle `testonly/constants.go`.
    fn known_answer_vectors() {
        let d: Vec<Vec<u8>> =
            ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
                .iter()
                .map(|s| hex::decode(s).unwrap())
                .collect();
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let (mem, _) = build(&d);
        assert_eq!(empty_root(), hd("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
        for (i, r) in roots.iter().enumerate() {
            assert_eq!(root_at(i as u64 + 1, &mem).unwrap(), hd(r), "root of size {}", i + 1);
        }
        let v = |xs: &[&str]| xs.iter().map(|s| hd(s)).collect::<Vec<_>>();
        assert_eq!(
            inclusion_proof(0, 8, &mem).unwrap(),
            v(&[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ])
        );
        assert_eq!(
            inclusion_proof(5, 8, &mem).unwrap(),
            v(&[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ])
        );
        assert_eq!(consistency_proof(1, 1, &mem).unwrap(), v(&[]));
        assert_eq!(
            consistency_proof(1, 8, &mem).unwrap(),
            v(&[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ])
        );
        assert_eq!(
            consistency_proof(6, 8, &mem).unwrap(),
            v(&[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ])
        );
        assert_eq!(
            consistency_proof(2, 5, &mem).unwrap(),
            v(&[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ])
        );
    }

    /// Counts reads, to pin the O(log n) bound.
    struct Counting<'a>(&'a Mem, std::cell::Cell<usize>);

    impl NodeReader for Counting<'_> {
        fn read(&self, node: NodeId) -> Result<Hash, TlogError> {
            self.1.set(self.1.get() + 1);
            self.0.read(node)
        }
    }

    #[test]
    // A proof reads at most 2·log2(n) + popcount(n) stored nodes, and a
    // frontier reloaded from storage appends exactly as the live one.
    fn proofs_read_logarithmically_many_nodes() {
        let all = leaves(1000);
        let (mem, live) = build(&all);
        let counting = Counting(&mem, std::cell::Cell::new(0));
        for m in [0u64, 1, 500, 998, 999] {
            counting.1.set(0);
            inclusion_proof(m, 1000, &counting).unwrap();
            assert!(counting.1.get() <= 2 * 10 + 6, "{} reads", counting.1.get());
            counting.1.set(0);
            consistency_proof(m + 1, 1000, &counting).unwrap();
            assert!(counting.1.get() <= 2 * 10 + 6, "{} reads", counting.1.get());
        }
        let mut reloaded = Frontier::load(1000, &mem).unwrap();
        assert_eq!(reloaded, live);
        let mut live = live;
        assert_eq!(reloaded.append(leaf_hash(b"next")), live.append(leaf_hash(b"next")));
    }

    #[test]
    // Out-of-range requests are errors, not panics.
    fn out_of_range_is_an_error() {
        let (mem, _) = build(&leaves(5));
        assert!(matches!(inclusion_proof(5, 5, &mem), Err(TlogError::OutOfRange(_))));
        assert!(matches!(consistency_proof(0, 5, &mem), Err(TlogError::OutOfRange(_))));
        assert!(matches!(consistency_proof(6, 5, &mem), Err(TlogError::OutOfRange(_))));
        assert!(matches!(inclusion_proof(1, 9, &mem), Err(TlogError::MissingNode { .. })));
    }
}
