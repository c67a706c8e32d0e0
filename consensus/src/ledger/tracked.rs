//! The state root without rehashing the state: each table is a map whose entries are summed
//! into a lattice hash (LtHash, Bellare–Micciancio's additive hash with 1024 lanes of 16 bits
//! as in Facebook's and Solana's deployments), so changing an entry costs one hash of the
//! entry, whatever the size of the state.
//!
//! An entry contributes `LtHash(BLAKE3-XOF(table ‖ key ‖ value))`; a table's sum is the sum of
//! its entries' contributions (wrapping, lane by lane), and removing or changing an entry
//! subtracts its old contribution. [`Tracked`] subtracts an entry's contribution when it is
//! first touched (`get_mut`, `insert`, `remove`, `or_default`) and adds the new value's when
//! the sum is next read ([`Tracked::digest`]); [`Tracked::digest_from_scratch`] is the
//! obviously-right reference (every entry hashed again) the tests compare it with after
//! every block.

use crate::codec::Writer;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) const LANES: usize = 1024;

/// A multiset hash: the wrapping lane-wise sum of its elements' expansions.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct LtHash(Box<[u16; LANES]>);

impl std::fmt::Debug for LtHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LtHash({})", crate::codec::hex(&self.checksum()[..8]))
    }
}

impl Default for LtHash {
    fn default() -> LtHash {
        LtHash(Box::new([0; LANES]))
    }
}

impl LtHash {
    /// The expansion of one element: 2 KiB of BLAKE3 output keyed by a domain.
    pub fn of(bytes: &[u8]) -> LtHash {
        let mut hasher = blake3::Hasher::new_derive_key("cess-ledger/1 lthash element");
        hasher.update(bytes);
        let mut out = [0u8; 2 * LANES];
        hasher.finalize_xof().fill(&mut out);
        let mut lanes = Box::new([0u16; LANES]);
        for (lane, pair) in lanes.iter_mut().zip(out.chunks_exact(2)) {
            *lane = u16::from_le_bytes([pair[0], pair[1]]);
        }
        LtHash(lanes)
    }

    pub fn add(&mut self, other: &LtHash) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.wrapping_add(*b);
        }
    }

    pub fn sub(&mut self, other: &LtHash) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.wrapping_sub(*b);
        }
    }

    /// 32 bytes that stand for the sum (what a root hashes).
    pub fn checksum(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key("cess-ledger/1 lthash checksum");
        for lane in self.0.iter() {
            hasher.update(&lane.to_le_bytes());
        }
        *hasher.finalize().as_bytes()
    }
}

/// How a table's keys and values enter its hash (their canonical encodings).
pub(crate) trait Hashed {
    fn encode_hashed(&self, w: &mut Writer);
}

/// One entry's contribution to its table's sum.
fn contribution<K: Hashed, V: Hashed>(table: &'static [u8], key: &K, value: &V) -> LtHash {
    let mut w = Writer::new();
    w.bytes(table);
    key.encode_hashed(&mut w);
    value.encode_hashed(&mut w);
    LtHash::of(w.as_bytes())
}

/// A map whose contents are summed into an [`LtHash`], kept up to date at the cost of the
/// entries touched. Reads are a `BTreeMap`'s; every write goes through a method that records
/// the key (there is no `iter_mut`).
#[derive(Clone)]
pub(crate) struct Tracked<K: Ord, V> {
    table: &'static [u8],
    map: BTreeMap<K, V>,
    /// The sum over every entry not in `dirty`.
    sum: LtHash,
    /// Keys whose contribution was subtracted and whose current value (if any) is not yet
    /// added back.
    dirty: BTreeSet<K>,
}

impl<K: Ord + Clone + Hashed, V: Hashed> Tracked<K, V> {
    pub fn new(table: &'static [u8]) -> Tracked<K, V> {
        Tracked {
            table,
            map: BTreeMap::new(),
            sum: LtHash::default(),
            dirty: BTreeSet::new(),
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, K, V> {
        self.map.iter()
    }

    pub fn range<R: std::ops::RangeBounds<K>>(
        &self,
        range: R,
    ) -> std::collections::btree_map::Range<'_, K, V> {
        self.map.range(range)
    }

    pub fn values(&self) -> std::collections::btree_map::Values<'_, K, V> {
        self.map.values()
    }

    /// Before `key` changes: take its current contribution out of the sum (once per key
    /// until the next digest).
    fn touch(&mut self, key: &K) {
        if self.dirty.contains(key) {
            return;
        }
        if let Some(value) = self.map.get(key) {
            self.sum.sub(&contribution(self.table, key, value));
        }
        self.dirty.insert(key.clone());
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        if !self.map.contains_key(key) {
            return None;
        }
        self.touch(key);
        self.map.get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.touch(&key);
        self.map.insert(key, value)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        if !self.map.contains_key(key) {
            return None;
        }
        self.touch(key);
        self.map.remove(key)
    }

    /// The entry for `key`, inserted as `V::default()` when absent.
    pub fn or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        self.touch(&key);
        self.map.entry(key).or_default()
    }

    /// The sum over every entry, bringing the touched ones back in.
    pub fn digest(&mut self) -> &LtHash {
        for key in std::mem::take(&mut self.dirty) {
            if let Some(value) = self.map.get(&key) {
                self.sum.add(&contribution(self.table, &key, value));
            }
        }
        &self.sum
    }

    /// The same sum, computed from every entry (the reference for [`Tracked::digest`]).
    pub fn digest_from_scratch(&self) -> LtHash {
        let mut sum = LtHash::default();
        for (key, value) in &self.map {
            sum.add(&contribution(self.table, key, value));
        }
        sum
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a Tracked<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<K: Ord + Clone + Hashed, V: Hashed> std::ops::Index<&K> for Tracked<K, V> {
    type Output = V;

    fn index(&self, key: &K) -> &V {
        &self.map[key]
    }
}

impl<K: Ord + std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Tracked<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("entries", &self.map.len())
            .field("dirty", &self.dirty.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Hashed for u64 {
        fn encode_hashed(&self, w: &mut Writer) {
            w.u64(*self);
        }
    }

    #[test]
    fn the_tracked_sum_equals_the_sum_from_scratch_after_any_writes() {
        let mut map: Tracked<u64, u64> = Tracked::new(b"test");
        let mut rng = 0x1234_5678_u64;
        for step in 0..2000u64 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (rng >> 33) % 50;
            match rng % 4 {
                0 => {
                    map.insert(key, step);
                }
                1 => {
                    map.remove(&key);
                }
                2 => {
                    if let Some(v) = map.get_mut(&key) {
                        *v += 1;
                    }
                }
                _ => *map.or_default(key) += 7,
            }
            if step % 7 == 0 {
                let fresh = map.digest_from_scratch();
                assert_eq!(*map.digest(), fresh, "step {step}");
            }
        }
        // Order does not matter, content does.
        let mut a: Tracked<u64, u64> = Tracked::new(b"test");
        let mut b: Tracked<u64, u64> = Tracked::new(b"test");
        a.insert(1, 10);
        a.insert(2, 20);
        b.insert(2, 20);
        b.insert(1, 10);
        assert_eq!(a.digest().checksum(), b.digest().checksum());
        b.insert(2, 21);
        assert_ne!(a.digest().checksum(), b.digest().checksum());
        let mut other_table: Tracked<u64, u64> = Tracked::new(b"other");
        other_table.insert(1, 10);
        other_table.insert(2, 20);
        assert_ne!(a.digest().checksum(), other_table.digest().checksum());
    }
}
