// Long file: the deterministic simulator and its fault models.
//! A deterministic simulation of a validator network in one process: every validator is a
//! real [`Core`] (Malachite, the ledger, real BLS signatures); the network between them is
//! simulated with a seeded RNG: delays, drops, partitions that heal, Byzantine validators
//! that equivocate proposals, double-vote or withhold votes, and honest validators that crash
//! and restart from their disks: a block store (durable at commit, as the driver's) and a
//! write-ahead log on a [`SimMedium`] that loses what was not synced. The same seed replays
//! the same run. After every commit the simulator checks that no two validators finalized
//! different blocks at one height and that equal heights have equal state roots; it counts
//! every pair of conflicting votes or proposals an honest validator signed.

use crate::bft::Timeout;
use crate::bft::{
    Block, BlockHash, BlockValue, Cess, Core, CoreConfig, NetMsg, Output, Proposal, StepTimeouts,
};
use crate::keys::{AccountId, AccountKey, ValidatorKey};
use crate::ledger::{Genesis, GenesisValidator, Ledger, LedgerParams, TOKEN};
use crate::tx::{Call, Hash32, VerifiedTx};
use crate::wal::{SimMedium, Wal};
use arc_malachitebft_core_types::{NilOrVal, SignedMessage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// How a Byzantine validator misbehaves (its core runs the protocol; the simulator tampers
/// with what it sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Byzantine {
    /// When it proposes, half of the validators get one block and half another.
    EquivocateProposals,
    /// Every vote it casts, it also casts the opposite way, each to half of the validators.
    DoubleVote,
    /// It never sends its votes.
    WithholdVotes,
    /// Its blocks claim a time an hour ahead of the clock.
    FutureTime,
    /// When it proposes, it sends (as a fresh proposal) a block another validator made for
    /// this height in an earlier round, with that validator's VRF output, if it has seen one.
    ForeignBlock,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub validators: usize,
    /// Validator index → behaviour.
    pub byzantine: Vec<(usize, Byzantine)>,
    pub seed: u64,
    /// One-way delay, uniform in this range.
    pub delay_ms: (u64, u64),
    /// Share of messages lost, per mille.
    pub drop_permille: u32,
    /// A transfer is submitted to a random validator this often (0: none).
    pub tx_every_ms: u64,
    /// An adversarial client acts this often (0: none): see [`Adversary`].
    pub adversary_every_ms: u64,
    /// [`CoreConfig::empty_block_interval_ms`] of every validator (0: none).
    pub empty_block_interval_ms: u64,
    pub params: LedgerParams,
    /// An honest validator crashes this often (0: never), while fewer than f validators
    /// (Byzantine ones included) are down or Byzantine; it restarts after a time uniform in
    /// `down_ms`, from its block store and, with `wal`, its write-ahead log.
    pub crash_every_ms: u64,
    pub down_ms: (u64, u64),
    /// Validators keep a write-ahead log (off: a restart forgets its votes, which the
    /// conflict count shows).
    pub wal: bool,
    /// Genesis candidates beyond `validators` (the ledger elects `validators` of them all):
    /// nodes outside the set are sent no consensus messages, as over QUIC, and follow by
    /// asking members for blocks until an election takes them in.
    pub candidates: usize,
}

/// What the adversarial client does, in turn, to every validator at once:
/// - `Refused`: a funded account sends a proof for an audit that does not exist (the ledger
///   refuses its call), then a transfer with the next nonce, which must commit;
/// - `Large`: bursts of the largest transactions there are (300 KiB proofs), more in one burst
///   than a peer accepts in one block;
/// - `Broke`: fresh keys with no balance send transfers, which no validator admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adversary {
    Refused,
    Large,
    Broke,
}

/// Validators checkpoint their ledger this often in the simulation (small, so restarts use
/// checkpoints and replay a few blocks on top).
const SIM_CHECKPOINT_EVERY_BLOCKS: u64 = 25;

/// Funded accounts the adversarial client signs with: the first for `Refused`, the rest for
/// `Large`.
const ADVERSARY_ACCOUNTS: usize = 24;
const REFUSING_ACCOUNTS: usize = 8;
/// Honest users of the simulation.
const HONEST_USERS: usize = 8;

impl SimConfig {
    pub fn new(validators: usize, seed: u64) -> SimConfig {
        SimConfig {
            validators,
            byzantine: Vec::new(),
            seed,
            delay_ms: (5, 40),
            drop_permille: 0,
            tx_every_ms: 50,
            adversary_every_ms: 0,
            empty_block_interval_ms: 0,
            params: LedgerParams {
                validators_per_era: validators as u32,
                ..LedgerParams::default()
            },
            crash_every_ms: 0,
            down_ms: (50, 1_000),
            wal: true,
            candidates: 0,
        }
    }
}

enum Event {
    Deliver {
        to: usize,
        from: usize,
        msg: Box<NetMsg>,
    },
    Timeout {
        node: usize,
        timeout: Timeout,
        generation: u64,
    },
    SubmitTx,
    Adversary,
    Crash,
    Restart {
        node: usize,
    },
}

struct SimNode {
    core: Core,
    key: ValidatorKey,
    account: AccountId,
    account_key: AccountKey,
    timers: Vec<(Timeout, u64)>,
    byzantine: Option<Byzantine>,
    /// Its block store: every block it committed, durable at commit.
    stored: Vec<(std::sync::Arc<Block>, crate::bft::CommitRecord)>,
    /// Its last checkpoint's bytes ([`crate::checkpoint`]), written every
    /// [`SIM_CHECKPOINT_EVERY_BLOCKS`] blocks: a restart replays only the blocks after it.
    checkpoint: Option<Vec<u8>>,
    wal: Option<Wal<SimMedium>>,
    /// Crashed, not restarted yet: it receives nothing and its timers are gone.
    down: bool,
}

/// What a run produced, for assertions.
#[derive(Debug, Default, Clone)]
pub struct SimReport {
    /// Height → the block every validator that committed it committed.
    pub decided: BTreeMap<u64, BlockHash>,
    /// Height → the state root after it.
    pub roots: BTreeMap<u64, Hash32>,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub txs_committed: u64,
    pub synced_blocks: u64,
    pub equivocations_seen: u64,
    /// Transactions of honest users committed.
    pub honest_txs_committed: u64,
    /// The adversary's transfers sent right after a refused call, and how many committed.
    pub followups_sent: u64,
    pub followups_committed: u64,
    /// Transactions from keys with no balance that reached a committed block (must be 0).
    pub broke_txs_committed: u64,
    /// Largest block proposed, in encoded bytes.
    pub block_bytes_max: usize,
    /// Tampered proposals a Byzantine validator sent (future time, another's block).
    pub tampered_proposals: u64,
    /// Proposals the honest validators refused as invalid.
    pub proposals_invalid: u64,
    /// Largest lead of a committed block's time over the simulated clock when committed.
    pub block_time_lead_ms_max: u64,
    pub crashes: u64,
    pub restarts: u64,
    /// Write-ahead log entries replayed on restarts.
    pub wal_replayed: u64,
    /// Replayed votes or proposals that differed from the logged ones (not signed).
    pub replay_divergences: u64,
    /// Pairs of conflicting votes (same height, round and kind, another value) or proposals
    /// (same height and round, another block) an honest validator sent: must be 0 with the
    /// write-ahead log.
    pub conflicting_signatures: u64,
    /// The first of them, for the failure message.
    pub first_conflict: Option<String>,
    /// Equivocation reports honest validators signed.
    pub evidence_reported: u64,
    /// Restarts that resumed from a checkpoint (and replayed only the blocks after it).
    pub checkpoints_used: u64,
}

pub struct Sim {
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    next_seq: u64,
    generation: u64,
    now_ms: u64,
    rng: ChaCha8Rng,
    config: SimConfig,
    /// Partition group per validator; messages cross only within a group.
    groups: Option<Vec<u8>>,
    users: Vec<AccountKey>,
    user_nonces: Vec<u64>,
    chain_id: Hash32,
    /// The ledger every validator started from (what a follower starts from too).
    genesis_ledger: Ledger,
    adversary_step: u64,
    /// (signer, nonce) of the adversary's follow-up transfers.
    followups: std::collections::BTreeSet<(AccountId, u64)>,
    broke: std::collections::BTreeSet<AccountId>,
    /// Blocks Byzantine validators have seen proposed, by height (for `ForeignBlock`).
    seen_blocks: BTreeMap<u64, Vec<Block>>,
    core_config: CoreConfig,
    /// What each honest validator signed and sent: (node, height, round, kind) → value
    /// (kind 0 proposal, 1 prevote, 2 precommit; value `None` for nil).
    signed: BTreeMap<(usize, u64, i64, u8), Option<BlockHash>>,
    /// Replay divergences of cores that crashed since.
    divergences_before: u64,
    pub report: SimReport,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now_ms", &self.now_ms)
            .field("validators", &self.nodes.len())
            .finish()
    }
}

/// Fast timeouts for simulated networks (tens of ms of delay).
pub fn sim_timeouts() -> StepTimeouts {
    StepTimeouts {
        propose_ms: 300,
        prevote_ms: 150,
        precommit_ms: 150,
        delta_ms: 100,
        rebroadcast_ms: 200,
        max_ms: 5_000,
    }
}

/// A genesis with `validators` validators (keys from `seed`) and `users` funded accounts.
pub fn genesis(
    validators: usize,
    users: usize,
    seed: u64,
    params: LedgerParams,
) -> (Genesis, Vec<(AccountKey, ValidatorKey)>, Vec<AccountKey>) {
    let derive = |kind: u8, i: usize| {
        let mut bytes = [kind; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        bytes
    };
    let validator_keys: Vec<(AccountKey, ValidatorKey)> = (0..validators)
        .map(|i| {
            (
                AccountKey::from_seed(derive(1, i)),
                ValidatorKey::from_seed(&derive(2, i)),
            )
        })
        .collect();
    let user_keys: Vec<AccountKey> = (0..users)
        .map(|i| AccountKey::from_seed(derive(3, i)))
        .collect();
    let genesis = Genesis {
        chain_name: format!("sim-{seed}"),
        time_ms: 0,
        accounts: validator_keys
            .iter()
            .map(|(a, _)| (a.id(), 10_000 * TOKEN))
            .chain(user_keys.iter().map(|u| (u.id(), 1_000_000 * TOKEN)))
            .collect(),
        reward_pool: 1_000_000 * TOKEN,
        validators: validator_keys
            .iter()
            .map(|(a, v)| GenesisValidator {
                account: a.id(),
                key: v.public().to_bytes(),
                possession: v.proof_of_possession().to_bytes(),
                stake: params.candidate_stake_min,
            })
            .collect(),
        taggers: Vec::new(),
        params,
    };
    (genesis, validator_keys, user_keys)
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let (genesis, keys, users) = genesis(
            config.validators + config.candidates,
            HONEST_USERS + ADVERSARY_ACCOUNTS,
            config.seed,
            config.params.clone(),
        );
        let ledger = Ledger::genesis(&genesis).expect("simulation genesis");
        let genesis_ledger = ledger.clone();
        let core_config = CoreConfig {
            timeouts: sim_timeouts(),
            empty_block_interval_ms: config.empty_block_interval_ms,
            ..CoreConfig::default()
        };
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, (account, key))| SimNode {
                core: Core::new(
                    ledger.clone(),
                    key.clone(),
                    account.id(),
                    core_config.clone(),
                    0,
                ),
                key,
                account: account.id(),
                account_key: account,
                timers: Vec::new(),
                byzantine: config
                    .byzantine
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, b)| *b),
                stored: Vec::new(),
                checkpoint: None,
                wal: config.wal.then(|| {
                    Wal::open(SimMedium::default(), &ledger.chain_id(), 1)
                        .expect("a new simulated log opens")
                        .0
                }),
                down: false,
            })
            .collect();
        let mut sim = Sim {
            nodes,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_seq: 0,
            generation: 0,
            now_ms: 0,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            user_nonces: vec![0; users.len()],
            users,
            chain_id: ledger.chain_id(),
            genesis_ledger,
            adversary_step: 0,
            followups: Default::default(),
            broke: Default::default(),
            seen_blocks: BTreeMap::new(),
            core_config,
            signed: BTreeMap::new(),
            divergences_before: 0,
            config,
            groups: None,
            report: SimReport::default(),
        };
        for i in 0..sim.nodes.len() {
            let outputs = sim.nodes[i].core.start(0);
            sim.handle_outputs(i, outputs);
        }
        if sim.config.tx_every_ms > 0 {
            sim.schedule(sim.config.tx_every_ms, Event::SubmitTx);
        }
        if sim.config.adversary_every_ms > 0 {
            sim.schedule(sim.config.adversary_every_ms, Event::Adversary);
        }
        if sim.config.crash_every_ms > 0 {
            sim.schedule(sim.config.crash_every_ms, Event::Crash);
        }
        sim
    }

    /// Stop crashing validators (those down still restart), so a run can end with all up.
    pub fn stop_crashing(&mut self) {
        self.config.crash_every_ms = 0;
    }

    /// Validators down now.
    pub fn down(&self) -> usize {
        self.nodes.iter().filter(|n| n.down).count()
    }

    /// A random honest validator that is up crashes, if fewer than f are down or Byzantine:
    /// its timers and the messages on their way to it are lost, and its log keeps the synced
    /// bytes and a random part of the rest (the last write possibly torn).
    fn crash_one(&mut self) {
        let n = self.nodes.len();
        let f = (n - 1) / 3;
        let faulty = self
            .nodes
            .iter()
            .filter(|n| n.down || n.byzantine.is_some())
            .count();
        if faulty >= f {
            return;
        }
        let up: Vec<usize> = (0..n)
            .filter(|&i| !self.nodes[i].down && self.nodes[i].byzantine.is_none())
            .collect();
        let node = up[self.rng.random_range(0..up.len())];
        let kept_writes = self.rng.random_range(0..=8);
        let torn_permille = self.rng.random_range(0..=1000);
        let died_before_sync = self.rng.random_bool(0.5);
        let target = &mut self.nodes[node];
        target.down = true;
        target.timers.clear();
        if let Some(wal) = &mut target.wal {
            // Half the time it died between writing its buffered entries and syncing them.
            if died_before_sync {
                wal.write_buffered()
                    .expect("the simulated disk does not fail");
            }
            wal.medium_mut().crash(kept_writes, torn_permille);
        }
        self.divergences_before += target.core.stats().replay_divergences;
        self.report.crashes += 1;
        let (low, high) = self.config.down_ms;
        let down_ms = self.rng.random_range(low..=high);
        self.schedule(down_ms, Event::Restart { node });
    }

    /// The validator comes back from its disk alone: the ledger replayed from its stored
    /// blocks, its log reopened (a torn tail dropped) and replayed by the new core.
    fn restart(&mut self, node: usize) {
        let chain_id = self.chain_id;
        let start = match &self.nodes[node].checkpoint {
            Some(bytes) => {
                self.report.checkpoints_used += 1;
                crate::checkpoint::decode(bytes, &chain_id).expect("a simulated checkpoint decodes")
            }
            None => crate::checkpoint::Checkpoint {
                last_hash: chain_id,
                ledger: self.genesis_ledger.clone(),
                previous_validators: None,
            },
        };
        let from = start.ledger.height() as usize;
        let restored = crate::store::replay_blocks_from(
            self.nodes[node].stored[from..].iter().cloned().map(Ok),
            start,
            self.core_config.history_max,
        )
        .expect("a simulated block store replays");
        let target = &mut self.nodes[node];
        let mut core = Core::restore(
            restored,
            target.key.clone(),
            target.account,
            self.core_config.clone(),
            self.now_ms,
        );
        if let Some(wal) = target.wal.take() {
            let (wal, recovered) = Wal::open(wal.into_medium(), &chain_id, core.height())
                .expect("a simulated log reopens");
            core.recover(recovered.entries)
                .expect("the simulated store is never behind its log");
            target.wal = Some(wal);
        }
        target.core = core;
        target.down = false;
        self.report.restarts += 1;
        let _span = tracing::info_span!("v", n = node).entered();
        let outputs = self.nodes[node].core.start(self.now_ms);
        self.report.wal_replayed += self.nodes[node].core.stats().wal_replayed;
        self.handle_outputs(node, outputs);
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn genesis_ledger(&self) -> &Ledger {
        &self.genesis_ledger
    }

    pub fn core(&self, i: usize) -> &Core {
        &self.nodes[i].core
    }

    pub fn account(&self, i: usize) -> AccountId {
        self.nodes[i].account
    }

    /// A transaction signed by node `signer`'s account (its next nonce on the most advanced
    /// ledger), handed to every node that is up.
    pub fn submit_call(&mut self, signer: usize, call: Call) {
        let view = (0..self.nodes.len())
            .max_by_key(|&i| self.nodes[i].core.ledger().height())
            .expect("nodes");
        let key = &self.nodes[signer].account_key;
        let ledger = self.nodes[view].core.ledger();
        let tx = ledger.transaction_with_nonce(key, ledger.account(&key.id()).nonce, call);
        let tx = VerifiedTx::check(tx, &self.chain_id).expect("signed for this chain");
        for node in 0..self.nodes.len() {
            if self.nodes[node].down {
                continue;
            }
            let (_, outputs) = self.nodes[node].core.submit(vec![tx.clone()], self.now_ms);
            self.handle_outputs(node, outputs);
        }
    }

    /// Split the validators into groups (index → group); `None` heals the network.
    pub fn partition(&mut self, groups: Option<Vec<u8>>) {
        self.groups = groups;
    }

    /// Lowest height every honest validator has committed.
    pub fn honest_height(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.byzantine.is_none())
            .map(|n| n.core.ledger().height())
            .min()
            .unwrap_or(0)
    }

    /// Highest height any validator has committed.
    pub fn max_height(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.core.ledger().height())
            .max()
            .unwrap_or(0)
    }

    fn schedule(&mut self, delay_ms: u64, event: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Reverse((self.now_ms + delay_ms, seq)));
        self.events.insert(seq, event);
    }

    /// Run until the simulated clock reaches `until_ms`.
    pub fn run_until(&mut self, until_ms: u64) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until_ms {
                break;
            }
            self.queue.pop();
            self.now_ms = at;
            let event = self
                .events
                .remove(&seq)
                .expect("every queued event is stored");
            match event {
                Event::Deliver { to, from, msg } => {
                    if self.nodes[to].down {
                        continue;
                    }
                    if self.nodes[to].byzantine == Some(Byzantine::ForeignBlock)
                        && let NetMsg::Proposal(p) = &*msg
                    {
                        let block = (**p.message.value.block()).clone();
                        self.seen_blocks.retain(|h, _| *h + 2 >= block.height);
                        self.seen_blocks
                            .entry(block.height)
                            .or_default()
                            .push(block);
                    }
                    let from_account = self.nodes[from].account;
                    let _span = tracing::info_span!("v", n = to).entered();
                    let outputs = self.nodes[to].core.on_message(from_account, *msg, at);
                    self.handle_outputs(to, outputs);
                }
                Event::Timeout {
                    node,
                    timeout,
                    generation,
                } => {
                    let timers = &mut self.nodes[node].timers;
                    let Some(k) = timers
                        .iter()
                        .position(|(t, g)| *t == timeout && *g == generation)
                    else {
                        continue;
                    };
                    timers.swap_remove(k);
                    let _span = tracing::info_span!("v", n = node).entered();
                    let outputs = self.nodes[node].core.on_timeout(timeout, at);
                    self.handle_outputs(node, outputs);
                }
                Event::SubmitTx => {
                    self.submit_random_tx();
                    self.schedule(self.config.tx_every_ms, Event::SubmitTx);
                }
                Event::Adversary => {
                    self.adversary_acts();
                    self.schedule(self.config.adversary_every_ms, Event::Adversary);
                }
                Event::Crash => {
                    if self.config.crash_every_ms > 0 {
                        self.crash_one();
                        self.schedule(self.config.crash_every_ms, Event::Crash);
                    }
                }
                Event::Restart { node } => self.restart(node),
            }
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    fn submit_random_tx(&mut self) {
        let user = self.rng.random_range(0..HONEST_USERS);
        let to = self.users[self.rng.random_range(0..HONEST_USERS)].id();
        let node = self.rng.random_range(0..self.nodes.len());
        if self.nodes[node].down {
            return;
        }
        let nonce = self.user_nonces[user];
        let tx = self.nodes[node].core.ledger().transaction_with_nonce(
            &self.users[user],
            nonce,
            Call::Transfer { to, amount: TOKEN },
        );
        let tx = VerifiedTx::check(tx, &self.chain_id).expect("signed for this chain");
        let (answers, outputs) = self.nodes[node].core.submit(vec![tx], self.now_ms);
        if answers[0].is_ok() {
            self.user_nonces[user] += 1;
        }
        self.handle_outputs(node, outputs);
    }

    /// The adversarial client's next move (see [`Adversary`]), sent to every validator.
    fn adversary_acts(&mut self) {
        let kinds = [Adversary::Refused, Adversary::Large, Adversary::Broke];
        let kind = kinds[(self.adversary_step % 3) as usize];
        self.adversary_step += 1;
        // The least-advanced validator's view, so that every validator admits the nonces.
        let view = (0..self.nodes.len())
            .min_by_key(|&i| self.nodes[i].core.ledger().height())
            .expect("validators");
        let ledger = self.nodes[view].core.ledger().clone();
        let mut txs = Vec::new();
        match kind {
            Adversary::Refused => {
                let k = HONEST_USERS + (self.adversary_step as usize % REFUSING_ACCOUNTS);
                let key = &self.users[k];
                let nonce = ledger.account(&key.id()).nonce;
                txs.push(ledger.transaction_with_nonce(
                    key,
                    nonce,
                    Call::SubmitProof {
                        round: 1 << 40,
                        tagger: [0xAA; 32],
                        proof: vec![1; 64],
                    },
                ));
                let to = self.users[0].id();
                txs.push(ledger.transaction_with_nonce(
                    key,
                    nonce + 1,
                    Call::Transfer { to, amount: 1 },
                ));
                if self.followups.insert((key.id(), nonce + 1)) {
                    self.report.followups_sent += 1;
                }
            }
            Adversary::Large => {
                // 48 × 300 KiB = 14 MiB: far more than the 4 MiB a block carries here.
                for a in REFUSING_ACCOUNTS..ADVERSARY_ACCOUNTS {
                    let key = &self.users[HONEST_USERS + a];
                    let nonce = ledger.account(&key.id()).nonce;
                    for n in 0..3 {
                        txs.push(ledger.transaction_with_nonce(
                            key,
                            nonce + n,
                            Call::SubmitProof {
                                round: 1 << 40,
                                tagger: [0xBB; 32],
                                proof: vec![2; crate::tx::PROOF_BYTES_MAX - 64],
                            },
                        ));
                    }
                }
            }
            Adversary::Broke => {
                for _ in 0..16 {
                    let key = AccountKey::from_seed(self.rng.random());
                    self.broke.insert(key.id());
                    txs.push(ledger.transaction_with_nonce(
                        &key,
                        0,
                        Call::Transfer {
                            to: self.users[0].id(),
                            amount: 1,
                        },
                    ));
                }
            }
        }
        let verified: Vec<VerifiedTx> = txs
            .into_iter()
            .map(|tx| VerifiedTx::check(tx, &self.chain_id).expect("signed for this chain"))
            .collect();
        for node in 0..self.nodes.len() {
            if self.nodes[node].down {
                continue;
            }
            let (_, outputs) = self.nodes[node].core.submit(verified.clone(), self.now_ms);
            // Each validator got them from the client itself: no relay needed.
            let outputs = outputs
                .into_iter()
                .filter(|o| !matches!(o, Output::Broadcast(NetMsg::Txs(_))))
                .collect();
            self.handle_outputs(node, outputs);
        }
    }

    fn handle_outputs(&mut self, from: usize, outputs: Vec<Output>) {
        for output in outputs {
            // As the driver: the log entries ahead of a message are durable before it leaves.
            if output.carries_signed_consensus()
                && let Some(wal) = &mut self.nodes[from].wal
            {
                wal.sync().expect("the simulated disk does not fail");
            }
            match output {
                Output::WalAppend { height, entry } => {
                    if let Some(wal) = &mut self.nodes[from].wal {
                        wal.append(height, &entry);
                    }
                }
                Output::Broadcast(msg) => {
                    self.check_signed(from, &msg);
                    self.broadcast(from, msg)
                }
                Output::Send(to, msg) => {
                    if let Some(to) = self.nodes.iter().position(|n| n.account == to) {
                        self.send(from, to, msg);
                    }
                }
                Output::ScheduleTimeout(timeout, duration) => {
                    self.generation += 1;
                    let generation = self.generation;
                    let timers = &mut self.nodes[from].timers;
                    timers.retain(|(t, _)| *t != timeout);
                    timers.push((timeout, generation));
                    self.schedule(
                        duration.as_millis() as u64,
                        Event::Timeout {
                            node: from,
                            timeout,
                            generation,
                        },
                    );
                }
                Output::CancelTimeout(timeout) => {
                    self.nodes[from].timers.retain(|(t, _)| *t != timeout)
                }
                Output::CancelAllTimeouts => self.nodes[from].timers.clear(),
                Output::Evidence(evidence) => {
                    let node = &mut self.nodes[from];
                    let key = node.account_key.clone();
                    let outputs = node.core.report_evidence(&key, *evidence, self.now_ms);
                    self.report.evidence_reported += 1;
                    self.handle_outputs(from, outputs);
                }
                Output::Committed(committed) => {
                    let height = committed.height;
                    let node = &mut self.nodes[from];
                    assert_eq!(
                        height,
                        node.stored.len() as u64 + 1,
                        "blocks are stored in height order"
                    );
                    node.stored
                        .push((committed.block.clone(), committed.commit.clone()));
                    if height.is_multiple_of(SIM_CHECKPOINT_EVERY_BLOCKS)
                        && node.core.ledger().height() == height
                    {
                        node.checkpoint =
                            Some(crate::checkpoint::encode(&crate::checkpoint::Checkpoint {
                                ledger: node.core.ledger().clone(),
                                last_hash: committed.hash.0,
                                previous_validators: Some(committed.validators.clone()),
                            }));
                    }
                    if let Some(wal) = &mut node.wal {
                        wal.reset().expect("the simulated disk does not fail");
                    }
                    match self.report.decided.get(&height) {
                        Some(hash) => assert_eq!(
                            *hash, committed.hash,
                            "SAFETY: validator {from} finalized another block at height {height} (seed {})",
                            self.config.seed
                        ),
                        None => {
                            self.report.decided.insert(height, committed.hash);
                            self.report.txs_committed += committed.block.txs.len() as u64;
                            self.report.block_time_lead_ms_max = self
                                .report
                                .block_time_lead_ms_max
                                .max(committed.block.time_ms.saturating_sub(self.now_ms));
                            self.report.block_bytes_max = self
                                .report
                                .block_bytes_max
                                .max(committed.block.encode().len());
                            let honest: Vec<AccountId> =
                                self.users[..HONEST_USERS].iter().map(|u| u.id()).collect();
                            for (tx, receipt) in
                                committed.block.txs.iter().zip(&committed.outcome.receipts)
                            {
                                if honest.contains(&tx.signer) && receipt.is_ok() {
                                    self.report.honest_txs_committed += 1;
                                }
                                if self.followups.contains(&(tx.signer, tx.nonce))
                                    && receipt.is_ok()
                                {
                                    self.report.followups_committed += 1;
                                }
                                if self.broke.contains(&tx.signer) {
                                    self.report.broke_txs_committed += 1;
                                }
                            }
                        }
                    }
                    match self.report.roots.get(&height) {
                        Some(root) => assert_eq!(
                            *root, committed.outcome.root,
                            "validator {from} has another state root at height {height} (seed {})",
                            self.config.seed
                        ),
                        None => {
                            self.report.roots.insert(height, committed.outcome.root);
                        }
                    }
                    self.report.synced_blocks += u64::from(committed.synced);
                }
            }
        }
    }

    fn broadcast(&mut self, from: usize, msg: NetMsg) {
        // As the QUIC driver: to the validators its core names (this set and the last).
        let named = self.nodes[from].core.peers();
        let peers: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| i != from && named.contains(&self.nodes[i].account))
            .collect();
        match (self.nodes[from].byzantine, &msg) {
            (Some(Byzantine::WithholdVotes), NetMsg::Vote(_)) => {}
            (Some(Byzantine::DoubleVote), NetMsg::Vote(vote)) => {
                let mut other = vote.message.clone();
                other.value = match other.value {
                    NilOrVal::Nil => NilOrVal::Val(BlockHash(self.rng.random())),
                    NilOrVal::Val(_) => NilOrVal::Nil,
                };
                let ctx = Cess {
                    chain_id: self.chain_id,
                };
                let signature = ctx.sign_vote(&self.nodes[from].key, &other);
                let other = NetMsg::Vote(SignedMessage::new(other, signature));
                self.split_send(from, &peers, msg, other);
            }
            (Some(Byzantine::FutureTime), NetMsg::Proposal(proposal))
                if proposal.message.pol_round == arc_malachitebft_core_types::Round::Nil =>
            {
                let mut block: Block = (**proposal.message.value.block()).clone();
                block.time_ms += 3_600_000;
                self.report.tampered_proposals += 1;
                let msg = self.resign(from, &proposal.message, block);
                for to in peers {
                    self.send(from, to, msg.clone());
                }
            }
            (Some(Byzantine::ForeignBlock), NetMsg::Proposal(proposal))
                if proposal.message.pol_round == arc_malachitebft_core_types::Round::Nil =>
            {
                let height = proposal.message.height.0;
                let me = self.nodes[from].account;
                let foreign = self
                    .seen_blocks
                    .get(&height)
                    .and_then(|blocks| blocks.iter().find(|b| b.proposer != me))
                    .cloned();
                let msg = match foreign {
                    Some(block) => {
                        self.report.tampered_proposals += 1;
                        self.resign(from, &proposal.message, block)
                    }
                    None => msg,
                };
                for to in peers {
                    self.send(from, to, msg.clone());
                }
            }
            (Some(Byzantine::EquivocateProposals), NetMsg::Proposal(proposal)) => {
                let mut block: Block = (**proposal.message.value.block()).clone();
                block.time_ms += 1;
                let twin = Proposal {
                    value: BlockValue::new(block),
                    ..proposal.message.clone()
                };
                let ctx = Cess {
                    chain_id: self.chain_id,
                };
                let signature = ctx.sign_proposal(&self.nodes[from].key, &twin);
                let twin = NetMsg::Proposal(SignedMessage::new(twin, signature));
                self.split_send(from, &peers, msg, twin);
            }
            _ => {
                for to in peers {
                    self.send(from, to, msg.clone());
                }
            }
        }
    }

    /// Records what an honest validator signs and sends, counting conflicts with what it signed
    /// before (in this life or an earlier one).
    fn check_signed(&mut self, from: usize, msg: &NetMsg) {
        if self.nodes[from].byzantine.is_some() {
            return;
        }
        let me = self.nodes[from].account;
        let (key, value) = match msg {
            NetMsg::Vote(v) if v.message.validator == me => {
                let kind = match v.message.kind {
                    arc_malachitebft_core_types::VoteType::Prevote => 1,
                    arc_malachitebft_core_types::VoteType::Precommit => 2,
                };
                let value = match v.message.value {
                    NilOrVal::Nil => None,
                    NilOrVal::Val(hash) => Some(hash),
                };
                (
                    (from, v.message.height.0, v.message.round.as_i64(), kind),
                    value,
                )
            }
            NetMsg::Proposal(p) if p.message.proposer == me => {
                let hash = arc_malachitebft_core_types::Value::id(&p.message.value);
                (
                    (from, p.message.height.0, p.message.round.as_i64(), 0),
                    Some(hash),
                )
            }
            _ => return,
        };
        match self.signed.get(&key) {
            None => {
                self.signed.insert(key, value);
            }
            Some(first) if *first == value => {}
            Some(first) => {
                self.report.conflicting_signatures += 1;
                if self.report.first_conflict.is_none() {
                    self.report.first_conflict = Some(format!(
                        "validator {from} at height {} round {} kind {}: {first:?} then {value:?} (seed {})",
                        key.1, key.2, key.3, self.config.seed
                    ));
                }
            }
        }
    }

    /// `proposal` with another block, signed by validator `from`.
    fn resign(&self, from: usize, proposal: &Proposal, block: Block) -> NetMsg {
        let tampered = Proposal {
            value: BlockValue::new(block),
            ..proposal.clone()
        };
        let ctx = Cess {
            chain_id: self.chain_id,
        };
        let signature = ctx.sign_proposal(&self.nodes[from].key, &tampered);
        NetMsg::Proposal(SignedMessage::new(tampered, signature))
    }

    /// The first half of the peers (in a random order) get `a`, the rest `b`.
    fn split_send(&mut self, from: usize, peers: &[usize], a: NetMsg, b: NetMsg) {
        let mut order = peers.to_vec();
        for k in (1..order.len()).rev() {
            order.swap(k, self.rng.random_range(0..=k));
        }
        let half = order.len() / 2;
        for (k, to) in order.into_iter().enumerate() {
            self.send(from, to, if k < half { a.clone() } else { b.clone() });
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: NetMsg) {
        self.report.messages_sent += 1;
        if let Some(groups) = &self.groups
            && groups[from] != groups[to]
        {
            self.report.messages_dropped += 1;
            return;
        }
        if self.rng.random_range(0..1000) < self.config.drop_permille {
            self.report.messages_dropped += 1;
            return;
        }
        // Every message crosses the wire encoding, so the simulator tests it too.
        let msg = NetMsg::decode(&msg.encode()).expect("a message decodes after encoding");
        let (low, high) = self.config.delay_ms;
        let delay = self.rng.random_range(low..=high);
        self.schedule(
            delay,
            Event::Deliver {
                to,
                from,
                msg: Box::new(msg),
            },
        );
    }

    /// Collect the validators' counters into the report.
    pub fn finish(&mut self) -> SimReport {
        self.report.replay_divergences = self.divergences_before
            + self
                .nodes
                .iter()
                .map(|n| n.core.stats().replay_divergences)
                .sum::<u64>();
        self.report.equivocations_seen = self
            .nodes
            .iter()
            .map(|n| n.core.stats().equivocations_seen)
            .sum();
        self.report.proposals_invalid = self
            .nodes
            .iter()
            .filter(|n| n.byzantine.is_none())
            .map(|n| n.core.stats().proposals_invalid)
            .sum();
        self.report.clone()
    }
}

/// `count` empty blocks on top of `ledger` (applied to it; `parent` is the hash of its last
/// block, the chain id at genesis), as one validator with `key` would propose them, each
/// handed to `each` with an empty commit; the last block's hash. A long chain for
/// a block store in tests and benchmarks (restart and replay times). Not a chain a peer would accept: the
/// commits carry no signatures and one VRF proof serves every block; a store's replay does
/// not check either (they were checked when committed), so it replays this chain as it would
/// a real one of empty blocks.
pub fn empty_chain(
    ledger: &mut Ledger,
    mut parent: Hash32,
    key: &ValidatorKey,
    proposer: AccountId,
    count: u64,
    mut each: impl FnMut(std::sync::Arc<Block>, crate::bft::CommitRecord),
) -> Hash32 {
    let randomness = ledger
        .epoch_randomness(ledger.epoch_of(ledger.height() + 1))
        .expect("the next epoch's randomness is known");
    let (vrf_proof, _) = crate::vrf::vrf_prove(key, &randomness, ledger.height() + 1);
    for _ in 0..count {
        let height = ledger.height() + 1;
        let block = Block {
            height,
            parent,
            parent_root: ledger.root(),
            next_validators: ledger.elected_by_next_block(),
            time_ms: ledger.time_ms() + 1_000,
            proposer,
            vrf_proof: vrf_proof.clone(),
            last_commit: None,
            txs: Vec::new(),
        };
        ledger.apply_block(
            &crate::bft::block_info(&block),
            &[],
            &cess_proofs::CpuBackend,
        );
        parent = block.hash().0;
        each(
            std::sync::Arc::new(block),
            crate::bft::CommitRecord {
                round: 0,
                signatures: Vec::new(),
            },
        );
    }
    parent
}
