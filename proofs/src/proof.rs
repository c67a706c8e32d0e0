//! ProofGen, Verify and BatchVerify.

use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::backend::Backend;
use crate::challenge::{Challenge, NU_BITS};
use crate::curve::{self, G1, G1_BYTES, G1Affine, G2Affine, SCALAR_BYTES, Scalar};
use crate::keys::{PublicKey, TaggerId};
use crate::tag::Tags;
use crate::{DecodeError, FragmentId, Reader, SECTORS_PER_BLOCK_MAX, block_bytes, block_point};

const PROOF_MAGIC: &[u8; 8] = b"CESSPRF1";

/// Challenges with at least this many blocks have their tags decoded on two threads; below
/// it, starting a thread (tens of microseconds) is a fair share of the decoding it would save
/// (about 90 µs a tag on the 2-core development machine).
const DECODE_SPLIT_BLOCKS_MIN: usize = 16;

/// One aggregated proof: μ_1..μ_s and σ. Its size depends on s only, never on how many
/// fragments were challenged.
#[derive(Clone, PartialEq, Eq)]
pub struct Proof {
    sigma: G1Affine,
    mu: Vec<Scalar>,
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proof")
            .field("sigma", &self.sigma)
            .field("s", &self.mu.len())
            .finish()
    }
}

impl Proof {
    /// Bytes of an encoded proof for `sectors_per_block`.
    pub fn encoded_len(sectors_per_block: u32) -> usize {
        PROOF_MAGIC.len() + 4 + G1_BYTES + SCALAR_BYTES * sectors_per_block as usize
    }

    /// `CESSPRF1 | s: u32 | σ (48) | μ_1..μ_s (32 each)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Proof::encoded_len(self.mu.len() as u32));
        out.extend_from_slice(PROOF_MAGIC);
        out.extend_from_slice(&(self.mu.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.sigma.compress());
        for m in &self.mu {
            out.extend_from_slice(&m.to_le_bytes());
        }
        out
    }

    /// Decode with σ checked (curve, subgroup, not the identity) and every μ canonical.
    pub fn decode(bytes: &[u8]) -> Result<Proof, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(PROOF_MAGIC)?;
        let s = r.u32()?;
        if s == 0 || s > SECTORS_PER_BLOCK_MAX {
            return Err(DecodeError::Invalid(
                "proof: sectors per block out of range",
            ));
        }
        r.expect_remaining(G1_BYTES + SCALAR_BYTES * s as usize)?;
        let sigma = r.g1("proof σ")?;
        let mu = (0..s).map(|_| r.scalar()).collect::<Result<Vec<_>, _>>()?;
        r.finish()?;
        Ok(Proof { sigma, mu })
    }

    pub fn sectors_per_block(&self) -> u32 {
        self.mu.len() as u32
    }
}

/// Where the prover reads challenged blocks and stored tags (an engine store, files, memory).
pub trait ProofSource {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The encoded [`Tags`] blob stored with fragment `id`.
    fn tags(&mut self, id: &FragmentId) -> Result<Vec<u8>, Self::Error>;

    /// Exactly `buf.len()` bytes of fragment `id` from `offset_bytes`.
    fn read(
        &mut self,
        id: &FragmentId,
        offset_bytes: u64,
        buf: &mut [u8],
    ) -> Result<(), Self::Error>;

    /// All of a challenge's reads at once: `bufs[k]` gets `bufs[k].len()` bytes of fragment
    /// `reads[k].0` from offset `reads[k].1`. A source that can overlap reads (an engine store)
    /// overrides this; on failure it says which read failed.
    fn read_many(
        &mut self,
        reads: &[(FragmentId, u64)],
        bufs: &mut [Vec<u8>],
    ) -> Result<(), (usize, Self::Error)> {
        for (k, ((id, offset), buf)) in reads.iter().zip(bufs.iter_mut()).enumerate() {
            self.read(id, *offset, buf).map_err(|e| (k, e))?;
        }
        Ok(())
    }
}

/// Fragments and their tag blobs held in memory (simulations, tests, benchmarks).
#[derive(Debug, Default, Clone)]
pub struct MemorySource {
    pub data: std::collections::HashMap<FragmentId, Vec<u8>>,
    pub tags: std::collections::HashMap<FragmentId, Vec<u8>>,
}

/// A [`MemorySource`] read of a fragment it does not hold, or past its end.
#[derive(Debug, thiserror::Error)]
#[error("fragment {0} is not held in memory (or the read passes its end)")]
pub struct NotHeld(String);

impl ProofSource for MemorySource {
    type Error = NotHeld;

    fn tags(&mut self, id: &FragmentId) -> Result<Vec<u8>, NotHeld> {
        self.tags
            .get(id)
            .cloned()
            .ok_or_else(|| NotHeld(id.to_hex()))
    }

    fn read(&mut self, id: &FragmentId, offset_bytes: u64, buf: &mut [u8]) -> Result<(), NotHeld> {
        let bytes = self
            .data
            .get(id)
            .and_then(|data| {
                let start = usize::try_from(offset_bytes).ok()?;
                data.get(start..start.checked_add(buf.len())?)
            })
            .ok_or_else(|| NotHeld(id.to_hex()))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// Why no proof could be made.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("the challenge names tagger {challenge}, the key is tagger {key}")]
    WrongTagger { challenge: TaggerId, key: TaggerId },
    #[error("reading fragment {fragment}: {source}")]
    Source {
        fragment: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("tags of fragment {fragment}: {source}")]
    Tags {
        fragment: String,
        #[source]
        source: DecodeError,
    },
    #[error("tags of fragment {fragment} do not fit the challenge: {what}")]
    TagsMismatch {
        fragment: String,
        what: &'static str,
    },
}

/// Where proving time went (the benchmark reports the shares). The batched read runs beside
/// the decoding of the challenged tags, so `read_ns` and `tags_ns` overlap.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProveStats {
    pub fragments: usize,
    pub blocks: usize,
    pub bytes_read: u64,
    pub read_ns: u64,
    pub tags_ns: u64,
    pub combine_ns: u64,
    pub msm_ns: u64,
}

/// ProofGen: read only the challenged blocks and their tags; μ_j = Σ ν·m_ij (s field
/// multiply-adds per block) and σ = Σ ν·σ_i (one MSM over all challenged tags).
pub fn prove<S: ProofSource + Send>(
    pk: &PublicKey,
    challenge: &Challenge,
    source: &mut S,
    backend: &dyn Backend,
) -> Result<(Proof, ProveStats), ProveError> {
    if challenge.tagger() != pk.id() || challenge.sectors_per_block() != pk.sectors_per_block() {
        return Err(ProveError::WrongTagger {
            challenge: challenge.tagger(),
            key: pk.id(),
        });
    }
    let s = pk.sectors_per_block();
    let block_len = block_bytes(s);
    let mut stats = ProveStats::default();
    let mut mu = vec![Scalar::ZERO; s as usize];
    // Tag blobs first (small, from metadata), their headers checked before any block is read.
    let mut reads = Vec::with_capacity(challenge.block_total());
    let mut bufs = Vec::with_capacity(challenge.block_total());
    let mut all_tags = Vec::with_capacity(challenge.fragments().len());
    // Each challenged block as (fragment's place in the challenge, block index), and its ν.
    let mut wanted = Vec::with_capacity(challenge.block_total());
    let mut nus = Vec::with_capacity(challenge.block_total());
    for (f, fragment) in challenge.fragments().iter().enumerate() {
        let name = fragment.id.to_hex();
        let started = Instant::now();
        let blob = source.tags(&fragment.id).map_err(|e| ProveError::Source {
            fragment: name.clone(),
            source: Box::new(e),
        })?;
        let tags = Tags::decode(&blob).map_err(|source| ProveError::Tags {
            fragment: name.clone(),
            source,
        })?;
        let mismatch = |what| ProveError::TagsMismatch {
            fragment: name.clone(),
            what,
        };
        if tags.fragment() != &fragment.id {
            return Err(mismatch("they were made for another fragment"));
        }
        if tags.tagger() != pk.id() || tags.sectors_per_block() != s {
            return Err(mismatch("they were made by another tagger"));
        }
        if tags.len_bytes() != fragment.len_bytes {
            return Err(mismatch("they cover another length"));
        }
        stats.tags_ns += started.elapsed().as_nanos() as u64;
        for block in &fragment.blocks {
            let offset = u64::from(block.index) * block_len;
            let len = block_len.min(fragment.len_bytes - offset) as usize;
            reads.push((fragment.id, offset));
            bufs.push(vec![0u8; len]);
            wanted.push((f, block.index));
            nus.push(block.nu);
            stats.bytes_read += len as u64;
        }
        all_tags.push(tags);
        stats.fragments += 1;
        stats.blocks += fragment.blocks.len();
    }
    // The challenged blocks are read on another thread while this one and a helper decode the
    // challenged tags (a square root and a subgroup check each, tens of microseconds): the
    // reads wait on the device, the decoding on the CPU, and the two overlap.
    let decode = |part: &[(usize, u32)]| -> Result<Vec<G1Affine>, ProveError> {
        part.iter()
            .map(|&(f, index)| {
                all_tags[f]
                    .tag(u64::from(index))
                    .map_err(|source| ProveError::Tags {
                        fragment: challenge.fragments()[f].id.to_hex(),
                        source,
                    })
            })
            .collect()
    };
    let (read_result, read_ns, decoded, decode_ns) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let started = Instant::now();
            let result = source.read_many(&reads, &mut bufs);
            (result, started.elapsed().as_nanos() as u64)
        });
        let started = Instant::now();
        let split = if wanted.len() >= DECODE_SPLIT_BLOCKS_MIN {
            wanted.len() / 2
        } else {
            0
        };
        let (first, second) = wanted.split_at(split);
        let helper = (!first.is_empty()).then(|| scope.spawn(|| decode(first)));
        let second = decode(second);
        let first = helper.map_or(Ok(Vec::new()), |h| h.join().expect("tag decoding thread"));
        let decoded = first.and_then(|mut points| {
            points.extend(second?);
            Ok(points)
        });
        let decode_ns = started.elapsed().as_nanos() as u64;
        let (read_result, read_ns) = reader.join().expect("reading thread");
        (read_result, read_ns, decoded, decode_ns)
    });
    // A failed read is reported before a bad tag, as when the reads came first.
    read_result.map_err(|(k, e)| ProveError::Source {
        fragment: reads[k].0.to_hex(),
        source: Box::new(e),
    })?;
    stats.read_ns = read_ns;
    let tag_points = decoded?;
    stats.tags_ns += decode_ns;

    let started = Instant::now();
    let block_bufs: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
    backend.sector_combine(&mut mu, &nus, &block_bufs);
    stats.combine_ns += started.elapsed().as_nanos() as u64;
    let started = Instant::now();
    let sigma = backend.msm(&tag_points, &nus, NU_BITS).to_affine();
    stats.msm_ns = started.elapsed().as_nanos() as u64;
    Ok((Proof { sigma, mu }, stats))
}

/// A verification result. Hostile input never panics; it gets a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid(InvalidReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    #[error("the challenge was derived for another tagger")]
    WrongTagger,
    #[error("the proof has {got} sectors per block, the key {expected}")]
    WrongShape { expected: u32, got: u32 },
    #[error("the pairing equation does not hold")]
    EquationFails,
}

/// A = Σ ν_i·H(id‖i) + Σ_j μ_j·u_j.
fn left_side(pk: &PublicKey, challenge: &Challenge, mu: &[Scalar], backend: &dyn Backend) -> G1 {
    let (hashes, nus) = challenge_points(challenge);
    let hashed = backend.msm(&hashes, &nus, NU_BITS);
    hashed.add(&backend.msm(pk.bases(), mu, 255))
}

fn challenge_points(challenge: &Challenge) -> (Vec<G1Affine>, Vec<Scalar>) {
    let mut points = Vec::with_capacity(challenge.block_total());
    let mut nus = Vec::with_capacity(challenge.block_total());
    for fragment in challenge.fragments() {
        for block in &fragment.blocks {
            points.push(block_point(&fragment.id, block.index));
            nus.push(block.nu);
        }
    }
    (G1::batch_to_affine(&points), nus)
}

fn shape_check(pk: &PublicKey, challenge: &Challenge, proof: &Proof) -> Option<InvalidReason> {
    if challenge.tagger() != pk.id() || challenge.sectors_per_block() != pk.sectors_per_block() {
        return Some(InvalidReason::WrongTagger);
    }
    if proof.sectors_per_block() != pk.sectors_per_block() {
        return Some(InvalidReason::WrongShape {
            expected: pk.sectors_per_block(),
            got: proof.sectors_per_block(),
        });
    }
    None
}

/// Verify: e(σ, g₂) = e(A, pk), as one product of two Miller loops and one final
/// exponentiation. Cost is set by the challenge (hashes and MSM terms) and s, not by how
/// much the miner stores.
pub fn verify(
    pk: &PublicKey,
    challenge: &Challenge,
    proof: &Proof,
    backend: &dyn Backend,
) -> Verdict {
    if let Some(reason) = shape_check(pk, challenge, proof) {
        return Verdict::Invalid(reason);
    }
    let a = left_side(pk, challenge, &proof.mu, backend).to_affine();
    let neg_sigma = proof.sigma.to_projective().neg().to_affine();
    if curve::pairing_product_is_one(&[(neg_sigma, G2Affine::generator()), (a, *pk.pk())]) {
        Verdict::Valid
    } else {
        Verdict::Invalid(InvalidReason::EquationFails)
    }
}

/// One item of a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub key: &'a PublicKey,
    pub challenge: &'a Challenge,
    pub proof: &'a Proof,
}

/// BatchVerify: a random linear combination r_k of the proofs (128-bit r_k drawn from the
/// verifier's `randomness`, which the provers must not know in advance) checked with
/// 1 + (number of distinct taggers) Miller loops and one final exponentiation:
/// e(Σ r_k σ_k, g₂) = Π_T e(Σ_{k∈T} r_k A_k, pk_T). The bases' MSM collapses to one per tagger
/// (Σ r_k μ_k). When the batch fails, each proof is verified alone to name the bad ones.
pub fn batch_verify(
    items: &[BatchItem<'_>],
    randomness: &[u8; 32],
    backend: &dyn Backend,
) -> Vec<Verdict> {
    let mut verdicts: Vec<Option<Verdict>> = items
        .iter()
        .map(|item| shape_check(item.key, item.challenge, item.proof).map(Verdict::Invalid))
        .collect();
    let live: Vec<usize> = (0..items.len())
        .filter(|&k| verdicts[k].is_none())
        .collect();
    if live.is_empty() {
        return verdicts
            .into_iter()
            .map(|v| v.expect("all decided"))
            .collect();
    }
    let weights: Vec<Scalar> = (0..live.len())
        .map(|k| batch_weight(randomness, k))
        .collect();

    let sigmas: Vec<G1Affine> = live.iter().map(|&k| items[k].proof.sigma).collect();
    let sigma_sum = backend.msm(&sigmas, &weights, NU_BITS);

    // Group by tagger: one MSM over all challenged hashes of the group, one over its bases.
    let mut taggers: Vec<TaggerId> = live.iter().map(|&k| items[k].key.id()).collect();
    taggers.sort_unstable();
    taggers.dedup();
    let mut pairs = vec![(sigma_sum.neg().to_affine(), G2Affine::generator())];
    for tagger in taggers {
        let mut hash_points = Vec::new();
        let mut hash_scalars = Vec::new();
        let mut key = None;
        let mut mu_sum: Vec<Scalar> = Vec::new();
        for (slot, &k) in live.iter().enumerate() {
            let item = &items[k];
            if item.key.id() != tagger {
                continue;
            }
            key = Some(item.key);
            let weight = &weights[slot];
            let (points, nus) = challenge_points(item.challenge);
            hash_points.extend(points);
            hash_scalars.extend(nus.iter().map(|nu| nu.mul(weight)));
            if mu_sum.is_empty() {
                mu_sum = vec![Scalar::ZERO; item.proof.mu.len()];
            }
            for (acc, m) in mu_sum.iter_mut().zip(&item.proof.mu) {
                *acc = acc.add(&m.mul(weight));
            }
        }
        let key = key.expect("every tagger in the list has an item");
        let a = backend
            .msm(&hash_points, &hash_scalars, 255)
            .add(&backend.msm(key.bases(), &mu_sum, 255));
        pairs.push((a.to_affine(), *key.pk()));
    }
    if curve::pairing_product_is_one(&pairs) {
        for &k in &live {
            verdicts[k] = Some(Verdict::Valid);
        }
    } else {
        for &k in &live {
            let item = &items[k];
            verdicts[k] = Some(verify(item.key, item.challenge, item.proof, backend));
        }
    }
    verdicts
        .into_iter()
        .map(|v| v.expect("all decided"))
        .collect()
}

fn batch_weight(randomness: &[u8; 32], index: usize) -> Scalar {
    for attempt in 0u32.. {
        let mut h = Sha256::new();
        h.update(b"cess-podr2/v1/batch-weight");
        h.update(randomness);
        h.update((index as u64).to_le_bytes());
        h.update(attempt.to_le_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let weight = Scalar::from_short_le_bytes(&digest[..16]);
        if !weight.is_zero() {
            return weight;
        }
    }
    unreachable!("2^32 zero weights in a row")
}
