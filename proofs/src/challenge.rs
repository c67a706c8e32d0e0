//! Chal: which fragments, which blocks, which coefficients, all derived from a transcript that
//! binds every public input, so a proof answers exactly one (epoch, miner, round, tagger,
//! fragment set) and nothing else.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::curve::{SCALAR_BYTES, Scalar};
use crate::keys::{PublicKey, TaggerId};
use crate::{DecodeError, FRAGMENT_BYTES_MAX, FragmentId, Reader, block_count};

const CHALLENGE_MAGIC: &[u8; 8] = b"CESSCHL1";
/// Longest miner identity bound into a transcript (a PeerId is 38 bytes).
pub const MINER_ID_BYTES_MAX: usize = 64;
/// Upper bounds on the challenge parameters, so a challenge (and its verification) stays
/// small whatever a configuration says.
pub const FRAGMENTS_PER_CHALLENGE_MAX: u32 = 1024;
pub const BLOCKS_PER_CHALLENGE_MAX: u32 = 8192;

/// How much a challenge samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeParams {
    /// At most this many fragments are challenged per round (sampled without replacement).
    pub fragments_max: u32,
    /// About this many blocks in all, spread evenly over the sampled fragments (fewer when
    /// the sampled fragments have fewer blocks).
    pub blocks_max: u32,
}

impl Default for ChallengeParams {
    /// 460 blocks: with 1 % of blocks corrupt, a challenge hits one with probability
    /// 1 − 0.99^460 ≈ 0.990 (Ateniese et al., PDP). 46 fragments of 10 blocks each.
    fn default() -> ChallengeParams {
        ChallengeParams {
            fragments_max: 46,
            blocks_max: 460,
        }
    }
}

impl ChallengeParams {
    fn check(&self) -> Result<(), DecodeError> {
        if self.fragments_max == 0 || self.fragments_max > FRAGMENTS_PER_CHALLENGE_MAX {
            return Err(DecodeError::Invalid("fragments_max outside 1..=1024"));
        }
        if self.blocks_max < self.fragments_max || self.blocks_max > BLOCKS_PER_CHALLENGE_MAX {
            return Err(DecodeError::Invalid(
                "blocks_max outside fragments_max..=8192",
            ));
        }
        Ok(())
    }
}

/// The fragments a miner holds for one tagger, sorted by id, with a commitment computed once
/// (the ledger keeps it; deriving a challenge never walks the whole set).
#[derive(Clone, PartialEq, Eq)]
pub struct FragmentSet {
    entries: Vec<(FragmentId, u64)>,
    commitment: [u8; 32],
}

impl std::fmt::Debug for FragmentSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FragmentSet")
            .field("fragments", &self.entries.len())
            .field("commitment", &crate::hex(&self.commitment[..8]))
            .finish()
    }
}

impl FragmentSet {
    /// (id, length in bytes) for each fragment; refuses duplicates and impossible lengths.
    pub fn new(mut entries: Vec<(FragmentId, u64)>) -> Result<FragmentSet, DecodeError> {
        entries.sort_unstable_by_key(|entry| entry.0);
        if entries.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(DecodeError::Invalid("fragment set lists a fragment twice"));
        }
        if entries
            .iter()
            .any(|(_, len)| *len == 0 || *len > FRAGMENT_BYTES_MAX)
        {
            return Err(DecodeError::Invalid(
                "fragment length outside 1..=FRAGMENT_BYTES_MAX",
            ));
        }
        let mut h = Sha256::new();
        h.update(b"cess-podr2/v1/fragment-set");
        h.update((entries.len() as u64).to_le_bytes());
        for (id, len) in &entries {
            h.update(id);
            h.update(len.to_le_bytes());
        }
        Ok(FragmentSet {
            entries,
            commitment: h.finalize().into(),
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn commitment(&self) -> [u8; 32] {
        self.commitment
    }

    pub fn entries(&self) -> &[(FragmentId, u64)] {
        &self.entries
    }
}

/// Every public input a challenge binds.
#[derive(Debug, Clone, Copy)]
pub struct ChallengeInputs<'a> {
    /// The epoch's randomness from the ledger (VRF output).
    pub epoch_randomness: [u8; 32],
    /// The challenged miner's identity (its PeerId bytes).
    pub miner: &'a [u8],
    pub round: u64,
    pub tagger: &'a PublicKey,
    pub set: &'a FragmentSet,
    pub params: ChallengeParams,
}

/// One challenged block and its coefficient ν (128 bits, nonzero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengedBlock {
    pub index: u32,
    pub nu: Scalar,
}

/// The challenged blocks of one fragment, in increasing block order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengedFragment {
    pub id: FragmentId,
    pub len_bytes: u64,
    pub blocks: Vec<ChallengedBlock>,
}

/// A derived challenge: what the miner must answer and the verifier checks against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    seed: [u8; 32],
    tagger: TaggerId,
    sectors_per_block: u32,
    fragments: Vec<ChallengedFragment>,
}

/// Bits of every coefficient ν: 128 bits keep forging as hard as the curve while halving the
/// MSM over the tags.
pub const NU_BITS: usize = 128;

impl Challenge {
    /// Derive the challenge. Cost: O(sample), independent of the set's size.
    pub fn derive(inputs: &ChallengeInputs<'_>) -> Result<Challenge, DecodeError> {
        inputs.params.check()?;
        if inputs.miner.is_empty() || inputs.miner.len() > MINER_ID_BYTES_MAX {
            return Err(DecodeError::Invalid("miner id must be 1..=64 bytes"));
        }
        if inputs.set.is_empty() {
            return Err(DecodeError::Invalid(
                "cannot challenge an empty fragment set",
            ));
        }
        let s = inputs.tagger.sectors_per_block();
        let mut h = Sha256::new();
        h.update(b"cess-podr2/v1/challenge");
        h.update(inputs.epoch_randomness);
        h.update((inputs.miner.len() as u32).to_le_bytes());
        h.update(inputs.miner);
        h.update(inputs.round.to_le_bytes());
        h.update(inputs.tagger.id().0);
        h.update(s.to_le_bytes());
        h.update(inputs.set.commitment);
        h.update((inputs.set.len() as u64).to_le_bytes());
        h.update(inputs.params.fragments_max.to_le_bytes());
        h.update(inputs.params.blocks_max.to_le_bytes());
        let seed: [u8; 32] = h.finalize().into();

        let mut xof = Xof::new(&seed);
        let n = inputs.set.len() as u64;
        let sampled = u64::from(inputs.params.fragments_max).min(n);
        let per_fragment = u64::from(inputs.params.blocks_max).div_ceil(sampled);
        let mut fragments = Vec::with_capacity(sampled as usize);
        for fragment_index in xof.sample_distinct(n, sampled) {
            let (id, len_bytes) = inputs.set.entries[fragment_index as usize];
            let blocks = block_count(len_bytes, s);
            let take = per_fragment.min(blocks);
            let indices = xof.sample_distinct(blocks, take);
            fragments.push(ChallengedFragment {
                id,
                len_bytes,
                blocks: indices
                    .into_iter()
                    .map(|index| ChallengedBlock {
                        index: index as u32,
                        nu: Scalar::ZERO,
                    })
                    .collect(),
            });
        }
        for fragment in &mut fragments {
            for block in &mut fragment.blocks {
                block.nu = xof.nu();
            }
        }
        Ok(Challenge {
            seed,
            tagger: inputs.tagger.id(),
            sectors_per_block: s,
            fragments,
        })
    }

    pub fn seed(&self) -> [u8; 32] {
        self.seed
    }

    pub fn tagger(&self) -> TaggerId {
        self.tagger
    }

    pub fn sectors_per_block(&self) -> u32 {
        self.sectors_per_block
    }

    pub fn fragments(&self) -> &[ChallengedFragment] {
        &self.fragments
    }

    pub fn block_total(&self) -> usize {
        self.fragments.iter().map(|f| f.blocks.len()).sum()
    }

    /// `CESSCHL1 | seed | tagger | s: u32 | n: u32 | n × (id | len: u64 | k: u32 | k × (index: u32 | ν))`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(CHALLENGE_MAGIC);
        out.extend_from_slice(&self.seed);
        out.extend_from_slice(&self.tagger.0);
        out.extend_from_slice(&self.sectors_per_block.to_le_bytes());
        out.extend_from_slice(&(self.fragments.len() as u32).to_le_bytes());
        for f in &self.fragments {
            out.extend_from_slice(f.id.as_bytes());
            out.extend_from_slice(&f.len_bytes.to_le_bytes());
            out.extend_from_slice(&(f.blocks.len() as u32).to_le_bytes());
            for b in &f.blocks {
                out.extend_from_slice(&b.index.to_le_bytes());
                out.extend_from_slice(&b.nu.to_le_bytes());
            }
        }
        out
    }

    /// Decode with every bound checked. A decoded challenge is well formed, not necessarily
    /// the one the public inputs derive: a verifier derives its own.
    pub fn decode(bytes: &[u8]) -> Result<Challenge, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(CHALLENGE_MAGIC)?;
        let seed = *r.array()?;
        let tagger = TaggerId(*r.array()?);
        let s = r.u32()?;
        if s == 0 || s > crate::SECTORS_PER_BLOCK_MAX {
            return Err(DecodeError::Invalid(
                "challenge: sectors per block out of range",
            ));
        }
        let n = r.u32()?;
        if n == 0 || n > FRAGMENTS_PER_CHALLENGE_MAX {
            return Err(DecodeError::Invalid(
                "challenge: fragment count out of range",
            ));
        }
        let mut fragments = Vec::with_capacity(n as usize);
        let mut total_blocks = 0usize;
        for _ in 0..n {
            let id = *r.array()?;
            let len_bytes = r.u64()?;
            if len_bytes == 0 || len_bytes > FRAGMENT_BYTES_MAX {
                return Err(DecodeError::Invalid(
                    "challenge: fragment length out of range",
                ));
            }
            let k = r.u32()? as usize;
            total_blocks += k;
            if k == 0 || total_blocks > BLOCKS_PER_CHALLENGE_MAX as usize {
                return Err(DecodeError::Invalid("challenge: block count out of range"));
            }
            let limit = block_count(len_bytes, s);
            let mut blocks = Vec::with_capacity(k);
            for _ in 0..k {
                let index = r.u32()?;
                let nu_bytes = r.array::<SCALAR_BYTES>()?;
                // ν is used as a NU_BITS-bit integer; wider would be silently truncated.
                if nu_bytes[NU_BITS / 8..].iter().any(|&b| b != 0) {
                    return Err(DecodeError::Invalid(
                        "challenge: coefficient wider than 128 bits",
                    ));
                }
                let nu = Scalar::from_le_bytes(nu_bytes)
                    .map_err(|e| DecodeError::Point("challenge ν", e))?;
                if u64::from(index) >= limit {
                    return Err(DecodeError::Invalid(
                        "challenge: block index beyond fragment",
                    ));
                }
                if blocks
                    .last()
                    .is_some_and(|b: &ChallengedBlock| b.index >= index)
                {
                    return Err(DecodeError::Invalid(
                        "challenge: block indices not increasing",
                    ));
                }
                if nu.is_zero() {
                    return Err(DecodeError::Invalid("challenge: zero coefficient"));
                }
                blocks.push(ChallengedBlock { index, nu });
            }
            fragments.push(ChallengedFragment {
                id: FragmentId(id),
                len_bytes,
                blocks,
            });
        }
        r.finish()?;
        Ok(Challenge {
            seed,
            tagger,
            sectors_per_block: s,
            fragments,
        })
    }
}

/// SHA-256 in counter mode over the transcript seed.
struct Xof {
    seed: [u8; 32],
    counter: u64,
    buf: [u8; 32],
    pos: usize,
}

impl Xof {
    fn new(seed: &[u8; 32]) -> Xof {
        Xof {
            seed: *seed,
            counter: 0,
            buf: [0; 32],
            pos: 32,
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        for byte in out {
            if self.pos == self.buf.len() {
                let mut h = Sha256::new();
                h.update(b"cess-podr2/v1/xof");
                h.update(self.seed);
                h.update(self.counter.to_le_bytes());
                self.buf = h.finalize().into();
                self.counter += 1;
                self.pos = 0;
            }
            *byte = self.buf[self.pos];
            self.pos += 1;
        }
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// Uniform in 0..bound, by rejection (no modulo bias).
    fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let v = self.u64();
            if v < zone {
                return v % bound;
            }
        }
    }

    /// `k` distinct values of 0..n, increasing (Floyd's algorithm: O(k log k), no O(n) work).
    fn sample_distinct(&mut self, n: u64, k: u64) -> Vec<u64> {
        assert!(k <= n);
        let mut chosen = BTreeSet::new();
        for j in (n - k)..n {
            let t = self.below(j + 1);
            if !chosen.insert(t) {
                chosen.insert(j);
            }
        }
        chosen.into_iter().collect()
    }

    /// A nonzero 128-bit coefficient.
    fn nu(&mut self) -> Scalar {
        loop {
            let mut b = [0u8; 16];
            self.fill(&mut b);
            let nu = Scalar::from_short_le_bytes(&b);
            if !nu.is_zero() {
                return nu;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floyd_sampling_is_distinct_sorted_and_covers_everything() {
        let mut xof = Xof::new(&[3; 32]);
        let all = xof.sample_distinct(10, 10);
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        let mut counts = [0u32; 20];
        for _ in 0..2000 {
            let pick = xof.sample_distinct(20, 5);
            assert_eq!(pick.len(), 5);
            assert!(pick.windows(2).all(|w| w[0] < w[1]));
            for p in pick {
                counts[p as usize] += 1;
            }
        }
        // Each value is expected 500 times; a biased sampler would stray far.
        assert!(
            counts.iter().all(|&c| (400..600).contains(&c)),
            "{counts:?}"
        );
    }
}
