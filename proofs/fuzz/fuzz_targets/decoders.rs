//! Every decoder of untrusted bytes: keys, tag blobs, challenges, proofs, points, PoIS proofs. None may
//! panic; whatever decodes must re-encode to the same bytes (encodings are canonical).
#![no_main]

use cess_proofs::curve::{G1Affine, G2Affine};
use cess_proofs::{Challenge, Proof, PublicKey, SecretKey, Tags};
use cess_proofs::pois::{CommitProof, PoisParams, SpaceProof};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = PublicKey::decode(data) {
        assert_eq!(key.encode(), data);
    }
    if let Ok(key) = SecretKey::decode(data) {
        assert_eq!(&key.encode()[..], data);
    }
    if let Ok(tags) = Tags::decode(data) {
        assert_eq!(tags.encode(), data);
        for index in 0..tags.block_count().min(4) {
            let _ = tags.tag(index);
        }
    }
    if let Ok(challenge) = Challenge::decode(data) {
        assert_eq!(challenge.encode(), data);
    }
    if let Ok(proof) = Proof::decode(data) {
        assert_eq!(proof.encode(), data);
    }
    for params in [PoisParams::TEST, PoisParams::NETWORK] {
        if let Ok(proof) = CommitProof::decode(data, &params) {
            assert_eq!(proof.encode(), data);
        }
        if let Ok(proof) = SpaceProof::decode(data, &params) {
            assert_eq!(proof.encode(), data);
        }
    }
    if let Ok(bytes) = <&[u8; 48]>::try_from(data) {
        if let Ok(point) = G1Affine::decode(bytes) {
            assert_eq!(&point.compress(), bytes);
        }
    }
    if let Ok(bytes) = <&[u8; 96]>::try_from(data) {
        if let Ok(point) = G2Affine::decode(bytes) {
            assert_eq!(&point.compress(), bytes);
        }
    }
});
