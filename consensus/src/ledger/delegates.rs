//! Delegates: accounts an owner lets act for it on its files (the seed's "authorize a gateway"
//! step, CESS's `oss.authorize`). A delegate may read the owner's files from the miners that
//! hold them and, through `Call::ForOwner`, declare files in the owner's space, delete the
//! owner's files and keep its buckets (what an S3 gateway does for its users); never move the
//! owner's money, rent, or name other delegates. An owner authorizes only an account it
//! trusts with its files. Each owner names at most
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

    /// The owners that authorized `account` (a gateway acting for them), in order.
    pub fn delegators(&self, account: &AccountId) -> impl Iterator<Item = &AccountId> {
        self.delegated.get(account).into_iter().flatten()
    }

    /// How many owners authorized `account`.
    pub fn delegator_count(&self, account: &AccountId) -> usize {
        self.delegated.get(account).map_or(0, BTreeSet::len)
    }

    pub(super) fn authorize(
        &mut self,
        owner: AccountId,
        delegate: AccountId,
    ) -> Result<(), TxError> {
        if owner == delegate {
            return Err(TxError::BadDelegate("an account always acts for itself"));
        }
        // A delegate gets standing with the miners (it may connect): only an owner who pays
        // for space may hand that out.
        if self.leases.get(&owner).is_none() {
            return Err(TxError::NoLease);
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
        self.delegated.entry(delegate).or_default().insert(owner);
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
        let owners = self
            .delegated
            .get_mut(&delegate)
            .expect("every authorized delegate is indexed");
        assert!(owners.remove(&owner), "indexed under its owner");
        if owners.is_empty() {
            self.delegated.remove(&delegate);
        }
        if next.0.is_empty() {
            self.delegates.remove(&owner);
        } else {
            self.delegates.insert(owner, next);
        }
        Ok(())
    }

    /// The derived index of owners per delegate agrees with the table.
    pub(super) fn check_delegate_invariants(&self) -> Result<(), String> {
        let mut index: std::collections::BTreeMap<AccountId, BTreeSet<AccountId>> =
            Default::default();
        for (owner, delegates) in self.delegates.iter() {
            check!(
                !delegates.0.is_empty(),
                "an owner without delegates has no entry"
            );
            check!(delegates.0.len() <= DELEGATES_PER_OWNER_MAX);
            check!(!delegates.0.contains(owner), "no owner is its own delegate");
            for delegate in &delegates.0 {
                index.entry(*delegate).or_default().insert(*owner);
            }
        }
        check_eq!(
            index,
            self.delegated,
            "the delegate index drifted from the table"
        );
        Ok(())
    }
}
