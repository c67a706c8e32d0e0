//! Idle space (PoIS, `cess_proofs::pois`): a miner's declared space counts as verified only
//! once filled with idle files whose labelling the validators checked, and stays verified only
//! while the miner answers its space challenges.
//!
//! - `CommitIdle`: the roots of the next set of F files (numbers never reused). It must fit:
//!   certified + committed + active + locked bytes ≤ declared.
//! - The randomness of the [`IDLE_CHALLENGE_BLOCKS`]th block after the commitment (which did
//!   not exist when the roots were recorded, and chains the VRF outputs of that many proposers,
//!   so no single proposer of the next block knows it beforehand) fixes the commit challenge;
//!   `ProveIdle` answers it within `pois_commit_blocks`. A valid answer
//!   certifies the set; a wrong one drops it (the miner's generation work is lost).
//! - Each audit round that draws a miner with certified sets opens a space audit on one of
//!   them (`SubmitSpaceProof`). Which set, and which labels, the randomness of the
//!   [`IDLE_CHALLENGE_BLOCKS`]th block after the round opened decides (a [`SpaceDraw`] until
//!   then), so the proposer of the opening block does not know the draw a block early. A valid answer pays the idle reward accrued since the last one
//!   (verified idle bytes × blocks × `idle_reward_per_gib_block`); a wrong or missing one costs
//!   the penalty a data audit's does, forfeits the reward, counts as a failed audit and
//!   decertifies the challenged set.
//! - `ReplaceIdle`: idle files the miner deleted to make room for user data (the engine's
//!   `replace_idle`); verified space moves from idle to active as the data is reported stored.
//!   A file of the set under an open space audit may be declared replaced (an honest node can
//!   replace a file just before the round draws its set); it then leaves the challenge, and the
//!   idle reward accrued since the last valid space proof is forfeited, so that declaring lost
//!   files replaced when their set is drawn earns nothing for the time they were not kept. So
//!   does any replacement while the miner's draw waits (it knows it was drawn: its round is
//!   open), or it could declare its lost sets replaced and be drawn among those it kept.

use super::tracked::Hashed;
use super::{Event, Ledger, TxError};
use crate::codec::{DecodeError, Reader, Writer, hash};
use crate::keys::AccountId;
use crate::tx::Hash32;
use cess_proofs::pois::{
    CommitChallenge, CommitProof, FileCommitment, SpaceChallenge, SpaceProof, verify_commit,
    verify_space,
};

/// Blocks after a commitment whose randomness fixes its commit challenge.
pub const IDLE_CHALLENGE_BLOCKS: u64 = 3;

/// Sets one miner may have committed and not yet proven.
pub const IDLE_PENDING_SETS_MAX: usize = 4;
/// Files one `ReplaceIdle` may name.
pub const IDLE_REPLACE_FILES_MAX: usize = 256;

/// One committed set of idle files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleSet {
    /// Per file of the set: its commitment, or None once replaced by user data.
    pub files: Vec<Option<FileCommitment>>,
    pub state: IdleSetState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleSetState {
    /// Recorded at `at`; `randomness` is the next block's, set when that block begins.
    Committed {
        at: u64,
        randomness: Option<Hash32>,
    },
    Certified,
}

impl IdleSet {
    pub fn live_files(&self) -> u64 {
        self.files.iter().filter(|f| f.is_some()).count() as u64
    }
}

/// A miner's idle space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdleSpace {
    /// The number the next committed set starts at.
    pub next_file: u64,
    /// First files of its committed, unproven sets (at most [`IDLE_PENDING_SETS_MAX`]).
    pub pending: Vec<u64>,
    /// Live files of its certified sets.
    pub certified_files: u64,
    /// Idle reward accrued up to `reward_since`, paid at its next valid space proof.
    pub reward_accrued: u128,
    pub reward_since: u64,
    /// Its open space audit.
    pub audit: Option<SpaceAudit>,
    /// A space audit opened by an audit round, its set not drawn yet.
    pub draw: Option<SpaceDraw>,
}

/// A space audit waiting for the block whose randomness draws its set and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceDraw {
    pub round: u64,
    /// The height whose randomness draws it: [`IDLE_CHALLENGE_BLOCKS`] after the round opened.
    pub at: u64,
}

/// An open space challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceAudit {
    pub round: u64,
    pub first_file: u64,
    pub randomness: Hash32,
    /// The last height that may answer it (`pois_space_deadline_blocks` after its draw).
    pub deadline: u64,
    /// Its draw's block time + `pois_space_deadline_ms` (see `close_late_space_audits`).
    pub deadline_ms: u64,
}

impl Hashed for IdleSet {
    fn encode_hashed(&self, w: &mut Writer) {
        self.encode(w);
    }
}

impl Hashed for IdleSpace {
    fn encode_hashed(&self, w: &mut Writer) {
        self.encode(w);
    }
}

impl Hashed for (AccountId, u64) {
    fn encode_hashed(&self, w: &mut Writer) {
        w.fixed(&self.0.0).u64(self.1);
    }
}

impl IdleSet {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.count(self.files.len());
        for file in &self.files {
            match file {
                Some(c) => w.u8(1).fixed(&c.encode()),
                None => w.u8(0),
            };
        }
        match self.state {
            IdleSetState::Committed { at, randomness } => {
                w.u8(0).u64(at);
                match randomness {
                    Some(r) => w.u8(1).fixed(&r),
                    None => w.u8(0),
                };
            }
            IdleSetState::Certified => {
                w.u8(1);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<IdleSet, DecodeError> {
        let count = r.count(256, 1, "idle set files")?;
        let mut files = Vec::with_capacity(count);
        for _ in 0..count {
            files.push(match r.u8("idle file")? {
                0 => None,
                1 => Some(FileCommitment::decode(&r.array("idle commitment")?)),
                _ => return Err(DecodeError::Invalid("idle file")),
            });
        }
        let state = match r.u8("idle set state")? {
            0 => IdleSetState::Committed {
                at: r.u64("committed at")?,
                randomness: match r.u8("randomness")? {
                    0 => None,
                    1 => Some(r.array("randomness")?),
                    _ => return Err(DecodeError::Invalid("randomness")),
                },
            },
            1 => IdleSetState::Certified,
            _ => return Err(DecodeError::Invalid("idle set state")),
        };
        Ok(IdleSet { files, state })
    }
}

impl IdleSpace {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.next_file).count(self.pending.len());
        for first in &self.pending {
            w.u64(*first);
        }
        w.u64(self.certified_files)
            .u128(self.reward_accrued)
            .u64(self.reward_since);
        match &self.audit {
            Some(a) => w
                .u8(1)
                .u64(a.round)
                .u64(a.first_file)
                .fixed(&a.randomness)
                .u64(a.deadline)
                .u64(a.deadline_ms),
            None => w.u8(0),
        };
        match &self.draw {
            Some(d) => w.u8(1).u64(d.round).u64(d.at),
            None => w.u8(0),
        };
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<IdleSpace, DecodeError> {
        let next_file = r.u64("next idle file")?;
        let count = r.count(IDLE_PENDING_SETS_MAX, 8, "pending idle sets")?;
        let pending = (0..count)
            .map(|_| r.u64("pending set"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IdleSpace {
            next_file,
            pending,
            certified_files: r.u64("certified idle files")?,
            reward_accrued: r.u128("idle reward")?,
            reward_since: r.u64("idle reward since")?,
            audit: match r.u8("space audit")? {
                0 => None,
                1 => Some(SpaceAudit {
                    round: r.u64("space round")?,
                    first_file: r.u64("space set")?,
                    randomness: r.array("space randomness")?,
                    deadline: r.u64("space deadline")?,
                    deadline_ms: r.u64("space deadline ms")?,
                }),
                _ => return Err(DecodeError::Invalid("space audit")),
            },
            draw: match r.u8("space draw")? {
                0 => None,
                1 => Some(SpaceDraw {
                    round: r.u64("space draw round")?,
                    at: r.u64("space draw height")?,
                }),
                _ => return Err(DecodeError::Invalid("space draw")),
            },
        })
    }
}

impl Ledger {
    /// A miner's idle space, if it ever committed a set.
    pub fn idle_space(&self, miner: &AccountId) -> Option<&IdleSpace> {
        self.idle.get(miner)
    }

    /// A miner's idle sets (committed and certified), by first file.
    pub fn idle_sets(&self, miner: &AccountId) -> impl Iterator<Item = (u64, &IdleSet)> {
        self.idle_sets
            .range((*miner, 0)..=(*miner, u64::MAX))
            .map(|((_, first), set)| (*first, set))
    }

    /// Verified idle bytes of a miner (live files of its certified sets).
    pub fn idle_verified_bytes(&self, miner: &AccountId) -> u64 {
        self.idle.get(miner).map_or(0, |i| i.certified_files) * self.params.pois.file_bytes()
    }

    /// Whom a registered miner's idle files are labelled for: its account, bound to this chain
    /// and to this registration (its height), so that no file is certified on two chains, or
    /// again after the miner withdrew and registered anew (its file numbers start again at 0).
    pub fn idle_replica_owner(&self, miner: &AccountId) -> Option<[u8; 32]> {
        let registered_at = self.miners.get(miner)?.registered_at;
        let mut hasher = blake3::Hasher::new_derive_key("cess ledger idle replica owner v1");
        hasher.update(&self.chain_id);
        hasher.update(&miner.0);
        hasher.update(&registered_at.to_le_bytes());
        Some(*hasher.finalize().as_bytes())
    }

    /// The commit challenge of a committed set, once the block after its commitment exists.
    pub fn idle_commit_challenge(
        &self,
        miner: &AccountId,
        first_file: u64,
    ) -> Option<CommitChallenge> {
        let set = self.idle_sets.get(&(*miner, first_file))?;
        let IdleSetState::Committed {
            randomness: Some(randomness),
            ..
        } = set.state
        else {
            return None;
        };
        let commitments: Vec<FileCommitment> = set.files.iter().flatten().copied().collect();
        Some(CommitChallenge::derive(
            &self.params.pois,
            &self.idle_replica_owner(miner)?,
            first_file,
            &commitments,
            &randomness,
        ))
    }

    /// The open space challenge of a miner.
    pub fn space_challenge(&self, miner: &AccountId) -> Option<(SpaceAudit, SpaceChallenge)> {
        let audit = self.idle.get(miner)?.audit?;
        Some((
            audit,
            SpaceChallenge::for_set(
                &self.params.pois,
                &miner.0,
                audit.round,
                &audit.randomness,
                audit.first_file,
            ),
        ))
    }

    fn idle_committed_bytes(&self, space: &IdleSpace) -> u64 {
        (space.certified_files
            + space.pending.len() as u64 * u64::from(self.params.pois.files_per_set))
            * self.params.pois.file_bytes()
    }

    /// Moves a miner's idle reward clock to now.
    fn accrue_idle_reward(&mut self, miner: &AccountId) {
        let (height, rate, file_bytes) = (
            self.height,
            self.params.idle_reward_per_gib_block,
            self.params.pois.file_bytes(),
        );
        if let Some(space) = self.idle.get_mut(miner) {
            let blocks = u128::from(height.saturating_sub(space.reward_since));
            let bytes = u128::from(space.certified_files) * u128::from(file_bytes);
            let earned = bytes.saturating_mul(blocks).saturating_mul(rate) >> 30;
            space.reward_accrued = space.reward_accrued.saturating_add(earned);
            space.reward_since = height;
        }
    }

    pub(super) fn commit_idle(
        &mut self,
        signer: AccountId,
        first_file: u64,
        commitments: &[[u8; 64]],
    ) -> Result<(), TxError> {
        let miner = self.miners.get(&signer).ok_or(TxError::NotMiner)?;
        if !matches!(miner.state, super::MinerState::Active) {
            return Err(TxError::MinerNotActive);
        }
        let params = self.params.pois;
        if commitments.len() != usize::from(params.files_per_set) {
            return Err(TxError::BadIdleSet("not one commitment per file of a set"));
        }
        let space = self.idle.get(&signer).cloned().unwrap_or_default();
        if first_file != space.next_file {
            return Err(TxError::BadIdleSet(
                "sets are numbered in order, from the next file",
            ));
        }
        // Sets whose proving window passed are dropped now (their numbers stay used).
        let expired: Vec<u64> = space
            .pending
            .iter()
            .copied()
            .filter(|first| {
                self.idle_sets
                    .get(&(signer, *first))
                    .is_none_or(|set| match set.state {
                        IdleSetState::Committed { at, .. } => {
                            at.saturating_add(self.params.pois_commit_blocks) < self.height
                        }
                        IdleSetState::Certified => true,
                    })
            })
            .collect();
        let mut space = space;
        space.pending.retain(|first| !expired.contains(first));
        if space.pending.len() >= IDLE_PENDING_SETS_MAX {
            return Err(TxError::BadIdleSet(
                "too many sets committed and not yet proven",
            ));
        }
        let needed = self
            .idle_committed_bytes(&space)
            .saturating_add(params.set_bytes())
            .saturating_add(miner.active_bytes)
            .saturating_add(miner.locked_bytes);
        if needed > miner.declared_bytes {
            return Err(TxError::NoIdleRoom {
                needed,
                declared: miner.declared_bytes,
            });
        }
        for first in expired {
            self.idle_sets.remove(&(signer, first));
        }
        space.pending.push(first_file);
        space.next_file = first_file + u64::from(params.files_per_set);
        if space.reward_since == 0 {
            space.reward_since = self.height;
        }
        self.idle.insert(signer, space);
        self.idle_sets.insert(
            (signer, first_file),
            IdleSet {
                files: commitments
                    .iter()
                    .map(|c| Some(FileCommitment::decode(c)))
                    .collect(),
                state: IdleSetState::Committed {
                    at: self.height,
                    randomness: None,
                },
            },
        );
        self.idle_awaiting.push((signer, first_file));
        self.events.push(Event::IdleCommitted {
            miner: signer,
            first_file,
        });
        Ok(())
    }

    /// At the start of a block: the sets committed [`IDLE_CHALLENGE_BLOCKS`] blocks before get
    /// this block's randomness, which fixes their commit challenges. It chains the VRF outputs
    /// of every block since the commitment: a proposer knows the next block's output before it
    /// is public, but only one that proposed all of them would know this.
    pub(super) fn fix_idle_challenges(&mut self) {
        let height = self.height;
        let sets = &mut self.idle_sets;
        let randomness = self.randomness;
        self.idle_awaiting.retain(|key| {
            let Some(set) = sets.get_mut(key) else {
                return false;
            };
            let IdleSetState::Committed {
                at,
                randomness: fixed,
            } = &mut set.state
            else {
                return false;
            };
            if at.saturating_add(IDLE_CHALLENGE_BLOCKS) > height {
                return true;
            }
            *fixed = Some(randomness);
            false
        });
    }

    pub(super) fn prove_idle(
        &mut self,
        signer: AccountId,
        first_file: u64,
        proof_bytes: &[u8],
    ) -> Result<(), TxError> {
        // An exiting miner's space is not certified (it would earn while it leaves).
        let miner = self.miners.get(&signer).ok_or(TxError::NotMiner)?;
        if !matches!(miner.state, super::MinerState::Active) {
            return Err(TxError::MinerNotActive);
        }
        let set = self
            .idle_sets
            .get(&(signer, first_file))
            .ok_or(TxError::NoSuchIdleSet)?;
        let IdleSetState::Committed { at, randomness } = set.state else {
            return Err(TxError::NoSuchIdleSet);
        };
        let Some(randomness) = randomness else {
            return Err(TxError::IdleChallengeNotYet);
        };
        if at.saturating_add(self.params.pois_commit_blocks) < self.height {
            return Err(TxError::IdleCommitExpired);
        }
        let params = self.params.pois;
        // A proof that does not decode is refused (the miner may send a correct one); one
        // that decodes is judged.
        let proof = CommitProof::decode(proof_bytes, &params)
            .map_err(|e| TxError::BadProof(e.to_string()))?;
        let commitments: Vec<FileCommitment> = set.files.iter().flatten().copied().collect();
        let owner = self
            .idle_replica_owner(&signer)
            .expect("an active miner is registered");
        let challenge =
            CommitChallenge::derive(&params, &owner, first_file, &commitments, &randomness);
        let verdict = verify_commit(&params, &owner, &commitments, &challenge, &proof);
        self.accrue_idle_reward(&signer);
        let space = self
            .idle
            .get_mut(&signer)
            .expect("a committed set has its miner's idle space");
        space.pending.retain(|first| *first != first_file);
        match verdict {
            Ok(()) => {
                space.certified_files += commitments.len() as u64;
                self.idle_sets
                    .get_mut(&(signer, first_file))
                    .expect("read above")
                    .state = IdleSetState::Certified;
                self.events.push(Event::IdleCertified {
                    miner: signer,
                    first_file,
                    files: commitments.len() as u64,
                });
            }
            Err(reason) => {
                self.idle_sets.remove(&(signer, first_file));
                self.events.push(Event::IdleRefused {
                    miner: signer,
                    first_file,
                    reason: reason.to_string(),
                });
            }
        }
        Ok(())
    }

    pub(super) fn replace_idle(&mut self, signer: AccountId, files: &[u64]) -> Result<(), TxError> {
        if files.is_empty() || files.len() > IDLE_REPLACE_FILES_MAX {
            return Err(TxError::BadIdleSet("1 to 256 files per replacement"));
        }
        let space = self.idle.get(&signer).ok_or(TxError::NoSuchIdleSet)?;
        let per_set = u64::from(self.params.pois.files_per_set);
        let audited = space.audit.map(|a| a.first_file);
        // Checked in full first: nothing changes on a refusal.
        let mut seen = std::collections::BTreeSet::new();
        // A miner drawn by a round knows it (its data audits open with the round) before its
        // set is drawn: replacing any file then forfeits the reward as replacing one of the
        // audited set does, or it could declare its lost sets replaced in the window and be
        // drawn among the sets it kept.
        let mut under_audit = space.draw.is_some();
        for &file in files {
            let first = file - file % per_set;
            under_audit |= Some(first) == audited;
            let live = self.idle_sets.get(&(signer, first)).is_some_and(|set| {
                set.state == IdleSetState::Certified && set.files[(file - first) as usize].is_some()
            });
            if !live || !seen.insert(file) {
                return Err(TxError::BadIdleSet(
                    "not a live certified idle file of the signer",
                ));
            }
        }
        self.accrue_idle_reward(&signer);
        if under_audit {
            self.idle
                .get_mut(&signer)
                .expect("checked above")
                .reward_accrued = 0;
        }
        for &file in files {
            let first = file - file % per_set;
            let set = self
                .idle_sets
                .get_mut(&(signer, first))
                .expect("checked above");
            set.files[(file - first) as usize] = None;
            if set.live_files() == 0 {
                self.idle_sets.remove(&(signer, first));
            }
        }
        self.idle
            .get_mut(&signer)
            .expect("checked above")
            .certified_files -= files.len() as u64;
        self.events.push(Event::IdleReplaced {
            miner: signer,
            files: files.len() as u64,
        });
        Ok(())
    }

    /// Opens a space audit for each drawn miner that has a certified set.
    /// An audit round drew these miners: each gets a space audit, drawn
    /// [`IDLE_CHALLENGE_BLOCKS`] blocks later ([`Ledger::draw_space_audits`]).
    pub(super) fn open_space_audits(&mut self, round: u64, drawn: &[AccountId]) {
        let at = self.height + IDLE_CHALLENGE_BLOCKS;
        for miner in drawn {
            let Some(space) = self.idle.get(miner) else {
                continue;
            };
            // One space audit at a time: an open one closes at its deadline first.
            if space.audit.is_some() || space.draw.is_some() {
                continue;
            }
            self.idle.get_mut(miner).expect("read above").draw = Some(SpaceDraw { round, at });
        }
    }

    /// At the start of a block: the space audits opened [`IDLE_CHALLENGE_BLOCKS`] blocks
    /// before draw their set and labels from this block's randomness, which chains the VRF
    /// outputs of every block since the round opened: the proposer of the opening block
    /// (or of any one block) does not know them in advance, so it can neither report the drawn
    /// set's files replaced just before the draw nor start labelling it again early. The
    /// deadline runs from here. A miner left with no certified set is not audited.
    pub(super) fn draw_space_audits(&mut self) {
        let height = self.height;
        let due: Vec<(AccountId, SpaceDraw)> = self
            .idle
            .iter()
            .filter_map(|(miner, space)| space.draw.filter(|d| d.at <= height).map(|d| (*miner, d)))
            .collect();
        let params = self.params.pois;
        for (miner, draw) in due {
            let randomness = hash(
                b"cess-ledger/1 space audit draw\0",
                &[&self.randomness, &draw.round.to_le_bytes()],
            );
            let sets: Vec<u64> = self
                .idle_sets(&miner)
                .filter(|(_, set)| set.state == IdleSetState::Certified)
                .map(|(first, _)| first)
                .collect();
            let picked =
                SpaceChallenge::pick_set(&params, &miner.0, draw.round, &randomness, &sets);
            let deadline = height + self.params.pois_space_deadline_blocks;
            let deadline_ms = self
                .time_ms
                .saturating_add(self.params.pois_space_deadline_ms);
            let space = self.idle.get_mut(&miner).expect("listed above");
            space.draw = None;
            let Some(first_file) = picked else {
                continue;
            };
            space.audit = Some(SpaceAudit {
                round: draw.round,
                first_file,
                randomness,
                deadline,
                deadline_ms,
            });
            self.events.push(Event::SpaceAuditOpened {
                round: draw.round,
                miner,
                first_file,
                deadline,
                deadline_ms,
            });
        }
    }

    pub(super) fn submit_space_proof(
        &mut self,
        signer: AccountId,
        round: u64,
        proof_bytes: &[u8],
        refund: u128,
    ) -> Result<(), TxError> {
        let Some((audit, challenge)) = self.space_challenge(&signer) else {
            return Err(TxError::NoAudit);
        };
        if audit.round != round {
            return Err(TxError::NoAudit);
        }
        let params = self.params.pois;
        let proof = SpaceProof::decode(proof_bytes, &params)
            .map_err(|e| TxError::BadProof(e.to_string()))?;
        let roots: Vec<Option<Hash32>> = self
            .idle_sets
            .get(&(signer, audit.first_file))
            .map(|set| set.files.iter().map(|f| f.map(|c| c.last_root)).collect())
            .unwrap_or_else(|| vec![None; usize::from(params.files_per_set)]);
        let verdict = verify_space(&params, &roots, &challenge, &proof);
        self.accrue_idle_reward(&signer);
        let space = self.idle.get_mut(&signer).expect("audited");
        space.audit = None;
        match verdict {
            Ok(()) => {
                let reward = std::mem::take(&mut space.reward_accrued)
                    .saturating_add(refund)
                    .min(self.reward_pool);
                self.reward_pool -= reward;
                self.credit(signer, reward);
                if let Some(miner) = self.miners.get_mut(&signer) {
                    miner.reputation = (miner.reputation + 10).min(1000);
                }
                self.events.push(Event::SpaceProofValid {
                    round,
                    miner: signer,
                    reward,
                });
            }
            Err(reason) => {
                let penalty = self.slash(signer, self.params.penalty_invalid, 100);
                self.events.push(Event::SpaceProofInvalid {
                    round,
                    miner: signer,
                    penalty,
                    reason: reason.to_string(),
                });
                self.idle_failed(signer, round, audit.first_file);
            }
        }
        Ok(())
    }

    /// At the end of a block: space audits whose last block this is close unanswered.
    pub(super) fn close_missed_space_audits(&mut self) {
        let height = self.height;
        self.close_space_audits_where(|a| a.deadline <= height);
    }

    /// At the start of a block, before its transactions: space audits whose time ran out by
    /// the previous block close unanswered. Judged by the previous block's time, a chain that
    /// stalls does not close audits whose answers wait in the mempool, and the block's own
    /// proposer, who sets its time, cannot close them early.
    pub(super) fn close_late_space_audits(&mut self, parent_time_ms: u64) {
        self.close_space_audits_where(|a| a.deadline_ms < parent_time_ms);
    }

    fn close_space_audits_where(&mut self, missed: impl Fn(&SpaceAudit) -> bool) {
        let missed: Vec<(AccountId, SpaceAudit)> = self
            .idle
            .iter()
            .filter_map(|(miner, space)| space.audit.filter(|a| missed(a)).map(|a| (*miner, a)))
            .collect();
        for (miner, audit) in missed {
            self.accrue_idle_reward(&miner);
            self.idle.get_mut(&miner).expect("listed above").audit = None;
            let penalty = self.slash(miner, self.params.penalty_missing, 50);
            self.events.push(Event::SpaceProofMissing {
                round: audit.round,
                miner,
                penalty,
            });
            self.idle_failed(miner, audit.round, audit.first_file);
        }
    }

    /// A failed or missed space audit: the reward accrued is forfeited, the challenged set is
    /// no longer verified, and it counts as a failed audit.
    fn idle_failed(&mut self, miner: AccountId, round: u64, first_file: u64) {
        let dropped = self
            .idle_sets
            .remove(&(miner, first_file))
            .map_or(0, |set| set.live_files());
        let space = self.idle.get_mut(&miner).expect("audited");
        space.reward_accrued = 0;
        space.certified_files -= dropped;
        self.events.push(Event::IdleDecertified {
            miner,
            first_file,
            files: dropped,
        });
        self.audit_failed(miner, round);
    }

    /// A withdrawn miner's idle space goes with it.
    pub(super) fn forget_idle(&mut self, miner: &AccountId) {
        let firsts: Vec<u64> = self.idle_sets(miner).map(|(first, _)| first).collect();
        for first in firsts {
            self.idle_sets.remove(&(*miner, first));
        }
        self.idle.remove(miner);
        self.idle_awaiting.retain(|(m, _)| m != miner);
    }

    /// The rules on idle space the tests check after every block.
    pub(crate) fn check_idle_invariants(&self) -> Result<(), String> {
        for (miner, space) in self.idle.iter() {
            if space.audit.is_some() && space.draw.is_some() {
                return Err(format!("{miner:?}: a space audit open and another drawing"));
            }
            if space.audit.is_some_and(|a| a.deadline <= self.height) {
                return Err(format!("{miner:?}: a space audit open past its last block"));
            }
            if space
                .draw
                .is_some_and(|d| d.at <= self.height || d.at > self.height + IDLE_CHALLENGE_BLOCKS)
            {
                return Err(format!(
                    "{miner:?}: a space draw overdue or beyond its delay"
                ));
            }
            let mut certified = 0;
            let mut pending = Vec::new();
            for (first, set) in self.idle_sets(miner) {
                if first >= space.next_file
                    || set.files.len() != usize::from(self.params.pois.files_per_set)
                {
                    return Err(format!("{miner:?}: set {first} outside its numbering"));
                }
                match set.state {
                    IdleSetState::Certified => {
                        if set.live_files() == 0 {
                            return Err(format!("{miner:?}: set {first} empty and kept"));
                        }
                        certified += set.live_files();
                    }
                    IdleSetState::Committed { .. } => pending.push(first),
                }
            }
            if certified != space.certified_files {
                return Err(format!(
                    "{miner:?}: {certified} live certified files, counted {}",
                    space.certified_files
                ));
            }
            if pending.iter().any(|p| !space.pending.contains(p))
                || space.pending.len() > IDLE_PENDING_SETS_MAX
            {
                return Err(format!(
                    "{miner:?}: pending sets {pending:?} against {:?}",
                    space.pending
                ));
            }
            if !self.miners.contains_key(miner) {
                return Err(format!("{miner:?}: idle space without a miner"));
            }
        }
        Ok(())
    }
}
