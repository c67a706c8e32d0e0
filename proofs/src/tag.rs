//! TagGen: one 48-byte tag per block, kept with the fragment (the engine's metadata blob).

use crate::backend::Backend;
use crate::curve::{G1, G1_BYTES, G1Affine, SECTOR_BYTES, Scalar};
use crate::keys::{SecretKey, TaggerId};
use crate::{
    BLOCKS_PER_FRAGMENT_MAX, DecodeError, FRAGMENT_BYTES_MAX, FragmentId, Reader, block_bytes,
    block_count, block_point,
};

const TAGS_MAGIC: &[u8; 8] = b"CESSTAG1";
const HEADER_BYTES: usize = 8 + 4 + 8 + 32 + 32;
/// Blocks tagged per batch: bounds memory, keeps the batch operations large enough.
const BATCH_BLOCKS: usize = 64;

/// The tags of one fragment, as stored: a header naming the tagger, the fragment and its
/// geometry, then one compressed G1 point per block. A tag becomes a point only through
/// [`Tags::tag`], which checks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Tags {
    sectors_per_block: u32,
    len_bytes: u64,
    tagger: TaggerId,
    fragment: FragmentId,
    encoded_tags: Vec<u8>,
}

impl std::fmt::Debug for Tags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tags")
            .field("fragment", &self.fragment)
            .field("tagger", &self.tagger)
            .field("blocks", &self.block_count())
            .finish()
    }
}

impl Tags {
    fn made_by(key: &SecretKey, id: &FragmentId, len_bytes: usize, encoded_tags: Vec<u8>) -> Tags {
        Tags {
            sectors_per_block: key.sectors_per_block(),
            len_bytes: len_bytes as u64,
            tagger: key.public().id(),
            fragment: *id,
            encoded_tags,
        }
    }

    pub fn tagger(&self) -> TaggerId {
        self.tagger
    }

    pub fn fragment(&self) -> &FragmentId {
        &self.fragment
    }

    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    pub fn sectors_per_block(&self) -> u32 {
        self.sectors_per_block
    }

    pub fn block_count(&self) -> u64 {
        (self.encoded_tags.len() / G1_BYTES) as u64
    }

    /// The tag of block `index`, checked (curve, subgroup, not the identity).
    pub fn tag(&self, index: u64) -> Result<G1Affine, DecodeError> {
        if index >= self.block_count() {
            return Err(DecodeError::Invalid(
                "tag index beyond the fragment's blocks",
            ));
        }
        let start = index as usize * G1_BYTES;
        let bytes: &[u8; G1_BYTES] = self.encoded_tags[start..start + G1_BYTES]
            .try_into()
            .expect("48 bytes");
        G1Affine::decode(bytes).map_err(|e| DecodeError::Point("tag", e))
    }

    /// `CESSTAG1 | s: u32 | len_bytes: u64 | tagger id | fragment id | tags (48 each)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.encoded_tags.len());
        out.extend_from_slice(TAGS_MAGIC);
        out.extend_from_slice(&self.sectors_per_block.to_le_bytes());
        out.extend_from_slice(&self.len_bytes.to_le_bytes());
        out.extend_from_slice(&self.tagger.0);
        out.extend_from_slice(self.fragment.as_bytes());
        out.extend_from_slice(&self.encoded_tags);
        out
    }

    /// Decode the header and check the blob's size against it. Each tag is checked when used.
    pub fn decode(bytes: &[u8]) -> Result<Tags, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(TAGS_MAGIC)?;
        let sectors_per_block = r.u32()?;
        if sectors_per_block == 0 || sectors_per_block > crate::SECTORS_PER_BLOCK_MAX {
            return Err(DecodeError::Invalid("tags: sectors per block out of range"));
        }
        let len_bytes = r.u64()?;
        check_fragment_len(len_bytes, sectors_per_block)?;
        let tagger = TaggerId(*r.array()?);
        let fragment = *r.array()?;
        let blocks = block_count(len_bytes, sectors_per_block) as usize;
        r.expect_remaining(blocks * G1_BYTES)?;
        let encoded_tags = r.take(blocks * G1_BYTES)?.to_vec();
        Ok(Tags {
            sectors_per_block,
            len_bytes,
            tagger,
            fragment: FragmentId(fragment),
            encoded_tags,
        })
    }

    /// Bytes of the encoded blob for a fragment of `len_bytes` (to size engine metadata).
    pub fn encoded_len(len_bytes: u64, sectors_per_block: u32) -> u64 {
        HEADER_BYTES as u64 + block_count(len_bytes, sectors_per_block) * G1_BYTES as u64
    }
}

pub(crate) fn check_fragment_len(
    len_bytes: u64,
    sectors_per_block: u32,
) -> Result<(), DecodeError> {
    if len_bytes == 0 || len_bytes > FRAGMENT_BYTES_MAX {
        return Err(DecodeError::Invalid(
            "fragment length outside 1..=FRAGMENT_BYTES_MAX",
        ));
    }
    if block_count(len_bytes, sectors_per_block) > BLOCKS_PER_FRAGMENT_MAX {
        return Err(DecodeError::Invalid(
            "fragment has more than BLOCKS_PER_FRAGMENT_MAX blocks",
        ));
    }
    Ok(())
}

/// Tag every block of a fragment: t_i = Σ_j α_j·m_ij (field arithmetic), then
/// σ_i = x·(H(id‖i) + t_i·g₁).
pub fn tag_fragment(
    key: &SecretKey,
    backend: &dyn Backend,
    id: &FragmentId,
    data: &[u8],
) -> Result<Tags, DecodeError> {
    let s = key.sectors_per_block();
    check_fragment_len(data.len() as u64, s)?;
    let block_len = block_bytes(s) as usize;
    let blocks: Vec<&[u8]> = data.chunks(block_len).collect();
    let mut encoded_tags = Vec::with_capacity(blocks.len() * G1_BYTES);
    for (batch_index, batch) in blocks.chunks(BATCH_BLOCKS).enumerate() {
        let first = batch_index * BATCH_BLOCKS;
        let batch_data =
            &data[first * block_len..((first + batch.len()) * block_len).min(data.len())];
        let sums: Vec<Scalar> = backend.sector_dot_rows(key.alphas_premul(), batch_data);
        let combined = backend.generator_mul(&sums);
        let points: Vec<G1> = combined
            .iter()
            .enumerate()
            .map(|(k, tg)| block_point(id, (first + k) as u32).add(tg))
            .collect();
        let xs = vec![*key.x(); batch.len()];
        let tags = backend.batch_mul(&points, &xs);
        for tag in G1::batch_to_affine(&tags) {
            encoded_tags.extend_from_slice(&tag.compress());
        }
    }
    Ok(Tags::made_by(key, id, data.len(), encoded_tags))
}

/// The textbook way, for tests and the benchmark baseline: σ_i = (H(id‖i)·Π_j u_j^{m_ij})^x
/// with an s-term MSM over the public bases per block. It needs no α_j, which is exactly
/// what makes it slow.
pub fn tag_fragment_naive(
    key: &SecretKey,
    backend: &dyn Backend,
    id: &FragmentId,
    data: &[u8],
) -> Result<Tags, DecodeError> {
    let s = key.sectors_per_block();
    check_fragment_len(data.len() as u64, s)?;
    let bases = key.public().bases();
    let mut encoded_tags = Vec::new();
    for (i, block) in data.chunks(block_bytes(s) as usize).enumerate() {
        let sectors: Vec<Scalar> = block
            .chunks(SECTOR_BYTES)
            .map(Scalar::from_short_le_bytes)
            .collect();
        let product = backend.msm(&bases[..sectors.len()], &sectors, 248);
        let tag = block_point(id, i as u32).add(&product).mul(key.x());
        encoded_tags.extend_from_slice(&tag.to_affine().compress());
    }
    Ok(Tags::made_by(key, id, data.len(), encoded_tags))
}
