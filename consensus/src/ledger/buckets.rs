//! Buckets: an owner's named groups of files (the seed's `bucket_name` in a file's UserBrief,
//! CESS's `create_bucket`), what an S3 gateway shows as buckets. A file's owner lists it in
//! one of its buckets, or in none. Each owner has at most [`BUCKETS_PER_OWNER_MAX`], and each
//! bucket counts the files listed in it, so deleting one is a bounded check and a bucket with
//! files cannot be deleted.

use super::tracked::Hashed;
use super::{Ledger, TxError};
use crate::codec::Writer;
use crate::keys::AccountId;
use crate::tx::BUCKET_NAME_BYTES_MAX;
use std::collections::BTreeMap;

/// S3's default limit of buckets per account.
pub const BUCKETS_PER_OWNER_MAX: usize = 100;

/// An owner's buckets by name, each with the number of files listed in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buckets(pub BTreeMap<String, u64>);

impl Hashed for Buckets {
    fn encode_hashed(&self, w: &mut Writer) {
        w.count(self.0.len());
        for (name, files) in &self.0 {
            w.str(name).u64(*files);
        }
    }
}

/// Whether `name` is a bucket name S3 accepts (3 to 63 bytes of lower-case letters, digits,
/// `.` and `-`, starting and ending with a letter or digit, no `..`, not an IPv4 address), so
/// every bucket on the ledger is one any S3 client can name.
pub fn check_bucket_name(name: &str) -> Result<(), TxError> {
    let bytes = name.as_bytes();
    if !(3..=BUCKET_NAME_BYTES_MAX).contains(&bytes.len()) {
        return Err(TxError::BadBucketName("3 to 63 characters"));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
    {
        return Err(TxError::BadBucketName(
            "only lower-case letters, digits, '.' and '-'",
        ));
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(TxError::BadBucketName(
            "starts and ends with a letter or digit",
        ));
    }
    if name.contains("..") {
        return Err(TxError::BadBucketName("no two dots in a row"));
    }
    // `core::net`: parsing an address is no I/O (the ledger stays a pure module).
    if name.parse::<core::net::Ipv4Addr>().is_ok() {
        return Err(TxError::BadBucketName("not an IP address"));
    }
    Ok(())
}

impl Ledger {
    /// `owner`'s buckets and the files listed in each, by name.
    pub fn buckets(&self, owner: &AccountId) -> impl Iterator<Item = (&String, u64)> {
        self.buckets
            .get(owner)
            .into_iter()
            .flat_map(|b| b.0.iter().map(|(name, files)| (name, *files)))
    }

    pub fn has_bucket(&self, owner: &AccountId, name: &str) -> bool {
        self.buckets
            .get(owner)
            .is_some_and(|b| b.0.contains_key(name))
    }

    pub(super) fn create_bucket(&mut self, owner: AccountId, name: &str) -> Result<(), TxError> {
        check_bucket_name(name)?;
        // An entry on the ledger for every bucket: only an owner who pays for space makes one.
        if self.leases.get(&owner).is_none() {
            return Err(TxError::NoLease);
        }
        let mut next = self.buckets.get(&owner).cloned().unwrap_or_default();
        if next.0.contains_key(name) {
            return Err(TxError::BucketExists);
        }
        if next.0.len() >= BUCKETS_PER_OWNER_MAX {
            return Err(TxError::TooManyBuckets {
                max: BUCKETS_PER_OWNER_MAX,
            });
        }
        next.0.insert(name.to_string(), 0);
        self.buckets.insert(owner, next);
        Ok(())
    }

    pub(super) fn delete_bucket(&mut self, owner: AccountId, name: &str) -> Result<(), TxError> {
        let Some(current) = self.buckets.get(&owner) else {
            return Err(TxError::NoSuchBucket);
        };
        match current.0.get(name) {
            None => return Err(TxError::NoSuchBucket),
            Some(&files) if files > 0 => return Err(TxError::BucketNotEmpty { files }),
            Some(_) => {}
        }
        let mut next = current.clone();
        next.0.remove(name);
        if next.0.is_empty() {
            self.buckets.remove(&owner);
        } else {
            self.buckets.insert(owner, next);
        }
        Ok(())
    }

    /// Checks that a file may be listed in `owner`'s `bucket` (none: always).
    pub(super) fn check_bucket(&self, owner: &AccountId, bucket: &str) -> Result<(), TxError> {
        if bucket.is_empty() || self.has_bucket(owner, bucket) {
            Ok(())
        } else {
            Err(TxError::NoSuchBucket)
        }
    }

    /// A file of `owner`'s was listed in `bucket` (checked with [`Ledger::check_bucket`]).
    pub(super) fn bucket_file_added(&mut self, owner: AccountId, bucket: &str) {
        if bucket.is_empty() {
            return;
        }
        let mut next = self.buckets.get(&owner).cloned().expect("checked bucket");
        *next.0.get_mut(bucket).expect("checked bucket") += 1;
        self.buckets.insert(owner, next);
    }

    /// A file of `owner`'s listed in `bucket` left it (deleted, released, expired).
    pub(super) fn bucket_file_removed(&mut self, owner: AccountId, bucket: &str) {
        if bucket.is_empty() {
            return;
        }
        let mut next = self
            .buckets
            .get(&owner)
            .cloned()
            .expect("a listed file's bucket exists");
        let files = next
            .0
            .get_mut(bucket)
            .expect("a listed file's bucket exists");
        *files = files.checked_sub(1).expect("a bucket counts its files");
        self.buckets.insert(owner, next);
    }

    /// Every bucket counts exactly the files its owner lists in it, and every listed file's
    /// bucket exists.
    pub(super) fn check_bucket_invariants(&self) -> Result<(), String> {
        let mut counted: BTreeMap<(AccountId, String), u64> = BTreeMap::new();
        for (_, file) in self.files.iter() {
            for (owner, brief) in &file.owners {
                if !brief.bucket.is_empty() {
                    *counted.entry((*owner, brief.bucket.clone())).or_default() += 1;
                }
            }
        }
        for ((owner, bucket), files) in &counted {
            check!(
                self.buckets
                    .get(owner)
                    .and_then(|b| b.0.get(bucket))
                    .is_some_and(|n| n == files),
                "bucket {bucket} of {owner:?} does not count its {files} files"
            );
        }
        for (owner, buckets) in self.buckets.iter() {
            check!(
                !buckets.0.is_empty(),
                "an owner without buckets has no entry"
            );
            check!(buckets.0.len() <= BUCKETS_PER_OWNER_MAX);
            for (bucket, files) in &buckets.0 {
                check!(check_bucket_name(bucket).is_ok(), "bucket name {bucket:?}");
                let listed = counted.get(&(*owner, bucket.clone())).copied().unwrap_or(0);
                check_eq!(*files, listed, "bucket {} counts its files", bucket);
            }
        }
        Ok(())
    }
}
