//! Unfinished writes: the bytes of fragments a writer has begun and not finished, kept so a
//! cut write resumes where it stopped, within memory budgets. A pure structure: time comes in
//! as an argument, buffers are made by the caller.
//!
//! Rules (each a test below):
//! - Memory is committed only when a write's first byte arrives: a header announcing bytes
//!   commits nothing. A buffer counts at its block-rounded size, against the node's budget and
//!   against its writer's own, so one writer cannot take the whole budget.
//! - A (writer, fragment) write is held by one stream at a time, named by its ticket. A newer
//!   stream for the same pair takes over and starts afresh (the client restarts from offset 0
//!   after a drop); the older stream's buffer, when that stream comes back, is dropped. A
//!   stalled stream can never put back a buffer a newer one has superseded.
//! - When a fragment is stored, every partial of it goes, whoever was writing it; streams that
//!   still hold one drop it when they come back.
//! - A partial left untouched for the TTL goes. Sweeps run at most once a second, so requests
//!   do not each scan every partial.

use crate::FragmentId;
use libp2p_identity::PeerId;
use std::collections::HashMap;

/// The unit buffers are rounded up to (the store's O_DIRECT block).
pub(crate) const BLOCK_BYTES: u64 = 4096;

/// How often expired partials are looked for.
const SWEEP_INTERVAL_MS: i64 = 1000;

/// What unfinished writes may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartialLimits {
    pub bytes_max: u64,
    pub writer_bytes_max: u64,
    pub ttl_ms: u64,
}

/// One stream's unfinished write: taken out of [`Partials`] while the stream receives, then
/// put back, finished or dropped.
#[derive(Debug)]
pub(crate) struct Partial<B> {
    /// `None` until the first byte arrives.
    pub buf: Option<B>,
    /// Bytes received, from offset 0.
    pub filled: usize,
    pub len_bytes: u64,
    ticket: u64,
    /// Bytes counted against the budgets for `buf`.
    counted_bytes: u64,
}

#[derive(Debug)]
enum Slot<B> {
    /// Kept for a resume.
    Resting {
        partial: Partial<B>,
        touched_ms: i64,
    },
    /// A stream holds it.
    Held { ticket: u64 },
}

#[derive(Debug)]
pub(crate) struct Partials<B> {
    fragments: HashMap<FragmentId, HashMap<PeerId, Slot<B>>>,
    /// Bytes counted per writer (entries at zero are removed).
    writers: HashMap<PeerId, u64>,
    held_bytes: u64,
    next_ticket: u64,
    last_sweep_ms: Option<i64>,
    limits: PartialLimits,
}

impl<B> Partials<B> {
    pub fn new(limits: PartialLimits) -> Partials<B> {
        Partials {
            fragments: HashMap::new(),
            writers: HashMap::new(),
            held_bytes: 0,
            next_ticket: 0,
            last_sweep_ms: None,
            limits,
        }
    }

    /// Bytes counted for all buffers, resting or held by streams.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Bytes counted for `writer`'s buffers.
    pub fn writer_bytes(&self, writer: &PeerId) -> u64 {
        self.writers.get(writer).copied().unwrap_or(0)
    }

    /// The write of `len_bytes` of fragment `id` by `writer`, for a stream to fill: the
    /// resting one when its length matches, else a fresh one (nothing committed yet). Any
    /// other stream holding this pair is superseded.
    pub fn take(
        &mut self,
        writer: PeerId,
        id: FragmentId,
        len_bytes: u64,
        now_ms: i64,
    ) -> Partial<B> {
        self.sweep(now_ms);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let slots = self.fragments.entry(id).or_default();
        let previous = slots.insert(writer, Slot::Held { ticket });
        if let Some(Slot::Resting { mut partial, .. }) = previous {
            if partial.len_bytes == len_bytes {
                partial.ticket = ticket;
                return partial;
            }
            // A different length for the same id: at most one is right; start over.
            self.release(&writer, partial.counted_bytes);
        }
        Partial {
            buf: None,
            filled: 0,
            len_bytes,
            ticket,
            counted_bytes: 0,
        }
    }

    /// Counts `partial`'s buffer against the budgets before the caller allocates it. `Ok(true)`
    /// when the caller must now allocate it; `Ok(false)` when it already has one; `Err` says
    /// which budget is spent.
    pub fn reserve(&mut self, writer: &PeerId, partial: &mut Partial<B>) -> Result<bool, String> {
        if partial.buf.is_some() || partial.counted_bytes > 0 {
            return Ok(false);
        }
        let cost = partial.len_bytes.div_ceil(BLOCK_BYTES).max(1) * BLOCK_BYTES;
        if self.held_bytes + cost > self.limits.bytes_max {
            return Err(format!(
                "{} bytes of unfinished writes held on this node",
                self.held_bytes
            ));
        }
        let mine = self.writer_bytes(writer);
        if mine + cost > self.limits.writer_bytes_max {
            return Err(format!(
                "{mine} bytes of this writer's unfinished writes held (at most {})",
                self.limits.writer_bytes_max
            ));
        }
        self.held_bytes += cost;
        *self.writers.entry(*writer).or_default() += cost;
        partial.counted_bytes = cost;
        Ok(true)
    }

    /// A stream is done with `partial` without finishing it: kept for a resume if the stream
    /// still holds the pair and has bytes in it, dropped otherwise.
    pub fn put_back(&mut self, writer: PeerId, id: FragmentId, partial: Partial<B>, now_ms: i64) {
        let slots = self.fragments.get_mut(&id);
        let held = slots
            .as_ref()
            .and_then(|s| s.get(&writer))
            .is_some_and(|slot| matches!(slot, Slot::Held { ticket } if *ticket == partial.ticket));
        if !held {
            // Superseded by a newer stream, or the fragment was stored meanwhile.
            self.release(&writer, partial.counted_bytes);
            return;
        }
        let slots = slots.expect("held slots exist");
        if partial.buf.is_none() || partial.filled == 0 {
            slots.remove(&writer);
            if slots.is_empty() {
                self.fragments.remove(&id);
            }
            self.release(&writer, partial.counted_bytes);
            return;
        }
        slots.insert(
            writer,
            Slot::Resting {
                partial,
                touched_ms: now_ms,
            },
        );
    }

    /// The stream's write ended with its buffer handed to the store (or lost with a failure):
    /// its bytes are no longer counted and its slot goes. When `stored`, every other partial
    /// of the fragment goes too.
    pub fn finish(&mut self, writer: PeerId, id: FragmentId, partial: Partial<B>, stored: bool) {
        self.release(&writer, partial.counted_bytes);
        if stored {
            self.forget_fragment(&id);
            return;
        }
        if let Some(slots) = self.fragments.get_mut(&id) {
            if matches!(slots.get(&writer), Some(Slot::Held { ticket }) if *ticket == partial.ticket)
            {
                slots.remove(&writer);
            }
            if slots.is_empty() {
                self.fragments.remove(&id);
            }
        }
    }

    /// The fragment is in the store: nothing of it needs keeping.
    pub fn forget_fragment(&mut self, id: &FragmentId) {
        let Some(slots) = self.fragments.remove(id) else {
            return;
        };
        for (writer, slot) in slots {
            if let Slot::Resting { partial, .. } = slot {
                self.release(&writer, partial.counted_bytes);
            }
        }
    }

    fn release(&mut self, writer: &PeerId, bytes: u64) {
        if bytes == 0 {
            return;
        }
        assert!(self.held_bytes >= bytes, "partial bytes released twice");
        self.held_bytes -= bytes;
        let mine = self
            .writers
            .get_mut(writer)
            .expect("a writer's bytes are counted");
        assert!(*mine >= bytes, "a writer's partial bytes released twice");
        *mine -= bytes;
        if *mine == 0 {
            self.writers.remove(writer);
        }
    }

    /// Drops resting partials untouched for the TTL; at most once per [`SWEEP_INTERVAL_MS`].
    /// Time is the caller's wall clock: a clock stepped back only delays expiry, and the
    /// budgets bound the memory meanwhile.
    fn sweep(&mut self, now_ms: i64) {
        if self
            .last_sweep_ms
            .is_some_and(|last| (0..SWEEP_INTERVAL_MS).contains(&now_ms.saturating_sub(last)))
        {
            return;
        }
        self.last_sweep_ms = Some(now_ms);
        let ttl_ms = i64::try_from(self.limits.ttl_ms).unwrap_or(i64::MAX);
        let mut released = Vec::new();
        self.fragments.retain(|_, slots| {
            slots.retain(|writer, slot| match slot {
                Slot::Resting {
                    partial,
                    touched_ms,
                } if now_ms.saturating_sub(*touched_ms) > ttl_ms => {
                    released.push((*writer, partial.counted_bytes));
                    false
                }
                _ => true,
            });
            !slots.is_empty()
        });
        for (writer, bytes) in released {
            self.release(&writer, bytes);
        }
    }

    /// Every count agrees with the slots (tests).
    #[cfg(test)]
    fn assert_consistent(&self, held_by_streams: &[(PeerId, u64)]) {
        let mut per_writer: HashMap<PeerId, u64> = HashMap::new();
        for slots in self.fragments.values() {
            for (writer, slot) in slots {
                if let Slot::Resting { partial, .. } = slot {
                    *per_writer.entry(*writer).or_default() += partial.counted_bytes;
                }
            }
        }
        for (writer, bytes) in held_by_streams {
            *per_writer.entry(*writer).or_default() += bytes;
        }
        per_writer.retain(|_, b| *b > 0);
        assert_eq!(per_writer, self.writers);
        assert_eq!(self.held_bytes, self.writers.values().sum::<u64>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn partials() -> Partials<Vec<u8>> {
        Partials::new(PartialLimits {
            bytes_max: 64 * MIB,
            writer_bytes_max: 16 * MIB,
            ttl_ms: 120_000,
        })
    }

    fn peer() -> PeerId {
        PeerId::random()
    }

    /// A stream receiving `bytes` into its partial.
    fn receive(
        p: &mut Partials<Vec<u8>>,
        writer: &PeerId,
        partial: &mut Partial<Vec<u8>>,
        bytes: usize,
    ) -> Result<(), String> {
        if p.reserve(writer, partial)? {
            partial.buf = Some(vec![0; partial.len_bytes as usize]);
        }
        partial.filled += bytes;
        Ok(())
    }

    #[test]
    fn a_header_alone_commits_nothing_and_a_buffer_counts_rounded_up() {
        let mut p = partials();
        let (w, now) = (peer(), 1_000_000);
        let partial = p.take(w, FragmentId([1; 32]), 8 * MIB, now);
        assert_eq!(p.held_bytes(), 0);
        p.put_back(w, FragmentId([1; 32]), partial, now);
        assert_eq!(p.held_bytes(), 0);
        assert!(p.fragments.is_empty(), "an empty partial is not kept");
        let mut partial = p.take(w, FragmentId([2; 32]), 5000, now);
        receive(&mut p, &w, &mut partial, 10).unwrap();
        assert_eq!(p.held_bytes(), 8192);
        p.put_back(w, FragmentId([2; 32]), partial, now);
        p.assert_consistent(&[]);
        assert_eq!(p.writer_bytes(&w), 8192);
    }

    #[test]
    fn a_writer_is_held_to_its_own_budget_and_the_node_to_its_total() {
        let mut p = partials();
        let now = 1_000_000;
        let greedy = peer();
        let mut refused = 0;
        for i in 0..4u8 {
            let mut partial = p.take(greedy, FragmentId([i; 32]), 8 * MIB, now);
            match receive(&mut p, &greedy, &mut partial, 1) {
                Ok(()) => p.put_back(greedy, FragmentId([i; 32]), partial, now),
                Err(e) => {
                    assert!(e.contains("this writer"), "{e}");
                    refused += 1;
                    p.put_back(greedy, FragmentId([i; 32]), partial, now);
                }
            }
        }
        assert_eq!(refused, 2);
        assert_eq!(p.writer_bytes(&greedy), 16 * MIB);
        // Others still have room, up to the node's total.
        let mut accepted = 0;
        for i in 0..8u8 {
            let w = peer();
            let mut partial = p.take(w, FragmentId([100 + i; 32]), 8 * MIB, now);
            if receive(&mut p, &w, &mut partial, 1).is_ok() {
                accepted += 1;
            }
            p.put_back(w, FragmentId([100 + i; 32]), partial, now);
        }
        assert_eq!(
            accepted, 6,
            "64 MiB in all: 16 for the greedy writer, 48 for others"
        );
        p.assert_consistent(&[]);
    }

    #[test]
    fn a_superseded_stream_never_puts_its_buffer_back() {
        let mut p = partials();
        let (w, id, now) = (peer(), [7; 32], 1_000_000);
        let mut stalled = p.take(w, FragmentId(id), MIB, now);
        receive(&mut p, &w, &mut stalled, 1000).unwrap();
        // The network dropped it silently; the client starts over on a new stream.
        let mut fresh = p.take(w, FragmentId(id), MIB, now);
        assert_eq!(fresh.filled, 0);
        assert!(fresh.buf.is_none());
        receive(&mut p, &w, &mut fresh, MIB as usize).unwrap();
        p.assert_consistent(&[(w, 2 * MIB)]);
        p.finish(w, FragmentId(id), fresh, true);
        // The stalled stream times out and comes back.
        p.put_back(w, FragmentId(id), stalled, now + 20_000);
        assert_eq!(p.held_bytes(), 0);
        assert!(p.fragments.is_empty());
        p.assert_consistent(&[]);
    }

    #[test]
    fn a_stored_fragment_drops_every_partial_of_it() {
        let mut p = partials();
        let (a, b, id, now) = (peer(), peer(), [8; 32], 1_000_000);
        let mut pa = p.take(a, FragmentId(id), MIB, now);
        receive(&mut p, &a, &mut pa, 100).unwrap();
        p.put_back(a, FragmentId(id), pa, now);
        let mut pb = p.take(b, FragmentId(id), MIB, now);
        receive(&mut p, &b, &mut pb, MIB as usize).unwrap();
        p.finish(b, FragmentId(id), pb, true);
        assert_eq!(p.held_bytes(), 0);
        assert_eq!(p.writer_bytes(&a), 0);
        p.assert_consistent(&[]);
        // A failed store keeps other writers' partials.
        let mut pa = p.take(a, FragmentId(id), MIB, now);
        receive(&mut p, &a, &mut pa, 100).unwrap();
        p.put_back(a, FragmentId(id), pa, now);
        let mut pb = p.take(b, FragmentId(id), MIB, now);
        receive(&mut p, &b, &mut pb, MIB as usize).unwrap();
        p.finish(b, FragmentId(id), pb, false);
        assert_eq!(p.writer_bytes(&a), MIB);
        assert_eq!(p.writer_bytes(&b), 0);
        p.assert_consistent(&[]);
    }

    #[test]
    fn a_resumed_write_continues_and_a_different_length_starts_over() {
        let mut p = partials();
        let (w, id, now) = (peer(), [9; 32], 1_000_000);
        let mut first = p.take(w, FragmentId(id), MIB, now);
        receive(&mut p, &w, &mut first, 4096).unwrap();
        p.put_back(w, FragmentId(id), first, now);
        let again = p.take(w, FragmentId(id), MIB, now);
        assert_eq!(again.filled, 4096);
        p.put_back(w, FragmentId(id), again, now);
        let other = p.take(w, FragmentId(id), 2 * MIB, now);
        assert_eq!(other.filled, 0);
        p.assert_consistent(&[]);
        assert_eq!(p.held_bytes(), 0);
        p.put_back(w, FragmentId(id), other, now);
    }

    #[test]
    fn untouched_partials_expire_in_sweeps_at_most_once_a_second() {
        let mut p = partials();
        let (w, now) = (peer(), 1_000_000);
        let mut old = p.take(w, FragmentId([1; 32]), MIB, now);
        receive(&mut p, &w, &mut old, 10).unwrap();
        p.put_back(w, FragmentId([1; 32]), old, now);
        let later = now + 121_000;
        let probe = p.take(peer(), FragmentId([2; 32]), MIB, later);
        assert_eq!(p.held_bytes(), 0, "the expired partial went");
        p.put_back(w, FragmentId([2; 32]), probe, later);
        p.assert_consistent(&[]);
        // A sweep just ran: a partial expiring now waits for the next one.
        let mut young = p.take(w, FragmentId([3; 32]), MIB, later);
        receive(&mut p, &w, &mut young, 10).unwrap();
        p.put_back(w, FragmentId([3; 32]), young, later);
        let _ = p.take(peer(), FragmentId([4; 32]), MIB, later + 500);
        assert_eq!(p.held_bytes(), MIB);
    }
}
