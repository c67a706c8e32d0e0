//! `cess put | get | delete` through the ledger: the chain decides where a file lives.
//!
//! A put encodes the file once into a local spool (the order must name every fragment id
//! before any miner takes a byte), rents space when the owner's lease is short, declares the
//! order, reads the columns the ledger placed from a committed block, sends fragment j of every
//! segment to the miner of column j (many in flight, bytes in flight bounded), and waits until
//! every miner has reported its column: the file is Active. Re-running the same put (same
//! bytes, same key file) finds its order on the ledger and sends only what is missing.
//!
//! A get needs only the file id and the key: the length, the segment and fragment ids, the
//! client header (what the manifest held besides the ids, `Call::DeclareFile::meta`) and the
//! miners' endpoints are all read from this client's own replica of the ledger.

use crate::chain::ChainClient;
use crate::codec_cmd::{self, KeyChoice, Meter};
use crate::net::{GetReport, Placement};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use cess_consensus::ledger::{FileInfo, FileState, GIB, Ledger};
use cess_consensus::tx::{NAME_BYTES_MAX, SegmentDecl};
use cess_consensus::{Call, TxError};
use cess_engine::Key;
use cess_engine::codec::{self, CodecParams, DirFragments, Id, Manifest, SegmentEntry, hex};
use cess_transport::{Client, Code, NodeAddr, ProtocolError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Blocks a new lease runs (and an extension adds when the lease ends within
/// [`LEASE_MARGIN_BLOCKS`]).
pub const LEASE_BLOCKS: u64 = 100_000;
const LEASE_MARGIN_BLOCKS: u64 = 1_000;
/// How long a miner may take to learn of an order (its replica catches up) before a fragment
/// refused as unassigned counts as refused for good.
const ASSIGNMENT_WAIT: Duration = Duration::from_secs(30);
/// How long the miners have, once every fragment is sent, to report their columns.
const ACTIVE_WAIT: Duration = Duration::from_secs(120);
/// Fragment bytes in flight to the miners at once.
const IN_FLIGHT_MIB: u32 = 512;

/// What a put did, stage by stage.
#[derive(Debug)]
pub struct PutReport {
    pub file_id: Id,
    pub file_bytes: u64,
    /// Fragment bytes sent now (those already on their miner are not sent again).
    pub sent_bytes: u64,
    pub stored_bytes: u64,
    pub miners: usize,
    pub encode: Duration,
    pub order: Duration,
    pub send: Duration,
    pub active: Duration,
}

impl PutReport {
    pub fn elapsed(&self) -> Duration {
        self.encode + self.order + self.send + self.active
    }
}

/// A stage's failure says which stage.
fn stage<T>(name: &str, result: Result<T>) -> Result<T> {
    result.with_context(|| format!("put failed at the {name} stage"))
}

/// The ledger's segments of `file` as the codec lists them.
fn segment_entries(file: &FileInfo) -> Vec<SegmentEntry> {
    file.segments
        .iter()
        .map(|s| SegmentEntry {
            id: s.segment_id,
            fragments: s.fragments.iter().map(|f| f.id).collect(),
        })
        .collect()
}

/// The miners' endpoints for every fragment of `file`, as the ledger has them.
fn placement(ledger: &Ledger, file: &FileInfo) -> Placement {
    file.segments
        .iter()
        .map(|s| {
            s.fragments
                .iter()
                .map(|f| {
                    let miner = ledger.miner(f.miner.as_ref()?)?;
                    miner.endpoint.parse::<NodeAddr>().ok()
                })
                .collect()
        })
        .collect()
}

fn refused_as_unassigned(e: &ProtocolError) -> bool {
    match e {
        ProtocolError::Refused {
            code: Code::Unauthorized,
            ..
        } => true,
        ProtocolError::GaveUp { last, .. } => refused_as_unassigned(last),
        _ => false,
    }
}

/// Stores `file` on the miners the chain places it on, and waits until it is Active.
pub fn put(
    handle: &Handle,
    chain: &ChainClient,
    client: Arc<Client>,
    file: &Path,
    key: &KeyChoice,
    params: CodecParams,
    spool: &Path,
) -> Result<PutReport> {
    let (expected_data, expected_columns) =
        chain.ledger(|l| (l.params().data_fragments, l.params().fragments_per_segment));
    if params.data_shards != expected_data || params.shard_count() != usize::from(expected_columns)
    {
        bail!(
            "this chain stores {expected_data} + {} fragments per segment; the put asked for \
             {} + {}",
            expected_columns - expected_data,
            params.data_shards,
            params.parity_shards
        );
    }
    // Encode once into the spool: the order names every fragment id.
    let started = Instant::now();
    let (manifest, fragments) = stage("encode", encode_to_spool(file, key, params, spool))?;
    let encode = started.elapsed();
    let file_id = manifest.file_id;
    let result = (|| {
        let started = Instant::now();
        stage("order", handle.block_on(order(chain, file, &manifest)))?;
        let order_time = started.elapsed();
        let started = Instant::now();
        let (sent_bytes, miners) = stage(
            "send",
            handle.block_on(send(chain, client, &manifest, &fragments)),
        )?;
        let send_time = started.elapsed();
        let started = Instant::now();
        let stored_bytes = stage("active", handle.block_on(wait_active(chain, &file_id)))?;
        Ok(PutReport {
            file_id,
            file_bytes: manifest.file_bytes,
            sent_bytes,
            stored_bytes,
            miners,
            encode,
            order: order_time,
            send: send_time,
            active: started.elapsed(),
        })
    })();
    if result.is_ok() {
        // Every fragment is on its miner: the spool has done its job.
        let _ = std::fs::remove_dir_all(&fragments.dir);
    }
    result
}

fn encode_to_spool(
    file: &Path,
    key: &KeyChoice,
    params: CodecParams,
    spool: &Path,
) -> Result<(Manifest, DirFragments)> {
    let options = codec_cmd::encode_options(key, params)?;
    let mut input =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let file_bytes = input
        .metadata()
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let mut nonce = [0u8; 32];
    rand::fill(&mut nonce);
    let tmp = spool.join(format!(".encoding-{}", &hex(&nonce)[..16]));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut sink = DirFragments::new(&tmp);
    let mut meter = Meter::new("encode", file_bytes);
    let encoded = codec::encode(&mut input, file_bytes, &options, &mut sink, &mut |done| {
        meter.update(done)
    });
    meter.finish();
    let manifest = match encoded {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e.into());
        }
    };
    let mut seen = HashSet::new();
    if !manifest
        .segments
        .iter()
        .flat_map(|s| &s.fragments)
        .all(|f| seen.insert(*f))
    {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "the file repeats a whole segment's content, so two fragments share an id, which \
             an order cannot place twice; encrypt it (--key) to make every fragment distinct"
        );
    }
    let dir = spool.join(hex(&manifest.file_id));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok((manifest, DirFragments::new(dir)))
}

/// Rents what the order needs and declares it, unless the signer already owns the file.
async fn order(chain: &ChainClient, file: &Path, manifest: &Manifest) -> Result<()> {
    let me = chain.account.id();
    let fragment_bytes = manifest.params.fragment_bytes() as u64;
    let needed_bytes =
        manifest.segments.len() as u64 * manifest.params.shard_count() as u64 * fragment_bytes;
    let (owned, lease, height, taggers) = chain.ledger(|l| {
        (
            l.file(&manifest.file_id)
                .is_some_and(|f| f.owners.contains_key(&me)),
            l.lease(&me).copied(),
            l.height(),
            l.tagger_ids().copied().collect::<Vec<_>>(),
        )
    });
    if owned {
        return Ok(());
    }
    let Some(tagger) = taggers.first().copied() else {
        bail!("the chain has no tagger registered; an order names the tagger of its fragments");
    };
    let (add_gib, add_blocks) = match lease {
        None => (needed_bytes.div_ceil(GIB).max(1), LEASE_BLOCKS),
        Some(lease) => (
            needed_bytes
                .saturating_sub(lease.free_bytes())
                .div_ceil(GIB),
            if lease.until < height + LEASE_MARGIN_BLOCKS {
                LEASE_BLOCKS
            } else {
                0
            },
        ),
    };
    if add_gib > 0 || add_blocks > 0 {
        let add_gib = u32::try_from(add_gib).context("the order needs more space than a lease")?;
        let height = chain
            .submit(Call::RentSpace {
                add_gib,
                add_blocks,
            })
            .await?;
        eprintln!("rented {add_gib} GiB more for {add_blocks} more blocks (height {height})");
    }
    let mut file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    while file_name.len() > NAME_BYTES_MAX {
        file_name.pop();
    }
    let call = Call::DeclareFile {
        file_id: manifest.file_id,
        file_name,
        size_bytes: manifest.file_bytes,
        fragment_bytes,
        tagger,
        segments: manifest
            .segments
            .iter()
            .map(|s| SegmentDecl {
                segment_id: s.id,
                fragments: s.fragments.clone(),
            })
            .collect(),
        meta: manifest.header(),
    };
    match chain.submit(call).await {
        Ok(height) => {
            eprintln!("order declared at height {height}");
            Ok(())
        }
        Err(e) => {
            // Another put of the same file may have declared it meanwhile.
            if e.chain()
                .any(|c| c.to_string().contains(&TxError::AlreadyOwner.to_string()))
            {
                return Ok(());
            }
            Err(e)
        }
    }
}

/// Sends every fragment not yet reported stored to the miner the ledger placed it on:
/// (bytes sent, distinct miners).
async fn send(
    chain: &ChainClient,
    client: Arc<Client>,
    manifest: &Manifest,
    fragments: &DirFragments,
) -> Result<(u64, usize)> {
    let (file, placement) = chain.ledger(|l| {
        let file = l.file(&manifest.file_id).cloned();
        let placement = file.as_ref().map(|f| placement(l, f));
        (file, placement)
    });
    let (Some(file), Some(placement)) = (file, placement) else {
        bail!("the order is not on the ledger");
    };
    let miners: HashSet<String> = placement
        .iter()
        .flatten()
        .flatten()
        .map(|a| a.to_string())
        .collect();
    let mut todo = Vec::new();
    for (s, segment) in file.segments.iter().enumerate() {
        for (j, fragment) in segment.fragments.iter().enumerate() {
            if fragment.stored {
                continue;
            }
            let Some(node) = placement[s][j].clone() else {
                bail!(
                    "segment {s} column {j}: its miner has no endpoint that parses on the ledger"
                );
            };
            todo.push((s, j, fragment.id, node));
        }
    }
    let total = todo.len() as u64 * file.fragment_bytes;
    let budget = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MIB as usize));
    let mib = ((file.fragment_bytes.div_ceil(1 << 20)) as u32).clamp(1, IN_FLIGHT_MIB);
    let sent = Arc::new(AtomicU64::new(0));
    let mut running = tokio::task::JoinSet::new();
    let mut meter = Meter::new("send", total);
    let mut failures = Vec::new();
    let mut pending = todo.into_iter();
    loop {
        // Start what the budget allows, then reap one.
        while budget.available_permits() >= mib as usize {
            let Some((s, j, id, node)) = pending.next() else {
                break;
            };
            let permit = budget.clone().acquire_many_owned(mib).await.expect("open");
            let path = fragments.path_of(&id);
            let (client, sent, file_id) = (client.clone(), sent.clone(), manifest.file_id);
            running.spawn(async move {
                let _permit = permit;
                let read = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || std::fs::read(path)
                })
                .await
                .map_err(|e| format!("segment {s} column {j}: reading the spool: {e}"))?;
                let data = match read {
                    Ok(d) => Bytes::from(d),
                    Err(e) => {
                        return Err(format!(
                            "segment {s} column {j}: reading {}: {e}",
                            path.display()
                        ));
                    }
                };
                let len = data.len() as u64;
                let deadline = Instant::now() + ASSIGNMENT_WAIT;
                loop {
                    match client
                        .write_fragment(&node, file_id, id, data.clone())
                        .await
                    {
                        Ok(()) => {
                            sent.fetch_add(len, Ordering::Relaxed);
                            return Ok(());
                        }
                        // The miner's replica has not applied the order yet.
                        Err(e) if refused_as_unassigned(&e) && Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(format!("segment {s} column {j} to {node}: {e}")),
                    }
                }
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("a send task failed: {e}")),
        }
        meter.update(sent.load(Ordering::Relaxed));
    }
    meter.finish();
    if !failures.is_empty() {
        bail!(
            "{} of the fragments were not stored (re-run the put to send only those):\n  {}",
            failures.len(),
            failures
                .iter()
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    Ok((sent.load(Ordering::Relaxed), miners.len()))
}

/// Waits until every column is reported: the file's stored bytes.
async fn wait_active(chain: &ChainClient, file_id: &Id) -> Result<u64> {
    chain
        .wait_for(
            "every miner reporting its column",
            ACTIVE_WAIT,
            |l| match l.file(file_id) {
                Some(f) if f.state == FileState::Active => Some(Ok(f.stored_bytes())),
                Some(_) => None,
                None => Some(Err(())),
            },
        )
        .await?
        .map_err(|()| anyhow::anyhow!("the order left the ledger before it was complete"))
}

fn parse_file_id(text: &str) -> Result<Id> {
    Key::from_hex(text)
        .map(|k| k.0)
        .with_context(|| format!("a file id is 64 hex digits, got {text:?}"))
}

/// Fetches the file `file_id` into `out`, everything but the key read from the ledger.
pub fn get(
    handle: &Handle,
    chain: &ChainClient,
    client: Arc<Client>,
    file_id: &str,
    key: &KeyChoice,
    out: &Path,
) -> Result<GetReport> {
    let id = parse_file_id(file_id)?;
    let found = chain.ledger(|l| {
        l.file(&id)
            .map(|f| (f.state, f.meta.clone(), segment_entries(f), placement(l, f)))
    });
    let Some((state, header, segments, placement)) = found else {
        bail!("no file {file_id} on the chain");
    };
    if state != FileState::Active {
        bail!("file {file_id} is still pending: not every miner has reported its column");
    }
    let manifest = Manifest::from_header(&header, &segments)
        .context("the file's header on the chain does not make a manifest")?;
    if manifest.file_id != id {
        bail!("the file's header on the chain names another file");
    }
    crate::net::get_placed(handle, client, manifest, placement, key, out)
}

/// Removes the signer as an owner of `file_id`: the height, and whether that was the last
/// owner (the miners then delete the fragments on their own).
pub fn delete(handle: &Handle, chain: &ChainClient, file_id: &str) -> Result<(u64, bool)> {
    let id = parse_file_id(file_id)?;
    let me = chain.account.id();
    match chain.ledger(|l| l.file(&id).map(|f| f.owners.contains_key(&me))) {
        None => bail!("no file {file_id} on the chain"),
        Some(false) => bail!("this account does not own file {file_id}"),
        Some(true) => {}
    }
    let height = handle.block_on(chain.submit(Call::DeleteFile { file_id: id }))?;
    let gone = chain.ledger(|l| l.file(&id).is_none());
    Ok((height, gone))
}

/// The spool of a network directory.
pub fn spool_dir(devnet: &Path) -> PathBuf {
    devnet.join("spool")
}
