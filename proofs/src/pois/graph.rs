//! The expander edges: D parents in the layer below for each index, the same at every layer,
//! drawn from a public seed that names the parameter set. [`expander_parents`] is the
//! definition (what a verifier computes for the few indices it checks); [`Graph`] caches it for
//! every index, for the labeller.

use super::{KEYS, PoisParams};

/// The D expander parents of `index` (indices into the layer below), in order. Duplicates are
/// kept: the label hashes each parent in its place.
pub fn expander_parents(params: &PoisParams, index: u32) -> Vec<u32> {
    let mut out = vec![0u32; usize::from(params.degree)];
    fill_parents(params, index, &mut out);
    out
}

fn fill_parents(params: &PoisParams, index: u32, out: &mut [u32]) {
    debug_assert_eq!(out.len(), usize::from(params.degree));
    let mut hasher = blake3::Hasher::new_keyed(&KEYS.graph);
    hasher.update(&params.encode());
    hasher.update(&index.to_le_bytes());
    let mut bytes = [0u8; 4 * super::DEGREE_MAX as usize];
    let bytes = &mut bytes[..4 * out.len()];
    hasher.finalize_xof().fill(bytes);
    // N is a power of two: masking a uniform u32 keeps it uniform.
    let mask = params.nodes() - 1;
    for (parent, word) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *parent = u32::from_le_bytes(word.try_into().expect("4 bytes")) & mask;
    }
}

/// Every index's expander parents, computed once per parameter set (N × D × 4 bytes: 8 MiB
/// for the network's parameters) and shared by every file labelled with it.
#[derive(Debug, Clone)]
pub struct Graph {
    params: PoisParams,
    parents: Vec<u32>,
}

impl Graph {
    pub fn new(params: &PoisParams) -> Graph {
        params
            .validate()
            .expect("a graph is built for validated parameters");
        let degree = usize::from(params.degree);
        let mut parents = vec![0u32; params.nodes() as usize * degree];
        for (index, out) in parents.chunks_exact_mut(degree).enumerate() {
            fill_parents(params, index as u32, out);
        }
        Graph {
            params: *params,
            parents,
        }
    }

    pub fn params(&self) -> &PoisParams {
        &self.params
    }

    /// The expander parents of `index`, as [`expander_parents`] defines them.
    pub fn parents(&self, index: u32) -> &[u32] {
        let degree = usize::from(self.params.degree);
        &self.parents[index as usize * degree..][..degree]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_graph_is_the_definition_and_parents_spread_over_the_layer() {
        let params = PoisParams::TEST;
        let graph = Graph::new(&params);
        let mut seen = vec![0u32; params.nodes() as usize];
        for index in 0..params.nodes() {
            let parents = expander_parents(&params, index);
            assert_eq!(graph.parents(index), &parents[..]);
            for p in parents {
                assert!(p < params.nodes());
                seen[p as usize] += 1;
            }
        }
        // N·D = 1024 draws over 256 indices: an index never drawn has probability
        // (255/256)^1024 ≈ 1.8 %, so a handful at most.
        let never = seen.iter().filter(|&&n| n == 0).count();
        assert!(never < 16, "{never} indices are nobody's parent");
        let other = PoisParams {
            degree: 5,
            ..params
        };
        assert_ne!(
            expander_parents(&other, 7)[..4],
            expander_parents(&params, 7)[..]
        );
    }
}
