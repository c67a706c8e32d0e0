// Long file: the whole BFT state machine, its decisions read top to bottom in one place.
//! The validator's consensus core: Malachite's Tendermint state machine, the ledger, the
//! mempool and block sync, as one sans-IO state machine. Messages, timeouts and the clock come
//! in through [`Core::on_message`], [`Core::on_timeout`] and [`Core::submit`]; everything it
//! wants done comes out as [`Output`]s (send, broadcast, schedule a timeout, a block
//! committed). The simulator and the QUIC driver are thin loops around it.

use super::Timeout;
use super::mempool::{Mempool, MempoolLimits};
use super::types::{
    Block, BlockHash, BlockValue, Cess, CommitRecord, Height, Validator, ValidatorSet, precommit,
    verify_votes,
};
use super::wire::NetMsg;
use crate::keys::{AccountId, ValidatorKey};
use crate::ledger::{BlockInfo, BlockOutcome, Ledger};
use crate::tx::{Hash32, Transaction, VerifiedTx};
use crate::vrf;
use crate::wal::WalEntry;
use arc_malachitebft_core_consensus::{
    Effect, Input, LivenessMsg, LocallyProposedValue, Params, ProposedValue, Resumable,
    SignedConsensusMsg, State, ThresholdParams, ValuePayload,
};
use arc_malachitebft_core_types::{
    CertificateError, CommitCertificate, NilOrVal, Round, SignedMessage, SignedProposal,
    SignedVote, Validity, ValueOrigin, VoteExtensionPolicy, VoteType,
};
use cess_proofs::CpuBackend;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// How a validator core runs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub timeouts: super::types::StepTimeouts,
    /// Most transactions a proposed block carries.
    pub block_txs_max: usize,
    /// Most encoded transaction bytes a proposed block carries: at most
    /// [`BLOCK_TX_BYTES_MAX`], so every block fits what peers accept.
    pub block_tx_bytes_max: usize,
    /// How much the mempool holds, in transactions and bytes.
    pub mempool: MempoolLimits,
    /// Decided blocks kept to answer sync requests.
    pub history_max: usize,
    /// A proposer with no transaction to carry waits this long after the previous decision
    /// before it proposes (an empty block), so an idle chain grows by a block per interval
    /// instead of as fast as the validators can agree, which burns their CPU and makes every
    /// follower's sync longer. A transaction that arrives while it waits is proposed at once.
    /// At most half the propose timeout, so the others never time the proposer out. 0: no
    /// wait.
    pub empty_block_interval_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> CoreConfig {
        CoreConfig {
            timeouts: super::types::StepTimeouts::default(),
            block_txs_max: 5000,
            block_tx_bytes_max: 4 << 20,
            mempool: MempoolLimits::default(),
            history_max: 10_000,
            empty_block_interval_ms: 0,
        }
    }
}

/// A block the core committed (applied to its ledger).
#[derive(Debug, Clone)]
pub struct Committed {
    pub height: u64,
    pub hash: BlockHash,
    pub block: Arc<Block>,
    pub commit: CommitRecord,
    pub outcome: BlockOutcome,
    /// Committed through sync (decided by others while this validator was behind).
    pub synced: bool,
    /// The set that decided it (what a checkpoint at this height records).
    pub validators: ValidatorSet,
}

impl Output {
    /// A message that may carry a vote or proposal this validator signed (or a certificate
    /// holding one): the write-ahead log entries before it must be durable before it leaves.
    /// Sync requests and answers, tips and relayed transactions carry none, so they do not
    /// wait for the log (a validator answering a peer that catches up does not `fdatasync`
    /// per block it sends).
    pub fn carries_signed_consensus(&self) -> bool {
        match self {
            Output::Broadcast(msg) | Output::Send(_, msg) => !matches!(
                msg,
                NetMsg::SyncRequest { .. }
                    | NetMsg::SyncResponse { .. }
                    | NetMsg::Tip { .. }
                    | NetMsg::Txs(_)
            ),
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Output {
    Broadcast(NetMsg),
    Send(AccountId, NetMsg),
    ScheduleTimeout(Timeout, Duration),
    CancelTimeout(Timeout),
    CancelAllTimeouts,
    /// Two conflicting messages signed by one validator, seen here: the driver signs a
    /// [`crate::Call::ReportEquivocation`] with this validator's account key and hands it to
    /// [`Core::report_evidence`]. Once per offender per core, and never for one already
    /// slashed.
    Evidence(Box<crate::tx::Equivocation>),
    Committed(Box<Committed>),
    /// Log this input of `height` in the write-ahead log ([`crate::wal`]). A driver makes
    /// every entry durable before it acts on any `Broadcast` or `Send` that follows it, and
    /// resets the log when a block is committed, after the block is durable.
    WalAppend {
        height: u64,
        entry: WalEntry,
    },
}

/// The write-ahead log holds votes of a height past the block store's next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the write-ahead log has entries of height {log_height} but the block store ends at \
     {store_height}: blocks this validator committed are missing from its store; restore the \
     store (or sync it as a follower) before starting, or it could sign twice"
)]
pub struct LogAhead {
    pub store_height: u64,
    pub log_height: u64,
}

/// Counters for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreStats {
    pub proposals_invalid: u64,
    pub messages_dropped: u64,
    pub equivocations_seen: u64,
    /// A second, different proposal signed by a round's proposer (kept out: the first stands).
    pub proposals_equivocated: u64,
    /// Proposals for rounds past Malachite's lookahead, or over the future buffer's bound.
    pub proposals_dropped: u64,
    /// Sync requests over a peer's rate, not answered.
    pub sync_refused: u64,
    pub synced_blocks: u64,
    pub txs_refused: u64,
    /// Write-ahead log entries replayed on restart.
    pub wal_replayed: u64,
    /// A vote or proposal re-derived on replay differed from the one logged: not signed
    /// (Malachite refuses; a non-determinism bug, never a double signature).
    pub replay_divergences: u64,
    /// Equivocation reports this validator signed and admitted to its mempool.
    pub evidence_reported: u64,
}

/// Evidence of two votes of one kind, height and round from one validator.
fn vote_evidence(first: &SignedVote<Cess>, second: &SignedVote<Cess>) -> crate::tx::Equivocation {
    use crate::tx::{EquivocationKind, SignedValue};
    let signed = |v: &SignedVote<Cess>| SignedValue {
        value: match v.message.value {
            NilOrVal::Nil => None,
            NilOrVal::Val(hash) => Some(hash.0),
        },
        pol_round: -1,
        signature: v.signature.to_bytes(),
    };
    crate::tx::Equivocation {
        offender: first.message.validator,
        height: first.message.height.0,
        round: first.message.round.as_u32().unwrap_or(0),
        kind: match first.message.kind {
            VoteType::Prevote => EquivocationKind::Prevote,
            VoteType::Precommit => EquivocationKind::Precommit,
        },
        first: signed(first),
        second: signed(second),
    }
}

/// Evidence of two proposals for one height and round from their proposer.
fn proposal_evidence(
    first: &SignedProposal<Cess>,
    second: &SignedProposal<Cess>,
) -> crate::tx::Equivocation {
    use crate::tx::{EquivocationKind, SignedValue};
    let signed = |p: &SignedProposal<Cess>| SignedValue {
        value: Some(arc_malachitebft_core_types::Value::id(&p.message.value).0),
        pol_round: p.message.pol_round.as_i64(),
        signature: p.signature.to_bytes(),
    };
    crate::tx::Equivocation {
        offender: first.message.proposer,
        height: first.message.height.0,
        round: first.message.round.as_u32().unwrap_or(0),
        kind: EquivocationKind::Proposal,
        first: signed(first),
        second: signed(second),
    }
}

/// The most transaction bytes a block may carry: what a peer accepts
/// ([`super::types::BLOCK_BYTES_MAX`]) less the rest of a block (header, VRF proof, a commit
/// record of up to 256 signatures, the list's length prefixes), with a margin. Every proposal
/// is checked against the bound it must meet before it is sent.
pub const BLOCK_TX_BYTES_MAX: usize =
    super::types::BLOCK_BYTES_MAX - BLOCK_OVERHEAD_BYTES_MAX - 4 * super::types::BLOCK_TXS_MAX;
/// A block's bytes besides its transactions: height, parent, time, proposer, VRF proof
/// (under 1 KiB) and a commit record (256 × (32 + 96) bytes + its header, 33 KiB), rounded up
/// to 64 KiB.
const BLOCK_OVERHEAD_BYTES_MAX: usize = 64 << 10;

/// How far a proposed block's time may run ahead of a validator's clock (clocks are kept by
/// NTP to well under this; a proposer cannot push the ledger's time, which audit deadlines
/// and claims do not use but operators and clients read, into the future).
pub const TIME_AHEAD_MS_MAX: u64 = 5_000;

/// Proposals buffered for future heights, and how far ahead they may be, and their
/// transactions' bytes in all (a Byzantine validator cannot make its peers hold more).
const FUTURE_HEIGHTS: u64 = 2;
const FUTURE_PER_HEIGHT: usize = 64;
const FUTURE_TX_BYTES_MAX: usize = 64 << 20;
/// Sync answers to one validator per second, in blocks and in their transactions' bytes: an
/// honest validator catching up asks one block per round trip; more is a peer making this
/// one copy and send blocks for nothing.
const SYNC_ANSWERS_PER_PEER_PER_S: u32 = 256;
const SYNC_TX_BYTES_PER_PEER_PER_S: usize = 64 << 20;
/// A sync request is repeated at most this often per height (a batch being answered counts
/// as in progress while its blocks keep coming).
const SYNC_RETRY_MS: u64 = 500;
/// Blocks asked for per sync request by a validator behind; the next batch is asked for once
/// half of the last is in, so the answerer streams blocks without waiting for a round trip.
pub const SYNC_BATCH: u32 = 32;
const _: () = assert!(SYNC_BATCH >= 2 && SYNC_BATCH <= super::SYNC_BATCH_MAX);
/// Most transaction bytes one sync request is answered with (at least one block is sent).
pub const SYNC_ANSWER_TX_BYTES_MAX: usize = 16 << 20;
/// A node outside the validator set asks for the next block this often while it has none
/// (an answer brings the next one at once): how far behind the tip a candidate follows, so
/// how late a newly elected validator can be for its first height.
const OBSERVE_RETRY_MS: u64 = 200;
/// A validator still voting at a height this long after it was decided here is sent the
/// decision.
const HELP_AFTER_MS: u64 = 1_000;

pub struct Core {
    ctx: Cess,
    key: ValidatorKey,
    me: AccountId,
    config: CoreConfig,
    consensus: State<Cess>,
    ledger: Ledger,
    /// Hash of the block at `ledger.height()` (the chain id before the first block).
    last_hash: Hash32,
    last_commit: Option<CommitRecord>,
    validators: ValidatorSet,
    previous_validators: Option<ValidatorSet>,
    /// Blocks proposed at the current height, with their validity.
    blocks: BTreeMap<BlockHash, (Arc<Block>, Validity)>,
    /// Signed proposals seen at the current height, to restream.
    proposals: BTreeMap<(u32, BlockHash), SignedProposal<Cess>>,
    future: BTreeMap<u64, Vec<(AccountId, SignedProposal<Cess>)>>,
    /// Transaction bytes of the proposals in `future`, by height.
    future_tx_bytes: BTreeMap<u64, usize>,
    /// Peer → (start of its current one-second window in ms, answers, transaction bytes).
    sync_served: BTreeMap<AccountId, (u64, u32, usize)>,
    history: BTreeMap<u64, (Arc<Block>, CommitRecord)>,
    /// Waiting transactions: a block takes each signer's run of consecutive nonces from its
    /// ledger nonce on, whatever order they arrived in.
    mempool: Mempool,
    pending: VecDeque<Input<Cess>>,
    outputs: Vec<Output>,
    now_ms: u64,
    sync_asked: Option<SyncAsked>,
    /// Synced blocks that arrived before the ones below them, by height (at most two batches
    /// and `SYNC_ANSWER_TX_BYTES_MAX` of transactions), with their sender.
    sync_ahead: BTreeMap<u64, (AccountId, Block, CommitRecord)>,
    sync_ahead_tx_bytes: usize,
    /// Peer → (height, time) of the last block sent to it unasked because it was voting at
    /// a height this validator has decided: at most one per peer per `SYNC_RETRY_MS`.
    helped: BTreeMap<AccountId, (u64, u64)>,
    /// When the last few heights were decided here (votes arriving just after a decision are
    /// late, not a sign their sender is stuck).
    decided_at_ms: BTreeMap<u64, u64>,
    stats: CoreStats,
    started: bool,
    /// Proposals buffered for the height just started, handled once it has started.
    replay_future: Vec<(AccountId, SignedProposal<Cess>)>,
    /// This validator proposes at this height and round, and waits (no transaction yet)
    /// until the time in ms.
    proposal_due: Option<ProposalDue>,
    /// Write-ahead log entries of the height to start, replayed by [`Core::start`].
    recovered: Vec<WalEntry>,
    /// Sync requests sent while outside the set (picks the member asked next).
    observe_asks: u64,
    /// Outside the set: when the next request for the current height is due.
    observe_at_ms: Option<u64>,
    /// The highest decided height a peer claimed or showed ([`super::EngineReport::tip_seen`]).
    tip_seen: u64,
    /// Offenders whose equivocation this core has reported (one report each: the ledger
    /// refuses a second).
    reported: std::collections::BTreeSet<AccountId>,
    /// Blocks this validator proposed at the current height before it restarted, by round:
    /// proposed again (the same block, so the same signed proposal) if asked for that round.
    recovered_values: BTreeMap<u32, Arc<Block>>,
}

/// The sync request in progress: whom it went to, the heights asked for (the batches still
/// being answered run up to `next`), and when it last made progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SyncAsked {
    /// `None` for the start's one-block probe of every peer.
    peer: Option<AccountId>,
    first: u64,
    next: u64,
    at_ms: u64,
}

impl SyncAsked {
    fn covers(&self, height: u64) -> bool {
        self.first <= height && height < self.next
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProposalDue {
    height: u64,
    round: Round,
    at_ms: u64,
}

impl ProposalDue {
    fn timer(&self) -> Timeout {
        Timeout::Propose {
            height: self.height,
            round: self.round.as_u32().unwrap_or(0),
        }
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("me", &self.me)
            .field("height", &self.ledger.height())
            .field("mempool", &self.mempool.len())
            .finish()
    }
}

/// The validator set a ledger at height h − 1 gives height h (its proposers and its voters).
pub fn validator_set(ledger: &Ledger) -> ValidatorSet {
    let validators = ledger
        .validators()
        .iter()
        .map(|v| Validator {
            account: v.account,
            key: v.key.clone(),
        })
        .collect();
    ValidatorSet::new(validators, ledger.randomness())
}

impl Core {
    /// A core for the validator `account` with BLS `key`, on a ledger (genesis or restored).
    pub fn new(
        ledger: Ledger,
        key: ValidatorKey,
        account: AccountId,
        config: CoreConfig,
        now_ms: u64,
    ) -> Core {
        let ctx = Cess {
            chain_id: ledger.chain_id(),
        };
        let validators = validator_set(&ledger);
        let height = Height(ledger.height() + 1);
        let params = Params {
            address: account,
            threshold_params: ThresholdParams::default(),
            value_payload: ValuePayload::ProposalAndParts,
            enabled: true,
        };
        let consensus = State::new(ctx.clone(), height, validators.clone(), params, 1024, 256);
        assert!(
            config.empty_block_interval_ms <= config.timeouts.propose_ms / 2,
            "an empty-block interval of {} ms would let the others time out a proposer (propose timeout {} ms)",
            config.empty_block_interval_ms,
            config.timeouts.propose_ms
        );
        Core {
            last_hash: ledger.chain_id(),
            ctx,
            key,
            me: account,
            config,
            consensus,
            ledger,
            last_commit: None,
            validators,
            previous_validators: None,
            blocks: BTreeMap::new(),
            proposals: BTreeMap::new(),
            future: BTreeMap::new(),
            future_tx_bytes: BTreeMap::new(),
            sync_served: BTreeMap::new(),
            history: BTreeMap::new(),
            mempool: Mempool::default(),
            pending: VecDeque::new(),
            outputs: Vec::new(),
            now_ms,
            sync_asked: None,
            sync_ahead: BTreeMap::new(),
            sync_ahead_tx_bytes: 0,
            helped: BTreeMap::new(),
            decided_at_ms: BTreeMap::new(),
            stats: CoreStats::default(),
            started: false,
            replay_future: Vec::new(),
            proposal_due: None,
            recovered: Vec::new(),
            recovered_values: BTreeMap::new(),
            observe_asks: 0,
            observe_at_ms: None,
            reported: std::collections::BTreeSet::new(),
            tip_seen: 0,
        }
    }

    /// A core resumed from its block store ([`crate::store::replay`]): the ledger after the
    /// last stored block, the validator set that decided that block, and the last blocks with
    /// their commits (what it answers sync requests from before the store is asked).
    pub fn restore(
        restored: crate::store::Restored,
        key: ValidatorKey,
        account: AccountId,
        config: CoreConfig,
        now_ms: u64,
    ) -> Core {
        let crate::store::Restored {
            ledger,
            previous_validators,
            recent,
            last_hash,
        } = restored;
        let mut core = Core::new(ledger, key, account, config, now_ms);
        if let Some((block, commit)) = recent.last() {
            assert_eq!(
                block.height,
                core.ledger.height(),
                "the last restored block is the ledger's"
            );
            core.last_commit = Some(commit.clone());
        }
        core.last_hash = last_hash;
        core.previous_validators = previous_validators;
        let keep = core.config.history_max;
        let skip = recent.len().saturating_sub(keep);
        core.history = recent
            .into_iter()
            .skip(skip)
            .map(|(block, commit)| (block.height, (block, commit)))
            .collect();
        core
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn account(&self) -> AccountId {
        self.me
    }

    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    pub fn mempool_bytes(&self) -> usize {
        self.mempool.bytes()
    }

    /// A waiting transaction (tests, operators).
    pub fn pending_tx(&self, signer: &AccountId, nonce: u64) -> Option<&Transaction> {
        self.mempool.get(signer, nonce)
    }

    /// The round of the height being decided (−1 before it starts).
    pub fn round(&self) -> i64 {
        self.consensus.round().as_i64()
    }

    /// The height being decided.
    pub fn height(&self) -> u64 {
        self.ledger.height() + 1
    }

    /// Signs `evidence` (from [`Output::Evidence`]) into a report with `reporter`, this
    /// validator's account key, at its next nonce (after its transactions waiting here), and
    /// submits it here like a client's transaction.
    pub fn report_evidence(
        &mut self,
        reporter: &crate::AccountKey,
        evidence: crate::tx::Equivocation,
        now_ms: u64,
    ) -> Vec<Output> {
        let signer = reporter.id();
        let mut nonce = self.ledger.account(&signer).nonce;
        while self.mempool.get(&signer, nonce).is_some() {
            nonce += 1;
        }
        let offender = evidence.offender;
        let tx = self.ledger.transaction_with_nonce(
            reporter,
            nonce,
            crate::Call::ReportEquivocation {
                evidence: Box::new(evidence),
            },
        );
        let Some(tx) = VerifiedTx::check(tx, &self.ctx.chain_id) else {
            self.reported.remove(&offender);
            tracing::error!("a report signed here does not verify; not sent");
            return self.run();
        };
        let (answers, outputs) = self.submit(vec![tx], now_ms);
        match &answers[0] {
            Ok(()) => {
                self.stats.evidence_reported += 1;
                tracing::warn!(offender = ?offender, "equivocation reported on the chain");
            }
            Err(e) => {
                // Not sent: a later sighting may report it again.
                self.reported.remove(&offender);
                tracing::warn!(offender = ?offender, "equivocation report refused here: {e}");
            }
        }
        outputs
    }

    /// An equivocation seen here goes out once per offender, unless it is slashed already.
    fn report(&mut self, evidence: crate::tx::Equivocation) {
        let offender = evidence.offender;
        if self.reported.contains(&offender)
            || self.ledger.candidate(&offender).is_none_or(|c| c.slashed)
        {
            return;
        }
        self.reported.insert(offender);
        self.outputs.push(Output::Evidence(Box::new(evidence)));
    }

    /// Malachite's evidence of a finalized height: double votes and double proposals, by
    /// the validators of the set that decided it.
    fn report_malachite_evidence(
        &mut self,
        evidence: &arc_malachitebft_core_consensus::MisbehaviorEvidence<Cess>,
    ) {
        let accounts = self.validators.accounts().to_vec();
        for account in accounts {
            if let Some(pairs) = evidence.votes.get(&account)
                && let Some((first, second)) = pairs.first()
            {
                self.report(vote_evidence(first, second));
            }
            if let Some(pairs) = evidence.proposals.get(&account)
                && let Some((first, second)) = pairs.first()
            {
                self.report(proposal_evidence(first, second));
            }
        }
    }

    /// The highest decided height seen: this node's, or one its peers claimed or showed.
    pub fn tip_seen(&self) -> u64 {
        self.tip_seen.max(self.ledger.height())
    }

    fn saw_tip(&mut self, height: u64) {
        self.tip_seen = self.tip_seen.max(height);
    }

    /// Whether this node is in the set deciding the current height (votes, may propose).
    pub fn is_member(&self) -> bool {
        self.validators.get(&self.me).is_some()
    }

    /// [`super::Engine::peers`]: the current set and the last height's, without this node.
    pub fn peers(&self) -> Vec<AccountId> {
        let mut peers: Vec<AccountId> = self.validators.accounts().to_vec();
        if let Some(previous) = &self.previous_validators {
            peers.extend_from_slice(previous.accounts());
        }
        peers.sort();
        peers.dedup();
        peers.retain(|a| *a != self.me);
        peers
    }

    /// The decided block at `height` and its commit, while kept.
    pub fn decided(&self, height: u64) -> Option<&(Arc<Block>, CommitRecord)> {
        self.history.get(&height)
    }

    /// Hands a restored core the write-ahead log's entries (before [`Core::start`]): those of
    /// the height it starts at are replayed when it starts; older ones are of blocks already
    /// stored and are dropped.
    ///
    /// A log with entries of a later height means the block store lost blocks the log's
    /// owner had committed (a damaged or restored store): replaying only this height would
    /// drop the votes cast at the later ones, so that is refused and nothing is replayed.
    pub fn recover(&mut self, entries: Vec<(u64, WalEntry)>) -> Result<(), LogAhead> {
        assert!(!self.started, "the log is replayed before the core starts");
        let height = self.height();
        if let Some(&(ahead, _)) = entries.iter().find(|(h, _)| *h > height) {
            return Err(LogAhead {
                store_height: height - 1,
                log_height: ahead,
            });
        }
        self.recovered = entries
            .into_iter()
            .filter(|(h, _)| *h == height)
            .map(|(_, entry)| entry)
            .collect();
        Ok(())
    }

    /// Start the first height, replaying the write-ahead log's entries for it if the core was
    /// given any ([`Core::recover`]): Malachite re-derives the votes and proposal this
    /// validator cast before it stopped and re-sends them with the signatures already given;
    /// one that would differ is not signed.
    pub fn start(&mut self, now_ms: u64) -> Vec<Output> {
        assert!(!self.started, "a core starts once");
        self.started = true;
        self.now_ms = now_ms;
        let replay = std::mem::take(&mut self.recovered);
        if !self.is_member() {
            self.observe();
        } else {
            // A validator starting (or restarting) does not know how far the others are: it
            // asks each for its next block at once rather than wait for their votes (an
            // answer starts the catch-up; a tip says it is not behind).
            // One block each: the first to answer is asked for batches after it.
            let height = self.height();
            self.sync_asked = Some(SyncAsked {
                peer: None,
                first: height,
                next: height + 1,
                at_ms: now_ms,
            });
            for peer in self.validators.accounts().to_vec() {
                if peer != self.me {
                    self.outputs
                        .push(Output::Send(peer, NetMsg::SyncRequest { height, count: 1 }));
                }
            }
        }
        if replay.is_empty() {
            self.pending.push_back(self.start_height_input());
            return self.run();
        }
        self.consensus
            .index_wal_entries(replay.iter().map(WalEntry::input));
        for entry in &replay {
            if let Some((hash, value)) = entry.proposed_block() {
                let block = value.value.block().clone();
                if value.proposer == self.me
                    && let Some(round) = value.round.as_u32()
                {
                    self.recovered_values.insert(round, block.clone());
                }
                self.blocks.entry(hash).or_insert((block, value.validity));
            }
            if let Input::Proposal(signed) = entry.input()
                && let Some(round) = signed.message.round.as_u32()
            {
                let hash = arc_malachitebft_core_types::Value::id(&signed.message.value);
                self.proposals.insert((round, hash), signed.clone());
            }
        }
        self.stats.wal_replayed += replay.len() as u64;
        self.pending.push_back(self.start_height_input());
        let mut outputs = self.run();
        for entry in replay {
            self.pending.push_back(entry.into_input());
        }
        outputs.extend(self.run());
        self.consensus.reset_entries_index();
        outputs
    }

    pub fn on_timeout(&mut self, timeout: Timeout, now_ms: u64) -> Vec<Output> {
        self.now_ms = now_ms.max(self.now_ms);
        match timeout {
            Timeout::Step(step) => self.pending.push_back(Input::TimeoutElapsed(step)),
            Timeout::Propose { .. } => {
                if self.proposal_due.is_some_and(|due| due.timer() == timeout) {
                    self.propose_due();
                }
            }
            Timeout::Observe { height } => {
                if height == self.height() && !self.is_member() {
                    self.observe();
                }
            }
        }
        self.run()
    }

    /// A node outside the set hears no votes: it asks a member for the blocks from the
    /// current height on (a different member each time, so one that does not answer is not
    /// asked for ever) and waits [`OBSERVE_RETRY_MS`] before asking again (longer while a
    /// batch keeps streaming in). An answer is checked against the set's signatures like any
    /// sync answer.
    fn observe(&mut self) {
        let members = self.validators.accounts();
        if members.is_empty() {
            return;
        }
        let height = self.height();
        if let Some(asked) = self.sync_asked
            && asked.covers(height)
            && self.now_ms < asked.at_ms + OBSERVE_RETRY_MS
        {
            // A batch is still streaming in.
            self.schedule_observe();
            return;
        }
        let member = members[(self.observe_asks % members.len() as u64) as usize];
        self.observe_asks += 1;
        self.request_sync(member, height);
        self.schedule_observe();
    }

    /// Transactions from a client of this validator, signatures already checked: each
    /// admitted to the mempool or refused (the answers, in order); the admitted ones are
    /// relayed to the other validators in one message.
    pub fn submit(
        &mut self,
        txs: Vec<VerifiedTx>,
        now_ms: u64,
    ) -> (Vec<Result<(), crate::TxError>>, Vec<Output>) {
        let (answers, relay) = self.admit_all(txs, now_ms);
        self.propose_if_ready(&relay);
        for chunk in super::wire::split_txs(relay) {
            self.outputs.push(Output::Broadcast(NetMsg::Txs(chunk)));
        }
        (answers, self.run())
    }

    /// Transactions a validator relayed, signatures already checked: admitted, not relayed
    /// again (validators are all connected, so the first relay reached everyone).
    pub fn on_relayed_txs(&mut self, txs: Vec<VerifiedTx>, now_ms: u64) -> Vec<Output> {
        let (_, admitted) = self.admit_all(txs, now_ms);
        self.propose_if_ready(&admitted);
        self.run()
    }

    /// A held-back proposal goes out at once when one of the transactions just admitted can
    /// be included (its signer's next nonce): only their signers are looked at, so a flood of
    /// transactions that cannot be included (a nonce gap) neither speeds up an idle chain nor
    /// costs more than its admission did.
    fn propose_if_ready(&mut self, admitted: &[Transaction]) {
        if self.proposal_due.is_none() {
            return;
        }
        let height = self.height();
        if admitted
            .iter()
            .any(|tx| self.mempool.ready(&tx.signer, &self.ledger, height))
        {
            self.propose_due();
        }
    }

    fn admit_all(
        &mut self,
        txs: Vec<VerifiedTx>,
        now_ms: u64,
    ) -> (Vec<Result<(), crate::TxError>>, Vec<Transaction>) {
        self.now_ms = now_ms.max(self.now_ms);
        let mut answers = Vec::with_capacity(txs.len());
        let mut admitted = Vec::new();
        for tx in txs {
            let answer = self.admit(&tx);
            if answer.is_ok() {
                admitted.push(tx.into_tx());
            }
            answers.push(answer);
        }
        (answers, admitted)
    }

    pub fn on_message(&mut self, from: AccountId, msg: NetMsg, now_ms: u64) -> Vec<Output> {
        self.now_ms = now_ms.max(self.now_ms);
        let height = self.height();
        match msg {
            NetMsg::Proposal(signed) => {
                let h = signed.message.height.0;
                if h < height {
                    self.stats.messages_dropped += 1;
                    self.help_behind(from, h);
                } else if h == height {
                    self.on_proposal(signed);
                } else {
                    self.saw_tip(h - 1);
                    self.ask_sync(from);
                    let tx_bytes = block_tx_bytes(signed.message.value.block());
                    let buffered = self.future.entry(h).or_default();
                    if h <= height + FUTURE_HEIGHTS
                        && buffered.len() < FUTURE_PER_HEIGHT
                        && self.future_tx_bytes.values().sum::<usize>() + tx_bytes
                            <= FUTURE_TX_BYTES_MAX
                    {
                        buffered.push((from, signed));
                        *self.future_tx_bytes.entry(h).or_default() += tx_bytes;
                    } else {
                        self.stats.messages_dropped += 1;
                        self.stats.proposals_dropped += 1;
                    }
                }
            }
            NetMsg::Vote(signed) => {
                let h = signed.message.height.0;
                if h < height {
                    self.stats.messages_dropped += 1;
                    self.help_behind(from, h);
                } else {
                    if h > height {
                        self.saw_tip(h - 1);
                        self.ask_sync(from);
                    }
                    // Malachite checks the signature and buffers near-future heights.
                    self.pending.push_back(Input::Vote(signed));
                }
            }
            NetMsg::Txs(txs) => {
                // Drivers check signatures off this loop and call `submit`; this path checks
                // them here, after the cheap checks (a transaction nobody pays for costs one
                // lookup, not a signature verification).
                let verified: Vec<VerifiedTx> = txs
                    .into_iter()
                    .filter(|tx| {
                        let cheap = self.mempool.precheck(tx, &self.ledger);
                        if cheap.is_err() {
                            self.stats.txs_refused += 1;
                        }
                        cheap.is_ok()
                    })
                    .filter_map(|tx| VerifiedTx::check(tx, &self.ctx.chain_id))
                    .collect();
                return self.on_relayed_txs(verified, now_ms);
            }
            NetMsg::SyncRequest {
                height: wanted,
                count,
            } => {
                let mut answer_tx_bytes = 0;
                let mut missing = false;
                for at in wanted..wanted.saturating_add(count.into()) {
                    let Some((block, commit)) = self.history.get(&at).cloned() else {
                        missing = true;
                        break;
                    };
                    let tx_bytes = block_tx_bytes(&block);
                    if at > wanted && answer_tx_bytes + tx_bytes > SYNC_ANSWER_TX_BYTES_MAX {
                        break;
                    }
                    if !self.may_serve_sync(from, tx_bytes) {
                        self.stats.sync_refused += 1;
                        break;
                    }
                    answer_tx_bytes += tx_bytes;
                    self.outputs.push(Output::Send(
                        from,
                        NetMsg::SyncResponse {
                            block: Box::new((*block).clone()),
                            commit,
                        },
                    ));
                }
                // Cut short by a height not kept here: the tip is said, so the asker asks
                // elsewhere at once (as the QUIC driver answers).
                if missing {
                    self.outputs.push(Output::Send(
                        from,
                        NetMsg::Tip {
                            height: self.ledger.height(),
                        },
                    ));
                }
            }
            // Validators learn each other's progress from votes; a tip ends a batch short.
            NetMsg::Tip { height } => {
                self.saw_tip(height);
                if let Some(asked) = &mut self.sync_asked
                    && asked.peer == Some(from)
                {
                    asked.next = asked.next.min(height.saturating_add(1)).max(asked.first);
                }
            }
            NetMsg::SyncResponse { block, commit } => self.on_sync_response(from, *block, commit),
            NetMsg::HeaderRequest {
                height: first,
                step,
                count,
            } => {
                // Headers of kept blocks, under the same rate as blocks (a header is cheap
                // to send, its commit is the block's); stops at the first not kept.
                for k in 0..u64::from(count) {
                    let at = step
                        .checked_mul(k)
                        .and_then(|offset| first.checked_add(offset));
                    let Some((block, commit)) = at.and_then(|at| self.history.get(&at)).cloned()
                    else {
                        break;
                    };
                    if !self.may_serve_sync(from, 0) {
                        self.stats.sync_refused += 1;
                        break;
                    }
                    self.outputs.push(Output::Send(
                        from,
                        NetMsg::HeaderResponse {
                            header: Box::new(block.header()),
                            commit,
                        },
                    ));
                }
            }
            // Checkpoints are served by drivers from their disks; headers are asked for by a
            // node before its core starts.
            NetMsg::HeaderResponse { .. }
            | NetMsg::CheckpointRequest { .. }
            | NetMsg::CheckpointChunk { .. } => self.stats.messages_dropped += 1,
            NetMsg::Polka(cert) => {
                self.certificate(from, cert.height.0, Input::PolkaCertificate(cert))
            }
            NetMsg::RoundCertificate(cert) => {
                self.certificate(from, cert.height.0, Input::RoundCertificate(cert))
            }
        }
        self.run()
    }

    /// Whether one more sync answer to `peer` stays within its rate (and counts it).
    fn may_serve_sync(&mut self, peer: AccountId, tx_bytes: usize) -> bool {
        if self.sync_served.len() >= 2 * super::VALIDATORS_MAX
            && !self.sync_served.contains_key(&peer)
        {
            // Only validators of two sets send requests; past eras' leave this way.
            let now_ms = self.now_ms;
            self.sync_served
                .retain(|_, (start, _, _)| now_ms < *start + 1_000);
        }
        let window = self.sync_served.entry(peer).or_insert((self.now_ms, 0, 0));
        if self.now_ms >= window.0 + 1_000 {
            *window = (self.now_ms, 0, 0);
        }
        if window.1 >= SYNC_ANSWERS_PER_PEER_PER_S
            || window.2 + tx_bytes > SYNC_TX_BYTES_PER_PEER_PER_S
        {
            return false;
        }
        window.1 += 1;
        window.2 += tx_bytes;
        true
    }

    /// A certificate is handled at its height; one from ahead means this validator is behind.
    fn certificate(&mut self, from: AccountId, height: u64, input: Input<Cess>) {
        match height.cmp(&self.height()) {
            std::cmp::Ordering::Equal => self.pending.push_back(input),
            std::cmp::Ordering::Greater => self.ask_sync(from),
            std::cmp::Ordering::Less => self.stats.messages_dropped += 1,
        }
    }

    fn start_height_input(&self) -> Input<Cess> {
        Input::StartHeight(
            Height(self.height()),
            self.validators.clone(),
            false,
            None,
            VoteExtensionPolicy::Disabled,
        )
    }

    /// A validator still voting at a height this one decided missed the decision (its
    /// precommits were lost): send it that block with its commit, so it need not wait for
    /// rounds that cannot gather a quorum without it. Once per peer per `SYNC_RETRY_MS`, and
    /// only to validators, so a vote cannot make this validator send more than one block
    /// per half second to anyone.
    fn help_behind(&mut self, peer: AccountId, height: u64) {
        let known = self.validators.get(&peer).is_some()
            || self
                .previous_validators
                .as_ref()
                .is_some_and(|v| v.get(&peer).is_some());
        if !known {
            return;
        }
        if let Some((_, at)) = self.helped.get(&peer)
            && self.now_ms < at + SYNC_RETRY_MS
        {
            return;
        }
        // Votes for a height just decided arrive late from validators that decided too; only
        // a validator still voting there a while later has missed the decision.
        if let Some(at) = self.decided_at_ms.get(&height)
            && self.now_ms < at + HELP_AFTER_MS
        {
            return;
        }
        let Some((block, commit)) = self.history.get(&height) else {
            return;
        };
        if self.helped.len() >= 2 * super::VALIDATORS_MAX {
            // Only validators of two sets are ever here; past eras' leave this way.
            self.helped.clear();
        }
        self.helped.insert(peer, (height, self.now_ms));
        self.outputs.push(Output::Send(
            peer,
            NetMsg::SyncResponse {
                block: Box::new((**block).clone()),
                commit: commit.clone(),
            },
        ));
    }

    /// `from` is ahead: ask it for a batch from the current height on, unless a request
    /// covering this height is in progress (made, or answered, within `SYNC_RETRY_MS`).
    fn ask_sync(&mut self, from: AccountId) {
        let height = self.height();
        if let Some(asked) = self.sync_asked
            && asked.covers(height)
            && self.now_ms < asked.at_ms + SYNC_RETRY_MS
        {
            return;
        }
        self.request_sync(from, height);
    }

    fn request_sync(&mut self, peer: AccountId, height: u64) {
        if self
            .sync_asked
            .is_some_and(|asked| asked.peer != Some(peer))
        {
            // What another peer's batch left waiting is not kept for this one's.
            self.sync_ahead.clear();
            self.sync_ahead_tx_bytes = 0;
        }
        self.sync_asked = Some(SyncAsked {
            peer: Some(peer),
            first: height,
            next: height + u64::from(SYNC_BATCH),
            at_ms: self.now_ms,
        });
        self.outputs.push(Output::Send(
            peer,
            NetMsg::SyncRequest {
                height,
                count: SYNC_BATCH,
            },
        ));
    }

    /// A synced block from `from` was applied: while its batch streams in, ask `from` for
    /// the next one once half of this one is in (about one and a half batches in flight, so
    /// the answerer never waits for a round trip); an answer from anyone else starts a
    /// request to it.
    fn continue_sync(&mut self, from: AccountId) {
        let height = self.height();
        let now_ms = self.now_ms;
        match &mut self.sync_asked {
            Some(asked) if asked.peer == Some(from) && asked.covers(height) => {
                asked.at_ms = now_ms;
                if asked.next - height <= u64::from(SYNC_BATCH / 2) {
                    let next = asked.next;
                    asked.next += u64::from(SYNC_BATCH);
                    self.outputs.push(Output::Send(
                        from,
                        NetMsg::SyncRequest {
                            height: next,
                            count: SYNC_BATCH,
                        },
                    ));
                }
            }
            // Another peer's block (an unasked help, a stream given up): asked anew only if
            // no request covering this height is in progress, or it stalled (two streams of
            // the same blocks would otherwise restart each other at every block).
            Some(asked) if asked.covers(height) && now_ms < asked.at_ms + SYNC_RETRY_MS => {}
            _ => self.request_sync(from, height),
        }
    }

    /// Mempool admission: signed for this chain, then the mempool's rules (validity, fee,
    /// nonce window, the signer's balance, replacement, bounds: [`Mempool::admit`]).
    fn admit(&mut self, tx: &VerifiedTx) -> Result<(), crate::TxError> {
        let answer = if *tx.chain_id() != self.ctx.chain_id {
            Err(crate::TxError::BadSignature)
        } else {
            self.mempool
                .admit(tx.tx().clone(), &self.ledger, &self.config.mempool)
        };
        if answer.is_err() {
            self.stats.txs_refused += 1;
        }
        answer
    }

    /// What a proposal must be besides its block being valid. A fresh proposal (no proof-of-
    /// lock round) carries a block made by its own proposer, so no proposer can choose
    /// among other validators' VRF outputs; a re-proposal carries the block that got the
    /// polka, whoever made it. A block's time may be at most [`TIME_AHEAD_MS_MAX`] past this
    /// validator's clock (and never before the previous block's: `check_block`).
    fn check_proposal(&self, proposal: &super::types::Proposal) -> Result<(), &'static str> {
        let block = proposal.value.block();
        if proposal.pol_round == Round::Nil && block.proposer != proposal.proposer {
            return Err("a fresh proposal carries another proposer's block");
        }
        if block.time_ms > self.now_ms.saturating_add(TIME_AHEAD_MS_MAX) {
            return Err("block time too far ahead of this validator's clock");
        }
        Ok(())
    }

    /// Everything a block must be, whoever proposed it and in whichever round.
    fn check_block(&self, block: &Block) -> Result<(), &'static str> {
        if block.height != self.height() {
            return Err("wrong height");
        }
        if block.parent != self.last_hash {
            return Err("wrong parent");
        }
        if block.parent_root != self.ledger.root() {
            return Err("wrong parent state root");
        }
        if block.time_ms < self.ledger.time_ms() {
            return Err("time goes backwards");
        }
        if block.next_validators != self.ledger.elected_by_next_block() {
            return Err("wrong next validator set");
        }
        let proposer = self
            .validators
            .get(&block.proposer)
            .ok_or("proposer is not a validator")?;
        let epoch = self.ledger.epoch_of(block.height);
        let randomness = self
            .ledger
            .epoch_randomness(epoch)
            .ok_or("no randomness for the epoch")?;
        if vrf::vrf_verify(&proposer.key, &randomness, block.height, &block.vrf_proof).is_none() {
            return Err("bad VRF proof");
        }
        match (&block.last_commit, &self.previous_validators) {
            (None, _) if block.height == 1 => {}
            (Some(commit), Some(previous)) => {
                if !commit.verify(
                    &self.ctx.chain_id,
                    block.height - 1,
                    &BlockHash(block.parent),
                    previous,
                ) {
                    return Err("last commit does not verify");
                }
            }
            // A core restored at a height it did not see decided cannot check the record.
            (Some(_), None) => {}
            (None, _) => return Err("missing last commit"),
        }
        Ok(())
    }

    fn on_proposal(&mut self, signed: SignedProposal<Cess>) {
        let proposal = &signed.message;
        let Some(round) = proposal.round.as_u32() else {
            self.stats.messages_dropped += 1;
            return;
        };
        // Malachite drops these too, but only after this validator checked and kept the block.
        if proposal.round.as_i64()
            > self.consensus.round().as_i64()
                + i64::from(arc_malachitebft_core_consensus::MAX_FUTURE_ROUND_LOOKAHEAD)
        {
            self.stats.messages_dropped += 1;
            self.stats.proposals_dropped += 1;
            return;
        }
        let expected = self.validators.proposer(proposal.height.0, round);
        if expected.account != proposal.proposer
            || !self
                .ctx
                .verify_proposal(&expected.key, proposal, &signed.signature)
        {
            self.stats.messages_dropped += 1;
            return;
        }
        let value = proposal.value.clone();
        let hash = arc_malachitebft_core_types::Value::id(&value);
        // One proposal per round (its proposer is fixed): a second, different one signed by
        // the same proposer is equivocation. The first stands and the second is neither
        // checked nor kept, so a Byzantine leader cannot make its peers verify and hold a
        // block for every proposal it signs.
        if let Some(((_, first), _)) = self
            .proposals
            .range((round, BlockHash([0; 32]))..=(round, BlockHash([0xff; 32])))
            .next()
            && *first != hash
        {
            tracing::warn!(height = proposal.height.0, round, proposer = ?proposal.proposer, "a second proposal for the round: equivocation, dropped");
            self.stats.proposals_equivocated += 1;
            self.stats.messages_dropped += 1;
            if let Some(kept) = self.proposals.get(&(round, *first)).cloned() {
                self.report(proposal_evidence(&kept, &signed));
            }
            return;
        }
        let validity = match self.check_proposal(proposal) {
            Err(reason) => {
                // A property of this proposal, not of the block: not cached.
                tracing::warn!(height = proposal.height.0, round, %hash, reason, "invalid proposal");
                self.stats.proposals_invalid += 1;
                Validity::Invalid
            }
            Ok(()) => match self.blocks.get(&hash) {
                Some((_, validity)) => *validity,
                None => {
                    let validity = match self.check_block(value.block()) {
                        Ok(()) => Validity::Valid,
                        Err(reason) => {
                            tracing::warn!(height = proposal.height.0, round, %hash, reason, "invalid block proposed");
                            self.stats.proposals_invalid += 1;
                            Validity::Invalid
                        }
                    };
                    self.blocks.insert(hash, (value.block().clone(), validity));
                    validity
                }
            },
        };
        self.proposals.insert((round, hash), signed.clone());
        let proposed = ProposedValue {
            height: proposal.height,
            round: proposal.round,
            valid_round: proposal.pol_round,
            proposer: proposal.proposer,
            value,
            validity,
        };
        self.pending.push_back(Input::Proposal(signed));
        self.pending
            .push_back(Input::ProposedValue(proposed, ValueOrigin::Consensus));
    }

    fn on_sync_response(&mut self, from: AccountId, block: Block, commit: CommitRecord) {
        if block.height > self.height() {
            self.hold_synced(from, block, commit);
            return;
        }
        if block.height < self.height() || !self.apply_synced(from, block, commit) {
            return;
        }
        // Blocks of the batch that arrived ahead of this one (a network that reorders); each
        // height applied prunes what is below it (`advance_height`).
        while let Some((from, block, commit)) = self.sync_ahead.remove(&self.height()) {
            self.sync_ahead_tx_bytes -= block_tx_bytes(&block);
            if !self.apply_synced(from, block, commit) {
                break;
            }
        }
    }

    /// A block of the batch being answered that arrived before the ones below it: kept
    /// (unchecked until its turn, when the set that decided it is known) if it is from the
    /// peer asked, within the heights asked for, and within the buffer's bounds.
    fn hold_synced(&mut self, from: AccountId, block: Block, commit: CommitRecord) {
        let tx_bytes = block_tx_bytes(&block);
        let wanted = self
            .sync_asked
            .is_some_and(|asked| asked.peer == Some(from) && asked.covers(block.height));
        if !wanted
            || self.sync_ahead.contains_key(&block.height)
            || self.sync_ahead.len() >= 2 * SYNC_BATCH as usize
            || self.sync_ahead_tx_bytes + tx_bytes > SYNC_ANSWER_TX_BYTES_MAX
        {
            self.stats.messages_dropped += 1;
            return;
        }
        self.sync_ahead_tx_bytes += tx_bytes;
        self.sync_ahead.insert(block.height, (from, block, commit));
    }

    /// A synced block of the current height: checked, its commit verified against the set
    /// deciding it, and applied; the peer is asked for more as its batch comes in.
    fn apply_synced(&mut self, from: AccountId, block: Block, commit: CommitRecord) -> bool {
        let hash = block.hash();
        if let Err(reason) = self.check_block(&block) {
            tracing::warn!(height = block.height, %hash, reason, "sync response refused");
            self.stats.messages_dropped += 1;
            return false;
        }
        if !commit.verify(&self.ctx.chain_id, block.height, &hash, &self.validators) {
            tracing::warn!(height = block.height, %hash, "sync response commit does not verify");
            self.stats.messages_dropped += 1;
            return false;
        }
        self.commit_block(Arc::new(block), hash, commit, true);
        self.stats.synced_blocks += 1;
        self.advance_height();
        // The peer is ahead: keep its blocks coming.
        self.continue_sync(from);
        true
    }

    /// Apply a decided block to the ledger.
    fn commit_block(
        &mut self,
        block: Arc<Block>,
        hash: BlockHash,
        commit: CommitRecord,
        synced: bool,
    ) {
        assert_eq!(block.height, self.height(), "blocks commit in height order");
        let info = block_info(&block);
        // Transactions this validator admitted were verified then; only the others are here.
        let checked: Vec<bool> = block
            .txs
            .iter()
            .map(|tx| self.mempool.get(&tx.signer, tx.nonce) == Some(tx))
            .collect();
        let outcome = self
            .ledger
            .apply_block_checked(&info, &block.txs, &checked, &CpuBackend);
        self.mempool
            .after_block(&self.ledger, &block.txs, &outcome.receipts);
        self.last_hash = hash.0;
        self.last_commit = Some(commit.clone());
        self.decided_at_ms.insert(block.height, self.now_ms);
        while self.decided_at_ms.len() > 16 {
            self.decided_at_ms.pop_first();
        }
        self.history
            .insert(block.height, (block.clone(), commit.clone()));
        while self.history.len() > self.config.history_max {
            self.history.pop_first();
        }
        self.outputs.push(Output::Committed(Box::new(Committed {
            height: block.height,
            hash,
            block,
            commit,
            outcome,
            synced,
            validators: self.validators.clone(),
        })));
    }

    /// Move to the next height: new validator set, fresh per-height state, buffered proposals.
    fn advance_height(&mut self) {
        let next = validator_set(&self.ledger);
        self.previous_validators = Some(std::mem::replace(&mut self.validators, next));
        self.blocks.clear();
        self.proposals.clear();
        self.recovered_values.clear();
        self.pending.push_back(self.start_height_input());
        let height = self.height();
        self.future.retain(|h, _| *h >= height);
        // Buffered proposals are handled once the height has started (they queue behind it).
        self.replay_future = self.future.remove(&height).unwrap_or_default();
        self.future_tx_bytes.retain(|h, _| *h > height);
        // Synced blocks of heights decided meanwhile (by this validator's own votes) are stale.
        if self
            .sync_ahead
            .first_key_value()
            .is_some_and(|(h, _)| *h < height)
        {
            self.sync_ahead.retain(|h, _| *h >= height);
            self.sync_ahead_tx_bytes = self
                .sync_ahead
                .values()
                .map(|(_, b, _)| block_tx_bytes(b))
                .sum();
        }
        self.observe_at_ms = None;
        if !self.is_member() {
            // Outside the set now (retired, or still a candidate): nobody sends it votes.
            self.schedule_observe();
        }
    }

    fn schedule_observe(&mut self) {
        let height = self.height();
        self.observe_at_ms = Some(self.now_ms + OBSERVE_RETRY_MS);
        self.outputs.push(Output::ScheduleTimeout(
            Timeout::Observe { height },
            Duration::from_millis(OBSERVE_RETRY_MS),
        ));
    }

    /// Hands Malachite this validator's block for `height` and `round`.
    fn propose(&mut self, height: u64, round: Round, block: Block) {
        let value = BlockValue::new(block);
        let hash = arc_malachitebft_core_types::Value::id(&value);
        self.blocks
            .insert(hash, (value.block().clone(), Validity::Valid));
        self.pending
            .push_back(Input::Propose(LocallyProposedValue::new(
                Height(height),
                round,
                value,
            )));
    }

    /// Proposes the block held back for the empty-block interval (its time has come, or a
    /// transaction arrived), with whatever the mempool now offers.
    fn propose_due(&mut self) {
        let Some(due) = self.proposal_due.take() else {
            return;
        };
        if due.height != self.height() || self.consensus.round() != due.round {
            return;
        }
        let block = self.build_block(due.height);
        self.propose(due.height, due.round, block);
    }

    fn build_block(&mut self, height: u64) -> Block {
        let epoch = self.ledger.epoch_of(height);
        let randomness = self
            .ledger
            .epoch_randomness(epoch)
            .expect("the current epoch's randomness is always known");
        let (vrf_proof, _) = vrf::vrf_prove(&self.key, &randomness, height);
        let tx_bytes_max = self.config.block_tx_bytes_max.min(BLOCK_TX_BYTES_MAX);
        let txs_max = self.config.block_txs_max.min(super::types::BLOCK_TXS_MAX);
        let txs = self.mempool.take_block(&self.ledger, txs_max, tx_bytes_max);
        let block = Block {
            height,
            parent: self.last_hash,
            parent_root: self.ledger.root(),
            next_validators: self.ledger.elected_by_next_block(),
            time_ms: self.now_ms.max(self.ledger.time_ms()),
            proposer: self.me,
            vrf_proof,
            last_commit: self.last_commit.clone(),
            txs,
        };
        // A block over what peers decode would fail every round it is proposed in.
        let len_bytes = block.encode().len();
        assert!(
            len_bytes <= super::types::BLOCK_BYTES_MAX,
            "proposal of {len_bytes} bytes exceeds the block bound"
        );
        block
    }
}

/// The encoded bytes of a block's transactions (what bounds its size; cheap, unlike encoding
/// the block).
pub fn block_tx_bytes(block: &Block) -> usize {
    block.txs.iter().map(|tx| tx.encoded_len()).sum()
}

/// What the ledger is told about a decided block (validators and followers apply it alike).
pub fn block_info(block: &Block) -> BlockInfo {
    BlockInfo {
        height: block.height,
        time_ms: block.time_ms,
        vrf_output: block.vrf_output(),
        last_commit: block
            .last_commit
            .as_ref()
            .map(|c| c.signatures.iter().map(|(a, _)| *a).collect())
            .unwrap_or_default(),
    }
}

/// Work an effect asks for that needs the whole core; done once the effect's input is through.
enum Deferred {
    Decide(CommitCertificate<Cess>),
    Finalize {
        evidence: Box<arc_malachitebft_core_consensus::MisbehaviorEvidence<Cess>>,
    },
    GetValue {
        height: u64,
        round: Round,
    },
    Restream {
        value: BlockHash,
    },
}

/// What the effect handler may touch while Malachite holds its state.
struct Env<'a> {
    ctx: &'a Cess,
    key: &'a ValidatorKey,
    timeouts: &'a super::types::StepTimeouts,
    outputs: &'a mut Vec<Output>,
    deferred: &'a mut Vec<Deferred>,
}

type ConsensusResume = arc_malachitebft_core_consensus::Resume<Cess>;

impl Env<'_> {
    fn handle(&mut self, effect: Effect<Cess>) -> Result<ConsensusResume, String> {
        Ok(match effect {
            Effect::CancelAllTimeouts(r) => {
                self.outputs.push(Output::CancelAllTimeouts);
                r.resume_with(())
            }
            Effect::CancelTimeout(timeout, r) => {
                self.outputs
                    .push(Output::CancelTimeout(Timeout::Step(timeout)));
                r.resume_with(())
            }
            Effect::ScheduleTimeout(timeout, r) => {
                let duration = self.timeouts.duration_for(timeout);
                self.outputs
                    .push(Output::ScheduleTimeout(Timeout::Step(timeout), duration));
                r.resume_with(())
            }
            Effect::StartRound(height, round, proposer, role, r) => {
                tracing::debug!(%height, %round, %proposer, ?role, "round");
                r.resume_with(())
            }
            Effect::PublishConsensusMsg(msg, r) => {
                let msg = match msg {
                    SignedConsensusMsg::Vote(vote) => NetMsg::Vote(vote),
                    SignedConsensusMsg::Proposal(proposal) => NetMsg::Proposal(proposal),
                };
                self.outputs.push(Output::Broadcast(msg));
                r.resume_with(())
            }
            // Certificates travel whole: a validator gets all of a polka's votes or none.
            Effect::PublishLivenessMsg(msg, r) => {
                let msg = match msg {
                    LivenessMsg::Vote(vote) => NetMsg::Vote(vote),
                    LivenessMsg::PolkaCertificate(cert) => NetMsg::Polka(cert),
                    LivenessMsg::SkipRoundCertificate(cert) => NetMsg::RoundCertificate(cert),
                };
                self.outputs.push(Output::Broadcast(msg));
                r.resume_with(())
            }
            Effect::RepublishVote(vote, r) => {
                self.outputs.push(Output::Broadcast(NetMsg::Vote(vote)));
                r.resume_with(())
            }
            Effect::RepublishRoundCertificate(cert, r) => {
                self.outputs
                    .push(Output::Broadcast(NetMsg::RoundCertificate(cert)));
                r.resume_with(())
            }
            Effect::GetValue(height, round, _timeout, r) => {
                self.deferred.push(Deferred::GetValue {
                    height: height.0,
                    round,
                });
                r.resume_with(())
            }
            Effect::RestreamProposal(_height, _round, _valid_round, _proposer, value, r) => {
                self.deferred.push(Deferred::Restream { value });
                r.resume_with(())
            }
            Effect::CertVerifiedSyncValue(_, _, r) | Effect::CertRejectedSyncValue(_, _, _, r) => {
                r.resume_with(())
            }
            Effect::Decide(cert, _extensions, r) => {
                self.deferred.push(Deferred::Decide(cert));
                r.resume_with(())
            }
            Effect::SignVote(vote, r) => {
                let signature = self.ctx.sign_vote(self.key, &vote);
                r.resume_with(SignedMessage::new(vote, signature))
            }
            Effect::SignProposal(proposal, r) => {
                let signature = self.ctx.sign_proposal(self.key, &proposal);
                r.resume_with(SignedMessage::new(proposal, signature))
            }
            Effect::VerifySignature(signed, key, r) => {
                let valid = match &signed.message {
                    arc_malachitebft_core_consensus::ConsensusMsg::Vote(vote) => {
                        self.ctx.verify_vote(&key, vote, &signed.signature)
                    }
                    arc_malachitebft_core_consensus::ConsensusMsg::Proposal(proposal) => {
                        self.ctx.verify_proposal(&key, proposal, &signed.signature)
                    }
                };
                r.resume_with(valid)
            }
            Effect::VerifyCommitCertificate(cert, validators, thresholds, r) => {
                let votes = cert.commit_signatures.iter().map(|s| {
                    (
                        precommit(cert.height, cert.round, cert.value_id, s.address),
                        &s.signature,
                    )
                });
                let result =
                    verify_votes(self.ctx, &validators, votes, thresholds.quorum).map_err(|e| {
                        e.into_error(|i| {
                            CertificateError::InvalidCommitSignature(
                                cert.commit_signatures[i].clone(),
                            )
                        })
                    });
                r.resume_with(result)
            }
            Effect::VerifyExtendedCommitCertificate(cert, validators, thresholds, _policy, r) => {
                let result = match cert
                    .commit_signatures
                    .iter()
                    .find(|s| s.extension.is_some())
                {
                    // Extensions are disabled on this network.
                    Some(s) => Err(CertificateError::UnexpectedVoteExtension(s.address)),
                    None => {
                        let votes = cert.commit_signatures.iter().map(|s| {
                            (
                                precommit(cert.height, cert.round, cert.value_id, s.address),
                                &s.signature,
                            )
                        });
                        verify_votes(self.ctx, &validators, votes, thresholds.quorum).map_err(|e| {
                            e.into_error(|i| {
                                let s = &cert.commit_signatures[i];
                                CertificateError::InvalidCommitSignature(
                                    arc_malachitebft_core_types::CommitSignature::new(
                                        s.address,
                                        s.signature.clone(),
                                    ),
                                )
                            })
                        })
                    }
                };
                r.resume_with(result)
            }
            Effect::VerifyPolkaCertificate(cert, validators, thresholds, r) => {
                let votes = cert.polka_signatures.iter().map(|s| {
                    let vote = super::types::Vote {
                        height: cert.height,
                        round: cert.round,
                        value: NilOrVal::Val(cert.value_id),
                        kind: VoteType::Prevote,
                        validator: s.address,
                    };
                    (vote, &s.signature)
                });
                let result =
                    verify_votes(self.ctx, &validators, votes, thresholds.quorum).map_err(|e| {
                        e.into_error(|i| {
                            CertificateError::InvalidPolkaSignature(
                                cert.polka_signatures[i].clone(),
                            )
                        })
                    });
                r.resume_with(result)
            }
            Effect::VerifyRoundCertificate(cert, validators, thresholds, r) => {
                let threshold = match cert.cert_type {
                    arc_malachitebft_core_types::RoundCertificateType::Skip => thresholds.honest,
                    arc_malachitebft_core_types::RoundCertificateType::Precommit => {
                        thresholds.quorum
                    }
                };
                let votes = cert.round_signatures.iter().map(|s| {
                    let vote = super::types::Vote {
                        height: cert.height,
                        round: cert.round,
                        value: s.value_id,
                        kind: s.vote_type,
                        validator: s.address,
                    };
                    (vote, &s.signature)
                });
                let result = verify_votes(self.ctx, &validators, votes, threshold).map_err(|e| {
                    e.into_error(|i| {
                        CertificateError::InvalidRoundSignature(cert.round_signatures[i].clone())
                    })
                });
                r.resume_with(result)
            }
            Effect::WalAppend(height, input, r) => {
                if let Some(entry) = WalEntry::from_input(input) {
                    self.outputs.push(Output::WalAppend {
                        height: height.0,
                        entry,
                    });
                }
                r.resume_with(())
            }
            Effect::ExtendVote(_, _, _, _, r) => r.resume_with(None),
            Effect::VerifyVoteExtension(_, _, _, _, _, _, r) => r.resume_with(Ok(())),
            Effect::Finalize(_cert, _extensions, evidence, r) => {
                self.deferred.push(Deferred::Finalize {
                    evidence: Box::new(evidence),
                });
                r.resume_with(())
            }
        })
    }
}

impl Core {
    /// Feed pending inputs to Malachite until none are left; return what is to be done.
    fn run(&mut self) -> Vec<Output> {
        loop {
            while let Some(input) = self.pending.pop_front() {
                let mut deferred = Vec::new();
                {
                    let mut env = Env {
                        ctx: &self.ctx,
                        key: &self.key,
                        timeouts: &self.config.timeouts,
                        outputs: &mut self.outputs,
                        deferred: &mut deferred,
                    };
                    let result: Result<(), arc_malachitebft_core_consensus::Error<Cess>> = arc_malachitebft_core_consensus::process!(
                        input: input,
                        state: &mut self.consensus,
                        metrics: &(),
                        with: effect => env.handle(effect)
                    );
                    match result {
                        Ok(()) => {}
                        Err(
                            error @ arc_malachitebft_core_consensus::Error::ReplayDivergence(..),
                        ) => {
                            self.stats.replay_divergences += 1;
                            tracing::error!(me = ?self.me, %error, "replayed vote or proposal differs from the one logged: not signed");
                        }
                        Err(error) => {
                            tracing::warn!(me = ?self.me, %error, "consensus input failed")
                        }
                    }
                }
                for work in deferred {
                    self.do_deferred(work);
                }
            }
            if self.replay_future.is_empty() {
                break;
            }
            for (_, signed) in std::mem::take(&mut self.replay_future) {
                self.on_proposal(signed);
            }
        }
        // Malachite cancels all its timeouts when a height or round starts; drivers then drop
        // the held-back proposal's timer too, so it is scheduled again; the same for a node
        // outside the set, whose next request must stay due.
        if let Some(due) = self.proposal_due {
            self.keep_scheduled(due.timer(), due.at_ms);
        }
        if let Some(at_ms) = self.observe_at_ms {
            let height = self.height();
            self.keep_scheduled(Timeout::Observe { height }, at_ms);
        }
        std::mem::take(&mut self.outputs)
    }

    /// Schedules `timer` again (due at `at_ms`) if the outputs cancel every timeout after they
    /// last scheduled it.
    fn keep_scheduled(&mut self, timer: Timeout, at_ms: u64) {
        let cancelled_at = self
            .outputs
            .iter()
            .rposition(|o| matches!(o, Output::CancelAllTimeouts));
        let scheduled_at = self
            .outputs
            .iter()
            .rposition(|o| matches!(o, Output::ScheduleTimeout(t, _) if *t == timer));
        if cancelled_at.is_some() && cancelled_at > scheduled_at {
            self.outputs.push(Output::ScheduleTimeout(
                timer,
                Duration::from_millis(at_ms.saturating_sub(self.now_ms)),
            ));
        }
    }

    fn do_deferred(&mut self, work: Deferred) {
        match work {
            Deferred::Decide(cert) => {
                if cert.height.0 != self.height() {
                    // Already committed through sync.
                    return;
                }
                let Some((block, _)) = self.blocks.get(&cert.value_id).cloned() else {
                    tracing::error!(height = cert.height.0, value = %cert.value_id, "decided a block this validator does not have");
                    return;
                };
                let commit = CommitRecord {
                    round: cert.round.as_u32().unwrap_or(0),
                    signatures: cert
                        .commit_signatures
                        .iter()
                        .map(|s| (s.address, s.signature.clone()))
                        .collect(),
                };
                self.commit_block(block, cert.value_id, commit, false);
            }
            Deferred::Finalize { evidence } => {
                if !evidence.is_empty() {
                    self.stats.equivocations_seen += 1;
                    tracing::warn!(me = ?self.me, height = self.ledger.height(), "misbehaviour evidence at this height");
                    self.report_malachite_evidence(&evidence);
                }
                if self.consensus.height().0 == self.ledger.height() {
                    self.advance_height();
                }
            }
            Deferred::GetValue { height, round } => {
                if height != self.height() {
                    return;
                }
                self.proposal_due = None;
                if let Some(block) = round
                    .as_u32()
                    .and_then(|r| self.recovered_values.get(&r))
                    .cloned()
                {
                    // Proposed before a restart: the same block again, never another.
                    self.propose(height, round, (*block).clone());
                    return;
                }
                let block = self.build_block(height);
                let due_ms = self
                    .decided_at_ms
                    .get(&(height - 1))
                    .map_or(0, |at| at + self.config.empty_block_interval_ms);
                if block.txs.is_empty() && self.now_ms < due_ms {
                    let due = ProposalDue {
                        height,
                        round,
                        at_ms: due_ms,
                    };
                    self.proposal_due = Some(due);
                    self.outputs.push(Output::ScheduleTimeout(
                        due.timer(),
                        Duration::from_millis(due_ms - self.now_ms),
                    ));
                    return;
                }
                self.propose(height, round, block);
            }
            Deferred::Restream { value } => {
                let proposals: Vec<SignedProposal<Cess>> = self
                    .proposals
                    .iter()
                    .filter(|((_, hash), _)| *hash == value)
                    .map(|(_, p)| p.clone())
                    .collect();
                for proposal in proposals {
                    self.outputs
                        .push(Output::Broadcast(NetMsg::Proposal(proposal)));
                }
            }
        }
    }
}
