//! Checking a tagger's tags before keeping them. A miner that keeps wrong tags fails every
//! audit of that fragment, and a tagger could hand out wrong tags on purpose; so the miner
//! checks them as it would be audited: one proof over every block of the fragment with
//! coefficients from its own randomness (unknown to the tagger), verified against the tagger's
//! public key. That is an MSM and two pairings for the whole fragment, not two pairings per
//! block, and a blob with any wrong tag fails except with probability about 2^-128.

use crate::backend::Backend;
use crate::challenge::{
    BLOCKS_PER_CHALLENGE_MAX, Challenge, ChallengeInputs, ChallengeParams, FragmentSet,
};
use crate::keys::PublicKey;
use crate::proof::{ProofSource, Verdict, prove, verify};
use crate::tag::Tags;
use crate::{DecodeError, FragmentId, block_count};

/// Why tags were refused.
#[derive(Debug, thiserror::Error)]
pub enum TagCheckError {
    #[error("the tags do not decode: {0}")]
    Decode(DecodeError),
    #[error("the tags are not for this fragment: {0}")]
    NotFor(&'static str),
    #[error("the tags fail the check: {0}")]
    Invalid(String),
}

/// One fragment and its tags, borrowed: what the check proves from.
struct OneFragment<'a> {
    id: FragmentId,
    data: &'a [u8],
    tags: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
#[error("the check asked for bytes outside the fragment")]
struct OutOfRange;

impl ProofSource for OneFragment<'_> {
    type Error = OutOfRange;

    fn tags(&mut self, id: &FragmentId) -> Result<Vec<u8>, OutOfRange> {
        if *id != self.id {
            return Err(OutOfRange);
        }
        Ok(self.tags.to_vec())
    }

    fn read(
        &mut self,
        id: &FragmentId,
        offset_bytes: u64,
        buf: &mut [u8],
    ) -> Result<(), OutOfRange> {
        if *id != self.id {
            return Err(OutOfRange);
        }
        let start = usize::try_from(offset_bytes).map_err(|_| OutOfRange)?;
        let bytes = self
            .data
            .get(start..start.checked_add(buf.len()).ok_or(OutOfRange)?)
            .ok_or(OutOfRange)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// Checks `tags_blob` as tagger `pk`'s tags of fragment `id` holding `data`, with
/// coefficients drawn from `seed` (fresh randomness of the checker's). Every block is covered
/// up to [`BLOCKS_PER_CHALLENGE_MAX`]; a larger fragment has that many drawn at random.
pub fn check_tags(
    pk: &PublicKey,
    id: &FragmentId,
    data: &[u8],
    tags_blob: &[u8],
    seed: [u8; 32],
    backend: &dyn Backend,
) -> Result<Tags, TagCheckError> {
    let tags = Tags::decode(tags_blob).map_err(TagCheckError::Decode)?;
    if tags.tagger() != pk.id() {
        return Err(TagCheckError::NotFor("another tagger made them"));
    }
    if tags.fragment() != id {
        return Err(TagCheckError::NotFor("they name another fragment"));
    }
    if tags.len_bytes() != data.len() as u64 {
        return Err(TagCheckError::NotFor("they describe another length"));
    }
    if tags.sectors_per_block() != pk.sectors_per_block() {
        return Err(TagCheckError::NotFor(
            "their block size is not the tagger key's",
        ));
    }
    let blocks = block_count(data.len() as u64, pk.sectors_per_block());
    let blocks_max = blocks.min(u64::from(BLOCKS_PER_CHALLENGE_MAX)) as u32;
    let set = FragmentSet::new(vec![(*id, data.len() as u64)]).map_err(TagCheckError::Decode)?;
    let challenge = Challenge::derive(&ChallengeInputs {
        epoch_randomness: seed,
        miner: b"cess tag check",
        round: 0,
        tagger: pk,
        set: &set,
        params: ChallengeParams {
            fragments_max: 1,
            blocks_max,
        },
    })
    .map_err(TagCheckError::Decode)?;
    let mut source = OneFragment {
        id: *id,
        data,
        tags: tags_blob,
    };
    let (proof, _) = prove(pk, &challenge, &mut source, backend)
        .map_err(|e| TagCheckError::Invalid(e.to_string()))?;
    match verify(pk, &challenge, &proof, backend) {
        Verdict::Valid => Ok(tags),
        Verdict::Invalid(reason) => Err(TagCheckError::Invalid(reason.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::{CpuBackend, tag_fragment};

    fn fragment(len: usize, seed: u8) -> (FragmentId, Vec<u8>) {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        let id = FragmentId::of(&data);
        (id, data)
    }

    #[test]
    fn right_tags_pass_and_one_wrong_tag_fails() {
        let key = SecretKey::from_seed(&[1; 32], 16).unwrap();
        let (id, data) = fragment(16 * 31 * 9 + 5, 1);
        let blob = tag_fragment(&key, &CpuBackend, &id, &data)
            .unwrap()
            .encode();
        let tags = check_tags(key.public(), &id, &data, &blob, [3; 32], &CpuBackend).unwrap();
        assert_eq!(tags.block_count(), 10);
        // Swap two blocks' tags: each is a valid point, made by the right key, for the wrong
        // block.
        let header = blob.len() - 10 * 48;
        let mut swapped = blob.clone();
        swapped[header..header + 48].copy_from_slice(&blob[header + 48..header + 96]);
        swapped[header + 48..header + 96].copy_from_slice(&blob[header..header + 48]);
        let e = check_tags(key.public(), &id, &data, &swapped, [3; 32], &CpuBackend).unwrap_err();
        assert!(matches!(e, TagCheckError::Invalid(_)), "{e}");
        // Another tagger's tags, another fragment's, another length.
        let other = SecretKey::from_seed(&[2; 32], 16).unwrap();
        let theirs = tag_fragment(&other, &CpuBackend, &id, &data)
            .unwrap()
            .encode();
        assert!(matches!(
            check_tags(key.public(), &id, &data, &theirs, [3; 32], &CpuBackend),
            Err(TagCheckError::NotFor(_))
        ));
        let (id2, data2) = fragment(data.len(), 2);
        assert!(matches!(
            check_tags(key.public(), &id2, &data2, &blob, [3; 32], &CpuBackend),
            Err(TagCheckError::NotFor(_))
        ));
        // Tags of other bytes under the same id fail the equation.
        let forged = tag_fragment(&key, &CpuBackend, &id, &data2)
            .unwrap()
            .encode();
        assert!(matches!(
            check_tags(key.public(), &id, &data, &forged, [3; 32], &CpuBackend),
            Err(TagCheckError::Invalid(_))
        ));
    }
}
