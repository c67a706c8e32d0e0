//! `cess put | get | delete` through the ledger: the chain decides where a file lives.
//!
//! The first pass encodes the file to learn every fragment id (the order must name every one
//! before any miner takes a byte); then the put rents space when the owner's lease is short,
//! declares the order and reads the columns the ledger placed from a committed block. Then it
//! sends fragment j of every segment to the miner of column j (many in flight, bytes in flight
//! bounded), checking every id against the order, and waits until every miner has reported
//! its column: the file is Active. The first pass keeps the fragments in memory when they fit
//! [`SPOOL_BYTES_MAX`] (a quarter of the memory available, at most 2 GiB) and the send reads
//! them from there; a larger file is encoded a second time as it is sent. Nothing is spooled
//! to disk (a spool is written and read once more, on the same disk as the miners' stores:
//! measured slower than encoding twice), and the encoding is deterministic for a key file:
//! re-running the same put finds its order on the ledger and sends only what is missing.
//!
//! A get needs only the file id and the key: the length, the segment and fragment ids, the
//! client header (what the manifest held besides the ids, `Call::DeclareFile::meta`) and the
//! miners' endpoints are all read from this client's own replica of the ledger.

use crate::chain::ChainClient;
use crate::codec_cmd::{self, KeyChoice, Meter};
use crate::transfer::{CopyPool, GetReport, Placement};
use anyhow::{Context, Result, bail};
use cess_codec::{
    self as codec, CodecError, CodecParams, EncodeOptions, FragmentId, FragmentSink, Id, Manifest,
};
use cess_consensus::ledger::{FileInfo, FileState, GIB, Ledger};
use cess_consensus::tx::{NAME_BYTES_MAX, SegmentDecl};
use cess_consensus::{AccountId, Call, TxError};
use cess_transport::{Client, Code, NodeAddr, ProtocolError};
use std::collections::HashSet;
use std::io::Read;
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
/// The most fragment bytes a put keeps in memory between its passes.
const SPOOL_BYTES_MAX: u64 = 2 << 30;

/// Fragment bytes the first pass may keep in memory: a quarter of what the system says is
/// available, at most [`SPOOL_BYTES_MAX`].
fn spool_budget_bytes() -> u64 {
    let available_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    (available_kib.saturating_mul(1024) / 4).min(SPOOL_BYTES_MAX)
}

/// Where a put reads the file: one file, or the parts of a multipart upload back to back.
#[derive(Debug, Clone)]
pub enum Input {
    File(PathBuf),
    Parts(Vec<PathBuf>),
}

impl Input {
    /// A reader over the whole input and its length. Each pass of a put opens it anew.
    fn open(&self) -> Result<(Box<dyn Read + Send>, u64)> {
        let mut reader: Box<dyn Read + Send> = Box::new(std::io::empty());
        let mut total_bytes = 0u64;
        for path in self.paths().iter().rev() {
            let (file, len) = open_input(path)?;
            reader = Box::new(file.take(len).chain(reader));
            total_bytes += len;
        }
        Ok((reader, total_bytes))
    }

    fn paths(&self) -> &[PathBuf] {
        match self {
            Input::File(path) => std::slice::from_ref(path),
            Input::Parts(paths) => paths,
        }
    }
}

/// What a put stores, under which name, for whom, and with how much memory.
#[derive(Debug, Clone)]
pub struct Upload {
    pub input: Input,
    /// The owner's name for the file (at most [`NAME_BYTES_MAX`] bytes).
    pub name: String,
    /// The owner's bucket to list it in; empty for none.
    pub bucket: String,
    /// The owner a delegate puts for (`Call::ForOwner`, the owner's space); `None`: the
    /// signer, who rents space when its lease is short.
    pub for_owner: Option<AccountId>,
    /// Fragment bytes kept in memory between the passes at most (more: encode twice).
    pub spool_bytes_max: u64,
    /// Fragment MiB in flight to the miners at most.
    pub in_flight_mib: u32,
}

impl Upload {
    /// `cess put FILE`: the file's own name, no bucket, the signer's space, the memory the
    /// system has to spare.
    pub fn file(path: &Path) -> Upload {
        let mut name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        while name.len() > NAME_BYTES_MAX {
            name.pop();
        }
        Upload {
            input: Input::File(path.to_path_buf()),
            name,
            bucket: String::new(),
            for_owner: None,
            spool_bytes_max: spool_budget_bytes(),
            in_flight_mib: IN_FLIGHT_MIB,
        }
    }
}

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

/// The miners' endpoints for every fragment of `file`, as the ledger has them.
pub(crate) fn placement(ledger: &Ledger, file: &FileInfo) -> Placement {
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

/// Stores `upload` on the miners the chain places it on, and waits until it is Active.
pub fn put(
    handle: &Handle,
    chain: &ChainClient,
    client: Arc<Client>,
    upload: &Upload,
    key: &KeyChoice,
    params: CodecParams,
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
    // One set of options for both passes: a passphrase's salt is drawn once.
    let options = codec_cmd::encode_options(key, params)?;
    let started = Instant::now();
    let (manifest, spool) = stage("encode", fragment_ids(upload, &options))?;
    let encode = started.elapsed();
    let file_id = manifest.file_id;
    let started = Instant::now();
    stage("order", handle.block_on(order(chain, upload, &manifest)))?;
    let order_time = started.elapsed();
    let started = Instant::now();
    let (sent_bytes, miners) = stage(
        "send",
        send(handle, chain, client, upload, &options, &manifest, spool),
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
}

fn open_input(file: &Path) -> Result<(std::fs::File, u64)> {
    let input = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let file_bytes = input
        .metadata()
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    Ok((input, file_bytes))
}

/// The fragments of the first pass, by segment and column, when they fit in memory.
type Spool = Vec<Vec<Vec<u8>>>;

/// Keeps every fragment (a spool), or none: the first pass then wants only the manifest.
struct FirstPass {
    spool: Option<Spool>,
}

impl FragmentSink for FirstPass {
    fn fragment(
        &mut self,
        s: u64,
        j: usize,
        _: &FragmentId,
        bytes: &[u8],
    ) -> Result<(), CodecError> {
        if let Some(spool) = &mut self.spool {
            let s = s as usize;
            if spool.len() <= s {
                spool.resize_with(s + 1, Vec::new);
            }
            let columns = &mut spool[s];
            if columns.len() <= j {
                columns.resize_with(j + 1, Vec::new);
            }
            columns[j] = bytes.to_vec();
        }
        Ok(())
    }
}

/// The first pass: the manifest (every fragment id), refusing a file whose fragment ids
/// repeat, and the fragments themselves when they fit the spool budget.
fn fragment_ids(upload: &Upload, options: &EncodeOptions) -> Result<(Manifest, Option<Spool>)> {
    let (mut input, file_bytes) = upload.input.open()?;
    let params = options.params;
    let fragment_total_bytes = params
        .segment_count(file_bytes, options.key.is_some())
        .saturating_mul(params.shard_count() as u64)
        .saturating_mul(params.fragment_bytes() as u64);
    let mut sink = FirstPass {
        spool: (fragment_total_bytes <= upload.spool_bytes_max).then(Vec::new),
    };
    let mut meter = Meter::new("encode", file_bytes);
    let encoded = codec::encode(&mut input, file_bytes, options, &mut sink, &mut |done| {
        meter.update(done)
    });
    meter.finish();
    let manifest = encoded?;
    let mut seen = HashSet::new();
    if !manifest
        .segments
        .iter()
        .flat_map(|s| &s.fragments)
        .all(|f| seen.insert(*f))
    {
        let boundary = options.params.fragment_bytes();
        let boundary = match boundary {
            b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
            b if b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
            b => format!("{b}-byte"),
        };
        bail!(
            "two of the file's fragments are byte-identical (its content repeats at a \
             {boundary} boundary), and a fragment id names one place on the ledger; encrypt it \
             (--key) to make every fragment distinct"
        );
    }
    Ok((manifest, sink.spool))
}

/// Rents what the order needs and declares it, unless the owner already owns the file. A
/// delegate's put uses its owner's lease and never rents: the owner's money is the owner's.
async fn order(chain: &ChainClient, upload: &Upload, manifest: &Manifest) -> Result<()> {
    let me = upload.for_owner.unwrap_or_else(|| chain.account.id());
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
    if let Some(owner) = upload.for_owner
        && (add_gib > 0 || add_blocks > 0)
    {
        let free_bytes = lease.map_or(0, |l| l.free_bytes());
        bail!(
            "the owner {owner} has {free_bytes} bytes of rented space free (its lease ends at \
             height {}); this file needs {needed_bytes} and {LEASE_MARGIN_BLOCKS} blocks of \
             lease left: the owner rents more (`cess rent`)",
            lease.map_or(0, |l| l.until)
        );
    }
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
    let call = Call::DeclareFile {
        file_id: manifest.file_id,
        file_name: upload.name.clone(),
        bucket: upload.bucket.clone(),
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
    let call = match upload.for_owner {
        Some(owner) => Call::ForOwner {
            owner,
            call: Box::new(call),
        },
        None => call,
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

/// Where each fragment of the second pass goes.
struct PlacedSink {
    handle: Handle,
    client: Arc<Client>,
    file_id: Id,
    /// Segment → column → (the id the order names, its miner; `None`: already stored).
    targets: Vec<Vec<(FragmentId, Option<NodeAddr>)>>,
    copies: CopyPool,
    budget: Arc<tokio::sync::Semaphore>,
    sent: Arc<AtomicU64>,
    running: tokio::task::JoinSet<Result<(), String>>,
    failures: Vec<String>,
    in_flight_mib: u32,
    /// The file no longer encodes to the ids its order names: stop.
    changed: Option<String>,
}

impl PlacedSink {
    fn reap(&mut self, joined: Result<Result<(), String>, tokio::task::JoinError>) {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.failures.push(e),
            Err(e) => self.failures.push(format!("a send task failed: {e}")),
        }
    }

    fn stop(&mut self, message: String) -> CodecError {
        self.changed = Some(message.clone());
        CodecError::Io {
            action: "sending fragments".into(),
            source: std::io::Error::other(message),
        }
    }
}

impl FragmentSink for PlacedSink {
    fn fragment(
        &mut self,
        s: u64,
        j: usize,
        id: &FragmentId,
        bytes: &[u8],
    ) -> Result<(), CodecError> {
        if let Some(e) = self.changed.clone() {
            return Err(self.stop(e));
        }
        let Some((expected, node)) = self.targets.get(s as usize).and_then(|c| c.get(j)).cloned()
        else {
            return Err(self.stop(format!("segment {s} column {j} is not in the order")));
        };
        if expected != *id {
            return Err(self.stop(format!(
                "segment {s} column {j} encodes to {} now, the order names {}: the file \
                 changed while it was put",
                id.to_hex(),
                expected.to_hex()
            )));
        }
        let Some(node) = node else {
            return Ok(());
        };
        let mib = (bytes.len().div_ceil(1 << 20) as u32).clamp(1, self.in_flight_mib);
        // Reap what finished; while the budget is short the encoder waits here.
        while let Some(joined) = self.running.try_join_next() {
            self.reap(joined);
        }
        while self.budget.available_permits() < mib as usize {
            let Some(joined) = self.handle.block_on(self.running.join_next()) else {
                break;
            };
            self.reap(joined);
        }
        let permit = self
            .handle
            .block_on(self.budget.clone().acquire_many_owned(mib))
            .expect("the budget is never closed");
        let data = self.copies.copy(bytes);
        let (client, sent, file_id, id) =
            (self.client.clone(), self.sent.clone(), self.file_id, *id);
        self.running.spawn_on(
            async move {
                let _permit = permit;
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
            },
            &self.handle,
        );
        Ok(())
    }
}

/// The second pass: sends every fragment not yet reported stored to the miner the ledger
/// placed it on, from the spool when the first pass kept one, else encoding `file` again:
/// (bytes sent, distinct miners).
fn send(
    handle: &Handle,
    chain: &ChainClient,
    client: Arc<Client>,
    upload: &Upload,
    options: &EncodeOptions,
    manifest: &Manifest,
    spool: Option<Spool>,
) -> Result<(u64, usize)> {
    let (info, placement) = chain.ledger(|l| {
        let info = l.file(&manifest.file_id).cloned();
        let placement = info.as_ref().map(|f| placement(l, f));
        (info, placement)
    });
    let (Some(info), Some(placement)) = (info, placement) else {
        bail!("the order is not on the ledger");
    };
    let miners: HashSet<String> = placement
        .iter()
        .flatten()
        .flatten()
        .map(|a| a.to_string())
        .collect();
    let mut targets = Vec::with_capacity(info.segments.len());
    let mut todo_fragments = 0u64;
    for (s, segment) in info.segments.iter().enumerate() {
        let mut columns = Vec::with_capacity(segment.fragments.len());
        for (j, fragment) in segment.fragments.iter().enumerate() {
            if fragment.stored {
                columns.push((fragment.id, None));
                continue;
            }
            let Some(node) = placement[s][j].clone() else {
                bail!(
                    "segment {s} column {j}: its miner has no endpoint that parses on the ledger"
                );
            };
            todo_fragments += 1;
            columns.push((fragment.id, Some(node)));
        }
        targets.push(columns);
    }
    let mut sink = PlacedSink {
        handle: handle.clone(),
        client,
        file_id: manifest.file_id,
        targets,
        copies: CopyPool::new((upload.in_flight_mib as usize) << 20),
        budget: Arc::new(tokio::sync::Semaphore::new(upload.in_flight_mib as usize)),
        in_flight_mib: upload.in_flight_mib,
        sent: Arc::new(AtomicU64::new(0)),
        running: tokio::task::JoinSet::new(),
        failures: Vec::new(),
        changed: None,
    };
    let mut meter = Meter::new("send", todo_fragments * info.fragment_bytes);
    let sent = sink.sent.clone();
    let encoded = match spool {
        Some(spool) => (|| {
            for (s, columns) in spool.iter().enumerate() {
                for (j, bytes) in columns.iter().enumerate() {
                    let id = manifest.segments[s].fragments[j];
                    sink.fragment(s as u64, j, &id, bytes)?;
                    meter.update(sent.load(Ordering::Relaxed));
                }
            }
            Ok(())
        })(),
        None => {
            let (mut input, file_bytes) = upload.input.open()?;
            codec::encode(&mut input, file_bytes, options, &mut sink, &mut |_| {
                meter.update(sent.load(Ordering::Relaxed))
            })
            .map(|_| ())
        }
    };
    // Wait for every fragment in flight, whatever happened.
    while let Some(joined) = handle.block_on(sink.running.join_next()) {
        sink.reap(joined);
        meter.update(sent.load(Ordering::Relaxed));
    }
    meter.finish();
    if let Some(e) = sink.changed.take() {
        bail!(e);
    }
    encoded?;
    if !sink.failures.is_empty() {
        bail!(
            "{} of the fragments were not stored (re-run the put to send only those):\n  {}",
            sink.failures.len(),
            sink.failures
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

/// An account named by its id (64 hex digits) or its PeerId.
pub fn parse_account(text: &str) -> Result<cess_consensus::AccountId> {
    match parse_file_id(text) {
        Ok(bytes) => Ok(cess_consensus::AccountId(bytes)),
        Err(_) => {
            let peer: cess_transport::PeerId = text.parse().with_context(|| {
                format!("an account is an id (64 hex digits) or a PeerId, got {text:?}")
            })?;
            cess_consensus::net::account_of(&peer)
                .with_context(|| format!("{peer} is not an Ed25519 account key"))
        }
    }
}

fn parse_file_id(text: &str) -> Result<Id> {
    cess_types::parse_hex32(text)
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
        l.file(&id).map(|f| {
            (
                f.state,
                f.meta.clone(),
                cess_node::restore::segment_entries(f),
                placement(l, f),
            )
        })
    });
    let Some((state, header, segments, placement)) = found else {
        bail!("no file {file_id} on the chain");
    };
    match state {
        FileState::Pending => {
            bail!("file {file_id} is still pending: not every miner has reported its column")
        }
        FileState::Lost { at } => bail!(
            "file {file_id} is lost (since height {at}): too many of a segment's fragments \
             went unrebuilt; its owners can only delete it"
        ),
        // In recovery the holders left still give any 4 of each segment.
        FileState::Active | FileState::Recovery { .. } => {}
    }
    let manifest = Manifest::from_header(&header, &segments)
        .context("the file's header on the chain does not make a manifest")?;
    if manifest.file_id != id {
        bail!("the file's header on the chain names another file");
    }
    crate::transfer::get_placed(handle, client, manifest, placement, key, out)
}

/// Authorizes (or with `revoke` deauthorizes) `delegate`, an account id in hex or a PeerId,
/// to read the signer's files: the delegate's account and the height.
pub fn authorize(
    handle: &Handle,
    chain: &ChainClient,
    delegate: &str,
    revoke: bool,
) -> Result<(cess_consensus::AccountId, u64)> {
    let account = parse_account(delegate)?;
    let call = if revoke {
        Call::Deauthorize { delegate: account }
    } else {
        Call::Authorize { delegate: account }
    };
    let height = handle.block_on(chain.submit(call))?;
    Ok((account, height))
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
