//! The I/O layer: a block device that executes batches of reads, writes and flushes.
//!
//! Two implementations: [`UringDevice`] (io_uring + O_DIRECT on a file or block device) and
//! [`SimDisk`] (in memory, deterministic, with the faults of eco-reliability §B5). The shard
//! logic above sees only [`Device`], so every crash and fault path runs against both.

mod bell;
mod sim;
#[allow(unsafe_code)]
mod uring;

pub use bell::Bell;
pub use sim::{SimDisk, SimFaults};
pub use uring::{UringDevice, open_target};

use crate::aligned::AlignedBuf;
use std::io;

/// One operation in a batch. Offsets and lengths are multiples of
/// [`crate::aligned::BLOCK_BYTES`], and buffers are block-aligned (see [`crate::AlignedBuf`]).
#[derive(Debug)]
pub enum IoKind<'a> {
    /// Fill `buf` from the device at byte `offset`.
    Read { offset: u64, buf: &'a mut [u8] },
    /// Write `buf` to the device at byte `offset`.
    Write { offset: u64, buf: &'a [u8] },
    /// Make durable every write whose batch completed before this batch began.
    Flush,
}

/// An operation and, once executed, its outcome.
#[derive(Debug)]
pub struct IoOp<'a> {
    pub kind: IoKind<'a>,
    /// `None` until executed; a short transfer that cannot complete is an error.
    pub result: Option<io::Result<()>>,
}

impl<'a> IoOp<'a> {
    pub fn read(offset: u64, buf: &'a mut [u8]) -> IoOp<'a> {
        IoOp {
            kind: IoKind::Read { offset, buf },
            result: None,
        }
    }
    pub fn write(offset: u64, buf: &'a [u8]) -> IoOp<'a> {
        IoOp {
            kind: IoKind::Write { offset, buf },
            result: None,
        }
    }
    pub fn flush() -> IoOp<'a> {
        IoOp {
            kind: IoKind::Flush,
            result: None,
        }
    }
    /// The outcome, as an owned result; an op that was never executed is an error.
    pub fn take_result(&mut self) -> io::Result<()> {
        self.result
            .take()
            .unwrap_or_else(|| Err(io::Error::other("operation not executed")))
    }
}

/// A read started with [`Device::start_read`], handed back by [`Device::reap_reads`].
#[derive(Debug)]
pub struct ReadDone {
    pub tag: u64,
    pub buf: AlignedBuf,
    pub result: io::Result<()>,
}

/// A block device. Contract (every implementation keeps it):
/// - `execute` runs every op of the batch, possibly concurrently and in any order, and returns
///   when all have completed, each with its own result. Callers never put two ops on
///   overlapping ranges in one batch, nor a flush together with writes.
/// - Streamed reads (`start_read`, `reap_reads`) run beside each other without waiting for a
///   batch; `execute` is only called when none is in flight, so a streamed read never races a
///   write of the same shard.
/// - A write that returned `Ok` is visible to later reads, but survives a crash only after a
///   later `Flush` returned `Ok`.
/// - Ranges never written read back as zeros on a fresh simulated disk and as whatever the
///   target held on a real one.
pub trait Device: Send + std::fmt::Debug {
    /// Usable length in bytes, rounded down to whole blocks.
    fn len_bytes(&self) -> u64;
    /// Runs a batch; see the trait's contract.
    fn execute(&mut self, ops: &mut [IoOp<'_>]);
    /// Starts reading `buf.as_blocks().len()` bytes at `offset` into `buf`, which the device
    /// owns until the read comes back from `reap_reads` with the same `tag`.
    fn start_read(&mut self, tag: u64, offset: u64, buf: AlignedBuf);
    /// Moves finished streamed reads into `done`. With `wait`, blocks until at least one has
    /// finished or the attached bell rings, unless none is in flight.
    fn reap_reads(&mut self, wait: bool, done: &mut Vec<ReadDone>);
    /// From now on a wait in `reap_reads` also ends when `bell` becomes readable (see
    /// [`Bell`]). A device whose waits do not block may ignore it.
    fn attach_bell(&mut self, bell: std::io::PipeReader) {
        drop(bell);
    }
    /// Streamed reads started and not yet handed back.
    fn reads_in_flight(&self) -> usize;
    /// A second handle on the same device (for another shard's thread).
    fn try_clone(&self) -> io::Result<Box<dyn Device>>;
    /// What this device is, for logs and errors.
    fn describe(&self) -> String;
}

/// Runs one op alone and returns its result.
pub fn execute_one(device: &mut dyn Device, op: IoOp<'_>) -> io::Result<()> {
    let mut ops = [op];
    device.execute(&mut ops);
    ops[0].take_result()
}
