//! Certification: a set of F idle files is generated, committed (two roots per file), challenged
//! with randomness that did not exist at the commitment, and opened. The verifier recomputes
//! every label of every challenged column from its opened parents: no parent is sampled away.
//!
//! The prover keeps nothing between the commitment and the challenge but the roots: it labels
//! each file again and captures the columns the challenge asks for ([`prove_commit`]). A
//! certification therefore costs two labellings of each file, and no temporary copy of the K − 1
//! layers that are not kept (CESS keeps them on disk until the commitment is verified).

use super::graph::{Graph, expander_parents};
use super::label::{column_digest, fold_column, label_layers, label_message, label_of, labels_of};
use super::merkle::{Tree, verify_path};
use super::{KEYS, LABEL_BYTES, Label, ParamsError, PoisParams, replica_id};
use crate::{DecodeError, Reader};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the ledger keeps per idle file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCommitment {
    /// The root over the N column digests (every layer).
    pub columns_root: Label,
    /// The root over the last layer (the file kept).
    pub last_root: Label,
}

impl FileCommitment {
    pub const BYTES: usize = 64;

    pub fn encode(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.columns_root);
        out[32..].copy_from_slice(&self.last_root);
        out
    }

    pub fn decode(bytes: &[u8; 64]) -> FileCommitment {
        FileCommitment {
            columns_root: bytes[..32].try_into().expect("32 bytes"),
            last_root: bytes[32..].try_into().expect("32 bytes"),
        }
    }
}

/// One generated idle file: its bytes (the last layer, N × 32) and its commitment.
#[derive(Debug, Clone)]
pub struct IdleFile {
    pub index: u64,
    pub bytes: Vec<u8>,
    pub commitment: FileCommitment,
}

/// The labelling of one replica with its two trees, and the columns asked for.
struct Generation {
    last_layer: Vec<Label>,
    columns_tree: Tree,
    last_tree: Tree,
    captured: BTreeMap<u32, Vec<Label>>,
}

fn generate_capturing(
    graph: &Graph,
    replica: &[u8; 32],
    previous: Option<&[Label]>,
    capture: &[u32],
) -> Generation {
    let params = graph.params();
    let last = u32::from(params.layers) - 1;
    let mut digests: Vec<Label> = vec![[0; 32]; params.nodes() as usize];
    let mut captured: BTreeMap<u32, Vec<Label>> =
        capture.iter().map(|&i| (i, Vec::new())).collect();
    let mut last_layer = Vec::new();
    label_layers(graph, replica, previous, |layer, labels| {
        for (digest, label) in digests.iter_mut().zip(labels) {
            *digest = fold_column(digest, label);
        }
        for (&index, column) in captured.iter_mut() {
            column.push(labels[index as usize]);
        }
        if layer == last {
            last_layer = labels.to_vec();
        }
    });
    Generation {
        columns_tree: Tree::new(digests),
        last_tree: Tree::new(last_layer.clone()),
        last_layer,
        captured,
    }
}

/// Generates one idle file: `previous` is the last layer of the file before it in its set
/// (None for a set's first file). The files of a set are made in order ([`generate_set`]).
pub fn generate(
    graph: &Graph,
    miner: &[u8; 32],
    file_index: u64,
    previous: Option<&[Label]>,
) -> IdleFile {
    let per_set = u64::from(graph.params().files_per_set);
    assert_eq!(
        previous.is_some(),
        !file_index.is_multiple_of(per_set),
        "a file follows the one before it in its set"
    );
    let replica = replica_id(graph.params(), miner, file_index);
    let generation = generate_capturing(graph, &replica, previous, &[]);
    IdleFile {
        index: file_index,
        bytes: generation.last_layer.concat(),
        commitment: FileCommitment {
            columns_root: generation.columns_tree.root(),
            last_root: generation.last_tree.root(),
        },
    }
}

/// Generates the set starting at `first_file` (a multiple of F), file after file, handing
/// each to `on_file` as it is done. One core: a set is one sequential computation.
pub fn generate_set(
    graph: &Graph,
    miner: &[u8; 32],
    first_file: u64,
    mut on_file: impl FnMut(IdleFile),
) {
    let per_set = u64::from(graph.params().files_per_set);
    assert_eq!(first_file % per_set, 0, "sets start at multiples of F");
    let mut previous: Option<Vec<Label>> = None;
    for index in first_file..first_file + per_set {
        let file = generate(graph, miner, index, previous.as_deref());
        previous = Some(labels_of(&file.bytes));
        on_file(file);
    }
}

/// Runs `work(i)` for every i < count on `threads` threads, each taking the next i.
pub fn for_each_parallel(count: usize, threads: usize, work: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, count.max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    work(i);
                }
            });
        }
    });
}

/// Generates the sets starting at `first_files` of `miner` on `threads` threads (one set per
/// thread at a time), handing each file to `on_file` as it is done, in order within a set.
/// Memory: about 6 × N × 32 bytes per thread, plus what `on_file` keeps.
pub fn generate_sets(
    graph: &Graph,
    miner: &[u8; 32],
    first_files: &[u64],
    threads: usize,
    on_file: &(dyn Fn(IdleFile) + Sync),
) {
    for_each_parallel(first_files.len(), threads, |i| {
        generate_set(graph, miner, first_files[i], on_file);
    });
}

/// A digest of a set's commitments, bound into its commit challenge.
pub fn commitments_digest(
    params: &PoisParams,
    miner: &[u8; 32],
    first_file: u64,
    commitments: &[FileCommitment],
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(&KEYS.commitments);
    hasher.update(&params.encode());
    hasher.update(miner);
    hasher.update(&first_file.to_le_bytes());
    hasher.update(&(commitments.len() as u64).to_le_bytes());
    for commitment in commitments {
        hasher.update(&commitment.encode());
    }
    *hasher.finalize().as_bytes()
}

/// The indices a set's certification opens: `commit_challenges_per_file` in each file, file
/// by file, each uniform in 0..N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitChallenge {
    pub first_file: u64,
    pub indices: Vec<u32>,
}

impl CommitChallenge {
    /// Derived from `randomness`, which must be the ledger's randomness of a block after the
    /// one that recorded the commitments (the ledger's rule; here it is only an input).
    pub fn derive(
        params: &PoisParams,
        miner: &[u8; 32],
        first_file: u64,
        commitments: &[FileCommitment],
        randomness: &[u8; 32],
    ) -> CommitChallenge {
        let mut hasher = blake3::Hasher::new_keyed(&KEYS.commit_challenge);
        hasher.update(&commitments_digest(params, miner, first_file, commitments));
        hasher.update(randomness);
        let mut xof = hasher.finalize_xof();
        let mask = params.nodes() - 1;
        let indices = (0..params.commit_openings())
            .map(|_| {
                let mut word = [0u8; 4];
                xof.fill(&mut word);
                u32::from_le_bytes(word) & mask
            })
            .collect();
        CommitChallenge {
            first_file,
            indices,
        }
    }

    /// The indices opened in file `offset` of the set.
    pub fn file_indices(&self, params: &PoisParams, offset: usize) -> &[u32] {
        let per_file = usize::from(params.commit_challenges_per_file);
        &self.indices[offset * per_file..][..per_file]
    }
}

/// The columns an opening of `index` carries, in order: ascending and distinct (`index`, its
/// chain parent `index − 1`, its expander parents).
pub fn opened_columns(params: &PoisParams, index: u32) -> Vec<u32> {
    let mut columns = expander_parents(params, index);
    columns.push(index);
    if index > 0 {
        columns.push(index - 1);
    }
    columns.sort_unstable();
    columns.dedup();
    columns
}

/// One column: its K labels, and the path of its digest to `columns_root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnOpening {
    pub index: u32,
    pub labels: Vec<Label>,
    pub path: Vec<Label>,
}

/// A label of the previous file's last layer, and its path to that file's `last_root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousOpening {
    pub label: Label,
    pub path: Vec<Label>,
}

/// The answer to one challenged index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The columns of [`opened_columns`], in that order.
    pub columns: Vec<ColumnOpening>,
    /// The path of the index's last label to `last_root`.
    pub last_path: Vec<Label>,
    /// In a file that is not its set's first: the previous file's last label at the index
    /// (a parent of the index's layer-0 label), with its path.
    pub previous: Option<PreviousOpening>,
}

/// The answer to a [`CommitChallenge`]: one opening per challenged index, in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitProof {
    pub openings: Vec<Opening>,
}

fn open(
    params: &PoisParams,
    index: u32,
    column: impl Fn(u32) -> Vec<Label>,
    columns_tree: &Tree,
    last_tree: &Tree,
    previous_tree: Option<&Tree>,
) -> Opening {
    Opening {
        columns: opened_columns(params, index)
            .into_iter()
            .map(|x| ColumnOpening {
                index: x,
                labels: column(x),
                path: columns_tree.path(x),
            })
            .collect(),
        last_path: last_tree.path(index),
        previous: previous_tree.map(|tree| PreviousOpening {
            label: *tree.leaf(index),
            path: tree.path(index),
        }),
    }
}

/// The commitment of a file whose every layer is in memory (`layers[l][i]`), by the
/// definition: the reference for [`generate`], and the tests' cheating miners' commitment.
pub fn commitment_from_layers(layers: &[Vec<Label>]) -> FileCommitment {
    let (columns_tree, last_tree) = trees_from_layers(layers);
    FileCommitment {
        columns_root: columns_tree.root(),
        last_root: last_tree.root(),
    }
}

fn trees_from_layers(layers: &[Vec<Label>]) -> (Tree, Tree) {
    let nodes = layers[0].len();
    let digests = (0..nodes)
        .map(|i| column_digest(&layers.iter().map(|layer| layer[i]).collect::<Vec<_>>()))
        .collect();
    (
        Tree::new(digests),
        Tree::new(layers[layers.len() - 1].clone()),
    )
}

/// The openings of `indices` in a file whose every layer is in memory, `previous_last` the
/// last layer of the file before it in its set: the reference for [`prove_commit`], and the
/// tests' cheating miners' prover.
pub fn open_from_layers(
    params: &PoisParams,
    layers: &[Vec<Label>],
    previous_last: Option<&[Label]>,
    indices: &[u32],
) -> Vec<Opening> {
    let (columns_tree, last_tree) = trees_from_layers(layers);
    let previous_tree = previous_last.map(|last| Tree::new(last.to_vec()));
    indices
        .iter()
        .map(|&c| {
            open(
                params,
                c,
                |x| layers.iter().map(|layer| layer[x as usize]).collect(),
                &columns_tree,
                &last_tree,
                previous_tree.as_ref(),
            )
        })
        .collect()
}

/// Answers `challenge` for `miner`'s set: labels its files again, in order, capturing the
/// opened columns (one core: a set is one sequential computation).
pub fn prove_commit(graph: &Graph, miner: &[u8; 32], challenge: &CommitChallenge) -> CommitProof {
    let params = graph.params();
    let mut openings = Vec::with_capacity(challenge.indices.len());
    let mut previous: Option<Generation> = None;
    for offset in 0..usize::from(params.files_per_set) {
        let indices = challenge.file_indices(params, offset);
        let mut capture: Vec<u32> = indices
            .iter()
            .flat_map(|&c| opened_columns(params, c))
            .collect();
        capture.sort_unstable();
        capture.dedup();
        let replica = replica_id(params, miner, challenge.first_file + offset as u64);
        let generation = generate_capturing(
            graph,
            &replica,
            previous.as_ref().map(|p| &p.last_layer[..]),
            &capture,
        );
        openings.extend(indices.iter().map(|&c| {
            open(
                params,
                c,
                |x| generation.captured[&x].clone(),
                &generation.columns_tree,
                &generation.last_tree,
                previous.as_ref().map(|p| &p.last_tree),
            )
        }));
        previous = Some(generation);
    }
    CommitProof { openings }
}

/// Why a commit proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error("the proof does not have the challenge's shape: {0}")]
    Shape(&'static str),
    #[error("file {file}: column {index} is not under the committed columns root")]
    ColumnPath { file: u64, index: u32 },
    #[error("file {file}: label ({layer}, {index}) is not the hash of its parents")]
    Label { file: u64, layer: u32, index: u32 },
    #[error("file {file}: label {index} of the last layer is not under the committed last root")]
    LastPath { file: u64, index: u32 },
    #[error("file {file}: the previous file's label {index} is not under its last root")]
    PreviousPath { file: u64, index: u32 },
}

/// Checks `proof` against the set's `commitments` and its `challenge` (which the verifier
/// derived itself). Work: F × commit_challenges_per_file × (D + 2) column paths and K labels
/// per challenged index, whatever the miner's total space.
pub fn verify_commit(
    params: &PoisParams,
    miner: &[u8; 32],
    commitments: &[FileCommitment],
    challenge: &CommitChallenge,
    proof: &CommitProof,
) -> Result<(), CommitError> {
    params.validate()?;
    let layers = usize::from(params.layers);
    let depth = params.depth();
    if commitments.len() != usize::from(params.files_per_set) {
        return Err(CommitError::Shape("not one commitment per file of the set"));
    }
    if challenge.indices.len() != params.commit_openings() {
        return Err(CommitError::Shape(
            "the challenge is not of these parameters",
        ));
    }
    if proof.openings.len() != challenge.indices.len() {
        return Err(CommitError::Shape("not one opening per challenged index"));
    }
    let per_file = usize::from(params.commit_challenges_per_file);
    for (k, (opening, &c)) in proof.openings.iter().zip(&challenge.indices).enumerate() {
        let offset = k / per_file;
        let file = challenge.first_file + offset as u64;
        let commitment = &commitments[offset];
        let expected = opened_columns(params, c);
        if opening.columns.len() != expected.len() {
            return Err(CommitError::Shape("not the columns the index opens"));
        }
        for (column, &x) in opening.columns.iter().zip(&expected) {
            if column.index != x || column.labels.len() != layers {
                return Err(CommitError::Shape("not the columns the index opens"));
            }
            let digest = column_digest(&column.labels);
            if !verify_path(&digest, x, &column.path, depth, &commitment.columns_root) {
                return Err(CommitError::ColumnPath { file, index: x });
            }
        }
        let column = |x: u32| {
            let at = expected.binary_search(&x).expect("an opened column");
            &opening.columns[at].labels
        };
        let previous = match (offset, &opening.previous) {
            (0, None) => None,
            (0, Some(_)) | (_, None) => {
                return Err(CommitError::Shape(
                    "the previous file's label is owed by every file but a set's first",
                ));
            }
            (_, Some(p)) => {
                let root = &commitments[offset - 1].last_root;
                if !verify_path(&p.label, c, &p.path, depth, root) {
                    return Err(CommitError::PreviousPath { file, index: c });
                }
                Some(p.label)
            }
        };
        let replica = replica_id(params, miner, file);
        let parents = expander_parents(params, c);
        for layer in 0..layers {
            let chain = (c > 0).then(|| column(c - 1)[layer]);
            let from_previous = if layer == 0 { previous } else { None };
            let below = (layer > 0).then(|| {
                let expanders: Vec<Label> = parents.iter().map(|&p| column(p)[layer - 1]).collect();
                (column(c)[layer - 1], expanders)
            });
            let message = label_message(
                &replica,
                layer as u32,
                c,
                chain.as_ref(),
                from_previous.as_ref(),
                below
                    .as_ref()
                    .map(|(direct, expanders)| (direct, &expanders[..])),
            );
            if label_of(&message) != column(c)[layer] {
                return Err(CommitError::Label {
                    file,
                    layer: layer as u32,
                    index: c,
                });
            }
        }
        if !verify_path(
            &column(c)[layers - 1],
            c,
            &opening.last_path,
            depth,
            &commitment.last_root,
        ) {
            return Err(CommitError::LastPath { file, index: c });
        }
    }
    Ok(())
}

/// The probability that a miner whose committed labels are not the hashes of their parents at
/// a fraction `faked` of a set's indices passes certification: each of the F × c openings
/// lands on a faked index with probability `faked`, and an opened faked label is always
/// caught (its parents are opened with it).
pub fn commit_pass_probability(params: &PoisParams, faked: f64) -> f64 {
    (1.0 - faked).powi(params.commit_openings() as i32)
}

const COMMIT_MAGIC: &[u8; 8] = b"CESSPOC1";

impl CommitProof {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(COMMIT_MAGIC);
        out.extend_from_slice(&(self.openings.len() as u16).to_le_bytes());
        for opening in &self.openings {
            out.extend_from_slice(&(opening.columns.len() as u16).to_le_bytes());
            for column in &opening.columns {
                out.extend_from_slice(&column.index.to_le_bytes());
                column.labels.iter().for_each(|l| out.extend_from_slice(l));
                column.path.iter().for_each(|l| out.extend_from_slice(l));
            }
            opening
                .last_path
                .iter()
                .for_each(|l| out.extend_from_slice(l));
            match &opening.previous {
                Some(p) => {
                    out.push(1);
                    out.extend_from_slice(&p.label);
                    p.path.iter().for_each(|l| out.extend_from_slice(l));
                }
                None => out.push(0),
            }
        }
        out
    }

    /// Decodes a proof of `params`' shape: counts bounded by the parameters, every label and
    /// path of the parameters' length, nothing trailing. Allocation follows the bytes read.
    pub fn decode(bytes: &[u8], params: &PoisParams) -> Result<CommitProof, DecodeError> {
        params
            .validate()
            .map_err(|_| DecodeError::Invalid("PoIS parameters"))?;
        if bytes.len() > params.commit_proof_bytes_max() {
            return Err(DecodeError::Invalid(
                "commit proof longer than its parameters allow",
            ));
        }
        let mut r = Reader::new(bytes);
        r.magic(COMMIT_MAGIC)?;
        let count = usize::from(r.u16()?);
        if count > params.commit_openings() {
            return Err(DecodeError::Invalid("more openings than the challenge has"));
        }
        let mut openings = Vec::new();
        for _ in 0..count {
            let columns_count = usize::from(r.u16()?);
            if columns_count > usize::from(params.degree) + 2 {
                return Err(DecodeError::Invalid("more columns than an index opens"));
            }
            let mut columns = Vec::new();
            for _ in 0..columns_count {
                let index = r.u32()?;
                let labels = read_labels(&mut r, usize::from(params.layers))?;
                let path = read_labels(&mut r, params.depth())?;
                columns.push(ColumnOpening {
                    index,
                    labels,
                    path,
                });
            }
            let last_path = read_labels(&mut r, params.depth())?;
            let previous = match r.array::<1>()?[0] {
                0 => None,
                1 => Some(PreviousOpening {
                    label: *r.array::<LABEL_BYTES>()?,
                    path: read_labels(&mut r, params.depth())?,
                }),
                _ => return Err(DecodeError::Invalid("previous-file flag")),
            };
            openings.push(Opening {
                columns,
                last_path,
                previous,
            });
        }
        r.finish()?;
        Ok(CommitProof { openings })
    }
}

pub(crate) fn read_labels(r: &mut Reader<'_>, count: usize) -> Result<Vec<Label>, DecodeError> {
    Ok(labels_of(r.take(count * LABEL_BYTES)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pois::label::reference_layers;

    #[test]
    fn generation_and_proving_are_their_references() {
        let params = PoisParams::TEST;
        let graph = Graph::new(&params);
        let miner = [9u8; 32];
        let layers: Vec<_> = (0..4)
            .map(|f| reference_layers(&params, &miner, 12 + f))
            .collect();
        let commitments: Vec<_> = layers.iter().map(|l| commitment_from_layers(l)).collect();
        let generated = std::sync::Mutex::new(Vec::new());
        generate_sets(&graph, &miner, &[4, 12], 2, &|file| {
            generated.lock().unwrap().push(file)
        });
        let mut generated = generated.into_inner().unwrap();
        generated.sort_by_key(|f| f.index);
        let generated = &generated[4..];
        for (file, layers) in generated.iter().zip(&layers) {
            assert_eq!(file.bytes, layers[3].concat());
        }
        assert_eq!(
            generated.iter().map(|f| f.commitment).collect::<Vec<_>>(),
            commitments
        );
        let challenge = CommitChallenge::derive(&params, &miner, 12, &commitments, &[5; 32]);
        let proof = prove_commit(&graph, &miner, &challenge);
        let reference: Vec<Opening> = layers
            .iter()
            .enumerate()
            .flat_map(|(offset, l)| {
                let previous = offset.checked_sub(1).map(|p| &layers[p][3][..]);
                open_from_layers(
                    &params,
                    l,
                    previous,
                    challenge.file_indices(&params, offset),
                )
            })
            .collect();
        assert_eq!(proof.openings, reference);
        verify_commit(&params, &miner, &commitments, &challenge, &proof).unwrap();
        let bytes = proof.encode();
        assert!(bytes.len() <= params.commit_proof_bytes_max());
        assert_eq!(CommitProof::decode(&bytes, &params).unwrap(), proof);
    }

    #[test]
    fn the_network_parameters_fit_a_transaction() {
        let params = PoisParams::NETWORK;
        params.validate().unwrap();
        // Under the ledger's PoIS proof bound (`IDLE_PROOF_BYTES_MAX`, 480 KiB).
        assert!(
            params.commit_proof_bytes_max() <= 480 << 10,
            "{}",
            params.commit_proof_bytes_max()
        );
        assert!(
            params.space_proof_bytes_max() < 90 << 10,
            "{}",
            params.space_proof_bytes_max()
        );
        // One engine fragment of the largest size (`FRAGMENT_BYTES_MAX`).
        assert_eq!(params.file_bytes(), crate::FRAGMENT_BYTES_MAX);
        assert_eq!(params.set_bytes(), 256 << 20);
    }
}
