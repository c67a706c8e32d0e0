//! Space: owners rent it, orders use it, miners earn its rent for the bytes they hold.
//!
//! An owner's lease is `gib` GiB until height `until`; its files are kept
//! `lease_grace_blocks` more (no new orders meanwhile) and then released (the owner leaves
//! each file, the last owner's leaving deletes it). Every GiB-block a lease adds is paid when
//! it is added, into the reward pool, at `rent_per_gib_block`; a new lease also pays for its
//! grace blocks, so what a lease's files can earn their miners is always paid before.
//!
//! A miner accrues `rent_per_gib_block` for every GiB-block of fragments it holds (reported
//! stored), kept up to date whenever its stored bytes change, and is paid what accrued at its
//! next valid proof; a missed or invalid proof forfeits it. So miners are paid what owners
//! paid, for data they proved, and a miner that uploads to itself gets back at most the rent
//! it paid, less every fee: self-dealing earns nothing.

use super::tracked::Hashed;
use super::{FileInfo, GIB, Ledger, TxError};
use crate::codec::Writer;
use crate::keys::AccountId;
use crate::tx::Hash32;

/// An owner's rented space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub gib: u32,
    /// Bytes its files' orders use (every fragment of every segment).
    pub used_bytes: u64,
    /// Last height at which new orders may use it.
    pub until: u64,
}

impl Lease {
    pub fn capacity_bytes(&self) -> u64 {
        u64::from(self.gib) * GIB
    }

    pub fn free_bytes(&self) -> u64 {
        self.capacity_bytes().saturating_sub(self.used_bytes)
    }
}

impl Hashed for Lease {
    fn encode_hashed(&self, w: &mut Writer) {
        w.u32(self.gib).u64(self.used_bytes).u64(self.until);
    }
}

/// The rent clock a miner's accrual reads: this block's height and the price.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RentClock {
    pub height: u64,
    pub per_gib_block: u128,
}

impl RentClock {
    /// Rent for `bytes` held over `blocks` blocks (saturating: no u128 is exceeded by real
    /// sizes and periods, and a saturated claim is still capped by the pool).
    pub fn rent(&self, bytes: u64, blocks: u64) -> u128 {
        u128::from(bytes)
            .saturating_mul(self.per_gib_block)
            .saturating_mul(u128::from(blocks))
            / u128::from(GIB)
    }
}

impl Ledger {
    pub fn lease(&self, owner: &AccountId) -> Option<&Lease> {
        self.leases.get(owner)
    }

    pub(super) fn rent_clock(&self) -> RentClock {
        RentClock {
            height: self.height,
            per_gib_block: self.params.rent_per_gib_block,
        }
    }

    /// What a lease of `gib` GiB ending at `until` still holds paid at `height`, in GiB-blocks
    /// (through its grace blocks).
    fn paid_gib_blocks(&self, gib: u32, until: u64) -> Option<u128> {
        let end = until.checked_add(self.params.lease_grace_blocks)?;
        Some(u128::from(gib) * u128::from(end.saturating_sub(self.height)))
    }

    /// Rent space or extend the lease; the price is every GiB-block added.
    pub(super) fn rent_space(
        &mut self,
        signer: AccountId,
        add_gib: u32,
        add_blocks: u64,
    ) -> Result<(), TxError> {
        if add_gib == 0 && add_blocks == 0 {
            return Err(TxError::ZeroAmount);
        }
        let old = self.leases.get(&signer).copied();
        let (gib, until) = old.map_or((0, self.height), |l| (l.gib, l.until));
        let new_gib = gib.checked_add(add_gib).ok_or(TxError::Overflow)?;
        let new_until = until
            .max(self.height)
            .checked_add(add_blocks)
            .ok_or(TxError::Overflow)?;
        if new_gib == 0 {
            return Err(TxError::BadLease("a lease needs at least one GiB"));
        }
        if new_until <= self.height {
            return Err(TxError::BadLease("a lease must run past this block"));
        }
        let held = match old {
            Some(lease) => self
                .paid_gib_blocks(lease.gib, lease.until)
                .ok_or(TxError::Overflow)?,
            None => 0,
        };
        let after = self
            .paid_gib_blocks(new_gib, new_until)
            .ok_or(TxError::Overflow)?;
        let price = after
            .checked_sub(held)
            .expect("a lease only grows")
            .checked_mul(self.params.rent_per_gib_block)
            .ok_or(TxError::Overflow)?;
        self.can_pay(&signer, price)?;

        self.debit(signer, price);
        self.reward_pool += price;
        if let Some(lease) = old {
            let grace = self.params.lease_grace_blocks;
            assert!(
                self.indexes
                    .lease_ends
                    .remove(&(lease.until + grace, signer))
            );
        }
        self.indexes
            .lease_ends
            .insert((new_until + self.params.lease_grace_blocks, signer));
        self.leases.insert(
            signer,
            Lease {
                gib: new_gib,
                used_bytes: old.map_or(0, |l| l.used_bytes),
                until: new_until,
            },
        );
        Ok(())
    }

    /// Checks that `owner`'s lease can take an order of `bytes` now.
    pub(super) fn check_space(&self, owner: &AccountId, bytes: u64) -> Result<(), TxError> {
        let lease = self.leases.get(owner).ok_or(TxError::NoLease)?;
        if self.height > lease.until {
            return Err(TxError::LeaseEnded { until: lease.until });
        }
        if lease.free_bytes() < bytes {
            return Err(TxError::SpaceExceeded {
                needed: bytes,
                free: lease.free_bytes(),
            });
        }
        Ok(())
    }

    /// The files `owner` owns (pending or not), by id: what a gateway lists an owner's
    /// buckets from.
    pub fn files_of(&self, owner: &AccountId) -> impl Iterator<Item = (&Hash32, &FileInfo)> {
        self.indexes
            .owned
            .get(owner)
            .into_iter()
            .flatten()
            .map(|id| (id, self.files.get(id).expect("owned files exist")))
    }

    /// `owner` now owns `file_id`, using `bytes` of its lease (checked by `check_space`).
    pub(super) fn use_space(&mut self, owner: AccountId, file_id: Hash32, bytes: u64) {
        let lease = self.leases.get_mut(&owner).expect("checked space");
        lease.used_bytes += bytes;
        assert!(lease.used_bytes <= lease.capacity_bytes(), "lease overused");
        assert!(
            self.indexes.owned.entry(owner).or_default().insert(file_id),
            "an owner owns a file once"
        );
    }

    /// `owner` no longer owns `file_id`: its bytes return to the lease.
    pub(super) fn free_space(&mut self, owner: &AccountId, file_id: &Hash32, bytes: u64) {
        let lease = self.leases.get_mut(owner).expect("owners hold leases");
        lease.used_bytes = lease
            .used_bytes
            .checked_sub(bytes)
            .expect("a lease frees what it used");
        let owned = self.indexes.owned.get_mut(owner).expect("owned is indexed");
        assert!(owned.remove(file_id), "owned is indexed");
        if owned.is_empty() {
            self.indexes.owned.remove(owner);
        }
    }

    /// Leases past their grace blocks release their files, oldest end first, within
    /// `lease_releases_per_block_max` fragments per block (a lease removed counts one, at least
    /// one file goes per block; the rest wait for the next blocks); a lease with nothing left is
    /// removed. The work is what the budget allows, however many leases have ended.
    pub(super) fn end_leases(&mut self) {
        let mut budget = u64::from(self.params.lease_releases_per_block_max);
        let mut released_one = false;
        while budget > 0 {
            let Some(&(end, owner)) = self
                .indexes
                .lease_ends
                .range(..(self.height, AccountId([0; 32])))
                .next()
            else {
                return;
            };
            while let Some(file_id) = self
                .indexes
                .owned
                .get(&owner)
                .and_then(|set| set.iter().next().copied())
            {
                let fragments = self.files[&file_id].fragment_count();
                if fragments > budget && released_one {
                    return;
                }
                self.leave_file(owner, &file_id);
                self.events
                    .push(super::Event::LeaseReleasedFile { owner, file_id });
                released_one = true;
                budget = budget.saturating_sub(fragments);
                if budget == 0 {
                    return;
                }
            }
            assert!(self.indexes.lease_ends.remove(&(end, owner)));
            let lease = self.leases.remove(&owner).expect("indexed leases exist");
            assert_eq!(lease.used_bytes, 0, "an empty lease uses nothing");
            self.events.push(super::Event::LeaseEnded { owner });
            budget -= 1;
        }
    }
}
