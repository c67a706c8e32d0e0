//! The node's idle space (PoIS), sans-IO: which set to generate next, when to commit it, prove
//! its commitment and answer space audits, which idle files to report replaced by user data
//! and which to delete. The driver (`chain.rs`) generates the files into the engine as
//! `Class::Idle` fragments, proves, and makes room for user data with the engine's
//! `replace_idle`; this core only decides.
//!
//! The rule: an idle file stays in the store while its set is live on the ledger (committed or
//! certified, the file not replaced), or while its set is being generated or committed by
//! this node; everything else of class idle goes. A set is generated only when the ledger has
//! room for it beside the data (certified + committed + active + locked ≤ declared) and the
//! node's fill limit allows it.

use crate::{Action, RESUBMIT_BLOCKS};
use cess_consensus::ledger::{IDLE_PENDING_SETS_MAX, IdleSetState, Ledger, MinerState};
use cess_consensus::tx::FragmentId;
use cess_consensus::{AccountId, Call};
use std::collections::BTreeMap;

/// How much a node fills with idle files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdlePolicy {
    /// Idle bytes (certified and committed) the node aims for at most; `u64::MAX`: all the
    /// room the ledger gives.
    pub fill_bytes_max: u64,
    /// What the store can hold of idle files and user data together: its size less the
    /// engine's reserve for user writes.
    pub store_bytes_max: u64,
    /// Sets generated at once (a set is one sequential computation: one core each).
    pub parallel_sets: usize,
}

impl Default for IdlePolicy {
    fn default() -> IdlePolicy {
        IdlePolicy {
            fill_bytes_max: u64::MAX,
            store_bytes_max: u64::MAX,
            parallel_sets: 1,
        }
    }
}

/// The engine metadata of an idle fragment: its file number.
const META_PREFIX: &[u8; 11] = b"cess-idle/1";

pub fn idle_meta(number: u64) -> Vec<u8> {
    let mut meta = META_PREFIX.to_vec();
    meta.extend_from_slice(&number.to_le_bytes());
    meta
}

/// The file number an idle fragment's metadata names.
pub fn parse_idle_meta(meta: &[u8]) -> Option<u64> {
    let number = meta.strip_prefix(META_PREFIX)?;
    Some(u64::from_le_bytes(number.try_into().ok()?))
}

#[derive(Debug, Clone, Default)]
pub struct IdleCore {
    policy: IdlePolicy,
    /// Idle files in the store: number → engine key.
    files: BTreeMap<u64, FragmentId>,
    /// Sets the driver is generating: first file → the height it was asked at.
    generating: BTreeMap<u64, u64>,
    /// The height of the last failed generation: the next waits `RESUBMIT_BLOCKS`.
    failed_at: Option<u64>,
    /// Sets generated and not yet on the ledger: first → (height its `CommitIdle` was
    /// submitted at, 0 before; commitments). Submitted in order, each when the ledger numbers
    /// from it.
    committing: BTreeMap<u64, (u64, Vec<[u8; 64]>)>,
    /// Commit proofs asked of the driver: first → height.
    proving: BTreeMap<u64, u64>,
    /// Space audits answered: round → height.
    answering: BTreeMap<u64, u64>,
    /// Files replaced by user data, to report: number → height reported (0: not yet).
    replaced: BTreeMap<u64, u64>,
    /// Files claimed by a write making room, not yet given up: number → key.
    claimed: BTreeMap<u64, FragmentId>,
}

impl IdleCore {
    /// The idle files found in the store at start (number, key).
    pub fn new(policy: IdlePolicy, files: impl IntoIterator<Item = (u64, FragmentId)>) -> IdleCore {
        IdleCore {
            policy,
            files: files.into_iter().collect(),
            ..IdleCore::default()
        }
    }

    /// Idle files in the store: number → key.
    pub fn files(&self) -> &BTreeMap<u64, FragmentId> {
        &self.files
    }

    /// Whether `key` is an idle file this core knows.
    pub fn is_idle(&self, key: &FragmentId) -> bool {
        self.files.values().any(|k| k == key)
    }

    /// The driver generated and stored the set at `first`: its files (number, key) and their
    /// commitments, submitted in order from the next block.
    pub fn on_generated(
        &mut self,
        first: u64,
        files: Vec<(u64, FragmentId)>,
        commitments: Vec<[u8; 64]>,
    ) {
        self.generating.remove(&first);
        self.files.extend(files);
        self.committing.insert(first, (0, commitments));
    }

    /// The generation of the set at `first` failed (the store refused a file): none is asked
    /// for `RESUBMIT_BLOCKS`; what was stored of it goes as orphans.
    pub fn on_generation_failed(&mut self, height: u64, first: u64) {
        self.generating.remove(&first);
        self.failed_at = Some(height);
    }

    /// Takes one idle file the driver may give up for user data now (see
    /// [`IdleCore::replaceable`]) out of the files offered to others, so that two writes at
    /// once never pick the same one. The driver then calls [`IdleCore::on_replaced`], or
    /// [`IdleCore::on_replace_failed`] to give it back.
    pub fn claim_replaceable(
        &mut self,
        ledger: &Ledger,
        me: &AccountId,
    ) -> Option<(u64, FragmentId)> {
        let (number, key) = *self.replaceable(ledger, me).first()?;
        self.files.remove(&number);
        self.claimed.insert(number, key);
        Some((number, key))
    }

    /// The driver wrote user data over idle file `number` (or deleted it to make room).
    pub fn on_replaced(&mut self, number: u64) {
        self.files.remove(&number);
        self.claimed.remove(&number);
        self.replaced.insert(number, 0);
    }

    /// The answer to the space audit of `round` could not be made: asked again next block.
    pub fn on_space_answer_failed(&mut self, round: u64) {
        self.answering.remove(&round);
    }

    /// A claimed idle file was not given up after all: it is offered again.
    pub fn on_replace_failed(&mut self, number: u64) {
        if let Some(key) = self.claimed.remove(&number) {
            self.files.insert(number, key);
        }
    }

    /// An idle fragment was deleted from the store.
    pub fn on_deleted(&mut self, key: &FragmentId) {
        self.files.retain(|_, k| k != key);
    }

    /// Idle files the driver may give up for user data now: live and certified, not in the set
    /// under a space audit, in no order of preference beyond their number.
    pub fn replaceable(&self, ledger: &Ledger, me: &AccountId) -> Vec<(u64, FragmentId)> {
        let audited = ledger
            .space_challenge(me)
            .map(|(audit, _)| audit.first_file);
        let per_set = u64::from(ledger.params().pois.files_per_set);
        let live: BTreeMap<u64, bool> = live_files(ledger, me);
        self.files
            .iter()
            .filter(|(number, _)| {
                live.get(number) == Some(&true) && Some(*number - *number % per_set) != audited
            })
            .map(|(n, k)| (*n, *k))
            .collect()
    }

    pub fn on_block(&mut self, ledger: &Ledger, me: &AccountId, actions: &mut Vec<Action>) {
        let Some(miner) = ledger.miner(me) else {
            return;
        };
        let height = ledger.height();
        let params = ledger.params();
        let pois = params.pois;
        let space = ledger.idle_space(me).cloned().unwrap_or_default();

        let live = live_files(ledger, me);
        self.replaced.retain(|number, _| live.contains_key(number));
        let per_set = u64::from(pois.files_per_set);
        // A certified file the store does not have (lost, or given up before a restart and not
        // reported) is reported replaced: its set is then answered without it.
        for (number, certified) in &live {
            let first = number - number % per_set;
            if *certified
                && !self.files.contains_key(number)
                && !self.claimed.contains_key(number)
                && !self.generating.contains_key(&first)
                && !self.committing.contains_key(&first)
            {
                self.replaced.entry(*number).or_insert(0);
            }
        }

        // Space audit: answered once, again if not taken in time; not while a file of the set
        // it gave up is still live on the ledger or being given up (its `ReplaceIdle` takes it
        // out first).
        match ledger.space_challenge(me) {
            Some((audit, _))
                if height <= audit.deadline
                    && !self
                        .replaced
                        .keys()
                        .chain(self.claimed.keys())
                        .any(|n| n - n % per_set == audit.first_file) =>
            {
                let due = self
                    .answering
                    .get(&audit.round)
                    .is_none_or(|at| height >= at + RESUBMIT_BLOCKS);
                if due {
                    self.answering.insert(audit.round, height);
                    actions.push(Action::ProveSpace {
                        round: audit.round,
                        first_file: audit.first_file,
                        deadline: audit.deadline,
                    });
                }
            }
            _ => self.answering.clear(),
        }

        // Committed sets whose challenge is fixed: proven (again if not taken in time).
        let mut committed_on_ledger = Vec::new();
        for (first, set) in ledger.idle_sets(me) {
            if let IdleSetState::Committed { at, randomness } = set.state {
                committed_on_ledger.push(first);
                let open = at.saturating_add(params.pois_commit_blocks) >= height;
                let due = self
                    .proving
                    .get(&first)
                    .is_none_or(|asked| height >= asked + RESUBMIT_BLOCKS);
                if randomness.is_some() && open && due {
                    self.proving.insert(first, height);
                    actions.push(Action::ProveIdleCommit { first_file: first });
                }
            }
        }
        self.proving
            .retain(|first, _| committed_on_ledger.contains(first));

        // Pending sets still inside their proving window (the ledger drops the others at the
        // next commitment).
        let pending_live = ledger
            .idle_sets(me)
            .filter(|(_, set)| match set.state {
                IdleSetState::Committed { at, .. } => {
                    at.saturating_add(params.pois_commit_blocks) >= height
                }
                IdleSetState::Certified => false,
            })
            .count();
        let room = miner
            .declared_bytes
            .min(self.policy.store_bytes_max)
            .saturating_sub(miner.active_bytes)
            .saturating_sub(miner.locked_bytes)
            .min(self.policy.fill_bytes_max);
        let committed_bytes =
            (space.certified_files + pending_live as u64 * per_set) * pois.file_bytes();

        // Commitments: done once the ledger numbered past them; the one the ledger numbers
        // from now is submitted (again when not taken in time), while it still fits beside
        // the data (else it is dropped and its files go).
        self.committing.retain(|first, _| *first >= space.next_file);
        if committed_bytes + pois.set_bytes() > room {
            self.committing.remove(&space.next_file);
        }
        if let Some((asked, commitments)) = self.committing.get_mut(&space.next_file)
            && (*asked == 0 || height >= *asked + RESUBMIT_BLOCKS)
        {
            *asked = height.max(1);
            actions.push(Action::Submit(Call::CommitIdle {
                first_file: space.next_file,
                commitments: commitments.clone(),
            }));
        }

        // Replacements: reported (again when not taken in time), but not into a round's draw
        // window, where any report forfeits the idle reward (the ledger cannot tell it from a
        // miner hiding lost sets from the draw): held back while a draw waits or the next
        // block opens a round. The data is stored meanwhile; only the report waits.
        let drawing = space.draw.is_some() || ledger.opens_audit_round(height + 1);
        let due: Vec<u64> = self
            .replaced
            .iter()
            .filter(|_| !drawing)
            .filter(|(_, asked)| **asked == 0 || height >= **asked + RESUBMIT_BLOCKS)
            .map(|(n, _)| *n)
            .take(cess_consensus::ledger::IDLE_REPLACE_FILES_MAX)
            .collect();
        if !due.is_empty() {
            for number in &due {
                self.replaced.insert(*number, height.max(1));
            }
            actions.push(Action::Submit(Call::ReplaceIdle { files: due }));
        }

        // Idle files of no live set, not being generated or committed: deleted.
        let protected = |number: u64| {
            let first = number - number % per_set;
            self.generating.contains_key(&first) || self.committing.contains_key(&first)
        };
        for (number, key) in &self.files {
            if !live.contains_key(number) && !protected(*number) {
                actions.push(Action::Delete(*key));
            }
        }

        // The next sets, while there is room, a core and a pending slot for each. A
        // generation whose answer was lost is asked again.
        self.generating
            .retain(|_, asked| height < *asked + 10 * RESUBMIT_BLOCKS);
        if self
            .failed_at
            .is_some_and(|at| height < at + RESUBMIT_BLOCKS)
            || !matches!(miner.state, MinerState::Active)
        {
            return;
        }
        let under_way = self.generating.len() + self.committing.len();
        let mut idle_bytes = committed_bytes + under_way as u64 * pois.set_bytes();
        let mut slots = IDLE_PENDING_SETS_MAX.saturating_sub(pending_live + under_way);
        // The lowest numbers from the ledger's next that are not under way: a set whose
        // generation failed is made again before the ones after it can be committed.
        let mut next = space.next_file;
        while slots > 0
            && self.generating.len() < self.policy.parallel_sets.max(1)
            && idle_bytes + pois.set_bytes() <= room
        {
            while self.generating.contains_key(&next) || self.committing.contains_key(&next) {
                next += per_set;
            }
            self.generating.insert(next, height);
            actions.push(Action::GenerateIdle { first_file: next });
            idle_bytes += pois.set_bytes();
            next += per_set;
            slots -= 1;
        }
    }
}

/// The miner's idle files live on the ledger: number → whether certified (else committed).
fn live_files(ledger: &Ledger, me: &AccountId) -> BTreeMap<u64, bool> {
    let mut live = BTreeMap::new();
    for (first, set) in ledger.idle_sets(me) {
        for (offset, file) in set.files.iter().enumerate() {
            if file.is_some() {
                live.insert(first + offset as u64, set.state == IdleSetState::Certified);
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_names_the_file_and_nothing_else_parses() {
        assert_eq!(parse_idle_meta(&idle_meta(77)), Some(77));
        assert_eq!(parse_idle_meta(b"cess-idle/1"), None);
        assert_eq!(parse_idle_meta(&[0; 19]), None);
    }
}
