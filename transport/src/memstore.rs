//! A [`FragmentStore`] in memory: the one the protocol's tests and the transport benchmarks run
//! against (they measure the protocol, not a disk). It checks each fragment against its id as a
//! real store does, and can stand in for a node's chain rules: the fragments it admits and the
//! peers with standing.

use crate::FragmentId;
use crate::PeerId;
use crate::server::{FragmentStore, StoreFault};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Debug)]
pub struct MemStore {
    pub fragments: Mutex<HashMap<FragmentId, Vec<u8>>>,
    /// With `record_reads`, (fragment, offset) of every read the server made.
    pub reads: Mutex<Vec<(FragmentId, u64)>>,
    pub record_reads: AtomicBool,
    /// When set, the only fragments admitted (a storage node's rule: what the chain assigned).
    pub admitted: Mutex<Option<HashSet<FragmentId>>>,
    /// When set, the only peers admitted (a node on a chain admits accounts that pay for
    /// space, mine or validate).
    pub standing: Mutex<Option<HashSet<PeerId>>>,
    /// Bytes of every write buffer the server asked for.
    pub allocated_bytes: AtomicU64,
    pub fragment_bytes_max: u64,
}

impl Default for MemStore {
    fn default() -> MemStore {
        MemStore {
            fragments: Mutex::default(),
            reads: Mutex::default(),
            record_reads: AtomicBool::new(false),
            admitted: Mutex::default(),
            standing: Mutex::default(),
            allocated_bytes: AtomicU64::new(0),
            fragment_bytes_max: crate::message::FRAGMENT_BYTES_MAX,
        }
    }
}

/// The data behind a lock whatever a panicking holder left (tests and benchmarks only read it).
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemStore {
    /// Admits only the peers given standing from now on (see [`MemStore::grant_standing`]).
    pub fn only_peers_with_standing() -> MemStore {
        MemStore {
            standing: Mutex::new(Some(HashSet::new())),
            ..MemStore::default()
        }
    }

    pub fn grant_standing(&self, peer: PeerId) {
        locked(&self.standing)
            .get_or_insert_with(HashSet::new)
            .insert(peer);
    }
}

impl FragmentStore for MemStore {
    type WriteBuf = Vec<u8>;
    type ReadBuf = Vec<u8>;
    fn alloc(&self, len_bytes: usize) -> Vec<u8> {
        self.allocated_bytes
            .fetch_add(len_bytes as u64, Ordering::Relaxed);
        vec![0; len_bytes]
    }
    fn fragment_bytes_max(&self) -> u64 {
        self.fragment_bytes_max
    }
    fn admit_peer(&self, peer: &PeerId) -> Result<(), String> {
        match &*locked(&self.standing) {
            Some(peers) if !peers.contains(peer) => Err("no standing".into()),
            _ => Ok(()),
        }
    }
    fn admit(&self, _: &PeerId, id: &FragmentId, _: u64) -> Result<(), String> {
        match &*locked(&self.admitted) {
            Some(ids) if !ids.contains(id) => Err("not assigned to this node".into()),
            _ => Ok(()),
        }
    }
    async fn len_of(&self, id: FragmentId) -> Result<Option<u64>, StoreFault> {
        Ok(locked(&self.fragments).get(&id).map(|f| f.len() as u64))
    }
    async fn put(&self, id: FragmentId, data: Vec<u8>) -> Result<(), StoreFault> {
        if FragmentId::of(&data) != id {
            return Err(StoreFault::Mismatch);
        }
        locked(&self.fragments).insert(id, data);
        Ok(())
    }
    async fn read(
        &self,
        id: FragmentId,
        offset: u64,
        len_bytes: u64,
    ) -> Result<Vec<u8>, StoreFault> {
        if self.record_reads.load(Ordering::Relaxed) {
            locked(&self.reads).push((id, offset));
        }
        let fragments = locked(&self.fragments);
        let f = fragments.get(&id).ok_or(StoreFault::NotFound)?;
        let range = offset as usize..(offset + len_bytes) as usize;
        f.get(range).map(<[u8]>::to_vec).ok_or(StoreFault::NotFound)
    }
}
