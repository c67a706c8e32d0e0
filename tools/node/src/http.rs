// Long file: the dashboard, /status and /metrics all render one Snapshot.
//! What the node shows its operator, over the one HTTP stack (`cess-http`): a dashboard at
//! `/` (plain HTML the node renders, readable without JavaScript; a few lines of script
//! refresh it), `/status` (JSON, what `cess node status` prints), `/metrics` (OpenMetrics
//! through `prometheus-client`), and the warnings an operator must act on before a penalty
//! lands: logged once when raised, shown on the page and in both formats.
//!
//! Every figure is read once per request into a [`Snapshot`]; the three formats render the
//! same snapshot, so the page, the status and the metrics never disagree.

use crate::chain::{ChainLink, LinkStatus, MinerFigures};
use cess_consensus::ledger::TOKEN;
use cess_consensus::net::FollowerStatus;
use cess_engine::{ScrubProgress, Stats, Store};
use cess_http::metrics::{Registry, Scrape, ScrapeFn, Unit};
use cess_http::{HttpStats, Request, Response};
use cess_transport::server::{FragmentStore, Server};
use cess_transport::{Code, HistogramSnapshot};
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The replica and the driver's record, when the node is on a chain.
pub type ChainView = (Arc<ChainLink>, Arc<Mutex<LinkStatus>>);

/// Traffic is sampled this often, and an hour of samples kept.
pub const TRAFFIC_SAMPLE_S: u64 = 10;
const TRAFFIC_SAMPLES: usize = (3600 / TRAFFIC_SAMPLE_S) as usize;
/// An unproven challenge this close to its deadline is a warning.
pub const DEADLINE_WARN_BLOCKS: u64 = 10;
/// Behind the validators' tip by more than this is a warning.
pub const BEHIND_WARN_BLOCKS: u64 = 20;
/// No new block for this long is a warning (an idle chain makes one every 500 ms).
pub const STALLED_WARN_S: u64 = 15;
/// Free space under this share of the store is a warning.
pub const FREE_WARN_PERMILLE: u64 = 50;
/// The dashboard shows an audit's margin in red under this many blocks.
pub const MARGIN_RED_BLOCKS: u64 = 10;

/// Bytes moved during one sample period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSample {
    /// Unix seconds at the end of the period.
    pub at_s: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// Something the operator must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Stable name, the `kind` label of `cess_node_warning`.
    pub kind: &'static str,
    pub message: String,
}

/// Every figure the surface shows, read at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub addr: String,
    pub uptime_s: u64,
    pub in_flight: u64,
    pub partial_bytes: u64,
    pub store: Result<Stats, String>,
    pub scrub: Option<ScrubProgress>,
    pub chain: Option<ChainSnapshot>,
    pub traffic: Vec<TrafficSample>,
    pub warnings: Vec<Warning>,
}

/// The chain side of a [`Snapshot`].
#[derive(Debug, Clone)]
pub struct ChainSnapshot {
    pub follower: FollowerStatus,
    /// Seconds since the replica last advanced.
    pub stalled_s: u64,
    pub registered: bool,
    pub assigned: u64,
    pub stored: u64,
    pub untagged: u64,
    pub driver: LinkStatus,
    pub miner: Option<MinerFigures>,
    pub collateral_min: u128,
}

/// The node's HTTP surface: what it reads from, and what it remembers between requests.
pub struct Surface<S: FragmentStore> {
    server: Arc<Server<S>>,
    /// The QUIC endpoint, for the connections it refused.
    endpoint: cess_transport::Endpoint,
    store: Arc<Store>,
    addr: String,
    started: Instant,
    chain: Option<ChainView>,
    scrub_running: bool,
    /// Whether `/check` may start a read-back: only on a loopback surface (a public one
    /// would let anyone who reaches it keep the disk busy).
    checks_allowed: bool,
    traffic: Mutex<Traffic>,
    /// The replica's height and when it last changed.
    progress: Mutex<(u64, Instant)>,
    /// Warnings raised and not yet cleared, by kind (each is logged once).
    raised: Mutex<BTreeSet<&'static str>>,
    pub http: Arc<HttpStats>,
}

impl<S: FragmentStore> std::fmt::Debug for Surface<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surface").field("addr", &self.addr).finish()
    }
}

#[derive(Debug, Default)]
struct Traffic {
    samples: VecDeque<TrafficSample>,
    /// Counters at the last sample.
    last_in: u64,
    last_out: u64,
}

fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a request's `Host` names a loopback address (`127.0.0.1`, `[::1]` or `localhost`,
/// with or without a port).
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(name, _)| name),
        None => host.split(':').next().unwrap_or(""),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The header `POST /check` must carry: a browser sends no custom header across origins
/// without a preflight, so a page cannot start a self-check on an operator's loopback node.
pub const CHECK_HEADER: &str = "x-cess-self-check";

impl<S: FragmentStore> Surface<S> {
    pub fn new(
        server: Arc<Server<S>>,
        endpoint: cess_transport::Endpoint,
        store: Arc<Store>,
        addr: String,
        chain: Option<ChainView>,
        scrub_running: bool,
        checks_allowed: bool,
    ) -> Arc<Surface<S>> {
        let surface = Arc::new(Surface {
            server,
            endpoint,
            store,
            addr,
            started: Instant::now(),
            chain,
            scrub_running,
            checks_allowed,
            traffic: Mutex::new(Traffic::default()),
            progress: Mutex::new((0, Instant::now())),
            raised: Mutex::new(BTreeSet::new()),
            http: Arc::new(HttpStats::default()),
        });
        let (bytes_in, bytes_out) = surface.bytes_moved();
        let mut traffic = surface.traffic.lock().expect("traffic lock");
        traffic.last_in = bytes_in;
        traffic.last_out = bytes_out;
        drop(traffic);
        surface
    }

    /// Bytes in (fragments received, tag blobs from taggers) and out (fragments served).
    fn bytes_moved(&self) -> (u64, u64) {
        let metrics = self.server.metrics();
        let tags_in = self.chain.as_ref().map_or(0, |(_, status)| {
            status.lock().expect("status lock").tag_bytes_in
        });
        (
            metrics.bytes_in.load(Relaxed) + tags_in,
            metrics.bytes_out.load(Relaxed),
        )
    }

    /// `POST /check` (`?proof=1`): starts a read-back whose progress `/status` shows under
    /// `chain.check`. It has an effect (it reads, and may prove, every fragment), so it is
    /// not a GET (which a link or a prefetch may send), and it needs [`CHECK_HEADER`], which
    /// no page can send here without a CORS preflight that this surface does not answer: a
    /// web page the operator visits cannot start one. Loopback surfaces only.
    fn start_check(&self, request: &Request) -> Response {
        if request.method != cess_http::Method::POST {
            return Response::text(
                405,
                format!("POST /check with the header `{CHECK_HEADER}: 1` starts a self-check\n"),
            );
        }
        if request
            .headers
            .get(CHECK_HEADER)
            .is_none_or(|v| v.as_bytes() != b"1")
        {
            return Response::text(
                403,
                format!(
                    "a self-check needs the header `{CHECK_HEADER}: 1` (`cess node check` sends it)\n"
                ),
            );
        }
        // A page whose name an attacker re-points at 127.0.0.1 (DNS rebinding) is same-origin
        // to the browser and may send any header: it still names its own host.
        let host = request
            .headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_loopback_host(host) {
            return Response::text(
                403,
                "a self-check is started only through a loopback address (Host)\n",
            );
        }
        if !self.checks_allowed {
            return Response::text(
                403,
                "self-checks are started only on a loopback surface (http_public is set)\n",
            );
        }
        let Some((link, status)) = &self.chain else {
            return Response::text(
                409,
                "this node runs without a chain: nothing says what it must hold\n",
            );
        };
        let proof = request.query.as_deref() == Some("proof=1");
        // Seen as running from now on (the driver fills it in).
        let pending = crate::chain::CheckReport {
            started_unix_s: unix_s(),
            with_proof: proof,
            ..crate::chain::CheckReport::default()
        };
        let previous = status.lock().expect("status lock").check.replace(pending);
        if link.request_check(proof) {
            Response::json("{\"started\": true}\n".to_string())
        } else {
            status.lock().expect("status lock").check = previous;
            Response::json("{\"started\": false, \"running\": true}\n".to_string())
        }
    }

    /// Reads every figure (blocking: the store's statistics ask its shards).
    pub fn snapshot(&self) -> Snapshot {
        let chain = self.chain.as_ref().map(|(link, status)| {
            let follower = link.follower().status();
            let stalled_s = {
                let mut progress = self.progress.lock().expect("progress lock");
                if follower.height != progress.0 {
                    *progress = (follower.height, Instant::now());
                }
                progress.1.elapsed().as_secs()
            };
            let (registered, assigned, stored, untagged) = link.summary();
            let (miner, collateral_min) = link.miner();
            ChainSnapshot {
                follower,
                stalled_s,
                registered,
                assigned,
                stored,
                untagged,
                driver: status.lock().expect("status lock").clone(),
                miner,
                collateral_min,
            }
        });
        let mut snapshot = Snapshot {
            addr: self.addr.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            in_flight: self.server.in_flight(),
            partial_bytes: self.server.partial_bytes(),
            store: self.store.stats().map_err(|e| e.to_string()),
            scrub: if self.scrub_running {
                self.store.scrub_progress().ok()
            } else {
                None
            },
            chain,
            traffic: self
                .traffic
                .lock()
                .expect("traffic lock")
                .samples
                .iter()
                .copied()
                .collect(),
            warnings: Vec::new(),
        };
        snapshot.warnings = warnings(&snapshot);
        snapshot
    }

    /// Records a traffic sample, and logs the warnings raised and cleared since the last call.
    /// Called every [`TRAFFIC_SAMPLE_S`] by [`watch`].
    fn tick(&self) {
        let (bytes_in, bytes_out) = self.bytes_moved();
        {
            let mut traffic = self.traffic.lock().expect("traffic lock");
            let sample = TrafficSample {
                at_s: unix_s(),
                in_bytes: bytes_in.saturating_sub(traffic.last_in),
                out_bytes: bytes_out.saturating_sub(traffic.last_out),
            };
            traffic.last_in = bytes_in;
            traffic.last_out = bytes_out;
            if traffic.samples.len() >= TRAFFIC_SAMPLES {
                traffic.samples.pop_front();
            }
            traffic.samples.push_back(sample);
        }
        let now = self.snapshot().warnings;
        let mut raised = self.raised.lock().expect("raised lock");
        for warning in &now {
            if raised.insert(warning.kind) {
                tracing::warn!(kind = warning.kind, "{}", warning.message);
            }
        }
        let current: BTreeSet<&'static str> = now.iter().map(|w| w.kind).collect();
        for cleared in raised.difference(&current) {
            tracing::info!(kind = cleared, "cleared");
        }
        *raised = current;
    }

    /// The registry `/metrics` encodes: the figures of a fresh snapshot, the transport's
    /// counters, the audit histograms and the HTTP surface's own counters.
    pub fn registry(self: &Arc<Surface<S>>) -> Registry {
        let mut registry = Registry::default();
        if let Some((_, status)) = &self.chain {
            let times = status.lock().expect("status lock").audit_times.clone();
            registry.register_with_unit(
                "cess_node_audit_prove",
                "Time to prove one audit from the store",
                Unit::Seconds,
                times.prove_seconds,
            );
            registry.register_with_unit(
                "cess_node_audit_margin",
                "Blocks left before the deadline when the proof was submitted",
                Unit::Other("blocks".into()),
                times.margin_blocks,
            );
        }
        let surface = self.clone();
        registry.register_collector(ScrapeFn::boxed(move |scrape| {
            let snapshot = surface.snapshot();
            scrape_snapshot(&snapshot, scrape);
            let tag_bytes_in = snapshot.chain.as_ref().map_or(0, |c| c.driver.tag_bytes_in);
            scrape_transport(
                surface.server.metrics(),
                surface.endpoint.refusals(),
                tag_bytes_in,
                scrape,
            );
            surface.http.scrape(scrape);
        }));
        registry
    }

    /// The handler for `/`, `/status`, `/metrics` (GET) and `/check` (`?proof=1`; POST with
    /// [`CHECK_HEADER`]).
    pub fn handler(self: &Arc<Surface<S>>) -> cess_http::Handler {
        let surface = self.clone();
        let registry = Arc::new(self.registry());
        Arc::new(move |request: &Request| {
            if request.path == "/check" {
                return surface.start_check(request);
            }
            if request.method != cess_http::Method::GET && request.method != cess_http::Method::HEAD
            {
                return Response::text(405, "only GET\n");
            }
            match request.path.as_str() {
                "/" => {
                    let snapshot = surface.snapshot();
                    if request.query.as_deref() == Some("part=main") {
                        Response::html(render_main(&snapshot))
                    } else {
                        Response::html(render_page(&snapshot))
                    }
                }
                "/status" => Response::json(format!("{:#}\n", status_json(&surface.snapshot()))),
                "/metrics" => Response::metrics(cess_http::metrics::encode(&registry)),
                _ => Response::not_found("/, /status, /metrics or /check"),
            }
        })
    }
}

/// Samples traffic and logs warnings every [`TRAFFIC_SAMPLE_S`] until dropped.
pub async fn watch<S: FragmentStore>(surface: Arc<Surface<S>>) {
    let mut every = tokio::time::interval(Duration::from_secs(TRAFFIC_SAMPLE_S));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let surface = surface.clone();
        if tokio::task::spawn_blocking(move || surface.tick())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The audits still waiting for this node's proof: (round, deadline), from the driver's
/// records.
fn open_audits(chain: &ChainSnapshot) -> impl Iterator<Item = (u64, u64)> + '_ {
    chain
        .driver
        .audits
        .iter()
        .filter(|a| a.result == "proving" && a.deadline >= chain.follower.height)
        .map(|a| (a.round, a.deadline))
}

/// What the operator must act on now.
pub fn warnings(snapshot: &Snapshot) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut warn = |kind, message: String| out.push(Warning { kind, message });
    match &snapshot.store {
        Err(e) => warn("disk_error", format!("the store cannot be read: {e}")),
        Ok(stats) => {
            if stats.read_verify_failures > 0 || stats.poisoned_shards > 0 {
                warn(
                    "disk_error",
                    format!(
                        "{} reads failed their checksums and {} shards refuse writes: check the \
                         disk",
                        stats.read_verify_failures, stats.poisoned_shards
                    ),
                );
            }
            if stats.total_bytes > 0
                && stats.free_bytes * 1000 / stats.total_bytes < FREE_WARN_PERMILLE
            {
                warn(
                    "disk_near_full",
                    format!(
                        "{} of {} bytes free: the store is nearly full",
                        stats.free_bytes, stats.total_bytes
                    ),
                );
            }
        }
    }
    if let Some(scrub) = &snapshot.scrub
        && !scrub.corrupt.is_empty()
    {
        warn(
            "disk_error",
            format!("the scrub found {} corrupt fragments", scrub.corrupt.len()),
        );
    }
    let Some(chain) = &snapshot.chain else {
        return out;
    };
    if let Some(why) = &chain.follower.diverged {
        warn("chain_diverged", format!("the replica stopped: {why}"));
    } else if chain.stalled_s >= STALLED_WARN_S {
        warn(
            "chain_unreachable",
            format!(
                "no new block for {} s at height {}: the validators are unreachable or stopped",
                chain.stalled_s, chain.follower.height
            ),
        );
    } else if chain.follower.behind > BEHIND_WARN_BLOCKS {
        warn(
            "behind_chain",
            format!("{} blocks behind the chain's tip", chain.follower.behind),
        );
    }
    let height = chain.follower.height;
    for (round, deadline) in open_audits(chain) {
        if deadline.saturating_sub(height) <= DEADLINE_WARN_BLOCKS {
            warn(
                "deadline_near",
                format!(
                    "audit round {round} is not proven and its deadline (height {deadline}) is \
                     {} blocks away",
                    deadline.saturating_sub(height)
                ),
            );
        }
    }
    if let Some(last) = chain.driver.audits.iter().rev().find(|a| {
        a.result.starts_with("invalid") || a.result == "missed" || a.result.starts_with("failed")
    }) {
        warn(
            "proof_failed",
            format!("audit round {}: {}", last.round, last.result),
        );
    }
    if let Some(miner) = &chain.miner
        && miner.collateral < chain.collateral_min
    {
        warn(
            "collateral_low",
            format!(
                "collateral {} is under the chain's floor {}: the node gets no new data",
                tokens(miner.collateral),
                tokens(chain.collateral_min)
            ),
        );
    }
    out
}

/// Tokens in whole units with up to 6 decimals, trailing zeros dropped.
pub fn tokens(amount: u128) -> String {
    let whole = amount / TOKEN;
    let micro = (amount % TOKEN) * 1_000_000 / TOKEN;
    if micro == 0 {
        format!("{whole}")
    } else {
        format!("{whole}.{micro:06}")
            .trim_end_matches('0')
            .to_string()
    }
}

fn signed_tokens(amount: i128) -> String {
    if amount < 0 {
        format!("-{}", tokens(amount.unsigned_abs()))
    } else {
        tokens(amount as u128)
    }
}

/// `/status`: the snapshot as JSON.
pub fn status_json(s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "addr": s.addr,
        "uptime_s": s.uptime_s,
        "in_flight": s.in_flight,
        "partial_write_bytes": s.partial_bytes,
        "store": match &s.store {
            Ok(st) => serde_json::json!({
                "total_bytes": st.total_bytes,
                "free_bytes": st.free_bytes,
                "active_bytes": st.active_bytes,
                "active_fragments": st.active_count,
                "idle_bytes": st.idle_bytes,
                "idle_fragments": st.idle_count,
                "read_verify_failures": st.read_verify_failures,
                "poisoned_shards": st.poisoned_shards,
            }),
            Err(e) => serde_json::json!({ "error": e }),
        },
        "scrub": s.scrub.as_ref().map(|p| serde_json::json!({
            "passes_completed": p.passes_completed,
            "pass_verified_bytes": p.pass_verified_bytes,
            "stored_bytes": p.stored_bytes,
            "corrupt_fragments": p.corrupt.len(),
        })),
        "traffic": s.traffic.iter().map(|t| serde_json::json!({
            "at_s": t.at_s, "in_bytes": t.in_bytes, "out_bytes": t.out_bytes,
        })).collect::<Vec<_>>(),
        "warnings": s.warnings.iter().map(|w| serde_json::json!({
            "kind": w.kind, "message": w.message,
        })).collect::<Vec<_>>(),
        "chain": s.chain.as_ref().map(chain_json),
    })
}

fn chain_json(c: &ChainSnapshot) -> serde_json::Value {
    let d = &c.driver;
    let t = &d.audit_totals;
    let audits: Vec<serde_json::Value> = d
        .audits
        .iter()
        .map(|a| {
            serde_json::json!({
                "round": a.round,
                "tagger": a.tagger,
                "deadline": a.deadline,
                "fragments": a.fragments,
                "blocks": a.blocks,
                "proof_bytes": a.proof_bytes,
                "prove_ms": a.prove_ms,
                "submitted_at": a.submitted_at,
                "margin_blocks": a.submitted_at.map(|at| a.deadline.saturating_sub(at)),
                "result": a.result,
                "reward": a.reward.to_string(),
            })
        })
        .collect();
    serde_json::json!({
                "height": c.follower.height,
                "tip": c.follower.tip,
                "behind": c.follower.behind,
                "synced": c.follower.synced,
                "diverged": c.follower.diverged,
                "stalled_s": c.stalled_s,
                "registered": c.registered,
                "declared_bytes": c.miner.as_ref().map(|m| m.declared_bytes),
                "locked_bytes": c.miner.as_ref().map(|m| m.locked_bytes),
                "chain_active_bytes": c.miner.as_ref().map(|m| m.active_bytes),
                "collateral": c.miner.as_ref().map(|m| m.collateral.to_string()),
                "collateral_min": c.collateral_min.to_string(),
                "reputation": c.miner.as_ref().map(|m| m.reputation),
                "assigned_fragments": c.assigned,
                "stored_fragments": c.stored,
                "fragments_waiting_for_tags": c.untagged,
                "tags_kept": d.tags_kept,
                "tags_refused": d.tags_refused,
                "rebuilt_fragments": d.rebuilt,
                "rebuilds_failed": d.rebuilds_failed,
                "idle": {
                    "files_generated": d.idle_files_generated,
                    "commit_proofs": d.idle_commit_proofs,
                    "space_proofs": d.idle_space_proofs,
                    "space_audits_unanswerable": d.idle_space_failures,
                },
                "check": d.check.as_ref().map(|c| serde_json::json!({
                    "started_unix_s": c.started_unix_s,
                    "with_proof": c.with_proof,
                    "done": c.done,
                    "fragments_total": c.fragments_total,
                    "fragments_checked": c.fragments_checked,
                    "bytes_checked": c.bytes_checked,
                    "failed_count": c.failed_count,
                    "failed": c.failed.iter().map(|(id, why)| serde_json::json!({
                        "fragment_id": id, "why": why,
                    })).collect::<Vec<_>>(),
                })),
                "audit_totals": {
                    "proved": t.proved, "failed": t.failed, "valid": t.valid,
                    "invalid": t.invalid, "missed": t.missed,
                    "fragments_challenged": t.fragments_challenged,
                    "blocks_challenged": t.blocks_challenged,
                    "rewards": t.rewards.to_string(), "penalties": t.penalties.to_string(),
                },
                "audits": audits,
                "transactions_submitted": d.submitted,
                "transactions_included": d.included,
                "transactions_not_included": d.refused,
                "last_error": d.last_error,
    })
}

fn scrape_snapshot(s: &Snapshot, scrape: &mut Scrape<'_, '_>) {
    let bytes = || Some(Unit::Bytes);
    scrape.gauge(
        "cess_node_uptime",
        "Seconds since the node started",
        Some(Unit::Seconds),
        s.uptime_s as i64,
    );
    scrape.gauge(
        "cess_node_requests_in_flight",
        "Fragment requests being served",
        None,
        s.in_flight as i64,
    );
    scrape.gauge(
        "cess_node_partial_write",
        "Memory held by unfinished incoming writes",
        bytes(),
        s.partial_bytes as i64,
    );
    if let Ok(st) = &s.store {
        scrape.gauge(
            "cess_node_store_capacity",
            "The store's capacity",
            bytes(),
            st.total_bytes as i64,
        );
        scrape.gauges(
            "cess_node_store_space",
            "The store's space by class (their sum is the capacity)",
            bytes(),
            "class",
            &[
                ("active", st.active_bytes as i64),
                ("idle", st.idle_bytes as i64),
                ("free", st.free_bytes as i64),
            ],
        );
        scrape.gauges(
            "cess_node_store_fragments",
            "Fragments in the store by class",
            None,
            "class",
            &[
                ("active", st.active_count as i64),
                ("idle", st.idle_count as i64),
            ],
        );
        scrape.counter(
            "cess_node_store_read_verify_failures",
            "Reads refused because the stored bytes failed their checksums",
            None,
            st.read_verify_failures,
        );
        scrape.gauge(
            "cess_node_store_poisoned_shards",
            "Shards that refuse writes after a write or flush failure",
            None,
            i64::from(st.poisoned_shards),
        );
    }
    if let Some(p) = &s.scrub {
        scrape.counter(
            "cess_node_scrub_passes",
            "Full passes of the background scrub",
            None,
            p.passes_completed,
        );
        scrape.gauge(
            "cess_node_scrub_pass_verified",
            "Bytes verified by the scrub in its current pass",
            bytes(),
            p.pass_verified_bytes.min(p.stored_bytes) as i64,
        );
        scrape.gauge(
            "cess_node_scrub_stored",
            "Bytes the scrub's pass covers",
            bytes(),
            p.stored_bytes as i64,
        );
        scrape.gauge(
            "cess_node_scrub_corrupt_fragments",
            "Fragments the scrub found corrupt since start",
            None,
            p.corrupt.len() as i64,
        );
    }
    let kinds: Vec<(&str, i64)> = s.warnings.iter().map(|w| (w.kind, 1)).collect();
    scrape.gauges(
        "cess_node_warning",
        "Warnings raised now (1 per kind raised)",
        None,
        "kind",
        &kinds,
    );
    let Some(c) = &s.chain else {
        return;
    };
    let blocks = || Some(Unit::Other("blocks".into()));
    scrape.gauge(
        "cess_node_chain_height",
        "Height of the node's ledger replica",
        None,
        c.follower.height as i64,
    );
    scrape.gauge(
        "cess_node_chain_behind",
        "Blocks behind the highest tip a validator claimed",
        blocks(),
        c.follower.behind as i64,
    );
    scrape.gauge(
        "cess_node_chain_stalled",
        "Seconds since the replica last advanced",
        Some(Unit::Seconds),
        c.stalled_s as i64,
    );
    scrape.gauge(
        "cess_node_registered",
        "1 when the node is in the chain's miner registry",
        None,
        i64::from(c.registered),
    );
    if let Some(m) = &c.miner {
        scrape.gauges(
            "cess_node_chain_space",
            "This miner's space on the ledger: declared, locked by orders, active (reported stored)",
            bytes(),
            "class",
            &[
                ("declared", m.declared_bytes as i64),
                ("locked", m.locked_bytes as i64),
                ("active", m.active_bytes as i64),
            ],
        );
        scrape.gauge_f64(
            "cess_node_collateral",
            "Collateral held by the chain",
            Some(Unit::Other("tokens".into())),
            m.collateral as f64 / TOKEN as f64,
        );
        scrape.gauge(
            "cess_node_reputation",
            "Reputation on the chain, 0 to 1000",
            None,
            i64::from(m.reputation),
        );
    }
    scrape.gauge_f64(
        "cess_node_collateral_min",
        "The chain's collateral floor",
        Some(Unit::Other("tokens".into())),
        c.collateral_min as f64 / TOKEN as f64,
    );
    scrape.gauges(
        "cess_node_fragments",
        "Fragments by state: assigned by the ledger, stored and reported, waiting for tags",
        None,
        "state",
        &[
            ("assigned", c.assigned as i64),
            ("stored", c.stored as i64),
            ("waiting_for_tags", c.untagged as i64),
        ],
    );
    let d = &c.driver;
    scrape.counters(
        "cess_node_tags",
        "Tag blobs from taggers: kept after the check, refused by it",
        None,
        "result",
        &[("kept", d.tags_kept), ("refused", d.tags_refused)],
    );
    scrape.counters(
        "cess_node_rebuilds",
        "Fragments rebuilt from other miners (own lost ones and claimed restorals), by result",
        None,
        "result",
        &[("stored", d.rebuilt), ("failed", d.rebuilds_failed)],
    );
    scrape.counters(
        "cess_node_idle_proofs",
        "PoIS proofs made from the idle files: commitments answered, space audits answered, \
         space audits that could not be answered (files missing or unreadable)",
        None,
        "kind",
        &[
            ("commit", d.idle_commit_proofs),
            ("space", d.idle_space_proofs),
            ("space_unanswerable", d.idle_space_failures),
        ],
    );
    scrape.counters(
        "cess_node_idle_files_generated",
        "Idle files labelled and stored (PoIS)",
        None,
        "result",
        &[("stored", d.idle_files_generated)],
    );
    scrape.counters(
        "cess_node_transactions",
        "Transactions sent to the chain, by result",
        None,
        "result",
        &[
            ("submitted", d.submitted),
            ("included", d.included),
            ("not_included", d.refused),
        ],
    );
    let t = &d.audit_totals;
    scrape.counters(
        "cess_node_audits",
        "Audits by result: proved (submitted), failed (could not prove), and the chain's verdicts",
        None,
        "result",
        &[
            ("proved", t.proved),
            ("failed", t.failed),
            ("valid", t.valid),
            ("invalid", t.invalid),
            ("missed", t.missed),
        ],
    );
    scrape.counter(
        "cess_node_audit_fragments_challenged",
        "Fragments challenged in this node's audits",
        None,
        t.fragments_challenged,
    );
    scrape.counter(
        "cess_node_audit_blocks_challenged",
        "Blocks challenged in this node's audits",
        None,
        t.blocks_challenged,
    );
    let payouts = [
        ("reward", t.rewards as f64 / TOKEN as f64),
        ("penalty", t.penalties as f64 / TOKEN as f64),
    ];
    for (kind, value) in payouts {
        scrape.gauge_f64(
            &format!("cess_node_audit_{kind}s"),
            &format!("Tokens received as audit {kind}s since start"),
            Some(Unit::Other("tokens".into())),
            value,
        );
    }
    if let Some(left) = open_audits(c)
        .map(|(_, deadline)| deadline.saturating_sub(c.follower.height))
        .min()
    {
        scrape.gauge(
            "cess_node_audit_deadline_left",
            "Blocks left to the nearest deadline of an audit not yet proven",
            blocks(),
            left as i64,
        );
    }
}

fn scrape_transport(
    m: &cess_transport::Metrics,
    connections: Option<&cess_transport::quic::ConnectionRefusals>,
    tag_bytes_in: u64,
    scrape: &mut Scrape<'_, '_>,
) {
    let refused =
        |count: Option<&std::sync::atomic::AtomicU64>| count.map_or(0, |c| c.load(Relaxed));
    scrape.counter(
        "cess_node_connections",
        "QUIC connections accepted",
        None,
        m.connections.load(Relaxed),
    );
    scrape.counters_by(
        "cess_node_transfer",
        "Bytes moved, by direction and peer class: clients (the fragment protocol: owners, \
         readers, restoring miners) and taggers (tag blobs)",
        Some(Unit::Bytes),
        &[
            (
                &[("direction", "in"), ("peer", "clients")],
                m.bytes_in.load(Relaxed),
            ),
            (
                &[("direction", "out"), ("peer", "clients")],
                m.bytes_out.load(Relaxed),
            ),
            (&[("direction", "in"), ("peer", "taggers")], tag_bytes_in),
        ],
    );
    let codes: Vec<(&str, u64)> = Code::ALL
        .iter()
        .map(|code| (code.name(), m.responses[*code as usize].load(Relaxed)))
        .collect();
    scrape.counters(
        "cess_node_responses",
        "Fragment protocol responses by code",
        None,
        "code",
        &codes,
    );
    scrape.counters(
        "cess_node_refusals",
        "Requests refused or cut, by reason",
        None,
        "reason",
        &[
            ("grant", m.grants_refused.load(Relaxed)),
            ("not_assigned", m.writes_refused.load(Relaxed)),
            ("protocol_violation", m.protocol_violations.load(Relaxed)),
            ("stream_error", m.stream_errors.load(Relaxed)),
            ("read_busy", m.reads_refused.load(Relaxed)),
            ("read_not_permitted", m.reads_unauthorized.load(Relaxed)),
            ("no_standing", m.peers_refused.load(Relaxed)),
            ("paced", m.requests_paced.load(Relaxed)),
            (
                "connections_per_peer",
                refused(connections.map(|c| &c.per_peer)),
            ),
            ("connections_total", refused(connections.map(|c| &c.total))),
            (
                "handshakes_busy",
                refused(connections.map(|c| &c.handshakes)),
            ),
            (
                "handshake_failed",
                refused(connections.map(|c| &c.handshake_failures)),
            ),
            (
                "handshake_retried",
                refused(connections.map(|c| &c.retries)),
            ),
            (
                "handshake_rate",
                refused(connections.map(|c| &c.per_ip_rate)),
            ),
        ],
    );
    let (write, read): (HistogramSnapshot, HistogramSnapshot) =
        (m.write_latency.snapshot(), m.read_latency.snapshot());
    scrape.histograms(
        "cess_node_request",
        "Fragment request latency, by operation",
        Some(Unit::Seconds),
        "op",
        &[
            ("write", write.sum_s, write.count, &write.buckets),
            ("read", read.sum_s, read.count, &read.buckets),
        ],
    );
}

/// Text made safe for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes for a person: 1.5 GiB.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;max-width:70em}\
h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.5em}\
table{border-collapse:collapse}td,th{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:right}\
th:first-child,td:first-child{text-align:left}.bar{display:flex;height:1.4em;border:1px solid #999;max-width:50em}\
.bar div{height:100%}.active{background:#3b7dd8}.idle{background:#9bc1f0}.free{background:#eee}\
.warn{background:#fde2e1;border-left:4px solid #d33;padding:.4em .8em;margin:.3em 0}\
.red{color:#c00;font-weight:bold}.ok{color:#080}.muted{color:#777}svg{border:1px solid #ddd;background:#fafafa}";

/// Refreshes `<main>` from `/?part=main` every 5 s; the page is whole without it.
const SCRIPT: &str = "setInterval(async()=>{try{const r=await fetch('/?part=main');\
if(r.ok){document.querySelector('main').innerHTML=await r.text();\
document.getElementById('refreshed').textContent=new Date().toLocaleTimeString();}}catch(e){}},5000);";

/// The dashboard page.
pub fn render_page(s: &Snapshot) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content='width=device-width,initial-scale=1'>\
         <title>cess node {addr}</title><style>{STYLE}</style></head><body>\
         <h1>Storage node <code>{addr}</code></h1>\
         <p class=muted>Refreshed <span id=refreshed>at load</span>; \
         <a href='/status'>status (JSON)</a> · <a href='/metrics'>metrics</a></p>\
         <main>{main}</main><script>{SCRIPT}</script></body></html>",
        addr = esc(&s.addr),
        main = render_main(s),
    )
}

/// The page's content (what the script swaps in).
pub fn render_main(s: &Snapshot) -> String {
    let mut h = String::new();
    // Warnings first: what the operator must act on.
    let _ = write!(h, "<section id=warnings>");
    if s.warnings.is_empty() {
        let _ = write!(h, "<p class=ok>No warnings.</p>");
    }
    for w in &s.warnings {
        let _ = write!(
            h,
            "<div class=warn data-kind='{}'><b>{}</b>: {}</div>",
            w.kind,
            w.kind.replace('_', " "),
            esc(&w.message)
        );
    }
    let _ = write!(h, "</section>");
    render_space(s, &mut h);
    if let Some(c) = &s.chain {
        render_chain(c, &mut h);
    }
    render_traffic(s, &mut h);
    if let Some(p) = &s.scrub {
        let done = p.pass_verified_bytes.min(p.stored_bytes);
        let percent = if p.stored_bytes == 0 {
            100.0
        } else {
            done as f64 * 100.0 / p.stored_bytes as f64
        };
        let _ = write!(
            h,
            "<h2>Scrub</h2><p id=scrub>pass {} at <b>{percent:.1}%</b> ({} of {}), {} passes done, \
             <span class='{}'>{} corrupt fragments</span></p>",
            p.passes_completed + 1,
            human(done),
            human(p.stored_bytes),
            p.passes_completed,
            if p.corrupt.is_empty() { "ok" } else { "red" },
            p.corrupt.len()
        );
    } else {
        let _ = write!(
            h,
            "<h2>Scrub</h2><p class=muted>off (<code>scrub_mib_per_s = 0</code>)</p>"
        );
    }
    let _ = write!(
        h,
        "<p class=muted>up {} s, {} requests in flight</p>",
        s.uptime_s, s.in_flight
    );
    h
}

fn render_space(s: &Snapshot, h: &mut String) {
    let _ = write!(h, "<h2>Space</h2>");
    let st = match &s.store {
        Ok(st) => st,
        Err(e) => {
            let _ = write!(h, "<p class=red>the store cannot be read: {}</p>", esc(e));
            return;
        }
    };
    let share = |part: u64| {
        if st.total_bytes == 0 {
            0.0
        } else {
            part as f64 * 100.0 / st.total_bytes as f64
        }
    };
    let _ = write!(
        h,
        "<div class=bar title='active / idle / free'>\
         <div class=active style='width:{:.2}%'></div><div class=idle style='width:{:.2}%'></div>\
         <div class=free style='width:{:.2}%'></div></div>",
        share(st.active_bytes),
        share(st.idle_bytes),
        share(st.free_bytes)
    );
    let declared = s
        .chain
        .as_ref()
        .and_then(|c| c.miner.as_ref())
        .map(|m| m.declared_bytes);
    let _ = write!(
        h,
        "<table id=space><tr><th>class</th><th>bytes</th><th></th></tr>\
         <tr><td>declared on the chain</td><td id=declared_bytes>{}</td><td>{}</td></tr>\
         <tr><td>store capacity</td><td id=total_bytes>{}</td><td>{}</td></tr>\
         <tr><td><span class=active>&nbsp;&nbsp;</span> active (user data)</td><td id=active_bytes>{}</td><td>{}</td></tr>\
         <tr><td><span class=idle>&nbsp;&nbsp;</span> idle (space proofs)</td><td id=idle_bytes>{}</td><td>{}</td></tr>\
         <tr><td><span class=free>&nbsp;&nbsp;</span> free</td><td id=free_bytes>{}</td><td>{}</td></tr>\
         </table><p class=muted>{} active and {} idle fragments</p>",
        declared.map_or("-".to_string(), |d| d.to_string()),
        declared.map_or(String::new(), human),
        st.total_bytes,
        human(st.total_bytes),
        st.active_bytes,
        human(st.active_bytes),
        st.idle_bytes,
        human(st.idle_bytes),
        st.free_bytes,
        human(st.free_bytes),
        st.active_count,
        st.idle_count,
    );
}

fn render_chain(c: &ChainSnapshot, h: &mut String) {
    let t = &c.driver.audit_totals;
    let _ = write!(
        h,
        "<h2>Chain</h2><table id=chain>\
         <tr><td>height</td><td id=height>{}</td></tr>\
         <tr><td>behind the tip</td><td>{} blocks</td></tr>\
         <tr><td>registered</td><td>{}</td></tr>\
         <tr><td>collateral</td><td>{} (floor {})</td></tr>\
         <tr><td>fragments assigned / stored / waiting for tags</td><td>{} / {} / {}</td></tr>\
         <tr><td>audits proved / valid / invalid / missed / failed</td><td id=audit_totals>{} / {} / {} / {} / {}</td></tr>\
         <tr><td>rewards / penalties</td><td>{} / {}</td></tr></table>",
        c.follower.height,
        c.follower.behind,
        if c.registered { "yes" } else { "not yet" },
        c.miner
            .as_ref()
            .map_or("-".into(), |m| tokens(m.collateral)),
        tokens(c.collateral_min),
        c.assigned,
        c.stored,
        c.untagged,
        t.proved,
        t.valid,
        t.invalid,
        t.missed,
        t.failed,
        tokens(t.rewards),
        tokens(t.penalties),
    );
    let _ = write!(
        h,
        "<h2>Last audits</h2><table id=audits><tr><th>round</th><th>fragments</th>\
         <th>blocks</th><th>proof bytes</th><th>prove ms</th><th>deadline</th>\
         <th>margin (blocks)</th><th>result</th><th>reward</th></tr>"
    );
    if c.driver.audits.is_empty() {
        let _ = write!(h, "<tr><td colspan=9 class=muted>none yet</td></tr>");
    }
    for a in c.driver.audits.iter().rev() {
        let margin = match a.submitted_at {
            Some(at) => a.deadline.saturating_sub(at),
            None => a.deadline.saturating_sub(c.follower.height),
        };
        let margin_class = if margin < MARGIN_RED_BLOCKS {
            "red"
        } else {
            ""
        };
        let result_class = match a.result.as_str() {
            "valid" => "ok",
            "proving" | "submitted" => "",
            _ => "red",
        };
        let _ = write!(
            h,
            "<tr class=audit><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class='{margin_class}'>{margin}</td><td class='{result_class}'>{}</td><td>{}</td></tr>",
            a.round,
            a.fragments,
            a.blocks,
            a.proof_bytes,
            a.prove_ms,
            a.deadline,
            esc(&a.result),
            signed_tokens(a.reward),
        );
    }
    let _ = write!(h, "</table>");
    // Rewards and penalties per audit, oldest left: bars up and down.
    let settled: Vec<&crate::chain::AuditRecord> =
        c.driver.audits.iter().filter(|a| a.reward != 0).collect();
    if !settled.is_empty() {
        let peak = settled
            .iter()
            .map(|a| a.reward.unsigned_abs())
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let (width, height) = (480.0, 80.0);
        let step = width / settled.len() as f64;
        let _ = write!(
            h,
            "<h2>Rewards and penalties</h2><svg id=payouts width={width} height={height} \
             viewBox='0 0 {width} {height}'><line x1=0 y1=40 x2={width} y2=40 stroke='#999'/>"
        );
        for (i, a) in settled.iter().enumerate() {
            let bar = a.reward.unsigned_abs() as f64 / peak * 38.0;
            let (y, color) = if a.reward > 0 {
                (40.0 - bar, "#2a2")
            } else {
                (40.0, "#d33")
            };
            let _ = write!(
                h,
                "<rect x={:.1} y={y:.1} width={:.1} height={bar:.1} fill='{color}'>\
                 <title>round {}: {}</title></rect>",
                i as f64 * step + 1.0,
                (step - 2.0).max(1.0),
                a.round,
                signed_tokens(a.reward)
            );
        }
        let _ = write!(h, "</svg>");
    }
}

fn render_traffic(s: &Snapshot, h: &mut String) {
    let total_in: u64 = s.traffic.iter().map(|t| t.in_bytes).sum();
    let total_out: u64 = s.traffic.iter().map(|t| t.out_bytes).sum();
    let _ = write!(
        h,
        "<h2>Bandwidth, last hour</h2><p id=traffic>in {} · out {} \
         <span class=muted>({} samples of {TRAFFIC_SAMPLE_S} s)</span></p>",
        human(total_in),
        human(total_out),
        s.traffic.len()
    );
    if s.traffic.len() < 2 {
        return;
    }
    let (width, height) = (480.0, 80.0);
    let peak = s
        .traffic
        .iter()
        .map(|t| t.in_bytes.max(t.out_bytes))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let step = width / (TRAFFIC_SAMPLES - 1) as f64;
    let offset = TRAFFIC_SAMPLES - s.traffic.len();
    let line = |pick: fn(&TrafficSample) -> u64| {
        s.traffic
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "{:.1},{:.1}",
                    (offset + i) as f64 * step,
                    height - pick(t) as f64 / peak * (height - 4.0)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = write!(
        h,
        "<svg id=bandwidth width={width} height={height} viewBox='0 0 {width} {height}'>\
         <polyline fill=none stroke='#3b7dd8' points='{}'><title>in</title></polyline>\
         <polyline fill=none stroke='#e08a00' points='{}'><title>out</title></polyline></svg>\
         <p class=muted><span style='color:#3b7dd8'>in</span> · \
         <span style='color:#e08a00'>out</span>, peak {}/s</p>",
        line(|t| t.in_bytes),
        line(|t| t.out_bytes),
        human(peak as u64 / TRAFFIC_SAMPLE_S),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_host_may_start_a_self_check() {
        for host in [
            "127.0.0.1:9000",
            "127.0.0.1",
            "localhost:80",
            "[::1]:9000",
            "127.9.9.9",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example:9000",
            "10.0.0.1:9000",
            "[::2]:1",
            "localhost.evil",
            "[::1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
    use crate::chain::AuditRecord;

    fn healthy() -> Snapshot {
        Snapshot {
            addr: "node".into(),
            uptime_s: 60,
            in_flight: 0,
            partial_bytes: 0,
            store: Ok(Stats {
                total_bytes: 1000 << 20,
                free_bytes: 900 << 20,
                active_bytes: 100 << 20,
                ..Stats::default()
            }),
            scrub: None,
            chain: Some(ChainSnapshot {
                follower: FollowerStatus {
                    height: 100,
                    tip: Some(100),
                    synced: true,
                    ..FollowerStatus::default()
                },
                stalled_s: 0,
                registered: true,
                assigned: 3,
                stored: 3,
                untagged: 0,
                driver: LinkStatus::default(),
                miner: Some(MinerFigures {
                    declared_bytes: 1000 << 20,
                    collateral: 100 * TOKEN,
                    ..MinerFigures::default()
                }),
                collateral_min: 100 * TOKEN,
            }),
            traffic: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn audit(round: u64, deadline: u64, result: &str) -> AuditRecord {
        AuditRecord {
            round,
            tagger: "t".into(),
            deadline,
            fragments: 1,
            blocks: 10,
            proof_bytes: 0,
            prove_ms: 0,
            submitted_at: None,
            result: result.into(),
            reward: 0,
        }
    }

    fn kinds(snapshot: &Snapshot) -> Vec<&'static str> {
        warnings(snapshot).iter().map(|w| w.kind).collect()
    }

    /// Each condition an operator must act on, alone, raises its warning and no other.
    #[test]
    fn each_trouble_raises_its_own_warning() {
        assert_eq!(kinds(&healthy()), Vec::<&str>::new());
        type Trouble = fn(&mut Snapshot);
        let table: [(&str, Trouble); 9] = [
            ("disk_near_full", |s| {
                let st = s.store.as_mut().unwrap();
                st.free_bytes = st.total_bytes / 100;
            }),
            ("disk_error", |s| {
                s.store.as_mut().unwrap().read_verify_failures = 1;
            }),
            ("disk_error", |s| {
                s.scrub = Some(ScrubProgress {
                    corrupt: vec![cess_engine::FragmentId([1; 32])],
                    ..ScrubProgress::default()
                });
            }),
            ("chain_unreachable", |s| {
                s.chain.as_mut().unwrap().stalled_s = STALLED_WARN_S;
            }),
            ("behind_chain", |s| {
                s.chain.as_mut().unwrap().follower.behind = BEHIND_WARN_BLOCKS + 1;
            }),
            ("chain_diverged", |s| {
                s.chain.as_mut().unwrap().follower.diverged = Some("root mismatch".into());
            }),
            // Proving, and the deadline 10 blocks away.
            ("deadline_near", |s| {
                let c = s.chain.as_mut().unwrap();
                let deadline = c.follower.height + DEADLINE_WARN_BLOCKS;
                c.driver.audits.push_back(audit(4, deadline, "proving"));
            }),
            ("proof_failed", |s| {
                let c = s.chain.as_mut().unwrap();
                c.driver.audits.push_back(audit(3, 90, "missed"));
            }),
            ("collateral_low", |s| {
                let c = s.chain.as_mut().unwrap();
                c.miner.as_mut().unwrap().collateral = c.collateral_min - 1;
            }),
        ];
        for (kind, trouble) in table {
            let mut snapshot = healthy();
            trouble(&mut snapshot);
            assert_eq!(kinds(&snapshot), vec![kind], "{kind}");
        }
        // A proof under way with time to spare, a valid one, a submitted one: no warning.
        let mut fine = healthy();
        let c = fine.chain.as_mut().unwrap();
        let far = c.follower.height + DEADLINE_WARN_BLOCKS + 1;
        c.driver.audits.push_back(audit(5, far, "proving"));
        c.driver.audits.push_back(audit(2, 80, "valid"));
        c.driver.audits.push_back(audit(6, 101, "submitted"));
        assert_eq!(kinds(&fine), Vec::<&str>::new());
    }

    /// The page shows every warning, escaped, and the space figures of the snapshot.
    #[test]
    fn the_page_shows_the_snapshot() {
        let mut snapshot = healthy();
        snapshot.warnings = vec![Warning {
            kind: "proof_failed",
            message: "audit round 3: invalid: <b>bad</b>".into(),
        }];
        let page = render_page(&snapshot);
        assert!(page.contains("data-kind='proof_failed'"), "{page}");
        assert!(page.contains("&lt;b&gt;bad&lt;/b&gt;"), "{page}");
        assert!(page.contains(&format!("<td id=free_bytes>{}</td>", 900u64 << 20)));
        assert!(page.contains(&format!("<td id=declared_bytes>{}</td>", 1000u64 << 20)));
    }

    #[test]
    fn text_from_peers_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script>&"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"
        );
    }

    #[test]
    fn token_amounts_read_as_people_write_them() {
        assert_eq!(tokens(0), "0");
        assert_eq!(tokens(3 * TOKEN), "3");
        assert_eq!(tokens(TOKEN / 2), "0.5");
        assert_eq!(signed_tokens(-(TOKEN as i128) / 4), "-0.25");
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
