//! Streaming encode and decode: segments in flight on every core, a bounded pool of buffers,
//! output in order. The calling thread reads input and writes output; workers code.

use super::crypt::{FileKey, KdfParams, NONCE_BYTES, segment_ad};
use super::manifest::{Encryption, Manifest, SegmentEntry};
use super::stripes::SegmentCoder;
use super::{CodecError, CodecParams, FragmentId, Id, file_id, sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, channel, sync_channel};

/// Where encoded fragments go. Called on the encoding thread as segments finish: segments in
/// any order, a segment's fragments in index order.
pub trait FragmentSink {
    fn fragment(
        &mut self,
        segment: u64,
        index: usize,
        id: &FragmentId,
        bytes: &[u8],
    ) -> Result<(), CodecError>;
}

/// Where decoding finds fragments. Called from worker threads.
pub trait FragmentSource: Sync {
    /// Fills `buf` with fragment `index` of segment `segment`, named `id`; `Ok(false)` when it
    /// is not there or has the wrong size. The caller checks the bytes against `id`. A
    /// segment's fragments are asked for in index order, until k of them are good.
    fn fetch(
        &self,
        segment: u64,
        index: usize,
        id: &FragmentId,
        buf: &mut [u8],
    ) -> Result<bool, CodecError>;
}

/// Reports progress in input (encode) or output (decode) bytes done so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

/// A directory of fragments, each in a file named by its id in hex.
#[derive(Debug, Clone)]
pub struct DirFragments {
    pub dir: PathBuf,
}

impl DirFragments {
    pub fn new(dir: impl Into<PathBuf>) -> DirFragments {
        DirFragments { dir: dir.into() }
    }

    pub fn path_of(&self, id: &FragmentId) -> PathBuf {
        self.dir.join(id.to_hex())
    }
}

impl FragmentSink for DirFragments {
    /// Writes each distinct fragment once (identical fragments share a name), through a
    /// temporary name so a crash never leaves a partial fragment under its id.
    fn fragment(
        &mut self,
        _: u64,
        _: usize,
        id: &FragmentId,
        bytes: &[u8],
    ) -> Result<(), CodecError> {
        let path = self.path_of(id);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            return Ok(());
        }
        let tmp = self.dir.join(format!(".{}.partial", id.to_hex()));
        std::fs::write(&tmp, bytes)
            .map_err(CodecError::io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(CodecError::io(format!("renaming {}", tmp.display())))
    }
}

impl FragmentSource for DirFragments {
    fn fetch(&self, _: u64, _: usize, id: &FragmentId, buf: &mut [u8]) -> Result<bool, CodecError> {
        let path = self.path_of(id);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(CodecError::io(format!("opening {}", path.display()))(e)),
        };
        let len = file
            .metadata()
            .map_err(CodecError::io(format!("reading {}", path.display())))?
            .len();
        if len != buf.len() as u64 {
            return Ok(false);
        }
        file.read_exact(buf)
            .map_err(CodecError::io(format!("reading {}", path.display())))?;
        Ok(true)
    }
}

/// How to encode.
#[derive(Debug, Clone, Default)]
pub struct EncodeOptions {
    pub params: CodecParams,
    pub key: Option<FileKey>,
    /// Salt and cost to record when `key` came from a passphrase.
    pub kdf: Option<([u8; 16], KdfParams)>,
    /// Worker threads; 0 (the default) means one per core.
    pub threads: usize,
}

fn worker_count(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// One segment's buffers: the segment (= its data fragments back to back) and its parity.
struct SegmentBuf {
    segment: Vec<u8>,
    parity: Vec<u8>,
}

impl SegmentBuf {
    fn new(params: CodecParams) -> SegmentBuf {
        SegmentBuf {
            segment: vec![0; params.segment_bytes as usize],
            parity: vec![0; usize::from(params.parity_shards) * params.fragment_bytes()],
        }
    }

    fn fragment(&self, params: CodecParams, index: usize) -> &[u8] {
        let (k, frag) = (usize::from(params.data_shards), params.fragment_bytes());
        if index < k {
            &self.segment[index * frag..][..frag]
        } else {
            &self.parity[(index - k) * frag..][..frag]
        }
    }

    fn fragment_mut(&mut self, params: CodecParams, index: usize) -> &mut [u8] {
        let (k, frag) = (usize::from(params.data_shards), params.fragment_bytes());
        if index < k {
            &mut self.segment[index * frag..][..frag]
        } else {
            &mut self.parity[(index - k) * frag..][..frag]
        }
    }
}

/// What a worker reports to the calling thread.
enum Report<R> {
    Done(u64, Result<R, CodecError>, SegmentBuf),
    /// `feed` said there is no job `count` (so jobs `0..count` exist), or failed.
    Fed(Result<u64, CodecError>),
}

/// Runs jobs on `threads` workers. Each worker takes a free buffer, then, holding a lock so
/// jobs are numbered in input order, fills it with `feed` (which returns `None` when done), and
/// runs `work` on it. The calling thread only hands out buffers and drains results with `drain`:
/// in job order when `ordered`, else as jobs finish (so a fast worker never waits for a slow
/// one's turn). At most `threads + 1` buffers exist: the pool bounds memory whatever the input.
fn run_pipeline<J, R>(
    ordered: bool,
    threads: usize,
    make_buf: impl Fn() -> SegmentBuf,
    feed: impl FnMut(u64, &mut SegmentBuf) -> Result<Option<J>, CodecError> + Send,
    work: impl Fn(&mut SegmentCoder, u64, J, &mut SegmentBuf) -> Result<R, CodecError> + Sync,
    mut drain: impl FnMut(u64, R, &SegmentBuf) -> Result<(), CodecError>,
    params: CodecParams,
) -> Result<(), CodecError>
where
    R: Send,
{
    let pool_size = threads + 1;
    let (free_tx, free_rx) = sync_channel::<SegmentBuf>(pool_size);
    let free_rx: Mutex<Receiver<SegmentBuf>> = Mutex::new(free_rx);
    // (next job index, whether feeding is over, the feeder)
    let feeder = Mutex::new((0u64, false, feed));
    std::thread::scope(|scope| {
        // Moved in so it drops (and idle workers stop) whenever this closure returns.
        let free_tx = free_tx;
        let (report_tx, report_rx) = channel::<Report<R>>();
        for _ in 0..threads {
            let (free_rx, feeder, report_tx, work) = (&free_rx, &feeder, report_tx.clone(), &work);
            scope.spawn(move || {
                let Ok(mut coder) = SegmentCoder::new(params) else {
                    return; // params were validated by the caller
                };
                loop {
                    let next = free_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok(mut buf)) = next else {
                        return;
                    };
                    let (index, job) = {
                        let Ok(mut f) = feeder.lock() else {
                            return;
                        };
                        let (next_index, over, feed) = &mut *f;
                        if *over {
                            return;
                        }
                        match feed(*next_index, &mut buf) {
                            Ok(Some(job)) => {
                                *next_index += 1;
                                (*next_index - 1, job)
                            }
                            Ok(None) => {
                                *over = true;
                                let _ = report_tx.send(Report::Fed(Ok(*next_index)));
                                return;
                            }
                            Err(e) => {
                                *over = true;
                                let _ = report_tx.send(Report::Fed(Err(e)));
                                return;
                            }
                        }
                    };
                    let result = work(&mut coder, index, job, &mut buf);
                    if report_tx.send(Report::Done(index, result, buf)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(report_tx);
        for _ in 0..pool_size {
            free_tx
                .send(make_buf())
                .expect("the queue holds the whole pool");
        }
        let mut total: Option<u64> = None;
        let mut drained = 0u64;
        let mut next_in_order = 0u64;
        let mut waiting: BTreeMap<u64, (R, SegmentBuf)> = BTreeMap::new();
        loop {
            if total == Some(drained) {
                return Ok(());
            }
            let report = report_rx
                .recv()
                .expect("workers report until feeding ends and every job is done");
            let (index, result, buf) = match report {
                Report::Fed(count) => {
                    total = Some(count?);
                    continue;
                }
                Report::Done(index, result, buf) => (index, result?, buf),
            };
            let recycle = |buf: SegmentBuf| {
                // Workers may all have stopped once feeding is over; a dropped buffer is fine.
                let _ = free_tx.send(buf);
            };
            if !ordered {
                drain(index, result, &buf)?;
                recycle(buf);
                drained += 1;
                continue;
            }
            waiting.insert(index, (result, buf));
            while let Some((result, buf)) = waiting.remove(&next_in_order) {
                drain(next_in_order, result, &buf)?;
                recycle(buf);
                next_in_order += 1;
                drained += 1;
            }
        }
    })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(input: &mut (dyn Read + Send), buf: &mut [u8]) -> Result<usize, CodecError> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CodecError::io("reading input")(e)),
        }
    }
    Ok(filled)
}

/// Fills the rest of a plain file's last segment after its `tail` bytes.
///
/// Zeros would give every pad-only fragment of every file one id (SHA-256 of 8 MiB of zeros,
/// CESS's `ZeroFileHash_8M`), and a fragment id names exactly one place on the ledger: a plain
/// file shorter than three quarters of a segment could then never be stored. The pad is a
/// BLAKE3 keystream keyed by the tail's own bytes and the file length, so it is deterministic
/// (identical files still share a file id and deduplicate) and differs across the fragments of
/// one segment and across files whose tails differ. Decoding never reads it: the manifest
/// records the file length.
fn fill_pad(tail: &[u8], file_bytes: u64, pad: &mut [u8]) {
    let mut hasher = blake3::Hasher::new_derive_key("cess codec pad v1");
    hasher.update(&file_bytes.to_le_bytes());
    hasher.update(tail);
    hasher.finalize_xof().fill(pad);
}

/// Encodes `file_bytes` bytes from `input` (which must hold exactly that many) into fragments
/// handed to `sink`, and returns the manifest.
pub fn encode(
    input: &mut (dyn Read + Send),
    file_bytes: u64,
    options: &EncodeOptions,
    sink: &mut dyn FragmentSink,
    progress: Progress<'_>,
) -> Result<Manifest, CodecError> {
    let params = options.params;
    params.validate()?;
    let encrypted = options.key.is_some();
    let payload = params.payload_bytes(encrypted) as usize;
    let count = params.segment_count(file_bytes, encrypted);
    let start = if encrypted { NONCE_BYTES } else { 0 };
    let sealer = options.key.as_ref().map(FileKey::sealer);
    let mut read_bytes = 0u64;
    let mut segments: Vec<(u64, SegmentEntry)> = Vec::with_capacity(count.min(1 << 20) as usize);
    run_pipeline(
        false,
        worker_count(options.threads),
        || SegmentBuf::new(params),
        |index, buf| {
            if index == count {
                let mut probe = [0u8; 1];
                if fill(input, &mut probe)? > 0 {
                    return Err(CodecError::InputLength {
                        expected_bytes: file_bytes,
                        read_bytes: read_bytes + 1,
                    });
                }
                return Ok(None);
            }
            let want = payload.min((file_bytes - read_bytes) as usize);
            let region = &mut buf.segment[start..start + payload];
            let got = fill(input, &mut region[..want])?;
            read_bytes += got as u64;
            if got < want {
                return Err(CodecError::InputLength {
                    expected_bytes: file_bytes,
                    read_bytes,
                });
            }
            if encrypted {
                // Sealing makes every fragment distinct whatever the plaintext pad.
                region[want..].fill(0);
            } else {
                let (tail, pad) = region.split_at_mut(want);
                fill_pad(tail, file_bytes, pad);
            }
            Ok(Some(()))
        },
        |coder, index, (), buf| {
            if let Some(sealer) = &sealer {
                sealer.seal(
                    &segment_ad(params, file_bytes, count, index),
                    &mut buf.segment,
                );
            }
            let id = sha256(&buf.segment);
            let fragments = coder.encode(&buf.segment, &mut buf.parity)?;
            Ok(SegmentEntry { id, fragments })
        },
        |index, entry, buf| {
            for (i, id) in entry.fragments.iter().enumerate() {
                sink.fragment(index, i, id, buf.fragment(params, i))?;
            }
            segments.push((index, entry));
            progress((segments.len() as u64 * payload as u64).min(file_bytes));
            Ok(())
        },
        params,
    )?;
    segments.sort_unstable_by_key(|(index, _)| *index);
    let segments: Vec<SegmentEntry> = segments.into_iter().map(|(_, entry)| entry).collect();
    let ids: Vec<Id> = segments.iter().map(|s| s.id).collect();
    let mut manifest = Manifest {
        params,
        file_bytes,
        file_id: file_id(&ids).expect("at least one segment"),
        segments,
        encryption: options.key.as_ref().map(|key| Encryption {
            key_check: key.check_value(),
            kdf: options.kdf,
            mac: [0; 32],
        }),
    };
    if let Some(key) = &options.key {
        manifest.authenticate(key);
    }
    Ok(manifest)
}

/// Fetches fragments of segment `index` until k match their ids, rebuilds the segment in
/// `buf.segment`, and checks it against the segment id.
fn gather(
    coder: &mut SegmentCoder,
    manifest: &Manifest,
    index: u64,
    source: &dyn FragmentSource,
    buf: &mut SegmentBuf,
) -> Result<(), CodecError> {
    let params = manifest.params;
    let k = usize::from(params.data_shards);
    let entry = &manifest.segments[index as usize];
    // On the stack: no allocation per segment.
    let mut present_flags = [false; CodecParams::SHARDS_MAX as usize];
    let present = &mut present_flags[..params.shard_count()];
    let (mut good, mut missing, mut corrupt) = (0, 0, 0);
    // Data fragments first: with all k of them no decoding is needed.
    for (i, id) in entry.fragments.iter().enumerate() {
        if good == k {
            break;
        }
        let slot = buf.fragment_mut(params, i);
        if !source.fetch(index, i, id, slot)? {
            missing += 1;
        } else if FragmentId::of(slot) != *id {
            corrupt += 1;
        } else {
            present[i] = true;
            good += 1;
        }
    }
    if good < k {
        return Err(CodecError::SegmentUnrecoverable {
            segment: index,
            good,
            needed: k,
            missing,
            corrupt,
        });
    }
    coder.reconstruct(&mut buf.segment, &buf.parity, present)?;
    if sha256(&buf.segment) != entry.id {
        return Err(CodecError::SegmentMismatch { segment: index });
    }
    Ok(())
}

/// Decodes the file `manifest` describes from fragments in `source`, writing it to `out` in
/// order as segments complete. `key` must be given exactly when the file is encrypted.
pub fn decode(
    manifest: &Manifest,
    key: Option<&FileKey>,
    source: &dyn FragmentSource,
    out: &mut dyn Write,
    threads: usize,
    progress: Progress<'_>,
) -> Result<(), CodecError> {
    let all = 0..manifest.segments.len() as u64;
    decode_segments(manifest, key, source, out, all, threads, progress)
}

/// The file bytes segment `index` carries: `(offset in the file, length)`.
pub fn segment_span(manifest: &Manifest, encrypted: bool, index: u64) -> (u64, u64) {
    let payload = manifest.params.payload_bytes(encrypted);
    let offset = index.saturating_mul(payload).min(manifest.file_bytes);
    (offset, payload.min(manifest.file_bytes - offset))
}

/// [`decode`] of the segments `segments` only (what a range read needs): their file bytes,
/// in order, each segment checked against its id (and opened with `key`) before any of its
/// bytes is written. `progress` counts the bytes written.
pub fn decode_segments(
    manifest: &Manifest,
    key: Option<&FileKey>,
    source: &dyn FragmentSource,
    out: &mut dyn Write,
    segments: std::ops::Range<u64>,
    threads: usize,
    progress: Progress<'_>,
) -> Result<(), CodecError> {
    manifest.check_key(key)?;
    let params = manifest.params;
    let encrypted = key.is_some();
    let count = manifest.segments.len() as u64;
    if segments.start > segments.end || segments.end > count {
        return Err(CodecError::BadManifest(format!(
            "segments {segments:?} asked of a file of {count}"
        )));
    }
    let start = if encrypted { NONCE_BYTES } else { 0 };
    let sealer = key.map(FileKey::sealer);
    let file_bytes = manifest.file_bytes;
    let mut written = 0u64;
    run_pipeline(
        true,
        worker_count(threads),
        || SegmentBuf::new(params),
        |i, _| {
            let index = segments.start + i;
            Ok((index < segments.end).then_some(index))
        },
        |coder, _, index, buf| {
            gather(coder, manifest, index, source, buf)?;
            if let Some(sealer) = &sealer
                && !sealer.open(
                    &segment_ad(params, file_bytes, count, index),
                    &mut buf.segment,
                )
            {
                return Err(CodecError::SegmentAuth { segment: index });
            }
            Ok(index)
        },
        |_, index, buf| {
            let (_, len) = segment_span(manifest, encrypted, index);
            let len = len as usize;
            out.write_all(&buf.segment[start..start + len])
                .map_err(CodecError::io("writing output"))?;
            written += len as u64;
            progress(written);
            Ok(())
        },
        params,
    )?;
    out.flush().map_err(CodecError::io("writing output"))
}

/// Rebuilds fragments `wanted` (indexes, data first) of segment `index` from any k others,
/// byte-identical to the originals: each is checked against its id before it is returned.
/// Needs no key: it works on the stored (possibly encrypted) segment.
pub fn repair_segment(
    manifest: &Manifest,
    index: u64,
    source: &dyn FragmentSource,
    wanted: &[usize],
) -> Result<Vec<(usize, Vec<u8>)>, CodecError> {
    let params = manifest.params;
    let count = params.shard_count();
    if index >= manifest.segments.len() as u64 {
        return Err(CodecError::BadManifest(format!(
            "no segment {index} (the file has {})",
            manifest.segments.len()
        )));
    }
    if let Some(&bad) = wanted.iter().find(|&&i| i >= count) {
        return Err(CodecError::NoSuchFragment {
            segment: index,
            index: bad,
            count,
        });
    }
    let mut coder = SegmentCoder::new(params)?;
    let mut buf = SegmentBuf::new(params);
    gather(&mut coder, manifest, index, source, &mut buf)?;
    let ids = coder.encode(&buf.segment, &mut buf.parity)?;
    let entry = &manifest.segments[index as usize];
    if ids != entry.fragments {
        return Err(CodecError::SegmentMismatch { segment: index });
    }
    Ok(wanted
        .iter()
        .map(|&i| (i, buf.fragment(params, i).to_vec()))
        .collect())
}

/// Reads a manifest file (bounded) and checks it.
pub fn read_manifest(path: &Path) -> Result<Manifest, CodecError> {
    let file = std::fs::File::open(path).map_err(CodecError::io(format!(
        "opening manifest {}",
        path.display()
    )))?;
    let mut bytes = Vec::new();
    file.take(super::manifest::MANIFEST_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(CodecError::io(format!(
            "reading manifest {}",
            path.display()
        )))?;
    Manifest::decode(&bytes)
}
