//! A shard's index: the fragment entries by key, with the counters and the checkpoint
//! footprint that follow them. Pure. The live path (a round's commit) and recovery's replay
//! apply journal records through the same [`Index::apply`], so the two cannot drift apart.

use crate::record::{Entry, Record};
use crate::types::{Class, FragmentId};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Fragments, blocks and logical bytes per class.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Counters {
    pub active_count: u64,
    pub idle_count: u64,
    pub active_blocks: u64,
    pub idle_blocks: u64,
    pub active_logical_bytes: u64,
    pub idle_logical_bytes: u64,
}

impl Counters {
    fn of_class(&mut self, class: Class) -> (&mut u64, &mut u64, &mut u64) {
        match class {
            Class::Active => (
                &mut self.active_count,
                &mut self.active_blocks,
                &mut self.active_logical_bytes,
            ),
            Class::Idle => (
                &mut self.idle_count,
                &mut self.idle_blocks,
                &mut self.idle_logical_bytes,
            ),
        }
    }

    fn add(&mut self, entry: &Entry) {
        let (count, blocks, logical) = self.of_class(entry.class);
        *count += 1;
        *blocks += entry.blocks();
        *logical += entry.len_bytes;
    }

    fn remove(&mut self, entry: &Entry) {
        let (count, blocks, logical) = self.of_class(entry.class);
        *count -= 1;
        *blocks -= entry.blocks();
        *logical -= entry.len_bytes;
    }
}

/// A put of a key the index already holds. The live path never journals one (a round
/// answers such a put from the index), so meeting one means the index and its caller
/// disagree: a bug live, an inconsistent journal at replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PresentKey(pub FragmentId);

/// The entries of one shard.
#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: BTreeMap<FragmentId, Entry>,
    counters: Counters,
    /// Checkpoint payload bytes the entries need (see `record::footprint_bytes`).
    footprint_bytes: u64,
}

impl Index {
    pub fn get(&self, key: &FragmentId) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn contains(&self, key: &FragmentId) -> bool {
        self.entries.contains_key(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FragmentId, &Entry)> {
        self.entries.iter()
    }

    /// Entries after `after` (from the first with `None`), in key order.
    pub fn after(&self, after: Option<FragmentId>) -> impl Iterator<Item = (&FragmentId, &Entry)> {
        match after {
            Some(k) => self.entries.range((Bound::Excluded(k), Bound::Unbounded)),
            None => self.entries.range(..),
        }
    }

    /// Entries up to and including `key`.
    pub fn up_to(&self, key: FragmentId) -> impl Iterator<Item = (&FragmentId, &Entry)> {
        self.entries.range(..=key)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn footprint_bytes(&self) -> u64 {
        self.footprint_bytes
    }

    /// Adds an entry for a key not yet held.
    pub fn insert(&mut self, key: FragmentId, entry: Entry) -> Result<(), PresentKey> {
        if self.entries.contains_key(&key) {
            return Err(PresentKey(key));
        }
        self.counters.add(&entry);
        self.footprint_bytes += entry.footprint_bytes();
        self.entries.insert(key, entry);
        Ok(())
    }

    fn remove(&mut self, key: &FragmentId) -> Option<(FragmentId, Entry)> {
        let entry = self.entries.remove(key)?;
        self.counters.remove(&entry);
        self.footprint_bytes -= entry.footprint_bytes();
        Some((*key, entry))
    }

    /// Applies a durable record. Returns the entry it removed, whose extent the caller may
    /// free now that the record is durable. A refused record changes nothing.
    pub fn apply(&mut self, record: &Record) -> Result<Option<(FragmentId, Entry)>, PresentKey> {
        match record {
            Record::Put { key, entry } => {
                self.insert(*key, entry.clone())?;
                Ok(None)
            }
            Record::Delete { key } => Ok(self.remove(key)),
            Record::SetMeta { key, meta } => {
                if let Some(entry) = self.entries.get_mut(key) {
                    self.footprint_bytes =
                        self.footprint_bytes - entry.meta.len() as u64 + meta.len() as u64;
                    entry.meta = meta.clone();
                }
                Ok(None)
            }
            Record::Replace {
                idle_key,
                key,
                entry,
            } => {
                if key != idle_key && self.entries.contains_key(key) {
                    return Err(PresentKey(*key));
                }
                let removed = self.remove(idle_key);
                self.insert(*key, entry.clone())
                    .expect("the replacing key was checked absent");
                Ok(removed)
            }
            Record::ScrubCursor { .. } => Ok(None),
        }
    }

    /// Recomputes the counters and the footprint from the entries and asserts they match
    /// the ones kept as records were applied.
    pub fn assert_consistent(&self) {
        let mut counters = Counters::default();
        let mut footprint_bytes = 0;
        for entry in self.entries.values() {
            counters.add(entry);
            footprint_bytes += entry.footprint_bytes();
        }
        assert_eq!(counters, self.counters, "index counters drifted");
        assert_eq!(
            footprint_bytes, self.footprint_bytes,
            "index footprint drifted"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(class: Class, len_bytes: u64, meta: &[u8]) -> Entry {
        Entry {
            class,
            len_bytes,
            extent_block: 0,
            crcs: vec![0; crate::record::blocks_for(len_bytes) as usize].into(),
            meta: meta.into(),
        }
    }

    fn key(n: u8) -> FragmentId {
        FragmentId([n; 32])
    }

    #[test]
    fn every_record_keeps_counters_and_footprint_equal_to_a_recount() {
        let mut index = Index::default();
        let records = [
            Record::Put {
                key: key(1),
                entry: entry(Class::Idle, 10_000, b""),
            },
            Record::Put {
                key: key(2),
                entry: entry(Class::Active, 5_000, b"m"),
            },
            Record::SetMeta {
                key: key(2),
                meta: b"longer meta".as_slice().into(),
            },
            Record::SetMeta {
                key: key(9),
                meta: b"no such key".as_slice().into(),
            },
            Record::Replace {
                idle_key: key(1),
                key: key(3),
                entry: entry(Class::Active, 8_000, b""),
            },
            Record::Delete { key: key(2) },
            Record::Delete { key: key(2) },
            Record::ScrubCursor {
                after: Some(key(3)),
                pass: 1,
            },
        ];
        for record in &records {
            index.apply(record).expect("a consistent sequence");
            index.assert_consistent();
        }
        assert_eq!(index.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [key(3)]);
        assert_eq!(index.counters().active_count, 1);
        assert_eq!(index.counters().idle_count, 0);
    }

    #[test]
    fn a_put_or_replace_onto_a_present_key_is_refused_and_changes_nothing() {
        let mut index = Index::default();
        index
            .insert(key(1), entry(Class::Active, 100, b""))
            .unwrap();
        index.insert(key(2), entry(Class::Idle, 100, b"")).unwrap();
        let put = Record::Put {
            key: key(1),
            entry: entry(Class::Idle, 7, b""),
        };
        assert_eq!(index.apply(&put), Err(PresentKey(key(1))));
        let replace = Record::Replace {
            idle_key: key(2),
            key: key(1),
            entry: entry(Class::Active, 7, b""),
        };
        assert_eq!(index.apply(&replace), Err(PresentKey(key(1))));
        assert!(index.contains(&key(2)), "the idle fragment stays");
        assert_eq!(index.get(&key(1)).unwrap().len_bytes, 100);
        index.assert_consistent();
    }
}
