//! The background scrub's share of a round: the next stretch of fragments in key order is
//! read and verified like any read, and what fails is remembered until it is deleted.

use super::{PendingRead, ReadTarget, Shard, ShardScrub};
use crate::aligned::AlignedBuf;
use crate::types::FragmentId;
use std::collections::BTreeSet;

/// Where the scrub stands (journalled as `Record::ScrubCursor`) and what it found.
#[derive(Debug, Default)]
pub(super) struct ScrubState {
    pub cursor: Option<FragmentId>,
    pub pass: u64,
    pub corrupt: BTreeSet<FragmentId>,
}

impl Shard {
    /// Plans the reads of the next `max_bytes` of the scrub pass and moves its cursor.
    pub(super) fn plan_scrub(&mut self, max_bytes: u64, reads: &mut Vec<PendingRead>) {
        let start = self.index.after(self.scrub.cursor);
        let mut planned = 0u64;
        let mut last = None;
        let mut reached_end = true;
        for (key, entry) in start {
            if planned > 0 && planned + entry.len_bytes > max_bytes {
                reached_end = false;
                break;
            }
            planned += entry.len_bytes.max(1);
            last = Some(*key);
            if entry.len_bytes > 0 {
                reads.push(PendingRead {
                    key: *key,
                    first_block: 0,
                    buf: AlignedBuf::zeroed(entry.len_bytes as usize),
                    start: 0,
                    len: 0,
                    target: ReadTarget::Scrub,
                    io_error: None,
                });
            }
        }
        if reached_end {
            self.scrub.pass += 1;
            self.scrub.cursor = None;
        } else {
            self.scrub.cursor = last;
        }
    }

    pub(super) fn scrub_report(&self) -> ShardScrub {
        let counters = self.index.counters();
        let stored_bytes = counters.active_logical_bytes + counters.idle_logical_bytes;
        let pass_verified_bytes = match self.scrub.cursor {
            Some(k) => self.index.up_to(k).map(|(_, e)| e.len_bytes).sum(),
            None => 0,
        };
        ShardScrub {
            passes_completed: self.scrub.pass,
            pass_verified_bytes,
            stored_bytes,
            corrupt: self.scrub.corrupt.iter().copied().collect(),
        }
    }
}
