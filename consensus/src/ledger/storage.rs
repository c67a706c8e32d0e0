// Long file: miners, files and restoral orders share their indexes and invariants; to be split by
// table (issue 26).
//! Miners, taggers, files and restoral orders.
//!
//! Space: a miner's `locked_bytes` (fragments assigned, not yet reported stored) plus
//! `active_bytes` (fragments reported stored) never exceed `declared_bytes`, and neither goes
//! negative; idle space is what remains. Placement: fragment j of every segment of a file goes
//! to the miner the ledger drew for column j (`place_columns`, never the uploader's choice); the
//! miners of one segment are distinct, and a fragment id names
//! exactly one place on the ledger (a file whose fragments collide byte for byte with another
//! file's is refused; deduplication works on whole files, by file id).

use super::space::RentClock;
use super::tracked::{Hashed, LtHash};
use super::{Event, LOST_COUNTDOWN_CLAIMS, Ledger, TaggerKey, TxError};
use crate::codec::{Writer, hash};
use crate::keys::AccountId;
use crate::tx::{Call, FragmentId, Hash32, TaggerApproval};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinerState {
    Active,
    /// Leaving since this height; withdrawable after the cooling-off period.
    Exiting {
        since: u64,
    },
}

/// A storage miner in the registry (anyone reads it to find peers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miner {
    pub peer_id: Vec<u8>,
    pub endpoint: String,
    pub declared_bytes: u64,
    pub locked_bytes: u64,
    pub active_bytes: u64,
    pub collateral: u128,
    pub state: MinerState,
    /// 0..=1000: up with valid proofs, down with missing or invalid ones.
    pub reputation: u32,
    /// Audits in a row it missed or failed; at `audit_misses_max` its data is handed to
    /// restoral orders. A valid proof resets it.
    pub audits_failed_in_a_row: u32,
    /// Restoral orders it has claimed and not completed (at most
    /// `restoral_claims_per_miner_max`).
    pub restoral_claims: u32,
    /// Rent earned for the bytes it held up to `rent_since`, paid at its next valid proof
    /// (forfeited by a missed or invalid one). See `space.rs`.
    pub rent_accrued: u128,
    pub rent_since: u64,
    /// The last audit round in which one of its audits failed (its rent for that round is
    /// forfeited, and the round does not reset `audits_failed_in_a_row`).
    pub failed_round: Option<u64>,
    /// Its restoral claims that expired (claimed, never completed) since the count last
    /// started: at `restoral_expiries_max` it may not claim until `claims_barred_until`. The
    /// count starts again at a bar, or at an expiry `restoral_bar_blocks` after the one before
    /// (a completion in between does not reset it: an easy order cannot launder expiries).
    pub claims_expired: u32,
    pub claims_barred_until: u64,
    pub last_claim_expiry: u64,
    /// The audit period (height / `audit_period_blocks`) of its last loss report, and what
    /// its reports cost in that period (at most `penalty_missing / 2`).
    pub lost_reports_period: u64,
    pub lost_penalty_paid: u128,
    /// The height it registered at. With the chain id and its account it names its idle
    /// replicas (`Ledger::idle_replica_owner`), so files labelled for one registration or one
    /// chain are never certified for another.
    pub registered_at: u64,
    /// Fragments reported stored, per tagger: id → length. Audits sample these.
    pub(crate) held: HeldSets,
}

/// A miner's stored fragments per tagger, with their lattice hash kept as they change, so
/// a miner's entry in the state root costs the same whatever it stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeldSets {
    sets: BTreeMap<Hash32, BTreeMap<FragmentId, u64>>,
    sum: LtHash,
}

impl HeldSets {
    fn element(tagger: &Hash32, fragment: &FragmentId, len_bytes: u64) -> LtHash {
        let mut w = Writer::new();
        w.fixed(tagger).fragment_id(fragment).u64(len_bytes);
        LtHash::of(w.as_bytes())
    }

    fn insert(&mut self, tagger: Hash32, fragment: FragmentId, len_bytes: u64) {
        let previous = self
            .sets
            .entry(tagger)
            .or_default()
            .insert(fragment, len_bytes);
        assert!(previous.is_none(), "a fragment is stored once");
        self.sum
            .add(&HeldSets::element(&tagger, &fragment, len_bytes));
    }

    fn remove(&mut self, tagger: &Hash32, fragment: &FragmentId) {
        let set = self
            .sets
            .get_mut(tagger)
            .expect("stored fragments are held");
        let len_bytes = set.remove(fragment).expect("stored fragments are held");
        if set.is_empty() {
            self.sets.remove(tagger);
        }
        self.sum
            .sub(&HeldSets::element(tagger, fragment, len_bytes));
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The sets read back from a snapshot, their sum computed.
    pub(super) fn from_sets(sets: BTreeMap<Hash32, BTreeMap<FragmentId, u64>>) -> HeldSets {
        let mut held = HeldSets {
            sets,
            sum: LtHash::default(),
        };
        held.sum = held.sum_from_scratch();
        held
    }

    pub fn get(&self, tagger: &Hash32) -> Option<&BTreeMap<FragmentId, u64>> {
        self.sets.get(tagger)
    }

    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, Hash32, BTreeMap<FragmentId, u64>> {
        self.sets.iter()
    }

    pub fn fragments(&self) -> usize {
        self.sets.values().map(BTreeMap::len).sum()
    }

    /// The sum from every element again (the invariants compare it with the kept one).
    fn sum_from_scratch(&self) -> LtHash {
        let mut sum = LtHash::default();
        for (tagger, set) in &self.sets {
            for (fragment, len) in set {
                sum.add(&HeldSets::element(tagger, fragment, *len));
            }
        }
        sum
    }
}

impl Miner {
    pub fn idle_bytes(&self) -> u64 {
        self.declared_bytes - self.locked_bytes - self.active_bytes
    }

    pub fn held_fragments(&self) -> usize {
        self.held.fragments()
    }

    /// What a miner's state-root entry hashes: its fields and its held sets' sum.
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.encode_fields(w);
        w.fixed(&self.held.sum.checksum());
    }

    /// Every field but the held sets (a snapshot writes those whole, the root their sum).
    pub(crate) fn encode_fields(&self, w: &mut Writer) {
        w.bytes(&self.peer_id)
            .str(&self.endpoint)
            .u64(self.declared_bytes)
            .u64(self.locked_bytes)
            .u64(self.active_bytes)
            .u128(self.collateral);
        match self.state {
            MinerState::Active => w.u8(0),
            MinerState::Exiting { since } => w.u8(1).u64(since),
        };
        w.u32(self.reputation)
            .u32(self.audits_failed_in_a_row)
            .u32(self.restoral_claims)
            .u128(self.rent_accrued)
            .u64(self.rent_since);
        match self.failed_round {
            Some(round) => w.u8(1).u64(round),
            None => w.u8(0),
        };
        w.u32(self.claims_expired)
            .u64(self.claims_barred_until)
            .u64(self.last_claim_expiry)
            .u64(self.lost_reports_period)
            .u128(self.lost_penalty_paid)
            .u64(self.registered_at);
    }

    /// Brings the rent it earned up to `clock` (before its stored bytes change).
    pub(crate) fn accrue_rent(&mut self, clock: RentClock) {
        let blocks = clock.height.saturating_sub(self.rent_since);
        self.rent_accrued = self
            .rent_accrued
            .saturating_add(clock.rent(self.active_bytes, blocks));
        self.rent_since = clock.height;
    }

    /// A fragment it was assigned (locked) is now stored (active, and audited).
    fn store_fragment(
        &mut self,
        clock: RentClock,
        tagger: Hash32,
        fragment_id: FragmentId,
        fragment_bytes: u64,
    ) {
        self.accrue_rent(clock);
        self.locked_bytes -= fragment_bytes;
        self.active_bytes += fragment_bytes;
        self.held.insert(tagger, fragment_id, fragment_bytes);
    }

    /// It is no longer responsible for a fragment, stored or only assigned.
    fn drop_fragment(
        &mut self,
        clock: RentClock,
        tagger: &Hash32,
        fragment_id: &FragmentId,
        fragment_bytes: u64,
        stored: bool,
    ) {
        if stored {
            self.accrue_rent(clock);
            self.active_bytes -= fragment_bytes;
            self.held.remove(tagger, fragment_id);
        } else {
            self.locked_bytes -= fragment_bytes;
        }
    }

    fn assert_space(&self) {
        if let Err(broken) = self.check_space() {
            panic!("{broken}");
        }
    }

    fn check_space(&self) -> Result<(), String> {
        check!(
            self.locked_bytes
                .checked_add(self.active_bytes)
                .is_some_and(|used| used <= self.declared_bytes),
            "miner space: locked {} + active {} > declared {}",
            self.locked_bytes,
            self.active_bytes,
            self.declared_bytes
        );
        Ok(())
    }
}

/// Indexes derived from the tables (not hashed into the state root, checked by
/// [`Ledger::assert_storage_invariants`]), so that no rule scans a whole table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Indexes {
    /// Miner → the fragments it is responsible for (assigned or stored).
    pub assigned: BTreeMap<AccountId, BTreeSet<FragmentId>>,
    /// (height at which it expires, file) for every pending file.
    pub pending_until: BTreeSet<(u64, Hash32)>,
    /// (height at which it expires, fragment) for every claimed restoral order.
    pub claims_until: BTreeSet<(u64, FragmentId)>,
    /// (height at which it is lost, file) for every file at risk.
    pub lost_at: BTreeSet<(u64, Hash32)>,
    /// Every registered miner, in id order: placement draws from it by index.
    pub miner_ids: Vec<AccountId>,
    /// Owner → the files it owns (their bytes use its lease).
    pub owned: BTreeMap<AccountId, BTreeSet<Hash32>>,
    /// (last height its files are kept, owner) for every lease.
    pub lease_ends: BTreeSet<(u64, AccountId)>,
}

impl Indexes {
    fn assign(&mut self, miner: AccountId, fragment: FragmentId) {
        self.assigned.entry(miner).or_default().insert(fragment);
    }

    fn unassign(&mut self, miner: &AccountId, fragment: &FragmentId) {
        let set = self
            .assigned
            .get_mut(miner)
            .expect("assigned fragments are indexed");
        assert!(set.remove(fragment), "assigned fragments are indexed");
        if set.is_empty() {
            self.assigned.remove(miner);
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TaggerRecord {
    pub key: TaggerKey,
    pub owner: AccountId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentInfo {
    pub id: FragmentId,
    /// The miner responsible for it; `None` while a restoral order is open for it.
    pub miner: Option<AccountId>,
    pub stored: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub segment_id: Hash32,
    pub fragments: Vec<FragmentInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Declared; waiting for every column to be reported.
    Pending,
    /// Every fragment of every segment reported stored.
    Active,
    /// Was active; `unheld` fragments are under restoral orders. `segments_at_risk` of its
    /// segments have more than a third of their fragments under restoral; while there is
    /// one, the file is lost at `lost_at` (set when the first one appeared) unless rebuilt.
    Recovery {
        unheld: u32,
        segments_at_risk: u32,
        lost_at: Option<u64>,
    },
    /// Lost at this height: no miner holds any of it, no order rebuilds it; its owners pay
    /// nothing for it and see it so until they delete it.
    Lost { at: u64 },
}

impl FileState {
    /// The name commands show.
    pub fn name(&self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::Active => "active",
            FileState::Recovery {
                lost_at: Some(_), ..
            } => "at-risk",
            FileState::Recovery { .. } => "recovery",
            FileState::Lost { .. } => "lost",
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match *self {
            FileState::Pending => w.u8(0),
            FileState::Active => w.u8(1),
            FileState::Recovery {
                unheld,
                segments_at_risk,
                lost_at,
            } => {
                w.u8(2).u32(unheld).u32(segments_at_risk);
                match lost_at {
                    Some(at) => w.u8(1).u64(at),
                    None => w.u8(0),
                }
            }
            FileState::Lost { at } => w.u8(3).u64(at),
        };
    }
}

/// Whether `unheld` fragments under restoral of a segment of `count` put it at risk: more
/// than a third (the seed's lost-file rule).
pub fn segment_at_risk(unheld: usize, count: usize) -> bool {
    3 * unheld > count
}

/// One owner of a file: the name it gave the file, and the height it became an owner (the
/// declaring block for the first; a later block for an owner that joined an existing file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    /// The owner's bucket the file is listed in; empty for none.
    pub bucket: String,
    pub since: u64,
}

/// A file on the ledger (the seed's FileInfo, with its owners' UserBriefs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub size_bytes: u64,
    pub fragment_bytes: u64,
    pub tagger: Hash32,
    /// Owner → the name it gave the file and since when it owns it.
    pub owners: BTreeMap<AccountId, Owner>,
    pub segments: Vec<SegmentInfo>,
    pub state: FileState,
    pub declared_at: u64,
    /// The uploader's client header, as declared (see `Call::DeclareFile`).
    pub meta: Vec<u8>,
}

impl FileInfo {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.size_bytes)
            .u64(self.fragment_bytes)
            .fixed(&self.tagger)
            .count(self.owners.len());
        for (account, owner) in &self.owners {
            w.fixed(&account.0)
                .str(&owner.name)
                .str(&owner.bucket)
                .u64(owner.since);
        }
        w.count(self.segments.len());
        for segment in &self.segments {
            w.fixed(&segment.segment_id).count(segment.fragments.len());
            for fragment in &segment.fragments {
                w.fragment_id(&fragment.id);
                match fragment.miner {
                    Some(miner) => w.u8(1).fixed(&miner.0),
                    None => w.u8(0),
                };
                w.bool(fragment.stored);
            }
        }
        self.state.encode(w);
        w.u64(self.declared_at).bytes(&self.meta);
    }

    /// The bytes its miners store: every fragment of every segment (what an owner's lease
    /// pays for); nothing once it is lost.
    pub fn stored_bytes(&self) -> u64 {
        if matches!(self.state, FileState::Lost { .. }) {
            return 0;
        }
        self.fragment_count() * self.fragment_bytes
    }

    /// Fragments of `segment` under restoral (no holder).
    pub fn unheld_in(&self, segment: usize) -> usize {
        self.segments[segment]
            .fragments
            .iter()
            .filter(|f| f.miner.is_none())
            .count()
    }

    /// Fragments over all its segments.
    pub fn fragment_count(&self) -> u64 {
        self.segments.iter().map(|s| s.fragments.len() as u64).sum()
    }

    fn all_stored(&self) -> bool {
        self.segments
            .iter()
            .all(|s| s.fragments.iter().all(|f| f.stored))
    }
}

/// Where a fragment id lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragmentPlace {
    pub file_id: Hash32,
    pub segment: u32,
    pub column: u16,
}

/// A fragment to rebuild from any `data_fragments` others of its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoralOrder {
    pub file_id: Hash32,
    pub segment: u32,
    pub column: u16,
    pub lost_by: AccountId,
    pub opened_at: u64,
    /// The miner rebuilding it and the height its claim expires.
    pub claim: Option<(AccountId, u64)>,
}

impl RestoralOrder {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.fixed(&self.file_id)
            .u32(self.segment)
            .u16(self.column)
            .fixed(&self.lost_by.0)
            .u64(self.opened_at);
        match self.claim {
            Some((miner, until)) => w.u8(1).fixed(&miner.0).u64(until),
            None => w.u8(0),
        };
    }
}

impl Ledger {
    pub fn miner(&self, id: &AccountId) -> Option<&Miner> {
        self.miners.get(id)
    }

    /// The registry: every miner's account, PeerId bytes and endpoint (node discovery).
    pub fn miners(&self) -> impl Iterator<Item = (&AccountId, &Miner)> {
        self.miners.iter()
    }

    /// Where a fragment lives on the ledger: its file, segment index and column.
    pub fn fragment_place(&self, id: &FragmentId) -> Option<(Hash32, u32, u16)> {
        self.fragments
            .get(id)
            .map(|p| (p.file_id, p.segment, p.column))
    }

    /// The fragments `miner` is responsible for (assigned or stored), in id order.
    pub fn assigned_to(&self, miner: &AccountId) -> impl Iterator<Item = &FragmentId> {
        self.indexes.assigned.get(miner).into_iter().flatten()
    }

    pub fn file(&self, id: &Hash32) -> Option<&FileInfo> {
        self.files.get(id)
    }

    pub fn files(&self) -> impl Iterator<Item = (&Hash32, &FileInfo)> {
        self.files.iter()
    }

    pub fn restoral(&self, fragment_id: &FragmentId) -> Option<&RestoralOrder> {
        self.restorals.get(fragment_id)
    }

    /// Open restoral orders from the first at or after `start`, wrapping around: miners
    /// choosing orders each start somewhere else, so that they rarely race for one, and each
    /// reads only as many as it looks at.
    pub fn restorals_from(
        &self,
        start: &FragmentId,
    ) -> impl Iterator<Item = (&FragmentId, &RestoralOrder)> {
        self.restorals
            .range(*start..)
            .chain(self.restorals.range(..*start))
    }

    pub fn restorals(&self) -> impl Iterator<Item = (&FragmentId, &RestoralOrder)> {
        self.restorals.iter()
    }

    /// Registered taggers' ids (a client names one in its order).
    pub fn tagger_ids(&self) -> impl Iterator<Item = &Hash32> {
        self.taggers.iter().map(|(id, _)| id)
    }

    pub fn tagger_key(&self, id: &Hash32) -> Option<&cess_proofs::PublicKey> {
        self.taggers.get(id).map(|t| &*t.key)
    }

    /// Checks every invariant of the storage tables; panics with the broken one. Tests and
    /// simulations call it after every block.
    pub fn assert_storage_invariants(&self) {
        if let Err(broken) = self.check_storage_invariants() {
            panic!("{broken}");
        }
    }

    /// Every invariant of the storage tables, and every derived index against the tables it
    /// is derived from (the state root covers only the tables): the first broken one. What
    /// decoding a snapshot runs, so a snapshot from anywhere is as consistent as one kept
    /// block by block.
    pub fn check_storage_invariants(&self) -> Result<(), String> {
        self.check_delegate_invariants()?;
        self.check_bucket_invariants()?;
        self.check_idle_invariants()?;
        self.check_unbonding_invariants()?;
        self.check_validator_indexes()?;
        let mut locked: BTreeMap<AccountId, u64> = BTreeMap::new();
        let mut active: BTreeMap<AccountId, u64> = BTreeMap::new();
        let mut places = 0usize;
        for (file_id, file) in &self.files {
            check!(!file.owners.is_empty(), "a file without owners is deleted");
            for (s, segment) in file.segments.iter().enumerate() {
                let mut holders = BTreeSet::new();
                for (c, fragment) in segment.fragments.iter().enumerate() {
                    places += 1;
                    let place = self
                        .fragments
                        .get(&fragment.id)
                        .ok_or("fragment not indexed")?;
                    check_eq!(
                        (place.file_id, place.segment as usize, place.column as usize),
                        (*file_id, s, c),
                        "fragment index points at its place"
                    );
                    match fragment.miner {
                        Some(miner) => {
                            check!(
                                holders.insert(miner),
                                "a miner holds two fragments of a segment"
                            );
                            let m = self.miners.get(&miner).ok_or("holder not registered")?;
                            if fragment.stored {
                                *active.entry(miner).or_default() += file.fragment_bytes;
                                check_eq!(
                                    m.held
                                        .get(&file.tagger)
                                        .and_then(|set| set.get(&fragment.id)),
                                    Some(&file.fragment_bytes),
                                    "stored fragment in its miner's audited set"
                                );
                            } else {
                                *locked.entry(miner).or_default() += file.fragment_bytes;
                            }
                        }
                        None => check!(
                            self.restorals.contains_key(&fragment.id)
                                != matches!(file.state, FileState::Lost { .. }),
                            "an unheld fragment has a restoral order (none once its file is lost)"
                        ),
                    }
                }
            }
            self.check_file_state(file_id, file)?;
        }
        check_eq!(
            places,
            self.fragments.len(),
            "no stale fragment index entries"
        );
        for (fragment_id, order) in &self.restorals {
            let place = self
                .fragments
                .get(fragment_id)
                .ok_or("restoral of a gone fragment")?;
            check_eq!(place.file_id, order.file_id);
            check_eq!(
                (place.segment, place.column),
                (order.segment, order.column),
                "restoral order names its fragment's place"
            );
            let unheld = self
                .files
                .get(&order.file_id)
                .and_then(|f| f.segments.get(order.segment as usize))
                .and_then(|s| s.fragments.get(usize::from(order.column)))
                .is_some_and(|f| f.miner.is_none());
            check!(unheld, "a fragment under restoral has no holder");
            if let Some((claimer, _)) = order.claim {
                let file = self
                    .files
                    .get(&order.file_id)
                    .ok_or("restoral of a gone file")?;
                *locked.entry(claimer).or_default() += file.fragment_bytes;
            }
        }
        // Counted in one pass each (a scan per miner would be quadratic in a large state).
        let mut stored_by: BTreeMap<AccountId, usize> = BTreeMap::new();
        for fragment in self
            .files
            .values()
            .flat_map(|f| f.segments.iter().flat_map(|s| s.fragments.iter()))
        {
            if let (true, Some(miner)) = (fragment.stored, fragment.miner) {
                *stored_by.entry(miner).or_default() += 1;
            }
        }
        let mut claims_by: BTreeMap<AccountId, usize> = BTreeMap::new();
        for (miner, _) in self.restorals.values().filter_map(|o| o.claim) {
            *claims_by.entry(miner).or_default() += 1;
        }
        let mut peer_ids = BTreeMap::new();
        for (id, miner) in &self.miners {
            check!(
                peer_ids.insert(miner.peer_id.clone(), *id).is_none(),
                "two miners with one peer id"
            );
            miner.check_space()?;
            check_eq!(
                miner.locked_bytes,
                locked.get(id).copied().unwrap_or(0),
                "locked bytes of {id:?}"
            );
            check_eq!(
                miner.active_bytes,
                active.get(id).copied().unwrap_or(0),
                "active bytes of {id:?}"
            );
            check_eq!(
                miner.held.sum,
                miner.held.sum_from_scratch(),
                "held hash of {id:?}"
            );
            let held: usize = miner.held_fragments();
            let stored_by_miner = stored_by.get(id).copied().unwrap_or(0);
            check_eq!(held, stored_by_miner, "audited set of {id:?}");
            let claims = claims_by.get(id).copied().unwrap_or(0);
            check_eq!(miner.restoral_claims as usize, claims, "claims of {id:?}");
            check!(
                miner.claims_expired < self.params.restoral_expiries_max,
                "expired claims of {id:?} reset at the bar"
            );
        }
        let mut assigned: BTreeMap<AccountId, BTreeSet<FragmentId>> = BTreeMap::new();
        let mut pending = BTreeSet::new();
        for (file_id, file) in &self.files {
            for fragment in file.segments.iter().flat_map(|s| &s.fragments) {
                if let Some(miner) = fragment.miner {
                    assigned.entry(miner).or_default().insert(fragment.id);
                }
            }
            if file.state == FileState::Pending {
                pending.insert((
                    file.declared_at + self.params.order_validity_blocks,
                    *file_id,
                ));
            }
        }
        check_eq!(
            assigned,
            self.indexes.assigned,
            "index of assigned fragments"
        );
        check_eq!(
            pending,
            self.indexes.pending_until,
            "index of pending files"
        );
        let claims: BTreeSet<(u64, FragmentId)> = self
            .restorals
            .iter()
            .filter_map(|(id, o)| o.claim.map(|(_, until)| (until, *id)))
            .collect();
        check_eq!(claims, self.indexes.claims_until, "index of claims");
        let at_risk: BTreeSet<(u64, Hash32)> = self
            .files
            .iter()
            .filter_map(|(id, f)| match f.state {
                FileState::Recovery {
                    lost_at: Some(at), ..
                } => Some((at, *id)),
                _ => None,
            })
            .collect();
        check_eq!(at_risk, self.indexes.lost_at, "index of files at risk");
        let ids: Vec<AccountId> = self.miners.iter().map(|(id, _)| *id).collect();
        check_eq!(ids, self.indexes.miner_ids, "index of miners");
        let mut owned: BTreeMap<AccountId, BTreeSet<Hash32>> = BTreeMap::new();
        let mut used: BTreeMap<AccountId, u64> = BTreeMap::new();
        for (file_id, file) in &self.files {
            for owner in file.owners.keys() {
                owned.entry(*owner).or_default().insert(*file_id);
                *used.entry(*owner).or_default() += file.stored_bytes();
            }
        }
        check_eq!(owned, self.indexes.owned, "index of owned files");
        let grace = self.params.lease_grace_blocks;
        let mut ends = BTreeSet::new();
        for (owner, lease) in &self.leases {
            check_eq!(
                lease.used_bytes,
                used.get(owner).copied().unwrap_or(0),
                "space used by {owner:?}"
            );
            check!(lease.used_bytes <= lease.capacity_bytes(), "lease overused");
            ends.insert((lease.until + grace, *owner));
        }
        for owner in used.keys() {
            check!(self.leases.contains_key(owner), "every owner holds a lease");
        }
        check_eq!(ends, self.indexes.lease_ends, "index of lease ends");
        check_eq!(peer_ids, self.peer_ids, "index of peer ids");
        Ok(())
    }

    /// A file's state against its fragments: pending until all are stored; active with every
    /// fragment stored; in recovery with its unheld fragments and segments at risk counted as
    /// they are, a countdown exactly while a segment is at risk; lost with no holder at all.
    fn check_file_state(&self, file_id: &Hash32, file: &FileInfo) -> Result<(), String> {
        let count = |f: &dyn Fn(&FragmentInfo) -> bool| {
            file.segments
                .iter()
                .flat_map(|s| &s.fragments)
                .filter(|x| f(x))
                .count()
        };
        let unheld = count(&|f| f.miner.is_none());
        let held_unstored = count(&|f| f.miner.is_some() && !f.stored);
        let risky = (0..file.segments.len())
            .filter(|&s| segment_at_risk(file.unheld_in(s), file.segments[s].fragments.len()))
            .count();
        match file.state {
            FileState::Pending => check!(!file.all_stored(), "a fully stored file is active"),
            FileState::Active => check!(file.all_stored(), "an active file is fully stored"),
            FileState::Recovery {
                unheld: kept,
                segments_at_risk,
                lost_at,
            } => {
                check!(
                    unheld > 0,
                    "a file in recovery has fragments under restoral"
                );
                check_eq!(kept as usize, unheld, "unheld fragments of {file_id:?}");
                check_eq!(
                    held_unstored,
                    0,
                    "held fragments of a recovering file are stored"
                );
                check_eq!(
                    segments_at_risk as usize,
                    risky,
                    "segments at risk of {file_id:?}"
                );
                check_eq!(lost_at.is_some(), risky > 0, "a countdown while at risk");
            }
            FileState::Lost { .. } => {
                check_eq!(
                    unheld,
                    file.fragment_count() as usize,
                    "a lost file has no holder"
                );
            }
        }
        Ok(())
    }

    pub(super) fn register_miner(
        &mut self,
        signer: AccountId,
        peer_id: &[u8],
        endpoint: &str,
        declared_bytes: u64,
        collateral: u128,
    ) -> Result<(), TxError> {
        if self.miners.contains_key(&signer) {
            return Err(TxError::AlreadyRegistered);
        }
        let own = signer.peer_id().ok_or(TxError::PeerIdMismatch)?;
        if own.to_bytes() != peer_id {
            return Err(TxError::PeerIdMismatch);
        }
        if self.peer_ids.contains_key(peer_id) {
            return Err(TxError::PeerIdTaken);
        }
        check_endpoint(endpoint)?;
        if collateral < self.params.miner_collateral_min {
            return Err(TxError::CollateralTooLow {
                min: self.params.miner_collateral_min,
                got: collateral,
            });
        }
        self.can_pay(&signer, collateral)?;
        self.debit(signer, collateral);
        self.peer_ids.insert(peer_id.to_vec(), signer);
        self.miners.insert(
            signer,
            Miner {
                peer_id: peer_id.to_vec(),
                endpoint: endpoint.to_owned(),
                declared_bytes,
                locked_bytes: 0,
                active_bytes: 0,
                collateral,
                state: MinerState::Active,
                reputation: 500,
                audits_failed_in_a_row: 0,
                restoral_claims: 0,
                rent_accrued: 0,
                rent_since: self.height,
                failed_round: None,
                claims_expired: 0,
                claims_barred_until: 0,
                last_claim_expiry: 0,
                lost_reports_period: 0,
                lost_penalty_paid: 0,
                registered_at: self.height,
                held: HeldSets::default(),
            },
        );
        let at = self
            .indexes
            .miner_ids
            .binary_search(&signer)
            .expect_err("a new miner is not indexed");
        self.indexes.miner_ids.insert(at, signer);
        Ok(())
    }

    pub(super) fn update_miner(
        &mut self,
        signer: AccountId,
        endpoint: &str,
        declared_bytes: u64,
    ) -> Result<(), TxError> {
        let miner = self.miners.get(&signer).ok_or(TxError::NotMiner)?;
        check_endpoint(endpoint)?;
        let used = miner.locked_bytes + miner.active_bytes;
        if declared_bytes < used {
            return Err(TxError::DeclaredBelowUsed {
                declared: declared_bytes,
                used,
            });
        }
        let miner = self.miners.get_mut(&signer).expect("checked above");
        miner.endpoint = endpoint.to_owned();
        miner.declared_bytes = declared_bytes;
        Ok(())
    }

    /// Leaving: every fragment the miner is responsible for becomes a restoral order, its
    /// claims on others' restorals are released, and no new data is placed on it.
    pub(super) fn exit_miner(&mut self, signer: AccountId) -> Result<(), TxError> {
        let miner = self.miners.get(&signer).ok_or(TxError::NotMiner)?;
        if miner.state != MinerState::Active {
            return Err(TxError::MinerExiting);
        }
        // Its open audits stay as they are: it still has the data, and answers for it (or
        // is penalised) before it can withdraw.
        self.release_all(signer);
        let claimed: Vec<FragmentId> = self
            .restorals
            .iter()
            .filter(|(_, o)| o.claim.is_some_and(|(m, _)| m == signer))
            .map(|(id, _)| *id)
            .collect();
        for fragment_id in claimed {
            self.release_claim(&fragment_id);
        }
        let height = self.height;
        let miner = self.miners.get_mut(&signer).expect("checked above");
        assert_eq!(miner.locked_bytes + miner.active_bytes, 0);
        miner.state = MinerState::Exiting { since: height };
        Ok(())
    }

    /// Every fragment `miner` is responsible for becomes a restoral order (by the index: the
    /// cost is the miner's fragments, not the ledger's). Returns how many.
    pub(super) fn release_all(&mut self, miner: AccountId) -> usize {
        let responsible: Vec<FragmentId> = self
            .indexes
            .assigned
            .get(&miner)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        for fragment_id in &responsible {
            self.release_fragment(miner, fragment_id);
        }
        responsible.len()
    }

    /// Adds collateral from the signer's balance (a miner under the floor receives no new
    /// data until it tops up).
    pub(super) fn add_collateral(
        &mut self,
        signer: AccountId,
        amount: u128,
    ) -> Result<(), TxError> {
        if amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        if !self.miners.contains_key(&signer) {
            return Err(TxError::NotMiner);
        }
        self.can_pay(&signer, amount)?;
        self.debit(signer, amount);
        let miner = self.miners.get_mut(&signer).expect("checked above");
        miner.collateral += amount;
        Ok(())
    }

    pub(super) fn withdraw_miner(&mut self, signer: AccountId) -> Result<(), TxError> {
        let miner = self.miners.get(&signer).ok_or(TxError::NotMiner)?;
        let MinerState::Exiting { since } = miner.state else {
            return Err(TxError::MinerNotExiting);
        };
        let until = since.saturating_add(self.params.miner_cooling_off_blocks);
        if self.height < until {
            return Err(TxError::CoolingOff { until });
        }
        // An open audit must close (answered or missed, and so penalized) first: exiting is
        // no escape from an audit.
        if let Some(until) = self
            .audits
            .iter()
            .filter(|((_, miner, _), _)| *miner == signer)
            .map(|(_, audit)| audit.deadline + 1)
            .max()
        {
            return Err(TxError::CoolingOff { until });
        }
        if let Some(audit) = self.idle.get(&signer).and_then(|i| i.audit) {
            return Err(TxError::CoolingOff {
                until: audit.deadline + 1,
            });
        }
        // Nor is withdrawing between a round's opening and its draw.
        if let Some(draw) = self.idle.get(&signer).and_then(|i| i.draw) {
            return Err(TxError::CoolingOff {
                until: draw
                    .at
                    .saturating_add(self.params.pois_space_deadline_blocks)
                    .saturating_add(1),
            });
        }
        // Its fragments still under restoral are paid for: `penalty_lost` each, at most one
        // missed audit's penalty (what hiding the loss would have cost), so leaving before the
        // network rebuilt them is never cheaper than waiting, and an honest leaver's
        // collateral is not eaten by the network's pace. (One pass over the open orders,
        // once per miner: the call removes the miner.)
        let unrestored = self
            .restorals
            .values()
            .filter(|o| o.lost_by == signer)
            .count();
        self.slash(
            signer,
            self.params
                .penalty_lost
                .saturating_mul(unrestored as u128)
                .min(self.params.penalty_missing),
            0,
        );
        let miner = self.miners.remove(&signer).expect("checked above");
        self.peer_ids.remove(&miner.peer_id);
        let at = self
            .indexes
            .miner_ids
            .binary_search(&signer)
            .expect("miners are indexed");
        self.indexes.miner_ids.remove(at);
        self.forget_idle(&signer);
        self.credit(signer, miner.collateral);
        Ok(())
    }

    /// A tagger approved by more than two thirds of the current validators. The checks run
    /// cheapest first: the id (a hash of the bytes) is not taken, the approvals name distinct
    /// current validators and are enough, each signature verifies, and only then is the key
    /// (up to 8193 points) decoded.
    pub(super) fn register_tagger(
        &mut self,
        signer: AccountId,
        key_bytes: &[u8],
        approvals: &[TaggerApproval],
    ) -> Result<(), TxError> {
        let id = cess_proofs::PublicKey::id_of_encoding(key_bytes).0;
        if self.taggers.contains_key(&id) {
            return Err(TxError::AlreadyRegistered);
        }
        let need = self.validators.len() * 2 / 3 + 1;
        let mut approvers = BTreeSet::new();
        for approval in approvals {
            if !self
                .validators
                .iter()
                .any(|v| v.account == approval.validator)
            {
                return Err(TxError::TaggerNotApproved(
                    "an approval is not from a validator",
                ));
            }
            if !approvers.insert(approval.validator) {
                return Err(TxError::TaggerNotApproved("a validator approves twice"));
            }
        }
        if approvers.len() < need {
            return Err(TxError::TaggerNotApproved(
                "fewer than two thirds of the validators approve",
            ));
        }
        for approval in approvals {
            let validator = self
                .validators
                .iter()
                .find(|v| v.account == approval.validator)
                .expect("checked above");
            if !approval.verify(&validator.key, &self.chain_id, &id, &signer) {
                return Err(TxError::TaggerNotApproved("an approval does not verify"));
            }
        }
        self.insert_tagger(signer, key_bytes)
    }

    /// Decode and register (genesis taggers come here directly).
    pub(super) fn insert_tagger(
        &mut self,
        owner: AccountId,
        key_bytes: &[u8],
    ) -> Result<(), TxError> {
        let key = cess_proofs::PublicKey::decode(key_bytes)
            .map_err(|e| TxError::BadTaggerKey(e.to_string()))?;
        let id = key.id().0;
        if id != cess_proofs::PublicKey::id_of_encoding(key_bytes).0 {
            return Err(TxError::BadTaggerKey("not the canonical encoding".into()));
        }
        if self.taggers.contains_key(&id) {
            return Err(TxError::AlreadyRegistered);
        }
        self.taggers.insert(
            id,
            TaggerRecord {
                key: Arc::new(key),
                owner,
            },
        );
        Ok(())
    }

    /// A storage order, or (same file id) one more owner of an existing file. The shape is
    /// checked first, then the signer's space, and last the placement (the one check that
    /// reads the registry).
    pub(super) fn declare_file(&mut self, signer: AccountId, call: &Call) -> Result<(), TxError> {
        let Call::DeclareFile {
            file_id,
            file_name,
            bucket,
            size_bytes,
            fragment_bytes,
            tagger,
            segments,
            meta,
        } = call
        else {
            unreachable!("dispatched on the call kind")
        };
        if let Some(file) = self.files.get(file_id) {
            if file.owners.contains_key(&signer) {
                return Err(TxError::AlreadyOwner);
            }
            if matches!(file.state, FileState::Lost { .. }) {
                return Err(TxError::FileLost);
            }
            let bytes = file.stored_bytes();
            self.check_space(&signer, bytes)?;
            self.check_bucket(&signer, bucket)?;
            self.files
                .get_mut(file_id)
                .expect("checked above")
                .owners
                .insert(
                    signer,
                    Owner {
                        name: file_name.clone(),
                        bucket: bucket.clone(),
                        since: self.height,
                    },
                );
            self.use_space(signer, *file_id, bytes);
            self.bucket_file_added(signer, bucket);
            return Ok(());
        }
        let columns = usize::from(self.params.fragments_per_segment);
        if segments.is_empty() {
            return Err(TxError::BadOrder("no segments"));
        }
        if *fragment_bytes == 0 || *fragment_bytes > self.params.fragment_bytes_max {
            return Err(TxError::BadOrder(
                "fragment size outside 1..=fragment_bytes_max",
            ));
        }
        let capacity = (segments.len() as u64)
            .checked_mul(*fragment_bytes)
            .and_then(|b| b.checked_mul(u64::from(self.params.data_fragments)))
            .ok_or(TxError::Overflow)?;
        // An empty file (an empty S3 object) is one segment, as the codec makes it.
        if (*size_bytes == 0 && segments.len() != 1) || *size_bytes > capacity {
            return Err(TxError::BadOrder("file size does not fit its segments"));
        }
        if !self.taggers.contains_key(tagger) {
            return Err(TxError::UnknownTagger);
        }
        let mut ids = BTreeSet::new();
        for segment in segments {
            if segment.fragments.len() != columns {
                return Err(TxError::BadOrder(
                    "a segment must list every fragment column",
                ));
            }
            for fragment in &segment.fragments {
                if !ids.insert(*fragment) {
                    return Err(TxError::BadOrder(
                        "a fragment id appears twice in the order",
                    ));
                }
                if self.fragments.contains_key(fragment) {
                    return Err(TxError::FragmentTaken);
                }
            }
        }
        let per_miner = (segments.len() as u64)
            .checked_mul(*fragment_bytes)
            .ok_or(TxError::Overflow)?;
        let stored_bytes = per_miner
            .checked_mul(columns as u64)
            .ok_or(TxError::Overflow)?;
        self.check_space(&signer, stored_bytes)?;
        self.check_bucket(&signer, bucket)?;
        let miners = self.place_columns(file_id, per_miner)?;

        // Checked: place it.
        for miner_id in &miners {
            let miner = self.miners.get_mut(miner_id).expect("checked above");
            miner.locked_bytes += per_miner;
            miner.assert_space();
        }
        let mut infos = Vec::with_capacity(segments.len());
        for (s, segment) in segments.iter().enumerate() {
            let mut fragments = Vec::with_capacity(columns);
            for (c, fragment) in segment.fragments.iter().enumerate() {
                self.fragments.insert(
                    *fragment,
                    FragmentPlace {
                        file_id: *file_id,
                        segment: s as u32,
                        column: c as u16,
                    },
                );
                fragments.push(FragmentInfo {
                    id: *fragment,
                    miner: Some(miners[c]),
                    stored: false,
                });
                self.indexes.assign(miners[c], *fragment);
            }
            infos.push(SegmentInfo {
                segment_id: segment.segment_id,
                fragments,
            });
        }
        self.files.insert(
            *file_id,
            FileInfo {
                size_bytes: *size_bytes,
                fragment_bytes: *fragment_bytes,
                tagger: *tagger,
                owners: BTreeMap::from([(
                    signer,
                    Owner {
                        name: file_name.clone(),
                        bucket: bucket.clone(),
                        since: self.height,
                    },
                )]),
                segments: infos,
                state: FileState::Pending,
                declared_at: self.height,
                meta: meta.clone(),
            },
        );
        self.indexes
            .pending_until
            .insert((self.height + self.params.order_validity_blocks, *file_id));
        self.use_space(signer, *file_id, stored_bytes);
        self.bucket_file_added(signer, bucket);
        Ok(())
    }

    /// Draws the order's miners: `fragments_per_segment` distinct active miners above the
    /// collateral floor with `per_miner` idle bytes, uniformly from those able, with the
    /// ledger's randomness (this block's, so no uploader knows it when it signs). Draws by
    /// index from the registry and skips the unable; when too few are able for that to
    /// finish within a bounded number of draws, one pass over the registry picks the rest
    /// (the pass costs the registry's size, and happens only when space is scarce).
    fn place_columns(&self, file_id: &Hash32, per_miner: u64) -> Result<Vec<AccountId>, TxError> {
        const DRAWS_PER_COLUMN: u64 = 8;
        let columns = usize::from(self.params.fragments_per_segment);
        let ids = &self.indexes.miner_ids;
        let able = |id: &AccountId| {
            let miner = &self.miners[id];
            miner.state == MinerState::Active
                && miner.collateral >= self.params.miner_collateral_min
                && miner.idle_bytes() >= per_miner
        };
        let seed = hash(b"cess-ledger/1 placement\0", &[&self.randomness, file_id]);
        let mut chosen: Vec<AccountId> = Vec::with_capacity(columns);
        if !ids.is_empty() {
            for draw in 0..columns as u64 * DRAWS_PER_COLUMN {
                if chosen.len() == columns {
                    break;
                }
                let h = hash(
                    b"cess-ledger/1 placement draw\0",
                    &[&seed, &draw.to_le_bytes()],
                );
                let wide = u128::from_le_bytes(h[..16].try_into().expect("16 bytes"));
                let id = ids[(wide % ids.len() as u128) as usize];
                if !chosen.contains(&id) && able(&id) {
                    chosen.push(id);
                }
            }
        }
        if chosen.len() < columns {
            let mut rest: Vec<(Hash32, AccountId)> = ids
                .iter()
                .filter(|id| !chosen.contains(id) && able(id))
                .map(|id| {
                    (
                        hash(b"cess-ledger/1 placement rest\0", &[&seed, &id.0]),
                        *id,
                    )
                })
                .collect();
            let missing = columns - chosen.len();
            if rest.len() < missing {
                return Err(TxError::NotEnoughMiners {
                    needed: columns,
                    able: chosen.len() + rest.len(),
                });
            }
            rest.sort_unstable();
            chosen.extend(rest.into_iter().take(missing).map(|(_, id)| id));
        }
        Ok(chosen)
    }

    /// The signer stores every fragment of `column` it is responsible for.
    pub(super) fn report_stored(
        &mut self,
        signer: AccountId,
        file_id: &Hash32,
        column: u16,
    ) -> Result<(), TxError> {
        let clock = self.rent_clock();
        let file = self.files.get(file_id).ok_or(TxError::UnknownFile)?;
        if !self.miners.contains_key(&signer) {
            return Err(TxError::NotMiner);
        }
        let targets: Vec<usize> = file
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.fragments
                    .get(usize::from(column))
                    .is_some_and(|f| f.miner == Some(signer) && !f.stored)
            })
            .map(|(i, _)| i)
            .collect();
        if targets.is_empty() {
            return Err(TxError::NothingToReport);
        }
        let fragment_bytes = file.fragment_bytes;
        let tagger = file.tagger;
        let file = self.files.get_mut(file_id).expect("checked above");
        let miner = self.miners.get_mut(&signer).expect("checked above");
        for s in targets {
            let fragment = &mut file.segments[s].fragments[usize::from(column)];
            fragment.stored = true;
            miner.store_fragment(clock, tagger, fragment.id, fragment_bytes);
        }
        miner.assert_space();
        if file.state == FileState::Pending && file.all_stored() {
            file.state = FileState::Active;
            let expiry = file.declared_at + self.params.order_validity_blocks;
            assert!(self.indexes.pending_until.remove(&(expiry, *file_id)));
            self.events.push(Event::FileActive { file_id: *file_id });
        }
        Ok(())
    }

    pub(super) fn delete_file(
        &mut self,
        signer: AccountId,
        file_id: &Hash32,
    ) -> Result<(), TxError> {
        let file = self.files.get(file_id).ok_or(TxError::UnknownFile)?;
        if !file.owners.contains_key(&signer) {
            return Err(TxError::NotOwner);
        }
        self.leave_file(signer, file_id);
        Ok(())
    }

    /// `owner` stops owning the file and its lease gets the bytes back; the last owner's
    /// leaving deletes it.
    pub(super) fn leave_file(&mut self, owner: AccountId, file_id: &Hash32) {
        let file = self.files.get_mut(file_id).expect("owned files exist");
        let brief = file.owners.remove(&owner).expect("left by an owner");
        let bytes = file.stored_bytes();
        let last = file.owners.is_empty();
        self.free_space(&owner, file_id, bytes);
        self.bucket_file_removed(owner, &brief.bucket);
        if last {
            self.remove_file(file_id);
            self.events.push(Event::FileDeleted { file_id: *file_id });
        }
    }

    /// The file leaves the ledger: its fragments leave their miners (and their open audits)
    /// and its restoral orders close, so the space returns.
    fn remove_file(&mut self, file_id: &Hash32) {
        let dropped = self.release_file(file_id);
        let file = self.files.remove(file_id).expect("removed files exist");
        let stored_bytes = file.stored_bytes();
        for (owner, brief) in &file.owners {
            self.free_space(owner, file_id, stored_bytes);
            self.bucket_file_removed(*owner, &brief.bucket);
        }
        match file.state {
            FileState::Pending => {
                let expiry = file.declared_at + self.params.order_validity_blocks;
                assert!(self.indexes.pending_until.remove(&(expiry, *file_id)));
            }
            FileState::Recovery {
                lost_at: Some(at), ..
            } => assert!(self.indexes.lost_at.remove(&(at, *file_id))),
            _ => {}
        }
        for fragment in file.segments.iter().flat_map(|s| &s.fragments) {
            self.fragments.remove(&fragment.id);
        }
        self.forget_in_audits(&dropped);
    }

    /// Every holder of the file's fragments lets go of them (space and audited sets) and
    /// every open order of it closes, its claim released. The file stays, with no holder.
    /// Returns the stored fragments dropped, for [`Ledger::forget_in_audits`].
    fn release_file(&mut self, file_id: &Hash32) -> Vec<(AccountId, Hash32, FragmentId)> {
        let clock = self.rent_clock();
        let file = self.files.get_mut(file_id).expect("released files exist");
        let (tagger, fragment_bytes) = (file.tagger, file.fragment_bytes);
        let mut let_go = Vec::new();
        for fragment in file.segments.iter_mut().flat_map(|s| &mut s.fragments) {
            if let Some(miner) = fragment.miner.take() {
                let_go.push((miner, fragment.id, fragment.stored));
            }
            fragment.stored = false;
        }
        let ids: Vec<FragmentId> = file
            .segments
            .iter()
            .flat_map(|s| s.fragments.iter().map(|f| f.id))
            .collect();
        let mut dropped = Vec::new();
        for (miner_id, fragment_id, stored) in let_go {
            if stored {
                dropped.push((miner_id, tagger, fragment_id));
            }
            self.indexes.unassign(&miner_id, &fragment_id);
            self.miners
                .get_mut(&miner_id)
                .expect("holders are registered")
                .drop_fragment(clock, &tagger, &fragment_id, fragment_bytes, stored);
        }
        for fragment_id in ids {
            if self
                .restorals
                .get(&fragment_id)
                .is_some_and(|order| order.claim.is_some())
            {
                self.release_claim(&fragment_id);
            }
            self.restorals.remove(&fragment_id);
        }
        dropped
    }

    /// A fragment of the file's `segment` lost its holder (its order just opened): an active
    /// file goes to recovery, and a segment that now has more than a third of its fragments
    /// under restoral starts the lost countdown (if none runs). O(one segment).
    fn fragment_unheld(&mut self, file_id: &Hash32, segment: u32) {
        let countdown_end = self.height + LOST_COUNTDOWN_CLAIMS * self.params.restoral_claim_blocks;
        let file = self.files.get_mut(file_id).expect("orders name live files");
        let (unheld_now, count) = (
            file.unheld_in(segment as usize),
            file.segments[segment as usize].fragments.len(),
        );
        assert!(unheld_now > 0, "the fragment was let go");
        let newly_at_risk =
            segment_at_risk(unheld_now, count) && !segment_at_risk(unheld_now - 1, count);
        let (unheld, segments_at_risk, lost_at) = match file.state {
            // A pending file expires by its order's validity; a lost one has no holder.
            FileState::Pending | FileState::Lost { .. } => return,
            FileState::Active => (0, 0, None),
            FileState::Recovery {
                unheld,
                segments_at_risk,
                lost_at,
            } => (unheld, segments_at_risk, lost_at),
        };
        let segments_at_risk = segments_at_risk + u32::from(newly_at_risk);
        let started = lost_at.is_none() && segments_at_risk > 0;
        let lost_at = if started {
            Some(countdown_end)
        } else {
            lost_at
        };
        file.state = FileState::Recovery {
            unheld: unheld + 1,
            segments_at_risk,
            lost_at,
        };
        if started {
            self.indexes.lost_at.insert((countdown_end, *file_id));
            self.events.push(Event::FileAtRisk {
                file_id: *file_id,
                lost_at: countdown_end,
            });
        }
    }

    /// A fragment of the file's `segment` has a holder again (its restoral completed): the
    /// countdown stops when no segment is at risk, and the file is active again when nothing
    /// is under restoral. O(one segment).
    fn fragment_held_again(&mut self, file_id: &Hash32, segment: u32) {
        let file = self.files.get_mut(file_id).expect("orders name live files");
        let FileState::Recovery {
            unheld,
            segments_at_risk,
            lost_at,
        } = file.state
        else {
            return;
        };
        let (unheld_now, count) = (
            file.unheld_in(segment as usize),
            file.segments[segment as usize].fragments.len(),
        );
        let was_at_risk =
            segment_at_risk(unheld_now + 1, count) && !segment_at_risk(unheld_now, count);
        let segments_at_risk = segments_at_risk - u32::from(was_at_risk);
        let lost_at = match lost_at {
            Some(at) if segments_at_risk == 0 => {
                assert!(self.indexes.lost_at.remove(&(at, *file_id)));
                None
            }
            kept => kept,
        };
        if unheld == 1 {
            assert!(file.all_stored(), "nothing else is under restoral");
            file.state = FileState::Active;
            self.events.push(Event::FileRecovered { file_id: *file_id });
        } else {
            file.state = FileState::Recovery {
                unheld: unheld - 1,
                segments_at_risk,
                lost_at,
            };
        }
    }

    /// Files whose countdown ends at this block: lost when a segment can no longer be
    /// decoded (fewer than `data_fragments` of its fragments held, or kept by a miner leaving
    /// them): their holders let go, their orders close, their owners' leases stop paying for
    /// them. A file every segment of which can still be decoded is never given up: its
    /// countdown starts again (the seed's rule, refined so that nothing decodable is thrown
    /// away). One pass over the open audits for all of them.
    pub(super) fn expire_lost_countdowns(&mut self) {
        let due: Vec<(u64, Hash32)> = self
            .indexes
            .lost_at
            .range(..=(self.height, [0xFF; 32]))
            .copied()
            .collect();
        let countdown = LOST_COUNTDOWN_CLAIMS * self.params.restoral_claim_blocks;
        let mut dropped = Vec::new();
        for (at, file_id) in due {
            assert!(self.indexes.lost_at.remove(&(at, file_id)));
            if self.decodable(&file_id) {
                let again = self.height + countdown;
                let file = self.files.get_mut(&file_id).expect("due files exist");
                let FileState::Recovery { lost_at, .. } = &mut file.state else {
                    unreachable!("a countdown runs only in recovery")
                };
                *lost_at = Some(again);
                self.indexes.lost_at.insert((again, file_id));
                self.events.push(Event::FileAtRisk {
                    file_id,
                    lost_at: again,
                });
                continue;
            }
            let bytes = self.files[&file_id].stored_bytes();
            let owners: Vec<AccountId> = self.files[&file_id].owners.keys().copied().collect();
            for owner in owners {
                let lease = self.leases.get_mut(&owner).expect("owners hold leases");
                lease.used_bytes = lease
                    .used_bytes
                    .checked_sub(bytes)
                    .expect("a lease frees what it used");
            }
            dropped.extend(self.release_file(&file_id));
            self.files.get_mut(&file_id).expect("due files exist").state =
                FileState::Lost { at: self.height };
            self.events.push(Event::FileLost { file_id });
        }
        self.forget_in_audits(&dropped);
    }

    /// Whether every segment of the file can still be decoded ([`Ledger::segment_decodable`]).
    fn decodable(&self, file_id: &Hash32) -> bool {
        (0..self.files[file_id].segments.len() as u32).all(|s| self.segment_decodable(file_id, s))
    }

    /// Whether `segment` of the file still has `data_fragments` fragments held, or kept by a
    /// miner leaving them (exiting, so still registered, and serving what it let go): what
    /// the lost rule asks, and what a restorer checks before claiming. O(one segment).
    pub fn segment_decodable(&self, file_id: &Hash32, segment: u32) -> bool {
        let Some(segment) = self
            .files
            .get(file_id)
            .and_then(|f| f.segments.get(segment as usize))
        else {
            return false;
        };
        let available = segment
            .fragments
            .iter()
            .filter(|f| {
                f.miner.is_some()
                    || self.restorals.get(&f.id).is_some_and(|order| {
                        self.miners
                            .get(&order.lost_by)
                            .is_some_and(|m| matches!(m.state, MinerState::Exiting { .. }))
                    })
            })
            .count();
        available >= usize::from(self.params.data_fragments)
    }

    /// Pending orders not completed within `order_validity_blocks` are released: the
    /// fragments leave their miners and the locked space returns.
    pub(super) fn expire_pending_orders(&mut self) {
        let expired: Vec<Hash32> = self
            .indexes
            .pending_until
            .range(..=(self.height, [0xFF; 32]))
            .map(|(_, id)| *id)
            .collect();
        for file_id in expired {
            self.remove_file(&file_id);
            self.events.push(Event::OrderExpired { file_id });
        }
    }

    pub(super) fn report_lost(
        &mut self,
        signer: AccountId,
        fragment_id: &FragmentId,
    ) -> Result<(), TxError> {
        let place = *self
            .fragments
            .get(fragment_id)
            .ok_or(TxError::UnknownFragment)?;
        let file = &self.files[&place.file_id];
        let fragment = &file.segments[place.segment as usize].fragments[place.column as usize];
        if fragment.miner != Some(signer) {
            return Err(TxError::NotHolder);
        }
        self.charge_loss_report(signer);
        // The fragment stays in the miner's open audits: taking it out would re-derive their
        // challenges, and reporting what a revealed challenge asks for would escape the audit
        // for the price of a report. An audit that sampled it fails; one that did not is
        // proved over the rest as before.
        self.release_fragment(signer, fragment_id);
        Ok(())
    }

    /// What reporting a fragment lost costs its miner. The rule: a report forfeits the rent
    /// the miner accrued since its last valid proof (it cannot be paid for data it let go)
    /// and takes `penalty_lost` from its collateral, at most `penalty_missing / 2` over all
    /// its reports in one audit period. A failed audit costs the same forfeit, the whole
    /// `penalty_missing` (or more, when invalid) and reputation, and comes with the same
    /// loss of the data after `audit_misses_max` of them: reporting honestly is always
    /// cheaper than being found out, however much was lost.
    fn charge_loss_report(&mut self, signer: AccountId) {
        let clock = self.rent_clock();
        let period = self.height / self.params.audit_period_blocks;
        let cap = self.params.penalty_missing / 2;
        let miner = self
            .miners
            .get_mut(&signer)
            .expect("holders are registered");
        miner.accrue_rent(clock);
        miner.rent_accrued = 0;
        if miner.lost_reports_period != period {
            miner.lost_reports_period = period;
            miner.lost_penalty_paid = 0;
        }
        let due = self
            .params
            .penalty_lost
            .min(cap.saturating_sub(miner.lost_penalty_paid));
        let taken = self.slash(signer, due, 0);
        self.miners
            .get_mut(&signer)
            .expect("holders are registered")
            .lost_penalty_paid += taken;
    }

    /// `holder` stops being responsible for the fragment; a restoral order opens. Returns
    /// (holder, tagger, fragment) when the holder had it stored, for
    /// [`Ledger::forget_in_audits`].
    fn release_fragment(
        &mut self,
        holder: AccountId,
        fragment_id: &FragmentId,
    ) -> Option<(AccountId, Hash32, FragmentId)> {
        let clock = self.rent_clock();
        let place = self.fragments[fragment_id];
        let file = self.files.get_mut(&place.file_id).expect("indexed");
        let fragment_bytes = file.fragment_bytes;
        let tagger = file.tagger;
        let fragment = &mut file.segments[place.segment as usize].fragments[place.column as usize];
        assert_eq!(fragment.miner, Some(holder));
        let miner = self
            .miners
            .get_mut(&holder)
            .expect("holders are registered");
        miner.drop_fragment(clock, &tagger, fragment_id, fragment_bytes, fragment.stored);
        let dropped = fragment.stored.then_some((holder, tagger, *fragment_id));
        self.indexes.unassign(&holder, fragment_id);
        fragment.miner = None;
        fragment.stored = false;
        self.restorals.insert(
            *fragment_id,
            RestoralOrder {
                file_id: place.file_id,
                segment: place.segment,
                column: place.column,
                lost_by: holder,
                opened_at: self.height,
                claim: None,
            },
        );
        self.events.push(Event::RestoralOpened {
            fragment_id: *fragment_id,
        });
        self.fragment_unheld(&place.file_id, place.segment);
        dropped
    }

    pub(super) fn claim_restoral(
        &mut self,
        signer: AccountId,
        fragment_id: &FragmentId,
    ) -> Result<(), TxError> {
        let order = self.restorals.get(fragment_id).ok_or(TxError::NoRestoral)?;
        if let Some((_, until)) = order.claim {
            return Err(TxError::AlreadyClaimed { until });
        }
        if order.lost_by == signer {
            // It would read the siblings and rebuild what it let go, escaping the audit.
            return Err(TxError::ClaimsOwnLoss);
        }
        let miner = self.miners.get(&signer).ok_or(TxError::NotMiner)?;
        if miner.state != MinerState::Active {
            return Err(TxError::MinerExiting);
        }
        if miner.collateral < self.params.miner_collateral_min {
            return Err(TxError::CollateralTooLow {
                min: self.params.miner_collateral_min,
                got: miner.collateral,
            });
        }
        if self.height < miner.claims_barred_until {
            return Err(TxError::ClaimsBarred {
                until: miner.claims_barred_until,
            });
        }
        if miner.restoral_claims >= self.params.restoral_claims_per_miner_max {
            return Err(TxError::TooManyClaims {
                max: self.params.restoral_claims_per_miner_max,
            });
        }
        let file = &self.files[&order.file_id];
        // Nor a fragment it already claimed in this segment: two completions would put two
        // fragments of one segment on one miner.
        let holds_or_claims = |f: &FragmentInfo| {
            f.miner == Some(signer)
                || self
                    .restorals
                    .get(&f.id)
                    .is_some_and(|o| o.claim.is_some_and(|(c, _)| c == signer))
        };
        if file.segments[order.segment as usize]
            .fragments
            .iter()
            .any(holds_or_claims)
        {
            return Err(TxError::HoldsSegment);
        }
        if miner.idle_bytes() < file.fragment_bytes {
            return Err(TxError::NoSpace {
                miner: signer,
                needed: file.fragment_bytes,
                free: miner.idle_bytes(),
            });
        }
        let fragment_bytes = file.fragment_bytes;
        let until = self.height + self.params.restoral_claim_blocks;
        let miner = self.miners.get_mut(&signer).expect("checked");
        miner.locked_bytes += fragment_bytes;
        miner.restoral_claims += 1;
        self.restorals.get_mut(fragment_id).expect("checked").claim = Some((signer, until));
        self.indexes.claims_until.insert((until, *fragment_id));
        Ok(())
    }

    pub(super) fn complete_restoral(
        &mut self,
        signer: AccountId,
        fragment_id: &FragmentId,
    ) -> Result<(), TxError> {
        let clock = self.rent_clock();
        let order = self.restorals.get(fragment_id).ok_or(TxError::NoRestoral)?;
        if order.claim.map(|(m, _)| m) != Some(signer) {
            return Err(TxError::NotClaimer);
        }
        let order = self.restorals.remove(fragment_id).expect("checked");
        let (_, until) = order.claim.expect("checked above");
        assert!(self.indexes.claims_until.remove(&(until, *fragment_id)));
        self.indexes.assign(signer, *fragment_id);
        let claimer = self
            .miners
            .get_mut(&signer)
            .expect("claimers are registered");
        claimer.restoral_claims -= 1;
        let file = self
            .files
            .get_mut(&order.file_id)
            .expect("orders name live files");
        let fragment_bytes = file.fragment_bytes;
        let tagger = file.tagger;
        let fragment = &mut file.segments[order.segment as usize].fragments[order.column as usize];
        fragment.miner = Some(signer);
        fragment.stored = true;
        let miner = self
            .miners
            .get_mut(&signer)
            .expect("claimers are registered");
        miner.store_fragment(clock, tagger, *fragment_id, fragment_bytes);
        miner.assert_space();
        if file.state == FileState::Pending && file.all_stored() {
            file.state = FileState::Active;
            let expiry = file.declared_at + self.params.order_validity_blocks;
            assert!(self.indexes.pending_until.remove(&(expiry, order.file_id)));
            self.events.push(Event::FileActive {
                file_id: order.file_id,
            });
        }
        self.fragment_held_again(&order.file_id, order.segment);
        self.events.push(Event::RestoralDone {
            fragment_id: *fragment_id,
            miner: signer,
        });
        Ok(())
    }

    /// `Call::ReleaseClaim`: the claimant gives the order back, open to others at once. It
    /// counts no expiry: a claimant that finds a fragment cannot be rebuilt to its id (a
    /// column declared unlike its encoding) says so rather than holding the order until it
    /// expires and being barred for it. Each claim pays its fee, so claiming and releasing
    /// in turn costs the one doing it.
    pub(super) fn give_back_claim(
        &mut self,
        signer: AccountId,
        fragment_id: &FragmentId,
    ) -> Result<(), TxError> {
        let order = self.restorals.get(fragment_id).ok_or(TxError::NoRestoral)?;
        if order.claim.map(|(m, _)| m) != Some(signer) {
            return Err(TxError::NotClaimer);
        }
        self.release_claim(fragment_id);
        self.events.push(Event::RestoralClaimReleased {
            fragment_id: *fragment_id,
            claimer: signer,
        });
        Ok(())
    }

    fn release_claim(&mut self, fragment_id: &FragmentId) {
        let order = self
            .restorals
            .get_mut(fragment_id)
            .expect("claims are on open orders");
        let (claimer, until) = order.claim.take().expect("released claims exist");
        assert!(self.indexes.claims_until.remove(&(until, *fragment_id)));
        let fragment_bytes = self.files[&order.file_id].fragment_bytes;
        let miner = self
            .miners
            .get_mut(&claimer)
            .expect("claimers are registered");
        miner.locked_bytes -= fragment_bytes;
        miner.restoral_claims -= 1;
    }

    pub(super) fn expire_restoral_claims(&mut self) {
        let expired: Vec<(FragmentId, AccountId)> = self
            .indexes
            .claims_until
            .range(..=(self.height, FragmentId([0xFF; 32])))
            .map(|(_, id)| {
                let (claimer, _) = self.restorals[id].claim.expect("indexed claims exist");
                (*id, claimer)
            })
            .collect();
        for (fragment_id, claimer) in expired {
            self.release_claim(&fragment_id);
            let (expiries_max, bar_blocks) = (
                self.params.restoral_expiries_max,
                self.params.restoral_bar_blocks,
            );
            let bar_until = self.height.saturating_add(bar_blocks);
            let miner = self
                .miners
                .get_mut(&claimer)
                .expect("claimers are registered");
            if self.height >= miner.last_claim_expiry.saturating_add(bar_blocks) {
                miner.claims_expired = 0;
            }
            miner.last_claim_expiry = self.height;
            miner.claims_expired += 1;
            if miner.claims_expired >= expiries_max {
                miner.claims_expired = 0;
                miner.claims_barred_until = bar_until;
            }
            self.events.push(Event::RestoralClaimExpired {
                fragment_id,
                claimer,
            });
        }
    }
}

pub(super) fn check_endpoint(endpoint: &str) -> Result<(), TxError> {
    // A multiaddr in its canonical text form, so every node reads the same address.
    match endpoint.parse::<multiaddr::Multiaddr>() {
        Ok(addr) if addr.to_string() == endpoint => Ok(()),
        _ => Err(TxError::BadEndpoint),
    }
}

impl Hashed for Miner {
    fn encode_hashed(&self, w: &mut Writer) {
        self.encode(w);
    }
}

impl Hashed for FileInfo {
    fn encode_hashed(&self, w: &mut Writer) {
        self.encode(w);
    }
}

impl Hashed for RestoralOrder {
    fn encode_hashed(&self, w: &mut Writer) {
        self.encode(w);
    }
}

impl Hashed for TaggerRecord {
    fn encode_hashed(&self, w: &mut Writer) {
        w.fixed(&self.owner.0);
    }
}
