//! The real backend: io_uring on a file or block device opened with O_DIRECT.
//!
//! One ring per shard (per thread). A batch is pushed to the submission queue in as many
//! passes as the ring needs, and short transfers are resubmitted for their remainder. This is
//! one of the few modules allowed to use `unsafe`: io_uring reads and writes through raw
//! pointers that must stay valid until their completion arrives.

use super::{Device, IoKind, IoOp, ReadDone};
use crate::aligned::AlignedBuf;
use io_uring::{IoUring, opcode, types};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, PipeReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const RING_ENTRIES: u32 = 128;
/// Set in the user data of a streamed read's entries; the rest of the bits name its slot.
const STREAM_BIT: u64 = 1 << 63;
/// The user data of the bell's poll entry (the stream bit and a slot no read ever gets).
const BELL_DATA: u64 = u64::MAX;

/// A streamed read the device owns until it is reaped.
struct Streamed {
    tag: u64,
    offset: u64,
    buf: AlignedBuf,
    done_bytes: usize,
}

/// An O_DIRECT target driven through io_uring.
pub struct UringDevice {
    ring: IoUring,
    // Shared between the handles of one target: the fd is dup'd per handle so a block
    // device opened with O_EXCL is opened exactly once.
    file: Arc<File>,
    path: PathBuf,
    len_bytes: u64,
    // Per-op bytes already transferred in the current batch; reused across batches.
    progress: Vec<usize>,
    resubmit: VecDeque<usize>,
    // (op index, result) of the completions drained by one wait; reused across waits.
    completed: Vec<(usize, i32)>,
    // Streamed reads by slot; `queued` waits for room in the submission queue.
    streams: Vec<Option<Streamed>>,
    free_slots: Vec<usize>,
    queued: VecDeque<usize>,
    // Streamed entries submitted to the kernel and not yet completed.
    streams_in_kernel: usize,
    streams_out: usize,
    // The read end of the shard's bell (see `super::Bell`), polled while a reap waits.
    bell: Option<PipeReader>,
    // A poll entry for the bell is in the kernel.
    bell_polled: bool,
    // The bell rang since the current reap began.
    bell_rang: bool,
    // The ring accepts submissions: false until the first use from the shard's thread (see
    // `new_ring`).
    enabled: bool,
}

/// Opens `path` for O_DIRECT I/O. A block device is opened with O_EXCL, which the kernel
/// refuses while the device is mounted or held by another program.
pub fn open_target(path: &Path) -> io::Result<UringDevice> {
    let is_block = std::fs::metadata(path)?.file_type().is_block_device();
    let mut flags = libc::O_DIRECT;
    if is_block {
        flags |= libc::O_EXCL;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)?;
    // For a block device the metadata length is 0; seeking to the end gives its size.
    let raw_len = file.seek(SeekFrom::End(0))?;
    let len_bytes =
        raw_len / crate::aligned::BLOCK_BYTES as u64 * crate::aligned::BLOCK_BYTES as u64;
    UringDevice::new(Arc::new(file), path.to_path_buf(), len_bytes)
}

/// A ring set up as fio's io_uring engine sets up its own: one thread submits, and
/// completions are posted when that thread asks for them instead of interrupting it as they
/// arrive (single issuer, deferred task work). It starts disabled so that the shard's thread, not the thread opening
/// the store, becomes the submitter: the second value says the first use must enable it.
/// Kernels before 6.1 lack these flags and get a plain ring.
fn new_ring() -> io::Result<(IoUring, bool)> {
    let built = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_r_disabled()
        .build(RING_ENTRIES);
    match built {
        Ok(ring) => Ok((ring, false)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            IoUring::new(RING_ENTRIES).map(|ring| (ring, true))
        }
        Err(e) => Err(e),
    }
}

impl std::fmt::Debug for UringDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDevice")
            .field("path", &self.path)
            .field("len_bytes", &self.len_bytes)
            .finish()
    }
}

impl UringDevice {
    fn new(file: Arc<File>, path: PathBuf, len_bytes: u64) -> io::Result<UringDevice> {
        let (ring, enabled) = new_ring().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("io_uring_setup failed (is io_uring disabled?): {e}"),
            )
        })?;
        Ok(UringDevice {
            ring,
            file,
            path,
            len_bytes,
            progress: Vec::new(),
            resubmit: VecDeque::new(),
            completed: Vec::new(),
            streams: Vec::new(),
            free_slots: Vec::new(),
            queued: VecDeque::new(),
            streams_in_kernel: 0,
            streams_out: 0,
            bell: None,
            bell_polled: false,
            bell_rang: false,
            enabled,
        })
    }

    /// Makes the calling thread the ring's only submitter (see [`new_ring`]); a no-op after
    /// the first call.
    fn enable(&mut self) -> io::Result<()> {
        if !self.enabled {
            self.ring.submitter().register_enable_rings()?;
            self.enabled = true;
        }
        Ok(())
    }

    /// Drains every waiting completion as (user data, result) into the reused buffer, which
    /// the caller puts back in `self.completed`: the completion queue borrows the ring, and
    /// handling completions needs `self` for resubmissions.
    /// The bell's completion is handled here and left out.
    fn take_completions(&mut self) -> Vec<(usize, i32)> {
        let mut completed = std::mem::take(&mut self.completed);
        completed.clear();
        let mut bell_result = None;
        for c in self.ring.completion() {
            if c.user_data() == BELL_DATA {
                bell_result = Some(c.result());
            } else {
                completed.push((c.user_data() as usize, c.result()));
            }
        }
        if let Some(result) = bell_result {
            self.bell_polled = false;
            self.bell_rang = true;
            if result > 0 && result & i32::from(libc::POLLIN) != 0 {
                // Readable, and this thread is the only reader, so this does not block.
                let mut bytes = [0u8; 64];
                if let Some(mut reader) = self.bell.as_ref() {
                    let _ = reader.read(&mut bytes);
                }
            }
        }
        completed
    }

    /// Puts a poll for the bell in the submission queue unless one is in the kernel already.
    fn poll_bell(&mut self) {
        let Some(reader) = self.bell.as_ref() else {
            return;
        };
        if self.bell_polled || self.ring.submission().is_full() {
            return;
        }
        let entry = opcode::PollAdd::new(types::Fd(reader.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(BELL_DATA);
        // SAFETY: a poll entry points at no memory; the fd stays open as long as the ring
        // (both are fields of `self`, and the ring cancels its entries when dropped).
        unsafe { self.ring.submission().push(&entry) }.expect("queue checked not full");
        self.bell_polled = true;
    }

    /// Pushes queued streamed reads while the submission queue has room.
    fn push_streams(&mut self) {
        let fd = types::Fd(self.file.as_raw_fd());
        while let Some(&slot) = self.queued.front() {
            if self.ring.submission().is_full() {
                break;
            }
            let read = self.streams[slot]
                .as_mut()
                .expect("queued slot holds a read");
            let rest = &mut read.buf.as_blocks_mut()[read.done_bytes..];
            let entry = opcode::Read::new(fd, rest.as_mut_ptr(), rest.len() as u32)
                .offset(read.offset + read.done_bytes as u64)
                .build()
                .user_data(STREAM_BIT | slot as u64);
            // SAFETY: the buffer belongs to `self.streams[slot]`, which is neither dropped nor
            // handed back before this entry's completion is reaped (`reap_reads` and `Drop`
            // wait for every entry in the kernel); its heap allocation does not move when the
            // slot vector grows. The fd is kept open by `self.file`.
            unsafe { self.ring.submission().push(&entry) }.expect("queue checked not full");
            self.queued.pop_front();
            self.streams_in_kernel += 1;
        }
    }

    /// Submits what is queued and, with `wait_one`, waits for one completion. Retries
    /// interrupted calls; a ring that fails outright leaves buffers in the kernel's hands, so
    /// the process stops rather than free them.
    fn submit_streams(&mut self, wait_one: bool) {
        loop {
            let want = usize::from(wait_one && self.streams_in_kernel > 0);
            match self.ring.submit_and_wait(want) {
                Ok(_) => return,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), "io_uring failed with reads in flight: {e}");
                    std::process::abort();
                }
            }
        }
    }

    /// Handles the streamed completions waiting in the queue; returns how many reads finished.
    fn drain_streams(&mut self, done: &mut Vec<ReadDone>) -> usize {
        let completed = self.take_completions();
        let mut finished = 0;
        for &(user_data, res) in &completed {
            let user_data = user_data as u64;
            assert!(
                user_data & STREAM_BIT != 0,
                "batch completion while streaming"
            );
            let slot = (user_data & !STREAM_BIT) as usize;
            self.streams_in_kernel -= 1;
            let read = self.streams[slot]
                .as_mut()
                .expect("completion for a live slot");
            let total = read.buf.as_blocks().len();
            match transfer_outcome(
                res,
                &mut read.done_bytes,
                total,
                io::ErrorKind::UnexpectedEof,
            ) {
                None => self.queued.push_back(slot),
                Some(result) => {
                    let read = self.streams[slot].take().expect("live slot");
                    self.free_slots.push(slot);
                    self.streams_out -= 1;
                    finished += 1;
                    done.push(ReadDone {
                        tag: read.tag,
                        buf: read.buf,
                        result,
                    });
                }
            }
        }
        self.completed = completed;
        finished
    }

    fn sqe(&self, index: usize, op: &mut IoOp<'_>) -> io_uring::squeue::Entry {
        let fd = types::Fd(self.file.as_raw_fd());
        let done = self.progress[index];
        let entry = match &mut op.kind {
            IoKind::Read { offset, buf } => {
                let rest = &mut buf[done..];
                opcode::Read::new(fd, rest.as_mut_ptr(), rest.len() as u32)
                    .offset(*offset + done as u64)
                    .build()
            }
            IoKind::Write { offset, buf } => {
                let rest = &buf[done..];
                opcode::Write::new(fd, rest.as_ptr(), rest.len() as u32)
                    .offset(*offset + done as u64)
                    .build()
            }
            IoKind::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        entry.user_data(index as u64)
    }
}

/// What one completion means for a transfer: `None` to resubmit what is left (interrupted,
/// or short), else its outcome. `done_bytes` advances by what the kernel moved; a completion
/// that moved nothing fails with `no_progress`, so a stuck transfer cannot loop forever.
fn transfer_outcome(
    res: i32,
    done_bytes: &mut usize,
    total: usize,
    no_progress: io::ErrorKind,
) -> Option<io::Result<()>> {
    if res == -libc::EINTR || res == -libc::EAGAIN {
        return None;
    }
    if res < 0 {
        return Some(Err(io::Error::from_raw_os_error(-res)));
    }
    if res == 0 {
        return Some(Err(io::Error::new(
            no_progress,
            "transfer made no progress",
        )));
    }
    *done_bytes += res as usize;
    (*done_bytes >= total).then_some(Ok(()))
}

fn op_len(op: &IoOp<'_>) -> usize {
    match &op.kind {
        IoKind::Read { buf, .. } => buf.len(),
        IoKind::Write { buf, .. } => buf.len(),
        IoKind::Flush => 0,
    }
}

impl Device for UringDevice {
    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    fn execute(&mut self, ops: &mut [IoOp<'_>]) {
        assert_eq!(self.streams_out, 0, "batch while streamed reads are out");
        if let Err(e) = self.enable() {
            for op in ops.iter_mut() {
                op.result = Some(Err(io::Error::new(e.kind(), format!("io_uring: {e}"))));
            }
            return;
        }
        self.progress.clear();
        self.progress.resize(ops.len(), 0);
        self.resubmit.clear();
        for op in ops.iter_mut() {
            assert!(
                op_len(op) <= u32::MAX as usize,
                "single transfer over 4 GiB"
            );
            op.result = None;
        }
        let mut next = 0usize;
        let mut in_flight = 0usize;
        // A panic between a submission and its completion would free buffers the kernel may
        // still write into: abort instead of unwinding out of this loop.
        let guard = AbortOnUnwind("io_uring batch with submissions in flight");
        while next < ops.len() || in_flight > 0 || !self.resubmit.is_empty() {
            // Fill the submission queue: resubmissions first, then new ops.
            loop {
                let index = if let Some(&i) = self.resubmit.front() {
                    i
                } else if next < ops.len() {
                    next
                } else {
                    break;
                };
                if self.ring.submission().is_full() {
                    break;
                }
                let entry = self.sqe(index, &mut ops[index]);
                // SAFETY: the entry points into `ops[index]`'s buffer, which is borrowed for
                // the whole of `execute`; we do not return before every submitted entry has
                // completed (the loop runs until `in_flight == 0`), so the buffer outlives
                // the kernel's use of it. The fd is kept open by `self.file`.
                unsafe { self.ring.submission().push(&entry) }.expect("queue checked not full");
                if self.resubmit.front() == Some(&index) {
                    self.resubmit.pop_front();
                } else {
                    next += 1;
                }
                in_flight += 1;
            }
            if in_flight == 0 {
                continue;
            }
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.raw_os_error() == Some(libc::EINTR) || e.raw_os_error() == Some(libc::EBUSY) {
                    continue;
                }
                // The ring itself failed: nothing more can complete. Mark what is left.
                for op in ops.iter_mut().filter(|op| op.result.is_none()) {
                    op.result = Some(Err(io::Error::new(e.kind(), format!("io_uring: {e}"))));
                }
                // Entries already in the kernel may still complete; wait for them so no
                // buffer is released while in use.
                while in_flight > 0 {
                    if self.ring.submit_and_wait(1).is_err() {
                        std::process::abort();
                    }
                    let completed = self.take_completions();
                    in_flight -= completed.len();
                    self.completed = completed;
                }
                return;
            }
            let completed = self.take_completions();
            for &(index, res) in &completed {
                in_flight -= 1;
                let op = &mut ops[index];
                let outcome = match op.kind {
                    IoKind::Flush if res >= 0 => Some(Ok(())),
                    IoKind::Read { .. } => transfer_outcome(
                        res,
                        &mut self.progress[index],
                        op_len(op),
                        io::ErrorKind::UnexpectedEof,
                    ),
                    _ => transfer_outcome(
                        res,
                        &mut self.progress[index],
                        op_len(op),
                        io::ErrorKind::WriteZero,
                    ),
                };
                match outcome {
                    None => self.resubmit.push_back(index),
                    Some(result) => op.result = Some(result),
                }
            }
            self.completed = completed;
        }
        // Every submitted entry has completed: unwinding is safe again.
        std::mem::forget(guard);
    }

    fn start_read(&mut self, tag: u64, offset: u64, buf: AlignedBuf) {
        assert!(
            buf.as_blocks().len() <= u32::MAX as usize,
            "read over 4 GiB"
        );
        let read = Streamed {
            tag,
            offset,
            buf,
            done_bytes: 0,
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.streams[slot] = Some(read);
                slot
            }
            None => {
                self.streams.push(Some(read));
                self.streams.len() - 1
            }
        };
        self.queued.push_back(slot);
        self.streams_out += 1;
        // Each read goes to the kernel on its own, as fio submits by default
        // (iodepth_batch_submit=1): submitting the replacements of a burst of completions
        // together cost `cess-bench engine`'s read-8KiB-random about a tenth of its IOPS on a
        // virtio disk. A ring not yet enabled fails its reads in `reap_reads` instead.
        if self.enabled {
            self.push_streams();
            self.submit_streams(false);
        }
    }

    fn reap_reads(&mut self, wait: bool, done: &mut Vec<ReadDone>) {
        if let Err(e) = self.enable() {
            // Nothing was submitted yet, so nothing is in the kernel's hands: fail the reads.
            for slot in self.queued.drain(..) {
                let read = self.streams[slot].take().expect("queued slot holds a read");
                self.free_slots.push(slot);
                self.streams_out -= 1;
                done.push(ReadDone {
                    tag: read.tag,
                    buf: read.buf,
                    result: Err(io::Error::new(e.kind(), format!("io_uring: {e}"))),
                });
            }
            return;
        }
        self.bell_rang = false;
        loop {
            if wait {
                self.poll_bell();
            }
            self.push_streams();
            let wait_one = wait && self.streams_out > 0;
            self.submit_streams(wait_one);
            let finished = self.drain_streams(done);
            if !wait_one || finished > 0 || self.bell_rang {
                return;
            }
        }
    }

    fn attach_bell(&mut self, bell: PipeReader) {
        self.bell = Some(bell);
    }

    fn reads_in_flight(&self) -> usize {
        self.streams_out
    }

    fn try_clone(&self) -> io::Result<Box<dyn Device>> {
        Ok(Box::new(UringDevice::new(
            self.file.clone(),
            self.path.clone(),
            self.len_bytes,
        )?))
    }

    fn describe(&self) -> String {
        format!("{} (io_uring, O_DIRECT)", self.path.display())
    }
}

impl Drop for UringDevice {
    // Buffers of reads still in the kernel must outlive them.
    fn drop(&mut self) {
        let mut done = Vec::new();
        while self.streams_in_kernel > 0 {
            self.submit_streams(true);
            self.drain_streams(&mut done);
        }
    }
}

/// Aborts the process if dropped while unwinding (see its use in `execute`); forgotten on the
/// normal path.
struct AbortOnUnwind(&'static str);

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "panic during {}: aborting (the kernel may still use its buffers)",
                self.0
            );
            std::process::abort();
        }
    }
}
