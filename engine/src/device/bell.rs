//! A shard's doorbell: wakes a shard thread blocked on its device when a request arrives.
//!
//! A shard with reads in flight sleeps in the kernel waiting for a completion, not on its
//! request queue, so a request sent meanwhile would wait for the next completion (on a
//! virtio disk completions come in bursts hundreds of microseconds apart) before it even
//! reaches the device. Before it sleeps the shard [`Bell::arm`]s the bell and looks at its
//! queue once more; a sender that finds the bell armed writes one byte to a pipe whose read
//! end the device polls, which ends the wait. Senders pay a system call only while the
//! shard sleeps.

use std::io::{self, PipeReader, PipeWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// The sending side, shared by the store's handle and the shard's thread.
#[derive(Debug)]
pub struct Bell {
    sleeping: AtomicBool,
    writer: PipeWriter,
}

impl Bell {
    /// A bell and the pipe end a device waits on (see [`super::Device::attach_bell`]).
    pub fn new() -> io::Result<(Bell, PipeReader)> {
        let (reader, writer) = io::pipe()?;
        Ok((
            Bell {
                sleeping: AtomicBool::new(false),
                writer,
            },
            reader,
        ))
    }

    /// Called by the shard before it looks at its queue a last time and sleeps.
    pub fn arm(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// Called by the shard once awake.
    pub fn disarm(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Called by a sender after its request is queued: wakes the shard if it sleeps. Only the
    /// sender that finds the bell armed writes, so at most one byte is written per sleep.
    pub fn ring(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            // The shard holds the read end for as long as it can sleep; a failed write means
            // it has exited and needs no waking.
            let _ = (&self.writer).write(&[1]);
        }
    }
}
