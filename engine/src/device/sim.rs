//! A deterministic simulated disk that injects the faults of eco-reliability §B5.
//!
//! The disk keeps two images: `current` (what reads see) and `durable` (what survives a
//! crash). A write lands in `current` and joins the pending list; a flush copies the pending
//! writes into `durable`. A crash resolves each pending write at random: kept, lost, or torn
//! (a prefix of its sectors lands). All randomness comes from one seeded ChaCha stream, so a
//! run replays exactly from its seed.

use super::{Device, IoKind, IoOp, ReadDone};
use crate::aligned::AlignedBuf;
use crate::aligned::BLOCK_BYTES;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// Sector size the simulator tears writes at.
const SECTOR_BYTES: usize = 512;

/// Per-operation fault probabilities, all zero by default.
#[derive(Debug, Clone, Default)]
pub struct SimFaults {
    /// A read returns one flipped bit somewhere in its buffer.
    pub read_bit_flip: f64,
    /// A read returns one 512-byte sector of random bytes.
    pub read_sector_garbage: f64,
    /// A read returns the bytes of another block-aligned location of the same length.
    pub misdirected_read: f64,
    /// A write lands at another block-aligned location; its target keeps the old bytes.
    pub misdirected_write: f64,
    /// A write reports success but never reaches the media.
    pub lost_write: f64,
    /// A read fails with EIO.
    pub read_error: f64,
    /// A write fails with EIO (after possibly landing partially).
    pub write_error: f64,
    /// A flush fails with EIO; its pending writes stay pending.
    pub flush_error: f64,
}

#[derive(Debug)]
struct PendingWrite {
    offset: u64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct SimState {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<PendingWrite>,
    rng: ChaCha8Rng,
    faults: SimFaults,
    // Writes fail with ENOSPC once this many more bytes have been written.
    space_left_bytes: Option<u64>,
    // Ops left before the simulated power cut; at zero every op fails until `restart`.
    ops_before_crash: Option<u64>,
    crashed: bool,
    ops_executed: u64,
    faults_injected: u64,
}

/// A shared, in-memory, fault-injecting disk. Clones share the same media.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
    /// While true, every batch waits before it runs (a disk that stalls).
    hold: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl SimDisk {
    /// A zeroed disk of `len_bytes` (rounded down to whole blocks) with its own seed.
    pub fn new(len_bytes: u64, seed: u64) -> SimDisk {
        let len = (len_bytes as usize) / BLOCK_BYTES * BLOCK_BYTES;
        SimDisk {
            state: Arc::new(Mutex::new(SimState {
                current: vec![0; len],
                durable: vec![0; len],
                pending: Vec::new(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                faults: SimFaults::default(),
                space_left_bytes: None,
                ops_before_crash: None,
                crashed: false,
                ops_executed: 0,
                faults_injected: 0,
            })),
            hold: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
        }
    }

    /// Stalls the disk: from now on a batch waits until [`SimDisk::release`] (a shard that
    /// stops taking requests, so its queue fills).
    pub fn hold(&self) {
        *self.hold.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// Ends a [`SimDisk::hold`].
    pub fn release(&self) {
        *self.hold.0.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.hold.1.notify_all();
    }

    fn wait_while_held(&self) {
        let (held, changed) = &*self.hold;
        let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
        while *held {
            held = changed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock only happens in a failing test; keep the state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A device handle on this disk.
    pub fn device(&self) -> Box<dyn Device> {
        Box::new(SimDevice {
            disk: self.clone(),
            streamed: Vec::new(),
        })
    }

    /// Replaces the fault probabilities.
    pub fn set_faults(&self, faults: SimFaults) {
        self.lock().faults = faults;
    }

    /// Writes start failing with ENOSPC after `bytes` more bytes (None: never).
    pub fn set_space_left(&self, bytes: Option<u64>) {
        self.lock().space_left_bytes = bytes;
    }

    /// The power fails after `ops` more operations: from then on every op fails until
    /// [`SimDisk::restart`].
    pub fn crash_after_ops(&self, ops: u64) {
        self.lock().ops_before_crash = Some(ops);
    }

    /// Cuts the power now (see [`SimDisk::crash_after_ops`]).
    pub fn crash_now(&self) {
        let mut state = self.lock();
        state.crashed = true;
        state.ops_before_crash = None;
    }

    /// Whether the power is off.
    pub fn is_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Powers the disk back on: every unflushed write is kept, lost or torn at random, and
    /// reads then see exactly the durable image.
    pub fn restart(&self) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let pending = std::mem::take(&mut state.pending);
        for write in pending {
            let sectors = write.bytes.len().div_ceil(SECTOR_BYTES);
            let landed_sectors = match state.rng.random_range(0..3u8) {
                0 => sectors,
                1 => 0,
                _ => state.rng.random_range(0..=sectors),
            };
            let landed = (landed_sectors * SECTOR_BYTES).min(write.bytes.len());
            let at = write.offset as usize;
            state.durable[at..at + landed].copy_from_slice(&write.bytes[..landed]);
        }
        state.current.copy_from_slice(&state.durable);
        state.crashed = false;
        state.ops_before_crash = None;
    }

    /// Flips bit `bit` (0..8) of the byte at `offset`, at rest (in both images).
    pub fn flip_bit(&self, offset: u64, bit: u8) {
        let mut state = self.lock();
        let at = offset as usize;
        state.current[at] ^= 1 << bit;
        state.durable[at] ^= 1 << bit;
    }

    /// Copies `len` bytes at rest from `from` to `to` (a valid-looking chunk in the wrong place).
    pub fn copy_at_rest(&self, from: u64, to: u64, len: usize) {
        let mut state = self.lock();
        let (from, to) = (from as usize, to as usize);
        state.current.copy_within(from..from + len, to);
        state.durable.copy_within(from..from + len, to);
    }

    /// Reads `len` bytes of the current image (for tests that inspect the media).
    pub fn peek(&self, offset: u64, len: usize) -> Vec<u8> {
        let state = self.lock();
        state.current[offset as usize..offset as usize + len].to_vec()
    }

    /// How many faults were injected so far.
    pub fn faults_injected(&self) -> u64 {
        self.lock().faults_injected
    }

    /// How many operations ran so far.
    pub fn ops_executed(&self) -> u64 {
        self.lock().ops_executed
    }
}

#[derive(Debug)]
struct SimDevice {
    disk: SimDisk,
    streamed: Vec<ReadDone>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated {what}"))
}

impl SimState {
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    fn other_offset(&mut self, len: usize, not: u64) -> u64 {
        let blocks = (self.current.len() - len) / BLOCK_BYTES;
        loop {
            let candidate = (self.rng.random_range(0..=blocks) * BLOCK_BYTES) as u64;
            if candidate != not || blocks == 0 {
                return candidate;
            }
        }
    }

    fn run(&mut self, op: &mut IoOp<'_>) -> io::Result<()> {
        self.ops_executed += 1;
        if let Some(left) = self.ops_before_crash {
            if left == 0 {
                self.crashed = true;
                self.ops_before_crash = None;
            } else {
                self.ops_before_crash = Some(left - 1);
            }
        }
        if self.crashed {
            return Err(eio("power loss"));
        }
        match &mut op.kind {
            IoKind::Read { offset, buf } => {
                check_range(*offset, buf.len(), self.current.len())?;
                if self.chance(self.faults.read_error) {
                    self.faults_injected += 1;
                    return Err(eio("read error"));
                }
                let mut from = *offset as usize;
                if self.chance(self.faults.misdirected_read) {
                    self.faults_injected += 1;
                    from = self.other_offset(buf.len(), *offset) as usize;
                }
                buf.copy_from_slice(&self.current[from..from + buf.len()]);
                if !buf.is_empty() && self.chance(self.faults.read_bit_flip) {
                    self.faults_injected += 1;
                    let at = self.rng.random_range(0..buf.len());
                    buf[at] ^= 1 << self.rng.random_range(0..8u8);
                }
                if buf.len() >= SECTOR_BYTES && self.chance(self.faults.read_sector_garbage) {
                    self.faults_injected += 1;
                    let sector = self.rng.random_range(0..buf.len() / SECTOR_BYTES);
                    self.rng
                        .fill(&mut buf[sector * SECTOR_BYTES..(sector + 1) * SECTOR_BYTES]);
                }
                Ok(())
            }
            IoKind::Write { offset, buf } => {
                check_range(*offset, buf.len(), self.current.len())?;
                if let Some(left) = self.space_left_bytes {
                    if (buf.len() as u64) > left {
                        self.faults_injected += 1;
                        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                    }
                    self.space_left_bytes = Some(left - buf.len() as u64);
                }
                if self.chance(self.faults.write_error) {
                    self.faults_injected += 1;
                    // A failed write may still have landed partially.
                    let landed = self.rng.random_range(0..=buf.len() / SECTOR_BYTES) * SECTOR_BYTES;
                    self.land(*offset, &buf[..landed]);
                    return Err(eio("write error"));
                }
                if self.chance(self.faults.lost_write) {
                    self.faults_injected += 1;
                    return Ok(());
                }
                let mut to = *offset;
                if self.chance(self.faults.misdirected_write) {
                    self.faults_injected += 1;
                    to = self.other_offset(buf.len(), *offset);
                }
                self.land(to, buf);
                Ok(())
            }
            IoKind::Flush => {
                if self.chance(self.faults.flush_error) {
                    self.faults_injected += 1;
                    return Err(eio("flush error"));
                }
                for write in std::mem::take(&mut self.pending) {
                    let at = write.offset as usize;
                    self.durable[at..at + write.bytes.len()].copy_from_slice(&write.bytes);
                }
                Ok(())
            }
        }
    }

    fn land(&mut self, offset: u64, bytes: &[u8]) {
        let at = offset as usize;
        self.current[at..at + bytes.len()].copy_from_slice(bytes);
        self.pending.push(PendingWrite {
            offset,
            bytes: bytes.to_vec(),
        });
    }
}

fn check_range(offset: u64, len: usize, device_len: usize) -> io::Result<()> {
    let aligned = offset.is_multiple_of(BLOCK_BYTES as u64) && len.is_multiple_of(BLOCK_BYTES);
    if !aligned {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unaligned I/O (EINVAL)",
        ));
    }
    if offset as usize + len > device_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "I/O past the end of the device",
        ));
    }
    Ok(())
}

impl Device for SimDevice {
    fn len_bytes(&self) -> u64 {
        self.disk.lock().current.len() as u64
    }

    fn execute(&mut self, ops: &mut [IoOp<'_>]) {
        assert!(
            self.streamed.is_empty(),
            "batch while streamed reads are out"
        );
        self.disk.wait_while_held();
        let mut state = self.disk.lock();
        for op in ops.iter_mut() {
            op.result = Some(state.run(op));
        }
    }

    // Reads run at once (deterministically, with the same faults as a batch) and wait to be
    // reaped, so the shard's streaming logic runs unchanged against the simulator.
    fn start_read(&mut self, tag: u64, offset: u64, mut buf: AlignedBuf) {
        let mut op = IoOp::read(offset, buf.as_blocks_mut());
        let result = self.disk.lock().run(&mut op);
        self.streamed.push(ReadDone { tag, buf, result });
    }

    fn reap_reads(&mut self, _wait: bool, done: &mut Vec<ReadDone>) {
        done.append(&mut self.streamed);
    }

    fn reads_in_flight(&self) -> usize {
        self.streamed.len()
    }

    fn try_clone(&self) -> io::Result<Box<dyn Device>> {
        Ok(self.disk.device())
    }

    fn describe(&self) -> String {
        format!("simulated disk ({} bytes)", self.len_bytes())
    }
}
