//! The scrub: a step verifies up to a budget per shard and reports where every shard
//! stands; the background scrubber runs steps at a byte rate on its own thread.

use super::Store;
use super::driver::ShardSender;
use crate::aligned::BLOCK_BYTES;
use crate::error::StoreError;
use crate::shard::Request;
use crate::types::ScrubProgress;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Debug)]
pub(super) struct Scrubber {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Store {
    /// Verifies up to about `max_bytes` per shard, continuing where the last step stopped
    /// (also across restarts), and returns the progress. Zero only reports.
    pub fn scrub_step(&self, max_bytes: u64) -> Result<ScrubProgress, StoreError> {
        scrub_step(&self.senders(), max_bytes)
    }

    pub fn scrub_progress(&self) -> Result<ScrubProgress, StoreError> {
        self.scrub_step(0)
    }

    fn senders(&self) -> Vec<ShardSender> {
        self.shards.iter().filter_map(|s| s.tx.clone()).collect()
    }

    /// Starts the background scrub at about `rate_bytes_per_sec`; it logs each finished pass.
    pub fn start_scrub(&self, rate_bytes_per_sec: u64) {
        self.stop_scrub();
        let senders = self.senders();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let step_bytes = (rate_bytes_per_sec / 4).max(BLOCK_BYTES as u64);
        let thread = std::thread::spawn(move || {
            let mut last_passes = None;
            while !stop_flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                match scrub_step(&senders, step_bytes) {
                    Ok(progress) => {
                        if last_passes.is_some_and(|p| p < progress.passes_completed) {
                            tracing::info!(
                                passes = progress.passes_completed,
                                corrupt = progress.corrupt.len(),
                                "scrub pass complete"
                            );
                        }
                        last_passes = Some(progress.passes_completed);
                    }
                    Err(e) => {
                        tracing::warn!("scrub stopped: {e}");
                        return;
                    }
                }
                let budget = Duration::from_secs_f64(
                    step_bytes as f64 * senders.len() as f64 / rate_bytes_per_sec.max(1) as f64,
                );
                let sleep_until = started + budget;
                while Instant::now() < sleep_until && !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20).min(sleep_until - Instant::now()));
                }
            }
        });
        *self.scrubber.lock().unwrap_or_else(|p| p.into_inner()) = Some(Scrubber { stop, thread });
    }

    pub fn stop_scrub(&self) {
        if let Some(s) = self
            .scrubber
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            s.stop.store(true, Ordering::Relaxed);
            let _ = s.thread.join();
        }
    }
}

fn scrub_step(senders: &[ShardSender], max_bytes: u64) -> Result<ScrubProgress, StoreError> {
    let mut receivers = Vec::new();
    for tx in senders {
        let (reply, rx) = oneshot::channel();
        tx.send(Request::Scrub { max_bytes, reply })?;
        receivers.push(rx);
    }
    let mut shards = Vec::with_capacity(receivers.len());
    for rx in receivers {
        shards.push(rx.blocking_recv().unwrap_or(Err(StoreError::Closed))?);
    }
    // The store's pass is the slowest shard's; a shard already past it counts as verified.
    let passes_completed = shards.iter().map(|s| s.passes_completed).min().unwrap_or(0);
    let mut progress = ScrubProgress {
        passes_completed,
        ..ScrubProgress::default()
    };
    for shard in shards {
        progress.pass_verified_bytes += if shard.passes_completed > passes_completed {
            shard.stored_bytes
        } else {
            shard.pass_verified_bytes
        };
        progress.stored_bytes += shard.stored_bytes;
        progress.corrupt.extend(shard.corrupt);
    }
    Ok(progress)
}
