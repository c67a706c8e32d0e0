//! Free-extent allocator for one shard's data region, in 4 KiB blocks.
//!
//! Not durable: it is rebuilt at open from the extents the index holds, so the index is the
//! only truth about what is allocated.

use std::collections::BTreeMap;

#[derive(Debug)]
pub struct Allocator {
    // start block → length in blocks; never adjacent (merged), never overlapping.
    free: BTreeMap<u64, u64>,
    free_blocks: u64,
    total_blocks: u64,
}

impl Allocator {
    /// All free but the `used` extents `(start, blocks)`; `None` if any overlap or overflow.
    pub fn from_used(total_blocks: u64, mut used: Vec<(u64, u64)>) -> Option<Allocator> {
        used.retain(|&(_, len)| len > 0);
        used.sort_unstable();
        let mut alloc = Allocator {
            free: BTreeMap::new(),
            free_blocks: 0,
            total_blocks,
        };
        let mut cursor = 0u64;
        for (start, len) in used {
            if start < cursor || start.checked_add(len)? > total_blocks {
                return None;
            }
            if start > cursor {
                alloc.insert_free(cursor, start - cursor);
            }
            cursor = start + len;
        }
        if cursor < total_blocks {
            alloc.insert_free(cursor, total_blocks - cursor);
        }
        Some(alloc)
    }

    fn insert_free(&mut self, start: u64, len: u64) {
        self.free.insert(start, len);
        self.free_blocks += len;
    }

    pub fn free_blocks(&self) -> u64 {
        self.free_blocks
    }

    pub fn total_blocks(&self) -> u64 {
        self.total_blocks
    }

    pub fn largest_extent_blocks(&self) -> u64 {
        self.free.values().copied().max().unwrap_or(0)
    }

    /// Best-fit allocation of `blocks` contiguous blocks; zero blocks always succeed at 0.
    pub fn alloc(&mut self, blocks: u64) -> Option<u64> {
        if blocks == 0 {
            return Some(0);
        }
        let (&start, &len) = self
            .free
            .iter()
            .filter(|&(_, &len)| len >= blocks)
            .min_by_key(|&(&start, &len)| (len, start))?;
        self.free.remove(&start);
        if len > blocks {
            self.free.insert(start + blocks, len - blocks);
        }
        self.free_blocks -= blocks;
        Some(start)
    }

    /// Returns an extent; it must be wholly allocated (asserted: a double free would let two
    /// fragments share blocks).
    pub fn release(&mut self, start: u64, blocks: u64) {
        if blocks == 0 {
            return;
        }
        assert!(
            start + blocks <= self.total_blocks,
            "release past the region end"
        );
        let mut start = start;
        let mut len = blocks;
        if let Some((&prev_start, &prev_len)) = self.free.range(..=start).next_back() {
            assert!(
                prev_start + prev_len <= start,
                "double free at block {start}"
            );
            if prev_start + prev_len == start {
                self.free.remove(&prev_start);
                start = prev_start;
                len += prev_len;
            }
        }
        if let Some((&next_start, &next_len)) = self.free.range(start + 1..).next() {
            assert!(
                start + len <= next_start,
                "double free at block {next_start}"
            );
            if start + len == next_start {
                self.free.remove(&next_start);
                len += next_len;
            }
        }
        self.free.insert(start, len);
        self.free_blocks += blocks;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_release_merge() {
        let mut a = Allocator::from_used(100, vec![(10, 5), (50, 10)]).unwrap();
        assert_eq!(a.free_blocks(), 85);
        assert_eq!(a.alloc(0), Some(0));
        assert_eq!(a.free_blocks(), 85);
        let x = a.alloc(40).unwrap();
        assert_eq!(x, 60);
        a.release(10, 5);
        a.release(50, 10);
        a.release(60, 40);
        assert_eq!(a.free_blocks(), 100);
        assert_eq!(a.largest_extent_blocks(), 100);
        assert!(Allocator::from_used(100, vec![(10, 5), (12, 5)]).is_none());
        assert!(Allocator::from_used(100, vec![(98, 5)]).is_none());
    }

    #[test]
    fn best_fit_and_exhaustion() {
        let mut a = Allocator::from_used(30, vec![(4, 1), (10, 1)]).unwrap();
        // Free: [0,4) [5,10) [11,30). Best fit for 4 is the 4-block hole at 0.
        assert_eq!(a.alloc(4), Some(0));
        assert_eq!(a.alloc(5), Some(5));
        assert_eq!(a.alloc(20), None);
        assert_eq!(a.alloc(19), Some(11));
        assert_eq!(a.free_blocks(), 0);
    }
}
