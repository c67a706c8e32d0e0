//! Audits: each round, a challenge derived from the ledger's randomness for a sample of the
//! miners holding data; a deadline that grows with the data challenged; proofs verified with
//! `cess-proofs` (all of a block's proofs in one batch); rewards and penalties.
//!
//! A proof transaction that does not decode is refused (the miner may send a correct one
//! before the deadline). One that decodes but does not verify is applied: the audit closes
//! with the invalid-proof penalty, which is the point of auditing.

use super::{Event, Ledger, TxError};
use crate::codec::{Writer, hash};
use crate::keys::AccountId;
use crate::tx::{Call, FragmentId, Hash32, Transaction};
use cess_proofs::{
    Backend, BatchItem, Challenge, ChallengeInputs, FragmentSet, Proof, Verdict, batch_verify,
};
use std::collections::HashMap;
use std::sync::Arc;

const REPUTATION_MAX: u32 = 1000;

/// One open challenge: a miner must prove it holds the sampled fragments of `set`.
#[derive(Debug, Clone)]
pub struct Audit {
    /// The fragments the miner held for this tagger when the round opened.
    pub set: Arc<FragmentSet>,
    pub randomness: Hash32,
    pub opened_at: u64,
    /// The last height whose block may carry the proof.
    pub deadline: u64,
    pub total_bytes: u64,
}

impl Audit {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.fixed(&self.set.commitment())
            .fixed(&self.randomness)
            .u64(self.opened_at)
            .u64(self.deadline)
            .u64(self.total_bytes);
    }
}

impl Ledger {
    /// Open audits of the signer-miner pairs: (round, miner, tagger) → audit.
    pub fn audits(&self) -> impl Iterator<Item = (&(u64, AccountId, Hash32), &Audit)> {
        self.audits.iter()
    }

    /// Whether `miner` has an audit open now (the range of rounds open at once is small: the
    /// audits of one miner are found without scanning the others').
    pub fn has_open_audit(&self, miner: &AccountId) -> bool {
        let window = self.params.audit_window_blocks_max() / self.params.audit_period_blocks + 2;
        let latest = self.height / self.params.audit_period_blocks;
        (latest.saturating_sub(window)..=latest).any(|round| {
            self.audits
                .range((round, *miner, [0; 32])..=(round, *miner, [0xFF; 32]))
                .next()
                .is_some()
        })
    }

    /// The challenge a miner must answer for an open audit (what the node proves, and what
    /// the ledger verifies against).
    pub fn challenge(&self, round: u64, miner: &AccountId, tagger: &Hash32) -> Option<Challenge> {
        let audit = self.audits.get(&(round, *miner, *tagger))?;
        self.derive_challenge(round, miner, tagger, audit)
    }

    fn derive_challenge(
        &self,
        round: u64,
        miner: &AccountId,
        tagger: &Hash32,
        audit: &Audit,
    ) -> Option<Challenge> {
        let key = self.taggers.get(tagger)?;
        Challenge::derive(&ChallengeInputs {
            epoch_randomness: audit.randomness,
            miner: &miner.0,
            round,
            tagger: &key.key,
            set: &audit.set,
            params: self.params.challenge,
        })
        .ok()
    }

    /// Whether block `height` opens an audit round (data audits, and space draws).
    pub fn opens_audit_round(&self, height: u64) -> bool {
        height.is_multiple_of(self.params.audit_period_blocks)
    }

    /// At the first block of each audit period: sample miners and open their audits.
    pub(super) fn open_audit_round(&mut self) {
        if !self.opens_audit_round(self.height) {
            return;
        }
        let round = self.height / self.params.audit_period_blocks;
        let randomness = hash(
            b"cess-ledger/1 audit round\0",
            &[&self.randomness, &round.to_le_bytes()],
        );
        let mut opened = Vec::new();
        // Miners drawn that have certified idle space: their space audits open too.
        let mut drawn_idle = Vec::new();
        for (miner_id, miner) in &self.miners {
            let idle = self
                .idle
                .get(miner_id)
                .is_some_and(|i| i.certified_files > 0);
            if miner.held.is_empty() && !idle {
                continue;
            }
            let draw = hash(b"cess-ledger/1 audit draw\0", &[&randomness, &miner_id.0]);
            let draw = u64::from_le_bytes(draw[..8].try_into().expect("8 bytes")) % 1000;
            if draw >= u64::from(self.params.audit_miners_permille) {
                continue;
            }
            if idle {
                drawn_idle.push(*miner_id);
            }
            for (tagger, held) in miner.held.iter() {
                let entries: Vec<(FragmentId, u64)> =
                    held.iter().map(|(id, len)| (*id, *len)).collect();
                let total_bytes = entries.iter().map(|(_, len)| len).sum();
                let set =
                    FragmentSet::new(entries).expect("held sets hold distinct, sized fragments");
                let challenged =
                    (set.len() as u64).min(u64::from(self.params.challenge.fragments_max));
                let deadline = self.height
                    + self.params.audit_deadline_base_blocks
                    + challenged.div_ceil(self.params.audit_fragments_per_extra_block);
                opened.push((
                    (round, *miner_id, *tagger),
                    Audit {
                        set: Arc::new(set),
                        randomness,
                        opened_at: self.height,
                        deadline,
                        total_bytes,
                    },
                ));
            }
        }
        for (key, audit) in opened {
            self.events.push(Event::AuditOpened {
                round: key.0,
                miner: key.1,
                tagger: key.2,
                deadline: audit.deadline,
            });
            self.audits.insert(key, audit);
        }
        self.open_space_audits(round, &drawn_idle);
    }

    /// Verify every well-signed proof transaction of a block that answers an open audit, as
    /// one batch. The batch weights come from a hash of all the proofs, so no prover can know
    /// its weight before every proof is fixed. Returns verdicts by transaction index.
    pub(super) fn verify_block_proofs(
        &self,
        txs: &[Transaction],
        signature_checked: &dyn Fn(usize) -> bool,
        backend: &dyn Backend,
    ) -> HashMap<usize, Verdict> {
        let mut items = Vec::new();
        // One proof per audit is verified: the first well-signed one that decodes. Later
        // ones for the same audit are refused (`NoAudit`) without a pairing.
        let mut answered = std::collections::HashSet::new();
        // Each signer's nonce as the block will reach it, so a proof after another of its
        // signer's transactions is verified; a transaction whose nonce is not the next never
        // moves it. (Balances and other transactions' fees are not followed: a signer's own
        // transactions can at worst cost one wasted verification per open audit, or leave
        // its proof unverified when it put two transactions with one nonce in a block.)
        let mut next_nonce: HashMap<AccountId, u64> = HashMap::new();
        for (index, tx) in txs.iter().enumerate() {
            let expected = next_nonce
                .entry(tx.signer)
                .or_insert_with(|| self.account(&tx.signer).nonce);
            let in_turn = tx.nonce == *expected && tx.valid_until >= self.height;
            if in_turn {
                *expected += 1;
            }
            let Call::SubmitProof {
                round,
                tagger,
                proof,
            } = &tx.call
            else {
                continue;
            };
            let key = (*round, tx.signer, *tagger);
            let Some(audit) = self.audits.get(&key) else {
                continue;
            };
            if !in_turn
                || answered.contains(&key)
                || self.check_terms(tx, self.height, tx.encoded_len()).is_err()
            {
                continue;
            }
            if !signature_checked(index) && !tx.signature_is_valid(&self.chain_id) {
                continue;
            }
            let (Ok(proof), Some(challenge)) = (
                Proof::decode(proof),
                self.derive_challenge(*round, &tx.signer, tagger, audit),
            ) else {
                continue;
            };
            answered.insert(key);
            items.push((index, tx.id(), tagger, challenge, proof));
        }
        if items.is_empty() {
            return HashMap::new();
        }
        let mut w = Writer::new();
        for (_, id, ..) in &items {
            w.fixed(id);
        }
        let weights_seed = hash(b"cess-ledger/1 batch weights\0", &[w.as_bytes()]);
        let batch: Vec<BatchItem<'_>> = items
            .iter()
            .map(|(_, _, tagger, challenge, proof)| BatchItem {
                key: &self.taggers[*tagger].key,
                challenge,
                proof,
            })
            .collect();
        let verdicts = batch_verify(&batch, &weights_seed, backend);
        items
            .iter()
            .zip(verdicts)
            .map(|((index, ..), verdict)| (*index, verdict))
            .collect()
    }

    pub(super) fn submit_proof(
        &mut self,
        signer: AccountId,
        round: u64,
        tagger: &Hash32,
        proof_bytes: &[u8],
        verdict: Option<Verdict>,
        refund: u128,
    ) -> Result<(), TxError> {
        let key = (round, signer, *tagger);
        if !self.audits.contains_key(&key) {
            return Err(TxError::NoAudit);
        }
        // The block's pre-pass verified every signed proof that decodes and answers an open
        // audit; without a verdict, the proof is what failed.
        let Some(verdict) = verdict else {
            return Err(match Proof::decode(proof_bytes) {
                Err(e) => TxError::BadProof(e.to_string()),
                // Another proof for this audit was verified first in this block.
                Ok(_) => TxError::NoAudit,
            });
        };
        self.audits.remove(&key).expect("checked above");
        match verdict {
            Verdict::Valid => {
                // Its least fee back; and, once every audit of its round has passed, the
                // rent it accrued for everything it holds (a round with any failed audit
                // forfeits it: a miner proving a small set cannot be paid for a large one it
                // dropped). At most what the pool holds.
                let round_open = self
                    .audits
                    .range((round, signer, [0; 32])..=(round, signer, [0xFF; 32]))
                    .next()
                    .is_some();
                let clock = self.rent_clock();
                // A miner cannot withdraw while audited (`withdraw_miner`), so it is here.
                let miner = self.miners.get_mut(&signer).expect("audited miners exist");
                miner.accrue_rent(clock);
                miner.reputation = (miner.reputation + 10).min(REPUTATION_MAX);
                let rent = if miner.failed_round == Some(round) {
                    miner.rent_accrued = 0;
                    0
                } else if round_open {
                    0
                } else {
                    // The whole round passed: only that resets the count of failures.
                    miner.audits_failed_in_a_row = 0;
                    std::mem::take(&mut miner.rent_accrued)
                };
                let reward = refund.saturating_add(rent).min(self.reward_pool);
                self.reward_pool -= reward;
                self.credit(signer, reward);
                self.events.push(Event::ProofValid {
                    round,
                    miner: signer,
                    reward,
                });
            }
            Verdict::Invalid(reason) => {
                let penalty = self.slash(signer, self.params.penalty_invalid, 100);
                self.events.push(Event::ProofInvalid {
                    round,
                    miner: signer,
                    penalty,
                    reason: reason.to_string(),
                });
                self.audit_failed(signer, round);
            }
        }
        Ok(())
    }

    /// Collateral into the reward pool, at most what there is; reputation down.
    pub(super) fn slash(
        &mut self,
        miner_id: AccountId,
        amount: u128,
        reputation_loss: u32,
    ) -> u128 {
        let Some(miner) = self.miners.get_mut(&miner_id) else {
            return 0;
        };
        let penalty = amount.min(miner.collateral);
        miner.collateral -= penalty;
        miner.reputation = miner.reputation.saturating_sub(reputation_loss);
        self.reward_pool += penalty;
        penalty
    }

    /// Fragments their miners no longer hold (deleted, reported lost, released) leave the
    /// miners' open audits, so the challenged set is always what a miner must hold; the
    /// challenge is re-derived from the smaller set. An audit left with nothing to challenge
    /// closes with neither reward nor penalty. One pass over the open audits per call.
    pub(super) fn forget_in_audits(&mut self, dropped: &[(AccountId, Hash32, FragmentId)]) {
        if dropped.is_empty() || self.audits.is_empty() {
            return;
        }
        let mut by_holder: HashMap<(AccountId, Hash32), std::collections::HashSet<FragmentId>> =
            HashMap::new();
        for (miner, tagger, fragment) in dropped {
            by_holder
                .entry((*miner, *tagger))
                .or_default()
                .insert(*fragment);
        }
        let affected: Vec<(u64, AccountId, Hash32)> = self
            .audits
            .iter()
            .filter(|(key, audit)| {
                by_holder
                    .get(&(key.1, key.2))
                    .is_some_and(|gone| audit.set.entries().iter().any(|(id, _)| gone.contains(id)))
            })
            .map(|(key, _)| *key)
            .collect();
        let mut emptied = Vec::new();
        for key in affected {
            let gone = &by_holder[&(key.1, key.2)];
            let audit = self.audits.get_mut(&key).expect("listed above");
            let entries: Vec<(FragmentId, u64)> = audit
                .set
                .entries()
                .iter()
                .filter(|(id, _)| !gone.contains(id))
                .copied()
                .collect();
            if entries.is_empty() {
                emptied.push(key);
                continue;
            }
            audit.total_bytes = entries.iter().map(|(_, len)| len).sum();
            audit.set =
                Arc::new(FragmentSet::new(entries).expect("a subset of a valid set is valid"));
        }
        for key in emptied {
            self.audits.remove(&key);
        }
    }

    /// Audits whose deadline is this block close unanswered, with the missing-proof penalty.
    pub(super) fn close_missed_audits(&mut self) {
        let missed: Vec<(u64, AccountId, Hash32)> = self
            .audits
            .iter()
            .filter(|(_, audit)| audit.deadline <= self.height)
            .map(|(key, _)| *key)
            .collect();
        for key in missed {
            self.audits.remove(&key);
            let penalty = self.slash(key.1, self.params.penalty_missing, 50);
            self.events.push(Event::ProofMissing {
                round: key.0,
                miner: key.1,
                penalty,
            });
            self.audit_failed(key.1, key.0);
        }
    }

    /// One more missed or failed audit in a row; at `audit_misses_max` the miner's data is
    /// handed to restoral orders (other miners rebuild it) and the count starts again.
    pub(super) fn audit_failed(&mut self, miner_id: AccountId, round: u64) {
        let clock = self.rent_clock();
        let Some(miner) = self.miners.get_mut(&miner_id) else {
            return;
        };
        // The rent it accrued since its last valid proof is forfeited (it stays in the pool).
        miner.accrue_rent(clock);
        miner.rent_accrued = 0;
        miner.failed_round = Some(round);
        miner.audits_failed_in_a_row += 1;
        if miner.audits_failed_in_a_row < self.params.audit_misses_max {
            return;
        }
        miner.audits_failed_in_a_row = 0;
        let fragments = self.release_all(miner_id);
        self.events.push(Event::MinerDataReleased {
            miner: miner_id,
            fragments,
        });
    }
}
