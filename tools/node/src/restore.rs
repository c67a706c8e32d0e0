//! Rebuilding a fragment from the network: what a rebuild needs, read from the replica
//! ([`plan`], pure), and the fetch and decode ([`rebuild`]): the fragment whole from the miner
//! leaving it when there is one, else any `data_fragments` of its segment from the miners
//! holding them, decoded by the codec's `repair_segment` and checked against the fragment's
//! id. Used for a node's own lost fragments (self-repair) and for restorals it claimed.
//! Also the store's read-back ([`check_store`]): every fragment read whole (the engine checks
//! each block's checksum) and hashed against its id.

use cess_codec::{self as codec, CodecError, FragmentSource, Manifest, SegmentEntry};
use cess_consensus::Ledger;
use cess_consensus::ledger::MinerState;
use cess_consensus::tx::{FragmentId, Hash32};
use cess_transport::{Client, NodeAddr};
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

/// Why a fragment could not be rebuilt.
#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("no file on the chain has this fragment")]
    UnknownFragment,
    #[error("the file's header on the chain does not make a manifest: {0}")]
    Manifest(CodecError),
    #[error("only {got} of the {needed} fragments needed answered: {failures}")]
    TooFew {
        got: usize,
        needed: usize,
        failures: String,
    },
    #[error("decoding the segment: {0}")]
    Decode(CodecError),
    #[error("the rebuild task failed: {0}")]
    Task(String),
    #[error("not rebuilt within {seconds} s")]
    TimedOut { seconds: u64 },
}

impl RestoreError {
    /// Whether trying again cannot help: the file's header makes no manifest, or the
    /// fragments fetched (each checked against its id) do not decode to their segment's id
    /// (a column declared unlike its encoding). Too few siblings answering is not: their
    /// replicas may not have applied the claim yet.
    pub fn is_permanent(&self) -> bool {
        matches!(self, RestoreError::Manifest(_) | RestoreError::Decode(_))
    }
}

/// A file's segments as the codec's manifest lists them (the ids the ledger keeps): with
/// the file's header, what `Manifest::from_header` rebuilds the manifest from.
pub fn segment_entries(file: &cess_consensus::ledger::FileInfo) -> Vec<SegmentEntry> {
    file.segments
        .iter()
        .map(|s| SegmentEntry {
            id: s.segment_id,
            fragments: s.fragments.iter().map(|f| f.id).collect(),
        })
        .collect()
}

/// What rebuilding one fragment needs, read from the replica.
#[derive(Debug, Clone)]
pub struct RebuildPlan {
    pub fragment_id: FragmentId,
    pub file_id: Hash32,
    pub manifest: Arc<Manifest>,
    pub segment: u64,
    pub column: usize,
    /// The miner that let the fragment go when it is leaving (exiting) and still has it:
    /// asked for it whole first (one fragment's bytes instead of `data_fragments`), as the
    /// seed's restoral does.
    pub leaving: Option<NodeAddr>,
    /// The segment's other fragments with the miner that holds each, this node excluded.
    pub siblings: Vec<(usize, FragmentId, NodeAddr)>,
    pub data_fragments: usize,
}

/// The plan to rebuild `fragment_id`, as `ledger` has its file and holders.
pub fn plan(
    ledger: &Ledger,
    me: &cess_consensus::AccountId,
    fragment_id: &FragmentId,
) -> Result<RebuildPlan, RestoreError> {
    let (file_id, segment, column) = ledger
        .fragment_place(fragment_id)
        .ok_or(RestoreError::UnknownFragment)?;
    let file = ledger.file(&file_id).ok_or(RestoreError::UnknownFragment)?;
    let manifest = Manifest::from_header(&file.meta, &segment_entries(file))
        .map_err(RestoreError::Manifest)?;
    let endpoint = |account: &cess_consensus::AccountId| {
        ledger
            .miner(account)
            .and_then(|m| m.endpoint.parse::<NodeAddr>().ok())
    };
    // A miner that reported the fragment lost does not have it; one that is leaving does
    // (it keeps what it let go while the orders are open).
    let leaving = ledger.restoral(fragment_id).and_then(|order| {
        let miner = ledger.miner(&order.lost_by)?;
        (order.lost_by != *me && matches!(miner.state, MinerState::Exiting { .. }))
            .then(|| endpoint(&order.lost_by))
            .flatten()
    });
    let siblings = file.segments[segment as usize]
        .fragments
        .iter()
        .enumerate()
        .filter(|(c, _)| *c != usize::from(column))
        .filter_map(|(c, f)| {
            let holder = f.miner?;
            if holder == *me || !f.stored {
                return None;
            }
            Some((c, f.id, endpoint(&holder)?))
        })
        .collect();
    Ok(RebuildPlan {
        fragment_id: *fragment_id,
        file_id,
        manifest: Arc::new(manifest),
        segment: u64::from(segment),
        column: usize::from(column),
        leaving,
        siblings,
        data_fragments: usize::from(ledger.params().data_fragments),
    })
}

/// Fetches and rebuilds the fragment of `plan`: byte-identical to the original (its SHA-256
/// is its id) or an error. Peak memory: `data_fragments` fragments and one segment.
pub async fn rebuild(client: &Arc<Client>, plan: &RebuildPlan) -> Result<Vec<u8>, RestoreError> {
    if let Some(addr) = &plan.leaving {
        match client
            .read_fragment(addr, plan.file_id, plan.fragment_id)
            .await
        {
            // The client checks the bytes against the id.
            Ok(bytes) => return Ok(bytes),
            Err(e) => tracing::debug!(
                "fragment {}: the miner leaving it ({addr}) did not give it: {e}; rebuilding",
                plan.fragment_id
            ),
        }
    }
    let needed = plan.data_fragments;
    let mut got: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut failures = Vec::new();
    let mut next = 0;
    let mut running = tokio::task::JoinSet::new();
    let start = |running: &mut tokio::task::JoinSet<_>, next: &mut usize| {
        let (column, id, addr) = plan.siblings[*next].clone();
        *next += 1;
        let client = client.clone();
        let file_id = plan.file_id;
        running.spawn(async move {
            let result = client.read_fragment(&addr, file_id, id).await;
            (column, addr, result)
        });
    };
    while next < needed.min(plan.siblings.len()) {
        start(&mut running, &mut next);
    }
    while let Some(joined) = running.join_next().await {
        let Ok((column, addr, result)) = joined else {
            continue;
        };
        match result {
            Ok(bytes) => {
                got.insert(column, bytes);
                if got.len() == needed {
                    break;
                }
            }
            Err(e) => {
                failures.push(format!("column {column} from {addr}: {e}"));
                if next < plan.siblings.len() {
                    start(&mut running, &mut next);
                }
            }
        }
    }
    running.abort_all();
    if got.len() < needed {
        return Err(RestoreError::TooFew {
            got: got.len(),
            needed,
            failures: failures.join("; "),
        });
    }
    let (manifest, segment, column) = (plan.manifest.clone(), plan.segment, plan.column);
    let rebuilt = tokio::task::spawn_blocking(move || {
        let source = Fetched(got);
        codec::repair_segment(&manifest, segment, &source, &[column])
    })
    .await
    .map_err(|e| RestoreError::Task(e.to_string()))?
    .map_err(RestoreError::Decode)?;
    let (_, bytes) = rebuilt.into_iter().next().expect("one fragment asked");
    // `repair_segment` checked the whole segment against its id; the fragment's own id is
    // checked again here, where it is about to be stored.
    assert_eq!(
        FragmentId::of(&bytes),
        plan.fragment_id,
        "a repaired fragment matches its id"
    );
    Ok(bytes)
}

/// Fragments fetched for one segment, by column.
struct Fetched(HashMap<usize, Vec<u8>>);

impl FragmentSource for Fetched {
    fn fetch(
        &self,
        _segment: u64,
        index: usize,
        _id: &FragmentId,
        buf: &mut [u8],
    ) -> Result<bool, CodecError> {
        match self.0.get(&index) {
            Some(bytes) if bytes.len() == buf.len() => {
                buf.copy_from_slice(bytes);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// What reading a fragment back found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Good,
    /// Its bytes are wrong (a block failed its checksum, the whole is not its id) or gone:
    /// dropped and rebuilt.
    Bad(String),
    /// Its bytes are right but its kept tags do not prove them: asked of a tagger again.
    BadTags(String),
    /// The store itself failed (closed, poisoned, an I/O error): nothing is concluded
    /// about the fragment, and the check stops.
    StoreFault(String),
}

/// Reads fragment `id` of `len_bytes` back from the store: each block checked against its
/// checksum by the engine, the whole against its id here; with `tagger`, its kept tags are
/// checked against the bytes as a proof's verification would (random coefficients, the
/// tagger's public key from the chain).
pub async fn check_fragment(
    engine: &crate::EngineStore,
    id: FragmentId,
    len_bytes: u64,
    tagger: Option<cess_proofs::PublicKey>,
) -> Checked {
    use cess_engine::StoreError;
    let data = match engine.0.read(id, 0, len_bytes).await {
        Ok(data) => data.to_vec(),
        Err(e @ (StoreError::Corrupt { .. } | StoreError::NotFound(_))) => {
            return Checked::Bad(e.to_string());
        }
        Err(e) => return Checked::StoreFault(e.to_string()),
    };
    if FragmentId::of(&data) != id {
        return Checked::Bad("its bytes do not hash to its id".into());
    }
    let Some(public) = tagger else {
        return Checked::Good;
    };
    let blob = match engine.0.meta(id).await {
        Ok(blob) => blob,
        Err(e) => return Checked::StoreFault(e.to_string()),
    };
    let checked = tokio::task::spawn_blocking(move || {
        cess_proofs::check_tags(
            &public,
            &id,
            &data,
            &blob,
            rand::random(),
            &cess_proofs::CpuBackend,
        )
    })
    .await;
    match checked {
        Ok(Ok(_)) => Checked::Good,
        Ok(Err(e)) => Checked::BadTags(format!("its tags do not prove it: {e}")),
        Err(e) => Checked::StoreFault(format!("the check task failed: {e}")),
    }
}
