//! The real backend: io_uring on a file or block device opened with O_DIRECT.
//!
//! One ring per shard (per thread). A batch is pushed to the submission queue in as many
//! passes as the ring needs, and short transfers are resubmitted for their remainder. This is
//! one of the few modules allowed to use `unsafe`: io_uring reads and writes through raw
//! pointers that must stay valid until their completion arrives.

use super::{Device, IoKind, IoOp};
use io_uring::{IoUring, opcode, types};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const RING_ENTRIES: u32 = 128;

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
        let ring = IoUring::new(RING_ENTRIES).map_err(|e| {
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
        })
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
                    in_flight -= self.ring.completion().count();
                }
                return;
            }
            // Drained into a reused buffer: the completion queue borrows the ring, and the
            // loop below needs `self` for resubmissions.
            let mut completed = std::mem::take(&mut self.completed);
            completed.clear();
            completed.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data() as usize, c.result())),
            );
            for &(index, res) in &completed {
                in_flight -= 1;
                let op = &mut ops[index];
                if res < 0 {
                    if res == -libc::EINTR || res == -libc::EAGAIN {
                        self.resubmit.push_back(index);
                    } else {
                        op.result = Some(Err(io::Error::from_raw_os_error(-res)));
                    }
                    continue;
                }
                let total = op_len(op);
                if matches!(op.kind, IoKind::Flush) {
                    op.result = Some(Ok(()));
                    continue;
                }
                if res == 0 {
                    let kind = match op.kind {
                        IoKind::Read { .. } => io::ErrorKind::UnexpectedEof,
                        _ => io::ErrorKind::WriteZero,
                    };
                    op.result = Some(Err(io::Error::new(kind, "transfer made no progress")));
                    continue;
                }
                self.progress[index] += res as usize;
                if self.progress[index] < total {
                    self.resubmit.push_back(index);
                } else {
                    op.result = Some(Ok(()));
                }
            }
            self.completed = completed;
        }
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
