//! Fairness between peers: request slots handed out round-robin ([`FairGate`]) and a request
//! rate per peer ([`PeerRates`]).
//!
//! Request slots handed out round-robin between peers, so that no peer, and no crowd of
//! fresh keys, can make another wait behind its backlog: with `slots` requests processed at
//! once, a peer with one request waiting is served after at most one request of each other
//! peer waiting. The server takes a slot for a request's CPU work (its signature check).

use libp2p_identity::PeerId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Debug)]
pub(crate) struct FairGate {
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    free: usize,
    /// Peers with requests waiting, in turn order (each listed once).
    turns: VecDeque<PeerId>,
    waiting: HashMap<PeerId, VecDeque<oneshot::Sender<()>>>,
}

/// A slot, given back (to the next peer in turn) on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    gate: Arc<FairGate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// A turn being waited for; dropped before it became a [`Slot`], it gives back a slot that
/// was handed to it meanwhile.
struct Waiting {
    rx: Option<oneshot::Receiver<()>>,
    gate: Arc<FairGate>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

impl FairGate {
    pub fn new(slots: usize) -> Arc<FairGate> {
        Arc::new(FairGate {
            state: Mutex::new(GateState {
                free: slots.max(1),
                turns: VecDeque::new(),
                waiting: HashMap::new(),
            }),
        })
    }

    /// Waits for `peer`'s turn. Cancel-safe: a waiter dropped before its turn passes it on,
    /// and one dropped after the slot was handed to it gives the slot back.
    pub async fn enter(self: &Arc<Self>, peer: PeerId) -> Slot {
        let rx = {
            let mut state = self.lock();
            if state.free > 0 && state.turns.is_empty() {
                state.free -= 1;
                return Slot { gate: self.clone() };
            }
            let (tx, rx) = oneshot::channel();
            let queue = state.waiting.entry(peer).or_default();
            if queue.is_empty() {
                state.turns.push_back(peer);
            }
            state
                .waiting
                .get_mut(&peer)
                .expect("just made")
                .push_back(tx);
            rx
        };
        let mut waiting = Waiting {
            rx: Some(rx),
            gate: self.clone(),
        };
        // The sender is dropped only by `release` handing the slot on (an `Ok`) or by the
        // gate going away with the server.
        let rx = waiting.rx.as_mut().expect("set above");
        let _ = rx.await;
        waiting.rx = None;
        Slot { gate: self.clone() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot comes back: handed to the first waiter of the next peer in turn, or kept free.
    fn release(&self) {
        let mut state = self.lock();
        while let Some(peer) = state.turns.pop_front() {
            let queue = state
                .waiting
                .get_mut(&peer)
                .expect("a peer in turn has waiters");
            let waiter = queue.pop_front().expect("a peer in turn has a waiter");
            if queue.is_empty() {
                state.waiting.remove(&peer);
            } else {
                state.turns.push_back(peer);
            }
            if waiter.send(()).is_ok() {
                return;
            }
            // That waiter gave up: the slot goes to the next.
        }
        state.free += 1;
    }
}

/// Each peer's request budget: a token bucket of `burst` requests refilled at `per_s`, across
/// all its connections. Sans-IO: time comes in as `now_ms` (monotonic). A peer over its budget
/// is told how long to wait; the server stops taking its streams meanwhile, so QUIC's stream
/// credit holds the peer back and its flood costs the node nothing more.
#[derive(Debug)]
pub(crate) struct Rates<K> {
    per_s: u64,
    burst: u64,
    /// Key → (tokens in thousandths, last refill ms).
    buckets: HashMap<K, (u64, u64)>,
}

/// Request budgets by peer.
pub(crate) type PeerRates = Rates<PeerId>;

/// Peers remembered before full buckets are forgotten (a full bucket is what a new peer gets).
const RATE_PEERS_MAX: usize = 8192;

impl<K: std::hash::Hash + Eq + Copy> Rates<K> {
    pub fn new(per_s: u64, burst: u64) -> Rates<K> {
        Rates {
            per_s: per_s.max(1),
            burst: burst.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one from `peer`'s budget, or says how many ms until one is there.
    pub fn take(&mut self, peer: K, now_ms: u64) -> Result<(), u64> {
        let (per_s, full) = (self.per_s, self.burst.saturating_mul(1000));
        if self.buckets.len() >= RATE_PEERS_MAX && !self.buckets.contains_key(&peer) {
            self.buckets.retain(|_, (tokens, at)| {
                tokens.saturating_add(now_ms.saturating_sub(*at).saturating_mul(per_s)) < full
            });
            if self.buckets.len() >= RATE_PEERS_MAX {
                // More peers spending their budgets than connections a server holds: the
                // newcomer waits for room.
                return Err(1000_u64.div_ceil(per_s).max(1));
            }
        }
        let (tokens, at) = self.buckets.entry(peer).or_insert((full, now_ms));
        *tokens = tokens
            .saturating_add(now_ms.saturating_sub(*at).saturating_mul(per_s))
            .min(full);
        *at = now_ms.max(*at);
        if *tokens >= 1000 {
            *tokens -= 1000;
            Ok(())
        } else {
            Err((1000 - *tokens).div_ceil(per_s).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let mut rates: PeerRates = Rates::new(100, 10);
        let (flooder, other) = (PeerId::random(), PeerId::random());
        for _ in 0..10 {
            assert_eq!(rates.take(flooder, 0), Ok(()));
        }
        assert_eq!(
            rates.take(flooder, 0),
            Err(10),
            "10 ms for one more at 100/s"
        );
        assert_eq!(
            rates.take(other, 0),
            Ok(()),
            "another peer has its own budget"
        );
        assert_eq!(rates.take(flooder, 10), Ok(()));
        assert!(rates.take(flooder, 10).is_err());
        // A second later the burst is back, never more.
        for _ in 0..10 {
            assert_eq!(rates.take(flooder, 1_010), Ok(()));
        }
        assert!(rates.take(flooder, 1_010).is_err());
        // A clock that steps back grants nothing.
        assert!(rates.take(flooder, 500).is_err());
    }

    #[test]
    fn remembered_peers_are_bounded() {
        let mut rates: PeerRates = Rates::new(1000, 4);
        for i in 0..2 * RATE_PEERS_MAX as u64 {
            let _ = rates.take(PeerId::random(), i / 64);
        }
        assert!(rates.buckets.len() <= RATE_PEERS_MAX + 1);
    }

    /// A peer with one request waiting goes before a peer's backlog.
    #[tokio::test]
    async fn slots_go_round_robin_between_peers() {
        let gate = FairGate::new(1);
        let (greedy, honest) = (PeerId::random(), PeerId::random());
        let first = gate.enter(greedy).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = gate.enter(greedy).await;
                order.lock().unwrap().push(format!("greedy{i}"));
            }));
            tokio::task::yield_now().await;
        }
        let (g, o) = (gate.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = g.enter(honest).await;
            o.lock().unwrap().push("honest".to_string());
        }));
        tokio::task::yield_now().await;
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap();
        let honest_at = order.iter().position(|s| s == "honest").unwrap();
        assert!(
            honest_at <= 1,
            "served after {honest_at} of the backlog: {order:?}"
        );
        assert_eq!(order.len(), 11);
    }

    /// A waiter dropped after the slot was handed to it, before it ran, gives the slot back.
    #[tokio::test]
    async fn a_waiter_dropped_after_its_turn_came_gives_the_slot_back() {
        let gate = FairGate::new(1);
        let held = gate.enter(PeerId::random()).await;
        let mut waiter = Box::pin(gate.enter(PeerId::random()));
        // Polled once: it is queued.
        assert!(futures_poll_once(waiter.as_mut()).await.is_none());
        drop(held); // the slot goes to the waiter's channel
        drop(waiter); // which never runs
        let again = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            gate.enter(PeerId::random()),
        )
        .await;
        assert!(again.is_ok(), "the slot was lost with the dropped waiter");
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    /// A waiter that gives up passes its turn on; no slot is lost.
    #[tokio::test]
    async fn a_cancelled_waiter_loses_no_slot() {
        let gate = FairGate::new(1);
        let held = gate.enter(PeerId::random()).await;
        let cancelled = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            gate.enter(PeerId::random()),
        )
        .await;
        assert!(cancelled.is_err());
        drop(held);
        let again = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            gate.enter(PeerId::random()),
        )
        .await;
        assert!(again.is_ok(), "the slot was lost with the cancelled waiter");
    }
}
