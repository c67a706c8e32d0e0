//! The tagger: the service that holds a PoDR² secret key and tags fragments for the miners
//! that store them (CESS gives this role to TEE workers). It is trusted: whoever holds its
//! secret can forge proofs for whatever it tagged, so it is admitted by the genesis or by the
//! validators (`Call::RegisterTagger`), never self-registered, and its key never leaves it.
//!
//! It follows the chain (its own replica, every block checked) and tags a fragment only for
//! the miner the ledger assigned it to, in an order that names this tagger, at the order's
//! fragment length ([`admit`]): so tagging costs the network what the owner paid for, not
//! what any peer asks. The bytes it tags must hash to the fragment id (checked by the
//! protocol, `cess_transport::tagging`). It answers on QUIC (ALPN `cess-tag/1`) with the tag
//! blob; the miner checks the blob before keeping it (`cess_proofs::check_tags`).
#![forbid(unsafe_code)]

use cess_consensus::AccountId;
use cess_consensus::ledger::Ledger;
use cess_consensus::net::FollowerHandle;
use cess_http::metrics::prometheus_client::metrics::histogram::Histogram;
use cess_proofs::{Backend, CpuBackend, FragmentId, SecretKey, tag_fragment};
use cess_transport::PeerId;
use cess_transport::tagging::{TagRefusal, TagService};
use std::sync::Arc;
use thiserror::Error;

/// Why the tagger refuses to tag a fragment for a peer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("the peer's key is not an account key")]
    NotAnAccount,
    #[error("the peer is not a registered miner")]
    NotMiner,
    #[error("no file on the chain has this fragment")]
    UnknownFragment,
    #[error("the order names another tagger")]
    OtherTagger,
    #[error("the chain assigns this fragment to another miner")]
    NotAssigned,
    #[error("the fragment is {got} bytes; its order declares {expected}")]
    WrongLength { expected: u64, got: u64 },
    #[error("the tagger has not caught up with the chain yet")]
    Behind,
}

/// The account behind a PeerId: an Ed25519 PeerId carries its public key (identity hash).
pub fn account_of(peer: &PeerId) -> Option<AccountId> {
    // The multihash: code 0x00 (identity), digest length, then the protobuf-encoded key.
    let bytes = peer.to_bytes();
    let (&code, rest) = bytes.split_first()?;
    let (&len, digest) = rest.split_first()?;
    if code != 0 || usize::from(len) != digest.len() {
        return None;
    }
    let key = libp2p_identity::PublicKey::try_decode_protobuf(digest).ok()?;
    Some(AccountId(key.try_into_ed25519().ok()?.to_bytes()))
}

/// Whether tagger `tagger` (its id) may tag fragment `id` of `len_bytes` for `peer`, by
/// `ledger`: the peer is a registered miner, the fragment is placed on it (or a restoral it
/// claimed), in an order that names this tagger, at the order's fragment length.
pub fn admit(
    ledger: &Ledger,
    tagger: &[u8; 32],
    peer: &PeerId,
    id: &FragmentId,
    len_bytes: u64,
) -> Result<(), Refusal> {
    let account = account_of(peer).ok_or(Refusal::NotAnAccount)?;
    if ledger.miner(&account).is_none() {
        return Err(Refusal::NotMiner);
    }
    let (file_id, segment, column) = ledger.fragment_place(id).ok_or(Refusal::UnknownFragment)?;
    let file = ledger.file(&file_id).ok_or(Refusal::UnknownFragment)?;
    if file.tagger != *tagger {
        return Err(Refusal::OtherTagger);
    }
    let fragment = &file.segments[segment as usize].fragments[usize::from(column)];
    let claimed = ledger
        .restoral(id)
        .and_then(|order| order.claim)
        .is_some_and(|(claimant, _)| claimant == account);
    if fragment.miner != Some(account) && !claimed {
        return Err(Refusal::NotAssigned);
    }
    if len_bytes != file.fragment_bytes {
        return Err(Refusal::WrongLength {
            expected: file.fragment_bytes,
            got: len_bytes,
        });
    }
    Ok(())
}

/// Which backend tags: the CPU, or a GPU adapter.
pub enum TagBackend {
    Cpu(CpuBackend),
    Gpu(Box<cess_proofs::GpuBackend>),
}

impl TagBackend {
    fn backend(&self) -> &dyn Backend {
        match self {
            TagBackend::Cpu(cpu) => cpu,
            TagBackend::Gpu(gpu) => gpu.as_ref(),
        }
    }

    /// What the tagger says at start about the backend it uses.
    pub fn describe(&self) -> String {
        match self {
            TagBackend::Cpu(_) => "the CPU (every core)".into(),
            TagBackend::Gpu(gpu) => format!("GPU {}", gpu.gpu().adapter()),
        }
    }
}

impl std::fmt::Debug for TagBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `--backend auto|cpu|gpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// A hardware GPU when one is found, else the CPU (a software adapter such as lavapipe
    /// runs the kernels on the same cores, for correctness; it is never chosen automatically,
    /// and its speed against the CPU backend is not measured here).
    Auto,
    Cpu,
    /// A GPU adapter or an error that says why there is none.
    Gpu,
}

/// Why no backend could be opened.
#[derive(Debug, Error)]
#[error("no GPU adapter for --backend gpu: {0}")]
pub struct NoGpu(String);

/// Opens the backend `choice` asks for; with `Auto`, also says why it fell back to the CPU.
pub fn open_backend(choice: BackendChoice) -> Result<(TagBackend, Option<String>), NoGpu> {
    match choice {
        BackendChoice::Cpu => Ok((TagBackend::Cpu(CpuBackend), None)),
        BackendChoice::Gpu => cess_proofs::GpuBackend::open()
            .map(|gpu| (TagBackend::Gpu(Box::new(gpu)), None))
            .map_err(|e| NoGpu(e.to_string())),
        BackendChoice::Auto => match cess_proofs::GpuBackend::open() {
            Ok(gpu) if !gpu.gpu().adapter().is_software => {
                Ok((TagBackend::Gpu(Box::new(gpu)), None))
            }
            Ok(gpu) => Ok((
                TagBackend::Cpu(CpuBackend),
                Some(format!(
                    "the only adapter is software ({}); tagging on the CPU backend",
                    gpu.gpu().adapter()
                )),
            )),
            Err(e) => Ok((TagBackend::Cpu(CpuBackend), Some(e.to_string()))),
        },
    }
}

/// The tagger behind the protocol: its key, its backend and its replica of the chain.
pub struct Tagger {
    key: Arc<SecretKey>,
    backend: Arc<TagBackend>,
    follower: FollowerHandle,
    /// Time to tag one fragment (queueing excluded), for the tagger's metrics.
    pub tag_seconds: Histogram,
}

impl std::fmt::Debug for Tagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tagger")
            .field("tagger", &self.key.public().id())
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Tagger {
    pub fn new(key: SecretKey, backend: TagBackend, follower: FollowerHandle) -> Tagger {
        Tagger {
            key: Arc::new(key),
            backend: Arc::new(backend),
            follower,
            tag_seconds: cess_http::metrics::latency_histogram(),
        }
    }

    /// `cpu` or `gpu`, and the adapter's name for a GPU.
    pub fn backend_labels(&self) -> (&'static str, String) {
        match self.backend.as_ref() {
            TagBackend::Cpu(_) => ("cpu", String::new()),
            TagBackend::Gpu(gpu) => ("gpu", gpu.gpu().adapter().to_string()),
        }
    }

    pub fn follower(&self) -> &FollowerHandle {
        &self.follower
    }
}

impl TagService for Tagger {
    fn admit(&self, peer: &PeerId, id: &FragmentId, fragment_bytes: u64) -> Result<(), TagRefusal> {
        if !self.follower.status().synced {
            return Err(TagRefusal::NotYet(Refusal::Behind.to_string()));
        }
        let tagger = self.key.public().id().0;
        self.follower
            .with_ledger(|ledger| admit(ledger, &tagger, peer, id, fragment_bytes))
            .map_err(|refusal| match refusal {
                // The order may be in a block this replica has not applied yet.
                Refusal::UnknownFragment | Refusal::NotAssigned | Refusal::Behind => {
                    TagRefusal::NotYet(refusal.to_string())
                }
                _ => TagRefusal::Never(refusal.to_string()),
            })
    }

    async fn tag(&self, id: FragmentId, data: Vec<u8>) -> Result<Vec<u8>, String> {
        let (key, backend) = (self.key.clone(), self.backend.clone());
        let tag_seconds = self.tag_seconds.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let tagged = tag_fragment(&key, backend.backend(), &id, &data)
                .map(|tags| tags.encode())
                .map_err(|e| e.to_string());
            tag_seconds.observe(started.elapsed().as_secs_f64());
            tagged
        })
        .await
        .map_err(|e| format!("the tagging task failed: {e}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cess_consensus::AccountKey;
    use cess_transport::NodeKey;

    #[test]
    fn a_peer_id_names_the_account_of_its_key() {
        let key = NodeKey::generate();
        let account = AccountKey::from_libp2p(key.keypair()).unwrap().id();
        assert_eq!(account_of(&key.peer_id()), Some(account));
        // A PeerId hashed with SHA-256 (not an identity hash) names no key.
        assert_eq!(account_of(&PeerId::random()), None);
    }
}
