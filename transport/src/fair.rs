//! A request rate per key ([`Rates`]): each peer's request budget in the server, each
//! address's handshake budget in the endpoint. A token bucket, sans-IO.

use libp2p_identity::PeerId;
use std::collections::HashMap;

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
}
