//! The VRF and slot leaders.
//!
//! **VRF.** A validator's VRF proof for a slot is its BLS signature over the epoch's
//! randomness and the slot (`ValidatorKey::sign` under the VRF domain); the output is the
//! SHA-256 of that signature. A BLS signature is unique for a key and message, so the output
//! is fixed by the key and the slot, unpredictable to anyone without the key, and checked by
//! anyone with one pairing equation (Ethereum's RANDAO reveal works this way). Keys come with a
//! proof of possession, so no key can be chosen to bias outputs.
//!
//! **Slot leaders.** Tendermint needs every validator to compute the proposer of (height,
//! round) by itself, so the lottery draws from public randomness: the ledger's randomness after
//! the previous block, a hash chain over every block's VRF output (fixed only once the previous
//! proposer revealed its VRF output, which no one else can compute). Each validator holds a
//! ticket `SHA-256(seed ‖ height ‖ account)`; it wins the slot if its ticket falls below
//! `1/n` of the range (one winner expected), and the lowest winning ticket leads. When nobody
//! wins (probability about 1/e) the fallback leader is `validators[height mod n]`. Round r > 0
//! of the same height passes leadership on round-robin from round 0's leader, so a silent
//! leader costs one round.

use crate::codec::{Writer, hash};
use crate::keys::{AccountId, ValidatorKey, ValidatorPublicKey, ValidatorSignature};
use crate::tx::Hash32;

const VRF_DOMAIN: &[u8] = b"cess-vrf/1 slot\0";

fn vrf_message(epoch_randomness: &Hash32, slot: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.fixed(epoch_randomness).u64(slot);
    w.into_bytes()
}

/// The output of a VRF proof.
pub fn vrf_output(proof: &ValidatorSignature) -> Hash32 {
    hash(b"cess-vrf/1 output\0", &[&proof.to_bytes()])
}

/// The VRF proof and output of `key` for `slot` of an epoch.
pub fn vrf_prove(
    key: &ValidatorKey,
    epoch_randomness: &Hash32,
    slot: u64,
) -> (ValidatorSignature, Hash32) {
    let proof = key.sign(VRF_DOMAIN, &vrf_message(epoch_randomness, slot));
    let output = vrf_output(&proof);
    (proof, output)
}

/// The output, if `proof` is `key`'s VRF proof for `slot`.
pub fn vrf_verify(
    key: &ValidatorPublicKey,
    epoch_randomness: &Hash32,
    slot: u64,
    proof: &ValidatorSignature,
) -> Option<Hash32> {
    key.verify(VRF_DOMAIN, &vrf_message(epoch_randomness, slot), proof)
        .then(|| vrf_output(proof))
}

/// How a slot's leader was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderKind {
    /// The lowest winning ticket.
    Winner,
    /// Nobody won: `validators[height mod n]`.
    Fallback,
}

/// Round 0's leader of `height` among `validators` (ordered as the ledger orders the set).
pub fn slot_leader(seed: &Hash32, height: u64, validators: &[AccountId]) -> (usize, LeaderKind) {
    assert!(!validators.is_empty(), "a validator set is never empty");
    let n = validators.len() as u64;
    let threshold = u64::MAX / n;
    let mut best: Option<(u64, usize)> = None;
    for (index, account) in validators.iter().enumerate() {
        let ticket = hash(
            b"cess-vrf/1 ticket\0",
            &[seed, &height.to_le_bytes(), &account.0],
        );
        let ticket = u64::from_le_bytes(ticket[..8].try_into().expect("8 bytes"));
        if ticket < threshold && best.is_none_or(|(t, _)| ticket < t) {
            best = Some((ticket, index));
        }
    }
    match best {
        Some((_, index)) => (index, LeaderKind::Winner),
        None => ((height % n) as usize, LeaderKind::Fallback),
    }
}

/// The proposer of (height, round): round 0's leader, then round-robin.
pub fn proposer_index(seed: &Hash32, height: u64, round: u32, validators: &[AccountId]) -> usize {
    let (leader, _) = slot_leader(seed, height, validators);
    (leader + round as usize) % validators.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vrf_outputs_are_unique_and_verifiable() {
        let key = ValidatorKey::from_seed(&[1; 32]);
        let other = ValidatorKey::from_seed(&[2; 32]);
        let seed = [9u8; 32];
        let (proof, output) = vrf_prove(&key, &seed, 7);
        assert_eq!(vrf_prove(&key, &seed, 7).1, output, "deterministic");
        assert_ne!(vrf_prove(&key, &seed, 8).1, output);
        assert_ne!(vrf_prove(&key, &[8u8; 32], 7).1, output);
        assert_eq!(vrf_verify(key.public(), &seed, 7, &proof), Some(output));
        assert_eq!(vrf_verify(key.public(), &seed, 8, &proof), None);
        assert_eq!(vrf_verify(other.public(), &seed, 7, &proof), None);
        // Another key's proof for the same slot does not pass as this key's.
        let (forged, _) = vrf_prove(&other, &seed, 7);
        assert_eq!(vrf_verify(key.public(), &seed, 7, &forged), None);
    }

    #[test]
    fn leaders_are_spread_and_fallbacks_happen_about_one_slot_in_e() {
        let validators: Vec<AccountId> = (0..11u8).map(|i| AccountId([i; 32])).collect();
        let mut counts = [0usize; 11];
        let mut fallbacks = 0;
        let slots = 20_000u64;
        for height in 0..slots {
            let seed = hash(b"t", &[&height.to_le_bytes()]);
            let (leader, kind) = slot_leader(&seed, height, &validators);
            counts[leader] += 1;
            fallbacks += usize::from(kind == LeaderKind::Fallback);
            assert_eq!(proposer_index(&seed, height, 0, &validators), leader);
            assert_eq!(
                proposer_index(&seed, height, 3, &validators),
                (leader + 3) % 11
            );
        }
        // (1 - 1/11)^11 ≈ 0.350 of slots have no winner.
        let share = fallbacks as f64 / slots as f64;
        assert!((0.32..0.38).contains(&share), "fallback share {share}");
        for count in counts {
            let expected = slots as f64 / 11.0;
            assert!(
                (count as f64 - expected).abs() < expected * 0.1,
                "{counts:?}"
            );
        }
    }
}
