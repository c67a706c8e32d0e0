//! Write admission, sans-IO: who may write here and how large, before any byte is buffered.
//! Time comes in as `now_ms` (Unix milliseconds); nothing here reads a clock, a socket or a
//! disk, so every rule is a unit test below. The server asks, in order:
//!
//! 1. [`WritePolicy::authorize`]: the writer is on the allow list, or its request carries an
//!    upload grant from a trusted owner naming it, not expired (an Ed25519 check, made on the
//!    request's own task, under no lock); and the fragment is no larger than the store keeps.
//! 2. The store's own rule (`FragmentStore::admit`: a storage node's chain rule).
//! 3. [`crate::partials::Partials`] (behind the server's one lock, cheap): the unfinished
//!    write to resume, its memory counted only when bytes arrive, against the node's budget and
//!    the writer's own; untouched ones expire after their TTL.

use crate::grant::{self, GrantError};
use crate::message::pb;
use libp2p_identity::PeerId;
use std::collections::HashSet;

/// Why a write is refused before any of its bytes is buffered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefusal {
    #[error("{0} may not write here: not on the allow list and no upload grant")]
    NotAllowed(PeerId),
    #[error("upload grant refused: {0}")]
    Grant(GrantError),
    #[error("a fragment of {fragment_bytes} bytes is over this store's maximum of {max_bytes}")]
    TooLarge { fragment_bytes: u64, max_bytes: u64 },
}

/// Who may write, and how large.
#[derive(Debug, Clone)]
pub struct WritePolicy {
    /// PeerIds allowed to write; `None` lets any authenticated peer write.
    pub writers: Option<HashSet<PeerId>>,
    /// Owners whose upload grants let a peer off `writers` write.
    pub trusted_owners: HashSet<PeerId>,
    /// The largest fragment the store keeps.
    pub fragment_bytes_max: u64,
}

impl WritePolicy {
    /// Whether `writer` may write a fragment of `fragment_bytes` at `now_ms`, with the grant
    /// its signed request carries.
    pub fn authorize(
        &self,
        writer: &PeerId,
        grant: Option<&pb::UploadGrant>,
        fragment_bytes: u64,
        now_ms: i64,
    ) -> Result<(), WriteRefusal> {
        if let Some(writers) = &self.writers
            && !writers.contains(writer)
        {
            let grant = grant.ok_or(WriteRefusal::NotAllowed(*writer))?;
            grant::verify(grant, writer, &self.trusted_owners, now_ms)
                .map_err(WriteRefusal::Grant)?;
        }
        if fragment_bytes > self.fragment_bytes_max {
            return Err(WriteRefusal::TooLarge {
                fragment_bytes,
                max_bytes: self.fragment_bytes_max,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    const NOW_MS: i64 = 1_800_000_000_000;
    const MAX: u64 = 8 << 20;

    struct Setup {
        owner: NodeKey,
        listed: PeerId,
        stranger: NodeKey,
        policy: WritePolicy,
    }

    fn setup() -> Setup {
        let owner = NodeKey::generate();
        let listed = NodeKey::generate().peer_id();
        let policy = WritePolicy {
            writers: Some(HashSet::from([listed])),
            trusted_owners: HashSet::from([owner.peer_id()]),
            fragment_bytes_max: MAX,
        };
        Setup {
            owner,
            listed,
            stranger: NodeKey::generate(),
            policy,
        }
    }

    #[test]
    fn the_allow_list_or_a_live_grant_from_a_trusted_owner_admits_and_nothing_else() {
        let s = setup();
        let stranger = s.stranger.peer_id();
        assert_eq!(s.policy.authorize(&s.listed, None, MAX, NOW_MS), Ok(()));
        assert_eq!(
            s.policy.authorize(&stranger, None, 1, NOW_MS),
            Err(WriteRefusal::NotAllowed(stranger))
        );
        let grant = grant::issue(&s.owner, stranger, NOW_MS + 1000);
        assert_eq!(
            s.policy
                .authorize(&stranger, Some(&grant), 1, NOW_MS + 1000),
            Ok(()),
            "valid through its last millisecond"
        );
        assert_eq!(
            s.policy
                .authorize(&stranger, Some(&grant), 1, NOW_MS + 1001),
            Err(WriteRefusal::Grant(GrantError::Expired { ago_ms: 1 }))
        );
        // Copied off the wire by another peer: names the wrong uploader.
        let thief = NodeKey::generate().peer_id();
        assert!(matches!(
            s.policy.authorize(&thief, Some(&grant), 1, NOW_MS),
            Err(WriteRefusal::Grant(GrantError::WrongUploader { .. }))
        ));
        // Signed by an owner this node does not trust.
        let rogue = NodeKey::generate();
        let untrusted = grant::issue(&rogue, stranger, NOW_MS + 1000);
        assert_eq!(
            s.policy.authorize(&stranger, Some(&untrusted), 1, NOW_MS),
            Err(WriteRefusal::Grant(GrantError::UntrustedOwner(
                rogue.peer_id()
            )))
        );
        // Tampered after signing.
        let mut forged = grant.clone();
        forged.not_after_ms += 1;
        assert_eq!(
            s.policy.authorize(&stranger, Some(&forged), 1, NOW_MS),
            Err(WriteRefusal::Grant(GrantError::BadSignature))
        );
    }

    #[test]
    fn a_fragment_over_the_store_maximum_is_refused_whoever_writes_it() {
        let s = setup();
        assert_eq!(
            s.policy.authorize(&s.listed, None, MAX + 1, NOW_MS),
            Err(WriteRefusal::TooLarge {
                fragment_bytes: MAX + 1,
                max_bytes: MAX
            })
        );
        let open = WritePolicy {
            writers: None,
            ..s.policy.clone()
        };
        let anyone = s.stranger.peer_id();
        assert_eq!(open.authorize(&anyone, None, MAX, NOW_MS), Ok(()));
        assert!(open.authorize(&anyone, None, MAX + 1, NOW_MS).is_err());
    }
}
