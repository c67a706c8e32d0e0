// Long file: the ledger's entry points, errors and block application.
//! The ledger: a deterministic state machine. It does no I/O; time, randomness (the block's
//! VRF output) and the previous commit's signers come in with each block.
//!
//! Rules every transaction keeps: it is included only when its nonce is the signer's next,
//! its validity has not passed and the signer can pay its fee, at least
//! [`LedgerParams::min_fee`] (else it changes nothing). An included transaction pays its fee
//! into the reward pool and moves the nonce by one whatever its call does; the call is
//! checked completely before it changes anything, so a refused call (with its [`TxError`])
//! costs the fee and nothing else. Money is conserved: balances, the reward pool, collateral
//! and stake always add up to the genesis total ([`Ledger::total_money`]).

/// `assert!` for a checker that returns the broken invariant instead of panicking (a snapshot
/// from a peer is checked with the same rules the tests assert after every block).
macro_rules! check {
    ($cond:expr $(,)?) => {
        check!($cond, "{}", stringify!($cond))
    };
    ($cond:expr, $($what:tt)+) => {
        if !$cond {
            return Err(format!($($what)+));
        }
    };
}

/// `assert_eq!` for the same checkers.
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {
        check_eq!($left, $right, "{} == {}", stringify!($left), stringify!($right))
    };
    ($left:expr, $right:expr, $($what:tt)+) => {
        if $left != $right {
            return Err(format!($($what)+));
        }
    };
}

mod audit;
mod buckets;
mod delegates;
mod idle;
mod params;
mod snapshot;
mod space;
mod storage;
mod tracked;
mod validators;

pub use audit::Audit;
pub use buckets::{BUCKETS_PER_OWNER_MAX, Buckets, check_bucket_name};
pub use delegates::{DELEGATES_PER_OWNER_MAX, Delegates};
pub use idle::{
    IDLE_CHALLENGE_BLOCKS, IDLE_PENDING_SETS_MAX, IDLE_REPLACE_FILES_MAX, IdleSet, IdleSetState,
    IdleSpace, SpaceAudit, SpaceDraw,
};
pub use params::{
    GIB, Genesis, GenesisTagger, GenesisValidator, LOST_COUNTDOWN_CLAIMS, LedgerParams, TOKEN,
};
pub use snapshot::SnapshotError;
pub use space::Lease;
pub use storage::{
    FileInfo, FileState, FragmentInfo, Miner, MinerState, Owner, RestoralOrder, SegmentInfo,
    segment_at_risk,
};
pub use validators::{
    COMMIT_MISSES_FORGIVEN, Candidate, EQUIVOCATION_SLASH_PERMILLE, REPORTER_SHARE_PERMILLE,
    UNBONDING_ERAS, UNBONDING_PER_CANDIDATE_MAX, ValidatorEntry, credit,
};

use crate::codec::{Writer, hash};
use crate::keys::AccountId;
use crate::tx::{Call, FragmentId, Hash32, Transaction, TxTerms};
use cess_proofs::Backend;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use thiserror::Error;
use tracked::{Hashed, Tracked};

/// Why a transaction was refused. When [`TxError::charged`] is false it was not included and
/// changed nothing; otherwise its call was refused after inclusion and only its fee was paid
/// and its nonce moved.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TxError {
    #[error("bad signature")]
    BadSignature,
    #[error("nonce {got}, expected {expected}")]
    BadNonce { expected: u64, got: u64 },
    #[error("valid until height {valid_until}, now {height}")]
    Expired { valid_until: u64, height: u64 },
    #[error("fee {got} is below the minimum {min} for this transaction")]
    FeeTooLow { min: u128, got: u128 },
    #[error("balance {available} cannot pay the fee {fee}")]
    CannotPayFee { fee: u128, available: u128 },
    #[error("validity ends at height {valid_until}, more than {max_blocks} blocks ahead")]
    ValidityTooLong { valid_until: u64, max_blocks: u64 },
    #[error("a pending transaction has this nonce; a replacement must pay at least {min_fee}")]
    ReplacementUnderpriced { min_fee: u128 },
    #[error("mempool full: {reason}")]
    MempoolFull { reason: &'static str },
    #[error("balance {available} is less than {needed}")]
    InsufficientBalance { needed: u128, available: u128 },
    #[error("amount must be positive")]
    ZeroAmount,
    #[error("arithmetic overflow")]
    Overflow,
    #[error("not a registered miner")]
    NotMiner,
    #[error("already registered")]
    AlreadyRegistered,
    #[error("miner is exiting")]
    MinerExiting,
    #[error("miner must exit first")]
    MinerNotExiting,
    #[error("cooling-off ends at height {until}")]
    CoolingOff { until: u64 },
    #[error("collateral {got} is below the minimum {min}")]
    CollateralTooLow { min: u128, got: u128 },
    #[error("declared space {declared} is below the {used} bytes in use")]
    DeclaredBelowUsed { declared: u64, used: u64 },
    #[error("miner {miner:?} lacks {needed} free bytes ({free} free)")]
    NoSpace {
        miner: AccountId,
        needed: u64,
        free: u64,
    },
    #[error("only {able} miners can take the order's columns; it needs {needed} distinct ones")]
    NotEnoughMiners { needed: usize, able: usize },
    #[error("the signer has no lease: rent space first")]
    NoLease,
    #[error("the signer's lease ended at height {until}: extend it first")]
    LeaseEnded { until: u64 },
    #[error("the order needs {needed} bytes of space; the lease has {free} free")]
    SpaceExceeded { needed: u64, free: u64 },
    #[error("lease: {0}")]
    BadLease(&'static str),
    #[error("peer id is not the signer's key")]
    PeerIdMismatch,
    #[error("endpoint is not a multiaddr")]
    BadEndpoint,
    #[error("peer id already registered to another miner")]
    PeerIdTaken,
    #[error("tagger key does not decode: {0}")]
    BadTaggerKey(String),
    #[error("unknown tagger")]
    UnknownTagger,
    #[error("tagger not approved: {0}")]
    TaggerNotApproved(&'static str),
    #[error("storage order is malformed: {0}")]
    BadOrder(&'static str),
    #[error("fragment already placed on the ledger")]
    FragmentTaken,
    #[error("unknown file")]
    UnknownFile,
    #[error("not an owner of this file")]
    NotOwner,
    #[error("already an owner of this file")]
    AlreadyOwner,
    #[error("nothing to report in this column for the signer")]
    NothingToReport,
    #[error("no open audit for this round, miner and tagger")]
    NoAudit,
    #[error("proof does not decode: {0}")]
    BadProof(String),
    #[error("unknown fragment")]
    UnknownFragment,
    #[error("the signer does not hold this fragment")]
    NotHolder,
    #[error("no restoral order for this fragment")]
    NoRestoral,
    #[error("restoral order already claimed until height {until}")]
    AlreadyClaimed { until: u64 },
    #[error("the signer already holds or rebuilds a fragment of this segment")]
    HoldsSegment,
    #[error("restoral not claimed by the signer")]
    NotClaimer,
    #[error("the signer already holds {max} restoral claims")]
    TooManyClaims { max: u32 },
    #[error("validator key: {0}")]
    BadValidatorKey(&'static str),
    #[error("stake {got} is below the minimum {min}")]
    StakeTooLow { min: u128, got: u128 },
    #[error("not a validator candidate")]
    NotCandidate,
    #[error("an elected validator cannot unbond below the minimum until its era ends")]
    ValidatorBonded,
    #[error("a miner cannot claim the restoral of a fragment it reported lost")]
    ClaimsOwnLoss,
    #[error("the signer let too many restoral claims expire: it may claim again at height {until}")]
    ClaimsBarred { until: u64 },
    #[error("the file is lost: its owners delete it before it can be stored again")]
    FileLost,

    #[error("delegate: {0}")]
    BadDelegate(&'static str),
    #[error("the signer is not a delegate of the owner it acts for")]
    NotDelegate,
    #[error("bucket name: {0}")]
    BadBucketName(&'static str),
    #[error("the owner already has this bucket")]
    BucketExists,
    #[error("the owner has no such bucket")]
    NoSuchBucket,
    #[error("the bucket still lists {files} files")]
    BucketNotEmpty { files: u64 },
    #[error("the owner already has {max} buckets")]
    TooManyBuckets { max: usize },
    #[error("the signer already has {max} delegates")]
    TooManyDelegates { max: usize },
    #[error("equivocation evidence: {0}")]
    BadEvidence(&'static str),
    #[error("the validator was already slashed for equivocation")]
    AlreadySlashed,
    #[error("the candidate has too many unbondings waiting to be paid out")]
    TooManyUnbondings,
    #[error("the miner is exiting")]
    MinerNotActive,
    #[error("idle set: {0}")]
    BadIdleSet(&'static str),
    #[error("{needed} bytes of idle, active and locked space would pass the {declared} declared")]
    NoIdleRoom { needed: u64, declared: u64 },
    #[error("no such idle set awaiting its proof")]
    NoSuchIdleSet,
    #[error("the commit challenge is not fixed yet (by the randomness of a later block)")]
    IdleChallengeNotYet,
    #[error("the set's proving window has passed")]
    IdleCommitExpired,
}

impl TxError {
    /// Whether the transaction was included (its fee paid, its nonce moved) although its
    /// call was refused. The others were refused before inclusion and changed nothing.
    pub fn charged(&self) -> bool {
        !matches!(
            self,
            TxError::BadSignature
                | TxError::BadNonce { .. }
                | TxError::Expired { .. }
                | TxError::FeeTooLow { .. }
                | TxError::CannotPayFee { .. }
                | TxError::ValidityTooLong { .. }
                | TxError::ReplacementUnderpriced { .. }
                | TxError::MempoolFull { .. }
        )
    }
}

/// An account's money and transaction counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: u128,
    pub nonce: u64,
}

/// What the block's consensus layer tells the ledger about the block being applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    pub height: u64,
    pub time_ms: u64,
    /// The proposer's VRF output for this slot (checked by the consensus layer).
    pub vrf_output: Hash32,
    /// Validators whose precommits are in the commit certificate of the previous height.
    pub last_commit: Vec<AccountId>,
}

/// Something that happened while applying a block, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    FileActive {
        file_id: Hash32,
    },
    FileDeleted {
        file_id: Hash32,
    },
    AuditOpened {
        round: u64,
        miner: AccountId,
        tagger: Hash32,
        deadline: u64,
    },
    ProofValid {
        round: u64,
        miner: AccountId,
        reward: u128,
    },
    ProofInvalid {
        round: u64,
        miner: AccountId,
        penalty: u128,
        reason: String,
    },
    ProofMissing {
        round: u64,
        miner: AccountId,
        penalty: u128,
    },
    /// A set of idle files was committed; its challenge is fixed by the next block.
    IdleCommitted {
        miner: AccountId,
        first_file: u64,
    },
    /// Its commit proof verified: the set's space is verified.
    IdleCertified {
        miner: AccountId,
        first_file: u64,
        files: u64,
    },
    /// Its commit proof did not verify: the set is dropped.
    IdleRefused {
        miner: AccountId,
        first_file: u64,
        reason: String,
    },
    /// Idle files deleted to make room for user data.
    IdleReplaced {
        miner: AccountId,
        files: u64,
    },
    /// A set no longer verified after a failed or missed space audit.
    IdleDecertified {
        miner: AccountId,
        first_file: u64,
        files: u64,
    },
    SpaceAuditOpened {
        round: u64,
        miner: AccountId,
        first_file: u64,
        deadline: u64,
        deadline_ms: u64,
    },
    SpaceProofValid {
        round: u64,
        miner: AccountId,
        reward: u128,
    },
    SpaceProofInvalid {
        round: u64,
        miner: AccountId,
        penalty: u128,
        reason: String,
    },
    SpaceProofMissing {
        round: u64,
        miner: AccountId,
        penalty: u128,
    },
    RestoralOpened {
        fragment_id: FragmentId,
    },
    /// More than a third of a segment's fragments are under restoral: the file is lost at
    /// `lost_at` unless they are rebuilt first.
    FileAtRisk {
        file_id: Hash32,
        lost_at: u64,
    },
    /// Its countdown ended with a segment still beyond repair by the rule: its fragments
    /// left their miners and its orders closed; its owners see it `Lost` until they delete it.
    FileLost {
        file_id: Hash32,
    },
    /// Every fragment under restoral was rebuilt: the file is `Active` again.
    FileRecovered {
        file_id: Hash32,
    },
    /// A pending storage order was not completed in time: released, its space returned.
    OrderExpired {
        file_id: Hash32,
    },
    /// A miner failed `audit_misses_max` audits in a row: its fragments went to restoral.
    /// Evidence of equivocation was put on the chain: the validator lost `slashed` of its stake
    /// (`reporter` got its share) and is left out of every later election.
    ValidatorSlashed {
        validator: AccountId,
        reporter: AccountId,
        slashed: u128,
    },
    /// Unbonded stake paid out to its candidate's balance, its evidence window over.
    StakeReleased {
        candidate: AccountId,
        amount: u128,
    },
    MinerDataReleased {
        miner: AccountId,
        fragments: usize,
    },
    RestoralClaimExpired {
        fragment_id: FragmentId,
        claimer: AccountId,
    },
    /// A claimant gave its claim back (`Call::ReleaseClaim`): the order is open again.
    RestoralClaimReleased {
        fragment_id: FragmentId,
        claimer: AccountId,
    },
    RestoralDone {
        fragment_id: FragmentId,
        miner: AccountId,
    },
    ValidatorsElected {
        era: u64,
        validators: Vec<AccountId>,
    },
    /// A lease past its grace blocks: its owner no longer owns the file.
    LeaseReleasedFile {
        owner: AccountId,
        file_id: Hash32,
    },
    /// A lease with nothing left was removed.
    LeaseEnded {
        owner: AccountId,
    },
}

/// The outcome of one block.
#[derive(Debug, Clone)]
pub struct BlockOutcome {
    /// One per transaction, in order.
    pub receipts: Vec<Result<(), TxError>>,
    pub events: Vec<Event>,
    /// The state root after the block.
    pub root: Hash32,
    /// Storage proofs the block verified (at most one per open audit).
    pub proofs_verified: usize,
}

/// The ledger's state.
#[derive(Clone)]
pub struct Ledger {
    chain_id: Hash32,
    params: LedgerParams,
    height: u64,
    time_ms: u64,
    accounts: Tracked<AccountId, Account>,
    reward_pool: u128,
    total_money: u128,
    taggers: Tracked<Hash32, storage::TaggerRecord>,
    miners: Tracked<AccountId, Miner>,
    peer_ids: BTreeMap<Vec<u8>, AccountId>,
    files: Tracked<Hash32, FileInfo>,
    fragments: BTreeMap<FragmentId, storage::FragmentPlace>,
    indexes: storage::Indexes,
    restorals: Tracked<FragmentId, RestoralOrder>,
    audits: Tracked<(u64, AccountId, Hash32), Audit>,
    candidates: Tracked<AccountId, Candidate>,
    leases: Tracked<AccountId, Lease>,
    delegates: Tracked<AccountId, Delegates>,
    buckets: Tracked<AccountId, Buckets>,
    /// Idle sets by (miner, first file), and each miner's idle space (`idle.rs`).
    idle_sets: Tracked<(AccountId, u64), IdleSet>,
    idle: Tracked<AccountId, IdleSpace>,
    /// Sets committed in the last block, whose challenge the next block's randomness fixes
    /// (derived: the sets without randomness).
    idle_awaiting: Vec<(AccountId, u64)>,
    /// Delegate → the owners that authorized it (derived from `delegates`).
    delegated: BTreeMap<AccountId, BTreeSet<AccountId>>,
    validator_keys: BTreeSet<[u8; 48]>,
    /// (height it is paid out, candidate) for every unbonding waiting (derived from the
    /// candidates' `unbonding`).
    unbonding_due: BTreeSet<(u64, AccountId)>,
    validators: Vec<ValidatorEntry>,
    previous_validators: Vec<ValidatorEntry>,
    elected_at: u64,
    era: u64,
    /// Hash chain of every block's VRF output.
    randomness: Hash32,
    /// The chain's randomness at the end of each of the last epochs (epoch, value).
    epoch_seeds: Vec<(u64, Hash32)>,
    events: Vec<Event>,
    /// The state root after the last block (or genesis).
    root: Hash32,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("height", &self.height)
            .field("accounts", &self.accounts.len())
            .field("miners", &self.miners.len())
            .field("files", &self.files.len())
            .field("validators", &self.validators.len())
            .finish()
    }
}

/// Why a genesis was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GenesisError {
    #[error("parameters: {0}")]
    Params(&'static str),
    #[error("an account is listed twice")]
    DuplicateAccount,
    #[error("validator {index}: {reason}")]
    Validator { index: usize, reason: String },
    #[error("no validators")]
    NoValidators,
    #[error("tagger {index}: {reason}")]
    Tagger { index: usize, reason: String },
    #[error("total money overflows")]
    Overflow,
}

impl Ledger {
    pub fn genesis(genesis: &Genesis) -> Result<Ledger, GenesisError> {
        genesis.params.check().map_err(GenesisError::Params)?;
        let mut ledger = Ledger {
            chain_id: genesis.chain_id(),
            params: genesis.params.clone(),
            height: 0,
            time_ms: genesis.time_ms,
            accounts: Tracked::new(b"accounts"),
            reward_pool: genesis.reward_pool,
            total_money: 0,
            taggers: Tracked::new(b"taggers"),
            miners: Tracked::new(b"miners"),
            peer_ids: BTreeMap::new(),
            files: Tracked::new(b"files"),
            fragments: BTreeMap::new(),
            indexes: storage::Indexes::default(),
            restorals: Tracked::new(b"restorals"),
            audits: Tracked::new(b"audits"),
            candidates: Tracked::new(b"candidates"),
            leases: Tracked::new(b"leases"),
            delegates: Tracked::new(b"delegates"),
            buckets: Tracked::new(b"buckets"),
            idle_sets: Tracked::new(b"idle sets"),
            idle: Tracked::new(b"idle"),
            idle_awaiting: Vec::new(),
            delegated: BTreeMap::new(),
            validator_keys: BTreeSet::new(),
            unbonding_due: BTreeSet::new(),
            validators: Vec::new(),
            previous_validators: Vec::new(),
            elected_at: 0,
            era: 0,
            randomness: hash(
                b"cess-ledger/1 genesis randomness\0",
                &[&genesis.chain_id()],
            ),
            epoch_seeds: Vec::new(),
            events: Vec::new(),
            root: [0; 32],
        };
        let mut total = genesis.reward_pool;
        for (account, balance) in &genesis.accounts {
            if ledger.accounts.contains_key(account) {
                return Err(GenesisError::DuplicateAccount);
            }
            ledger.accounts.insert(
                *account,
                Account {
                    balance: *balance,
                    nonce: 0,
                },
            );
            total = total.checked_add(*balance).ok_or(GenesisError::Overflow)?;
        }
        if genesis.validators.is_empty() {
            return Err(GenesisError::NoValidators);
        }
        for (index, v) in genesis.validators.iter().enumerate() {
            let key = validators::check_candidate_key(&v.key, &v.possession).map_err(|e| {
                GenesisError::Validator {
                    index,
                    reason: e.to_string(),
                }
            })?;
            if ledger.candidates.contains_key(&v.account) || !ledger.validator_keys.insert(v.key) {
                return Err(GenesisError::Validator {
                    index,
                    reason: "listed twice".into(),
                });
            }
            ledger.candidates.insert(
                v.account,
                Candidate {
                    key,
                    stake: v.stake,
                    reputation: validators::REPUTATION_START,
                    commits_missed_in_a_row: 0,
                    slashed: false,
                    endpoint: String::new(),
                    unbonding: Vec::new(),
                },
            );
            total = total.checked_add(v.stake).ok_or(GenesisError::Overflow)?;
        }
        for (index, tagger) in genesis.taggers.iter().enumerate() {
            ledger
                .insert_tagger(tagger.owner, &tagger.key)
                .map_err(|e| GenesisError::Tagger {
                    index,
                    reason: e.to_string(),
                })?;
        }
        ledger.total_money = total;
        ledger.validators = ledger.elect(&ledger.randomness.clone(), true);
        ledger.epoch_seeds = vec![(0, ledger.randomness), (1, ledger.randomness)];
        ledger.root = ledger.compute_root();
        Ok(ledger)
    }

    pub fn chain_id(&self) -> Hash32 {
        self.chain_id
    }

    pub fn params(&self) -> &LedgerParams {
        &self.params
    }

    /// Height of the last applied block (0: genesis).
    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    pub fn account(&self, id: &AccountId) -> Account {
        self.accounts.get(id).cloned().unwrap_or_default()
    }

    pub fn reward_pool(&self) -> u128 {
        self.reward_pool
    }

    /// The genesis total, which every block conserves.
    pub fn total_money(&self) -> u128 {
        self.total_money
    }

    /// Recounts every unit of money on the ledger (tests and audits of the ledger itself).
    pub fn count_money(&self) -> u128 {
        let balances: u128 = self.accounts.values().map(|a| a.balance).sum();
        let collateral: u128 = self.miners.values().map(|m| m.collateral).sum();
        let stake: u128 = self.candidates.values().map(|c| c.slashable()).sum();
        balances + collateral + stake + self.reward_pool
    }

    /// Whether a transaction can be included at the next height: the checks that need no
    /// state change and no signature verification (nonce, validity, fee), cheapest first.
    /// A transaction that fails one is not included: it pays nothing and changes nothing.
    /// Mempools call this (with the signature check) before admitting a transaction.
    pub fn check_inclusion(&self, tx: &Transaction) -> Result<(), TxError> {
        self.check_inclusion_at(tx, self.height + 1)
    }

    /// The checks of a transaction's own terms, whatever the state: its validity has not
    /// passed at `height` and its fee is at least the least for its `len_bytes` encoded
    /// bytes. Shared by inclusion and by mempool admission.
    pub fn check_terms(
        &self,
        tx: &Transaction,
        height: u64,
        len_bytes: usize,
    ) -> Result<(), TxError> {
        if tx.valid_until < height {
            return Err(TxError::Expired {
                valid_until: tx.valid_until,
                height,
            });
        }
        let min = self.params.min_fee_for_len(tx, len_bytes);
        if tx.fee < min {
            return Err(TxError::FeeTooLow { min, got: tx.fee });
        }
        Ok(())
    }

    /// [`Ledger::check_inclusion`] in the block at `height`.
    fn check_inclusion_at(&self, tx: &Transaction, height: u64) -> Result<(), TxError> {
        self.check_terms(tx, height, tx.encoded_len())?;
        let account = self.account(&tx.signer);
        if tx.nonce != account.nonce {
            return Err(TxError::BadNonce {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        if account.balance < tx.fee {
            return Err(TxError::CannotPayFee {
                fee: tx.fee,
                available: account.balance,
            });
        }
        Ok(())
    }

    /// Signs `call` for `key` with its next nonce, the least fee the call needs and the
    /// longest validity a mempool admits: what a client with a replica of the ledger sends.
    pub fn transaction(&self, key: &crate::AccountKey, call: Call) -> Transaction {
        let nonce = self.account(&key.id()).nonce;
        self.transaction_with_nonce(key, nonce, call)
    }

    /// [`Ledger::transaction`] with a nonce chosen by the caller (several in flight).
    pub fn transaction_with_nonce(
        &self,
        key: &crate::AccountKey,
        nonce: u64,
        call: Call,
    ) -> Transaction {
        let valid_until = self.height + self.params.tx_validity_blocks_max;
        // The fee and the signature are of fixed width, so the length (and the least fee)
        // does not depend on their values: an unsigned probe prices the transaction.
        let probe = Transaction {
            signer: key.id(),
            nonce,
            fee: 0,
            valid_until,
            call,
            signature: [0; crate::keys::ACCOUNT_SIGNATURE_BYTES],
        };
        let fee = self.params.min_fee(&probe);
        Transaction::sign(
            key,
            &self.chain_id,
            TxTerms {
                nonce,
                fee,
                valid_until,
            },
            probe.call,
        )
    }

    /// Apply the next block. Proofs in the block are verified together first (one batch),
    /// then the transactions are applied in order, then the end-of-block rules run (missed
    /// deadlines, expired claims, epoch and era changes).
    pub fn apply_block(
        &mut self,
        info: &BlockInfo,
        txs: &[Transaction],
        verifier: &dyn Backend,
    ) -> BlockOutcome {
        self.apply_block_checked(info, txs, &[], verifier)
    }

    /// [`Ledger::apply_block`] where `signatures_checked[i]` says the caller already verified
    /// transaction `i`'s signature for this chain (a validator did, when it admitted the
    /// transaction to its mempool), so it is not verified twice. Missing entries are false.
    /// The outcome is the same either way: signature validity is a function of the bytes.
    pub fn apply_block_checked(
        &mut self,
        info: &BlockInfo,
        txs: &[Transaction],
        signatures_checked: &[bool],
        verifier: &dyn Backend,
    ) -> BlockOutcome {
        assert_eq!(
            info.height,
            self.height + 1,
            "blocks are applied in height order"
        );
        // Decided by the state before the block, as its header says.
        let elected = self.elected_by_next_block();
        self.height = info.height;
        let parent_time_ms = self.time_ms;
        self.time_ms = self.time_ms.max(info.time_ms);
        self.randomness = hash(
            b"cess-ledger/1 randomness\0",
            &[&self.randomness, &info.vrf_output],
        );
        self.fix_idle_challenges();
        self.close_late_space_audits(parent_time_ms);
        self.draw_space_audits();
        self.credit_commit_signers(&info.last_commit);
        self.open_audit_round();

        let checked = |index: usize| signatures_checked.get(index).copied().unwrap_or(false);
        let verdicts = self.verify_block_proofs(txs, &checked, verifier);
        let mut receipts = Vec::with_capacity(txs.len());
        for (index, tx) in txs.iter().enumerate() {
            let result = self.apply_tx(tx, checked(index), verdicts.get(&index).copied());
            receipts.push(result);
        }

        self.close_missed_audits();
        self.close_missed_space_audits();
        self.expire_restoral_claims();
        self.expire_lost_countdowns();
        self.expire_pending_orders();
        self.end_leases();
        self.release_unbonded();
        self.end_epoch_and_era(elected);
        BlockOutcome {
            receipts,
            events: std::mem::take(&mut self.events),
            root: {
                self.root = self.compute_root();
                self.root
            },
            proofs_verified: verdicts.len(),
        }
    }

    /// Apply one transaction (checked in full first; on error nothing changed). `verdict`
    /// is the block pre-pass's verdict for a `SubmitProof` (none: its proof failed to decode).
    fn apply_tx(
        &mut self,
        tx: &Transaction,
        signature_checked: bool,
        verdict: Option<cess_proofs::Verdict>,
    ) -> Result<(), TxError> {
        // `self.height` is already this block's.
        self.check_inclusion_at(tx, self.height)?;
        if !signature_checked && !tx.signature_is_valid(&self.chain_id) {
            return Err(TxError::BadSignature);
        }
        // Included: the fee is paid and the nonce moves whatever the call does, so a refused
        // call costs its signer and never blocks the signer's next transaction.
        let signer = tx.signer;
        self.debit(signer, tx.fee);
        self.reward_pool += tx.fee;
        self.accounts.or_default(signer).nonce += 1;
        let result = self.apply_call(tx, verdict);
        debug_assert_eq!(self.count_money(), self.total_money);
        result
    }

    /// The call of an included transaction (checked in full first; on error nothing changed
    /// beyond the fee and the nonce).
    fn apply_call(
        &mut self,
        tx: &Transaction,
        verdict: Option<cess_proofs::Verdict>,
    ) -> Result<(), TxError> {
        let signer = tx.signer;
        self.apply_call_as(signer, tx, &tx.call, verdict)
    }

    /// `call` (the transaction's own, or the one inside its `ForOwner`) made by `signer`.
    fn apply_call_as(
        &mut self,
        signer: AccountId,
        tx: &Transaction,
        call: &Call,
        verdict: Option<cess_proofs::Verdict>,
    ) -> Result<(), TxError> {
        match call {
            Call::Transfer { to, amount } => self.transfer(signer, *to, *amount)?,
            Call::RegisterMiner {
                peer_id,
                endpoint,
                declared_bytes,
                collateral,
            } => self.register_miner(signer, peer_id, endpoint, *declared_bytes, *collateral)?,
            Call::UpdateMiner {
                endpoint,
                declared_bytes,
            } => self.update_miner(signer, endpoint, *declared_bytes)?,
            Call::ExitMiner => self.exit_miner(signer)?,
            Call::WithdrawMiner => self.withdraw_miner(signer)?,
            Call::RegisterTagger { key, approvals } => {
                self.register_tagger(signer, key, approvals)?
            }
            Call::DeclareFile { .. } => self.declare_file(signer, call)?,
            Call::ReportStored { file_id, column } => {
                self.report_stored(signer, file_id, *column)?
            }
            Call::DeleteFile { file_id } => self.delete_file(signer, file_id)?,
            Call::SubmitProof {
                round,
                tagger,
                proof,
            } => {
                // A valid proof gets its least fee back (`submit_proof`): proving costs an
                // honest miner nothing, and earns nothing but rent.
                let refund = self.params.min_fee(tx).min(tx.fee);
                self.submit_proof(signer, *round, tagger, proof, verdict, refund)?
            }
            Call::ReportLost { fragment_id } => self.report_lost(signer, fragment_id)?,
            Call::ClaimRestoral { fragment_id } => self.claim_restoral(signer, fragment_id)?,
            Call::ReleaseClaim { fragment_id } => self.give_back_claim(signer, fragment_id)?,
            Call::CompleteRestoral { fragment_id } => {
                self.complete_restoral(signer, fragment_id)?
            }
            Call::RegisterCandidate {
                key,
                possession,
                stake,
            } => self.register_candidate(signer, key, possession, *stake)?,
            Call::AddCollateral { amount } => self.add_collateral(signer, *amount)?,
            Call::Bond { amount } => self.bond(signer, *amount)?,
            Call::Unbond { amount } => self.unbond(signer, *amount)?,
            Call::RentSpace {
                add_gib,
                add_blocks,
            } => self.rent_space(signer, *add_gib, *add_blocks)?,
            Call::Authorize { delegate } => self.authorize(signer, *delegate)?,
            Call::Deauthorize { delegate } => self.deauthorize(signer, *delegate)?,
            Call::ReportEquivocation { evidence } => self.report_equivocation(signer, evidence)?,
            Call::SetValidatorEndpoint { endpoint } => {
                self.set_validator_endpoint(signer, endpoint)?
            }
            Call::CommitIdle {
                first_file,
                commitments,
            } => self.commit_idle(signer, *first_file, commitments)?,
            Call::ProveIdle { first_file, proof } => self.prove_idle(signer, *first_file, proof)?,
            Call::ReplaceIdle { files } => self.replace_idle(signer, files)?,
            Call::SubmitSpaceProof { round, proof } => {
                let refund = self.params.min_fee(tx).min(tx.fee);
                self.submit_space_proof(signer, *round, proof, refund)?
            }
            Call::CreateBucket { name } => self.create_bucket(signer, name)?,
            Call::DeleteBucket { name } => self.delete_bucket(signer, name)?,
            Call::ForOwner { owner, call } => {
                // Decoding admits only the allowed calls; a call built in memory is held to
                // the same rule.
                if !call.allowed_for_owner() {
                    return Err(TxError::NotDelegate);
                }
                if !self.is_delegate(owner, &signer) {
                    return Err(TxError::NotDelegate);
                }
                self.apply_call_as(*owner, tx, call, verdict)?
            }
        }
        Ok(())
    }

    fn transfer(&mut self, from: AccountId, to: AccountId, amount: u128) -> Result<(), TxError> {
        if amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        self.can_pay(&from, amount)?;
        if from != to {
            self.account(&to)
                .balance
                .checked_add(amount)
                .ok_or(TxError::Overflow)?;
        }
        self.debit(from, amount);
        self.credit(to, amount);
        Ok(())
    }

    /// Checks that `account` can pay `amount`.
    fn can_pay(&self, account: &AccountId, amount: u128) -> Result<(), TxError> {
        let available = self.account(account).balance;
        if available < amount {
            return Err(TxError::InsufficientBalance {
                needed: amount,
                available,
            });
        }
        Ok(())
    }

    fn debit(&mut self, account: AccountId, amount: u128) {
        let entry = self.accounts.or_default(account);
        entry.balance = entry
            .balance
            .checked_sub(amount)
            .expect("debits are checked before they are made");
    }

    fn credit(&mut self, account: AccountId, amount: u128) {
        let entry = self.accounts.or_default(account);
        entry.balance = entry
            .balance
            .checked_add(amount)
            .expect("money is conserved, so no balance can exceed the total");
    }

    /// The state root after the last applied block: SHA-256 over the header fields, the
    /// validator set and epoch seeds (bounded), and each table's lattice hash (`tracked.rs`),
    /// which the ledger keeps up to date at the cost of the entries a block touches, so a
    /// block's cost does not grow with the state. Validators compare it after every block.
    pub fn root(&self) -> Hash32 {
        self.root
    }

    /// The root of the current state with every table's hash kept up to date.
    fn compute_root(&mut self) -> Hash32 {
        let tables = [
            self.accounts.digest().checksum(),
            self.taggers.digest().checksum(),
            self.miners.digest().checksum(),
            self.files.digest().checksum(),
            self.restorals.digest().checksum(),
            self.audits.digest().checksum(),
            self.candidates.digest().checksum(),
            self.leases.digest().checksum(),
            self.delegates.digest().checksum(),
            self.buckets.digest().checksum(),
            self.idle_sets.digest().checksum(),
            self.idle.digest().checksum(),
        ];
        self.root_over(&tables)
    }

    /// The same root with every table hashed from scratch: the reference the tests compare
    /// [`Ledger::root`] with after every block.
    pub fn root_from_scratch(&self) -> Hash32 {
        let tables = [
            self.accounts.digest_from_scratch().checksum(),
            self.taggers.digest_from_scratch().checksum(),
            self.miners.digest_from_scratch().checksum(),
            self.files.digest_from_scratch().checksum(),
            self.restorals.digest_from_scratch().checksum(),
            self.audits.digest_from_scratch().checksum(),
            self.candidates.digest_from_scratch().checksum(),
            self.leases.digest_from_scratch().checksum(),
            self.delegates.digest_from_scratch().checksum(),
            self.buckets.digest_from_scratch().checksum(),
            self.idle_sets.digest_from_scratch().checksum(),
            self.idle.digest_from_scratch().checksum(),
        ];
        self.root_over(&tables)
    }

    fn root_over(&self, tables: &[[u8; 32]; 12]) -> Hash32 {
        let mut w = Writer::new();
        w.fixed(&self.chain_id)
            .u64(self.height)
            .u64(self.time_ms)
            .u128(self.reward_pool)
            .fixed(&self.randomness)
            .u64(self.era);
        for table in tables {
            w.fixed(table);
        }
        w.count(self.validators.len());
        for v in &self.validators {
            w.fixed(&v.account.0);
        }
        w.count(self.epoch_seeds.len());
        for (epoch, seed) in &self.epoch_seeds {
            w.u64(*epoch).fixed(seed);
        }
        hash(b"cess-ledger/2 state root\0", &[w.as_bytes()])
    }
}

impl Hashed for AccountId {
    fn encode_hashed(&self, w: &mut Writer) {
        w.fixed(&self.0);
    }
}

impl Hashed for Hash32 {
    fn encode_hashed(&self, w: &mut Writer) {
        w.fixed(self);
    }
}

/// Encoded as its bytes, as a `Hash32` is: the state root does not depend on the type.
impl Hashed for FragmentId {
    fn encode_hashed(&self, w: &mut Writer) {
        w.fixed(&self.0);
    }
}

impl Hashed for (u64, AccountId, Hash32) {
    fn encode_hashed(&self, w: &mut Writer) {
        w.u64(self.0).fixed(&self.1.0).fixed(&self.2);
    }
}

impl Hashed for Account {
    fn encode_hashed(&self, w: &mut Writer) {
        w.u128(self.balance).u64(self.nonce);
    }
}

impl Hashed for Candidate {
    fn encode_hashed(&self, w: &mut Writer) {
        w.fixed(&self.key.to_bytes())
            .u128(self.stake)
            .u32(self.reputation)
            .u32(self.commits_missed_in_a_row)
            .bool(self.slashed)
            .str(&self.endpoint)
            .count(self.unbonding.len());
        for (amount, release_at) in &self.unbonding {
            w.u128(*amount).u64(*release_at);
        }
    }
}

impl Hashed for Audit {
    fn encode_hashed(&self, w: &mut Writer) {
        self.encode(w);
    }
}

/// Shared handle to a tagger's key (the key of s = 1024 is 49 KiB; audits refer to it).
pub(crate) type TaggerKey = Arc<cess_proofs::PublicKey>;
