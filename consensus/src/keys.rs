//! Keys on the ledger.
//!
//! - **Accounts** sign transactions with Ed25519 (libp2p-identity): an account id is the
//!   32-byte public key, so a storage node's account is its node key and its PeerId follows.
//! - **Validators** sign consensus votes and proposals, and compute the VRF, with BLS on
//!   BLS12-381 (blst, "minimal public key": 48-byte public keys in G1, 96-byte signatures in G2).
//!   A BLS signature is unique for a key and message, which is what makes it a VRF
//!   (`crate::vrf`). A validator key is accepted only with a proof of possession, and every
//!   public key is checked (on the curve, in the subgroup, not the identity) when decoded.

use crate::codec::{DecodeError, hex};
use blst::BLST_ERROR;
use blst::min_pk;
use libp2p_identity::ed25519;

/// The RFC 9380 suite blst signs with; domains below separate the uses.
const DST_SIGN: &[u8] = b"CESS-CONSENSUS-V01-BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_";
const DST_POP: &[u8] = b"CESS-CONSENSUS-V01-BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

pub const ACCOUNT_ID_BYTES: usize = 32;
pub const ACCOUNT_SIGNATURE_BYTES: usize = 64;
pub const VALIDATOR_KEY_BYTES: usize = 48;
pub const VALIDATOR_SIGNATURE_BYTES: usize = 96;

/// An account: an Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub [u8; ACCOUNT_ID_BYTES]);

impl std::fmt::Debug for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "acct:{}", hex(&self.0[..6]))
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl AccountId {
    /// Whether `signature` is this account's Ed25519 signature of `message`, verified
    /// strictly: a key that is not a valid point, or of small order, verifies nothing (the
    /// identity point with R = identity and s = 0 "verifies" any message under lax checking,
    /// so anyone could sign for that account), nor does a small-order R or a non-canonical s.
    pub fn verify(&self, message: &[u8], signature: &[u8; ACCOUNT_SIGNATURE_BYTES]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        if key.is_weak() {
            return false;
        }
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(message, &signature).is_ok()
    }

    /// The libp2p PeerId of this key: how the transport names the same node.
    pub fn peer_id(&self) -> Option<libp2p_identity::PeerId> {
        let key = ed25519::PublicKey::try_from_bytes(&self.0).ok()?;
        Some(libp2p_identity::PublicKey::from(key).to_peer_id())
    }
}

/// An account's signing key.
#[derive(Clone)]
pub struct AccountKey {
    keypair: ed25519::Keypair,
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountKey({:?})", self.id())
    }
}

impl AccountKey {
    pub fn generate() -> AccountKey {
        AccountKey {
            keypair: ed25519::Keypair::generate(),
        }
    }

    /// A key derived from 32 seed bytes (tests, simulations and devnets).
    pub fn from_seed(seed: [u8; 32]) -> AccountKey {
        let mut seed = seed;
        let secret = ed25519::SecretKey::try_from_bytes(&mut seed)
            .expect("any 32 bytes are an Ed25519 secret key");
        AccountKey {
            keypair: ed25519::Keypair::from(secret),
        }
    }

    /// The same key as a transport node key (libp2p protobuf keypair encoding).
    pub fn from_libp2p(keypair: &libp2p_identity::Keypair) -> Option<AccountKey> {
        let keypair = keypair.clone().try_into_ed25519().ok()?;
        Some(AccountKey { keypair })
    }

    pub fn id(&self) -> AccountId {
        AccountId(self.keypair.public().to_bytes())
    }

    /// The Ed25519 keypair (a storage node or validator uses it as its transport key).
    pub fn ed25519(&self) -> &ed25519::Keypair {
        &self.keypair
    }

    pub fn sign(&self, message: &[u8]) -> [u8; ACCOUNT_SIGNATURE_BYTES] {
        self.keypair
            .sign(message)
            .try_into()
            .expect("Ed25519 signatures are 64 bytes")
    }
}

/// A validator's BLS public key, decoded with every check.
#[derive(Clone, PartialEq, Eq)]
pub struct ValidatorPublicKey {
    key: min_pk::PublicKey,
    bytes: [u8; VALIDATOR_KEY_BYTES],
}

impl std::fmt::Debug for ValidatorPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bls:{}", hex(&self.bytes[..6]))
    }
}

impl PartialOrd for ValidatorPublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ValidatorPublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

impl std::hash::Hash for ValidatorPublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl ValidatorPublicKey {
    /// Compressed encoding only, canonical, in the subgroup and not the identity.
    pub fn decode(bytes: &[u8; VALIDATOR_KEY_BYTES]) -> Result<ValidatorPublicKey, DecodeError> {
        let key = min_pk::PublicKey::key_validate(bytes)
            .map_err(|_| DecodeError::Invalid("validator key: not a valid BLS public key"))?;
        if key.compress() != *bytes {
            return Err(DecodeError::Invalid("validator key: not canonical"));
        }
        Ok(ValidatorPublicKey { key, bytes: *bytes })
    }

    pub fn to_bytes(&self) -> [u8; VALIDATOR_KEY_BYTES] {
        self.bytes
    }

    /// Whether `signature` signs `domain ‖ message` under this key.
    pub fn verify(&self, domain: &[u8], message: &[u8], signature: &ValidatorSignature) -> bool {
        // The key was validated at decode and the signature at its decode.
        signature
            .sig
            .verify(false, message, DST_SIGN, domain, &self.key, false)
            == BLST_ERROR::BLST_SUCCESS
    }

    /// Whether `pop` proves possession of the secret key (a signature of the key itself under
    /// its own domain), which rules out rogue-key constructions.
    pub fn verify_possession(&self, pop: &ValidatorSignature) -> bool {
        pop.sig
            .verify(false, &self.bytes, DST_POP, &[], &self.key, false)
            == BLST_ERROR::BLST_SUCCESS
    }
}

/// Whether every `(key, domain ‖ message, signature)` verifies, checked together: n + 1
/// pairings instead of 2n, each signature weighted by a 64-bit scalar drawn from a hash of
/// everything checked (fixed only once the signatures are, so no signer can cancel another's
/// error). The same answer as [`ValidatorPublicKey::verify`] on each, the reference it is
/// tested against.
pub fn verify_batch(items: &[(&ValidatorPublicKey, Vec<u8>, &ValidatorSignature)]) -> bool {
    if items.is_empty() {
        return true;
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity(3 * items.len());
    for (key, message, signature) in items {
        parts.push(&key.bytes);
        parts.push(message);
        parts.push(&signature.bytes);
    }
    let seed = crate::codec::hash(b"cess-keys/1 batch weights\0", &parts);
    let rands: Vec<blst::blst_scalar> = (0..items.len() as u64)
        .map(|i| {
            let draw =
                crate::codec::hash(b"cess-keys/1 batch weight\0", &[&seed, &i.to_le_bytes()]);
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&draw[..8]);
            // Never zero: a zero weight would drop its signature from the check.
            b[0] |= 1;
            blst::blst_scalar { b }
        })
        .collect();
    let messages: Vec<&[u8]> = items.iter().map(|(_, m, _)| m.as_slice()).collect();
    let keys: Vec<&min_pk::PublicKey> = items.iter().map(|(k, _, _)| &k.key).collect();
    let signatures: Vec<&min_pk::Signature> = items.iter().map(|(_, _, s)| &s.sig).collect();
    // Keys and signatures were validated at decode.
    min_pk::Signature::verify_multiple_aggregate_signatures(
        &messages,
        DST_SIGN,
        &keys,
        false,
        &signatures,
        false,
        &rands,
        64,
    ) == BLST_ERROR::BLST_SUCCESS
}

/// A BLS signature, decoded with every check.
#[derive(Clone, PartialEq, Eq)]
pub struct ValidatorSignature {
    sig: min_pk::Signature,
    bytes: [u8; VALIDATOR_SIGNATURE_BYTES],
}

impl std::fmt::Debug for ValidatorSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sig:{}", hex(&self.bytes[..6]))
    }
}

impl PartialOrd for ValidatorSignature {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ValidatorSignature {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

impl ValidatorSignature {
    fn from_blst(sig: min_pk::Signature) -> ValidatorSignature {
        ValidatorSignature {
            bytes: sig.compress(),
            sig,
        }
    }

    /// Compressed encoding only, canonical, in the subgroup and not the identity.
    pub fn decode(
        bytes: &[u8; VALIDATOR_SIGNATURE_BYTES],
    ) -> Result<ValidatorSignature, DecodeError> {
        let sig = min_pk::Signature::sig_validate(bytes, true)
            .map_err(|_| DecodeError::Invalid("signature: not a valid BLS signature"))?;
        if sig.compress() != *bytes {
            return Err(DecodeError::Invalid("signature: not canonical"));
        }
        Ok(ValidatorSignature { sig, bytes: *bytes })
    }

    pub fn to_bytes(&self) -> [u8; VALIDATOR_SIGNATURE_BYTES] {
        self.bytes
    }
}

/// A validator's BLS secret key.
#[derive(Clone)]
pub struct ValidatorKey {
    secret: min_pk::SecretKey,
    public: ValidatorPublicKey,
}

impl std::fmt::Debug for ValidatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ValidatorKey({:?})", self.public)
    }
}

impl ValidatorKey {
    /// IETF KeyGen from at least 32 bytes of key material.
    pub fn from_seed(ikm: &[u8; 32]) -> ValidatorKey {
        let secret = min_pk::SecretKey::key_gen(ikm, b"cess-validator")
            .expect("32 bytes of key material are enough for KeyGen");
        ValidatorKey::from_secret(secret)
    }

    fn from_secret(secret: min_pk::SecretKey) -> ValidatorKey {
        let key = secret.sk_to_pk();
        let public = ValidatorPublicKey {
            bytes: key.compress(),
            key,
        };
        ValidatorKey { secret, public }
    }

    pub fn generate() -> ValidatorKey {
        let mut ikm = zeroize::Zeroizing::new([0u8; 32]);
        rand::Rng::fill(&mut rand::rng(), &mut ikm[..]);
        ValidatorKey::from_seed(&ikm)
    }

    /// The 32-byte secret scalar (big-endian), for the key file.
    pub fn secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.secret.to_bytes())
    }

    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Result<ValidatorKey, DecodeError> {
        let secret = min_pk::SecretKey::from_bytes(bytes)
            .map_err(|_| DecodeError::Invalid("validator secret key"))?;
        Ok(ValidatorKey::from_secret(secret))
    }

    pub fn public(&self) -> &ValidatorPublicKey {
        &self.public
    }

    pub fn sign(&self, domain: &[u8], message: &[u8]) -> ValidatorSignature {
        ValidatorSignature::from_blst(self.secret.sign(message, DST_SIGN, domain))
    }

    pub fn proof_of_possession(&self) -> ValidatorSignature {
        ValidatorSignature::from_blst(self.secret.sign(&self.public.bytes, DST_POP, &[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scenario (issue 28): the small-order key 01 00…00 with the "signature" 01 00…00
    /// verified any message, so anyone could act as that account.
    #[test]
    fn a_small_order_key_verifies_nothing() {
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let mut signature = [0u8; 64];
        signature[0] = 1;
        let lax = ed25519::PublicKey::try_from_bytes(&weak).unwrap();
        assert!(
            lax.verify(b"anything", &signature),
            "lax checking accepts it"
        );
        assert!(!AccountId(weak).verify(b"anything", &signature));
        assert!(!AccountId(weak).verify(b"", &signature));
    }

    #[test]
    fn account_signatures() {
        let key = AccountKey::from_seed([1; 32]);
        let sig = key.sign(b"hello");
        assert!(key.id().verify(b"hello", &sig));
        assert!(!key.id().verify(b"hellp", &sig));
        assert!(!AccountKey::from_seed([2; 32]).id().verify(b"hello", &sig));
        assert!(key.id().peer_id().is_some());
    }

    /// The batch check answers as the one-by-one reference does: all valid, one wrong
    /// message, one signature swapped between two validators, one key swapped.
    #[test]
    fn batch_verification_agrees_with_verifying_each() {
        let keys: Vec<ValidatorKey> = (0..5u8)
            .map(|i| ValidatorKey::from_seed(&[i; 32]))
            .collect();
        let messages: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 40]).collect();
        let signatures: Vec<ValidatorSignature> = keys
            .iter()
            .zip(&messages)
            .map(|(k, m)| k.sign(b"dom", m))
            .collect();
        let items = |messages: &[Vec<u8>],
                     signatures: &[ValidatorSignature],
                     keys: &[&ValidatorPublicKey]| {
            let batch: Vec<(&ValidatorPublicKey, Vec<u8>, &ValidatorSignature)> = keys
                .iter()
                .zip(messages)
                .zip(signatures)
                .map(|((k, m), s)| (*k, [b"dom".as_slice(), m].concat(), s))
                .collect();
            let each = keys
                .iter()
                .zip(messages)
                .zip(signatures)
                .all(|((k, m), s)| k.verify(b"dom", m, s));
            (verify_batch(&batch), each)
        };
        let publics: Vec<&ValidatorPublicKey> = keys.iter().map(|k| k.public()).collect();
        assert_eq!(items(&messages, &signatures, &publics), (true, true));
        let mut wrong = messages.clone();
        wrong[2][0] ^= 1;
        assert_eq!(items(&wrong, &signatures, &publics), (false, false));
        let mut swapped = signatures.clone();
        swapped.swap(1, 3);
        assert_eq!(items(&messages, &swapped, &publics), (false, false));
        let mut other_keys = publics.clone();
        other_keys.swap(0, 4);
        assert_eq!(items(&messages, &signatures, &other_keys), (false, false));
        assert!(verify_batch(&[]));
    }

    #[test]
    fn validator_signatures_and_possession() {
        let key = ValidatorKey::from_seed(&[3; 32]);
        let other = ValidatorKey::from_seed(&[4; 32]);
        let sig = key.sign(b"dom", b"msg");
        assert!(key.public().verify(b"dom", b"msg", &sig));
        assert!(!key.public().verify(b"dom2", b"msg", &sig));
        assert!(!other.public().verify(b"dom", b"msg", &sig));
        assert!(key.public().verify_possession(&key.proof_of_possession()));
        assert!(!key.public().verify_possession(&other.proof_of_possession()));
        // A signature is not a proof of possession (different domain).
        let as_pop = key.sign(&[], &key.public().to_bytes());
        assert!(!key.public().verify_possession(&as_pop));

        let decoded = ValidatorPublicKey::decode(&key.public().to_bytes()).unwrap();
        assert_eq!(&decoded, key.public());
        let sig_decoded = ValidatorSignature::decode(&sig.to_bytes()).unwrap();
        assert_eq!(sig_decoded, sig);
        let restored = ValidatorKey::from_secret_bytes(&key.secret_bytes()).unwrap();
        assert_eq!(restored.public(), key.public());
    }

    #[test]
    fn bad_validator_encodings_are_refused() {
        // The identity (compressed infinity) and garbage.
        let mut infinity = [0u8; 48];
        infinity[0] = 0xc0;
        assert!(ValidatorPublicKey::decode(&infinity).is_err());
        assert!(ValidatorPublicKey::decode(&[0xab; 48]).is_err());
        let mut sig_inf = [0u8; 96];
        sig_inf[0] = 0xc0;
        assert!(ValidatorSignature::decode(&sig_inf).is_err());
        assert!(ValidatorSignature::decode(&[0x12; 96]).is_err());
    }
}
