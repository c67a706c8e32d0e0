//! The driver of the node's idle space (the decisions are `idle.rs`'s): idle files generated
//! on every core straight into the engine as `Class::Idle` fragments (no temporary copy on a
//! file system), commit and space proofs made and handed to the submitter, and room made for
//! user data with the engine's `replace_idle` (the user fragment written and the idle file
//! deleted in one step that never loses both).

use crate::chain::{ChainLink, LinkStatus};
use crate::engine_store::EngineStore;
use crate::idle::idle_meta;
use cess_consensus::Call;
use cess_engine::{BLOCK_BYTES, Class, FragmentId};
use cess_proofs::pois::{Graph, PoisParams, generate_set, prove_commit, prove_space};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The graph of the chain's parameters, built once (64 MiB and a few seconds for the network's).
fn graph(params: &PoisParams) -> Arc<Graph> {
    static GRAPH: Mutex<Option<Arc<Graph>>> = Mutex::new(None);
    let mut cached = GRAPH.lock().expect("graph lock");
    match &*cached {
        Some(graph) if graph.params() == params => graph.clone(),
        _ => {
            let graph = Arc::new(Graph::new(params));
            *cached = Some(graph.clone());
            graph
        }
    }
}

/// Generates the set at `first` into the store and tells the core.
pub(crate) async fn generate(
    link: Arc<ChainLink>,
    engine: EngineStore,
    status: Arc<Mutex<LinkStatus>>,
    first: u64,
) {
    let me = link.me();
    let (params, owner) = link
        .follower()
        .with_ledger(|l| (l.params().pois, l.idle_replica_owner(&me)));
    let Some(owner) = owner else {
        // Not (or no longer) a miner: nothing to label for. The core asks again later.
        let height = link.follower().status().height;
        with_idle(&link, |idle| idle.on_generation_failed(height, first));
        return;
    };
    let started = std::time::Instant::now();
    let store = engine.0.clone();
    let made = tokio::task::spawn_blocking(move || {
        let graph = graph(&params);
        let mut done = Vec::new();
        let mut failed = None;
        // A set is one sequential computation: this thread, file after file.
        generate_set(&graph, &owner, first, |file| {
            if failed.is_some() {
                return;
            }
            let key = FragmentId::of(&file.bytes);
            let stored = store
                .put(key, Class::Idle, &file.bytes)
                .wait()
                .and_then(|_| store.set_meta(key, &idle_meta(file.index)).wait());
            match stored {
                Ok(()) => done.push((file.index, key, file.commitment.encode())),
                Err(e) => failed = Some(e.to_string()),
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(done),
        }
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match made {
        Ok(files) => {
            tracing::info!(
                "idle set {first}: {} files ({} bytes) generated and stored in {} ms",
                files.len(),
                params.set_bytes(),
                started.elapsed().as_millis()
            );
            status.lock().expect("status lock").idle_files_generated += files.len() as u64;
            let commitments = files.iter().map(|(_, _, c)| *c).collect();
            let files = files.into_iter().map(|(n, k, _)| (n, k)).collect();
            with_idle(&link, |idle| idle.on_generated(first, files, commitments));
        }
        Err(e) => {
            tracing::warn!("idle set {first}: generation failed (tried again later): {e}");
            let height = link.follower().status().height;
            with_idle(&link, |idle| idle.on_generation_failed(height, first));
        }
    }
}

/// Answers the commit challenge of the set at `first` (labelling its files again).
pub(crate) async fn prove_set(
    link: Arc<ChainLink>,
    calls: mpsc::UnboundedSender<Call>,
    status: Arc<Mutex<LinkStatus>>,
    first: u64,
) {
    let me = link.me();
    let (params, challenge, owner) = link.follower().with_ledger(|l| {
        (
            l.params().pois,
            l.idle_commit_challenge(&me, first),
            l.idle_replica_owner(&me),
        )
    });
    let (Some(challenge), Some(owner)) = (challenge, owner) else {
        return;
    };
    let proof = tokio::task::spawn_blocking(move || {
        prove_commit(&graph(&params), &owner, &challenge).encode()
    })
    .await;
    match proof {
        Ok(proof) => {
            tracing::info!(
                "idle set {first}: commit proof of {} bytes submitted",
                proof.len()
            );
            status.lock().expect("status lock").idle_commit_proofs += 1;
            let _ = calls.send(Call::ProveIdle {
                first_file: first,
                proof,
            });
        }
        Err(e) => tracing::warn!("idle set {first}: cannot prove its commitment: {e}"),
    }
}

/// Answers the space audit of `round` from the stored idle files of the set at `first`.
pub(crate) async fn prove_space_audit(
    link: Arc<ChainLink>,
    engine: EngineStore,
    calls: mpsc::UnboundedSender<Call>,
    status: Arc<Mutex<LinkStatus>>,
    round: u64,
    first: u64,
) {
    let me = link.me();
    let (params, challenge, live) = link.follower().with_ledger(|l| {
        let live: Vec<bool> = l
            .idle_sets(&me)
            .find(|(f, _)| *f == first)
            .map(|(_, set)| set.files.iter().map(|f| f.is_some()).collect())
            .unwrap_or_default();
        (l.params().pois, l.space_challenge(&me), live)
    });
    let Some((audit, challenge)) = challenge.filter(|(a, _)| a.round == round) else {
        return;
    };
    let keys: Vec<Option<FragmentId>> = {
        let core = link.core().lock().expect("core lock");
        live.iter()
            .enumerate()
            .map(|(offset, live)| {
                live.then(|| core.idle().files().get(&(first + offset as u64)).copied())
                    .flatten()
            })
            .collect()
    };
    if live.len() != usize::from(params.files_per_set)
        || keys.iter().zip(&live).any(|(k, live)| *live && k.is_none())
    {
        tracing::warn!(
            "space audit {round}: files of set {first} are missing from the store; asked again next block"
        );
        status.lock().expect("status lock").idle_space_failures += 1;
        with_idle(&link, |idle| idle.on_space_answer_failed(round));
        return;
    }
    let store = engine.0.clone();
    let proof = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let mut files = Vec::new();
        for key in &keys {
            files.push(match key {
                Some(key) => Some(
                    store
                        .read(*key, 0, params.file_bytes())
                        .wait()
                        .map_err(|e| e.to_string())?,
                ),
                None => None,
            });
        }
        let views: Vec<Option<&[u8]>> = files.iter().map(|f| f.as_deref()).collect();
        Ok(prove_space(&params, &challenge, &views).encode())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match proof {
        Ok(proof) => {
            tracing::info!(
                "space audit {round}: set {first} proven, {} blocks before the deadline",
                audit
                    .deadline
                    .saturating_sub(link.follower().status().height)
            );
            status.lock().expect("status lock").idle_space_proofs += 1;
            let _ = calls.send(Call::SubmitSpaceProof { round, proof });
        }
        Err(e) => {
            tracing::warn!("space audit {round}: cannot read set {first}: {e}");
            status.lock().expect("status lock").idle_space_failures += 1;
            with_idle(&link, |idle| idle.on_space_answer_failed(round));
        }
    }
}

/// Makes room for a user fragment of `len_bytes` when the store lacks it by giving up idle
/// files: deleted while more room is needed, and the last one replaced by the fragment itself
/// in one step. Returns true when the fragment was written here (by `replace_idle`).
pub(crate) async fn make_room(
    link: &ChainLink,
    engine: &EngineStore,
    id: FragmentId,
    data: &[u8],
) -> Result<bool, String> {
    // A node holding no idle file has nothing to give up: its writes pay no extra look-up.
    if with_idle(link, |idle| idle.files().is_empty()) {
        return Ok(false);
    }
    // A fragment already here (an upload resumed or repeated) needs no room: the engine's
    // put answers it without writing.
    if engine
        .0
        .contains(id)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(false);
    }
    let store = engine.0.clone();
    let free = tokio::task::spawn_blocking(move || store.stats())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .free_bytes;
    let me = link.me();
    let file_bytes = link
        .follower()
        .with_ledger(|l| l.params().pois.file_bytes());
    // The engine keeps one largest fragment free per shard from idle files (so a user write
    // always lands); a write that would eat into that reserve takes an idle file's place.
    let geometry = &engine.0.superblock().geometry;
    let reserve = u64::from(geometry.shard_count) * geometry.max_object_bytes;
    let needed = (data.len() as u64).div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64 + reserve;
    if free >= needed {
        return Ok(false);
    }
    let mut room = free;
    loop {
        let claimed = link
            .follower()
            .with_ledger(|l| with_idle(link, |idle| idle.claim_replaceable(l, &me)));
        let Some((number, key)) = claimed else {
            break;
        };
        let last = room + file_bytes >= needed;
        let done = if last {
            engine.0.replace_idle(key, id, data).await
        } else {
            engine.0.delete(key).await.map(|_| ())
        };
        match done {
            Ok(()) => with_idle(link, |idle| idle.on_replaced(number)),
            Err(e) => {
                with_idle(link, |idle| idle.on_replace_failed(number));
                return Err(e.to_string());
            }
        }
        if last {
            tracing::info!("idle file {number} replaced by fragment {}", id);
            return Ok(true);
        }
        room += file_bytes;
    }
    // Not enough idle space to give up: the write tries anyway and the engine answers.
    Ok(false)
}

/// `f` on the node core's idle half (the lock held for the call alone).
fn with_idle<R>(link: &ChainLink, f: impl FnOnce(&mut crate::idle::IdleCore) -> R) -> R {
    f(link.core().lock().expect("core lock").idle_mut())
}
