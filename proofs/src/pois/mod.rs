//! PoIS: proof of idle space. A miner fills the space it declares with idle files that only it
//! could have made, proves on the ledger that it made them honestly (certification), and proves
//! in each audit that it still keeps them (space challenges). CESS does the same with a TEE and
//! an RSA accumulator (`../shared/research/cess-internals.md` §3); here the validators check
//! everything themselves against Merkle roots kept on the ledger.
//!
//! **The graph** ([`graph`]). An idle file of miner `m` with number `f` is the last of K layers
//! of N labels of 32 bytes. Label (l, i) is BLAKE3 (keyed for this use) of a header naming the
//! replica `(m, f)`, l and i, then its parents' labels in a fixed order: (l, i−1) when i > 0 (a
//! chain: each layer is one sequential computation); in layer 0 of every file of a set but the
//! first, the previous file's last label at i (as CESS chains a set's clusters: a set is one
//! sequential computation, so a deleted set cannot be labelled again in parallel); and when
//! l > 0 (l−1, i) and D expander parents (l−1, p_j(i)) drawn once per parameter set from a
//! public seed (the same indices at every layer, as Filecoin's stacked DRG does, so that one
//! column opening serves every layer).
//!
//! **The commitment** ([`commit`]). Per file two roots: `columns_root` over the N column
//! digests (the K labels at one index, chained through BLAKE3), and `last_root` over the last
//! layer alone (what the miner keeps, and what space challenges open). A set of F files is
//! committed on the ledger; the ledger derives the commit challenge from randomness of a later
//! block: `commit_challenges_per_file` indices in every file of the set. The answer opens, for
//! each challenged index c, the columns of c, c−1 and every p_j(c) with their paths; the
//! verifier recomputes every label of column c from them (nothing sampled away) and checks c's
//! last label against `last_root`.
//!
//! **Space challenges** ([`space`]). In an audit the ledger's randomness picks one of the
//! miner's certified sets and `space_labels_per_file` indices in each of its files; the miner
//! answers with those labels and their paths to `last_root`. The verifier's work depends on
//! the parameters only, never on how much space the miner has.
//!
//! The soundness of both, for the parameters below, is written down in `proofs/DESIGN.md`
//! (and computed by [`space::space_pass_probability`] and
//! [`commit::commit_pass_probability`], measured on the real derivations by the tests).
//!
//! Every fast path ([`label::label_layers`], [`merkle::Tree`], [`commit::prove_commit`]) has
//! a reference written for clarity alone ([`label::reference_layers`],
//! [`merkle::reference_root`], [`commit::open_from_layers`]) that the tests hold it to.

pub mod commit;
pub mod graph;
pub mod label;
pub mod merkle;
pub mod space;

pub use commit::{
    CommitChallenge, CommitError, CommitProof, FileCommitment, IdleFile, generate_set,
    generate_sets, prove_commit, verify_commit,
};
pub use graph::Graph;
pub use space::{SpaceChallenge, SpaceError, SpaceProof, prove_space, verify_space};

use std::sync::LazyLock;

/// Bytes of one label (a BLAKE3 output: 128-bit collision resistance).
pub const LABEL_BYTES: usize = 32;
/// One label, or one node of a Merkle tree.
pub type Label = [u8; LABEL_BYTES];

/// The shape of the idle files and of their proofs. The ledger keeps one in its parameters;
/// every value is bounded by [`PoisParams::validate`] so that no parameter set makes a proof
/// or a verification unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoisParams {
    /// N = 2^nodes_log2 labels per layer; an idle file is N × 32 bytes.
    pub nodes_log2: u8,
    /// K: layers labelled per file (only the last is kept).
    pub layers: u8,
    /// D: expander parents per label, in the layer below.
    pub degree: u8,
    /// F: files certified together (one commit transaction, one space-challenged unit).
    pub files_per_set: u16,
    /// Indices of each file of a set opened by the commit challenge.
    pub commit_challenges_per_file: u16,
    /// Labels of each file of the challenged set opened by a space challenge.
    pub space_labels_per_file: u16,
}

impl PoisParams {
    /// The network's: 64 MiB idle files (as CESS's; one engine fragment of the largest size),
    /// K = 20, D = 8, sets of 4 files (256 MiB, one sequential computation), eight commit
    /// openings and 32 space openings per file. Labelling one file takes about 27 s of one
    /// core, longer than the most a miner can get to answer a space audit (its 10 s deadline,
    /// 5 s of a proposer's clock ahead and a block), so a miner cannot rebuild even one deleted
    /// file in time (the time bound is per file, not per set: a kept file is a checkpoint for
    /// the next). A commit proof is then at most about 454 KiB (under the ledger's 480 KiB
    /// proof bound) and a space proof about 88 KiB. CESS uses D = 64; D is
    /// smaller here because every parent of every challenged label is opened (CESS checks a
    /// sample), and each parent costs a column. `proofs/DESIGN.md` gives the soundness of
    /// these numbers.
    pub const NETWORK: PoisParams = PoisParams {
        nodes_log2: 21,
        layers: 20,
        degree: 8,
        files_per_set: 4,
        commit_challenges_per_file: 8,
        space_labels_per_file: 32,
    };

    /// Small files for tests and local networks: 8 KiB files, 4 layers, 4 parents, sets of 4.
    pub const TEST: PoisParams = PoisParams {
        nodes_log2: 8,
        layers: 4,
        degree: 4,
        files_per_set: 4,
        commit_challenges_per_file: 2,
        space_labels_per_file: 4,
    };

    /// N, labels per layer.
    pub fn nodes(&self) -> u32 {
        1 << self.nodes_log2
    }

    /// Bytes of one idle file (its last layer).
    pub fn file_bytes(&self) -> u64 {
        u64::from(self.nodes()) * LABEL_BYTES as u64
    }

    /// Bytes of one certified set.
    pub fn set_bytes(&self) -> u64 {
        self.file_bytes() * u64::from(self.files_per_set)
    }

    /// Siblings in one Merkle path (the trees have N leaves).
    pub fn depth(&self) -> usize {
        usize::from(self.nodes_log2)
    }

    /// Refuses a parameter set outside the bounds every decoder and verifier relies on.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let check = |ok: bool, what: &'static str| if ok { Ok(()) } else { Err(ParamsError(what)) };
        check(
            (4..=24).contains(&self.nodes_log2),
            "nodes_log2 outside 4..=24",
        )?;
        check((1..=32).contains(&self.layers), "layers outside 1..=32")?;
        check(
            (1..=DEGREE_MAX).contains(&self.degree),
            "degree outside 1..=32",
        )?;
        check(
            (1..=256).contains(&self.files_per_set),
            "files_per_set outside 1..=256",
        )?;
        check(
            (1..=64).contains(&self.commit_challenges_per_file),
            "commit_challenges_per_file outside 1..=64",
        )?;
        check(
            (1..=64).contains(&self.space_labels_per_file),
            "space_labels_per_file outside 1..=64",
        )
    }

    /// The parameters as bytes, bound into every derivation so that two parameter sets never
    /// share a graph, a label or a challenge.
    pub fn encode(&self) -> [u8; 11] {
        let mut out = [0u8; 11];
        out[0] = self.nodes_log2;
        out[1] = self.layers;
        out[2] = self.degree;
        out[3..5].copy_from_slice(&self.files_per_set.to_le_bytes());
        out[5..7].copy_from_slice(&self.commit_challenges_per_file.to_le_bytes());
        out[7..9].copy_from_slice(&self.space_labels_per_file.to_le_bytes());
        out[9..11].copy_from_slice(b"v1");
        out
    }

    /// The most bytes an encoded commit proof may have for these parameters (every challenge
    /// opening D + 2 distinct columns).
    pub fn commit_proof_bytes_max(&self) -> usize {
        let column = 4 + usize::from(self.layers) * LABEL_BYTES + self.depth() * LABEL_BYTES;
        let path = self.depth() * LABEL_BYTES;
        let opening = 2 + (usize::from(self.degree) + 2) * column + path + 1 + LABEL_BYTES + path;
        8 + 2 + self.commit_openings() * opening
    }

    /// Openings in one commit proof.
    pub fn commit_openings(&self) -> usize {
        usize::from(self.files_per_set) * usize::from(self.commit_challenges_per_file)
    }

    /// The most bytes an encoded space proof may have (every file of the set live).
    pub fn space_proof_bytes_max(&self) -> usize {
        let opening = LABEL_BYTES + self.depth() * LABEL_BYTES;
        8 + 2
            + usize::from(self.files_per_set)
                * (2 + usize::from(self.space_labels_per_file) * opening)
    }
}

/// The largest expander degree accepted.
pub const DEGREE_MAX: u8 = 32;

/// Why a parameter set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PoIS parameters refused: {0}")]
pub struct ParamsError(pub &'static str);

/// The keys of the keyed BLAKE3 hashes, one per use, so that no value of one kind can be
/// passed off as another (a label as a tree node, a column digest as a label).
pub(crate) struct Keys {
    pub(crate) graph: [u8; 32],
    pub(crate) replica: [u8; 32],
    pub(crate) label: [u8; 32],
    pub(crate) column: [u8; 32],
    pub(crate) node: [u8; 32],
    pub(crate) commit_challenge: [u8; 32],
    pub(crate) space_challenge: [u8; 32],
    pub(crate) commitments: [u8; 32],
}

pub(crate) static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let key = |what: &str| blake3::derive_key(&format!("cess-pois/v1 {what}"), &[]);
    Keys {
        graph: key("graph"),
        replica: key("replica"),
        label: key("label"),
        column: key("column"),
        node: key("node"),
        commit_challenge: key("commit challenge"),
        space_challenge: key("space challenge"),
        commitments: key("commitments"),
    }
});

/// The replica id of idle file `file_index` of `miner`: every label of the file depends on
/// it, so no miner can present another's files, or one file under two numbers.
pub fn replica_id(params: &PoisParams, miner: &[u8; 32], file_index: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(&KEYS.replica);
    hasher.update(&params.encode());
    hasher.update(miner);
    hasher.update(&file_index.to_le_bytes());
    *hasher.finalize().as_bytes()
}
