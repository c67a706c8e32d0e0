// Long file: one S3 operation per method of one trait, each a few lines over shared helpers.
//! The S3 operations on the network: [`Gateway`] implements `s3s::S3`.

use super::keys::KeyTable;
use super::{OBJECTS_DIR, STAGING_DIR};
use crate::chain::ChainClient;
use crate::codec_cmd::KeyChoice;
use crate::files::{Input, Upload};
use bytes::Bytes;
use cess_codec::{self as codec, CodecParams, Manifest, hex};
use cess_consensus::ledger::{FileInfo, FileState};
use cess_consensus::tx::{Hash32, NAME_BYTES_MAX};
use cess_consensus::{AccountId, Call};
use cess_transport::Client;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, TrailingHeaders, s3_error};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Handle;

/// MiB of a GET's output waiting for a slow client at most.
pub const GET_CHANNEL_CHUNKS: usize = 4;
const CHUNK_BYTES: usize = 1 << 20;
/// S3's smallest part (all but the last).
const PART_BYTES_MIN: u64 = 5 << 20;
const PARTS_MAX: i32 = 10_000;
/// Multipart uploads in progress per owner at most (each holds staging space).
const UPLOADS_PER_OWNER_MAX: usize = 64;
/// Keys a listing returns at most per page (S3's limit).
const LIST_KEYS_MAX: usize = 1000;

/// What a [`Gateway`] works with.
pub struct Inner {
    pub handle: Handle,
    pub account: AccountId,
    pub chain: ChainClient,
    pub client: Arc<Client>,
    pub keys: Arc<KeyTable>,
    pub dir: PathBuf,
    pub params: CodecParams,
    /// Turns for the heavy requests (PUT, GET, copy, complete).
    pub requests: Arc<tokio::sync::Semaphore>,
    pub spool_bytes_max: u64,
    pub in_flight_mib: u32,
    pub metrics: Arc<super::Metrics>,
    pub segments: SegmentCache,
    /// Turns for decoding a segment of a range read: one per core.
    pub decoders: tokio::sync::Semaphore,
    /// The multipart uploads (their staging directories) being completed: a completion runs
    /// to its end even when its client goes away, and a second one waits for it to end.
    pub completing: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
}

/// Decoded segments that concurrent range reads share: each is fetched and decoded once by
/// the first reader that needs it while the others wait for it, and at most `capacity` are
/// kept (oldest first out). A failed (or panicked) decode is not kept: the next reader tries
/// again. An entry is the plaintext of one reader identity ([`Reader`]: the owner, bucket and
/// name its key is derived from), never shared with another: any account may co-own a file
/// id on the ledger, and a co-owner's read must still need the key.
pub struct SegmentCache {
    capacity: usize,
    slots: std::sync::Mutex<std::collections::VecDeque<(Reader, u64, Arc<Slot>)>>,
}

/// Who reads a file: its id and the owner, bucket and name its key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    pub file_id: Hash32,
    pub owner: AccountId,
    pub bucket: String,
    pub name: String,
}

/// Fills a slot whose decode did not finish (it panicked) with an error and takes it out of
/// the cache, so its waiters wake and later readers decode again.
struct Unfinished<'a> {
    cache: &'a SegmentCache,
    slot: &'a Arc<Slot>,
    finished: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Ok(mut slots) = self.cache.slots.lock() {
            slots.retain(|(_, _, s)| !Arc::ptr_eq(s, self.slot));
        }
        if let Ok(mut done) = self.slot.done.lock() {
            *done = Some(Err("the segment's decode stopped".into()));
        }
        self.slot.ready.notify_all();
    }
}

#[derive(Default)]
struct Slot {
    done: std::sync::Mutex<Option<Result<Arc<Vec<u8>>, String>>>,
    ready: std::sync::Condvar,
}

impl SegmentCache {
    pub fn new(capacity: usize) -> SegmentCache {
        SegmentCache {
            capacity: capacity.max(1),
            slots: Default::default(),
        }
    }

    /// Segment `index` of the file `reader` reads, decoded by `decode` unless the same reader
    /// has it or is decoding it.
    pub fn get_or_decode(
        &self,
        reader: &Reader,
        index: u64,
        decode: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Arc<Vec<u8>>> {
        let (slot, mine) = {
            let mut slots = self.slots.lock().expect("cache lock");
            match slots.iter().find(|(r, i, _)| r == reader && *i == index) {
                Some((_, _, slot)) => (slot.clone(), false),
                None => {
                    let slot = Arc::new(Slot::default());
                    if slots.len() >= self.capacity {
                        slots.pop_front();
                    }
                    slots.push_back((reader.clone(), index, slot.clone()));
                    (slot, true)
                }
            }
        };
        if mine {
            let mut guard = Unfinished {
                cache: self,
                slot: &slot,
                finished: false,
            };
            let outcome = decode().map(Arc::new).map_err(|e| format!("{e:#}"));
            guard.finished = true;
            if outcome.is_err() {
                self.slots
                    .lock()
                    .expect("cache lock")
                    .retain(|(_, _, s)| !Arc::ptr_eq(s, &slot));
            }
            *slot.done.lock().expect("slot lock") = Some(outcome);
            slot.ready.notify_all();
        }
        let mut done = slot.done.lock().expect("slot lock");
        while done.is_none() {
            done = slot.ready.wait(done).expect("slot lock");
        }
        done.clone()
            .expect("checked above")
            .map_err(|e| anyhow::anyhow!(e))
    }
}

#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

impl Gateway {
    pub fn new(inner: Inner) -> Gateway {
        Gateway(Arc::new(inner))
    }

    pub fn turns_free(&self) -> usize {
        self.0.requests.available_permits()
    }

    pub fn chain_height(&self) -> u64 {
        self.0.chain.ledger(|l| l.height())
    }
}

/// What the gateway keeps of an object beside the ledger (`objects/<file id>.json`): S3's
/// ETag, its content type, when it was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ObjectMeta {
    etag: String,
    content_type: Option<String>,
    modified_unix_ms: u64,
}

/// An object as the ledger lists it.
#[derive(Debug, Clone)]
struct Found {
    file_id: Hash32,
    size_bytes: u64,
    since: u64,
    state: FileState,
}

/// A failure of the gateway's own (logged here, once: the client gets it as InternalError).
fn internal(e: impl std::fmt::Display) -> S3Error {
    eprintln!("gateway: {e:#}");
    s3_error!(InternalError, "{e:#}")
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn timestamp(unix_ms: u64) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms))
}

/// How many times a put is run before its failure is answered.
const PUT_ATTEMPTS: u32 = 2;

/// The S3 error that says what the ledger said, when it refused a call (none: the failure
/// was not a refusal).
fn chain_error_code(e: &anyhow::Error) -> Option<S3ErrorCode> {
    let text = format!("{e:#}");
    [
        (
            "already has this bucket",
            S3ErrorCode::BucketAlreadyOwnedByYou,
        ),
        ("no such bucket", S3ErrorCode::NoSuchBucket),
        ("bucket still lists", S3ErrorCode::BucketNotEmpty),
        ("bucket name", S3ErrorCode::InvalidBucketName),
        ("buckets", S3ErrorCode::TooManyBuckets),
        ("not a delegate", S3ErrorCode::AccessDenied),
        ("rented space", S3ErrorCode::AccessDenied),
        ("lease", S3ErrorCode::AccessDenied),
    ]
    .into_iter()
    .find(|(needle, _)| text.contains(needle))
    .map(|(_, code)| code)
}

/// The ledger's refusal of a bucket or object call as the S3 error that says the same; any
/// other failure is the gateway's own (logged here, once).
fn chain_error(e: anyhow::Error) -> S3Error {
    let text = format!("{e:#}");
    let code = chain_error_code(&e).unwrap_or(S3ErrorCode::InternalError);
    if code == S3ErrorCode::InternalError {
        eprintln!("gateway: {text}");
    }
    S3Error::with_message(code, text)
}

/// Streams a body to `path`: its length and MD5, checked against what the request declared
/// (its length, `Content-MD5`, S3 checksums in headers or trailers). On any error the file is
/// removed: a truncated or damaged upload leaves nothing behind.
struct Declared<'a> {
    content_length: Option<i64>,
    content_md5: Option<&'a str>,
    checksums: Checksums,
}

#[derive(Default, Clone)]
struct Checksums {
    crc32: Option<String>,
    crc32c: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
    crc64nvme: Option<String>,
}

impl Checksums {
    fn hasher(&self, algorithm: Option<&ChecksumAlgorithm>) -> s3s::checksum::ChecksumHasher {
        let mut h = s3s::checksum::ChecksumHasher::default();
        let named = algorithm.map(|a| a.as_str().to_ascii_uppercase());
        let wants =
            |given: &Option<String>, name: &str| given.is_some() || named.as_deref() == Some(name);
        if wants(&self.crc32, "CRC32") {
            h.crc32 = Some(Default::default());
        }
        if wants(&self.crc32c, "CRC32C") {
            h.crc32c = Some(Default::default());
        }
        if wants(&self.sha1, "SHA1") {
            h.sha1 = Some(Default::default());
        }
        if wants(&self.sha256, "SHA256") {
            h.sha256 = Some(Default::default());
        }
        if wants(&self.crc64nvme, "CRC64NVME") {
            h.crc64nvme = Some(Default::default());
        }
        h
    }

    /// Adds what the request's trailers carry (aws-chunked uploads send the checksum last).
    fn with_trailers(mut self, trailers: Option<&TrailingHeaders>) -> Checksums {
        let Some(headers) = trailers.and_then(|t| t.take()) else {
            return self;
        };
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.crc32 = get("x-amz-checksum-crc32").or(self.crc32);
        self.crc32c = get("x-amz-checksum-crc32c").or(self.crc32c);
        self.sha1 = get("x-amz-checksum-sha1").or(self.sha1);
        self.sha256 = get("x-amz-checksum-sha256").or(self.sha256);
        self.crc64nvme = get("x-amz-checksum-crc64nvme").or(self.crc64nvme);
        self
    }

    /// Each checksum the request gave against the one computed.
    fn check(&self, computed: &s3s::dto::Checksum) -> S3Result<()> {
        let pairs = [
            ("crc32", &self.crc32, &computed.checksum_crc32),
            ("crc32c", &self.crc32c, &computed.checksum_crc32c),
            ("sha1", &self.sha1, &computed.checksum_sha1),
            ("sha256", &self.sha256, &computed.checksum_sha256),
            ("crc64nvme", &self.crc64nvme, &computed.checksum_crc64nvme),
        ];
        for (name, given, computed) in pairs {
            if let Some(given) = given
                && Some(given) != computed.as_ref()
            {
                return Err(s3_error!(
                    BadDigest,
                    "the {name} checksum sent does not match the body"
                ));
            }
        }
        Ok(())
    }
}

/// Removes a staging file unless kept.
struct Staged {
    path: PathBuf,
    keep: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep {
            std::fs::remove_file(&self.path).ok();
        }
    }
}

async fn stage_body(
    body: Option<StreamingBlob>,
    path: &Path,
    declared: Declared<'_>,
    algorithm: Option<&ChecksumAlgorithm>,
    trailers: Option<&TrailingHeaders>,
    bytes_max: u64,
    received: &std::sync::atomic::AtomicU64,
) -> S3Result<(Staged, u64, [u8; 16], s3s::dto::Checksum)> {
    let staged = Staged {
        path: path.to_path_buf(),
        keep: false,
    };
    if let Some(len) = declared.content_length
        && u64::try_from(len).map_or(true, |l| l > bytes_max)
    {
        return Err(s3_error!(
            EntityTooLarge,
            "{len} bytes; this network takes at most {bytes_max} in one object"
        ));
    }
    let mut file = tokio::fs::File::create(path).await.map_err(internal)?;
    let mut md5 = Md5::new();
    let mut hasher = declared.checksums.hasher(algorithm);
    let mut len_bytes = 0u64;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| s3_error!(IncompleteBody, "the body ended early: {e}"))?;
            len_bytes += chunk.len() as u64;
            received.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if len_bytes > bytes_max {
                return Err(s3_error!(
                    EntityTooLarge,
                    "this network takes at most {bytes_max} bytes in one object"
                ));
            }
            md5.update(&chunk);
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(internal)?;
        }
    }
    file.flush().await.map_err(internal)?;
    drop(file);
    if let Some(len) = declared.content_length
        && len as u64 != len_bytes
    {
        return Err(s3_error!(
            IncompleteBody,
            "{len_bytes} bytes arrived of the {len} declared"
        ));
    }
    let digest: [u8; 16] = md5.finalize().into();
    if let Some(sent) = declared.content_md5 {
        use base64::Engine;
        let sent = base64::engine::general_purpose::STANDARD
            .decode(sent)
            .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
        if sent != digest {
            return Err(s3_error!(BadDigest, "Content-MD5 does not match the body"));
        }
    }
    let checksums = declared.checksums.clone().with_trailers(trailers);
    let computed = hasher.finalize();
    checksums.check(&computed)?;
    Ok((staged, len_bytes, digest, computed))
}

/// Sends what a blocking writer produces to a response body, a chunk at a time; a client that
/// went away stops the writer at its next chunk.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    metrics: Arc<super::Metrics>,
    handle: Handle,
}

/// How long a GET waits for its client to take the next chunk before it gives up (and its
/// turn): a client that stops reading holds no turn for ever.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK_BYTES - self.buf.len();
        let n = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == CHUNK_BYTES {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.metrics
            .sent_bytes
            .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        match self
            .handle
            .block_on(tokio::time::timeout(SEND_TIMEOUT, self.tx.send(Ok(chunk))))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::other("the client went away")),
            Err(_) => Err(std::io::Error::other(
                "the client took nothing for 60 s: the read is dropped",
            )),
        }
    }
}

/// Passes on `len` bytes after skipping `skip`: a byte range out of whole segments.
struct SliceWriter<W> {
    skip: u64,
    len: u64,
    inner: W,
}

impl<W: std::io::Write> std::io::Write for SliceWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let skipped = self.skip.min(bytes.len() as u64) as usize;
        self.skip -= skipped as u64;
        let rest = &bytes[skipped..];
        let take = self.len.min(rest.len() as u64) as usize;
        self.inner.write_all(&rest[..take])?;
        self.len -= take as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A response body fed by a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_util::Stream for ChannelBody {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Whether a file in `state` can be read: Active, or in recovery (its holders left still give
/// any 4 fragments of each segment); a pending or lost one is S3's `InvalidObjectState`, with
/// the reason.
fn readable(state: FileState) -> S3Result<()> {
    match state {
        FileState::Active | FileState::Recovery { .. } => Ok(()),
        FileState::Pending => Err(s3_error!(
            InvalidObjectState,
            "the object's file is not Active yet: not every miner has reported its column"
        )),
        FileState::Lost { at } => Err(s3_error!(
            InvalidObjectState,
            "the object's file was lost at height {at}: too many fragments of a segment went \
             unrebuilt"
        )),
    }
}

/// A listing's page size: S3's default and limit 1000, a negative one refused.
fn max_keys(asked: Option<i32>) -> S3Result<usize> {
    match asked {
        None => Ok(LIST_KEYS_MAX),
        Some(n) => usize::try_from(n)
            .map(|n| n.min(LIST_KEYS_MAX))
            .map_err(|_| s3_error!(InvalidArgument, "max-keys is not negative")),
    }
}

fn etag_of(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Gateway {
    /// The owner a request acts for: its access key's, if that owner still authorizes this
    /// gateway on the chain.
    fn owner<T>(&self, req: &S3Request<T>) -> S3Result<AccountId> {
        let Some(credentials) = &req.credentials else {
            return Err(s3_error!(AccessDenied, "every request is signed"));
        };
        let owner = self
            .0
            .keys
            .owner_of(&credentials.access_key)
            .ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
        if !self
            .0
            .chain
            .ledger(|l| l.is_delegate(&owner, &self.0.account))
        {
            return Err(s3_error!(
                AccessDenied,
                "owner {owner} has not authorized this gateway (`cess authorize {}`)",
                self.0.account
            ));
        }
        Ok(owner)
    }

    fn need_bucket(&self, owner: &AccountId, bucket: &str) -> S3Result<()> {
        if self.0.chain.ledger(|l| l.has_bucket(owner, bucket)) {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }

    /// Every object of `owner` in `bucket`, by name: the newest file listed under each name
    /// (the one an overwrite put last; an Active one before one still pending).
    fn objects(
        &self,
        owner: &AccountId,
        bucket: &str,
    ) -> std::collections::BTreeMap<String, Found> {
        self.0.chain.ledger(|l| {
            let mut out: std::collections::BTreeMap<String, Found> = Default::default();
            for (id, file) in l.files_of(owner) {
                let brief = &file.owners[owner];
                if brief.bucket != bucket {
                    continue;
                }
                let found = Found {
                    file_id: *id,
                    size_bytes: file.size_bytes,
                    since: brief.since,
                    state: file.state,
                };
                // A readable file before one pending or lost; the newest of those.
                let readable =
                    |f: &Found| matches!(f.state, FileState::Active | FileState::Recovery { .. });
                let rank = |f: &Found| (readable(f), f.since, f.file_id);
                match out.get(&brief.name) {
                    Some(current) if rank(current) >= rank(&found) => {}
                    _ => {
                        out.insert(brief.name.clone(), found);
                    }
                }
            }
            out
        })
    }

    fn find(&self, owner: &AccountId, bucket: &str, key: &str) -> S3Result<Found> {
        self.need_bucket(owner, bucket)?;
        self.objects(owner, bucket)
            .remove(key)
            .ok_or_else(|| s3_error!(NoSuchKey))
    }

    /// Every file of `owner` listed as `key` in `bucket`.
    fn listed_as(&self, owner: &AccountId, bucket: &str, key: &str) -> Vec<Hash32> {
        self.0.chain.ledger(|l| {
            l.files_of(owner)
                .filter(|(_, f)| f.owners[owner].bucket == bucket && f.owners[owner].name == key)
                .map(|(id, _)| *id)
                .collect()
        })
    }

    /// What the overwrite that stored `keep` replaced: the files listed under the same name
    /// since no later than it, but never one still pending (another put of the name, in
    /// flight: the later of the two replaces the earlier when it completes).
    fn replaced(&self, owner: &AccountId, bucket: &str, key: &str, keep: &Hash32) -> Vec<Hash32> {
        self.0.chain.ledger(|l| {
            let Some(since) = l
                .file(keep)
                .and_then(|f| f.owners.get(owner))
                .map(|o| o.since)
            else {
                return Vec::new();
            };
            l.files_of(owner)
                .filter(|(id, f)| {
                    let brief = &f.owners[owner];
                    *id != keep
                        && brief.bucket == bucket
                        && brief.name == key
                        && brief.since <= since
                        && f.state != FileState::Pending
                })
                .map(|(id, _)| *id)
                .collect()
        })
    }

    /// An owner's record of one of its objects: per owner, as any account may co-own a file
    /// id and must not see (or remove) another owner's ETag and content type.
    fn meta_path(&self, owner: &AccountId, file_id: &Hash32) -> PathBuf {
        self.0
            .dir
            .join(OBJECTS_DIR)
            .join(owner.to_string())
            .join(format!("{}.json", hex(file_id)))
    }

    /// The object's S3 metadata; an object whose gateway record is gone (another gateway
    /// put it, or the directory was lost) gets an ETag from its file id.
    fn meta(&self, owner: &AccountId, found: &Found) -> ObjectMeta {
        std::fs::read(self.meta_path(owner, &found.file_id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| ObjectMeta {
                etag: hex(&found.file_id)[..32].to_string(),
                content_type: None,
                modified_unix_ms: 0,
            })
    }

    fn save_meta(&self, owner: &AccountId, file_id: &Hash32, meta: &ObjectMeta) -> S3Result<()> {
        let path = self.meta_path(owner, file_id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(internal)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(meta).map_err(internal)?).map_err(internal)?;
        std::fs::rename(&tmp, &path).map_err(internal)
    }

    fn staging(&self, name: &str) -> PathBuf {
        self.0.dir.join(STAGING_DIR).join(name)
    }

    fn fresh_id() -> String {
        let mut id = [0u8; 16];
        rand::fill(&mut id);
        etag_of(&id)
    }

    /// The most bytes one object may hold: what one storage order carries.
    fn object_bytes_max(&self) -> u64 {
        cess_consensus::tx::SEGMENTS_PER_ORDER_MAX as u64 * self.0.params.payload_bytes(true)
    }

    /// The most bytes a body may bring to staging for `owner`: one object, and no more than
    /// the owner's free rented space takes (three fragment bytes per object byte), so a
    /// client cannot fill the gateway's disk with what the owner could never store.
    fn staging_bytes_max(&self, owner: &AccountId) -> S3Result<u64> {
        let height_free = self.0.chain.ledger(|l| {
            l.lease(owner)
                .map(|lease| (l.height() <= lease.until, lease.free_bytes()))
        });
        let free_bytes = match height_free {
            Some((true, free)) => free,
            _ => {
                return Err(s3_error!(
                    AccessDenied,
                    "owner {owner} has no lease running: it rents space first (`cess rent`)"
                ));
            }
        };
        let params = self.0.params;
        let stored_per_byte = params.shard_count() as u64 / u64::from(params.data_shards);
        Ok(self
            .object_bytes_max()
            .min(free_bytes / stored_per_byte.max(1)))
    }

    fn check_key(key: &str) -> S3Result<()> {
        if key.is_empty() {
            return Err(s3_error!(InvalidArgument, "an object needs a name"));
        }
        if key.len() > NAME_BYTES_MAX {
            return Err(s3_error!(
                KeyTooLongError,
                "object names on this network are at most {NAME_BYTES_MAX} bytes"
            ));
        }
        Ok(())
    }

    /// Puts `input` as `owner`'s object `key` in `bucket`, waits until it is Active, records
    /// its metadata, and drops the files it replaced: the file id.
    async fn store(
        &self,
        owner: AccountId,
        bucket: &str,
        key: &str,
        input: Input,
        meta: ObjectMeta,
    ) -> S3Result<Hash32> {
        let upload = Upload {
            input,
            name: key.to_string(),
            bucket: bucket.to_string(),
            for_owner: Some(owner),
            spool_bytes_max: self.0.spool_bytes_max,
            in_flight_mib: self.0.in_flight_mib,
        };
        let started = std::time::Instant::now();
        let mut attempt = 1;
        let report = loop {
            let (gateway, upload) = (self.clone(), upload.clone());
            let choice = KeyChoice {
                given: Some(self.0.keys.master().object_key(&owner, bucket, key)),
                ..KeyChoice::default()
            };
            let outcome = tokio::task::spawn_blocking(move || {
                let inner = &gateway.0;
                crate::files::put(
                    &inner.handle,
                    &inner.chain,
                    inner.client.clone(),
                    &upload,
                    &choice,
                    inner.params,
                )
            })
            .await
            .map_err(internal)?;
            match outcome {
                Ok(report) => break report,
                // A put stopped by something passing (a miner's replica behind the order, a
                // validator restarting) is run again once: the order is on the ledger and
                // only what is missing is sent. A refusal by the ledger is answered at once.
                Err(e) if attempt < PUT_ATTEMPTS && chain_error_code(&e).is_none() => {
                    eprintln!("gateway: put {bucket}/{key} failed, trying again: {e:#}");
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) => return Err(chain_error(e)),
            }
        };
        self.0
            .metrics
            .objects_stored
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "gateway: put {bucket}/{key}: {} bytes, file {}, Active in {:.1} s",
            report.file_bytes,
            hex(&report.file_id),
            started.elapsed().as_secs_f64()
        );
        self.save_meta(&owner, &report.file_id, &meta)?;
        for old in self.replaced(&owner, bucket, key, &report.file_id) {
            let call = Call::ForOwner {
                owner,
                call: Box::new(Call::DeleteFile { file_id: old }),
            };
            match self.0.chain.submit(call).await {
                Ok(_) => {
                    std::fs::remove_file(self.meta_path(&owner, &old)).ok();
                }
                // The new object is stored; the old file stays listed behind it until the
                // next overwrite or delete of the name removes it.
                Err(e) => eprintln!("gateway: dropping the replaced file {}: {e:#}", hex(&old)),
            }
        }
        Ok(report.file_id)
    }

    /// Reads `found`'s bytes `range` into `out` on a blocking thread: only the segments the
    /// range covers are fetched, each checked before its bytes go out.
    fn read(
        &self,
        owner: AccountId,
        bucket: &str,
        key: &str,
        found: &Found,
        range: std::ops::Range<u64>,
        out: Box<dyn std::io::Write + Send>,
    ) -> S3Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
        readable(found.state)?;
        let file_id = found.file_id;
        let located = self.0.chain.ledger(|l| {
            l.file(&file_id).map(|f: &FileInfo| {
                (
                    f.meta.clone(),
                    cess_node::restore::segment_entries(f),
                    crate::files::placement(l, f),
                )
            })
        });
        let Some((header, segments, placement)) = located else {
            return Err(s3_error!(NoSuchKey));
        };
        let manifest = Manifest::from_header(&header, &segments).map_err(internal)?;
        if manifest.file_id != file_id {
            return Err(internal(
                "the file's header on the chain names another file",
            ));
        }
        let file_key = self.0.keys.master().object_key(&owner, bucket, key);
        let encrypted = manifest.encryption.is_some();
        let payload = manifest.params.payload_bytes(encrypted);
        let count = manifest.segments.len() as u64;
        let (first, end) = if range.is_empty() {
            (0, 0)
        } else {
            (
                range.start / payload,
                ((range.end - 1) / payload + 1).min(count),
            )
        };
        let (first_offset, _) = codec::segment_span(&manifest, encrypted, first);
        let mut out = SliceWriter {
            skip: range.start - first_offset,
            len: range.end - range.start,
            inner: out,
        };
        let gateway = self.clone();
        let whole = range.start == 0 && range.end == found.size_bytes;
        let reader = Reader {
            file_id,
            owner,
            bucket: bucket.to_string(),
            name: key.to_string(),
        };
        Ok(tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let inner = &gateway.0;
            if whole {
                // One reader of the whole object: the pipelined decode, segments fetched
                // ahead, straight to the client.
                crate::transfer::read_placed(
                    &inner.handle,
                    inner.client.clone(),
                    &manifest,
                    placement,
                    Some(&file_key),
                    (first..end, 0),
                    &mut out,
                )?;
            } else {
                // Ranges (S3 clients read large objects as many ranges at once, each smaller
                // than a segment): each segment is decoded once for all of them.
                for s in first..end {
                    let segment = inner.segments.get_or_decode(&reader, s, || {
                        // Decoding is CPU-bound: one segment per core at a time, one thread
                        // each, bounds the buffers every concurrent range read would hold.
                        let _turn = inner.handle.block_on(inner.decoders.acquire())?;
                        let mut bytes = Vec::new();
                        crate::transfer::read_placed(
                            &inner.handle,
                            inner.client.clone(),
                            &manifest,
                            placement.clone(),
                            Some(&file_key),
                            (s..s + 1, 1),
                            &mut bytes,
                        )?;
                        Ok(bytes)
                    })?;
                    out.write_all(&segment)?;
                    if out.len == 0 {
                        break;
                    }
                }
            }
            out.flush()?;
            anyhow::ensure!(out.len == 0, "the object ended {} bytes short", out.len);
            Ok(())
        }))
    }

    /// A listing page of `owner`'s `bucket`: objects after `after` under `prefix`, those
    /// sharing a prefix up to `delimiter` rolled into one common prefix.
    fn list(
        &self,
        owner: &AccountId,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max_keys: usize,
    ) -> S3Result<(Vec<Object>, Vec<CommonPrefix>, Option<String>)> {
        self.need_bucket(owner, bucket)?;
        let objects = self.objects(owner, bucket);
        let mut contents = Vec::new();
        let mut prefixes: Vec<CommonPrefix> = Vec::new();
        let mut last = None;
        let mut truncated = false;
        let delimiter = delimiter.filter(|d| !d.is_empty());
        for (name, found) in objects
            .range::<str, _>((
                after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
                std::ops::Bound::Unbounded,
            ))
            .filter(|(name, _)| name.starts_with(prefix))
        {
            // A page that ended on a common prefix resumes after everything under it.
            if let (Some(after), Some(d)) = (after, delimiter)
                && after.ends_with(d)
                && name.starts_with(after)
            {
                continue;
            }
            let common = delimiter.and_then(|d| {
                name[prefix.len()..]
                    .find(d)
                    .map(|at| &name[..prefix.len() + at + d.len()])
            });
            // A key folding into the prefix just listed is no new entry.
            if let Some(common) = common
                && prefixes.last().and_then(|p| p.prefix.as_deref()) == Some(common)
            {
                continue;
            }
            if contents.len() + prefixes.len() >= max_keys {
                truncated = true;
                break;
            }
            if let Some(common) = common {
                prefixes.push(CommonPrefix {
                    prefix: Some(common.to_string()),
                });
                last = Some(common.to_string());
                continue;
            }
            let meta = self.meta(owner, found);
            contents.push(Object {
                key: Some(name.clone()),
                size: Some(found.size_bytes as i64),
                e_tag: Some(ETag::Strong(meta.etag)),
                last_modified: Some(timestamp(meta.modified_unix_ms)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            });
            last = Some(name.clone());
        }
        Ok((contents, prefixes, truncated.then_some(last).flatten()))
    }

    fn upload_dir(&self, upload_id: &str) -> S3Result<PathBuf> {
        if upload_id.len() != 32 || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok(self.staging(&format!("mpu-{upload_id}")))
    }

    /// A multipart upload of `owner`'s, checked to be for `bucket`/`key`.
    fn upload(
        &self,
        owner: &AccountId,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> S3Result<(PathBuf, UploadRecord)> {
        let dir = self.upload_dir(upload_id)?;
        let record: UploadRecord = std::fs::read(dir.join("upload.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        if record.owner != owner.to_string() || record.bucket != bucket || record.key != key {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok((dir, record))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadRecord {
    owner: String,
    bucket: String,
    key: String,
    content_type: Option<String>,
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let owner = self.owner(&req)?;
        let buckets = self.0.chain.ledger(|l| {
            l.buckets(&owner)
                .map(|(name, _)| Bucket {
                    name: Some(name.clone()),
                    creation_date: Some(timestamp(0)),
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        });
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                id: Some(owner.to_string()),
                display_name: None,
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let owner = self.owner(&req)?;
        let name = req.input.bucket;
        cess_consensus::ledger::check_bucket_name(&name)
            .map_err(|e| s3_error!(InvalidBucketName, "{e}"))?;
        let call = Call::ForOwner {
            owner,
            call: Box::new(Call::CreateBucket { name: name.clone() }),
        };
        self.0.chain.submit(call).await.map_err(chain_error)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{name}")),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let owner = self.owner(&req)?;
        self.need_bucket(&owner, &req.input.bucket)?;
        let call = Call::ForOwner {
            owner,
            call: Box::new(Call::DeleteBucket {
                name: req.input.bucket,
            }),
        };
        self.0.chain.submit(call).await.map_err(chain_error)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let owner = self.owner(&req)?;
        self.need_bucket(&owner, &req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let owner = self.owner(&req)?;
        self.need_bucket(&owner, &req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let owner = self.owner(&req)?;
        let input = req.input;
        self.need_bucket(&owner, &input.bucket)?;
        Self::check_key(&input.key)?;
        let bytes_max = self.staging_bytes_max(&owner)?;
        let declared = Declared {
            content_length: input.content_length,
            content_md5: input.content_md5.as_deref(),
            checksums: Checksums {
                crc32: input.checksum_crc32.clone(),
                crc32c: input.checksum_crc32c.clone(),
                sha1: input.checksum_sha1.clone(),
                sha256: input.checksum_sha256.clone(),
                crc64nvme: input.checksum_crc64nvme.clone(),
            },
        };
        let path = self.staging(&format!("put-{}", Self::fresh_id()));
        let (staged, _len, digest, computed) = stage_body(
            input.body,
            &path,
            declared,
            input.checksum_algorithm.as_ref(),
            req.trailing_headers.as_ref(),
            bytes_max,
            &self.0.metrics.received_bytes,
        )
        .await?;
        // The turn is taken once the body is here: a slow client holds no turn.
        let _turn = self.0.requests.acquire().await.map_err(internal)?;
        let meta = ObjectMeta {
            etag: etag_of(&digest),
            content_type: input.content_type.clone(),
            modified_unix_ms: now_unix_ms(),
        };
        let file_id = self
            .store(
                owner,
                &input.bucket,
                &input.key,
                Input::File(staged.path.clone()),
                meta.clone(),
            )
            .await?;
        drop(staged);
        let mut response = S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(meta.etag)),
            checksum_crc32: computed.checksum_crc32,
            checksum_crc32c: computed.checksum_crc32c,
            checksum_sha1: computed.checksum_sha1,
            checksum_sha256: computed.checksum_sha256,
            checksum_crc64nvme: computed.checksum_crc64nvme,
            ..Default::default()
        });
        response.headers.insert(
            "x-cess-file-id",
            hex(&file_id).parse().expect("hex is a header value"),
        );
        response.headers.insert(
            "x-cess-file-state",
            "active".parse().expect("a header value"),
        );
        Ok(response)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let owner = self.owner(&req)?;
        let found = self.find(&owner, &req.input.bucket, &req.input.key)?;
        let meta = self.meta(&owner, &found);
        let mut response = S3Response::new(HeadObjectOutput {
            content_length: Some(found.size_bytes as i64),
            e_tag: Some(ETag::Strong(meta.etag)),
            last_modified: Some(timestamp(meta.modified_unix_ms)),
            content_type: meta.content_type,
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        });
        response.headers.insert(
            "x-cess-file-state",
            found.state.name().parse().expect("a header value"),
        );
        Ok(response)
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let owner = self.owner(&req)?;
        let input = req.input;
        let found = self.find(&owner, &input.bucket, &input.key)?;
        let (range, content_range) = match input.range {
            None => (0..found.size_bytes, None),
            Some(r) => {
                let range = r
                    .check(found.size_bytes)
                    .map_err(|_| s3_error!(InvalidRange))?;
                let content_range = format!(
                    "bytes {}-{}/{}",
                    range.start,
                    range.end.saturating_sub(1),
                    found.size_bytes
                );
                (range, Some(content_range))
            }
        };
        let turn = self
            .0
            .requests
            .clone()
            .acquire_owned()
            .await
            .map_err(internal)?;
        let (tx, rx) = tokio::sync::mpsc::channel(GET_CHANNEL_CHUNKS);
        let writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK_BYTES),
            metrics: self.0.metrics.clone(),
            handle: self.0.handle.clone(),
        };
        let length = range.end - range.start;
        let task = self.read(
            owner,
            &input.bucket,
            &input.key,
            &found,
            range,
            Box::new(writer),
        )?;
        let what = format!("{}/{}", input.bucket, input.key);
        let metrics = self.0.metrics.clone();
        tokio::spawn(async move {
            let _turn = turn;
            let outcome = task.await;
            let failure = match outcome {
                Ok(Ok(())) => {
                    metrics
                        .objects_read
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    None
                }
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = failure {
                // The status line is gone already: the body ends short, and never with a
                // byte that failed its check.
                eprintln!("gateway: get {what}: {e}");
                tx.send(Err(std::io::Error::other(e))).await.ok();
            }
        });
        let meta = self.meta(&owner, &found);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(ChannelBody(rx))),
            content_length: Some(length as i64),
            content_range,
            e_tag: Some(ETag::Strong(meta.etag)),
            last_modified: Some(timestamp(meta.modified_unix_ms)),
            content_type: meta.content_type,
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let owner = self.owner(&req)?;
        self.need_bucket(&owner, &req.input.bucket)?;
        self.remove(owner, &req.input.bucket, &req.input.key)
            .await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let owner = self.owner(&req)?;
        self.need_bucket(&owner, &req.input.bucket)?;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in req.input.delete.objects {
            match self.remove(owner, &req.input.bucket, &object.key).await {
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(object.key),
                    ..Default::default()
                }),
                Err(e) => errors.push(Error {
                    key: Some(object.key),
                    code: Some(e.code().as_str().to_string()),
                    message: e.message().map(str::to_owned),
                    ..Default::default()
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let owner = self.owner(&req)?;
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_keys = max_keys(input.max_keys)?;
        let after = input
            .continuation_token
            .clone()
            .or_else(|| input.start_after.clone());
        let (contents, prefixes, next) = self.list(
            &owner,
            &input.bucket,
            &prefix,
            input.delimiter.as_deref(),
            after.as_deref(),
            max_keys,
        )?;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(prefix),
            delimiter: input.delimiter,
            max_keys: Some(max_keys as i32),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            is_truncated: Some(next.is_some()),
            next_continuation_token: next,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let owner = self.owner(&req)?;
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_keys = max_keys(input.max_keys)?;
        let (contents, prefixes, next) = self.list(
            &owner,
            &input.bucket,
            &prefix,
            input.delimiter.as_deref(),
            input.marker.as_deref(),
            max_keys,
        )?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(prefix),
            delimiter: input.delimiter,
            marker: input.marker,
            max_keys: Some(max_keys as i32),
            is_truncated: Some(next.is_some()),
            next_marker: next,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let owner = self.owner(&req)?;
        let input = req.input;
        let CopySource::Bucket {
            bucket: from_bucket,
            key: from_key,
            ..
        } = &input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "copies from access points"));
        };
        self.need_bucket(&owner, &input.bucket)?;
        Self::check_key(&input.key)?;
        let found = self.find(&owner, from_bucket, from_key)?;
        let source_meta = self.meta(&owner, &found);
        let _turn = self.0.requests.acquire().await.map_err(internal)?;
        // The copy is encrypted under its own name's key: read back, then put anew.
        let path = self.staging(&format!("put-{}", Self::fresh_id()));
        let staged = Staged {
            path: path.clone(),
            keep: false,
        };
        let file = std::fs::File::create(&path).map_err(internal)?;
        let writer = std::io::BufWriter::with_capacity(CHUNK_BYTES, file);
        self.read(
            owner,
            from_bucket,
            from_key,
            &found,
            0..found.size_bytes,
            Box::new(writer),
        )?
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let meta = ObjectMeta {
            etag: source_meta.etag,
            content_type: input.content_type.or(source_meta.content_type),
            modified_unix_ms: now_unix_ms(),
        };
        self.store(
            owner,
            &input.bucket,
            &input.key,
            Input::File(staged.path.clone()),
            meta.clone(),
        )
        .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(meta.etag)),
                last_modified: Some(timestamp(meta.modified_unix_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let owner = self.owner(&req)?;
        let input = req.input;
        self.need_bucket(&owner, &input.bucket)?;
        Self::check_key(&input.key)?;
        let mine = std::fs::read_dir(self.0.dir.join(STAGING_DIR))
            .map_err(internal)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("mpu-"))
            .filter(|e| {
                std::fs::read(e.path().join("upload.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<UploadRecord>(&b).ok())
                    .is_some_and(|r| r.owner == owner.to_string())
            })
            .count();
        if mine >= UPLOADS_PER_OWNER_MAX {
            return Err(s3_error!(
                SlowDown,
                "{mine} multipart uploads of this owner are open; complete or abort some"
            ));
        }
        let upload_id = Self::fresh_id();
        let dir = self.upload_dir(&upload_id)?;
        std::fs::create_dir_all(&dir).map_err(internal)?;
        let record = UploadRecord {
            owner: owner.to_string(),
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            content_type: input.content_type,
        };
        std::fs::write(
            dir.join("upload.json"),
            serde_json::to_vec(&record).map_err(internal)?,
        )
        .map_err(internal)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let owner = self.owner(&req)?;
        let input = req.input;
        let (dir, _) = self.upload(&owner, &input.bucket, &input.key, &input.upload_id)?;
        if !(1..=PARTS_MAX).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "part numbers are 1 to {PARTS_MAX}"
            ));
        }
        let declared = Declared {
            content_length: input.content_length,
            content_md5: input.content_md5.as_deref(),
            checksums: Checksums {
                crc32: input.checksum_crc32.clone(),
                crc32c: input.checksum_crc32c.clone(),
                sha1: input.checksum_sha1.clone(),
                sha256: input.checksum_sha256.clone(),
                crc64nvme: input.checksum_crc64nvme.clone(),
            },
        };
        let part = dir.join(format!("part-{:05}", input.part_number));
        // Every part so far counts against what one object (and the owner's space) takes.
        let staged_bytes: u64 = std::fs::read_dir(&dir)
            .map_err(internal)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        let bytes_max = self
            .staging_bytes_max(&owner)?
            .checked_sub(staged_bytes)
            .ok_or_else(|| s3_error!(EntityTooLarge, "the upload's parts exceed one object"))?;
        // Each attempt at a part stages under its own name: a retry racing a slow first try
        // never writes into the file the other renames.
        let (mut staged, _, digest, computed) = stage_body(
            input.body,
            &dir.join(format!(
                "part-{:05}.{}.partial",
                input.part_number,
                Self::fresh_id()
            )),
            declared,
            input.checksum_algorithm.as_ref(),
            req.trailing_headers.as_ref(),
            bytes_max,
            &self.0.metrics.received_bytes,
        )
        .await?;
        std::fs::rename(&staged.path, &part).map_err(internal)?;
        staged.keep = true;
        std::fs::write(part.with_extension("md5"), etag_of(&digest)).map_err(internal)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag_of(&digest))),
            checksum_crc32: computed.checksum_crc32,
            checksum_crc32c: computed.checksum_crc32c,
            checksum_sha1: computed.checksum_sha1,
            checksum_sha256: computed.checksum_sha256,
            checksum_crc64nvme: computed.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let owner = self.owner(&req)?;
        let input = req.input;
        let (dir, record) = self.upload(&owner, &input.bucket, &input.key, &input.upload_id)?;
        let parts = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if parts.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts named"));
        }
        let mut paths = Vec::with_capacity(parts.len());
        let mut digests = Vec::with_capacity(parts.len() * 16);
        let mut total_bytes = 0u64;
        let mut previous = 0;
        for (i, part) in parts.iter().enumerate() {
            let number = part.part_number.unwrap_or(0);
            if number <= previous {
                return Err(s3_error!(InvalidPartOrder));
            }
            previous = number;
            let path = dir.join(format!("part-{number:05}"));
            let stored = std::fs::read_to_string(path.with_extension("md5"))
                .map_err(|_| s3_error!(InvalidPart, "part {number} was not uploaded"))?;
            if let Some(etag) = &part.e_tag
                && etag.value() != stored
            {
                return Err(s3_error!(InvalidPart, "part {number}'s ETag differs"));
            }
            let len = std::fs::metadata(&path).map_err(internal)?.len();
            if i + 1 < parts.len() && len < PART_BYTES_MIN {
                return Err(s3_error!(
                    EntityTooSmall,
                    "part {number} is {len} bytes; all but the last are at least 5 MiB"
                ));
            }
            total_bytes += len;
            for pair in stored.as_bytes().chunks(2) {
                let text = std::str::from_utf8(pair).map_err(internal)?;
                digests.push(u8::from_str_radix(text, 16).map_err(internal)?);
            }
            paths.push(path);
        }
        if total_bytes > self.object_bytes_max() {
            return Err(s3_error!(EntityTooLarge));
        }
        let etag = format!("{}-{}", etag_of(&Md5::digest(&digests)), parts.len());
        let meta = ObjectMeta {
            etag: etag.clone(),
            content_type: record.content_type,
            modified_unix_ms: now_unix_ms(),
        };
        eprintln!(
            "gateway: completing {}/{}: {} parts, {total_bytes} bytes",
            input.bucket,
            input.key,
            parts.len()
        );
        // Storing a large object takes longer than a client's read timeout (boto3's is 60 s,
        // and it then sends the completion again, which stores it twice): as S3 does, the
        // answer is 200 at once, with white space every 100 ms until the result, or the error,
        // follows in the body. The parts were checked above, so a malformed request is still
        // refused with its own status. The store runs as its own task, holding its turn: a
        // client that goes away neither stops it half-way nor frees its turn, and a second
        // completion of the same upload meanwhile is refused (it would store the parts twice).
        if !self
            .0
            .completing
            .lock()
            .expect("completing lock")
            .insert(dir.clone())
        {
            return Err(s3_error!(
                OperationAborted,
                "this upload is being completed: ask again once that ends"
            ));
        }
        let gateway = self.clone();
        let (bucket, key) = (input.bucket, input.key);
        let stored = tokio::spawn({
            let (bucket, key) = (bucket.clone(), key.clone());
            async move {
                let done = async {
                    let _turn = gateway
                        .0
                        .requests
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(internal)?;
                    gateway
                        .store(owner, &bucket, &key, Input::Parts(paths), meta)
                        .await?;
                    std::fs::remove_dir_all(&dir).ok();
                    Ok::<_, S3Error>(())
                }
                .await;
                gateway
                    .0
                    .completing
                    .lock()
                    .expect("completing lock")
                    .remove(&dir);
                if let Err(e) = &done {
                    // The client was answered 200 and reads this error in the body; the
                    // operator sees it here (the parts stay, for a completion again).
                    eprintln!("gateway: completing {bucket}/{key} failed: {e}");
                }
                done
            }
        });
        let answer = async move {
            stored.await.map_err(internal)??;
            Ok(CompleteMultipartUploadOutput {
                bucket: Some(bucket),
                key: Some(key),
                e_tag: Some(ETag::Strong(etag)),
                ..Default::default()
            })
        };
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(Box::pin(answer)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let owner = self.owner(&req)?;
        let input = req.input;
        let (dir, _) = self.upload(&owner, &input.bucket, &input.key, &input.upload_id)?;
        std::fs::remove_dir_all(&dir).map_err(internal)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

impl Gateway {
    /// Deletes every file of `owner` listed as `key` in `bucket` (none: nothing to do, as S3
    /// answers a delete of a missing key).
    async fn remove(&self, owner: AccountId, bucket: &str, key: &str) -> S3Result<()> {
        for file_id in self.listed_as(&owner, bucket, key) {
            let call = Call::ForOwner {
                owner,
                call: Box::new(Call::DeleteFile { file_id }),
            };
            self.0.chain.submit(call).await.map_err(chain_error)?;
            std::fs::remove_file(self.meta_path(&owner, &file_id)).ok();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The slice of whole segments a range read writes is the range, whatever the writes'
    /// sizes (the reference: slicing the whole).
    #[test]
    fn a_range_cut_from_whole_segments_is_exactly_the_range() {
        let whole: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for (skip, len, chunk) in [
            (0, 0, 7),
            (0, 10_000, 4096),
            (1, 1, 1),
            (4095, 2, 4096),
            (123, 9_000, 333),
            (9_999, 1, 10_000),
        ] {
            let mut slice = SliceWriter {
                skip,
                len,
                inner: Vec::new(),
            };
            for part in whole.chunks(chunk) {
                slice.write_all(part).unwrap();
            }
            assert_eq!(slice.len, 0);
            assert!(
                slice.inner == whole[skip as usize..(skip + len) as usize],
                "skip {skip} len {len} chunk {chunk}"
            );
        }
    }

    /// Concurrent range reads of one segment decode it once; a failed decode is not kept;
    /// the oldest segment leaves when the cache is full.
    #[test]
    fn concurrent_readers_of_a_segment_decode_it_once() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let cache = SegmentCache::new(2);
        let decodes = AtomicUsize::new(0);
        let decode = |byte: u8| {
            decodes.fetch_add(1, SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(50));
            Ok(vec![byte; 10])
        };
        let reader = |file: u8| Reader {
            file_id: [file; 32],
            owner: AccountId([9; 32]),
            bucket: "b".into(),
            name: "n".into(),
        };
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let segment = cache.get_or_decode(&reader(1), 0, || decode(7)).unwrap();
                    assert_eq!(*segment, vec![7; 10]);
                });
            }
        });
        assert_eq!(decodes.load(SeqCst), 1);
        assert!(
            cache
                .get_or_decode(&reader(2), 0, || anyhow::bail!("a miner failed"))
                .is_err()
        );
        assert_eq!(
            *cache.get_or_decode(&reader(2), 0, || decode(1)).unwrap(),
            vec![1; 10]
        );
        assert_eq!(decodes.load(SeqCst), 2, "the failure was tried again");
        cache.get_or_decode(&reader(3), 0, || decode(3)).unwrap();
        cache.get_or_decode(&reader(1), 0, || decode(7)).unwrap();
        assert_eq!(
            decodes.load(SeqCst),
            4,
            "the first segment left the full cache"
        );
        // Another owner of the same file id never gets this reader's plaintext.
        let other = Reader {
            owner: AccountId([8; 32]),
            ..reader(1)
        };
        assert!(
            cache
                .get_or_decode(&other, 0, || anyhow::bail!(
                    "its key does not open the file"
                ))
                .is_err()
        );
        // A decode that panics leaves an error for its waiters and nothing in the cache.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.get_or_decode(&reader(5), 0, || panic!("a bug"))
        }));
        assert!(panicked.is_err());
        assert_eq!(
            *cache.get_or_decode(&reader(5), 0, || decode(5)).unwrap(),
            vec![5; 10]
        );
    }

    #[test]
    fn only_an_active_or_recovering_file_is_read() {
        assert!(readable(FileState::Active).is_ok());
        assert!(
            readable(FileState::Recovery {
                unheld: 2,
                segments_at_risk: 0,
                lost_at: None
            })
            .is_ok()
        );
        for state in [FileState::Pending, FileState::Lost { at: 7 }] {
            let refused = readable(state).unwrap_err();
            assert_eq!(refused.code(), &S3ErrorCode::InvalidObjectState);
            assert!(
                refused
                    .message()
                    .is_some_and(|m| m.contains("Active") || m.contains("lost"))
            );
        }
        assert_eq!(max_keys(None).unwrap(), LIST_KEYS_MAX);
        assert_eq!(max_keys(Some(5000)).unwrap(), LIST_KEYS_MAX);
        assert!(max_keys(Some(-1)).is_err());
    }

    #[test]
    fn a_checksum_sent_is_checked_against_the_body() {
        let body = b"the body";
        let sums = Checksums {
            sha256: Some("nope".into()),
            ..Checksums::default()
        };
        let mut hasher = sums.hasher(None);
        hasher.update(body);
        let computed = hasher.finalize();
        assert!(
            computed.checksum_sha256.is_some(),
            "the named sum is computed"
        );
        assert_eq!(
            sums.check(&computed).unwrap_err().code(),
            &S3ErrorCode::BadDigest
        );
        let right = Checksums {
            sha256: computed.checksum_sha256.clone(),
            ..Checksums::default()
        };
        right.check(&computed).unwrap();
    }
}
