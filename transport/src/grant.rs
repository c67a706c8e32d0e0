//! Upload grants: an owner's signed permission for one uploader to write fragments, until a
//! deadline, on every node that trusts the owner.
//!
//! A node accepts a write from a peer on its allow list, or from a peer whose request carries a
//! grant that
//! - is signed (Ed25519, domain-separated) by an owner the node trusts,
//! - names the sending peer as the uploader (the grant rides inside the uploader's own signed
//!   request, so a grant copied off the wire is useless to anyone else), and
//! - has not expired.
//!
//! Checking is sans-IO: time comes in as an argument. Grants travel in `WritefileRequest.grant`
//! and are stored in files as their protobuf encoding (`cess owner grant`).

use crate::identity::NodeKey;
use crate::message::pb;
use libp2p_identity::{PeerId, PublicKey};
use prost::Message;
use std::collections::HashSet;

const GRANT_DOMAIN: &[u8] = b"cess-fragment/1 upload grant\0";
/// An encoded Ed25519 public key in libp2p's protobuf form is 36 bytes; a PeerId of one 38.
const KEY_BYTES_MAX: usize = 64;
const SIGNATURE_BYTES: usize = 64;
/// The largest encoded grant (what a grant file may hold).
pub const GRANT_BYTES_MAX: usize = 256;

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("grant is malformed: {0}")]
    Malformed(String),
    #[error("grant's owner key is not a valid Ed25519 public key")]
    BadOwnerKey,
    #[error("grant's signature does not verify under its owner key")]
    BadSignature,
    #[error("grant is for uploader {granted}, the request came from {sender}")]
    WrongUploader { granted: String, sender: String },
    #[error("grant expired {ago_ms} ms ago")]
    Expired { ago_ms: i64 },
    #[error("grant's owner {0} is not trusted by this node")]
    UntrustedOwner(PeerId),
}

/// The bytes an owner signs: domain and the grant with an empty signature.
fn signed_bytes(grant: &pb::UploadGrant) -> Vec<u8> {
    let mut unsigned = grant.clone();
    unsigned.signature.clear();
    let mut bytes = Vec::with_capacity(GRANT_DOMAIN.len() + unsigned.encoded_len());
    bytes.extend_from_slice(GRANT_DOMAIN);
    unsigned.encode(&mut bytes).expect("a Vec grows as needed");
    bytes
}

/// Signs a grant letting `uploader` write until `not_after_ms` (Unix time).
pub fn issue(owner: &NodeKey, uploader: PeerId, not_after_ms: i64) -> pb::UploadGrant {
    let mut grant = pb::UploadGrant {
        owner_pub_key: owner.public().encode_protobuf(),
        uploader: uploader.to_bytes(),
        not_after_ms,
        signature: Vec::new(),
    };
    grant.signature = owner.sign(&signed_bytes(&grant));
    grant
}

/// Field sizes, checked whenever a grant is decoded (alone or inside a request).
pub(crate) fn check_bounds(grant: &pb::UploadGrant) -> Result<(), GrantError> {
    let too_long = |field: &str, len: usize, max: usize| {
        GrantError::Malformed(format!("{field} is {len} bytes, at most {max} allowed"))
    };
    if grant.owner_pub_key.len() > KEY_BYTES_MAX {
        return Err(too_long(
            "owner_pub_key",
            grant.owner_pub_key.len(),
            KEY_BYTES_MAX,
        ));
    }
    if grant.uploader.len() > KEY_BYTES_MAX {
        return Err(too_long("uploader", grant.uploader.len(), KEY_BYTES_MAX));
    }
    if grant.signature.len() != SIGNATURE_BYTES {
        return Err(GrantError::Malformed(format!(
            "signature is {} bytes, expected {SIGNATURE_BYTES}",
            grant.signature.len()
        )));
    }
    Ok(())
}

/// Decodes a grant file's bytes, within bounds.
pub fn decode(bytes: &[u8]) -> Result<pb::UploadGrant, GrantError> {
    if bytes.len() > GRANT_BYTES_MAX {
        return Err(GrantError::Malformed(format!(
            "{} bytes, at most {GRANT_BYTES_MAX} allowed",
            bytes.len()
        )));
    }
    let grant = pb::UploadGrant::decode(bytes).map_err(|e| GrantError::Malformed(e.to_string()))?;
    check_bounds(&grant)?;
    Ok(grant)
}

pub fn encode(grant: &pb::UploadGrant) -> Vec<u8> {
    grant.encode_to_vec()
}

/// The owner who signed `grant`, checking only the signature (not the uploader, the time or
/// trust): what `cess owner show` prints.
pub fn owner_of(grant: &pb::UploadGrant) -> Result<PeerId, GrantError> {
    check_bounds(grant)?;
    let key = PublicKey::try_decode_protobuf(&grant.owner_pub_key)
        .map_err(|_| GrantError::BadOwnerKey)?;
    if key.clone().try_into_ed25519().is_err() {
        return Err(GrantError::BadOwnerKey);
    }
    if !crate::identity::verify_strict(&key, &signed_bytes(grant), &grant.signature) {
        return Err(GrantError::BadSignature);
    }
    Ok(key.to_peer_id())
}

/// The uploader a grant names.
pub fn uploader_of(grant: &pb::UploadGrant) -> Result<PeerId, GrantError> {
    PeerId::from_bytes(&grant.uploader)
        .map_err(|e| GrantError::Malformed(format!("uploader is not a PeerId: {e}")))
}

/// Checks that `grant` lets `sender` write at `now_ms` on a node trusting `trusted_owners`;
/// returns the owner.
pub fn verify(
    grant: &pb::UploadGrant,
    sender: &PeerId,
    trusted_owners: &HashSet<PeerId>,
    now_ms: i64,
) -> Result<PeerId, GrantError> {
    let owner = owner_of(grant)?;
    let uploader = uploader_of(grant)?;
    if uploader != *sender {
        return Err(GrantError::WrongUploader {
            granted: uploader.to_base58(),
            sender: sender.to_base58(),
        });
    }
    if now_ms > grant.not_after_ms {
        return Err(GrantError::Expired {
            ago_ms: now_ms.saturating_sub(grant.not_after_ms),
        });
    }
    if !trusted_owners.contains(&owner) {
        return Err(GrantError::UntrustedOwner(owner));
    }
    Ok(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_800_000_000_000;

    fn setup() -> (NodeKey, NodeKey, HashSet<PeerId>) {
        let owner = NodeKey::generate();
        let uploader = NodeKey::generate();
        let trusted = HashSet::from([owner.peer_id()]);
        (owner, uploader, trusted)
    }

    #[test]
    fn a_valid_grant_names_its_owner() {
        let (owner, uploader, trusted) = setup();
        let grant = issue(&owner, uploader.peer_id(), NOW_MS + 1000);
        let decoded = decode(&encode(&grant)).unwrap();
        assert_eq!(decoded, grant);
        assert_eq!(
            verify(&decoded, &uploader.peer_id(), &trusted, NOW_MS),
            Ok(owner.peer_id())
        );
        // The last valid millisecond, then the first invalid one.
        assert!(verify(&grant, &uploader.peer_id(), &trusted, NOW_MS + 1000).is_ok());
        assert_eq!(
            verify(&grant, &uploader.peer_id(), &trusted, NOW_MS + 1001),
            Err(GrantError::Expired { ago_ms: 1 })
        );
    }

    #[test]
    fn every_refusal_says_why() {
        let (owner, uploader, trusted) = setup();
        let grant = issue(&owner, uploader.peer_id(), NOW_MS + 1000);
        let stranger = NodeKey::generate().peer_id();
        assert!(matches!(
            verify(&grant, &stranger, &trusted, NOW_MS),
            Err(GrantError::WrongUploader { .. })
        ));
        let other_owner = NodeKey::generate();
        let untrusted = issue(&other_owner, uploader.peer_id(), NOW_MS + 1000);
        assert_eq!(
            verify(&untrusted, &uploader.peer_id(), &trusted, NOW_MS),
            Err(GrantError::UntrustedOwner(other_owner.peer_id()))
        );
        // Any field changed after signing breaks the signature.
        let mut later = grant.clone();
        later.not_after_ms += 1;
        assert_eq!(
            verify(&later, &uploader.peer_id(), &trusted, NOW_MS),
            Err(GrantError::BadSignature)
        );
        let mut moved = grant.clone();
        moved.uploader = stranger.to_bytes();
        assert_eq!(
            verify(&moved, &stranger, &trusted, NOW_MS),
            Err(GrantError::BadSignature)
        );
        // An owner key swapped for a trusted one: the signature no longer matches.
        let mut swapped = untrusted.clone();
        swapped.owner_pub_key = owner.public().encode_protobuf();
        assert_eq!(
            verify(&swapped, &uploader.peer_id(), &trusted, NOW_MS),
            Err(GrantError::BadSignature)
        );
        let mut garbage_key = grant.clone();
        garbage_key.owner_pub_key = vec![7; 36];
        assert_eq!(
            verify(&garbage_key, &uploader.peer_id(), &trusted, NOW_MS),
            Err(GrantError::BadOwnerKey)
        );
        let mut short_signature = grant.clone();
        short_signature.signature.pop();
        assert!(matches!(
            verify(&short_signature, &uploader.peer_id(), &trusted, NOW_MS),
            Err(GrantError::Malformed(_))
        ));
    }

    #[test]
    fn decoding_is_bounded_and_refuses_garbage() {
        let (owner, uploader, _) = setup();
        let bytes = encode(&issue(&owner, uploader.peer_id(), NOW_MS));
        assert!(bytes.len() <= GRANT_BYTES_MAX);
        for cut in 0..bytes.len() {
            // A truncated grant never decodes to a valid, signed grant.
            if let Ok(g) = decode(&bytes[..cut]) {
                assert!(owner_of(&g).is_err(), "truncation at {cut} still verifies");
            }
        }
        assert!(matches!(
            decode(&vec![0; GRANT_BYTES_MAX + 1]),
            Err(GrantError::Malformed(_))
        ));
        let oversized_key = pb::UploadGrant {
            owner_pub_key: vec![1; KEY_BYTES_MAX + 1],
            signature: vec![0; SIGNATURE_BYTES],
            ..Default::default()
        };
        assert!(matches!(
            decode(&encode(&oversized_key)),
            Err(GrantError::Malformed(_))
        ));
    }
}
