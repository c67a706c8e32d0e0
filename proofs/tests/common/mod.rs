//! Shared fixtures: a tagger, fragments in memory, and a proof source over them.
#![allow(dead_code)]

use std::collections::HashMap;

use cess_proofs::{
    Challenge, ChallengeInputs, ChallengeParams, CpuBackend, FragmentId, FragmentSet, ProofSource,
    PublicKey, SecretKey, tag_fragment,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

pub const MINER: &[u8] = b"miner-1";

#[derive(Debug, thiserror::Error)]
#[error("fragment not held")]
pub struct Missing;

/// Fragments and their tag blobs in memory, as a miner would hold them.
#[derive(Debug, Default, Clone)]
pub struct MemSource {
    pub data: HashMap<FragmentId, Vec<u8>>,
    pub tags: HashMap<FragmentId, Vec<u8>>,
}

impl ProofSource for MemSource {
    type Error = Missing;

    fn tags(&mut self, id: &FragmentId) -> Result<Vec<u8>, Missing> {
        self.tags.get(id).cloned().ok_or(Missing)
    }

    fn read(&mut self, id: &FragmentId, offset_bytes: u64, buf: &mut [u8]) -> Result<(), Missing> {
        let data = self.data.get(id).ok_or(Missing)?;
        let start = offset_bytes as usize;
        buf.copy_from_slice(data.get(start..start + buf.len()).ok_or(Missing)?);
        Ok(())
    }
}

pub fn key(seed: u8, sectors_per_block: u32) -> SecretKey {
    SecretKey::from_seed(&[seed; 32], sectors_per_block).expect("key")
}

/// `count` random fragments of the given lengths (cycled), tagged by `key`.
pub fn store(key: &SecretKey, count: usize, lens: &[usize], seed: u64) -> (MemSource, FragmentSet) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut source = MemSource::default();
    let mut entries = Vec::new();
    for k in 0..count {
        let mut data = vec![0u8; lens[k % lens.len()]];
        rng.fill_bytes(&mut data);
        let id = FragmentId::of(&data);
        let tags = tag_fragment(key, &CpuBackend, &id, &data).expect("tag");
        entries.push((id, data.len() as u64));
        source.tags.insert(id, tags.encode());
        source.data.insert(id, data);
    }
    (source, FragmentSet::new(entries).expect("set"))
}

pub fn challenge(
    pk: &PublicKey,
    set: &FragmentSet,
    randomness: u8,
    round: u64,
    params: ChallengeParams,
) -> Challenge {
    Challenge::derive(&ChallengeInputs {
        epoch_randomness: [randomness; 32],
        miner: MINER,
        round,
        tagger: pk,
        set,
        params,
    })
    .expect("challenge")
}
