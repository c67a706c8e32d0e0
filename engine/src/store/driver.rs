//! The shard driver: the bounded queue to each shard thread, the [`Pending`] a call returns,
//! and the loop each shard thread runs.

use crate::device::Bell;
use crate::error::StoreError;
use crate::shard::{Request, Shard};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// A call in flight: `.wait()` blocks, `.await` suspends. A call whose shard queue was full
/// is sent only when waited for or polled, so a dropped `Pending` may never have been sent.
#[must_use = "a call may not be sent until it is awaited or waited for"]
pub struct Pending<T> {
    pub(super) state: PendingState<T>,
}

pub(super) enum PendingState<T> {
    /// The shard's queue was full: the request waits here to be sent.
    Queued {
        sender: ShardSender,
        request: Option<Request>,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    },
    Sent(oneshot::Receiver<Result<T, StoreError>>),
    Failed(StoreError),
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            PendingState::Queued { .. } => "queued",
            PendingState::Sent(_) => "sent",
            PendingState::Failed(_) => "failed",
        };
        f.debug_struct("Pending").field("state", &state).finish()
    }
}

impl<T> Pending<T> {
    pub(super) fn failed(error: StoreError) -> Pending<T> {
        Pending {
            state: PendingState::Failed(error),
        }
    }

    pub(super) fn sent(rx: oneshot::Receiver<Result<T, StoreError>>) -> Pending<T> {
        Pending {
            state: PendingState::Sent(rx),
        }
    }

    /// Blocks until the answer arrives (and, when the shard's queue was full, until there is
    /// room for the request). Must not be called inside an async runtime.
    pub fn wait(self) -> Result<T, StoreError> {
        match self.state {
            PendingState::Queued {
                sender,
                request,
                rx,
            } => {
                let request = request.expect("a queued call holds its request until sent");
                sender.send(request)?;
                rx.blocking_recv().unwrap_or(Err(StoreError::Closed))
            }
            PendingState::Sent(rx) => rx.blocking_recv().unwrap_or(Err(StoreError::Closed)),
            PendingState::Failed(e) => Err(e),
        }
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, StoreError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let PendingState::Queued {
            sender, request, ..
        } = &mut this.state
        {
            let queued = request.take().expect("a queued call holds its request");
            match sender.try_send_or_register(queued, cx.waker()) {
                Attempt::Sent => {}
                Attempt::Full(back) => {
                    *request = Some(*back);
                    return Poll::Pending;
                }
                Attempt::Closed => {
                    this.state = PendingState::Failed(StoreError::Closed);
                }
            }
            if let PendingState::Queued { .. } = this.state {
                let PendingState::Queued { rx, .. } =
                    std::mem::replace(&mut this.state, PendingState::Failed(StoreError::Closed))
                else {
                    unreachable!("matched above")
                };
                this.state = PendingState::Sent(rx);
            }
        }
        match &mut this.state {
            PendingState::Sent(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(StoreError::Closed))),
            PendingState::Failed(e) => Poll::Ready(Err(e.clone())),
            PendingState::Queued { .. } => unreachable!("sent or failed above"),
        }
    }
}

/// Tasks waiting for room in a shard's queue; the shard wakes them when it takes requests.
#[derive(Debug, Default)]
pub(super) struct Room {
    pub(super) any: AtomicBool,
    pub(super) waiting: Mutex<Vec<Waker>>,
}

impl Room {
    /// Called by the shard after it took requests off its queue.
    pub(super) fn wake(&self) {
        if self.any.swap(false, Ordering::SeqCst) {
            let wakers =
                std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
            for waker in wakers {
                waker.wake();
            }
        }
    }
}

/// The sending side of a shard's queue: a sender rings the shard's bell after queueing.
#[derive(Debug, Clone)]
pub(super) struct ShardSender {
    pub(super) tx: SyncSender<Request>,
    pub(super) bell: Arc<Bell>,
    pub(super) room: Arc<Room>,
}

impl ShardSender {
    /// Queues `request`, waiting for room when the queue is full (backpressure, for blocking
    /// callers); fails only when the shard has stopped.
    pub(super) fn send(&self, request: Request) -> Result<(), StoreError> {
        let sent = match self.tx.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(request)) => self.tx.send(request).map_err(|_| ()),
            Err(TrySendError::Disconnected(_)) => Err(()),
        };
        sent.map_err(|()| StoreError::Closed)?;
        self.bell.ring();
        Ok(())
    }

    /// Queues `request` if there is room; otherwise registers `waker` for the shard to wake
    /// when there is, and gives the request back. Never blocks.
    pub(super) fn try_send_or_register(&self, request: Request, waker: &Waker) -> Attempt {
        let request = match self.tx.try_send(request) {
            Ok(()) => {
                self.bell.ring();
                return Attempt::Sent;
            }
            Err(TrySendError::Full(request)) => request,
            Err(TrySendError::Disconnected(_)) => return Attempt::Closed,
        };
        {
            let mut waiting = self.room.waiting.lock().unwrap_or_else(|p| p.into_inner());
            // A task polled again while the queue stays full is registered once.
            if !waiting.iter().any(|w| w.will_wake(waker)) {
                waiting.push(waker.clone());
            }
            self.room.any.store(true, Ordering::SeqCst);
        }
        // The shard may have made room between the first try and the registration: look once
        // more, so that no wake-up is lost.
        match self.tx.try_send(request) {
            Ok(()) => {
                self.bell.ring();
                Attempt::Sent
            }
            Err(TrySendError::Full(request)) => Attempt::Full(Box::new(request)),
            Err(TrySendError::Disconnected(_)) => Attempt::Closed,
        }
    }
}

/// What one non-blocking send did.
pub(super) enum Attempt {
    Sent,
    /// No room: the request comes back, and the task is woken when there is.
    Full(Box<Request>),
    Closed,
}

#[derive(Debug)]
pub(super) struct ShardHandle {
    pub(super) tx: Option<ShardSender>,
    pub(super) thread: Option<JoinHandle<()>>,
}

/// Wakes every task waiting for room when the shard's loop ends (even by a panic): their
/// next poll finds the queue closed and fails with `Closed` instead of waiting for ever.
struct WakeOnExit<'a>(&'a Room);

impl Drop for WakeOnExit<'_> {
    fn drop(&mut self) {
        self.0.any.store(true, Ordering::SeqCst);
        self.0.wake();
    }
}

pub(super) fn shard_loop(mut shard: Shard, rx: Receiver<Request>, bell: &Bell, room: &Room) {
    let _wake_on_exit = WakeOnExit(room);
    // Declared after the guard, so dropped before it: the queue is closed by the time the
    // waiting tasks look again.
    let rx = rx;
    const ROUND_REQUESTS_MAX: usize = 256;
    let mut carry: VecDeque<Request> = VecDeque::new();
    let mut batch: Vec<Request> = Vec::new();
    loop {
        batch.extend(carry.drain(..));
        // Block for a request only when nothing else can make progress: with reads in
        // flight, their completions wake the loop instead.
        if batch.is_empty() && !shard.reads_in_flight() {
            match rx.recv() {
                Ok(request) => batch.push(request),
                Err(_) => return,
            }
        }
        while batch.len() < ROUND_REQUESTS_MAX {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        // Requests left the queue: senders waiting for room may go on.
        room.wake();
        // Reads start at once; everything else waits for a round.
        let round: Vec<Request> = batch
            .drain(..)
            .filter_map(|request| shard.stream_read(request))
            .collect();
        shard.start_batched_reads();
        if round.is_empty() {
            // Sleep on the device until a read finishes or a request rings the bell; a
            // request queued before the bell was armed is seen by this last look.
            bell.arm();
            match rx.try_recv() {
                Ok(request) => carry.push_back(request),
                Err(_) => shard.reap_reads(true),
            }
            bell.disarm();
            continue;
        }
        // A round may free extents that a streamed read is still reading.
        shard.finish_streamed_reads();
        carry.extend(shard.run_round(round));
    }
}
