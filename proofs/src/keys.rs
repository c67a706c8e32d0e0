//! Tagger keys: secret x and α_1..α_s; public pk = g₂^x and bases u_j = g₁^{α_j}.

use sha2::{Digest, Sha256, Sha512};

use crate::curve::{
    G1, G1_BYTES, G1Affine, G2_BYTES, G2Affine, PremulScalar, SCALAR_BYTES, Scalar,
};
use crate::{DecodeError, Reader, SECTORS_PER_BLOCK_MAX};

const SECRET_MAGIC: &[u8; 8] = b"CESSPSK1";
const PUBLIC_MAGIC: &[u8; 8] = b"CESSPPK1";

/// Names a tagger: SHA-256 of its encoded public key (so it binds pk, s and every base).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaggerId(pub [u8; 32]);

impl std::fmt::Debug for TaggerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaggerId({})", crate::hex(&self.0[..8]))
    }
}

impl std::fmt::Display for TaggerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::hex(&self.0))
    }
}

/// The tagger's secret. Whoever holds it can forge proofs: it never reaches a miner.
pub struct SecretKey {
    x: Scalar,
    alphas: Vec<Scalar>,
    /// α_j prepared for one-multiplication-per-sector tagging.
    alphas_premul: Vec<PremulScalar>,
    public: PublicKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("tagger", &self.public.id)
            .field("sectors_per_block", &self.alphas.len())
            .finish_non_exhaustive()
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.x = Scalar::ZERO;
        self.alphas.iter_mut().for_each(|a| *a = Scalar::ZERO);
        self.alphas_premul
            .iter_mut()
            .for_each(|a| *a = PremulScalar::default());
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// What anyone needs to verify: pk = g₂^x and u_1..u_s.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pk: G2Affine,
    bases: Vec<G1Affine>,
    id: TaggerId,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("tagger", &self.id)
            .field("sectors_per_block", &self.bases.len())
            .finish_non_exhaustive()
    }
}

fn derive_scalar(seed: &[u8], label: &[u8], index: u64) -> Scalar {
    // Counter mode, retrying on the (2^-250) chance of zero.
    for attempt in 0u32.. {
        let mut h = Sha512::new();
        h.update(b"cess-podr2/v1/keygen");
        h.update((seed.len() as u64).to_le_bytes());
        h.update(seed);
        h.update(label);
        h.update(index.to_le_bytes());
        h.update(attempt.to_le_bytes());
        let wide: [u8; 64] = h.finalize().into();
        let scalar = Scalar::from_wide_bytes(&wide);
        if !scalar.is_zero() {
            return scalar;
        }
    }
    unreachable!("a counter of 2^32 attempts all hashing to zero")
}

impl SecretKey {
    /// Derive a key from at least 32 bytes of secret seed (take them from the OS RNG).
    pub fn from_seed(seed: &[u8], sectors_per_block: u32) -> Result<SecretKey, DecodeError> {
        if seed.len() < 32 {
            return Err(DecodeError::Invalid("key seed shorter than 32 bytes"));
        }
        check_sectors(sectors_per_block)?;
        let x = derive_scalar(seed, b"x", 0);
        let alphas = (0..u64::from(sectors_per_block))
            .map(|j| derive_scalar(seed, b"alpha", j))
            .collect();
        Ok(SecretKey::from_parts(x, alphas))
    }

    fn from_parts(x: Scalar, alphas: Vec<Scalar>) -> SecretKey {
        let pk = G2Affine::generator_mul(&x);
        let g = G1::generator();
        let bases_projective: Vec<G1> = alphas.iter().map(|a| g.mul(a)).collect();
        let bases = G1::batch_to_affine(&bases_projective);
        let alphas_premul = alphas.iter().map(Scalar::premul).collect();
        SecretKey {
            x,
            alphas,
            alphas_premul,
            public: PublicKey::from_parts(pk, bases),
        }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn sectors_per_block(&self) -> u32 {
        self.alphas.len() as u32
    }

    pub(crate) fn x(&self) -> &Scalar {
        &self.x
    }

    pub(crate) fn alphas_premul(&self) -> &[PremulScalar] {
        &self.alphas_premul
    }

    /// `CESSPSK1 | s: u32 LE | x | α_1..α_s` (scalars 32 bytes LE).
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(
            SECRET_MAGIC.len() + 4 + SCALAR_BYTES * (1 + self.alphas.len()),
        ));
        out.extend_from_slice(SECRET_MAGIC);
        out.extend_from_slice(&(self.alphas.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.x.to_le_bytes());
        for a in &self.alphas {
            out.extend_from_slice(&a.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SecretKey, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(SECRET_MAGIC)?;
        let s = r.u32()?;
        check_sectors(s)?;
        r.expect_remaining(SCALAR_BYTES * (1 + s as usize))?;
        let x = r.scalar()?;
        if x.is_zero() {
            return Err(DecodeError::Invalid("secret x is zero"));
        }
        let alphas = (0..s).map(|_| r.scalar()).collect::<Result<Vec<_>, _>>()?;
        r.finish()?;
        Ok(SecretKey::from_parts(x, alphas))
    }
}

impl PublicKey {
    fn from_parts(pk: G2Affine, bases: Vec<G1Affine>) -> PublicKey {
        let mut key = PublicKey {
            pk,
            bases,
            id: TaggerId([0; 32]),
        };
        key.id = TaggerId(Sha256::digest(key.encode()).into());
        key
    }

    pub fn id(&self) -> TaggerId {
        self.id
    }

    /// The id a key with this encoding has ([`PublicKey::id`] of [`PublicKey::decode`]'s
    /// result when it decodes), without decoding a point: what a ledger checks before it
    /// spends time on the points.
    pub fn id_of_encoding(bytes: &[u8]) -> TaggerId {
        TaggerId(Sha256::digest(bytes).into())
    }

    pub fn sectors_per_block(&self) -> u32 {
        self.bases.len() as u32
    }

    /// Bytes covered by one tag: s sectors of 31 bytes.
    pub fn block_bytes(&self) -> u64 {
        crate::block_bytes(self.sectors_per_block())
    }

    pub(crate) fn pk(&self) -> &G2Affine {
        &self.pk
    }

    pub fn bases(&self) -> &[G1Affine] {
        &self.bases
    }

    /// `CESSPPK1 | s: u32 LE | pk (96, compressed G2) | u_1..u_s (48 each, compressed G1)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(PUBLIC_MAGIC.len() + 4 + G2_BYTES + G1_BYTES * self.bases.len());
        out.extend_from_slice(PUBLIC_MAGIC);
        out.extend_from_slice(&(self.bases.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.pk.compress());
        for u in &self.bases {
            out.extend_from_slice(&u.compress());
        }
        out
    }

    /// Decode and check every point (curve, subgroup, not the identity).
    pub fn decode(bytes: &[u8]) -> Result<PublicKey, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(PUBLIC_MAGIC)?;
        let s = r.u32()?;
        check_sectors(s)?;
        r.expect_remaining(G2_BYTES + G1_BYTES * s as usize)?;
        let pk = G2Affine::decode(r.array()?).map_err(|e| DecodeError::Point("pk", e))?;
        let bases = (0..s)
            .map(|_| G1Affine::decode(r.array()?).map_err(|e| DecodeError::Point("base u_j", e)))
            .collect::<Result<Vec<_>, _>>()?;
        r.finish()?;
        Ok(PublicKey::from_parts(pk, bases))
    }
}

fn check_sectors(s: u32) -> Result<(), DecodeError> {
    if s == 0 || s > SECTORS_PER_BLOCK_MAX {
        return Err(DecodeError::Invalid(
            "sectors per block outside 1..=SECTORS_PER_BLOCK_MAX",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_of_an_encoding_is_the_id_of_the_key_it_decodes_to() {
        let secret = SecretKey::from_seed(&[3; 32], 4).unwrap();
        let bytes = secret.public().encode();
        let decoded = PublicKey::decode(&bytes).unwrap();
        assert_eq!(PublicKey::id_of_encoding(&bytes), decoded.id());
        assert_eq!(decoded.id(), secret.public().id());
        let mut other = bytes.clone();
        other[20] ^= 1;
        assert_ne!(PublicKey::id_of_encoding(&other), decoded.id());
    }
}
