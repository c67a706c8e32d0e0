//! Reed-Solomon over a segment in cache-sized stripes, with the fragment hashes taken while
//! each stripe is still in cache.
//!
//! reed-solomon-simd codes "shards"; here a shard is the same 256 KiB window of every fragment,
//! so its working set (k + m stripes) fits in L2, where a whole-fragment call would stream
//! 96 MiB through memory several times.

use super::{CodecError, CodecParams, FragmentId};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use sha2::{Digest, Sha256};

/// Bytes of each fragment coded per call.
pub const STRIPE_BYTES: usize = 256 << 10;

fn rs_error(e: reed_solomon_simd::Error) -> CodecError {
    CodecError::ReedSolomon(e.to_string())
}

/// Reusable coder state for one thread: no allocation per segment.
pub struct SegmentCoder {
    params: CodecParams,
    encoder: ReedSolomonEncoder,
    decoder: ReedSolomonDecoder,
    hashers: Vec<Sha256>,
}

impl std::fmt::Debug for SegmentCoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCoder")
            .field("params", &self.params)
            .finish()
    }
}

impl SegmentCoder {
    pub fn new(params: CodecParams) -> Result<SegmentCoder, CodecError> {
        params.validate()?;
        let (k, m) = (
            usize::from(params.data_shards),
            usize::from(params.parity_shards),
        );
        let stripe = STRIPE_BYTES.min(params.fragment_bytes());
        Ok(SegmentCoder {
            params,
            encoder: ReedSolomonEncoder::new(k, m, stripe).map_err(rs_error)?,
            decoder: ReedSolomonDecoder::new(k, m, stripe).map_err(rs_error)?,
            hashers: Vec::with_capacity(k + m),
        })
    }

    pub fn params(&self) -> CodecParams {
        self.params
    }

    /// Fills `parity` (m fragments back to back) from `segment` (the k data fragments back to
    /// back) and returns the ids of all k + m fragments, data first.
    pub fn encode(
        &mut self,
        segment: &[u8],
        parity: &mut [u8],
    ) -> Result<Vec<FragmentId>, CodecError> {
        let (k, m) = self.km();
        self.hashers.clear();
        self.hashers.resize(k + m, Sha256::new());
        self.code(segment, parity, true)?;
        Ok(self
            .hashers
            .drain(..)
            .map(|h| FragmentId(h.finalize().into()))
            .collect())
    }

    /// [`SegmentCoder::encode`] without the hashes: parity only.
    pub fn encode_parity(&mut self, segment: &[u8], parity: &mut [u8]) -> Result<(), CodecError> {
        self.code(segment, parity, false)
    }

    fn code(&mut self, segment: &[u8], parity: &mut [u8], hash: bool) -> Result<(), CodecError> {
        let (k, m) = self.km();
        let frag = self.params.fragment_bytes();
        assert_eq!(segment.len(), k * frag, "segment buffer size");
        assert_eq!(parity.len(), m * frag, "parity buffer size");
        for offset in (0..frag).step_by(STRIPE_BYTES) {
            let len = STRIPE_BYTES.min(frag - offset);
            self.encoder.reset(k, m, len).map_err(rs_error)?;
            for j in 0..k {
                let stripe = &segment[j * frag + offset..][..len];
                self.encoder.add_original_shard(stripe).map_err(rs_error)?;
                if hash {
                    self.hashers[j].update(stripe);
                }
            }
            let result = self.encoder.encode().map_err(rs_error)?;
            for (p, recovery) in result.recovery_iter().enumerate() {
                let out = &mut parity[p * frag + offset..][..len];
                out.copy_from_slice(recovery);
                if hash {
                    self.hashers[k + p].update(out);
                }
            }
        }
        Ok(())
    }

    /// Rebuilds the data fragments missing from `segment` from the `present` ones (`present[i]`
    /// for fragment i, data first; parity fragment p lives in `parity` at p). At least k must be
    /// present; the caller has verified every present fragment against its id.
    pub fn reconstruct(
        &mut self,
        segment: &mut [u8],
        parity: &[u8],
        present: &[bool],
    ) -> Result<(), CodecError> {
        let (k, m) = self.km();
        let frag = self.params.fragment_bytes();
        assert_eq!(present.len(), k + m, "one flag per fragment");
        assert!(
            present.iter().filter(|p| **p).count() >= k,
            "k fragments present"
        );
        if present[..k].iter().all(|p| *p) {
            return Ok(());
        }
        for offset in (0..frag).step_by(STRIPE_BYTES) {
            let len = STRIPE_BYTES.min(frag - offset);
            self.decoder.reset(k, m, len).map_err(rs_error)?;
            for j in (0..k).filter(|j| present[*j]) {
                self.decoder
                    .add_original_shard(j, &segment[j * frag + offset..][..len])
                    .map_err(rs_error)?;
            }
            for p in (0..m).filter(|p| present[k + p]) {
                self.decoder
                    .add_recovery_shard(p, &parity[p * frag + offset..][..len])
                    .map_err(rs_error)?;
            }
            let result = self.decoder.decode().map_err(rs_error)?;
            for (j, restored) in result.restored_original_iter() {
                segment[j * frag + offset..][..len].copy_from_slice(restored);
            }
        }
        Ok(())
    }

    fn km(&self) -> (usize, usize) {
        (
            usize::from(self.params.data_shards),
            usize::from(self.params.parity_shards),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    /// The reference: reed-solomon-simd's one-call API on whole fragments.
    fn whole(params: CodecParams, segment: &[u8]) -> Vec<Vec<u8>> {
        let k = usize::from(params.data_shards);
        let frag = params.fragment_bytes();
        let originals: Vec<&[u8]> = segment.chunks(frag).collect();
        let parity = reed_solomon_simd::encode(k, usize::from(params.parity_shards), &originals)
            .expect("encode");
        originals.iter().map(|o| o.to_vec()).chain(parity).collect()
    }

    #[test]
    fn striped_encode_matches_the_one_call_encoder_and_rebuilds() {
        // A fragment that is not a multiple of the stripe exercises the short last stripe.
        let params = CodecParams {
            segment_bytes: 4 * (STRIPE_BYTES as u32 + 1024),
            data_shards: 4,
            parity_shards: 8,
        };
        let frag = params.fragment_bytes();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut segment = vec![0u8; params.segment_bytes as usize];
        rng.fill_bytes(&mut segment);
        let mut parity = vec![0u8; 8 * frag];
        let mut coder = SegmentCoder::new(params).unwrap();
        let ids = coder.encode(&segment, &mut parity).unwrap();
        let reference = whole(params, &segment);
        for (i, fragment) in reference.iter().enumerate() {
            let ours = if i < 4 {
                &segment[i * frag..][..frag]
            } else {
                &parity[(i - 4) * frag..][..frag]
            };
            assert_eq!(ours, &fragment[..], "fragment {i}");
            assert_eq!(ids[i], FragmentId::of(fragment), "id {i}");
        }
        // Lose data fragments 0, 2, 3 and five parity fragments: 1 data + 3 parity remain.
        let mut damaged = segment.clone();
        damaged[..frag].fill(0);
        damaged[2 * frag..].fill(0);
        let mut present = vec![true; 12];
        for i in [0, 2, 3, 4, 6, 8, 9, 10] {
            present[i] = false;
        }
        coder.reconstruct(&mut damaged, &parity, &present).unwrap();
        assert!(damaged == segment);
    }
}
