//! Binary Merkle trees over 2^n leaves of 32 bytes (labels, or column digests). A node is the
//! keyed BLAKE3 of its two children (one compression); a path is the siblings from the leaf up,
//! and the index alone says on which side each sits, so a path proves one position only.

use super::{KEYS, Label};

/// A parent node: H_node(left ‖ right).
pub fn node(left: &Label, right: &Label) -> Label {
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(left);
    both[32..].copy_from_slice(right);
    *blake3::keyed_hash(&KEYS.node, &both).as_bytes()
}

/// A whole tree, every level kept (2N nodes), for the prover.
#[derive(Debug, Clone)]
pub struct Tree {
    /// levels[0] are the leaves; the last level is the root alone.
    levels: Vec<Vec<Label>>,
}

impl Tree {
    /// The tree over `leaves` (a power of two, at least 1).
    pub fn new(leaves: Vec<Label>) -> Tree {
        assert!(leaves.len().is_power_of_two(), "{} leaves", leaves.len());
        let mut levels = vec![leaves];
        while levels.last().expect("a level").len() > 1 {
            let below = levels.last().expect("a level");
            let above = below
                .chunks_exact(2)
                .map(|pair| node(&pair[0], &pair[1]))
                .collect();
            levels.push(above);
        }
        Tree { levels }
    }

    /// The tree over labels stored back to back (an idle file's bytes).
    pub fn from_label_bytes(bytes: &[u8]) -> Tree {
        assert_eq!(bytes.len() % 32, 0);
        Tree::new(super::label::labels_of(bytes))
    }

    pub fn root(&self) -> Label {
        self.levels.last().expect("a level")[0]
    }

    pub fn leaf(&self, index: u32) -> &Label {
        &self.levels[0][index as usize]
    }

    /// The siblings of `index` from the leaves up (depth of them).
    pub fn path(&self, index: u32) -> Vec<Label> {
        let mut at = index as usize;
        let mut out = Vec::with_capacity(self.levels.len() - 1);
        for level in &self.levels[..self.levels.len() - 1] {
            out.push(level[at ^ 1]);
            at >>= 1;
        }
        out
    }
}

/// Whether `leaf` sits at `index` under `root`: `path` must have exactly `depth` siblings and
/// `index` must fit the tree.
pub fn verify_path(leaf: &Label, index: u32, path: &[Label], depth: usize, root: &Label) -> bool {
    if path.len() != depth || (depth < 32 && u64::from(index) >> depth != 0) {
        return false;
    }
    let mut at = *leaf;
    for (level, sibling) in path.iter().enumerate() {
        at = if (index >> level) & 1 == 0 {
            node(&at, sibling)
        } else {
            node(sibling, &at)
        };
    }
    at == *root
}

/// The root by its recursive definition: the reference the level-by-level build is held to.
pub fn reference_root(leaves: &[Label]) -> Label {
    match leaves.len() {
        1 => leaves[0],
        n => {
            assert!(n.is_power_of_two());
            let (left, right) = leaves.split_at(n / 2);
            node(&reference_root(left), &reference_root(right))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Label> {
        (0..n)
            .map(|i| *blake3::hash(&(i as u64).to_le_bytes()).as_bytes())
            .collect()
    }

    #[test]
    fn the_tree_is_its_definition_and_a_path_proves_its_index_only() {
        for n in [1usize, 2, 8, 64] {
            let leaves = leaves(n);
            let tree = Tree::new(leaves.clone());
            assert_eq!(tree.root(), reference_root(&leaves));
            let depth = n.trailing_zeros() as usize;
            for index in 0..n as u32 {
                let path = tree.path(index);
                assert!(verify_path(
                    &leaves[index as usize],
                    index,
                    &path,
                    depth,
                    &tree.root()
                ));
                if n > 1 {
                    let other = (index + 1) % n as u32;
                    assert!(!verify_path(
                        &leaves[index as usize],
                        other,
                        &path,
                        depth,
                        &tree.root()
                    ));
                    assert!(!verify_path(
                        &leaves[other as usize],
                        index,
                        &path,
                        depth,
                        &tree.root()
                    ));
                    assert!(!verify_path(
                        &leaves[index as usize],
                        index,
                        &path[1..],
                        depth,
                        &tree.root()
                    ));
                }
                // An index past the tree, whose low bits name the same leaf.
                assert!(!verify_path(
                    &leaves[index as usize],
                    index + n as u32,
                    &path,
                    depth,
                    &tree.root()
                ));
            }
        }
    }
}
