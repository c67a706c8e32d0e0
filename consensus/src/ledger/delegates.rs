//! Delegates: accounts an owner lets act for it on its files (the seed's "authorize a gateway"
//! step, CESS's `oss.authorize`). A delegate may read the owner's files from the miners that
//! hold them; an S3 gateway is such a delegate. Each owner names at most
//! [`DELEGATES_PER_OWNER_MAX`], so every check a node makes against the list is bounded.

use super::tracked::Hashed;
use super::{Ledger, TxError};
use crate::codec::Writer;
use crate::keys::AccountId;
use std::collections::BTreeSet;

/// Delegates one owner may name (a gateway or two, a backup agent, a few devices).
pub const DELEGATES_PER_OWNER_MAX: usize = 8;

/// The accounts one owner has authorized, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delegates(pub BTreeSet<AccountId>);

impl Hashed for Delegates {
    fn encode_hashed(&self, w: &mut Writer) {
        w.count(self.0.len());
        for delegate in &self.0 {
            w.fixed(&delegate.0);
        }
    }
}

impl Ledger {
    /// The accounts `owner` has authorized (empty when none).
    pub fn delegates(&self, owner: &AccountId) -> impl Iterator<Item = &AccountId> {
        self.delegates
            .get(owner)
            .into_iter()
            .flat_map(|d| d.0.iter())
    }

    /// Whether `owner` has authorized `delegate`.
    pub fn is_delegate(&self, owner: &AccountId, delegate: &AccountId) -> bool {
        self.delegates
            .get(owner)
            .is_some_and(|d| d.0.contains(delegate))
    }

    /// Whether any owner has authorized `account` (a gateway acting for someone).
    pub fn is_delegate_of_anyone(&self, account: &AccountId) -> bool {
        self.delegated.contains_key(account)
    }

    pub(super) fn authorize(
        &mut self,
        owner: AccountId,
        delegate: AccountId,
    ) -> Result<(), TxError> {
        if owner == delegate {
            return Err(TxError::BadDelegate("an account always acts for itself"));
        }
        let current = self.delegates.get(&owner).cloned().unwrap_or_default();
        if current.0.contains(&delegate) {
            return Err(TxError::BadDelegate("already authorized"));
        }
        if current.0.len() >= DELEGATES_PER_OWNER_MAX {
            return Err(TxError::TooManyDelegates {
                max: DELEGATES_PER_OWNER_MAX,
            });
        }
        let mut next = current;
        next.0.insert(delegate);
        self.delegates.insert(owner, next);
        *self.delegated.entry(delegate).or_insert(0) += 1;
        Ok(())
    }

    pub(super) fn deauthorize(
        &mut self,
        owner: AccountId,
        delegate: AccountId,
    ) -> Result<(), TxError> {
        let Some(current) = self.delegates.get(&owner) else {
            return Err(TxError::BadDelegate("not authorized"));
        };
        if !current.0.contains(&delegate) {
            return Err(TxError::BadDelegate("not authorized"));
        }
        let mut next = current.clone();
        next.0.remove(&delegate);
        let count = self
            .delegated
            .get_mut(&delegate)
            .expect("every authorized delegate is counted");
        *count -= 1;
        if *count == 0 {
            self.delegated.remove(&delegate);
        }
        if next.0.is_empty() {
            self.delegates.remove(&owner);
        } else {
            self.delegates.insert(owner, next);
        }
        Ok(())
    }

    /// The derived count of owners per delegate agrees with the table (tests).
    pub(super) fn assert_delegate_invariants(&self) {
        let mut counted: std::collections::BTreeMap<AccountId, u32> = Default::default();
        for (owner, delegates) in self.delegates.iter() {
            assert!(
                !delegates.0.is_empty(),
                "an owner without delegates has no entry"
            );
            assert!(delegates.0.len() <= DELEGATES_PER_OWNER_MAX);
            assert!(!delegates.0.contains(owner), "no owner is its own delegate");
            for delegate in &delegates.0 {
                *counted.entry(*delegate).or_insert(0) += 1;
            }
        }
        assert_eq!(
            counted, self.delegated,
            "delegate counts drifted from the table"
        );
    }
}
