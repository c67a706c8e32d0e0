//! The mempool: transactions waiting for a block, bounded in count and bytes, in total and per
//! signer, and forgetting everything that can no longer be included.
//!
//! Rules (each a test in this module):
//! - Admission checks, cheapest first, before anything is kept: validity (not passed, at most
//!   `tx_validity_blocks_max` ahead), the least fee, a nonce in the signer's window, and that
//!   the signer's balance covers the fees of everything it has waiting plus this one. So a
//!   key with no money costs a validator one lookup, and nothing it sends is relayed.
//! - One transaction per (signer, nonce); another with the same nonce replaces it only when
//!   its fee is at least 10 % higher (a replacement is relayed to every validator, so it must
//!   cost something).
//! - Bounds: a signer keeps at most `signer_bytes_max` waiting; when the pool is full (count
//!   or bytes), a transaction paying more per byte than the cheapest waiting one evicts it
//!   (with that signer's later nonces, which depend on it); otherwise it is refused.
//! - Forgetting: after each block, a signer's nonces below its ledger nonce go, a transaction
//!   the block carried but the ledger did not include (receipt not charged) goes, and every
//!   transaction whose validity has passed goes.

use crate::TxError;
use crate::keys::AccountId;
use crate::ledger::Ledger;
use crate::tx::Transaction;
use std::collections::{BTreeMap, BTreeSet};

/// Transactions a single account may have waiting beyond its ledger nonce.
pub const NONCE_WINDOW: u64 = 1024;

/// How much a mempool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolLimits {
    pub txs_max: usize,
    pub bytes_max: usize,
    pub signer_bytes_max: usize,
}

impl Default for MempoolLimits {
    /// 100 000 transactions, 256 MiB, 8 MiB per signer (20 transactions of the largest kind).
    fn default() -> MempoolLimits {
        MempoolLimits {
            txs_max: 100_000,
            bytes_max: 256 << 20,
            signer_bytes_max: 8 << 20,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    tx: Transaction,
    len_bytes: usize,
}

impl Entry {
    /// What eviction compares: fee per encoded byte.
    fn rate(&self) -> u128 {
        self.tx.fee / self.len_bytes as u128
    }
}

#[derive(Debug, Default)]
struct Signer {
    waiting: BTreeMap<u64, Entry>,
    bytes: usize,
    fees: u128,
}

#[derive(Debug, Default)]
pub struct Mempool {
    signers: BTreeMap<AccountId, Signer>,
    /// (fee per byte, signer, nonce): the cheapest first.
    by_rate: BTreeSet<(u128, AccountId, u64)>,
    /// (valid_until, signer, nonce): the first to expire first.
    by_expiry: BTreeSet<(u64, AccountId, u64)>,
    len: usize,
    bytes: usize,
    /// Where the next block starts taking signers, so no signer always comes last.
    cursor: Option<AccountId>,
}

impl Mempool {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a block at `height` on `ledger` would carry a transaction of `signer`: one
    /// waits at its ledger nonce and is still valid.
    pub fn ready(&self, signer: &AccountId, ledger: &Ledger, height: u64) -> bool {
        let nonce = ledger.account(signer).nonce;
        self.signers
            .get(signer)
            .and_then(|s| s.waiting.get(&nonce))
            .is_some_and(|entry| entry.tx.valid_until >= height)
    }

    pub fn get(&self, signer: &AccountId, nonce: u64) -> Option<&Transaction> {
        self.signers
            .get(signer)?
            .waiting
            .get(&nonce)
            .map(|entry| &entry.tx)
    }

    /// The checks that need neither the signature nor a change: what a validator runs before
    /// it spends time verifying a signature. Returns the transaction's encoded length.
    pub fn precheck(&self, tx: &Transaction, ledger: &Ledger) -> Result<usize, TxError> {
        let len_bytes = tx.encoded_len();
        ledger.check_terms(tx, ledger.height() + 1, len_bytes)?;
        let max_blocks = ledger.params().tx_validity_blocks_max;
        if tx.valid_until - ledger.height() > max_blocks {
            return Err(TxError::ValidityTooLong {
                valid_until: tx.valid_until,
                max_blocks,
            });
        }
        let account = ledger.account(&tx.signer);
        if tx.nonce < account.nonce || tx.nonce >= account.nonce + NONCE_WINDOW {
            return Err(TxError::BadNonce {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        let (pending_fees, replaced_fee) = match self.signers.get(&tx.signer) {
            Some(signer) => (
                signer.fees,
                signer.waiting.get(&tx.nonce).map_or(0, |e| e.tx.fee),
            ),
            None => (0, 0),
        };
        let needed = (pending_fees - replaced_fee).saturating_add(tx.fee);
        if account.balance < needed {
            return Err(TxError::CannotPayFee {
                fee: needed,
                available: account.balance,
            });
        }
        Ok(len_bytes)
    }

    /// Admit a transaction whose signature was checked for this chain.
    pub fn admit(
        &mut self,
        tx: Transaction,
        ledger: &Ledger,
        limits: &MempoolLimits,
    ) -> Result<(), TxError> {
        let len_bytes = self.precheck(&tx, ledger)?;
        let replaced = self
            .signers
            .get(&tx.signer)
            .and_then(|s| s.waiting.get(&tx.nonce));
        let replacing = replaced.is_some();
        let replaced_bytes = match replaced {
            Some(old) => {
                let min_fee = old
                    .tx
                    .fee
                    .saturating_add(old.tx.fee / 10)
                    .max(old.tx.fee + 1);
                if tx.fee < min_fee {
                    return Err(TxError::ReplacementUnderpriced { min_fee });
                }
                old.len_bytes
            }
            None => 0,
        };
        let signer_bytes = self.signers.get(&tx.signer).map_or(0, |s| s.bytes);
        if signer_bytes - replaced_bytes + len_bytes > limits.signer_bytes_max {
            return Err(TxError::MempoolFull {
                reason: "the signer's share is used",
            });
        }
        if len_bytes > limits.bytes_max {
            return Err(TxError::MempoolFull {
                reason: "larger than the whole mempool",
            });
        }
        let entry = Entry { tx, len_bytes };
        let rate = entry.rate();
        let (signer, nonce) = (entry.tx.signer, entry.tx.nonce);
        if replacing {
            self.remove(&signer, nonce);
        }
        // Make room: evict the cheapest per byte while the pool would overflow, never one
        // that pays at least as much as the newcomer.
        while self.len + 1 > limits.txs_max || self.bytes + len_bytes > limits.bytes_max {
            let &(cheapest, victim, victim_nonce) =
                self.by_rate.first().expect("a full pool holds something");
            if cheapest >= rate {
                return Err(TxError::MempoolFull {
                    reason: "it pays less per byte than everything waiting",
                });
            }
            self.remove_from(&victim, victim_nonce);
        }
        self.insert(entry);
        Ok(())
    }

    fn insert(&mut self, entry: Entry) {
        let (signer_id, nonce) = (entry.tx.signer, entry.tx.nonce);
        self.by_rate.insert((entry.rate(), signer_id, nonce));
        self.by_expiry
            .insert((entry.tx.valid_until, signer_id, nonce));
        self.len += 1;
        self.bytes += entry.len_bytes;
        let signer = self.signers.entry(signer_id).or_default();
        signer.bytes += entry.len_bytes;
        signer.fees += entry.tx.fee;
        let previous = signer.waiting.insert(nonce, entry);
        assert!(previous.is_none(), "one transaction per (signer, nonce)");
    }

    /// Remove one transaction; its signer's later ones stay.
    fn remove(&mut self, signer_id: &AccountId, nonce: u64) -> Option<Transaction> {
        let signer = self.signers.get_mut(signer_id)?;
        let entry = signer.waiting.remove(&nonce)?;
        signer.bytes -= entry.len_bytes;
        signer.fees -= entry.tx.fee;
        if signer.waiting.is_empty() {
            self.signers.remove(signer_id);
        }
        self.len -= 1;
        self.bytes -= entry.len_bytes;
        assert!(self.by_rate.remove(&(entry.rate(), *signer_id, nonce)));
        assert!(
            self.by_expiry
                .remove(&(entry.tx.valid_until, *signer_id, nonce))
        );
        Some(entry.tx)
    }

    /// Remove a transaction and the signer's later ones (which cannot be included without it).
    fn remove_from(&mut self, signer_id: &AccountId, nonce: u64) {
        let later: Vec<u64> = match self.signers.get(signer_id) {
            Some(signer) => signer.waiting.range(nonce..).map(|(n, _)| *n).collect(),
            None => return,
        };
        for n in later {
            self.remove(signer_id, n);
        }
    }

    /// A block's transactions: each signer's consecutive run from its ledger nonce, signers
    /// in rotating order, at most `txs_max` transactions of at most `tx_bytes_max` encoded
    /// bytes in all. A transaction that does not fit ends its signer's run; smaller ones of
    /// other signers may still fit.
    pub fn take_block(
        &mut self,
        ledger: &Ledger,
        txs_max: usize,
        tx_bytes_max: usize,
    ) -> Vec<Transaction> {
        let height = ledger.height() + 1;
        let mut txs = Vec::new();
        let mut bytes = 0usize;
        let start = self.cursor.unwrap_or(AccountId([0; 32]));
        let order = self
            .signers
            .range(start..)
            .chain(self.signers.range(..start));
        let mut last = None;
        'signers: for (signer_id, signer) in order {
            if txs.len() >= txs_max {
                break;
            }
            last = Some(*signer_id);
            let mut nonce = ledger.account(signer_id).nonce;
            while let Some(entry) = signer.waiting.get(&nonce) {
                if txs.len() >= txs_max {
                    break 'signers;
                }
                if entry.tx.valid_until < height || bytes + entry.len_bytes > tx_bytes_max {
                    break;
                }
                bytes += entry.len_bytes;
                txs.push(entry.tx.clone());
                nonce += 1;
            }
        }
        // The next block starts after the last signer this one reached.
        self.cursor = last.and_then(|l| {
            self.signers
                .range((std::ops::Bound::Excluded(l), std::ops::Bound::Unbounded))
                .next()
                .map(|(a, _)| *a)
        });
        txs
    }

    /// After a block: forget what can no longer be included.
    pub fn after_block(
        &mut self,
        ledger: &Ledger,
        txs: &[Transaction],
        receipts: &[Result<(), TxError>],
    ) {
        for (tx, receipt) in txs.iter().zip(receipts) {
            // The ledger did not include it (it changed nothing): it never will as it is.
            if let Err(e) = receipt
                && !e.charged()
                && self.get(&tx.signer, tx.nonce) == Some(tx)
            {
                self.remove(&tx.signer, tx.nonce);
            }
            // Only the block's signers' nonces moved: drop what they can no longer use.
            let nonce = ledger.account(&tx.signer).nonce;
            let stale: Vec<u64> = match self.signers.get(&tx.signer) {
                Some(signer) => signer.waiting.range(..nonce).map(|(n, _)| *n).collect(),
                None => Vec::new(),
            };
            for n in stale {
                self.remove(&tx.signer, n);
            }
        }
        let next = ledger.height() + 1;
        while let Some(&(valid_until, signer, nonce)) = self.by_expiry.first() {
            if valid_until >= next {
                break;
            }
            self.remove(&signer, nonce);
        }
    }

    /// Checks the indexes agree with the entries (tests).
    pub fn assert_consistent(&self) {
        let mut len = 0;
        let mut bytes = 0;
        for (id, signer) in &self.signers {
            assert!(!signer.waiting.is_empty());
            assert_eq!(
                signer.bytes,
                signer.waiting.values().map(|e| e.len_bytes).sum::<usize>()
            );
            assert_eq!(
                signer.fees,
                signer.waiting.values().map(|e| e.tx.fee).sum::<u128>()
            );
            for (nonce, entry) in &signer.waiting {
                assert!(self.by_rate.contains(&(entry.rate(), *id, *nonce)));
                assert!(
                    self.by_expiry
                        .contains(&(entry.tx.valid_until, *id, *nonce))
                );
            }
            len += signer.waiting.len();
            bytes += signer.bytes;
        }
        assert_eq!((len, bytes), (self.len, self.bytes));
        assert_eq!(self.by_rate.len(), len);
        assert_eq!(self.by_expiry.len(), len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::AccountKey;
    use crate::ledger::{Genesis, GenesisValidator, LedgerParams, TOKEN};
    use crate::tx::{Call, TxTerms};
    use crate::{Ledger, ValidatorKey};

    fn key(i: u8) -> AccountKey {
        AccountKey::from_seed([i; 32])
    }

    /// Accounts 1..=8 with 1000 tokens each; account 9 with a fifth of one least fee.
    fn ledger() -> Ledger {
        let params = LedgerParams {
            validators_per_era: 1,
            ..LedgerParams::default()
        };
        let v = ValidatorKey::from_seed(&[50; 32]);
        let mut accounts: Vec<_> = (1..=8).map(|i| (key(i).id(), 1000 * TOKEN)).collect();
        accounts.push((key(9).id(), params.fee_base / 5));
        Ledger::genesis(&Genesis {
            chain_name: "mempool".into(),
            time_ms: 0,
            accounts,
            reward_pool: 0,
            validators: vec![GenesisValidator {
                account: key(1).id(),
                key: v.public().to_bytes(),
                possession: v.proof_of_possession().to_bytes(),
                stake: params.candidate_stake_min,
            }],
            taggers: Vec::new(),
            params,
        })
        .unwrap()
    }

    /// The next block's consensus inputs (no commit signers, fixed randomness).
    fn block_info(height: u64) -> crate::BlockInfo {
        crate::BlockInfo {
            height,
            time_ms: height,
            vrf_output: [0; 32],
            last_commit: vec![],
        }
    }

    fn transfer(ledger: &Ledger, from: u8, nonce: u64, fee_extra: u128) -> Transaction {
        let tx = ledger.transaction_with_nonce(
            &key(from),
            nonce,
            Call::Transfer {
                to: key(2).id(),
                amount: 1,
            },
        );
        resign(ledger, from, &tx, tx.fee + fee_extra, tx.call.clone())
    }

    fn big(ledger: &Ledger, from: u8, nonce: u64, len: usize, fee_extra: u128) -> Transaction {
        let tx = ledger.transaction_with_nonce(
            &key(from),
            nonce,
            Call::SubmitProof {
                round: 1,
                tagger: [0; 32],
                proof: vec![1; len],
            },
        );
        resign(ledger, from, &tx, tx.fee + fee_extra, tx.call.clone())
    }

    fn resign(ledger: &Ledger, from: u8, tx: &Transaction, fee: u128, call: Call) -> Transaction {
        Transaction::sign(
            &key(from),
            &ledger.chain_id(),
            TxTerms { fee, ..tx.terms() },
            call,
        )
    }

    #[test]
    fn admission_refuses_the_unpayable_the_expired_and_the_far_future() {
        let ledger = ledger();
        let limits = MempoolLimits::default();
        let mut pool = Mempool::default();
        let broke = ledger.transaction(
            &key(9),
            Call::Transfer {
                to: key(2).id(),
                amount: 1,
            },
        );
        assert!(matches!(
            pool.admit(broke, &ledger, &limits),
            Err(TxError::CannotPayFee { .. })
        ));
        let good = transfer(&ledger, 1, 0, 0);
        let cheap = resign(&ledger, 1, &good, good.fee - 1, good.call.clone());
        assert!(matches!(
            pool.admit(cheap, &ledger, &limits),
            Err(TxError::FeeTooLow { .. })
        ));
        let sign = |valid_until| {
            Transaction::sign(
                &key(1),
                &ledger.chain_id(),
                TxTerms {
                    valid_until,
                    ..good.terms()
                },
                good.call.clone(),
            )
        };
        assert!(matches!(
            pool.admit(sign(0), &ledger, &limits),
            Err(TxError::Expired { .. })
        ));
        let too_far = ledger.params().tx_validity_blocks_max + 1;
        assert!(matches!(
            pool.admit(sign(too_far), &ledger, &limits),
            Err(TxError::ValidityTooLong { .. })
        ));
        let beyond_window = transfer(&ledger, 1, NONCE_WINDOW, 0);
        assert!(matches!(
            pool.admit(beyond_window, &ledger, &limits),
            Err(TxError::BadNonce { .. })
        ));
        assert!(pool.is_empty());
        pool.admit(good, &ledger, &limits).unwrap();
        assert_eq!(pool.len(), 1);
        pool.assert_consistent();
    }

    #[test]
    fn the_fees_of_everything_waiting_must_be_payable() {
        let mut ledger = ledger();
        // Account 9 gets enough for exactly two least fees.
        let fee = transfer(&ledger, 9, 0, 0).fee;
        let funding = ledger.transaction(
            &key(3),
            Call::Transfer {
                to: key(9).id(),
                amount: 2 * fee - ledger.account(&key(9).id()).balance,
            },
        );
        let info = block_info(1);
        let outcome = ledger.apply_block(&info, &[funding], &cess_proofs::CpuBackend);
        assert_eq!(outcome.receipts[0], Ok(()));
        let limits = MempoolLimits::default();
        let mut pool = Mempool::default();
        pool.admit(transfer(&ledger, 9, 0, 0), &ledger, &limits)
            .unwrap();
        pool.admit(transfer(&ledger, 9, 1, 0), &ledger, &limits)
            .unwrap();
        assert!(matches!(
            pool.admit(transfer(&ledger, 9, 2, 0), &ledger, &limits),
            Err(TxError::CannotPayFee { .. })
        ));
    }

    #[test]
    fn a_replacement_must_pay_ten_percent_more() {
        let ledger = ledger();
        let limits = MempoolLimits::default();
        let mut pool = Mempool::default();
        let first = transfer(&ledger, 1, 0, 0);
        pool.admit(first.clone(), &ledger, &limits).unwrap();
        assert!(matches!(
            pool.admit(first.clone(), &ledger, &limits),
            Err(TxError::ReplacementUnderpriced { .. })
        ));
        let slightly = transfer(&ledger, 1, 0, first.fee / 20);
        assert!(matches!(
            pool.admit(slightly, &ledger, &limits),
            Err(TxError::ReplacementUnderpriced { .. })
        ));
        let better = transfer(&ledger, 1, 0, first.fee / 10 + 1);
        pool.admit(better.clone(), &ledger, &limits).unwrap();
        assert_eq!(pool.get(&key(1).id(), 0), Some(&better));
        assert_eq!(pool.len(), 1);
        pool.assert_consistent();
    }

    #[test]
    fn a_full_pool_evicts_the_cheapest_per_byte_and_its_successors_only_for_a_better_payer() {
        let ledger = ledger();
        let one = big(&ledger, 1, 0, 10_000, 0).encoded_len();
        let limits = MempoolLimits {
            txs_max: 100,
            bytes_max: 3 * one,
            signer_bytes_max: 2 * one,
        };
        let mut pool = Mempool::default();
        // Signer 1: two at the least fee; signer 2: one paying more per byte.
        pool.admit(big(&ledger, 1, 0, 10_000, 0), &ledger, &limits)
            .unwrap();
        pool.admit(big(&ledger, 1, 1, 10_000, 0), &ledger, &limits)
            .unwrap();
        assert!(matches!(
            pool.admit(big(&ledger, 1, 2, 10_000, 0), &ledger, &limits),
            Err(TxError::MempoolFull { .. })
        ));
        pool.admit(big(&ledger, 2, 0, 10_000, TOKEN), &ledger, &limits)
            .unwrap();
        assert_eq!(pool.bytes(), 3 * one);
        // Full. A newcomer paying no more than the cheapest is refused…
        assert!(matches!(
            pool.admit(big(&ledger, 3, 0, 10_000, 0), &ledger, &limits),
            Err(TxError::MempoolFull { .. })
        ));
        // …one paying more evicts the cheapest (signer 1's nonce 0, so its nonce 1 too).
        let least = big(&ledger, 3, 0, 10_000, 0).fee;
        pool.admit(big(&ledger, 3, 0, 10_000, least / 100), &ledger, &limits)
            .unwrap();
        assert!(pool.get(&key(1).id(), 0).is_none());
        assert!(pool.get(&key(1).id(), 1).is_none());
        assert!(pool.get(&key(2).id(), 0).is_some());
        assert!(pool.get(&key(3).id(), 0).is_some());
        pool.assert_consistent();
    }

    #[test]
    fn blocks_are_cut_by_bytes_and_the_pool_forgets_what_cannot_be_included() {
        let mut ledger = ledger();
        let limits = MempoolLimits::default();
        let mut pool = Mempool::default();
        for nonce in 0..4 {
            pool.admit(big(&ledger, 1, nonce, 100_000, 0), &ledger, &limits)
                .unwrap();
        }
        let short_lived = Transaction::sign(
            &key(4),
            &ledger.chain_id(),
            TxTerms {
                valid_until: 1,
                ..transfer(&ledger, 4, 0, 0).terms()
            },
            Call::Transfer {
                to: key(2).id(),
                amount: 1,
            },
        );
        pool.admit(short_lived, &ledger, &limits).unwrap();
        pool.admit(transfer(&ledger, 5, 0, 0), &ledger, &limits)
            .unwrap();
        let one = big(&ledger, 1, 0, 100_000, 0).encoded_len();
        let txs = pool.take_block(&ledger, 100, 2 * one + 1000);
        let bytes: usize = txs.iter().map(Transaction::encoded_len).sum();
        assert!(bytes <= 2 * one + 1000, "{bytes} bytes");
        assert_eq!(
            txs.iter().filter(|t| t.signer == key(1).id()).count(),
            2,
            "signer 1's run stops at the byte bound"
        );
        assert_eq!(txs.len(), 4, "the small ones of others still fit");
        let info = block_info(1);
        let outcome = ledger.apply_block(&info, &txs, &cess_proofs::CpuBackend);
        assert!(
            outcome
                .receipts
                .iter()
                .all(|r| r.as_ref().map_or_else(TxError::charged, |_| true)),
            "{:?}",
            outcome.receipts
        );
        pool.after_block(&ledger, &txs, &outcome.receipts);
        pool.assert_consistent();
        assert_eq!(pool.len(), 2, "signer 1's last two wait; the rest went");
        // The short-lived transaction would have expired even had it not been included.
        let mut pool2 = Mempool::default();
        let short = Transaction::sign(
            &key(6),
            &ledger.chain_id(),
            TxTerms {
                valid_until: 2,
                ..transfer(&ledger, 6, 0, 0).terms()
            },
            Call::Transfer {
                to: key(2).id(),
                amount: 1,
            },
        );
        pool2.admit(short, &ledger, &limits).unwrap();
        let info = block_info(2);
        ledger.apply_block(&info, &[], &cess_proofs::CpuBackend);
        pool2.after_block(&ledger, &[], &[]);
        assert!(pool2.is_empty(), "expired");
    }

    #[test]
    fn a_transaction_the_ledger_did_not_include_leaves_the_pool() {
        let mut ledger = ledger();
        let limits = MempoolLimits::default();
        let mut pool = Mempool::default();
        let tx = transfer(&ledger, 7, 0, 0);
        let second = transfer(&ledger, 7, 1, 0);
        pool.admit(tx.clone(), &ledger, &limits).unwrap();
        pool.admit(second.clone(), &ledger, &limits).unwrap();
        // A block carries a twin with a bad signature (a proposer's choice).
        let info = block_info(1);
        let mut bad = tx.clone();
        bad.signature[0] ^= 1;
        let outcome =
            ledger.apply_block(&info, std::slice::from_ref(&bad), &cess_proofs::CpuBackend);
        assert_eq!(outcome.receipts[0], Err(TxError::BadSignature));
        // Not the same bytes: the pool keeps its own (valid) one.
        pool.after_block(&ledger, &[bad], &outcome.receipts);
        assert_eq!(pool.len(), 2);
        let info = block_info(2);
        // The next block carries nonce 1 before nonce 0: not included, so it leaves.
        let block = [second];
        let outcome = ledger.apply_block(&info, &block, &cess_proofs::CpuBackend);
        assert!(matches!(outcome.receipts[0], Err(TxError::BadNonce { .. })));
        pool.after_block(&ledger, &block, &outcome.receipts);
        assert_eq!(pool.len(), 1, "the one not included went");
        assert_eq!(pool.get(&key(7).id(), 0), Some(&tx));
        pool.assert_consistent();
    }
}
