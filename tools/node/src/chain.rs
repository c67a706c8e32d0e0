// Long file: the node's chain driver: the I/O of every action its core asks for.
//! The node's driver on the chain: a follower keeps the ledger replica, the [`NodeCore`]
//! decides, and this module does the I/O it asks for: submit transactions, delete fragments,
//! get a durable fragment's tags from a tagger and check them before keeping them, and prove
//! the node's open audits from its store. [`ChainStore`] puts the chain rule in front of the
//! engine: the fragment protocol asks it before any byte of a write is buffered, and tells the
//! core when a fragment is durable.

use crate::{Action, EngineStore, NodeCore, StoreSource, WriteRefused};
use cess_consensus::codec::hex;
use cess_consensus::ledger::Event;
use cess_consensus::net::{FollowerHandle, TxClient};
use cess_consensus::tx::{FragmentId, Hash32};
use cess_consensus::{AccountKey, Call, Transaction};
use cess_proofs::CpuBackend;
use cess_transport::server::{FragmentStore, StoreFault};
use cess_transport::tagging::{TAG_PROTOCOL, request_tags};
use cess_transport::{Code, Endpoint, Limits, NodeAddr, NodeKey, PeerId, ProtocolError};
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};

/// Audits kept for `/status`, the newest last.
pub const AUDITS_SHOWN: usize = 16;
/// Fragments being tagged at once (each holds its bytes in memory).
const TAGGING_AT_ONCE: usize = 2;
/// Fragments being rebuilt at once (each holds `data_fragments` fragments and a segment: 72
/// MiB at 8 MiB fragments): fetching one overlaps decoding another (3 measured no faster on
/// two cores).
const REBUILDING_AT_ONCE: usize = 2;
/// How long one rebuild (its siblings fetched, the repair) may take.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one tagger may take to answer.
const TAG_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a tagger that has not seen the order yet is waited for.
const TAGGER_CATCH_UP: Duration = Duration::from_secs(20);
/// Times a tag request cut in transit is sent again before the next tagger is asked.
const TAG_CUTS_RETRIED: u32 = 2;

/// How long a submitted transaction is waited for before the core may send it again.
pub const INCLUSION_TIMEOUT: Duration = Duration::from_secs(30);

/// How a node or a client follows: at the tip it asks for the next block every 250 ms (a
/// put waits on several blocks; a request costs a validator one read of its block store).
pub fn follower_config() -> cess_consensus::follow::FollowerConfig {
    cess_consensus::follow::FollowerConfig {
        poll_ms: 250,
        ..cess_consensus::follow::FollowerConfig::default()
    }
}

/// The replica, the core and the queue of what the core asked for, shared by the store and
/// the driver tasks.
#[derive(Debug)]
pub struct ChainLink {
    follower: FollowerHandle,
    core: Mutex<NodeCore>,
    actions: mpsc::UnboundedSender<Action>,
    /// Self-repair reads served per peer in the current audit period: account → (period,
    /// reads). A miner rebuilds its own few lost fragments; one that dropped everything
    /// cannot rebuild it from its peers before every audit.
    repair_reads: Mutex<std::collections::HashMap<cess_consensus::AccountId, (u64, u32)>>,
}

/// Self-repair reads one peer may make of this node per audit period: a repairer needs
/// `data_fragments` reads spread over the segment's holders per fragment, so this lets a
/// miner rebuild a few dozen fragments per period from the whole network, never its store.
pub const REPAIR_READS_PER_PEER_PERIOD: u32 = 16;

/// What the driver did, for `/status` (the rest of the chain side is read from the replica:
/// [`ChainLink::summary`]).
#[derive(Debug, Clone, Default)]
pub struct LinkStatus {
    /// Idle files generated and stored; commit proofs and space proofs made; space audits
    /// that could not be answered (files missing or unreadable).
    pub idle_files_generated: u64,
    pub idle_commit_proofs: u64,
    pub idle_space_proofs: u64,
    pub idle_space_failures: u64,
    pub submitted: u64,
    pub included: u64,
    pub refused: u64,
    pub last_error: Option<String>,
    /// Fragments whose checked tags are kept.
    pub tags_kept: u64,
    /// Tag blobs refused by the check (a tagger that sent wrong tags).
    pub tags_refused: u64,
    /// Tag blob bytes received from taggers (checked or not).
    pub tag_bytes_in: u64,
    /// Fragments rebuilt from the network and stored (self-repairs and restorals).
    pub rebuilt: u64,
    /// Rebuilds that failed (too few siblings answered, or a store error).
    pub rebuilds_failed: u64,
    /// The last self-check (running or done).
    pub check: Option<CheckReport>,
    /// The last audits, newest last.
    pub audits: VecDeque<AuditRecord>,
    /// Every audit since start, counted.
    pub audit_totals: AuditTotals,
    /// Proof times and margins since start.
    pub audit_times: AuditHistograms,
}

/// This miner's entry in the registry, the figures an operator reads (not its fragment sets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinerFigures {
    pub declared_bytes: u64,
    /// Reserved by orders not yet stored.
    pub locked_bytes: u64,
    /// Reported stored.
    pub active_bytes: u64,
    pub collateral: u128,
    /// 0..=1000.
    pub reputation: u32,
}

/// Audits since the node started, by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditTotals {
    /// Proofs made and handed to the submitter.
    pub proved: u64,
    /// Challenges the node could not prove (a fragment missing or damaged in its store).
    pub failed: u64,
    pub valid: u64,
    pub invalid: u64,
    pub missed: u64,
    pub fragments_challenged: u64,
    pub blocks_challenged: u64,
    /// Tokens (smallest unit) rewarded, and taken as penalties.
    pub rewards: u128,
    pub penalties: u128,
}

/// Distributions of this node's proof times and of how early it submitted (a copy shares
/// the same histograms).
#[derive(Debug, Clone)]
pub struct AuditHistograms {
    pub prove_seconds: cess_http::metrics::prometheus_client::metrics::histogram::Histogram,
    /// Blocks between the proof's submission and its deadline.
    pub margin_blocks: cess_http::metrics::prometheus_client::metrics::histogram::Histogram,
}

impl Default for AuditHistograms {
    fn default() -> AuditHistograms {
        use cess_http::metrics::prometheus_client::metrics::histogram::{
            Histogram, exponential_buckets,
        };
        AuditHistograms {
            prove_seconds: cess_http::metrics::latency_histogram(),
            // 1 to 512 blocks.
            margin_blocks: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
        }
    }
}

/// One audit of this node: what was challenged, the proof, and what the chain decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub round: u64,
    /// The tagger's id, first 8 bytes in hex.
    pub tagger: String,
    pub deadline: u64,
    pub fragments: usize,
    pub blocks: usize,
    pub proof_bytes: usize,
    pub prove_ms: u64,
    /// Height of the replica when the proof was submitted.
    pub submitted_at: Option<u64>,
    /// `proving`, `submitted`, `valid`, `invalid: why`, `missed`, `failed: why`.
    pub result: String,
    /// Tokens (smallest unit) rewarded (positive) or taken (negative).
    pub reward: i128,
}

impl LinkStatus {
    /// Replaces the record of the same round and tagger, or adds it (a record pushed out of
    /// the last [`AUDITS_SHOWN`] meanwhile comes back).
    fn upsert_audit(&mut self, record: AuditRecord) {
        match self
            .audits
            .iter_mut()
            .find(|a| a.round == record.round && a.tagger == record.tagger)
        {
            // A verdict that arrived while proving stays.
            Some(existing) if existing.reward != 0 || existing.result == "valid" => {
                existing.proof_bytes = record.proof_bytes;
                existing.prove_ms = record.prove_ms;
                existing.submitted_at = record.submitted_at;
            }
            Some(existing) => *existing = record,
            None => self.record_audit(record),
        }
    }

    fn record_audit(&mut self, record: AuditRecord) {
        if self.audits.len() >= AUDITS_SHOWN {
            self.audits.pop_front();
        }
        self.audits.push_back(record);
    }

    /// The chain's verdict on this node's proof of `round` (every tagger of the round: a
    /// verdict event names the miner and round).
    fn verdict(&mut self, round: u64, result: &str, reward: i128) {
        let mut found = false;
        match result {
            "valid" => self.audit_totals.valid += 1,
            "missed" => self.audit_totals.missed += 1,
            _ => self.audit_totals.invalid += 1,
        }
        if reward >= 0 {
            self.audit_totals.rewards += reward as u128;
        } else {
            self.audit_totals.penalties += reward.unsigned_abs();
        }
        for audit in self.audits.iter_mut().filter(|a| a.round == round) {
            audit.result = result.to_string();
            audit.reward = reward;
            found = true;
        }
        if !found {
            self.record_audit(AuditRecord {
                round,
                tagger: String::new(),
                deadline: 0,
                fragments: 0,
                blocks: 0,
                proof_bytes: 0,
                prove_ms: 0,
                submitted_at: None,
                result: result.to_string(),
                reward,
            });
        }
    }
}

impl ChainLink {
    pub fn follower(&self) -> &FollowerHandle {
        &self.follower
    }

    /// The node's core (held only for a decision or a report, never across I/O).
    pub(crate) fn core(&self) -> &Mutex<NodeCore> {
        &self.core
    }

    /// Whether the chain lets `fragment_id` be written here now.
    pub fn check_write(&self, fragment_id: &FragmentId, len_bytes: u64) -> Result<(), String> {
        let status = self.follower.status();
        if let Some(e) = status.diverged {
            return Err(format!(
                "this node's ledger replica diverged ({e}); it stores nothing"
            ));
        }
        if !status.synced {
            return Err(format!(
                "this node has not caught up with the chain yet (at {}, {} behind)",
                status.height, status.behind
            ));
        }
        self.follower
            .with_ledger(|ledger| {
                self.core
                    .lock()
                    .expect("core lock")
                    .check_write(ledger, fragment_id, len_bytes)
            })
            .map_err(|e: WriteRefused| e.to_string())
    }

    /// Whether `peer` may connect: an account with standing on the chain ([`check_peer`]).
    pub fn check_peer(&self, peer: &PeerId) -> Result<(), String> {
        let status = self.follower.status();
        if let Some(e) = status.diverged {
            return Err(format!("this node's ledger replica diverged ({e})"));
        }
        let account = cess_consensus::net::account_of(peer)
            .ok_or_else(|| crate::ReadRefused::NotAnAccount.to_string())?;
        match self
            .follower
            .with_ledger(|ledger| crate::check_peer(ledger, &account))
        {
            Some(_) => Ok(()),
            None if !status.synced => Err(format!(
                "this node has not caught up with the chain yet (at {}, {} behind)",
                status.height, status.behind
            )),
            None => Err(
                "no standing on the chain: rent space, register as a miner, or be authorized \
                 by an owner"
                    .into(),
            ),
        }
    }

    /// Whether `reader` may read `fragment_id` from this node, by its replica ([`check_read`]).
    /// A replica that diverged allows nothing; one that is behind answers by what it knows.
    pub fn check_read(&self, reader: &PeerId, fragment_id: &FragmentId) -> Result<(), String> {
        let status = self.follower.status();
        if let Some(e) = status.diverged {
            return Err(format!(
                "this node's ledger replica diverged ({e}); it serves nothing"
            ));
        }
        let account = cess_consensus::net::account_of(reader)
            .ok_or_else(|| crate::ReadRefused::NotAnAccount.to_string())?;
        let checked = self.follower.with_ledger(|ledger| {
            crate::check_read(ledger, &account, fragment_id)
                .map(|right| (right, ledger.height() / ledger.params().audit_period_blocks))
        });
        if let Ok((crate::ReadRight::Repairer, period)) = checked {
            return self.charge_repair_read(account, period);
        }
        checked.map(|_| ()).map_err(|e| match e {
            crate::ReadRefused::UnknownFragment if !status.synced => format!(
                "{e}; this node has not caught up with the chain yet (at {}, {} behind)",
                status.height, status.behind
            ),
            e => e.to_string(),
        })
    }

    /// One self-repair read by `account` in audit period `period`, within
    /// [`REPAIR_READS_PER_PEER_PERIOD`]. The map holds one entry per miner that repaired
    /// from here (miners cost collateral); entries of past periods go when it grows.
    fn charge_repair_read(
        &self,
        account: cess_consensus::AccountId,
        period: u64,
    ) -> Result<(), String> {
        let mut reads = self.repair_reads.lock().expect("repair reads lock");
        if reads.len() > 4096 {
            reads.retain(|_, (p, _)| *p == period);
        }
        let entry = reads.entry(account).or_insert((period, 0));
        if entry.0 != period {
            *entry = (period, 0);
        }
        if entry.1 >= REPAIR_READS_PER_PEER_PERIOD {
            return Err(format!(
                "this peer made its {REPAIR_READS_PER_PEER_PERIOD} self-repair reads of this \
                 audit period here; it reports the rest lost"
            ));
        }
        entry.1 += 1;
        Ok(())
    }

    /// The store holds `fragment_id` durably: its tags come next.
    fn durable(&self, fragment_id: FragmentId, len_bytes: u64) {
        let actions = self.follower.with_ledger(|ledger| {
            self.core
                .lock()
                .expect("core lock")
                .on_durable(ledger, fragment_id, len_bytes)
        });
        self.queue(actions);
    }

    /// The fragment's checked tags are kept with it.
    fn tagged(&self, fragment_id: FragmentId, len_bytes: u64) {
        let actions = self.follower.with_ledger(|ledger| {
            self.core
                .lock()
                .expect("core lock")
                .on_stored(ledger, fragment_id, len_bytes)
        });
        self.queue(actions);
    }

    /// This node's account.
    /// This node's figures in the miner registry (none before it registers) and the chain's
    /// collateral floor.
    pub fn miner(&self) -> (Option<MinerFigures>, u128) {
        let me = self.me();
        self.follower.with_ledger(|ledger| {
            (
                ledger.miner(&me).map(|m| MinerFigures {
                    declared_bytes: m.declared_bytes,
                    locked_bytes: m.locked_bytes,
                    active_bytes: m.active_bytes,
                    collateral: m.collateral,
                    reputation: m.reputation,
                }),
                ledger.params().miner_collateral_min,
            )
        })
    }

    pub(crate) fn me(&self) -> cess_consensus::AccountId {
        self.core.lock().expect("core lock").identity().account
    }

    /// The operator asks for a self-check: whether one started (false: one is running).
    pub fn request_check(&self, proof: bool) -> bool {
        let action = self.follower.with_ledger(|ledger| {
            self.core
                .lock()
                .expect("core lock")
                .on_check_requested(ledger, proof)
        });
        let started = action.is_some();
        self.queue(action.into_iter().collect());
        started
    }

    /// A rebuild failed: the core decides what next (see `NodeCore::on_rebuild_failed`).
    fn rebuild_failed(&self, fragment_id: &FragmentId, permanent: bool) {
        let actions = self.follower.with_ledger(|ledger| {
            self.core
                .lock()
                .expect("core lock")
                .on_rebuild_failed(ledger, fragment_id, permanent)
        });
        self.queue(actions);
    }

    fn on_proof_failed(&self) {
        let actions = self
            .follower
            .with_ledger(|ledger| self.core.lock().expect("core lock").on_proof_failed(ledger));
        self.queue(actions);
    }

    fn on_block(&self) {
        let actions = self
            .follower
            .with_ledger(|ledger| self.core.lock().expect("core lock").on_block(ledger));
        self.queue(actions);
    }

    pub(crate) fn queue(&self, actions: Vec<Action>) {
        for action in actions {
            // The receiver lives as long as the driver; after shutdown nothing is done.
            let _ = self.actions.send(action);
        }
    }

    /// (registered, fragments assigned here, fragments the core knows stored and tagged,
    /// fragments durable and waiting for their tags).
    pub fn summary(&self) -> (bool, u64, u64, u64) {
        self.follower.with_ledger(|ledger| {
            let core = self.core.lock().expect("core lock");
            let me = core.identity().account;
            (
                ledger.miner(&me).is_some(),
                ledger.assigned_to(&me).count() as u64,
                core.stored().len() as u64,
                core.untagged_count() as u64,
            )
        })
    }
}

/// The engine behind the fragment protocol, with the chain rule in front.
#[derive(Debug, Clone)]
pub struct ChainStore {
    pub engine: EngineStore,
    pub link: Arc<ChainLink>,
}

impl FragmentStore for ChainStore {
    type WriteBuf = <EngineStore as FragmentStore>::WriteBuf;
    type ReadBuf = <EngineStore as FragmentStore>::ReadBuf;

    fn admit(&self, _writer: &PeerId, id: &FragmentId, fragment_bytes: u64) -> Result<(), String> {
        self.link.check_write(id, fragment_bytes)
    }

    // The replica's lock is held while it checks and applies a block.
    const CHECKS_MAY_WAIT: bool = true;

    fn admit_peer(&self, peer: &PeerId) -> Result<(), String> {
        self.link.check_peer(peer)
    }

    fn may_read(&self, reader: &PeerId, id: &FragmentId) -> Result<(), String> {
        self.link.check_read(reader, id)
    }

    fn alloc(&self, len_bytes: usize) -> Self::WriteBuf {
        self.engine.alloc(len_bytes)
    }

    fn fragment_bytes_max(&self) -> u64 {
        self.engine.fragment_bytes_max()
    }

    async fn len_of(&self, id: FragmentId) -> Result<Option<u64>, StoreFault> {
        let len = self.engine.len_of(id).await?;
        if let Some(len_bytes) = len {
            // A resumed upload of a fragment already here: the core learns (again) that it
            // is durable, so a report lost in a restart is made.
            self.link.durable(id, len_bytes);
        }
        Ok(len)
    }

    async fn put(&self, id: FragmentId, data: Self::WriteBuf) -> Result<(), StoreFault> {
        let len_bytes = data.len() as u64;
        // A store full of idle files gives one up for the user's fragment, in one step.
        match crate::idle_io::make_room(&self.link, &self.engine, id, &data).await {
            Ok(true) => {
                self.link.durable(id, len_bytes);
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("making room for fragment {}: {e}", id),
        }
        self.engine.put(id, data).await?;
        // Durable now (the engine acknowledges after its journal commit).
        self.link.durable(id, len_bytes);
        Ok(())
    }

    async fn read(
        &self,
        id: FragmentId,
        offset: u64,
        len_bytes: u64,
    ) -> Result<Self::ReadBuf, StoreFault> {
        self.engine.read(id, offset, len_bytes).await
    }
}

/// Starts the driver: the core's decisions after every block, deletions in the store,
/// transactions signed with `key` and sent to `validators`. Must run inside a tokio runtime.
pub fn start(
    follower: FollowerHandle,
    core: NodeCore,
    engine: EngineStore,
    key: Arc<NodeKey>,
    validators: Vec<NodeAddr>,
    taggers: Vec<NodeAddr>,
    status: Arc<Mutex<LinkStatus>>,
) -> Arc<ChainLink> {
    assert!(
        !validators.is_empty(),
        "a node follows at least one validator"
    );
    let bind: std::net::SocketAddr = if taggers.first().is_none_or(|t| t.socket.is_ipv4()) {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let tag_endpoint =
        match Endpoint::client_for(TAG_PROTOCOL, key.clone(), bind, Limits::default()) {
            Ok(endpoint) => Some(endpoint),
            Err(e) => {
                record_error(&status, format!("no endpoint to reach taggers: {e}"));
                None
            }
        };
    let tagging = Tagging {
        endpoint: tag_endpoint,
        taggers,
        slots: Arc::new(Semaphore::new(TAGGING_AT_ONCE)),
    };
    // Reads from other miners (rebuilds), as this node's account.
    let fragment_client = match Endpoint::client(key.clone(), bind, Limits::default()) {
        Ok(endpoint) => Some(Arc::new(cess_transport::Client::new(
            endpoint,
            cess_transport::ClientConfig::default(),
        ))),
        Err(e) => {
            record_error(&status, format!("no endpoint to reach other miners: {e}"));
            None
        }
    };
    let rebuilding = Rebuilding {
        client: fragment_client,
        slots: Arc::new(Semaphore::new(REBUILDING_AT_ONCE)),
        in_flight: Arc::default(),
    };
    let (actions_tx, mut actions_rx) = mpsc::unbounded_channel();
    let link = Arc::new(ChainLink {
        follower,
        core: Mutex::new(core),
        actions: actions_tx,
        repair_reads: Mutex::new(std::collections::HashMap::new()),
    });
    let (calls_tx, calls_rx) = mpsc::unbounded_channel();
    // Decisions after every block, once the replica is at the tip.
    {
        let link = link.clone();
        let status_for_blocks = status.clone();
        let mut applied = link.follower.applied();
        tokio::spawn(async move {
            if link
                .follower
                .wait_synced(Duration::from_secs(3600 * 24 * 365))
                .await
                .is_err()
            {
                return;
            }
            link.on_block();
            let me = link.me();
            loop {
                match applied.recv().await {
                    Ok(block) => {
                        record_verdicts(&status_for_blocks, &me, &block.outcome.events);
                        let failed = block.outcome.events.iter().any(
                            |e| matches!(e, Event::ProofInvalid { miner, .. } if *miner == me),
                        );
                        if failed {
                            link.on_proof_failed();
                        }
                        link.on_block()
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => link.on_block(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    tokio::spawn(watch_scrub(link.clone(), engine.clone(), status.clone()));
    // Actions: deletions, tagging and proofs here, calls to the submitter.
    {
        let link = link.clone();
        let status = status.clone();
        tokio::spawn(async move {
            while let Some(action) = actions_rx.recv().await {
                match action {
                    Action::Submit(call) => {
                        let _ = calls_tx.send(call);
                    }
                    Action::Tag {
                        fragment_id,
                        len_bytes,
                        tagger,
                    } => {
                        tokio::spawn(tag_fragment(
                            link.clone(),
                            engine.clone(),
                            tagging.clone(),
                            status.clone(),
                            fragment_id,
                            len_bytes,
                            tagger,
                        ));
                    }
                    Action::Prove {
                        round,
                        tagger,
                        deadline,
                    } => {
                        tokio::spawn(prove_audit(
                            link.clone(),
                            engine.clone(),
                            calls_tx.clone(),
                            status.clone(),
                            round,
                            tagger,
                            deadline,
                        ));
                    }
                    Action::Rebuild { fragment_id, own } => {
                        // Asked again while still queued or running: the task in flight
                        // answers for both.
                        if let Some(in_flight) = rebuilding.begin(fragment_id) {
                            tokio::spawn(rebuild_fragment(
                                link.clone(),
                                engine.clone(),
                                rebuilding.clone(),
                                status.clone(),
                                (fragment_id, in_flight),
                                own,
                            ));
                        }
                    }
                    Action::Check { proof } => {
                        tokio::spawn(check_store(
                            link.clone(),
                            engine.clone(),
                            status.clone(),
                            proof,
                        ));
                    }
                    Action::GenerateIdle { first_file } => {
                        tokio::spawn(crate::idle_io::generate(
                            link.clone(),
                            engine.clone(),
                            status.clone(),
                            first_file,
                        ));
                    }
                    Action::ProveIdleCommit { first_file } => {
                        tokio::spawn(crate::idle_io::prove_set(
                            link.clone(),
                            calls_tx.clone(),
                            status.clone(),
                            first_file,
                        ));
                    }
                    Action::ProveSpace {
                        round, first_file, ..
                    } => {
                        tokio::spawn(crate::idle_io::prove_space_audit(
                            link.clone(),
                            engine.clone(),
                            calls_tx.clone(),
                            status.clone(),
                            round,
                            first_file,
                        ));
                    }
                    Action::Delete(id) => match engine.0.delete(id).await {
                        Ok(_) => {
                            link.core.lock().expect("core lock").on_deleted(&id);
                            tracing::info!(fragment = %id.to_hex(), "deleted: the chain no longer assigns it here");
                        }
                        Err(e) => {
                            link.core.lock().expect("core lock").on_delete_failed(&id);
                            tracing::warn!(fragment = %id.to_hex(), "delete failed (asked again next block): {e}");
                        }
                    },
                }
            }
        });
    }
    tokio::spawn(submit_loop(link.clone(), key, validators, calls_rx, status));
    link
}

/// How often the background scrub's findings are looked at.
const SCRUB_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// The scheduled self-check: fragments the engine's background scrub (budgeted, resumable,
/// its progress in `/metrics`) found corrupt are dropped and handed to the core as missing,
/// so the node rebuilds them or reports them lost before an audit finds them.
async fn watch_scrub(link: Arc<ChainLink>, engine: EngineStore, status: Arc<Mutex<LinkStatus>>) {
    let mut handled = BTreeSet::new();
    loop {
        tokio::time::sleep(SCRUB_WATCH_INTERVAL).await;
        let store = engine.0.clone();
        let Ok(Ok(progress)) = tokio::task::spawn_blocking(move || store.scrub_progress()).await
        else {
            continue;
        };
        let held = |key: &FragmentId| {
            link.core
                .lock()
                .expect("core lock")
                .stored()
                .contains_key(key)
        };
        for key in newly_corrupt(&mut handled, &progress.corrupt, held) {
            record_error(
                &status,
                format!("scrub: fragment {} is corrupt; dropped to be rebuilt", key),
            );
            let _ = engine.0.delete(key).await;
            link.core.lock().expect("core lock").on_missing(&key);
        }
    }
}

/// The fragments of the engine's corrupt list (`corrupt`) the core holds (`held`) and that
/// are not handled yet, now marked handled; `handled` keeps those still on the list. The
/// engine takes a fragment off the list when it is deleted, so one rebuilt under the same id
/// and found corrupt again is handled again (a set that only grew would ignore a second
/// corruption for the life of the process); one not held yet (its tags on the way) is looked
/// at again next time.
fn newly_corrupt(
    handled: &mut BTreeSet<FragmentId>,
    corrupt: &[FragmentId],
    held: impl Fn(&FragmentId) -> bool,
) -> Vec<FragmentId> {
    let listed: BTreeSet<FragmentId> = corrupt.iter().copied().collect();
    handled.retain(|key| listed.contains(key));
    let new: Vec<FragmentId> = listed
        .into_iter()
        .filter(|key| !handled.contains(key) && held(key))
        .collect();
    handled.extend(new.iter().copied());
    new
}

/// How the node reaches other miners to rebuild fragments.
#[derive(Debug, Clone)]
struct Rebuilding {
    client: Option<Arc<cess_transport::Client>>,
    slots: Arc<Semaphore>,
    /// Fragments with a rebuild queued or running. The core asks again for a fragment not
    /// stored within `RESUBMIT_BLOCKS`, which a rebuild still waiting for its slot has not;
    /// a second task for it would fetch and repair it twice, and fail once the first has
    /// completed (its siblings no longer serve a miner that holds it).
    in_flight: Arc<Mutex<BTreeSet<FragmentId>>>,
}

impl Rebuilding {
    /// Marks `fragment_id` in flight; `None` when it already is.
    fn begin(&self, fragment_id: FragmentId) -> Option<InFlight> {
        let mut in_flight = self.in_flight.lock().expect("rebuilds lock");
        in_flight.insert(fragment_id).then(|| InFlight {
            set: self.in_flight.clone(),
            fragment_id,
        })
    }
}

/// A rebuild in flight, forgotten when its task ends whichever way.
struct InFlight {
    set: Arc<Mutex<BTreeSet<FragmentId>>>,
    fragment_id: FragmentId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .expect("rebuilds lock")
            .remove(&self.fragment_id);
    }
}

/// Rebuilds `fragment_id` (its own lost fragment, or a restoral it claimed) from the network
/// and stores it; from there it goes the way of any durable fragment (tags, then the report
/// or `CompleteRestoral`). A failure is logged once here and handed to the core.
async fn rebuild_fragment(
    link: Arc<ChainLink>,
    engine: EngineStore,
    rebuilding: Rebuilding,
    status: Arc<Mutex<LinkStatus>>,
    (fragment_id, _in_flight): (FragmentId, InFlight),
    own: bool,
) {
    let Ok(_slot) = rebuilding.slots.clone().acquire_owned().await else {
        return;
    };
    let name = fragment_id;
    let Some(client) = &rebuilding.client else {
        // No endpoint (logged at start): a failure like any other, so an own fragment is
        // reported lost rather than waited for.
        link.rebuild_failed(&fragment_id, false);
        return;
    };
    let what = if own { "self-repair" } else { "restoral" };
    let me = link.me();
    let plan = link
        .follower
        .with_ledger(|l| crate::restore::plan(l, &me, &fragment_id));
    let started = Instant::now();
    let result = match plan {
        // Bounded: a sibling that trickles its bytes would otherwise hold this slot, and the
        // fragment's place in flight, for ever.
        Ok(plan) => tokio::time::timeout(REBUILD_TIMEOUT, crate::restore::rebuild(client, &plan))
            .await
            .unwrap_or(Err(crate::restore::RestoreError::TimedOut {
                seconds: REBUILD_TIMEOUT.as_secs(),
            })),
        Err(e) => Err(e),
    };
    let permanent = matches!(&result, Err(e) if e.is_permanent());
    let stored = match result {
        Ok(bytes) => {
            let len_bytes = bytes.len() as u64;
            let mut buf = engine.alloc(bytes.len());
            buf[..bytes.len()].copy_from_slice(&bytes);
            drop(bytes);
            match engine.put(fragment_id, buf).await {
                Ok(()) => Ok(len_bytes),
                Err(e) => Err(format!("storing it: {e:?}")),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    match stored {
        Ok(len_bytes) => {
            tracing::info!(
                fragment = %name,
                "{what}: rebuilt and stored in {} ms",
                started.elapsed().as_millis()
            );
            status.lock().expect("status lock").rebuilt += 1;
            link.durable(fragment_id, len_bytes);
        }
        Err(e) => {
            record_error(&status, format!("{what} of fragment {name}: {e}"));
            status.lock().expect("status lock").rebuilds_failed += 1;
            link.rebuild_failed(&fragment_id, permanent);
        }
    }
}

/// Reads the whole store back (after a failed proof, or asked by the operator), with its
/// progress in `status.check`; a fragment that fails is dropped and the core told it is
/// missing (it is rebuilt or reported lost from the next block).
async fn check_store(
    link: Arc<ChainLink>,
    engine: EngineStore,
    status: Arc<Mutex<LinkStatus>>,
    proof: bool,
) {
    let fragments: Vec<(FragmentId, u64)> = link
        .core
        .lock()
        .expect("core lock")
        .stored()
        .iter()
        .map(|(id, len)| (*id, *len))
        .collect();
    status.lock().expect("status lock").check = Some(CheckReport {
        started_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        with_proof: proof,
        fragments_total: fragments.len() as u64,
        ..CheckReport::default()
    });
    for (id, len_bytes) in fragments {
        let tagger = if proof {
            link.follower.with_ledger(|l| {
                let (file_id, _, _) = l.fragment_place(&id)?;
                l.tagger_key(&l.file(&file_id)?.tagger).cloned()
            })
        } else {
            None
        };
        // A fragment the chain no longer places (its file deleted meanwhile) is the
        // core's to delete, not the check's: its tags are not checked.
        let result = crate::restore::check_fragment(&engine, id, len_bytes, tagger).await;
        use crate::restore::Checked;
        let failure = match &result {
            Checked::Good => None,
            Checked::Bad(why) | Checked::BadTags(why) => Some(why.clone()),
            Checked::StoreFault(why) => {
                record_error(
                    &status,
                    format!("self-check stopped: the store failed ({why}); nothing dropped"),
                );
                break;
            }
        };
        {
            let mut s = status.lock().expect("status lock");
            let report = s.check.as_mut().expect("set above");
            report.fragments_checked += 1;
            report.bytes_checked += len_bytes;
            if let Some(why) = &failure {
                report.failed_count += 1;
                if report.failed.len() < CHECK_FAILURES_SHOWN {
                    report.failed.push((id.to_hex(), why.clone()));
                }
            }
        }
        match result {
            Checked::Bad(why) => {
                record_error(
                    &status,
                    format!("self-check: fragment {} {why}; dropped to be rebuilt", id),
                );
                let _ = engine.0.delete(id).await;
                link.core.lock().expect("core lock").on_missing(&id);
            }
            Checked::BadTags(why) => {
                record_error(
                    &status,
                    format!(
                        "self-check: fragment {} {why}; its tags are asked for again",
                        id
                    ),
                );
                link.core.lock().expect("core lock").on_tags_bad(&id);
            }
            Checked::Good | Checked::StoreFault(_) => {}
        }
    }
    {
        let mut s = status.lock().expect("status lock");
        let report = s.check.as_mut().expect("set above");
        report.done = true;
        tracing::info!(
            "self-check{}: {} fragments read back, {} failed",
            if proof { " with proofs" } else { "" },
            report.fragments_checked,
            report.failed_count
        );
    }
    link.core.lock().expect("core lock").on_checked();
}

/// Failed fragments a check report names (the count covers the rest).
const CHECK_FAILURES_SHOWN: usize = 64;

/// A self-check's progress and findings, for `/status` and `cess node check`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub started_unix_s: u64,
    pub with_proof: bool,
    pub done: bool,
    pub fragments_total: u64,
    pub fragments_checked: u64,
    pub bytes_checked: u64,
    pub failed_count: u64,
    /// The first failed fragments: (id in hex, why).
    pub failed: Vec<(String, String)>,
}

/// How the node reaches taggers.
#[derive(Debug, Clone)]
struct Tagging {
    endpoint: Option<Endpoint>,
    taggers: Vec<NodeAddr>,
    slots: Arc<Semaphore>,
}

/// Gets `fragment_id`'s tags from a tagger, checks them against the public key the ledger
/// has for `tagger`, keeps them with the fragment and tells the core. A tagger that answers
/// wrong tags is named and the next one is asked; when none gives good tags the core asks
/// again later, and the column is never reported without them.
async fn tag_fragment(
    link: Arc<ChainLink>,
    engine: EngineStore,
    tagging: Tagging,
    status: Arc<Mutex<LinkStatus>>,
    fragment_id: FragmentId,
    len_bytes: u64,
    tagger: Hash32,
) {
    let Ok(_slot) = tagging.slots.clone().acquire_owned().await else {
        return;
    };
    let Some(endpoint) = &tagging.endpoint else {
        return;
    };
    let name = fragment_id;
    let Some(public) = link
        .follower
        .with_ledger(|l| l.tagger_key(&tagger).cloned())
    else {
        record_error(
            &status,
            format!("fragment {name}: its tagger is not on the chain"),
        );
        return;
    };
    let data = match engine.0.read(fragment_id, 0, len_bytes).await {
        Ok(data) => Arc::new(data.to_vec()),
        Err(e) => {
            record_error(&status, format!("fragment {name}: reading it to tag: {e}"));
            return;
        }
    };
    let Some(blob) = fetch_checked_tags(
        endpoint,
        &tagging.taggers,
        &public,
        fragment_id,
        data,
        &status,
    )
    .await
    else {
        return;
    };
    if let Err(e) = engine.0.set_meta(fragment_id, &blob).await {
        record_error(&status, format!("keeping the tags of {name}: {e}"));
        return;
    }
    status.lock().expect("status lock").tags_kept += 1;
    link.tagged(fragment_id, len_bytes);
}

/// Asks `taggers` in turn for the tags of `fragment_id` (`data` its bytes) and returns the
/// first blob that passes the check against `public`, the key the ledger has for the order's
/// tagger. A tagger that refuses because it has not seen the order yet is asked again for a
/// while; one that sends tags failing the check is named in the log and counted in
/// `status.tags_refused`, and the next is asked. `None` when no tagger gave good tags.
pub async fn fetch_checked_tags(
    endpoint: &Endpoint,
    taggers: &[NodeAddr],
    public: &cess_proofs::PublicKey,
    fragment_id: FragmentId,
    data: Arc<Vec<u8>>,
    status: &Mutex<LinkStatus>,
) -> Option<Vec<u8>> {
    let name = fragment_id;
    if taggers.is_empty() {
        record_error(
            status,
            format!("fragment {name}: no tagger addresses configured (`taggers` in node.toml)"),
        );
        return None;
    }
    for addr in taggers {
        let started = Instant::now();
        let mut cut = 0;
        let blob = loop {
            match request_tags(endpoint, addr, fragment_id, &data, TAG_TIMEOUT).await {
                Ok(blob) => break Some(blob),
                // The tagger has not applied the order yet, or has no room now.
                Err(ProtocolError::Refused {
                    code: Code::Busy,
                    detail,
                }) if started.elapsed() < TAGGER_CATCH_UP => {
                    tracing::debug!("tagger {addr} refused fragment {name} for now: {detail}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                // A stream cut or a connection lost (a tagger under load cuts a stream that
                // stalls): asked again at once, a few times, so that the fragment's column
                // is not held back until the core's next turn, blocks later.
                Err(e) if e.is_retryable() && cut < TAG_CUTS_RETRIED => {
                    cut += 1;
                    tracing::debug!("tagger {addr}, fragment {name}: {e}; asking again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    record_error(status, format!("tagger {addr}, fragment {name}: {e}"));
                    break None;
                }
            }
        };
        let Some(blob) = blob else {
            continue;
        };
        status.lock().expect("status lock").tag_bytes_in += blob.len() as u64;
        let (data_ref, blob_ref, public_ref) = (data.clone(), blob.clone(), public.clone());
        let checked = tokio::task::spawn_blocking(move || {
            cess_proofs::check_tags(
                &public_ref,
                &fragment_id,
                &data_ref,
                &blob_ref,
                rand::random(),
                &CpuBackend,
            )
        })
        .await;
        match checked {
            Ok(Ok(_)) => return Some(blob),
            Ok(Err(e)) => {
                tracing::warn!(
                    "tagger {addr} sent tags for fragment {name} that fail the check: {e}; \
                     asking another"
                );
                let mut s = status.lock().expect("status lock");
                s.tags_refused += 1;
                s.last_error = Some(format!("tagger {addr}: wrong tags for {name}: {e}"));
            }
            Err(e) => record_error(status, format!("checking tags of {name}: {e}")),
        }
    }
    None
}

/// Proves the audit of `round` for `tagger` from the store (the challenge derived from the
/// node's own replica) and hands the proof to the submitter.
async fn prove_audit(
    link: Arc<ChainLink>,
    engine: EngineStore,
    calls: mpsc::UnboundedSender<Call>,
    status: Arc<Mutex<LinkStatus>>,
    round: u64,
    tagger: Hash32,
    deadline: u64,
) {
    let me = link.me();
    let (challenge, public) = link.follower.with_ledger(|l| {
        (
            l.challenge(round, &me, &tagger),
            l.tagger_key(&tagger).cloned(),
        )
    });
    let (Some(challenge), Some(public)) = (challenge, public) else {
        return;
    };
    let mut record = AuditRecord {
        round,
        tagger: hex(&tagger[..8]),
        deadline,
        fragments: challenge.fragments().len(),
        blocks: challenge.block_total(),
        proof_bytes: 0,
        prove_ms: 0,
        submitted_at: None,
        result: "proving".into(),
        reward: 0,
    };
    status
        .lock()
        .expect("status lock")
        .upsert_audit(record.clone());
    let started = Instant::now();
    let store = engine.0.clone();
    let proved = tokio::task::spawn_blocking(move || {
        cess_proofs::prove(&public, &challenge, &mut StoreSource(&store), &CpuBackend)
    })
    .await;
    record.prove_ms = started.elapsed().as_millis() as u64;
    let height = link.follower.status().height;
    match proved {
        Ok(Ok((proof, _))) => {
            let proof = proof.encode();
            record.proof_bytes = proof.len();
            record.submitted_at = Some(height);
            record.result = "submitted".into();
            tracing::info!(
                "audit round {round}: proved {} blocks in {} ms, {} blocks before the deadline",
                record.blocks,
                record.prove_ms,
                deadline.saturating_sub(height)
            );
            let _ = calls.send(Call::SubmitProof {
                round,
                tagger,
                proof,
            });
        }
        Ok(Err(e)) => {
            record.result = format!("failed: {e}");
            tracing::warn!("audit round {round}: cannot prove: {e}");
        }
        Err(e) => record.result = format!("failed: {e}"),
    }
    {
        let mut s = status.lock().expect("status lock");
        if record.result == "submitted" {
            s.audit_totals.proved += 1;
            s.audit_times
                .prove_seconds
                .observe(record.prove_ms as f64 / 1e3);
            s.audit_times
                .margin_blocks
                .observe(deadline.saturating_sub(height) as f64);
        } else {
            s.audit_totals.failed += 1;
        }
        s.audit_totals.fragments_challenged += record.fragments as u64;
        s.audit_totals.blocks_challenged += record.blocks as u64;
        s.upsert_audit(record);
    }
}

/// This node's audit verdicts in a block's events.
fn record_verdicts(status: &Mutex<LinkStatus>, me: &cess_consensus::AccountId, events: &[Event]) {
    for event in events {
        let (round, result, reward) = match event {
            Event::ProofValid {
                round,
                miner,
                reward,
            } if miner == me => (*round, "valid".to_string(), *reward as i128),
            Event::ProofInvalid {
                round,
                miner,
                penalty,
                reason,
            } if miner == me => (*round, format!("invalid: {reason}"), -(*penalty as i128)),
            Event::ProofMissing {
                round,
                miner,
                penalty,
            } if miner == me => (*round, "missed".to_string(), -(*penalty as i128)),
            _ => continue,
        };
        tracing::info!("audit round {round}: {result}");
        status
            .lock()
            .expect("status lock")
            .verdict(round, &result, reward);
    }
}

/// Sends the core's calls, as many as are queued at once with consecutive nonces from the
/// replica's, and waits for each to be included. A call that was not taken is sent again by
/// the core after `RESUBMIT_BLOCKS`.
async fn submit_loop(
    link: Arc<ChainLink>,
    key: Arc<NodeKey>,
    validators: Vec<NodeAddr>,
    mut calls: mpsc::UnboundedReceiver<Call>,
    status: Arc<Mutex<LinkStatus>>,
) {
    let Some(account) = AccountKey::from_libp2p(key.keypair()) else {
        tracing::error!("the node key is not Ed25519; it cannot sign transactions");
        return;
    };
    let mut client: Option<TxClient> = None;
    let mut next_validator = 0usize;
    while let Some(first) = calls.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = calls.try_recv() {
            batch.push(more);
        }
        let txs: Vec<Transaction> = link.follower.with_ledger(|ledger| {
            let nonce = ledger.account(&account.id()).nonce;
            batch
                .into_iter()
                .enumerate()
                .map(|(i, call)| ledger.transaction_with_nonce(&account, nonce + i as u64, call))
                .collect()
        });
        let mut waits: Vec<_> = txs.iter().map(|_| link.follower.applied()).collect();
        let mut sent = false;
        for _ in 0..validators.len() {
            if client.is_none() {
                let validator = &validators[next_validator % validators.len()];
                match TxClient::connect(key.clone(), validator).await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        record_error(&status, format!("validator {validator}: {e}"));
                        next_validator += 1;
                        continue;
                    }
                }
            }
            match client.as_mut().expect("connected above").send(&txs).await {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(e) => {
                    record_error(&status, format!("sending transactions: {e}"));
                    client = None;
                    next_validator += 1;
                }
            }
        }
        if !sent {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        status.lock().expect("status lock").submitted += txs.len() as u64;
        for (tx, blocks) in txs.iter().zip(waits.iter_mut()) {
            let what = tx.call.name();
            match FollowerHandle::wait_for_inclusion(blocks, tx, INCLUSION_TIMEOUT).await {
                Ok(height) => {
                    tracing::info!("{what} included at height {height}");
                    status.lock().expect("status lock").included += 1;
                }
                Err(e) => {
                    tracing::warn!("{what}: {e}");
                    let mut s = status.lock().expect("status lock");
                    s.refused += 1;
                    s.last_error = Some(format!("{what}: {e}"));
                }
            }
        }
    }
}

fn record_error(status: &Mutex<LinkStatus>, message: String) {
    tracing::warn!("{message}");
    status.lock().expect("status lock").last_error = Some(message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fragment_corrupt_again_after_its_rebuild_is_handled_again() {
        let (a, b) = (FragmentId([1; 32]), FragmentId([2; 32]));
        let all = |_: &FragmentId| true;
        let mut handled = BTreeSet::new();
        assert_eq!(newly_corrupt(&mut handled, &[a], all), vec![a]);
        // Still listed (its delete not applied yet): not handled twice.
        assert_eq!(newly_corrupt(&mut handled, &[a, b], all), vec![b]);
        // Deleted: off the engine's list, and forgotten here.
        assert_eq!(newly_corrupt(&mut handled, &[b], all), vec![]);
        assert_eq!(newly_corrupt(&mut handled, &[], all), vec![]);
        // Rebuilt under the same id, corrupt again: handled again.
        assert_eq!(newly_corrupt(&mut handled, &[a], all), vec![a]);
        // Not held yet (tags on the way): looked at again once it is.
        let mut handled = BTreeSet::new();
        assert_eq!(newly_corrupt(&mut handled, &[b], |_| false), vec![]);
        assert_eq!(newly_corrupt(&mut handled, &[b], all), vec![b]);
    }
}
