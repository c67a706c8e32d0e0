//! Validator candidates, R²S elections, commit participation and epoch randomness.
//!
//! **R²S credit.** Each era the ledger elects the `validators_per_era` candidates with the
//! highest credit = 50 % reputation + 30 % stake + 20 % randomness, each first brought to the
//! same scale 0..=1 000 000:
//! - reputation: `reputation × 1 000 000 / 1000` (reputation is 0..=1000, starts at 500, +1 for
//!   each commit the validator signs, −5 for each it misses);
//! - stake: `stake × 1 000 000 / (largest stake among the candidates)`;
//! - randomness: `SHA-256(epoch randomness ‖ account) mod 1 000 001`.
//!
//! So credit = 5·rep + 3·stake + 2·rand (times 10 of the weights), ties broken by account id.
//! CESS scores stake on 0..=100 against 0..=1000 for the other two, so its 30 % stake weighs
//! about 4 %; here each part weighs what it says. Candidates below the minimum stake are not
//! eligible; with no eligible candidate the current set stays.

use super::{Event, Ledger, TxError};
use crate::codec::hash;
use crate::keys::{
    AccountId, VALIDATOR_KEY_BYTES, VALIDATOR_SIGNATURE_BYTES, ValidatorPublicKey,
    ValidatorSignature,
};
use crate::tx::Hash32;

pub(crate) const REPUTATION_START: u32 = 500;
/// A validator left out of this many commits in a row loses nothing: each block's proposer
/// chooses which precommits of the last height it includes, so a few Byzantine proposers
/// could otherwise push honest validators out of the next era. To cost an honest validator
/// reputation they must propose more than this many blocks in a row (the VRF lottery makes
/// that (f/n)^9, about 5·10⁻⁵ per window at f/n = 1/3), while a validator really offline loses
/// it from the ninth block on.
pub const COMMIT_MISSES_FORGIVEN: u32 = 8;
const REPUTATION_MAX: u32 = 1000;
const CREDIT_SCALE: u128 = 1_000_000;
/// Epoch seeds kept: the current epoch needs the seed of two epochs back.
const EPOCH_SEEDS_KEPT: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub key: ValidatorPublicKey,
    pub stake: u128,
    pub reputation: u32,
    /// Commits in a row that did not carry its precommit (reputation falls only past
    /// [`COMMIT_MISSES_FORGIVEN`]).
    pub commits_missed_in_a_row: u32,
    /// Slashed for equivocation: never elected again.
    pub slashed: bool,
    /// Where it listens for consensus messages ([`crate::Call::SetValidatorEndpoint`]); empty
    /// until it says (genesis validators' addresses come with their configuration).
    pub endpoint: String,
    /// Stake it unbonded, (amount, height at which it is paid out), oldest first: held for
    /// longer than evidence against it is accepted, and slashed with its stake.
    pub unbonding: Vec<(u128, u64)>,
}

impl Candidate {
    /// Stake bonded and stake unbonding, all of it slashable.
    pub fn slashable(&self) -> u128 {
        self.stake
            + self
                .unbonding
                .iter()
                .map(|(amount, _)| amount)
                .sum::<u128>()
    }
}

/// Unbonded stake is paid out this many eras after the unbonding (evidence is accepted for
/// two eras, so an equivocator cannot take its stake out before it can be slashed).
pub const UNBONDING_ERAS: u64 = 2;
/// Unbondings a candidate may have waiting at once (each is an entry the ledger keeps).
pub const UNBONDING_PER_CANDIDATE_MAX: usize = 16;

/// Share of its stake a validator loses when evidence of its equivocation is put on the chain,
/// and the reporter's share of that (the rest goes to the reward pool).
pub const EQUIVOCATION_SLASH_PERMILLE: u128 = 100;
pub const REPORTER_SHARE_PERMILLE: u128 = 100;

/// A member of the current validator set (equal voting power: BFT counts validators).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorEntry {
    pub account: AccountId,
    pub key: ValidatorPublicKey,
}

pub(crate) fn check_candidate_key(
    key: &[u8; VALIDATOR_KEY_BYTES],
    possession: &[u8; VALIDATOR_SIGNATURE_BYTES],
) -> Result<ValidatorPublicKey, TxError> {
    let key = ValidatorPublicKey::decode(key)
        .map_err(|_| TxError::BadValidatorKey("not a valid BLS key"))?;
    let pop = ValidatorSignature::decode(possession)
        .map_err(|_| TxError::BadValidatorKey("possession proof is not a signature"))?;
    if !key.verify_possession(&pop) {
        return Err(TxError::BadValidatorKey("possession proof does not verify"));
    }
    Ok(key)
}

/// R²S credit on the common scale (see the module documentation).
pub fn credit(candidate: &Candidate, account: &AccountId, stake_max: u128, seed: &Hash32) -> u128 {
    let reputation = u128::from(candidate.reputation.min(REPUTATION_MAX)) * CREDIT_SCALE
        / u128::from(REPUTATION_MAX);
    // stake ≤ stake_max, so this is at most CREDIT_SCALE; u128 holds stake × 10⁶ for any
    // stake below 3·10³² (the total money is far smaller).
    let stake = candidate
        .stake
        .saturating_mul(CREDIT_SCALE)
        .checked_div(stake_max)
        .unwrap_or(0);
    let draw = hash(b"cess-ledger/1 r2s draw\0", &[seed, &account.0]);
    let random = u128::from_le_bytes(draw[..16].try_into().expect("16 bytes")) % (CREDIT_SCALE + 1);
    5 * reputation + 3 * stake + 2 * random
}

impl Ledger {
    /// The validator set for the next block.
    pub fn validators(&self) -> &[ValidatorEntry] {
        &self.validators
    }

    /// The set of the era before the current one (empty before the first election).
    pub fn previous_validators(&self) -> &[ValidatorEntry] {
        &self.previous_validators
    }

    pub fn era(&self) -> u64 {
        self.era
    }

    pub fn candidate(&self, account: &AccountId) -> Option<&Candidate> {
        self.candidates.get(account)
    }

    pub fn candidates(&self) -> impl Iterator<Item = (&AccountId, &Candidate)> {
        self.candidates.iter()
    }

    /// The epoch a height belongs to (heights 1..=epoch_blocks are epoch 0).
    pub fn epoch_of(&self, height: u64) -> u64 {
        height.saturating_sub(1) / self.params.epoch_blocks
    }

    /// The randomness of `epoch`: the chain's randomness at the end of epoch − 2 (the genesis
    /// randomness for epochs 0 and 1), so it is fixed before the epoch before it starts.
    /// `None` for epochs too far back or ahead.
    pub fn epoch_randomness(&self, epoch: u64) -> Option<Hash32> {
        self.epoch_seeds
            .iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, seed)| *seed)
    }

    /// The latest randomness (hash chain of every block's VRF output).
    pub fn randomness(&self) -> Hash32 {
        self.randomness
    }

    /// The set the next block elects, decided by the state before it (its transactions do
    /// not count): `Some` when the next block ends an era. The block carries it in its header
    /// ([`crate::bft::Block::next_validators`]), so the commit of that block, signed by the
    /// outgoing set, vouches for the incoming set's keys to a node that holds no state.
    pub fn elected_by_next_block(&self) -> Option<Vec<super::ValidatorEntry>> {
        let next = self.height + 1;
        if !next.is_multiple_of(self.params.era_blocks) {
            return None;
        }
        let seed = self
            .epoch_randomness(self.epoch_of(next + 1))
            .unwrap_or(self.randomness);
        Some(self.elect(&seed, false))
    }

    /// Elect the next set by R²S credit (at genesis, every candidate is eligible whatever its
    /// stake).
    pub(super) fn elect(&self, seed: &Hash32, genesis: bool) -> Vec<super::ValidatorEntry> {
        let eligible: Vec<(&AccountId, &Candidate)> = self
            .candidates
            .iter()
            .filter(|(_, c)| !c.slashed && (c.stake >= self.params.candidate_stake_min || genesis))
            .collect();
        if eligible.is_empty() {
            return self.validators.clone();
        }
        let stake_max = eligible.iter().map(|(_, c)| c.stake).max().unwrap_or(0);
        let mut ranked: Vec<(u128, AccountId, &Candidate)> = eligible
            .into_iter()
            .map(|(account, c)| (credit(c, account, stake_max, seed), *account, c))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked.truncate(self.params.validators_per_era as usize);
        // The set is ordered by account so every validator indexes it the same way.
        ranked.sort_by_key(|(_, account, _)| *account);
        ranked
            .into_iter()
            .map(|(_, account, c)| ValidatorEntry {
                account,
                key: c.key.clone(),
            })
            .collect()
    }

    pub(super) fn register_candidate(
        &mut self,
        signer: AccountId,
        key: &[u8; VALIDATOR_KEY_BYTES],
        possession: &[u8; VALIDATOR_SIGNATURE_BYTES],
        stake: u128,
    ) -> Result<(), TxError> {
        if self.candidates.contains_key(&signer) || self.validator_keys.contains(key) {
            return Err(TxError::AlreadyRegistered);
        }
        if stake < self.params.candidate_stake_min {
            return Err(TxError::StakeTooLow {
                min: self.params.candidate_stake_min,
                got: stake,
            });
        }
        let key = check_candidate_key(key, possession)?;
        self.can_pay(&signer, stake)?;
        self.debit(signer, stake);
        self.validator_keys.insert(key.to_bytes());
        self.candidates.insert(
            signer,
            Candidate {
                key,
                stake,
                reputation: REPUTATION_START,
                commits_missed_in_a_row: 0,
                slashed: false,
                endpoint: String::new(),
                unbonding: Vec::new(),
            },
        );
        Ok(())
    }

    pub(super) fn set_validator_endpoint(
        &mut self,
        signer: AccountId,
        endpoint: &str,
    ) -> Result<(), TxError> {
        if !self.candidates.contains_key(&signer) {
            return Err(TxError::NotCandidate);
        }
        super::storage::check_endpoint(endpoint)?;
        self.candidates.get_mut(&signer).expect("checked").endpoint = endpoint.to_owned();
        Ok(())
    }

    /// Checks equivocation evidence in full (two different messages of one kind, height and
    /// round, both signed with the offender's key, recent enough), then slashes the offender:
    /// [`EQUIVOCATION_SLASH_PERMILLE`] of its stake, [`REPORTER_SHARE_PERMILLE`] of that to the
    /// reporter and the rest to the reward pool; it is never elected again (so it leaves the
    /// set at the next era). Evidence older than two eras is refused, as is a second report.
    pub(super) fn report_equivocation(
        &mut self,
        reporter: AccountId,
        evidence: &crate::tx::Equivocation,
    ) -> Result<(), TxError> {
        use crate::tx::EquivocationKind;
        use arc_malachitebft_core_types::{NilOrVal, Round, VoteType};
        let candidate = self
            .candidates
            .get(&evidence.offender)
            .ok_or(TxError::NotCandidate)?;
        if candidate.slashed {
            return Err(TxError::AlreadySlashed);
        }
        if evidence.height > self.height + 1
            || evidence.height + 2 * self.params.era_blocks < self.height
        {
            return Err(TxError::BadEvidence("height not within the last two eras"));
        }
        let (first, second) = (&evidence.first, &evidence.second);
        if first.value == second.value && first.pol_round == second.pol_round {
            return Err(TxError::BadEvidence("the two messages are the same"));
        }
        let ctx = crate::bft::Cess {
            chain_id: self.chain_id(),
        };
        let signed = |m: &crate::tx::SignedValue| -> bool {
            let Ok(signature) = ValidatorSignature::decode(&m.signature) else {
                return false;
            };
            let round = Round::new(evidence.round);
            match evidence.kind {
                EquivocationKind::Proposal => {
                    // Decoding keeps pol_round in −1..=u32::MAX; −1 is no proof-of-lock round.
                    let Some(block) = m.value else {
                        return false;
                    };
                    let pol_round = u32::try_from(m.pol_round).map_or(Round::Nil, Round::new);
                    ctx.verify_proposal_of(
                        &candidate.key,
                        evidence.height,
                        round,
                        pol_round,
                        &block,
                        &evidence.offender,
                        &signature,
                    )
                }
                EquivocationKind::Prevote | EquivocationKind::Precommit => {
                    let vote = crate::bft::Vote {
                        height: crate::bft::Height(evidence.height),
                        round,
                        value: match m.value {
                            None => NilOrVal::Nil,
                            Some(hash) => NilOrVal::Val(crate::bft::BlockHash(hash)),
                        },
                        kind: if evidence.kind == EquivocationKind::Prevote {
                            VoteType::Prevote
                        } else {
                            VoteType::Precommit
                        },
                        validator: evidence.offender,
                    };
                    ctx.verify_vote(&candidate.key, &vote, &signature)
                }
            }
        };
        if !signed(first) || !signed(second) {
            return Err(TxError::BadEvidence("a signature does not verify"));
        }
        let candidate = self
            .candidates
            .get_mut(&evidence.offender)
            .expect("checked");
        // A tenth of what it has bonded and of what it is unbonding.
        let mut slashed = candidate.stake * EQUIVOCATION_SLASH_PERMILLE / 1000;
        candidate.stake -= slashed;
        for (amount, _) in &mut candidate.unbonding {
            let cut = *amount * EQUIVOCATION_SLASH_PERMILLE / 1000;
            *amount -= cut;
            slashed += cut;
        }
        candidate.slashed = true;
        let share = slashed * REPORTER_SHARE_PERMILLE / 1000;
        self.credit(reporter, share);
        self.reward_pool += slashed - share;
        self.events.push(Event::ValidatorSlashed {
            validator: evidence.offender,
            reporter,
            slashed,
        });
        Ok(())
    }

    pub(super) fn bond(&mut self, signer: AccountId, amount: u128) -> Result<(), TxError> {
        if amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        let candidate = self.candidates.get(&signer).ok_or(TxError::NotCandidate)?;
        candidate
            .stake
            .checked_add(amount)
            .ok_or(TxError::Overflow)?;
        self.can_pay(&signer, amount)?;
        self.debit(signer, amount);
        self.candidates.get_mut(&signer).expect("checked").stake += amount;
        Ok(())
    }

    pub(super) fn unbond(&mut self, signer: AccountId, amount: u128) -> Result<(), TxError> {
        if amount == 0 {
            return Err(TxError::ZeroAmount);
        }
        let candidate = self.candidates.get(&signer).ok_or(TxError::NotCandidate)?;
        if candidate.stake < amount {
            return Err(TxError::InsufficientBalance {
                needed: amount,
                available: candidate.stake,
            });
        }
        if candidate.unbonding.len() >= UNBONDING_PER_CANDIDATE_MAX {
            return Err(TxError::TooManyUnbondings);
        }
        let left = candidate.stake - amount;
        let elected = self.validators.iter().any(|v| v.account == signer);
        if elected && left < self.params.candidate_stake_min {
            return Err(TxError::ValidatorBonded);
        }
        // Paid out after the window in which evidence of what it signed until now is taken.
        let release_at = self.height + UNBONDING_ERAS * self.params.era_blocks + 1;
        let candidate = self.candidates.get_mut(&signer).expect("checked");
        candidate.stake = left;
        candidate.unbonding.push((amount, release_at));
        self.unbonding_due.insert((release_at, signer));
        Ok(())
    }

    /// Every waiting unbonding is indexed by its payout height and none is overdue.
    pub(super) fn check_unbonding_invariants(&self) -> Result<(), String> {
        let mut due = std::collections::BTreeSet::new();
        for (account, candidate) in self.candidates.iter() {
            check!(candidate.unbonding.len() <= UNBONDING_PER_CANDIDATE_MAX);
            for (amount, at) in &candidate.unbonding {
                check!(*amount > 0 || candidate.slashed, "an unbonding holds stake");
                check!(*at > self.height, "an unbonding due is paid out");
                due.insert((*at, *account));
            }
        }
        check_eq!(due, self.unbonding_due, "unbondings are indexed");
        Ok(())
    }

    /// The candidates' keys are indexed (a key is registered once), and the last election was
    /// at the last era's end (what the tables and the height say).
    pub(super) fn check_validator_indexes(&self) -> Result<(), String> {
        let keys: std::collections::BTreeSet<[u8; VALIDATOR_KEY_BYTES]> = self
            .candidates
            .iter()
            .map(|(_, c)| c.key.to_bytes())
            .collect();
        check_eq!(keys, self.validator_keys, "index of validator keys");
        let elected_at = self.height - self.height % self.params.era_blocks;
        check_eq!(elected_at, self.elected_at, "height of the last election");
        check_eq!(
            self.height / self.params.era_blocks,
            self.era,
            "era of the height"
        );
        Ok(())
    }

    /// Pays out the unbondings due at this height; a candidate left with no stake and nothing
    /// unbonding leaves the registry (a slashed one stays: its account and key can never
    /// register again).
    pub(super) fn release_unbonded(&mut self) {
        while let Some(&(at, account)) = self.unbonding_due.first() {
            if at > self.height {
                break;
            }
            self.unbonding_due.pop_first();
            let candidate = self
                .candidates
                .get_mut(&account)
                .expect("an unbonding candidate is registered");
            let due = candidate.unbonding.iter().filter(|(_, h)| *h <= at).count();
            let paid: u128 = candidate.unbonding.drain(..due).map(|(a, _)| a).sum();
            let empty = candidate.stake == 0 && candidate.unbonding.is_empty();
            let slashed = candidate.slashed;
            self.credit(account, paid);
            self.events.push(Event::StakeReleased {
                candidate: account,
                amount: paid,
            });
            if empty && !slashed {
                let candidate = self.candidates.remove(&account).expect("checked");
                self.validator_keys.remove(&candidate.key.to_bytes());
            }
        }
    }

    /// Reputation from the previous height's commit: +1 for each member of the set that
    /// signed it, −5 for each that did not.
    pub(super) fn credit_commit_signers(&mut self, signers: &[AccountId]) {
        if self.height <= 1 {
            return;
        }
        let set = if self.elected_at + 1 == self.height {
            &self.previous_validators
        } else {
            &self.validators
        };
        let members: Vec<AccountId> = set.iter().map(|v| v.account).collect();
        for member in members {
            let Some(candidate) = self.candidates.get_mut(&member) else {
                continue;
            };
            if signers.contains(&member) {
                candidate.reputation = (candidate.reputation + 1).min(REPUTATION_MAX);
                candidate.commits_missed_in_a_row = 0;
            } else {
                candidate.commits_missed_in_a_row += 1;
                if candidate.commits_missed_in_a_row > COMMIT_MISSES_FORGIVEN {
                    candidate.reputation = candidate.reputation.saturating_sub(5);
                }
            }
        }
    }

    /// `elected`: what [`Self::elected_by_next_block`] said before this block.
    pub(super) fn end_epoch_and_era(&mut self, elected: Option<Vec<super::ValidatorEntry>>) {
        if self.height.is_multiple_of(self.params.epoch_blocks) {
            let ended = self.height / self.params.epoch_blocks - 1;
            self.epoch_seeds.push((ended + 2, self.randomness));
            if self.epoch_seeds.len() > EPOCH_SEEDS_KEPT {
                self.epoch_seeds.remove(0);
            }
        }
        assert_eq!(
            elected.is_some(),
            self.height.is_multiple_of(self.params.era_blocks),
            "an election at each era's last block, and only there"
        );
        if let Some(next) = elected {
            self.era += 1;
            self.events.push(Event::ValidatorsElected {
                era: self.era,
                validators: next.iter().map(|v| v.account).collect(),
            });
            self.previous_validators = std::mem::replace(&mut self.validators, next);
            self.elected_at = self.height;
        }
    }
}
