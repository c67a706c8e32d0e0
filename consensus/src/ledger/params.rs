//! Ledger parameters and genesis.

use crate::codec::{DecodeError, Reader, Writer, hash};
use crate::keys::{AccountId, VALIDATOR_KEY_BYTES, VALIDATOR_SIGNATURE_BYTES};
use crate::tx::{Call, Hash32, Transaction};
use cess_proofs::ChallengeParams;
use cess_proofs::pois::PoisParams;

/// One unit of account is 10⁻¹² token (a "pico"), as CESS counts.
pub const TOKEN: u128 = 1_000_000_000_000;
pub const GIB: u64 = 1 << 30;
/// A file with a segment of which more than a third of the fragments are under restoral is
/// suspected lost; it is lost if it is still so after this many claim periods (the seed's
/// "three times the restoral time").
pub const LOST_COUNTDOWN_CLAIMS: u64 = 3;

/// Everything the ledger's rules depend on. The defaults are documented per field; a network
/// fixes its parameters in its genesis, so every validator runs the same rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerParams {
    /// Reed-Solomon data fragments per segment (any this many rebuild it): 4.
    pub data_fragments: u16,
    /// Fragments per segment, one per miner column: 12 (4 data + 8 parity).
    pub fragments_per_segment: u16,
    /// Largest fragment a storage order may declare: 64 MiB.
    pub fragment_bytes_max: u64,
    /// Least collateral a miner registers with: 100 tokens.
    pub miner_collateral_min: u128,
    /// Blocks between `ExitMiner` and `WithdrawMiner`: 600 (an hour at 6 s blocks).
    pub miner_cooling_off_blocks: u64,
    /// An audit round opens every this many blocks: 100.
    pub audit_period_blocks: u64,
    /// Share of the miners holding data that each round challenges, per mille: 500.
    pub audit_miners_permille: u32,
    /// A challenge's deadline is this many blocks after it opens…: 20.
    pub audit_deadline_base_blocks: u64,
    /// …plus one block per this many challenged fragments (more data, more time): 8.
    pub audit_fragments_per_extra_block: u64,
    /// How much one challenge samples (46 fragments, 460 blocks: ≥ 99 % detection of 1 %
    /// corruption per round).
    pub challenge: ChallengeParams,
    /// Rent of one GiB of space for one block, paid by owners for the space they rent and
    /// earned by miners for the bytes they hold: 2.5·10⁻⁶ token (about 1 token per GiB per
    /// 30 days at 6 s blocks). Space counts the bytes miners store, every fragment: a
    /// 1 GiB file at 4 + 8 uses 3 GiB.
    pub rent_per_gib_block: u128,
    /// A lease's files are kept this many blocks after it ends (no new orders meanwhile),
    /// then released; a new lease pays for these blocks up front: 1200.
    pub lease_grace_blocks: u64,
    /// Work per block for ended leases, in fragments released (each lease removed counts
    /// one; at least one file per block whatever its size; the rest wait): 4096.
    pub lease_releases_per_block_max: u32,
    /// Taken from collateral into the pool when a challenge's deadline passes unanswered:
    /// 10 tokens.
    pub penalty_missing: u128,
    /// Taken when the proof does not verify: 20 tokens (a wrong proof is worse than none).
    pub penalty_invalid: u128,
    /// A claimed restoral order must be completed within this many blocks: 300.
    pub restoral_claim_blocks: u64,
    /// Blocks per epoch (VRF randomness): 50.
    pub epoch_blocks: u64,
    /// Blocks per era (validator election): 200.
    pub era_blocks: u64,
    /// Validators elected per era: 11.
    pub validators_per_era: u32,
    /// Least stake of a validator candidate: 1000 tokens.
    pub candidate_stake_min: u128,
    /// Every included transaction pays at least this (its signature check and its receipt):
    /// 0.001 token…
    pub fee_base: u128,
    /// …plus this per encoded byte (blocks, relays and every replica carry the bytes):
    /// 10⁻⁶ token, so a 400 KiB transaction pays about 0.4 token…
    pub fee_per_byte: u128,
    /// …plus this per state entry the call may create (a file, a fragment, a miner, a
    /// tagger point, a restoral claim), which every replica keeps: 0.001 token…
    pub fee_per_entry: u128,
    /// …plus this for a proof the block must verify (two pairings, about 40 signature
    /// checks): 0.01 token.
    pub fee_proof: u128,
    /// A mempool admits a transaction only when its `valid_until` is at most this many
    /// blocks ahead, so nothing waits longer: 1200 (two hours at 6 s blocks).
    pub tx_validity_blocks_max: u64,
    /// A storage order not completed (every column reported) within this many blocks is
    /// released and its locked space returns: 600.
    pub order_validity_blocks: u64,
    /// A miner that misses or fails this many audits in a row has its fragments handed to
    /// restoral orders: 3.
    pub audit_misses_max: u32,
    /// Restoral orders one miner may hold claimed at once: 16.
    pub restoral_claims_per_miner_max: u32,
    /// A miner whose restoral claims expire this many times in a row (claimed, never
    /// completed) may not claim again for `restoral_bar_blocks`: 3.
    pub restoral_expiries_max: u32,
    /// How long such a miner may not claim: 1200 blocks.
    pub restoral_bar_blocks: u64,
    /// Taken from collateral for each fragment a miner reports lost, at most
    /// `penalty_missing / 2` in one audit period whatever it reports, so that reporting a
    /// loss honestly always costs less than the failed audit that would find it (see
    /// `Ledger::report_lost`): 0.1 token.
    pub penalty_lost: u128,
    /// The idle files' shape and their proofs' (`cess_proofs::pois`): 8 MiB files, sets of
    /// 32 ([`PoisParams::NETWORK`]).
    pub pois: PoisParams,
    /// A committed idle set must be proven within this many blocks of its commitment: 100.
    pub pois_commit_blocks: u64,
    /// A space audit must be answered within this many blocks at most: 600. The deadline that
    /// binds is the time below; blocks come as fast as consensus goes when transactions wait
    /// (every 500 ms when idle), so a count of blocks is no time, and a small cap would let
    /// anyone close every audit early with a few cheap transactions. The cap bounds an audit
    /// whose time colluding proposers hold back (a block's time only has to not go backwards);
    /// honest proposers stamp their clock.
    pub pois_space_deadline_blocks: u64,
    /// A space audit must be answered at the latest in the block after the first whose time
    /// (the ledger's, set by its proposer at most `TIME_AHEAD_MS_MAX` ahead of the validators'
    /// clocks) is this many ms past the block that drew it: 10 s. A miner gets at most this,
    /// 5 s of a proposer's clock ahead and a block (about 16 s), and an honest one at least 5
    /// s. Answering reads the challenged set and hashes its trees (about a second for the
    /// network's 256 MiB sets); labelling one deleted 64 MiB file again takes about 27 s of
    /// one core here, so a miner cannot rebuild even one file in time (`cess-bench proofs
    /// --case pois-relabel-file`; `proofs/DESIGN.md`, "Labelling again against the
    /// deadline").
    pub pois_space_deadline_ms: u64,
    /// Paid from the reward pool for a GiB of verified idle space for one block, at each valid
    /// space proof: a quarter of the rent (idle space is worth less than stored data, and is
    /// paid for by the network, not by owners).
    pub idle_reward_per_gib_block: u128,
}

impl Default for LedgerParams {
    fn default() -> LedgerParams {
        LedgerParams {
            data_fragments: 4,
            fragments_per_segment: 12,
            fragment_bytes_max: 64 << 20,
            miner_collateral_min: 100 * TOKEN,
            miner_cooling_off_blocks: 600,
            audit_period_blocks: 100,
            audit_miners_permille: 500,
            audit_deadline_base_blocks: 20,
            audit_fragments_per_extra_block: 8,
            challenge: ChallengeParams::default(),
            rent_per_gib_block: TOKEN / 400_000,
            lease_grace_blocks: 1200,
            lease_releases_per_block_max: 4096,
            penalty_missing: 10 * TOKEN,
            penalty_invalid: 20 * TOKEN,
            restoral_claim_blocks: 300,
            epoch_blocks: 50,
            era_blocks: 200,
            validators_per_era: 11,
            candidate_stake_min: 1000 * TOKEN,
            fee_base: TOKEN / 1000,
            fee_per_byte: TOKEN / 1_000_000,
            fee_per_entry: TOKEN / 1000,
            fee_proof: TOKEN / 100,
            tx_validity_blocks_max: 1200,
            order_validity_blocks: 600,
            audit_misses_max: 3,
            restoral_claims_per_miner_max: 16,
            restoral_expiries_max: 3,
            restoral_bar_blocks: 1200,
            penalty_lost: TOKEN / 10,
            pois: PoisParams::NETWORK,
            pois_commit_blocks: 100,
            pois_space_deadline_blocks: 600,
            pois_space_deadline_ms: 10_000,
            idle_reward_per_gib_block: TOKEN / 1_600_000,
        }
    }
}

impl LedgerParams {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u16(self.data_fragments)
            .u16(self.fragments_per_segment)
            .u64(self.fragment_bytes_max)
            .u128(self.miner_collateral_min)
            .u64(self.miner_cooling_off_blocks)
            .u64(self.audit_period_blocks)
            .u32(self.audit_miners_permille)
            .u64(self.audit_deadline_base_blocks)
            .u64(self.audit_fragments_per_extra_block)
            .u32(self.challenge.fragments_max)
            .u32(self.challenge.blocks_max)
            .u128(self.rent_per_gib_block)
            .u64(self.lease_grace_blocks)
            .u32(self.lease_releases_per_block_max)
            .u128(self.penalty_missing)
            .u128(self.penalty_invalid)
            .u64(self.restoral_claim_blocks)
            .u64(self.epoch_blocks)
            .u64(self.era_blocks)
            .u32(self.validators_per_era)
            .u128(self.candidate_stake_min)
            .u128(self.fee_base)
            .u128(self.fee_per_byte)
            .u128(self.fee_per_entry)
            .u128(self.fee_proof)
            .u64(self.tx_validity_blocks_max)
            .u64(self.order_validity_blocks)
            .u32(self.audit_misses_max)
            .u32(self.restoral_claims_per_miner_max)
            .u32(self.restoral_expiries_max)
            .u64(self.restoral_bar_blocks)
            .u128(self.penalty_lost)
            .u8(self.pois.nodes_log2)
            .u8(self.pois.layers)
            .u8(self.pois.degree)
            .u16(self.pois.files_per_set)
            .u16(self.pois.commit_challenges_per_file)
            .u16(self.pois.space_labels_per_file)
            .u64(self.pois_commit_blocks)
            .u64(self.pois_space_deadline_blocks)
            .u64(self.pois_space_deadline_ms)
            .u128(self.idle_reward_per_gib_block);
    }

    /// The least fee `tx` must carry: a base, its bytes, the state entries its call may
    /// create, and a proof's verification. Computed from the transaction alone (never the
    /// state), so a mempool can check it before anything else.
    pub fn min_fee(&self, tx: &Transaction) -> u128 {
        self.min_fee_for_len(tx, tx.encoded_len())
    }

    /// [`LedgerParams::min_fee`] for a caller that has the encoded length already.
    pub fn min_fee_for_len(&self, tx: &Transaction, len_bytes: usize) -> u128 {
        // A delegate's call costs what the call inside it costs.
        let call = match &tx.call {
            Call::ForOwner { call, .. } => call.as_ref(),
            call => call,
        };
        let entries: u128 = match call {
            Call::RegisterMiner { .. } | Call::RegisterCandidate { .. } => 1,
            // A key of s sectors is s + 1 points of 48 bytes.
            Call::RegisterTagger { key, .. } => 1 + (key.len() / 48) as u128,
            Call::DeclareFile { segments, .. } => {
                1 + segments
                    .iter()
                    .map(|s| 1 + s.fragments.len() as u128)
                    .sum::<u128>()
            }
            Call::ReportLost { .. }
            | Call::ClaimRestoral { .. }
            | Call::RentSpace { .. }
            | Call::Authorize { .. }
            | Call::CreateBucket { .. }
            | Call::CommitIdle { .. } => 1,
            _ => 0,
        };
        // A proof's check and a BLS approval's check each cost two pairings.
        let proof = match &tx.call {
            Call::SubmitProof { .. } | Call::ProveIdle { .. } | Call::SubmitSpaceProof { .. } => {
                self.fee_proof
            }
            Call::RegisterTagger { approvals, .. } => {
                self.fee_proof.saturating_mul(approvals.len() as u128)
            }
            _ => 0,
        };
        self.fee_base
            .saturating_add(self.fee_per_byte.saturating_mul(len_bytes as u128))
            .saturating_add(self.fee_per_entry.saturating_mul(entries))
            .saturating_add(proof)
    }

    /// The longest an audit stays open: from the round's block to its deadline.
    pub fn audit_window_blocks_max(&self) -> u64 {
        self.audit_deadline_base_blocks.saturating_add(
            u64::from(self.challenge.fragments_max)
                .div_ceil(self.audit_fragments_per_extra_block.max(1)),
        )
    }

    /// Refuses parameters the rules cannot run with.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.data_fragments == 0 || self.data_fragments > self.fragments_per_segment {
            return Err("data_fragments must be in 1..=fragments_per_segment");
        }
        if usize::from(self.fragments_per_segment) > crate::tx::FRAGMENTS_PER_SEGMENT_MAX {
            return Err("fragments_per_segment above 64");
        }
        if self.audit_period_blocks == 0
            || self.epoch_blocks == 0
            || self.era_blocks == 0
            || self.audit_fragments_per_extra_block == 0
        {
            return Err("periods must be at least one block");
        }
        if self.audit_miners_permille > 1000 {
            return Err("audit_miners_permille above 1000");
        }
        if self.validators_per_era == 0
            || self.validators_per_era as usize > crate::bft::VALIDATORS_MAX
        {
            return Err("validators_per_era outside 1..=256");
        }
        if self.fragment_bytes_max == 0 || self.fragment_bytes_max > cess_proofs::FRAGMENT_BYTES_MAX
        {
            return Err("fragment_bytes_max outside 1..=64 MiB");
        }
        if self.challenge.fragments_max == 0
            || self.challenge.fragments_max > cess_proofs::FRAGMENTS_PER_CHALLENGE_MAX
            || self.challenge.blocks_max < self.challenge.fragments_max
            || self.challenge.blocks_max > cess_proofs::BLOCKS_PER_CHALLENGE_MAX
        {
            return Err("challenge: fragments_max in 1..=1024, blocks_max in fragments_max..=8192");
        }
        // An audit must close before its miner can withdraw (else a proof arrives for a
        // removed miner, or an audit no one can answer).
        if self.audit_deadline_base_blocks == 0 {
            return Err("audit_deadline_base_blocks must be at least 1");
        }
        if self.miner_cooling_off_blocks <= self.audit_window_blocks_max() {
            return Err("miner_cooling_off_blocks must exceed the longest audit window");
        }
        if self.restoral_claim_blocks == 0 {
            return Err("restoral_claim_blocks must be at least 1");
        }
        if self.fee_base == 0 || self.fee_per_byte == 0 {
            return Err(
                "fee_base and fee_per_byte must be positive (free transactions halt the chain)",
            );
        }
        if self.tx_validity_blocks_max == 0 {
            return Err("tx_validity_blocks_max must be at least 1");
        }
        if self.order_validity_blocks == 0 {
            return Err("order_validity_blocks must be at least 1");
        }
        if self.audit_misses_max == 0 {
            return Err("audit_misses_max must be at least 1");
        }
        if self.restoral_claims_per_miner_max == 0 {
            return Err("restoral_claims_per_miner_max must be at least 1");
        }
        if self.restoral_expiries_max == 0 {
            return Err("restoral_expiries_max must be at least 1");
        }
        // The lost-file countdown is three claim periods; its end must be a height.
        if self
            .restoral_claim_blocks
            .checked_mul(LOST_COUNTDOWN_CLAIMS)
            .is_none()
        {
            return Err("restoral_claim_blocks is too large");
        }
        if self.lease_releases_per_block_max == 0 {
            return Err("lease_releases_per_block_max must be at least 1");
        }
        if self.pois.validate().is_err() {
            return Err("pois: parameters outside their bounds");
        }
        if self.pois.commit_proof_bytes_max() > crate::tx::IDLE_PROOF_BYTES_MAX
            || self.pois.space_proof_bytes_max() > crate::tx::IDLE_PROOF_BYTES_MAX
        {
            return Err("pois: its proofs would not fit a transaction");
        }
        // The challenge is fixed IDLE_CHALLENGE_BLOCKS after the commitment; then it is answered.
        if self.pois_commit_blocks < super::IDLE_CHALLENGE_BLOCKS + 2 {
            return Err("pois_commit_blocks must leave two blocks after the challenge is fixed");
        }
        // One space audit per miner at a time: a round that finds one still open (its time
        // held back, or blocks faster than the period's worth of time) skips the miner.
        if self.pois_space_deadline_ms == 0 || self.pois_space_deadline_blocks == 0 {
            return Err("pois_space_deadline_ms and pois_space_deadline_blocks must be at least 1");
        }
        Ok(())
    }
}

/// A validator present from the first block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisValidator {
    pub account: AccountId,
    pub key: [u8; VALIDATOR_KEY_BYTES],
    pub possession: [u8; VALIDATOR_SIGNATURE_BYTES],
    pub stake: u128,
}

/// A tagger trusted from the first block (a tagger's secret can forge proofs for what it
/// tagged, so it is admitted by genesis or by the validators, never by itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisTagger {
    pub owner: AccountId,
    /// The `cess-proofs` encoding of its public key.
    pub key: Vec<u8>,
}

/// Most taggers a genesis lists.
pub const GENESIS_TAGGERS_MAX: usize = 64;

/// The first state. Its hash is the chain id every transaction signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    pub chain_name: String,
    pub time_ms: u64,
    pub accounts: Vec<(AccountId, u128)>,
    pub reward_pool: u128,
    pub validators: Vec<GenesisValidator>,
    pub taggers: Vec<GenesisTagger>,
    pub params: LedgerParams,
}

/// Most accounts and validators a genesis lists (it is read whole before anything runs).
pub const GENESIS_ACCOUNTS_MAX: usize = 100_000;

impl LedgerParams {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<LedgerParams, DecodeError> {
        Ok(LedgerParams {
            data_fragments: r.u16("data fragments")?,
            fragments_per_segment: r.u16("fragments per segment")?,
            fragment_bytes_max: r.u64("fragment bytes max")?,
            miner_collateral_min: r.u128("collateral min")?,
            miner_cooling_off_blocks: r.u64("cooling off")?,
            audit_period_blocks: r.u64("audit period")?,
            audit_miners_permille: r.u32("audit share")?,
            audit_deadline_base_blocks: r.u64("audit deadline")?,
            audit_fragments_per_extra_block: r.u64("audit fragments per block")?,
            challenge: ChallengeParams {
                fragments_max: r.u32("challenge fragments")?,
                blocks_max: r.u32("challenge blocks")?,
            },
            rent_per_gib_block: r.u128("rent per GiB-block")?,
            lease_grace_blocks: r.u64("lease grace")?,
            lease_releases_per_block_max: r.u32("lease releases per block")?,
            penalty_missing: r.u128("penalty missing")?,
            penalty_invalid: r.u128("penalty invalid")?,
            restoral_claim_blocks: r.u64("restoral claim")?,
            epoch_blocks: r.u64("epoch")?,
            era_blocks: r.u64("era")?,
            validators_per_era: r.u32("validators per era")?,
            candidate_stake_min: r.u128("stake min")?,
            fee_base: r.u128("fee base")?,
            fee_per_byte: r.u128("fee per byte")?,
            fee_per_entry: r.u128("fee per entry")?,
            fee_proof: r.u128("fee proof")?,
            tx_validity_blocks_max: r.u64("tx validity")?,
            order_validity_blocks: r.u64("order validity")?,
            audit_misses_max: r.u32("audit misses")?,
            restoral_claims_per_miner_max: r.u32("claims per miner")?,
            restoral_expiries_max: r.u32("restoral expiries")?,
            restoral_bar_blocks: r.u64("restoral bar")?,
            penalty_lost: r.u128("penalty lost")?,
            pois: PoisParams {
                nodes_log2: r.u8("pois nodes")?,
                layers: r.u8("pois layers")?,
                degree: r.u8("pois degree")?,
                files_per_set: r.u16("pois files per set")?,
                commit_challenges_per_file: r.u16("pois commit challenges")?,
                space_labels_per_file: r.u16("pois space labels")?,
            },
            pois_commit_blocks: r.u64("pois commit blocks")?,
            pois_space_deadline_blocks: r.u64("pois space deadline")?,
            pois_space_deadline_ms: r.u64("pois space deadline ms")?,
            idle_reward_per_gib_block: r.u128("idle reward")?,
        })
    }
}

impl Genesis {
    pub fn chain_id(&self) -> Hash32 {
        hash(b"cess-ledger/1 chain id\0", &[&self.encode()])
    }

    /// The genesis file: the canonical encoding (the chain id is its hash).
    pub fn decode(bytes: &[u8]) -> Result<Genesis, DecodeError> {
        let mut r = Reader::new(bytes);
        let chain_name = r.string(crate::tx::NAME_BYTES_MAX, "chain name")?;
        let time_ms = r.u64("genesis time")?;
        let count = r.count(GENESIS_ACCOUNTS_MAX, 48, "accounts")?;
        let mut accounts = Vec::with_capacity(count);
        for _ in 0..count {
            accounts.push((AccountId(r.array("account")?), r.u128("balance")?));
        }
        let reward_pool = r.u128("reward pool")?;
        let count = r.count(GENESIS_ACCOUNTS_MAX, 32 + 48 + 96 + 16, "validators")?;
        let mut validators = Vec::with_capacity(count);
        for _ in 0..count {
            validators.push(GenesisValidator {
                account: AccountId(r.array("validator account")?),
                key: r.array("validator key")?,
                possession: r.array("possession")?,
                stake: r.u128("stake")?,
            });
        }
        let count = r.count(GENESIS_TAGGERS_MAX, 32 + 4, "taggers")?;
        let mut taggers = Vec::with_capacity(count);
        for _ in 0..count {
            taggers.push(GenesisTagger {
                owner: AccountId(r.array("tagger owner")?),
                key: r
                    .bytes(crate::tx::TAGGER_KEY_BYTES_MAX, "tagger key")?
                    .to_vec(),
            });
        }
        let params = LedgerParams::decode(&mut r)?;
        r.finish()?;
        Ok(Genesis {
            chain_name,
            time_ms,
            accounts,
            reward_pool,
            validators,
            taggers,
            params,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.str(&self.chain_name)
            .u64(self.time_ms)
            .count(self.accounts.len());
        for (account, balance) in &self.accounts {
            w.fixed(&account.0).u128(*balance);
        }
        w.u128(self.reward_pool).count(self.validators.len());
        for v in &self.validators {
            w.fixed(&v.account.0)
                .fixed(&v.key)
                .fixed(&v.possession)
                .u128(v.stake);
        }
        w.count(self.taggers.len());
        for t in &self.taggers {
            w.fixed(&t.owner.0).bytes(&t.key);
        }
        self.params.encode(&mut w);
        w.into_bytes()
    }
}
