//! One round (see the module docs of `shard`): [`Shard::run_round`] dispatches each request
//! of the batch to its handler, which answers at once or adds to the round's plan; then the
//! plan's I/O runs (`execute_data`, `finish_reads`) and its records commit.

use super::index::PresentKey;
use super::{
    BLOCK, Mutation, MutationReply, PendingRead, ROUND_WRITE_BYTES_MAX, Reply, Request, Shard,
    ShardScrub, checkpoint_capacity,
};
use crate::aligned::{AlignedBuf, BLOCK_BYTES};
use crate::device::{IoOp, execute_one};
use crate::error::{IoFailure, PoisonCause, StoreError};
use crate::record::{self, Entry, Record};
use crate::types::{Class, FragmentId, PutOutcome, Stats};
use std::collections::HashSet;

/// What a round has planned so far, and the answers it owes once its I/O is done.
struct Round {
    deferred: Vec<Request>,
    touched: HashSet<FragmentId>,
    writes: Vec<(u64, AlignedBuf)>,
    write_bytes: u64,
    reads: Vec<PendingRead>,
    mutations: Vec<Mutation>,
    /// Checkpoint bytes the index will need once this round's mutations apply.
    pending_footprint: u64,
    /// Journal record bytes of this round's mutations, and the most one round may write.
    record_bytes: u64,
    record_bytes_max: u64,
    scrub_replies: Vec<Reply<ShardScrub>>,
    scrub_advanced: bool,
    checkpoint_replies: Vec<Reply<()>>,
    /// Answered after the commit: a put placed in this round has its blocks allocated and
    /// not yet counted until then.
    stats_replies: Vec<Reply<Stats>>,
    reads_after: Vec<Request>,
}

/// Whether a request goes on in this round.
enum Admission {
    Run(Request),
    Deferred,
    Refused,
}

impl Round {
    /// Defers a mutation of a key this round already changes, or one past the round's
    /// journal or write budget; refuses one no round could take.
    fn admit(&mut self, request: Request) -> Admission {
        let keys = request.mutated_keys();
        if keys.iter().flatten().any(|k| self.touched.contains(k)) {
            self.deferred.push(request);
            return Admission::Deferred;
        }
        let request_record_bytes = request.record_bytes_bound();
        if request_record_bytes > 0
            && self.record_bytes + request_record_bytes > self.record_bytes_max
        {
            if self.record_bytes > 0 {
                self.deferred.push(request);
                return Admission::Deferred;
            }
            // Alone over the bound: no round could take it. Refused, the shard lives on.
            request.refuse(StoreError::RecordTooLarge {
                len_bytes: request_record_bytes,
                max_bytes: self.record_bytes_max,
            });
            return Admission::Refused;
        }
        let write_len = request.write_bytes();
        if write_len > 0
            && self.write_bytes > 0
            && self.write_bytes + write_len > ROUND_WRITE_BYTES_MAX
        {
            self.deferred.push(request);
            return Admission::Deferred;
        }
        self.record_bytes += request_record_bytes;
        Admission::Run(request)
    }

    /// Plans the data write and the record of a placed fragment.
    fn plan_write(&mut self, offset: u64, data: AlignedBuf, mutation: Mutation) {
        self.write_bytes += data.as_blocks().len() as u64;
        if !data.is_empty() {
            self.writes.push((offset, data));
        }
        self.mutations.push(mutation);
    }
}

impl Shard {
    /// Serves one batch of requests (see the module docs). Returns the requests deferred to
    /// the next round because an earlier request in this batch mutates the same key.
    pub(crate) fn run_round(&mut self, batch: Vec<Request>) -> Vec<Request> {
        // A round's records go to the journal as one frame, which must fit in half of it
        // (`append`); the rest of the batch waits for the next round.
        let record_bytes_max = (self.regions.journal_bytes / 2)
            .saturating_sub((record::FRAME_HEADER_BYTES + BLOCK_BYTES) as u64);
        let mut round = Round {
            deferred: Vec::new(),
            touched: HashSet::new(),
            writes: Vec::new(),
            write_bytes: 0,
            reads: Vec::new(),
            mutations: Vec::new(),
            pending_footprint: self.index.footprint_bytes(),
            record_bytes: 0,
            record_bytes_max,
            scrub_replies: Vec::new(),
            scrub_advanced: false,
            checkpoint_replies: Vec::new(),
            stats_replies: Vec::new(),
            reads_after: Vec::new(),
        };
        for request in batch {
            let Admission::Run(request) = round.admit(request) else {
                continue;
            };
            match request {
                Request::Put {
                    key,
                    class,
                    data,
                    crcs,
                    reply,
                } => self.plan_put(&mut round, key, class, data, crcs, reply),
                Request::Replace {
                    idle_key,
                    key,
                    data,
                    crcs,
                    reply,
                } => self.plan_replace(&mut round, idle_key, key, data, crcs, reply),
                Request::Delete { key, reply } => self.plan_delete(&mut round, key, reply),
                Request::SetMeta { key, meta, reply } => {
                    self.plan_set_meta(&mut round, key, meta, reply)
                }
                // Gets and reads normally bypass rounds (see `stream_read`); one that reaches a
                // round starts streaming once the round is done with the device.
                read @ (Request::Get { .. } | Request::Read { .. } | Request::ReadBatch { .. }) => {
                    round.reads_after.push(read)
                }
                Request::Stats { reply } => round.stats_replies.push(reply),
                Request::Scrub { max_bytes, reply } => {
                    // A zero budget only reports where the scrub stands.
                    if max_bytes > 0 {
                        self.plan_scrub(max_bytes, &mut round.reads);
                        round.scrub_advanced = true;
                    }
                    round.scrub_replies.push(reply);
                }
                Request::Checkpoint { reply } => round.checkpoint_replies.push(reply),
                query => self.answer_query(query),
            }
        }
        self.finish_round(round)
    }

    /// The round's I/O, its commit, and the answers that waited for them.
    fn finish_round(&mut self, mut round: Round) -> Vec<Request> {
        self.execute_data(&mut round.writes, &mut round.reads);
        for (_, buf) in round.writes {
            self.pool.give(buf);
        }
        self.finish_reads(round.reads);
        self.commit(round.mutations, round.scrub_advanced);
        for reply in round.stats_replies {
            let _ = reply.send(Ok(self.stats()));
        }
        for reply in round.scrub_replies {
            let _ = reply.send(Ok(self.scrub_report()));
        }
        for reply in round.checkpoint_replies {
            let result = match self.poisoned_error() {
                Some(e) => Err(e),
                None => self.checkpoint().map_err(|cause| {
                    self.poison(cause);
                    StoreError::Poisoned {
                        shard: self.id,
                        cause,
                    }
                }),
            };
            let _ = reply.send(result);
        }
        for read in round.reads_after {
            let not_a_read = self.stream_read(read);
            debug_assert!(not_a_read.is_none());
        }
        round.deferred
    }

    /// Answers a request the index alone answers.
    fn answer_query(&self, request: Request) {
        match request {
            Request::Contains { key, reply } => {
                let _ = reply.send(Ok(self.index.get(&key).map(|e| Self::info(&key, e))));
            }
            Request::GetMeta { key, reply } => {
                let result = self
                    .index
                    .get(&key)
                    .map(|e| e.meta.to_vec())
                    .ok_or(StoreError::NotFound(key));
                let _ = reply.send(result);
            }
            Request::List {
                after,
                limit,
                reply,
            } => {
                let page = self
                    .index
                    .after(after)
                    .take(limit)
                    .map(|(k, e)| Self::info(k, e))
                    .collect();
                let _ = reply.send(Ok(page));
            }
            _ => unreachable!("run_round dispatches every other request itself"),
        }
    }

    fn plan_put(
        &mut self,
        round: &mut Round,
        key: FragmentId,
        class: Class,
        data: AlignedBuf,
        crcs: Box<[u32]>,
        reply: Reply<PutOutcome>,
    ) {
        if let Some(existing) = self.index.get(&key) {
            let _ = reply.send(Ok(PutOutcome::AlreadyPresent(existing.class)));
            return;
        }
        if let Some(e) = self.poisoned_error() {
            let _ = reply.send(Err(e));
            return;
        }
        let entry = match self.place(class, &data, crcs, &mut round.pending_footprint) {
            Ok(entry) => entry,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        round.touched.insert(key);
        let offset = self.data_offset(entry.extent_block);
        let mutation = Mutation {
            record: Record::Put { key, entry },
            reply: MutationReply::Put(reply),
        };
        round.plan_write(offset, data, mutation);
    }

    fn plan_replace(
        &mut self,
        round: &mut Round,
        idle_key: FragmentId,
        key: FragmentId,
        data: AlignedBuf,
        crcs: Box<[u32]>,
        reply: Reply<()>,
    ) {
        match self.index.get(&idle_key) {
            None => {
                let _ = reply.send(Err(StoreError::NotFound(idle_key)));
                return;
            }
            Some(e) if e.class != Class::Idle => {
                let _ = reply.send(Err(StoreError::NotIdle(idle_key)));
                return;
            }
            Some(_) => {}
        }
        if self.index.contains(&key) {
            // The active fragment is already stored; replacing adds nothing.
            let _ = reply.send(Ok(()));
            return;
        }
        if let Some(e) = self.poisoned_error() {
            let _ = reply.send(Err(e));
            return;
        }
        let entry = match self.place(Class::Active, &data, crcs, &mut round.pending_footprint) {
            Ok(entry) => entry,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        round.touched.insert(key);
        round.touched.insert(idle_key);
        let offset = self.data_offset(entry.extent_block);
        let mutation = Mutation {
            record: Record::Replace {
                idle_key,
                key,
                entry,
            },
            reply: MutationReply::Replace(reply),
        };
        round.plan_write(offset, data, mutation);
    }

    fn plan_delete(&mut self, round: &mut Round, key: FragmentId, reply: Reply<bool>) {
        if !self.index.contains(&key) {
            let _ = reply.send(Ok(false));
            return;
        }
        if let Some(e) = self.poisoned_error() {
            let _ = reply.send(Err(e));
            return;
        }
        round.touched.insert(key);
        round.mutations.push(Mutation {
            record: Record::Delete { key },
            reply: MutationReply::Delete(reply),
        });
    }

    fn plan_set_meta(
        &mut self,
        round: &mut Round,
        key: FragmentId,
        meta: Box<[u8]>,
        reply: Reply<()>,
    ) {
        let Some(entry) = self.index.get(&key) else {
            let _ = reply.send(Err(StoreError::NotFound(key)));
            return;
        };
        if let Some(e) = self.poisoned_error() {
            let _ = reply.send(Err(e));
            return;
        }
        let grow = (meta.len() as u64).saturating_sub(entry.meta.len() as u64);
        let capacity = checkpoint_capacity(&self.regions);
        if round.pending_footprint + grow > capacity {
            let _ = reply.send(Err(StoreError::MetadataFull {
                shard: self.id,
                used_bytes: round.pending_footprint,
                capacity_bytes: capacity,
            }));
            return;
        }
        round.pending_footprint += grow;
        round.touched.insert(key);
        round.mutations.push(Mutation {
            record: Record::SetMeta { key, meta },
            reply: MutationReply::SetMeta(reply),
        });
    }

    /// Allocates an extent and builds the index entry for new data, or says why not.
    fn place(
        &mut self,
        class: Class,
        data: &AlignedBuf,
        crcs: Box<[u32]>,
        pending_footprint: &mut u64,
    ) -> Result<Entry, StoreError> {
        let len_bytes = data.len() as u64;
        let blocks = record::blocks_for(len_bytes);
        assert_eq!(crcs.len() as u64, blocks, "one checksum per block");
        let free = self.alloc.free_blocks();
        let reserve = if class == Class::Idle {
            self.reserve_blocks
        } else {
            0
        };
        let largest = self.alloc.largest_extent_blocks();
        let shard = self.id;
        let no_space = || StoreError::NoSpace {
            shard,
            needed_bytes: (blocks + reserve) * BLOCK,
            free_bytes: free * BLOCK,
            largest_extent_bytes: largest * BLOCK,
        };
        if free < blocks + reserve {
            return Err(no_space());
        }
        // A new entry has no metadata yet.
        let footprint = record::footprint_bytes(blocks, 0);
        let capacity = checkpoint_capacity(&self.regions);
        if *pending_footprint + footprint > capacity {
            return Err(StoreError::MetadataFull {
                shard: self.id,
                used_bytes: *pending_footprint,
                capacity_bytes: capacity,
            });
        }
        let Some(extent_block) = self.alloc.alloc(blocks) else {
            return Err(no_space());
        };
        *pending_footprint += footprint;
        Ok(Entry {
            class,
            len_bytes,
            extent_block,
            crcs,
            meta: Box::new([]),
        })
    }

    /// Step 4: group commit of the round's records, then acknowledgement.
    fn commit(&mut self, mutations: Vec<Mutation>, scrub_advanced: bool) {
        if mutations.is_empty() && !scrub_advanced {
            return;
        }
        if self.poisoned.is_some() {
            self.fail_all(mutations);
            return;
        }
        let has_data = mutations.iter().any(|m| {
            matches!(&m.record, Record::Put { entry, .. } | Record::Replace { entry, .. } if entry.len_bytes > 0)
        });
        if has_data && let Err(e) = execute_one(self.dev.as_mut(), IoOp::flush()) {
            self.poison(PoisonCause::DataFlush(IoFailure::from(e)));
            self.fail_all(mutations);
            return;
        }
        let mut records: Vec<Record> = mutations.iter().map(|m| m.record.clone()).collect();
        if scrub_advanced {
            records.push(Record::ScrubCursor {
                after: self.scrub.cursor,
                pass: self.scrub.pass,
            });
        }
        if let Err(cause) = self.append(&records) {
            self.poison(cause);
            self.fail_all(mutations);
            return;
        }
        for m in mutations {
            self.apply(&m.record);
            m.succeed();
        }
        let since_checkpoint = self.journal.head - self.journal.latest_ckpt_pos;
        if since_checkpoint > self.regions.journal_bytes / 2
            && let Err(cause) = self.checkpoint()
        {
            self.poison(cause);
        }
    }

    /// Fails every mutation of a round that could not commit, returning the extents the
    /// round allocated (the shard is poisoned, so nothing reuses them before a reopen).
    fn fail_all(&mut self, mutations: Vec<Mutation>) {
        let error = self
            .poisoned_error()
            .expect("a round fails only on a poisoned shard");
        for m in mutations {
            if let Record::Put { entry, .. } | Record::Replace { entry, .. } = &m.record {
                self.alloc.release(entry.extent_block, entry.blocks());
            }
            m.fail(error.clone());
        }
    }

    /// Applies a durable record to the index and frees the extent of what it removed.
    fn apply(&mut self, record: &Record) {
        let removed = self.index.apply(record).unwrap_or_else(|PresentKey(key)| {
            unreachable!("put of present key {key} reached the index")
        });
        if let Some((key, entry)) = removed {
            self.alloc.release(entry.extent_block, entry.blocks());
            self.scrub.corrupt.remove(&key);
        }
    }
}
