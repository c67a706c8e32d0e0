//! Space challenges: in an audit the ledger's randomness picks one of the miner's certified sets
//! and `space_labels_per_file` indices in each of its live files (a file replaced by user data
//! is no longer challenged); the miner answers with the labels and their paths to each file's
//! `last_root`. The work of both sides depends on the parameters alone, never on the space.

use super::commit::read_labels;
use super::merkle::{Tree, verify_path};
use super::{KEYS, LABEL_BYTES, Label, ParamsError, PoisParams};
use crate::{DecodeError, Reader};

/// Which set, and which indices of each of its files, a space challenge opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceChallenge {
    /// The first file of the chosen set.
    pub first_file: u64,
    /// `space_labels_per_file` indices per file of the set, file by file (for every file of
    /// the set; a replaced file's are skipped).
    pub indices: Vec<u32>,
}

impl SpaceChallenge {
    /// Picks one of `sets` (the first file of each certified set of the miner, in the ledger's
    /// order) with `randomness` (the audit round's), and the indices. None when the miner has
    /// no certified set.
    pub fn derive(
        params: &PoisParams,
        miner: &[u8; 32],
        round: u64,
        randomness: &[u8; 32],
        sets: &[u64],
    ) -> Option<SpaceChallenge> {
        let first_file = Self::pick_set(params, miner, round, randomness, sets)?;
        Some(Self::for_set(params, miner, round, randomness, first_file))
    }

    /// The set [`SpaceChallenge::derive`] picks: what the ledger records when it opens the
    /// audit (the miner's list of sets may change before the answer arrives).
    pub fn pick_set(
        params: &PoisParams,
        miner: &[u8; 32],
        round: u64,
        randomness: &[u8; 32],
        sets: &[u64],
    ) -> Option<u64> {
        if sets.is_empty() {
            return None;
        }
        let mut xof = Self::stream(params, miner, round, randomness, b"set", None);
        let mut word = [0u8; 8];
        xof.fill(&mut word);
        // The bias of a 64-bit draw reduced modulo a set count below 2^32 is under 2^-32.
        Some(sets[(u64::from_le_bytes(word) % sets.len() as u64) as usize])
    }

    /// The indices opened in the set starting at `first_file`.
    pub fn for_set(
        params: &PoisParams,
        miner: &[u8; 32],
        round: u64,
        randomness: &[u8; 32],
        first_file: u64,
    ) -> SpaceChallenge {
        let mut xof = Self::stream(
            params,
            miner,
            round,
            randomness,
            b"indices",
            Some(first_file),
        );
        let mask = params.nodes() - 1;
        let count = usize::from(params.files_per_set) * usize::from(params.space_labels_per_file);
        let indices = (0..count)
            .map(|_| {
                let mut word = [0u8; 4];
                xof.fill(&mut word);
                u32::from_le_bytes(word) & mask
            })
            .collect();
        SpaceChallenge {
            first_file,
            indices,
        }
    }

    fn stream(
        params: &PoisParams,
        miner: &[u8; 32],
        round: u64,
        randomness: &[u8; 32],
        what: &[u8],
        first_file: Option<u64>,
    ) -> blake3::OutputReader {
        let mut hasher = blake3::Hasher::new_keyed(&KEYS.space_challenge);
        hasher.update(&params.encode());
        hasher.update(miner);
        hasher.update(&round.to_le_bytes());
        hasher.update(randomness);
        hasher.update(what);
        if let Some(first_file) = first_file {
            hasher.update(&first_file.to_le_bytes());
        }
        hasher.finalize_xof()
    }

    /// The indices opened in file `offset` of the set.
    pub fn file_indices(&self, params: &PoisParams, offset: usize) -> &[u32] {
        let per_file = usize::from(params.space_labels_per_file);
        &self.indices[offset * per_file..][..per_file]
    }
}

/// One opened label and its path to `last_root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelOpening {
    pub label: Label,
    pub path: Vec<Label>,
}

/// The answer: for each live file of the set, in order, its challenged labels in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceProof {
    pub files: Vec<Vec<LabelOpening>>,
}

/// Answers `challenge` from the bytes of the set's files (None for a file replaced by user
/// data). Each live file's tree is built from its bytes (N node hashes).
pub fn prove_space(
    params: &PoisParams,
    challenge: &SpaceChallenge,
    files: &[Option<&[u8]>],
) -> SpaceProof {
    assert_eq!(files.len(), usize::from(params.files_per_set));
    SpaceProof {
        files: files
            .iter()
            .enumerate()
            .filter_map(|(offset, bytes)| {
                let bytes = (*bytes)?;
                assert_eq!(bytes.len() as u64, params.file_bytes());
                let tree = Tree::from_label_bytes(bytes);
                Some(
                    challenge
                        .file_indices(params, offset)
                        .iter()
                        .map(|&i| LabelOpening {
                            label: *tree.leaf(i),
                            path: tree.path(i),
                        })
                        .collect(),
                )
            })
            .collect(),
    }
}

/// Why a space proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpaceError {
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error("the proof does not have the challenge's shape: {0}")]
    Shape(&'static str),
    #[error("file {file}: label {index} is not under the committed last root")]
    Path { file: u64, index: u32 },
}

/// Checks `proof` against the `last_root` of each file of the challenged set (None for a
/// replaced file). Work: F × space_labels_per_file paths of depth log2 N.
pub fn verify_space(
    params: &PoisParams,
    last_roots: &[Option<Label>],
    challenge: &SpaceChallenge,
    proof: &SpaceProof,
) -> Result<(), SpaceError> {
    params.validate()?;
    if last_roots.len() != usize::from(params.files_per_set) {
        return Err(SpaceError::Shape("not one root per file of the set"));
    }
    let live: Vec<(usize, &Label)> = last_roots
        .iter()
        .enumerate()
        .filter_map(|(offset, root)| root.as_ref().map(|r| (offset, r)))
        .collect();
    if proof.files.len() != live.len() {
        return Err(SpaceError::Shape("not one answer per live file"));
    }
    for ((offset, root), openings) in live.into_iter().zip(&proof.files) {
        let indices = challenge.file_indices(params, offset);
        if openings.len() != indices.len() {
            return Err(SpaceError::Shape("not one label per challenged index"));
        }
        let file = challenge.first_file + offset as u64;
        for (opening, &index) in openings.iter().zip(indices) {
            if !verify_path(&opening.label, index, &opening.path, params.depth(), root) {
                return Err(SpaceError::Path { file, index });
            }
        }
    }
    Ok(())
}

/// The probability that a miner keeping a fraction `kept` of each challenged file's labels
/// (the rest dropped uniformly, and not regenerated before the deadline) passes one space
/// challenge of a fully live set: each of the F × S opened labels must be one it kept.
/// A miner that drops whole sets instead passes with the fraction of sets it kept.
pub fn space_pass_probability(params: &PoisParams, kept: f64) -> f64 {
    kept.powi(i32::from(params.files_per_set) * i32::from(params.space_labels_per_file))
}

const SPACE_MAGIC: &[u8; 8] = b"CESSPOS1";

impl SpaceProof {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SPACE_MAGIC);
        out.extend_from_slice(&(self.files.len() as u16).to_le_bytes());
        for file in &self.files {
            out.extend_from_slice(&(file.len() as u16).to_le_bytes());
            for opening in file {
                out.extend_from_slice(&opening.label);
                opening.path.iter().for_each(|l| out.extend_from_slice(l));
            }
        }
        out
    }

    /// Decodes a proof of `params`' shape; counts bounded by the parameters, nothing
    /// trailing.
    pub fn decode(bytes: &[u8], params: &PoisParams) -> Result<SpaceProof, DecodeError> {
        params
            .validate()
            .map_err(|_| DecodeError::Invalid("PoIS parameters"))?;
        if bytes.len() > params.space_proof_bytes_max() {
            return Err(DecodeError::Invalid(
                "space proof longer than its parameters allow",
            ));
        }
        let mut r = Reader::new(bytes);
        r.magic(SPACE_MAGIC)?;
        let count = usize::from(r.u16()?);
        if count > usize::from(params.files_per_set) {
            return Err(DecodeError::Invalid("more files than a set has"));
        }
        let mut files = Vec::new();
        for _ in 0..count {
            let openings = usize::from(r.u16()?);
            if openings > usize::from(params.space_labels_per_file) {
                return Err(DecodeError::Invalid(
                    "more labels than a file is challenged on",
                ));
            }
            let mut file = Vec::new();
            for _ in 0..openings {
                let label = *r.array::<LABEL_BYTES>()?;
                let path = read_labels(&mut r, params.depth())?;
                file.push(LabelOpening { label, path });
            }
            files.push(file);
        }
        r.finish()?;
        Ok(SpaceProof { files })
    }
}
