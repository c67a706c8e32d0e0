// Long file: the snapshot codec: every table and index, with its checks.
//! The whole ledger as bytes: what a validator writes to disk every so many blocks, so that a
//! restart replays only the blocks after its last snapshot (`crate::store`).
//!
//! Every table is written in key order with every field, the derived indexes too (they are
//! part of what the next block reads). Decoding bounds every count by the bytes left, refuses
//! unsorted keys and trailing bytes, and recomputes the state root from the decoded tables: a
//! snapshot whose root is not the one it carries is refused. The root covers the tables; every
//! derived index it does not cover is checked against the tables it derives from, with the
//! rules the tests assert after every block ([`Ledger::check_storage_invariants`], the money
//! count, the unbonding index, the candidates' keys, the last election's height), so a
//! snapshot from a peer holds no index its tables contradict. The parameters and the previous
//! era's set, which the root does not cover either, are checked by whoever takes a peer's
//! snapshot against what it trusts ([`crate::light::SetChain::check_checkpoint`]). The encoding is canonical: `encode(decode(b)) == b` (a test and the fuzz target
//! check it, and a test that a decoded ledger applies the next blocks to the same roots as the
//! original).

use super::audit::Audit;
use super::buckets::{BUCKETS_PER_OWNER_MAX, Buckets};
use super::delegates::Delegates;
use super::idle::{IdleSet, IdleSetState, IdleSpace};
use super::space::Lease;
use super::storage::{
    FileInfo, FileState, FragmentInfo, FragmentPlace, HeldSets, Indexes, Miner, MinerState, Owner,
    RestoralOrder, SegmentInfo, TaggerRecord,
};
use super::tracked::{Hashed, Tracked};
use super::validators::{Candidate, UNBONDING_PER_CANDIDATE_MAX};
use super::{Account, Ledger, LedgerParams, ValidatorEntry};
use crate::codec::{DecodeError, Reader, Writer};
use crate::keys::{AccountId, VALIDATOR_KEY_BYTES, ValidatorPublicKey};
use crate::tx::{
    BUCKET_NAME_BYTES_MAX, ENDPOINT_BYTES_MAX, FILE_META_BYTES_MAX, FRAGMENTS_PER_SEGMENT_MAX,
    FragmentId, Hash32, NAME_BYTES_MAX, PEER_ID_BYTES_MAX, TAGGER_KEY_BYTES_MAX,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Format of the snapshot body (bumped whenever a field is added).
const SNAPSHOT_VERSION: u32 = 7;
/// No list in a ledger is longer than this (the state lives in memory).
const LIST_MAX: usize = u32::MAX as usize;

/// Why snapshot bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: {0}")]
    Decode(#[from] DecodeError),
    #[error("snapshot version {0}, this build reads {SNAPSHOT_VERSION}")]
    Version(u32),
    #[error("snapshot parameters: {0}")]
    Params(&'static str),
    #[error("snapshot of height {height}: its tables hash to another root than it carries")]
    RootMismatch { height: u64 },
    #[error("snapshot: {0}")]
    Inconsistent(&'static str),
    #[error("snapshot: a derived index or invariant does not hold: {0}")]
    Invariant(String),
}

fn account(r: &mut Reader<'_>, what: &'static str) -> Result<AccountId, DecodeError> {
    Ok(AccountId(r.array(what)?))
}

fn validator_key(r: &mut Reader<'_>) -> Result<ValidatorPublicKey, DecodeError> {
    let bytes: [u8; VALIDATOR_KEY_BYTES] = r.array("validator key")?;
    ValidatorPublicKey::decode(&bytes).map_err(|_| DecodeError::Invalid("validator key"))
}

fn read_option_u64(r: &mut Reader<'_>, what: &'static str) -> Result<Option<u64>, DecodeError> {
    Ok(if r.bool(what)? {
        Some(r.u64(what)?)
    } else {
        None
    })
}

/// A table: its count, then each entry in key order.
fn table<K: Ord + Clone + Hashed, V: Hashed>(
    w: &mut Writer,
    map: &Tracked<K, V>,
    mut entry: impl FnMut(&mut Writer, &K, &V),
) {
    w.count(map.len());
    for (k, v) in map {
        entry(w, k, v);
    }
}

/// A table read back, keys strictly increasing (one encoding per state), its sum computed.
fn read_table<K: Ord + Clone + Hashed, V: Hashed>(
    r: &mut Reader<'_>,
    name: &'static [u8],
    min_entry_bytes: usize,
    what: &'static str,
    mut entry: impl FnMut(&mut Reader<'_>) -> Result<(K, V), DecodeError>,
) -> Result<Tracked<K, V>, DecodeError> {
    let count = r.count(LIST_MAX, min_entry_bytes, what)?;
    let mut map = Tracked::new(name);
    let mut last: Option<K> = None;
    for _ in 0..count {
        let (k, v) = entry(r)?;
        if last.as_ref().is_some_and(|l| *l >= k) {
            return Err(DecodeError::Invalid(what));
        }
        last = Some(k.clone());
        map.insert(k, v);
    }
    map.digest();
    Ok(map)
}

/// A set in order, strictly increasing.
fn read_sorted<T: Ord + Clone>(
    r: &mut Reader<'_>,
    min_bytes: usize,
    what: &'static str,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<BTreeSet<T>, DecodeError> {
    let count = r.count(LIST_MAX, min_bytes, what)?;
    let mut set = BTreeSet::new();
    let mut last: Option<T> = None;
    for _ in 0..count {
        let value = item(r)?;
        if last.as_ref().is_some_and(|l| *l >= value) {
            return Err(DecodeError::Invalid(what));
        }
        last = Some(value.clone());
        set.insert(value);
    }
    Ok(set)
}

/// Inserts `key` into a map read in key order: it must come after every key already there
/// (one encoding per state).
fn insert_next<K: Ord, V>(
    map: &mut BTreeMap<K, V>,
    key: K,
    value: V,
    what: &'static str,
) -> Result<(), DecodeError> {
    if map.last_key_value().is_some_and(|(last, _)| *last >= key) {
        return Err(DecodeError::Invalid(what));
    }
    map.insert(key, value);
    Ok(())
}

fn write_accounts(w: &mut Writer, set: &BTreeSet<AccountId>) {
    w.count(set.len());
    for a in set {
        w.fixed(&a.0);
    }
}

fn read_accounts(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<BTreeSet<AccountId>, DecodeError> {
    read_sorted(r, 32, what, |r| account(r, what))
}

fn write_hashes<T: AsRef<[u8]>>(w: &mut Writer, set: &BTreeSet<T>) {
    w.count(set.len());
    for h in set {
        w.fixed(h.as_ref());
    }
}

/// A sorted set of (height, 32-byte name): files or fragments by the height they expire at.
fn write_deadlines<T: AsRef<[u8]>>(w: &mut Writer, set: &BTreeSet<(u64, T)>) {
    w.count(set.len());
    for (height, id) in set {
        w.u64(*height).fixed(id.as_ref());
    }
}

/// A sorted set of 32-byte names: hashes, or fragment ids.
fn read_hashes<T: From<Hash32> + Ord + Clone>(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<BTreeSet<T>, DecodeError> {
    read_sorted(r, 32, what, |r| r.array(what).map(T::from))
}

fn write_validators(w: &mut Writer, set: &[ValidatorEntry]) {
    w.count(set.len());
    for v in set {
        w.fixed(&v.account.0).fixed(&v.key.to_bytes());
    }
}

fn read_validators(r: &mut Reader<'_>) -> Result<Vec<ValidatorEntry>, DecodeError> {
    let count = r.count(
        crate::bft::VALIDATORS_MAX,
        32 + VALIDATOR_KEY_BYTES,
        "validators",
    )?;
    (0..count)
        .map(|_| {
            Ok(ValidatorEntry {
                account: account(r, "validator")?,
                key: validator_key(r)?,
            })
        })
        .collect()
}

fn write_miner(w: &mut Writer, m: &Miner) {
    m.encode_fields(w);
    w.count(m.held.iter().len());
    for (tagger, set) in m.held.iter() {
        w.fixed(tagger).count(set.len());
        for (fragment, len) in set {
            w.fragment_id(fragment).u64(*len);
        }
    }
}

/// The fields [`Miner::encode_fields`] writes, then the held sets.
fn read_miner(r: &mut Reader<'_>) -> Result<Miner, DecodeError> {
    let peer_id = r.bytes(PEER_ID_BYTES_MAX, "peer id")?.to_vec();
    let endpoint = r.string(ENDPOINT_BYTES_MAX, "endpoint")?;
    let declared_bytes = r.u64("declared")?;
    let locked_bytes = r.u64("locked")?;
    let active_bytes = r.u64("active")?;
    let collateral = r.u128("collateral")?;
    let state = match r.u8("miner state")? {
        0 => MinerState::Active,
        1 => MinerState::Exiting {
            since: r.u64("exiting since")?,
        },
        _ => return Err(DecodeError::Invalid("miner state")),
    };
    let reputation = r.u32("reputation")?;
    let audits_failed_in_a_row = r.u32("audits failed")?;
    let restoral_claims = r.u32("restoral claims")?;
    let rent_accrued = r.u128("rent accrued")?;
    let rent_since = r.u64("rent since")?;
    let failed_round = read_option_u64(r, "failed round")?;
    let claims_expired = r.u32("claims expired")?;
    let claims_barred_until = r.u64("claims barred")?;
    let last_claim_expiry = r.u64("last claim expiry")?;
    let lost_reports_period = r.u64("lost reports period")?;
    let lost_penalty_paid = r.u128("lost penalty paid")?;
    let registered_at = r.u64("registered at")?;
    let taggers = r.count(LIST_MAX, 36, "held taggers")?;
    let mut sets = BTreeMap::new();
    for _ in 0..taggers {
        let tagger: Hash32 = r.array("held tagger")?;
        let count = r.count(LIST_MAX, 40, "held fragments")?;
        let mut set = BTreeMap::new();
        for _ in 0..count {
            let fragment = r.fragment_id("held fragment")?;
            let len = r.u64("held length")?;
            insert_next(&mut set, fragment, len, "held fragments")?;
        }
        if set.is_empty() {
            return Err(DecodeError::Invalid("held taggers"));
        }
        insert_next(&mut sets, tagger, set, "held taggers")?;
    }
    if declared_bytes
        .checked_sub(locked_bytes)
        .and_then(|rest| rest.checked_sub(active_bytes))
        .is_none()
    {
        return Err(DecodeError::Invalid("miner space"));
    }
    Ok(Miner {
        peer_id,
        endpoint,
        declared_bytes,
        locked_bytes,
        active_bytes,
        collateral,
        state,
        reputation,
        audits_failed_in_a_row,
        restoral_claims,
        rent_accrued,
        rent_since,
        failed_round,
        claims_expired,
        claims_barred_until,
        last_claim_expiry,
        lost_reports_period,
        lost_penalty_paid,
        registered_at,
        held: HeldSets::from_sets(sets),
    })
}

fn read_file(r: &mut Reader<'_>) -> Result<FileInfo, DecodeError> {
    let size_bytes = r.u64("size")?;
    let fragment_bytes = r.u64("fragment bytes")?;
    let tagger = r.array("tagger")?;
    let owners_count = r.count(LIST_MAX, 44, "owners")?;
    let mut owners = BTreeMap::new();
    for _ in 0..owners_count {
        let owner = account(r, "owner")?;
        let name = r.string(NAME_BYTES_MAX, "file name")?;
        let bucket = r.string(BUCKET_NAME_BYTES_MAX, "bucket")?;
        let since = r.u64("owner since")?;
        insert_next(
            &mut owners,
            owner,
            Owner {
                name,
                bucket,
                since,
            },
            "owners",
        )?;
    }
    let segment_count = r.count(LIST_MAX, 36, "segments")?;
    let mut segments = Vec::with_capacity(segment_count);
    for _ in 0..segment_count {
        let segment_id = r.array("segment id")?;
        let count = r.count(FRAGMENTS_PER_SEGMENT_MAX, 34, "fragments")?;
        let mut fragments = Vec::with_capacity(count);
        for _ in 0..count {
            let id = r.fragment_id("fragment id")?;
            let miner = if r.bool("fragment miner")? {
                Some(account(r, "fragment miner")?)
            } else {
                None
            };
            fragments.push(FragmentInfo {
                id,
                miner,
                stored: r.bool("fragment stored")?,
            });
        }
        segments.push(SegmentInfo {
            segment_id,
            fragments,
        });
    }
    let state = match r.u8("file state")? {
        0 => FileState::Pending,
        1 => FileState::Active,
        2 => FileState::Recovery {
            unheld: r.u32("unheld fragments")?,
            segments_at_risk: r.u32("segments at risk")?,
            lost_at: read_option_u64(r, "lost at")?,
        },
        3 => FileState::Lost {
            at: r.u64("lost at")?,
        },
        _ => return Err(DecodeError::Invalid("file state")),
    };
    Ok(FileInfo {
        size_bytes,
        fragment_bytes,
        tagger,
        owners,
        segments,
        state,
        declared_at: r.u64("declared at")?,
        meta: r.bytes(FILE_META_BYTES_MAX, "file meta")?.to_vec(),
    })
}

fn read_restoral(r: &mut Reader<'_>) -> Result<RestoralOrder, DecodeError> {
    Ok(RestoralOrder {
        file_id: r.array("restoral file")?,
        segment: r.u32("restoral segment")?,
        column: r.u16("restoral column")?,
        lost_by: account(r, "lost by")?,
        opened_at: r.u64("opened at")?,
        claim: if r.bool("claim")? {
            Some((account(r, "claimant")?, r.u64("claim until")?))
        } else {
            None
        },
    })
}

impl Ledger {
    /// The whole state as bytes (see the module documentation).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(SNAPSHOT_VERSION).fixed(&self.chain_id);
        self.params.encode(&mut w);
        w.u64(self.height)
            .u64(self.time_ms)
            .u128(self.reward_pool)
            .u128(self.total_money);
        table(&mut w, &self.accounts, |w, k, v| {
            w.fixed(&k.0).u128(v.balance).u64(v.nonce);
        });
        table(&mut w, &self.taggers, |w, k, v| {
            w.fixed(k).bytes(&v.key.encode()).fixed(&v.owner.0);
        });
        table(&mut w, &self.miners, |w, k, v| {
            w.fixed(&k.0);
            write_miner(w, v);
        });
        w.count(self.peer_ids.len());
        for (peer, account) in &self.peer_ids {
            w.bytes(peer).fixed(&account.0);
        }
        table(&mut w, &self.files, |w, k, v| {
            w.fixed(k);
            v.encode(w);
        });
        w.count(self.fragments.len());
        for (id, place) in &self.fragments {
            w.fragment_id(id)
                .fixed(&place.file_id)
                .u32(place.segment)
                .u16(place.column);
        }
        let ix = &self.indexes;
        w.count(ix.assigned.len());
        for (miner, set) in &ix.assigned {
            w.fixed(&miner.0);
            write_hashes(&mut w, set);
        }
        write_deadlines(&mut w, &ix.pending_until);
        write_deadlines(&mut w, &ix.claims_until);
        write_deadlines(&mut w, &ix.lost_at);
        w.count(ix.miner_ids.len());
        for miner in &ix.miner_ids {
            w.fixed(&miner.0);
        }
        w.count(ix.owned.len());
        for (owner, set) in &ix.owned {
            w.fixed(&owner.0);
            write_hashes(&mut w, set);
        }
        w.count(ix.lease_ends.len());
        for (height, owner) in &ix.lease_ends {
            w.u64(*height).fixed(&owner.0);
        }
        table(&mut w, &self.restorals, |w, k, v| {
            w.fragment_id(k);
            v.encode(w);
        });
        table(&mut w, &self.audits, |w, (round, miner, tagger), v| {
            w.u64(*round).fixed(&miner.0).fixed(tagger);
            w.count(v.set.entries().len());
            for (id, len) in v.set.entries() {
                w.fragment_id(id).u64(*len);
            }
            w.fixed(&v.randomness)
                .u64(v.opened_at)
                .u64(v.deadline)
                .u64(v.total_bytes);
        });
        table(&mut w, &self.candidates, |w, k, v| {
            w.fixed(&k.0)
                .fixed(&v.key.to_bytes())
                .u128(v.stake)
                .u32(v.reputation)
                .u32(v.commits_missed_in_a_row)
                .bool(v.slashed)
                .str(&v.endpoint)
                .count(v.unbonding.len());
            for (amount, release_at) in &v.unbonding {
                w.u128(*amount).u64(*release_at);
            }
        });
        table(&mut w, &self.leases, |w, k, v| {
            w.fixed(&k.0).u32(v.gib).u64(v.used_bytes).u64(v.until);
        });
        table(&mut w, &self.delegates, |w, k, v| {
            w.fixed(&k.0);
            write_accounts(w, &v.0);
        });
        table(&mut w, &self.buckets, |w, k, v| {
            w.fixed(&k.0).count(v.0.len());
            for (name, files) in &v.0 {
                w.str(name).u64(*files);
            }
        });
        table(&mut w, &self.idle_sets, |w, (miner, first), v| {
            w.fixed(&miner.0).u64(*first);
            v.encode(w);
        });
        table(&mut w, &self.idle, |w, k, v| {
            w.fixed(&k.0);
            v.encode(w);
        });
        w.count(self.delegated.len());
        for (delegate, owners) in &self.delegated {
            w.fixed(&delegate.0);
            write_accounts(&mut w, owners);
        }
        w.count(self.validator_keys.len());
        for key in &self.validator_keys {
            w.fixed(key);
        }
        w.count(self.unbonding_due.len());
        for (height, candidate) in &self.unbonding_due {
            w.u64(*height).fixed(&candidate.0);
        }
        write_validators(&mut w, &self.validators);
        write_validators(&mut w, &self.previous_validators);
        w.u64(self.elected_at)
            .u64(self.era)
            .fixed(&self.randomness)
            .count(self.epoch_seeds.len());
        for (epoch, seed) in &self.epoch_seeds {
            w.u64(*epoch).fixed(seed);
        }
        w.fixed(&self.root);
        w.into_bytes()
    }

    /// A ledger from [`Ledger::encode_snapshot`]'s bytes; its root recomputed from the tables
    /// must be the one it carries.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Ledger, SnapshotError> {
        let mut r = Reader::new(bytes);
        let version = r.u32("version")?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(version));
        }
        let chain_id = r.array("chain id")?;
        let params = LedgerParams::decode(&mut r)?;
        params.check().map_err(SnapshotError::Params)?;
        let height = r.u64("height")?;
        let time_ms = r.u64("time")?;
        let reward_pool = r.u128("reward pool")?;
        let total_money = r.u128("total money")?;
        let accounts = read_table(&mut r, b"accounts", 56, "accounts", |r| {
            Ok((
                account(r, "account")?,
                Account {
                    balance: r.u128("balance")?,
                    nonce: r.u64("nonce")?,
                },
            ))
        })?;
        let taggers = read_table(&mut r, b"taggers", 68, "taggers", |r| {
            let id: Hash32 = r.array("tagger id")?;
            let key = cess_proofs::PublicKey::decode(r.bytes(TAGGER_KEY_BYTES_MAX, "tagger key")?)
                .map_err(|_| DecodeError::Invalid("tagger key"))?;
            Ok((
                id,
                TaggerRecord {
                    key: Arc::new(key),
                    owner: account(r, "tagger owner")?,
                },
            ))
        })?;
        let miners = read_table(&mut r, b"miners", 32, "miners", |r| {
            Ok((account(r, "miner")?, read_miner(r)?))
        })?;
        let peer_count = r.count(LIST_MAX, 36, "peer ids")?;
        let mut peer_ids = BTreeMap::new();
        for _ in 0..peer_count {
            let peer = r.bytes(PEER_ID_BYTES_MAX, "peer id")?.to_vec();
            if peer_ids
                .insert(peer, account(&mut r, "peer account")?)
                .is_some()
            {
                return Err(DecodeError::Invalid("peer ids").into());
            }
        }
        let files = read_table(&mut r, b"files", 32, "files", |r| {
            Ok((r.array("file id")?, read_file(r)?))
        })?;
        let fragment_count = r.count(LIST_MAX, 70, "fragments")?;
        let mut fragments = BTreeMap::new();
        for _ in 0..fragment_count {
            let id = r.fragment_id("fragment")?;
            let place = FragmentPlace {
                file_id: r.array("fragment file")?,
                segment: r.u32("fragment segment")?,
                column: r.u16("fragment column")?,
            };
            insert_next(&mut fragments, id, place, "fragments")?;
        }
        let assigned_count = r.count(LIST_MAX, 36, "assigned")?;
        let mut assigned = BTreeMap::new();
        for _ in 0..assigned_count {
            let miner = account(&mut r, "assigned miner")?;
            let set = read_hashes(&mut r, "assigned fragments")?;
            insert_next(&mut assigned, miner, set, "assigned")?;
        }
        let pending_until = read_sorted(&mut r, 40, "pending until", |r| {
            Ok((r.u64("height")?, r.array("file")?))
        })?;
        let claims_until = read_sorted(&mut r, 40, "claims until", |r| {
            Ok((r.u64("height")?, r.fragment_id("fragment")?))
        })?;
        let lost_at = read_sorted(&mut r, 40, "lost at", |r| {
            Ok((r.u64("height")?, r.array("file")?))
        })?;
        let miner_count = r.count(LIST_MAX, 32, "miner ids")?;
        let miner_ids = (0..miner_count)
            .map(|_| account(&mut r, "miner id"))
            .collect::<Result<Vec<_>, _>>()?;
        // Placement searches it: in order, as the ledger keeps it.
        if miner_ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DecodeError::Invalid("miner ids").into());
        }
        let owned_count = r.count(LIST_MAX, 36, "owned")?;
        let mut owned = BTreeMap::new();
        for _ in 0..owned_count {
            let owner = account(&mut r, "owner")?;
            let set = read_hashes(&mut r, "owned files")?;
            insert_next(&mut owned, owner, set, "owned")?;
        }
        let lease_ends = read_sorted(&mut r, 40, "lease ends", |r| {
            Ok((r.u64("height")?, account(r, "lease owner")?))
        })?;
        let restorals = read_table(&mut r, b"restorals", 32, "restorals", |r| {
            Ok((r.fragment_id("restoral fragment")?, read_restoral(r)?))
        })?;
        let audits = read_table(&mut r, b"audits", 72, "audits", |r| {
            let key = (
                r.u64("round")?,
                account(r, "audit miner")?,
                r.array("tagger")?,
            );
            let count = r.count(LIST_MAX, 40, "audit set")?;
            let entries = (0..count)
                .map(|_| Ok((r.fragment_id("audit fragment")?, r.u64("audit length")?)))
                .collect::<Result<Vec<(FragmentId, u64)>, DecodeError>>()?;
            // In id order, as the set keeps them (one encoding).
            if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(DecodeError::Invalid("audit set"));
            }
            let set = cess_proofs::FragmentSet::new(entries)
                .map_err(|_| DecodeError::Invalid("audit set"))?;
            Ok((
                key,
                Audit {
                    set: Arc::new(set),
                    randomness: r.array("audit randomness")?,
                    opened_at: r.u64("audit opened")?,
                    deadline: r.u64("audit deadline")?,
                    total_bytes: r.u64("audit bytes")?,
                },
            ))
        })?;
        let candidates = read_table(&mut r, b"candidates", 32, "candidates", |r| {
            Ok((
                account(r, "candidate")?,
                Candidate {
                    key: validator_key(r)?,
                    stake: r.u128("stake")?,
                    reputation: r.u32("reputation")?,
                    commits_missed_in_a_row: r.u32("commits missed")?,
                    slashed: r.bool("slashed")?,
                    endpoint: r.string(ENDPOINT_BYTES_MAX, "endpoint")?,
                    unbonding: {
                        let count = r.count(UNBONDING_PER_CANDIDATE_MAX, 24, "unbonding")?;
                        let unbonding = (0..count)
                            .map(|_| Ok((r.u128("unbonding")?, r.u64("released at")?)))
                            .collect::<Result<Vec<(u128, u64)>, DecodeError>>()?;
                        // Oldest first, as they are paid out.
                        if unbonding.windows(2).any(|w| w[0].1 > w[1].1) {
                            return Err(DecodeError::Invalid("unbonding"));
                        }
                        unbonding
                    },
                },
            ))
        })?;
        let leases = read_table(&mut r, b"leases", 52, "leases", |r| {
            Ok((
                account(r, "lease owner")?,
                Lease {
                    gib: r.u32("lease GiB")?,
                    used_bytes: r.u64("lease used")?,
                    until: r.u64("lease until")?,
                },
            ))
        })?;
        let delegates = read_table(&mut r, b"delegates", 36, "delegates", |r| {
            Ok((
                account(r, "delegating owner")?,
                Delegates(read_accounts(r, "delegates")?),
            ))
        })?;
        let buckets = read_table(&mut r, b"buckets", 36, "buckets", |r| {
            let owner = account(r, "bucket owner")?;
            let count = r.count(BUCKETS_PER_OWNER_MAX, 12, "buckets of an owner")?;
            let mut names = BTreeMap::new();
            for _ in 0..count {
                let name = r.string(BUCKET_NAME_BYTES_MAX, "bucket")?;
                let files = r.u64("bucket files")?;
                insert_next(&mut names, name, files, "bucket names")?;
            }
            Ok((owner, Buckets(names)))
        })?;
        let idle_sets = read_table(&mut r, b"idle sets", 46, "idle sets", |r| {
            let miner = account(r, "idle miner")?;
            let first = r.u64("first idle file")?;
            Ok(((miner, first), IdleSet::decode(r)?))
        })?;
        let idle = read_table(
            &mut r,
            b"idle",
            32 + 8 + 4 + 8 + 16 + 8 + 1 + 1,
            "idle",
            |r| Ok((account(r, "idle miner")?, IdleSpace::decode(r)?)),
        )?;
        // Derived: the sets whose challenge a later block fixes.
        let idle_awaiting = idle_sets
            .iter()
            .filter(|(_, set)| {
                matches!(
                    set.state,
                    IdleSetState::Committed {
                        randomness: None,
                        ..
                    }
                )
            })
            .map(|(key, _)| *key)
            .collect();
        let delegated_count = r.count(LIST_MAX, 36, "delegated")?;
        let mut delegated = BTreeMap::new();
        for _ in 0..delegated_count {
            let delegate = account(&mut r, "delegate")?;
            let owners = read_accounts(&mut r, "delegated owners")?;
            insert_next(&mut delegated, delegate, owners, "delegated")?;
        }
        let validator_keys = read_sorted(&mut r, VALIDATOR_KEY_BYTES, "validator keys", |r| {
            r.array("validator key")
        })?;
        let unbonding_due = read_sorted(&mut r, 40, "unbonding due", |r| {
            Ok((r.u64("height")?, account(r, "unbonding candidate")?))
        })?;
        let validators = read_validators(&mut r)?;
        let previous_validators = read_validators(&mut r)?;
        let elected_at = r.u64("elected at")?;
        let era = r.u64("era")?;
        let randomness = r.array("randomness")?;
        let seed_count = r.count(LIST_MAX, 40, "epoch seeds")?;
        let epoch_seeds = (0..seed_count)
            .map(|_| Ok((r.u64("epoch")?, r.array("epoch seed")?)))
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let root: Hash32 = r.array("root")?;
        r.finish()?;
        let mut ledger = Ledger {
            chain_id,
            params,
            height,
            time_ms,
            accounts,
            reward_pool,
            total_money,
            taggers,
            miners,
            peer_ids,
            files,
            fragments,
            indexes: Indexes {
                assigned,
                pending_until,
                claims_until,
                lost_at,
                miner_ids,
                owned,
                lease_ends,
            },
            restorals,
            audits,
            candidates,
            leases,
            delegates,
            buckets,
            idle_sets,
            idle,
            idle_awaiting,
            delegated,
            validator_keys,
            unbonding_due,
            validators,
            previous_validators,
            elected_at,
            era,
            randomness,
            epoch_seeds,
            events: Vec::new(),
            root,
        };
        if ledger.compute_root() != root {
            return Err(SnapshotError::RootMismatch { height });
        }
        // What the root does not cover but the rules rely on: the money adds up, and every
        // waiting unbonding is indexed by its payout height.
        if ledger.count_money() != ledger.total_money {
            return Err(SnapshotError::Inconsistent("money does not add up"));
        }
        let due: BTreeSet<(u64, AccountId)> = ledger
            .candidates
            .iter()
            .flat_map(|(account, c)| c.unbonding.iter().map(|(_, at)| (*at, *account)))
            .collect();
        if due != ledger.unbonding_due {
            return Err(SnapshotError::Inconsistent("unbondings are not indexed"));
        }
        // Every other derived index against its tables, with the rules the tests assert after
        // every block: a snapshot from a peer is as consistent as one kept here.
        ledger
            .check_storage_invariants()
            .map_err(SnapshotError::Invariant)?;
        Ok(ledger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        let params = LedgerParams {
            validators_per_era: 4,
            ..LedgerParams::default()
        };
        let (genesis, _, _) = crate::sim::genesis(5, 3, 9, params);
        Ledger::genesis(&genesis).unwrap()
    }

    /// What the root does not cover is checked against the tables on decode: a peer cannot
    /// hand over a snapshot whose derived indexes contradict its tables.
    #[test]
    fn a_snapshot_with_a_derived_index_that_contradicts_its_tables_is_refused() {
        let ledger = ledger();
        let refused = |tamper: &dyn Fn(&mut Ledger)| {
            let mut tampered = ledger.clone();
            tamper(&mut tampered);
            match Ledger::decode_snapshot(&tampered.encode_snapshot()) {
                Err(SnapshotError::Invariant(why)) => why,
                other => panic!("accepted: {:?}", other.map(|l| l.height())),
            }
        };
        let why = refused(&|l| {
            let first = *l.validator_keys.iter().next().unwrap();
            l.validator_keys.remove(&first);
        });
        assert!(why.contains("validator keys"), "{why}");
        let why = refused(&|l| l.elected_at = 7);
        assert!(why.contains("election"), "{why}");
        let why = refused(&|l| {
            l.delegated.insert(
                AccountId([5; 32]),
                [AccountId([6; 32])].into_iter().collect(),
            );
        });
        assert!(why.contains("delegate"), "{why}");
        let why = refused(&|l| l.indexes.miner_ids.push(AccountId([8; 32])));
        assert!(why.contains("miners"), "{why}");
        // Untampered, it decodes.
        Ledger::decode_snapshot(&ledger.encode_snapshot()).unwrap();
    }

    #[test]
    fn a_snapshot_round_trips_and_refuses_every_truncation_and_a_wrong_root() {
        let ledger = ledger();
        let bytes = ledger.encode_snapshot();
        let back = Ledger::decode_snapshot(&bytes).unwrap();
        assert_eq!(back.encode_snapshot(), bytes);
        assert_eq!(back.root(), ledger.root());
        assert_eq!(back.root_from_scratch(), ledger.root());
        for len in 0..bytes.len() {
            assert!(
                Ledger::decode_snapshot(&bytes[..len]).is_err(),
                "cut at {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Ledger::decode_snapshot(&longer).is_err());
        // The carried root is checked against the tables.
        let mut wrong_root = bytes.clone();
        let last = wrong_root.len() - 1;
        wrong_root[last] ^= 1;
        assert_eq!(
            Ledger::decode_snapshot(&wrong_root).err(),
            Some(SnapshotError::RootMismatch { height: 0 })
        );
        // So is a table entry: the first account's balance (after the version, the chain id,
        // the parameters, four scalars and the table's count, then the account's id).
        let mut params = Writer::new();
        ledger.params.encode(&mut params);
        let balance_at = 4 + 32 + params.as_bytes().len() + 8 + 8 + 16 + 16 + 4 + 32;
        let mut richer = bytes.clone();
        richer[balance_at] ^= 1;
        assert_eq!(
            Ledger::decode_snapshot(&richer).err(),
            Some(SnapshotError::RootMismatch { height: 0 })
        );
        let mut newer = bytes;
        newer[0] = 9;
        assert_eq!(
            Ledger::decode_snapshot(&newer).err(),
            Some(SnapshotError::Version(9))
        );
    }
}
