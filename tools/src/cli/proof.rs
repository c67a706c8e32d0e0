//! `cess proof`: PoDR² by hand: tagger keys, tags, challenges, proofs, verification.

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

use crate::cli::store::{DEMO_NODE_HEX, node_id};
use crate::proof_cmd;

#[derive(Subcommand)]
pub enum ProofCommand {
    /// Creates a tagger key pair: OUT (secret, mode 0600) and OUT.pub (public).
    Keygen {
        out: PathBuf,
        /// Sectors of 31 bytes per block (one tag per block).
        #[arg(long, default_value_t = cess_proofs::SECTORS_PER_BLOCK_DEFAULT)]
        sectors: u32,
    },
    /// Tags every fragment not yet tagged by this tagger (the tagger's job, not the miner's).
    Tag {
        /// The tagger's secret key.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        holding: HoldingArgs,
    },
    /// Derives a challenge from the public inputs and writes it.
    Challenge {
        /// The tagger's public key.
        #[arg(long)]
        public: PathBuf,
        #[command(flatten)]
        holding: HoldingArgs,
        #[command(flatten)]
        round: RoundArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Answers a challenge with one aggregated proof, reading only the challenged blocks.
    Prove {
        #[arg(long)]
        public: PathBuf,
        #[arg(long)]
        challenge: PathBuf,
        #[command(flatten)]
        holding: HoldingArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-derives the challenge from the public inputs and verifies a proof (exit 1 if invalid).
    Verify {
        #[arg(long)]
        public: PathBuf,
        #[command(flatten)]
        holding: HoldingArgs,
        #[command(flatten)]
        round: RoundArgs,
        #[arg(long)]
        proof: PathBuf,
    },
}

/// Where the fragments are: a directory of fragment files or an engine store.
#[derive(clap::Args)]
pub struct HoldingArgs {
    /// A directory of fragment files (tags beside them as NAME.tags).
    #[arg(long)]
    fragments: Option<PathBuf>,
    /// An engine store (tags in each fragment's metadata).
    #[arg(long)]
    store: Option<PathBuf>,
    /// The store's node identity, 64 hex digits.
    #[arg(long, default_value = DEMO_NODE_HEX)]
    node_id: String,
}

/// The public inputs of a challenge besides the fragment set.
#[derive(clap::Args)]
pub struct RoundArgs {
    /// The epoch's randomness, 64 hex digits.
    #[arg(long)]
    randomness: String,
    /// The challenged miner's identity.
    #[arg(long)]
    miner: String,
    #[arg(long, default_value_t = 0)]
    round: u64,
    /// Most fragments challenged per round.
    #[arg(long, default_value_t = cess_proofs::ChallengeParams::default().fragments_max)]
    challenge_fragments: u32,
    /// Blocks challenged per round, spread over the sampled fragments.
    #[arg(long, default_value_t = cess_proofs::ChallengeParams::default().blocks_max)]
    challenge_blocks: u32,
}

impl HoldingArgs {
    fn holding(self) -> Result<proof_cmd::Holding> {
        proof_cmd::parse_holding(self.fragments, self.store, node_id(&self.node_id)?)
    }
}

impl RoundArgs {
    fn round(self) -> proof_cmd::Round {
        proof_cmd::Round {
            randomness_hex: self.randomness,
            miner: self.miner,
            round: self.round,
            params: cess_proofs::ChallengeParams {
                fragments_max: self.challenge_fragments,
                blocks_max: self.challenge_blocks,
            },
        }
    }
}

pub fn run(command: ProofCommand) -> Result<()> {
    match command {
        ProofCommand::Keygen { out, sectors } => proof_cmd::keygen(&out, sectors),
        ProofCommand::Tag { key, holding } => proof_cmd::tag(&key, &holding.holding()?),
        ProofCommand::Challenge {
            public,
            holding,
            round,
            out,
        } => proof_cmd::challenge(&public, &holding.holding()?, &round.round(), &out),
        ProofCommand::Prove {
            public,
            challenge,
            holding,
            out,
        } => proof_cmd::prove_cmd(&public, &challenge, &holding.holding()?, &out),
        ProofCommand::Verify {
            public,
            holding,
            round,
            proof,
        } => {
            if proof_cmd::verify_cmd(&public, &holding.holding()?, &round.round(), &proof)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}
