// Long file: the node's whole sans-IO core, its rules read in one place.
//! The storage node's decisions, as a sans-IO core (in the manner of the validator core):
//! the ledger replica after each block, write requests, the store's durable results and
//! restarts come in; what to allow, which transactions to submit and which fragments to delete
//! come out. Drivers do the I/O (the follower keeps the replica, the engine stores, QUIC
//! carries the fragments).
//!
//! The chain rule: a node stores a fragment only when its own replica has that fragment
//! assigned to it (placed by the ledger in an order, or a restoral it claimed); it reports a
//! column with `ReportStored` only once every fragment of that column is durable in its store;
//! and it deletes, on its own, every fragment the ledger no longer assigns to it (a deleted
//! file, an expired order, a lease that ended, a fragment handed to restoral). Nothing the
//! ledger assigns is ever deleted, and nothing is reported before it is durable.
//!
//! Beside the core: [`config`], the node's settings (`node.toml` and `CESS_NODE_*`);
//! [`service`], the process that drives it all (QUIC server, chain driver, HTTP surface,
//! shutdown); [`http`], what the operator sees (dashboard, status, metrics, warnings); [`chain`], the driver on the chain; [`engine_store`], the
//! engine behind the fragment protocol; and [`proof_source`], the one `ProofSource` over an
//! engine store (the prover reads challenged blocks and tags through it). The `cess node`
//! command is only its command line.
#![forbid(unsafe_code)]

pub mod chain;
pub mod config;
pub mod engine_store;
pub mod http;
pub mod idle;
mod idle_io;
pub mod proof_source;
pub mod restore;
pub mod service;

pub use engine_store::EngineStore;
pub use proof_source::StoreSource;
pub use restore::RebuildPlan;

use cess_consensus::ledger::{Ledger, MinerState};
use cess_consensus::tx::{FragmentId, Hash32};
use cess_consensus::{AccountId, Call};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Who the node is and what it offers the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub account: AccountId,
    /// Its transport PeerId bytes (the ledger checks they are the account's key).
    pub peer_id: Vec<u8>,
    /// The multiaddr clients dial (`--announce` when it listens on 0.0.0.0).
    pub endpoint: String,
    /// Space declared: the store's capacity.
    pub capacity_bytes: u64,
    /// Collateral it registers with.
    pub collateral: u128,
}

/// Why a fragment write is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WriteRefused {
    #[error("this node is not registered on the chain yet")]
    NotRegistered,
    #[error("no file on the chain has this fragment")]
    UnknownFragment,
    #[error("the chain assigns this fragment to another miner")]
    NotAssigned,
    #[error("the fragment is {got} bytes; its order declares {expected}")]
    WrongLength { expected: u64, got: u64 },
}

/// Why a fragment read is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadRefused {
    #[error("no file on the chain has this fragment (as far as this node's replica knows)")]
    UnknownFragment,
    #[error(
        "this peer may not read this fragment: it is not an owner of its file, an owner's \
         delegate, a miner rebuilding its segment or a validator"
    )]
    NotPermitted,
    #[error("the peer's key is not an account key")]
    NotAnAccount,
}

/// Why a reader may read a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRight {
    Owner,
    /// Authorized by this owner (`Call::Authorize`).
    Delegate(AccountId),
    /// Holds the restoral claim of a fragment of the same segment: it rebuilds from siblings.
    Restorer,
    /// Holds a fragment of the same segment and has no audit open: it rebuilds its own
    /// fragment, lost or found corrupt, before reporting it lost (never while challenged,
    /// so an audit cannot be answered from the siblings).
    Repairer,
    Validator,
}

/// Why an account may connect to a storage node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Rents space (an owner who puts and gets).
    Lessee,
    Miner,
    Validator,
    /// Authorized by some owner.
    Delegate,
}

/// Whether `account` may hold a connection to a storage node at all: it has standing on the
/// chain (it pays for space, it is a miner or a validator, or an owner authorized it). Keys
/// with none are free to make, so they are turned away after the handshake, before any
/// request costs a signature check; standing costs money. Costs a few lookups.
pub fn check_peer(ledger: &Ledger, account: &AccountId) -> Option<Standing> {
    if ledger.lease(account).is_some() {
        Some(Standing::Lessee)
    } else if ledger.miner(account).is_some() {
        Some(Standing::Miner)
    } else if ledger.validators().iter().any(|v| v.account == *account) {
        Some(Standing::Validator)
    } else if ledger
        .delegators(account)
        .any(|owner| ledger.lease(owner).is_some())
    {
        // Only while an owner who authorized it still pays for space.
        Some(Standing::Delegate)
    } else {
        None
    }
}

/// Who may read `fragment_id` from the miner that holds it, by the chain: its file's owners
/// (one that joined an existing file only once the audits open at its joining have closed)
/// and their delegates, a miner that holds a restoral claim on a fragment of its segment (never
/// the miner that reported it lost: the ledger refuses that claim), the current validators,
/// and a miner holding another fragment of the segment while it has no audit open (a
/// self-repair; the serving node also caps these per peer and audit period, see
/// `chain::REPAIR_READS_PER_PEER_PERIOD`). Nobody else, so a miner that dropped its data
/// cannot rebuild a challenged block from its siblings, nor all its data before each round. Costs a few lookups, one segment's fragments and the smaller of the
/// file's owners and the reader's delegators, never the ledger's size.
pub fn check_read(
    ledger: &Ledger,
    reader: &AccountId,
    fragment_id: &FragmentId,
) -> Result<ReadRight, ReadRefused> {
    let (file_id, segment, _) = ledger
        .fragment_place(fragment_id)
        .ok_or(ReadRefused::UnknownFragment)?;
    let file = ledger.file(&file_id).expect("placed fragments have files");
    // An owner that joined an existing file (deduplication) reads it only once every audit
    // open when it joined has closed: a miner that dropped a fragment cannot join the file
    // when challenged, read the siblings and rebuild it in time. Staying an owner for longer
    // costs rent for every fragment of the file, more than the one it saves storing.
    let settled = |since: u64| {
        since == file.declared_at
            || ledger.height() > since + ledger.params().audit_window_blocks_max()
    };
    let owns = |account: &AccountId| {
        file.owners
            .get(account)
            .is_some_and(|owner| settled(owner.since))
    };
    if owns(reader) {
        return Ok(ReadRight::Owner);
    }
    if ledger.validators().iter().any(|v| v.account == *reader) {
        return Ok(ReadRight::Validator);
    }
    let restoring = file.segments[segment as usize].fragments.iter().any(|f| {
        ledger
            .restoral(&f.id)
            .is_some_and(|order| order.claim.is_some_and(|(claimant, _)| claimant == *reader))
    });
    if restoring {
        return Ok(ReadRight::Restorer);
    }
    // Delegation: walk the smaller side (the file's owners, or the owners that authorized
    // the reader), so neither a crowd of co-owners nor of delegators makes a read costly.
    let delegator = if ledger.delegator_count(reader) <= file.owners.len() {
        ledger.delegators(reader).find(|owner| owns(owner)).copied()
    } else {
        file.owners
            .keys()
            .find(|owner| owns(owner) && ledger.is_delegate(owner, reader))
            .copied()
    };
    if let Some(owner) = delegator {
        return Ok(ReadRight::Delegate(owner));
    }
    // A self-repair: a holder of another fragment of the segment, between its audits. Not
    // in the last blocks before a round opens either: a replica behind the proposer would
    // still serve a miner that already knows the round's challenge.
    let holds_sibling = file.segments[segment as usize]
        .fragments
        .iter()
        .any(|f| f.miner == Some(*reader) && f.id != *fragment_id);
    let period = ledger.params().audit_period_blocks;
    let round_near =
        (1..=REPAIR_QUIET_BLOCKS).any(|ahead| (ledger.height() + ahead).is_multiple_of(period));
    if holds_sibling && !round_near && !ledger.has_open_audit(reader) {
        return Ok(ReadRight::Repairer);
    }
    Err(ReadRefused::NotPermitted)
}

/// Blocks before an audit round opens in which no self-repair read is served.
pub const REPAIR_QUIET_BLOCKS: u64 = 2;

/// What the driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Sign and submit this call (the driver waits for its inclusion).
    Submit(Call),
    /// Remove this fragment from the store (the ledger no longer assigns it here).
    Delete(FragmentId),
    /// Get this durable fragment's tags from a tagger of `tagger`, check them, keep them with
    /// the fragment, then tell the core ([`NodeCore::on_stored`]).
    Tag {
        fragment_id: FragmentId,
        len_bytes: u64,
        tagger: Hash32,
    },
    /// Prove the open audit of `round` for `tagger` from the store and submit the proof
    /// before block `deadline`.
    Prove {
        round: u64,
        tagger: Hash32,
        deadline: u64,
    },
    /// Rebuild this fragment from any `data_fragments` of its segment fetched from the miners
    /// that hold them (or fetch it whole from the miner leaving it), check it against its id
    /// and store it; then tell the core ([`NodeCore::on_durable`], or
    /// [`NodeCore::on_rebuild_failed`]). `own`: a fragment this node holds and lost (a
    /// self-repair); else a restoral it claimed.
    Rebuild { fragment_id: FragmentId, own: bool },
    /// Read back every fragment the store holds, checking its bytes against their checksums
    /// and their id (and with `proof`, its kept tags against the bytes, as a proof would),
    /// and drop the ones that fail: they are rebuilt next, or reported lost. Asked after one
    /// of this node's proofs failed, and by the operator (`cess node check`).
    Check { proof: bool },
    /// Generate the idle files of the set starting at `first_file` (`cess_proofs::pois`),
    /// store each as a `Class::Idle` fragment with its number in its metadata, then tell the
    /// core ([`NodeCore::idle_mut`]`.on_generated`, or `on_generation_failed`).
    GenerateIdle { first_file: u64 },
    /// Answer the commit challenge of the set at `first_file` (labelling it again) and submit
    /// the proof.
    ProveIdleCommit { first_file: u64 },
    /// Answer the space audit of `round` on the set at `first_file` from the stored idle
    /// files, before block `deadline`.
    ProveSpace {
        round: u64,
        first_file: u64,
        deadline: u64,
    },
}

/// How much the node rebuilds and claims on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestorePolicy {
    /// Own fragments missing from the store that the node rebuilds itself from their
    /// siblings; when more are missing, or more than half of what it holds (a lost disk), it
    /// reports them lost instead, and the network rebuilds them on other miners.
    pub self_repair_max: usize,
    /// Restoral claims submitted per block, at most.
    pub claims_per_block: usize,
    /// Loss reports submitted per block, at most (the rest follow in the next blocks).
    pub reports_per_block: usize,
    /// Open orders looked at per block when choosing what to claim.
    pub orders_scanned_max: usize,
}

impl Default for RestorePolicy {
    fn default() -> RestorePolicy {
        RestorePolicy {
            self_repair_max: 16,
            claims_per_block: 16,
            reports_per_block: 64,
            orders_scanned_max: 256,
        }
    }
}

/// A report is submitted again if the ledger has not taken it within this many blocks (the
/// transaction was lost, or expired in a mempool).
pub const RESUBMIT_BLOCKS: u64 = 20;

/// Self-repairs of one fragment tried before it is reported lost.
pub const SELF_REPAIR_TRIES: u32 = 3;

/// A claimed restoral whose rebuild failed is tried again this many blocks later.
pub const REBUILD_RETRY_BLOCKS: u64 = 2;

#[derive(Debug, Clone)]
pub struct NodeCore {
    identity: NodeIdentity,
    /// Durable fragments in the store: id → length.
    stored: BTreeMap<FragmentId, u64>,
    /// (file, column) → height at which its report was submitted.
    reported: BTreeMap<(Hash32, u16), u64>,
    /// Height at which a registration or endpoint update was submitted.
    registration_sent: Option<u64>,
    /// Deletions asked for and not yet confirmed by the store.
    deleting: BTreeSet<FragmentId>,
    /// Durable fragments without their tags yet: id → (length, height tags were asked at).
    untagged: BTreeMap<FragmentId, (u64, u64)>,
    /// Open audits of this node answered: (round, tagger) → height the proof was asked at.
    proving: BTreeMap<(u64, Hash32), u64>,
    /// Restorals rebuilt here whose `CompleteRestoral` was submitted: id → height.
    completing: BTreeMap<FragmentId, u64>,
    /// Rebuilds asked of the driver: id → the height from which it is asked again (the
    /// driver's answer lost, or a claimed rebuild failed).
    rebuilding: BTreeMap<FragmentId, u64>,
    /// Own fragments whose self-repair failed `SELF_REPAIR_TRIES` times: reported lost next.
    unrepairable: BTreeSet<FragmentId>,
    /// Failed self-repairs so far, per own fragment.
    repair_tries: BTreeMap<FragmentId, u32>,
    /// `ReportLost` submitted: id → height.
    reporting: BTreeMap<FragmentId, u64>,
    /// `ClaimRestoral` submitted: id → height.
    claiming: BTreeMap<FragmentId, u64>,
    /// A read-back of the whole store was asked at this height.
    checking: Option<u64>,
    /// Whether the claims this node holds on the ledger were looked up since it started (a
    /// claim made before a restart is rebuilt after it).
    claims_found: bool,
    /// It was seen exiting: once withdrawn it does not register again.
    left: bool,
    /// Orders this node gave back as impossible to rebuild: never claimed again by it.
    given_back: BTreeSet<FragmentId>,
    policy: RestorePolicy,
    /// Idle space (`idle.rs`).
    idle: idle::IdleCore,
}

impl NodeCore {
    /// A node whose store holds `stored` (id, length), durable and tagged: at start, after a
    /// restart. Fragments durable without tags come in with [`NodeCore::untagged`].
    pub fn new(
        identity: NodeIdentity,
        stored: impl IntoIterator<Item = (FragmentId, u64)>,
    ) -> Self {
        NodeCore {
            identity,
            stored: stored.into_iter().collect(),
            reported: BTreeMap::new(),
            registration_sent: None,
            deleting: BTreeSet::new(),
            untagged: BTreeMap::new(),
            proving: BTreeMap::new(),
            completing: BTreeMap::new(),
            rebuilding: BTreeMap::new(),
            unrepairable: BTreeSet::new(),
            repair_tries: BTreeMap::new(),
            reporting: BTreeMap::new(),
            claiming: BTreeMap::new(),
            checking: None,
            claims_found: false,
            left: false,
            given_back: BTreeSet::new(),
            policy: RestorePolicy::default(),
            idle: idle::IdleCore::default(),
        }
    }

    /// The same core with its idle files and policy.
    pub fn with_idle(mut self, idle: idle::IdleCore) -> Self {
        self.idle = idle;
        self
    }

    pub fn idle(&self) -> &idle::IdleCore {
        &self.idle
    }

    pub fn idle_mut(&mut self) -> &mut idle::IdleCore {
        &mut self.idle
    }

    /// The same core with another restore policy.
    pub fn with_policy(mut self, policy: RestorePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Adds fragments the store holds without tags (found at start): the next block asks
    /// for their tags.
    pub fn untagged(mut self, durable: impl IntoIterator<Item = (FragmentId, u64)>) -> Self {
        for (id, len) in durable {
            self.untagged.insert(id, (len, 0));
        }
        self
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Fragments durable in the store, as the core knows them.
    pub fn stored(&self) -> &BTreeMap<FragmentId, u64> {
        &self.stored
    }

    /// Whether the chain lets this node store `fragment_id` of `len_bytes` now: assigned to
    /// it in `ledger` (its own replica), of the order's fragment size. A fragment already
    /// stored may be written again (a resumed upload).
    pub fn check_write(
        &self,
        ledger: &Ledger,
        fragment_id: &FragmentId,
        len_bytes: u64,
    ) -> Result<(), WriteRefused> {
        let me = &self.identity.account;
        if ledger.miner(me).is_none() {
            return Err(WriteRefused::NotRegistered);
        }
        let (file_id, segment, column) = ledger
            .fragment_place(fragment_id)
            .ok_or(WriteRefused::UnknownFragment)?;
        let file = ledger.file(&file_id).expect("placed fragments have files");
        let fragment = &file.segments[segment as usize].fragments[usize::from(column)];
        if fragment.miner != Some(*me) && !claimed_by(ledger, fragment_id, me) {
            return Err(WriteRefused::NotAssigned);
        }
        if len_bytes != file.fragment_bytes {
            return Err(WriteRefused::WrongLength {
                expected: file.fragment_bytes,
                got: len_bytes,
            });
        }
        Ok(())
    }

    /// The store made `fragment_id` durable (after `check_write` allowed it): its tags come
    /// next. A fragment already tagged here needs nothing more.
    pub fn on_durable(
        &mut self,
        ledger: &Ledger,
        fragment_id: FragmentId,
        len_bytes: u64,
    ) -> Vec<Action> {
        if self.stored.contains_key(&fragment_id) {
            return self.on_stored(ledger, fragment_id, len_bytes);
        }
        if self.untagged.contains_key(&fragment_id) {
            // Its tags were asked for already (a peer's reads and resumed writes land here
            // too): asked again by `on_block` when due, never once per request.
            return Vec::new();
        }
        self.deleting.remove(&fragment_id);
        self.untagged
            .insert(fragment_id, (len_bytes, ledger.height().max(1)));
        self.tag_action(ledger, fragment_id, len_bytes)
            .into_iter()
            .collect()
    }

    fn tag_action(
        &self,
        ledger: &Ledger,
        fragment_id: FragmentId,
        len_bytes: u64,
    ) -> Option<Action> {
        let (file_id, _, _) = ledger.fragment_place(&fragment_id)?;
        let tagger = ledger.file(&file_id)?.tagger;
        Some(Action::Tag {
            fragment_id,
            len_bytes,
            tagger,
        })
    }

    /// The fragment is durable and its checked tags are kept with it. What to do now, against
    /// the replica: a report when its column is complete.
    pub fn on_stored(
        &mut self,
        ledger: &Ledger,
        fragment_id: FragmentId,
        len_bytes: u64,
    ) -> Vec<Action> {
        self.stored.insert(fragment_id, len_bytes);
        self.untagged.remove(&fragment_id);
        self.deleting.remove(&fragment_id);
        let mut actions = Vec::new();
        if claimed_by(ledger, &fragment_id, &self.identity.account) {
            // A restoral this node rebuilt: it takes the fragment over (once, again only when
            // the ledger has not taken it within RESUBMIT_BLOCKS).
            let height = ledger.height();
            let due = self
                .completing
                .get(&fragment_id)
                .is_none_or(|at| height >= at + RESUBMIT_BLOCKS);
            if due {
                self.completing.insert(fragment_id, height);
                actions.push(Action::Submit(Call::CompleteRestoral { fragment_id }));
            }
        } else if let Some((file_id, _, column)) = ledger.fragment_place(&fragment_id) {
            self.report_if_complete(ledger, file_id, column, &mut actions);
        }
        actions
    }

    /// The store removed `fragment_id`.
    pub fn on_deleted(&mut self, fragment_id: &FragmentId) {
        self.stored.remove(fragment_id);
        self.untagged.remove(fragment_id);
        self.deleting.remove(fragment_id);
        self.completing.remove(fragment_id);
        self.idle.on_deleted(fragment_id);
    }

    /// The store lost `fragment_id` or it failed its check (and was dropped): it is missing
    /// now, and rebuilt or reported lost from the next block.
    pub fn on_missing(&mut self, fragment_id: &FragmentId) {
        self.stored.remove(fragment_id);
        self.untagged.remove(fragment_id);
    }

    /// The fragment's bytes are right but its kept tags failed the check: asked of a tagger
    /// again (from the next block), and not counted stored until they come.
    pub fn on_tags_bad(&mut self, fragment_id: &FragmentId) {
        if let Some(len) = self.stored.remove(fragment_id) {
            self.untagged.insert(*fragment_id, (len, 0));
        }
    }

    /// The read-back asked by [`Action::Check`] is over.
    pub fn on_checked(&mut self) {
        self.checking = None;
    }

    /// A rebuild failed (too few siblings answered, or none rebuilt to its id). An own
    /// fragment is tried again, and reported lost after [`SELF_REPAIR_TRIES`]; a claimed one
    /// is tried again after [`REBUILD_RETRY_BLOCKS`] until its claim expires, or given back
    /// at once (`ReleaseClaim`) when the failure is `permanent` (it cannot be rebuilt to its
    /// id: waiting would only let the claim expire and count against this node).
    pub fn on_rebuild_failed(
        &mut self,
        ledger: &Ledger,
        fragment_id: &FragmentId,
        permanent: bool,
    ) -> Vec<Action> {
        let own = ledger
            .fragment_place(fragment_id)
            .and_then(|(file_id, segment, column)| {
                let file = ledger.file(&file_id)?;
                file.segments[segment as usize].fragments[usize::from(column)].miner
            })
            .is_some_and(|m| m == self.identity.account);
        if !own && permanent && claimed_by(ledger, fragment_id, &self.identity.account) {
            self.rebuilding.remove(fragment_id);
            self.claiming.remove(fragment_id);
            self.given_back.insert(*fragment_id);
            return vec![Action::Submit(Call::ReleaseClaim {
                fragment_id: *fragment_id,
            })];
        }
        if own {
            // Tried again from the next block (an audit may have opened meanwhile, or a
            // sibling was down), reported lost after the last try.
            self.rebuilding.remove(fragment_id);
            let tries = self.repair_tries.entry(*fragment_id).or_default();
            *tries += 1;
            if *tries >= SELF_REPAIR_TRIES {
                self.unrepairable.insert(*fragment_id);
            }
        } else if let Some(at) = self.rebuilding.get_mut(fragment_id) {
            // A claimed one is tried again after REBUILD_RETRY_BLOCKS (the siblings' replicas
            // may not have applied the claim yet, and refused the reads), until the claim
            // expires.
            *at = ledger.height() + REBUILD_RETRY_BLOCKS;
        }
        Vec::new()
    }

    /// The store failed to remove `fragment_id`: the next block asks again.
    pub fn on_delete_failed(&mut self, fragment_id: &FragmentId) {
        self.deleting.remove(fragment_id);
    }

    /// Fragments durable here whose tags have not arrived.
    pub fn untagged_count(&self) -> usize {
        self.untagged.len()
    }

    /// After every block the replica applied (and once at start): registration, the reports
    /// due, and the deletions the ledger implies. Costs the node's own fragments, not the
    /// ledger's size.
    pub fn on_block(&mut self, ledger: &Ledger) -> Vec<Action> {
        let mut actions = Vec::new();
        self.register(ledger, &mut actions);
        let me = self.identity.account;
        if ledger.miner(&me).is_none() {
            return actions;
        }
        // Columns assigned here whose fragments are all durable and not yet reported.
        let assigned: BTreeSet<&FragmentId> = ledger.assigned_to(&me).collect();
        let columns: BTreeSet<(Hash32, u16)> = assigned
            .iter()
            .filter_map(|id| ledger.fragment_place(id))
            .map(|(file_id, _, column)| (file_id, column))
            .collect();
        for (file_id, column) in &columns {
            self.report_if_complete(ledger, *file_id, *column, &mut actions);
        }
        self.reported
            .retain(|(file_id, column), _| columns.contains(&(*file_id, *column)));
        self.completing
            .retain(|id, _| ledger.restoral(id).is_some());
        // Tags still missing are asked for again after a while (the tagger was down, behind,
        // or sent tags that failed the check).
        let height = ledger.height();
        let due: Vec<(FragmentId, u64)> = self
            .untagged
            .iter()
            .filter(|(id, (_, asked))| {
                (assigned.contains(id) || claimed_by(ledger, id, &me))
                    && (*asked == 0 || height >= asked + RESUBMIT_BLOCKS)
            })
            .map(|(id, (len, _))| (*id, *len))
            .collect();
        for (id, len) in due {
            self.untagged.insert(id, (len, height.max(1)));
            actions.extend(self.tag_action(ledger, id, len));
        }
        self.prove_audits(ledger, &mut actions);
        self.repair_own(ledger, &assigned, &mut actions);
        self.restore_claimed(ledger, &mut actions);
        self.claim_orders(ledger, &mut actions);
        // Everything stored here that the ledger does not assign here goes, unless it is a
        // restoral this node claimed and is rebuilding, or one it let go that is still
        // under restoral (the restorer fetches it whole from here first).
        for fragment_id in self.stored.keys().chain(self.untagged.keys()) {
            if assigned.contains(fragment_id) || self.deleting.contains(fragment_id) {
                continue;
            }
            if claimed_by(ledger, fragment_id, &me) {
                continue;
            }
            if ledger
                .restoral(fragment_id)
                .is_some_and(|order| order.lost_by == me)
            {
                continue;
            }
            actions.push(Action::Delete(*fragment_id));
        }
        let mut idle_actions = Vec::new();
        self.idle.on_block(ledger, &me, &mut idle_actions);
        actions.extend(
            idle_actions
                .into_iter()
                .filter(|a| !matches!(a, Action::Delete(id) if self.deleting.contains(id))),
        );
        for action in &actions {
            if let Action::Delete(id) = action {
                self.deleting.insert(*id);
            }
        }
        actions
    }

    /// A proof for every open audit of this node not answered yet, or answered and not
    /// taken within [`RESUBMIT_BLOCKS`], while its deadline has not passed.
    fn prove_audits(&mut self, ledger: &Ledger, actions: &mut Vec<Action>) {
        let me = self.identity.account;
        let height = ledger.height();
        let open: BTreeMap<(u64, Hash32), u64> = ledger
            .audits()
            .filter(|((_, miner, _), _)| *miner == me)
            .map(|((round, _, tagger), audit)| ((*round, *tagger), audit.deadline))
            .collect();
        self.proving.retain(|key, _| open.contains_key(key));
        for ((round, tagger), deadline) in open {
            if height > deadline {
                continue;
            }
            let due = self
                .proving
                .get(&(round, tagger))
                .is_none_or(|at| height >= at + RESUBMIT_BLOCKS);
            if due {
                self.proving.insert((round, tagger), height);
                actions.push(Action::Prove {
                    round,
                    tagger,
                    deadline,
                });
            }
        }
    }

    /// One of this node's proofs failed: read the whole store back (once at a time).
    pub fn on_proof_failed(&mut self, ledger: &Ledger) -> Vec<Action> {
        if self.checking.is_some() {
            return Vec::new();
        }
        self.checking = Some(ledger.height());
        vec![Action::Check { proof: false }]
    }

    /// The operator asked for a self-check: `None` while one runs.
    pub fn on_check_requested(&mut self, ledger: &Ledger, proof: bool) -> Option<Action> {
        if self.checking.is_some() {
            return None;
        }
        self.checking = Some(ledger.height());
        Some(Action::Check { proof })
    }

    /// Own fragments the chain has as stored here that the store does not hold (a wiped
    /// or replaced disk, a fragment dropped by a failed check): rebuilt here from their
    /// siblings while they are few, else (or when that fails) reported lost, so the network
    /// rebuilds them elsewhere and the node is not paid for what it does not hold. Costs the
    /// node's own fragments.
    fn repair_own(
        &mut self,
        ledger: &Ledger,
        assigned: &BTreeSet<&FragmentId>,
        actions: &mut Vec<Action>,
    ) {
        let height = ledger.height();
        let chain_stored = |id: &FragmentId| {
            ledger
                .fragment_place(id)
                .and_then(|(file_id, segment, column)| {
                    let file = ledger.file(&file_id)?;
                    Some(file.segments[segment as usize].fragments[usize::from(column)].stored)
                })
                .unwrap_or(false)
        };
        let held: Vec<FragmentId> = assigned
            .iter()
            .filter(|id| chain_stored(id))
            .map(|id| **id)
            .collect();
        let missing: Vec<FragmentId> = held
            .iter()
            .filter(|id| !self.stored.contains_key(*id) && !self.untagged.contains_key(*id))
            .copied()
            .collect();
        self.reporting.retain(|id, _| assigned.contains(id));
        self.unrepairable.retain(|id| assigned.contains(id));
        self.repair_tries
            .retain(|id, _| assigned.contains(id) && !self.stored.contains_key(id));
        // Siblings are read only between this node's audits (see `check_read`).
        let audited = ledger.has_open_audit(&self.identity.account);
        self.rebuilding.retain(|id, _| {
            assigned.contains(id) || claimed_by(ledger, id, &self.identity.account)
        });
        // A few fragments lost from a store that kept the rest: rebuilt here. More than
        // `self_repair_max`, or more than half of what it holds (a lost or replaced disk):
        // reported, and the network spreads the rebuilding over many miners.
        let repairable =
            missing.len() <= self.policy.self_repair_max && missing.len() * 2 <= held.len();
        let mut reports = 0;
        for id in missing {
            if repairable && !self.unrepairable.contains(&id) {
                if !audited {
                    self.ask_rebuild(id, true, height, actions);
                }
                continue;
            }
            let due = self
                .reporting
                .get(&id)
                .is_none_or(|at| height >= at + RESUBMIT_BLOCKS);
            if due && reports < self.policy.reports_per_block {
                reports += 1;
                self.reporting.insert(id, height);
                actions.push(Action::Submit(Call::ReportLost { fragment_id: id }));
            }
        }
    }

    /// Asks the driver to rebuild `id` unless it was asked and the answer is not due yet;
    /// asked again after [`RESUBMIT_BLOCKS`] (or sooner after a failure, see
    /// [`NodeCore::on_rebuild_failed`]).
    fn ask_rebuild(&mut self, id: FragmentId, own: bool, height: u64, actions: &mut Vec<Action>) {
        if self.rebuilding.get(&id).is_none_or(|at| height >= *at) {
            self.rebuilding.insert(id, height + RESUBMIT_BLOCKS);
            actions.push(Action::Rebuild {
                fragment_id: id,
                own,
            });
        }
    }

    /// Restorals this node claimed and does not hold yet: rebuilt (again after
    /// [`RESUBMIT_BLOCKS`] when a try failed or was lost).
    fn restore_claimed(&mut self, ledger: &Ledger, actions: &mut Vec<Action>) {
        let me = self.identity.account;
        let height = ledger.height();
        if !self.claims_found {
            // Once per start: one pass over the open orders.
            self.claims_found = true;
            for (id, order) in ledger.restorals() {
                if order.claim.is_some_and(|(claimant, _)| claimant == me) {
                    self.claiming.insert(*id, height);
                }
            }
        }
        let claimed: Vec<FragmentId> = self
            .claiming
            .keys()
            .chain(self.rebuilding.keys())
            .filter(|id| claimed_by(ledger, id, &me))
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for id in claimed {
            if self.stored.contains_key(&id) || self.untagged.contains_key(&id) {
                continue;
            }
            self.ask_rebuild(id, false, height, actions);
        }
        self.claiming.retain(|id, at| {
            ledger.restoral(id).is_some_and(|o| o.claim.is_none()) && height < *at + RESUBMIT_BLOCKS
                || claimed_by(ledger, id, &me)
        });
    }

    /// Claims open orders this node may take: it is active, not barred, has room and claim
    /// slots, holds and rebuilds nothing of the segment, and did not let the fragment go.
    /// Each node looks from its own place in the orders (by its account and the height), so
    /// nodes rarely race for one; at most `orders_scanned_max` are looked at per block.
    fn claim_orders(&mut self, ledger: &Ledger, actions: &mut Vec<Action>) {
        let me = self.identity.account;
        let height = ledger.height();
        let Some(miner) = ledger.miner(&me) else {
            return;
        };
        let params = ledger.params();
        if miner.state != MinerState::Active
            || miner.collateral < params.miner_collateral_min
            || height < miner.claims_barred_until
        {
            return;
        }
        let in_flight = self
            .claiming
            .keys()
            .filter(|id| !claimed_by(ledger, id, &me))
            .count();
        let slots = (params.restoral_claims_per_miner_max as usize)
            .saturating_sub(miner.restoral_claims as usize + in_flight)
            .min(self.policy.claims_per_block);
        if slots == 0 {
            return;
        }
        self.given_back.retain(|id| ledger.restoral(id).is_some());
        let mut idle = miner.idle_bytes();
        let start = FragmentId(cess_consensus::codec::hash(
            b"cess-node/1 claim start\0",
            &[&me.0, &height.to_le_bytes()],
        ));
        let mut segments_taken: BTreeSet<(Hash32, u32)> = BTreeSet::new();
        let mut chosen = Vec::new();
        for (id, order) in ledger
            .restorals_from(&start)
            .take(self.policy.orders_scanned_max)
        {
            if chosen.len() == slots {
                break;
            }
            if order.claim.is_some()
                || order.lost_by == me
                || self.claiming.contains_key(id)
                || self.given_back.contains(id)
            {
                continue;
            }
            let Some(file) = ledger.file(&order.file_id) else {
                continue;
            };
            if file.fragment_bytes > idle || !segments_taken.insert((order.file_id, order.segment))
            {
                continue;
            }
            let fragments = &file.segments[order.segment as usize].fragments;
            let takes_part = fragments.iter().any(|f| {
                f.miner == Some(me)
                    || self.claiming.contains_key(&f.id)
                    || claimed_by(ledger, &f.id, &me)
            });
            // Fewer than `data_fragments` left (held, or kept by a leaving miner): a claim
            // could only expire.
            if takes_part || !ledger.segment_decodable(&order.file_id, order.segment) {
                continue;
            }
            idle -= file.fragment_bytes;
            chosen.push(*id);
        }
        for id in chosen {
            self.claiming.insert(id, height);
            actions.push(Action::Submit(Call::ClaimRestoral { fragment_id: id }));
        }
    }

    fn register(&mut self, ledger: &Ledger, actions: &mut Vec<Action>) {
        let call = match ledger.miner(&self.identity.account) {
            // It left (exited, then withdrew) while running: it stays out.
            None if self.left => return,
            None => Call::RegisterMiner {
                peer_id: self.identity.peer_id.clone(),
                endpoint: self.identity.endpoint.clone(),
                declared_bytes: self.identity.capacity_bytes,
                collateral: self.identity.collateral,
            },
            Some(m) if m.state == MinerState::Active => {
                // Never declare less than is in use (the ledger would refuse it).
                let declared_bytes = self
                    .identity
                    .capacity_bytes
                    .max(m.locked_bytes + m.active_bytes);
                // Penalties (a failed audit, a loss report) took it under the floor, where it
                // receives no new data and claims no restoral: topped up to what it
                // registered with, when the account can pay.
                let floor = ledger.params().miner_collateral_min;
                let top_up = self
                    .identity
                    .collateral
                    .max(floor)
                    .saturating_sub(m.collateral);
                let balance = ledger.account(&self.identity.account).balance;
                if m.collateral < floor && top_up > 0 && balance > top_up {
                    Call::AddCollateral { amount: top_up }
                } else if m.endpoint == self.identity.endpoint && m.declared_bytes == declared_bytes
                {
                    self.registration_sent = None;
                    return;
                } else {
                    Call::UpdateMiner {
                        endpoint: self.identity.endpoint.clone(),
                        declared_bytes,
                    }
                }
            }
            Some(_) => {
                // Exiting.
                self.left = true;
                self.registration_sent = None;
                return;
            }
        };
        let due = self
            .registration_sent
            .is_none_or(|at| ledger.height() >= at + RESUBMIT_BLOCKS);
        if due {
            self.registration_sent = Some(ledger.height());
            actions.push(Action::Submit(call));
        }
    }

    /// `ReportStored` for (file, column) when every fragment of it assigned here is durable,
    /// some is not yet reported on the ledger, and no report is in flight.
    fn report_if_complete(
        &mut self,
        ledger: &Ledger,
        file_id: Hash32,
        column: u16,
        actions: &mut Vec<Action>,
    ) {
        let me = self.identity.account;
        let Some(file) = ledger.file(&file_id) else {
            return;
        };
        let mut unreported = false;
        for segment in &file.segments {
            let Some(fragment) = segment.fragments.get(usize::from(column)) else {
                return;
            };
            if fragment.miner != Some(me) {
                continue;
            }
            if !self.stored.contains_key(&fragment.id) {
                return;
            }
            unreported |= !fragment.stored;
        }
        if !unreported {
            self.reported.remove(&(file_id, column));
            return;
        }
        let height = ledger.height();
        if let Some(at) = self.reported.get(&(file_id, column))
            && height < at + RESUBMIT_BLOCKS
        {
            return;
        }
        self.reported.insert((file_id, column), height);
        actions.push(Action::Submit(Call::ReportStored { file_id, column }));
    }
}

/// Whether `me` holds the claim of the restoral order open for `fragment_id` (it rebuilds the
/// fragment and may store it before the ledger names it the holder).
fn claimed_by(ledger: &Ledger, fragment_id: &FragmentId, me: &AccountId) -> bool {
    ledger
        .restoral(fragment_id)
        .and_then(|o| o.claim)
        .is_some_and(|(claimer, _)| claimer == *me)
}
