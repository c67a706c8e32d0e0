//! `cess gateway`: the network as an S3-compatible bucket store (the seed's DeOSS gateway, in
//! the protocol `aws`, boto3, s3cmd and rclone speak).
//!
//! The gateway is an account on the chain that owners authorize (`cess authorize GATEWAY`,
//! the seed's "authorize the gateway" step); it acts for them through `Call::ForOwner`:
//! declares their files in their space, deletes them, keeps their buckets. It never holds an
//! owner's key and cannot spend an owner's money. An S3 access key (`cess gateway keys add
//! --owner ACCOUNT`) names the owner a request acts for; a request signed with it sees that
//! owner's buckets and nothing else. `s3s` parses the requests, checks SigV4 and writes the
//! XML; [`s3::Gateway`] maps the operations onto the ledger and the miners:
//!
//! - a bucket is the owner's bucket on the ledger, an object the owner's file listed in it
//!   under its name (the newest when an overwrite is in flight);
//! - a PUT streams the body to a staging file (its MD5 and any checksum computed on the way,
//!   refused on a mismatch), then puts it as `cess put` does, encrypted with a key derived from
//!   the master secret, the owner, the bucket and the name ([`keys::Master::object_key`]), and
//!   answers once the file is Active (`x-cess-file-state: active`); a multipart upload keeps
//!   its parts in staging and puts them back to back;
//! - a GET reads only the segments its range needs, each checked against its id before a
//!   byte of it is sent.
//!
//! Memory per request is bounded, not proportional to the object: a PUT body goes to disk in
//! the chunks the connection hands over; the put itself holds the codec's pipeline (a segment
//! and its parity per core, plus one) and at most `in_flight_mib` of fragments in flight, and
//! keeps fragments between its passes only up to `spool_mib`; a GET holds the fetch-ahead
//! (three segments of fragments), the decoder's buffers and [`s3::GET_CHANNEL_CHUNKS`] MiB
//! waiting for the client; range reads share at most `segments_cached` decoded segments
//! (S3 clients read a large object as many concurrent ranges smaller than a segment: each
//! segment is decoded once for all of them). At most `requests_max` PUTs, GETs and copies run at once; the rest
//! wait for a turn.

pub mod keys;
pub mod s3;

use crate::chain::ChainClient;
use anyhow::{Context, Result};
use cess_codec::CodecParams;
use cess_transport::NodeKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub const GATEWAY_KEY: &str = "gateway.key";
pub const STAGING_DIR: &str = "staging";
pub const OBJECTS_DIR: &str = "objects";
/// A multipart upload with no part for this long is dropped at the next start.
const MULTIPART_IDLE_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// Open S3 connections at most; one more is closed at once.
const CONNECTIONS_MAX: usize = 256;
/// From accept to the end of a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How a gateway runs (`cess gateway run`'s arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[arg(long, default_value = "cess-gateway")]
    pub dir: PathBuf,
    #[arg(long, default_value = "cess-devnet")]
    pub devnet: PathBuf,
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Segment size of the objects it stores, MiB.
    #[arg(long, default_value_t = 32)]
    pub segment_mib: u32,
    /// PUTs, GETs and copies running at once; the rest wait for a turn.
    #[arg(long, default_value_t = 8)]
    pub requests_max: usize,
    /// Fragment MiB a PUT keeps in memory between its passes (more: it encodes twice).
    #[arg(long, default_value_t = 256)]
    pub spool_mib: u64,
    /// Fragment MiB a PUT has in flight to the miners.
    #[arg(long, default_value_t = 128)]
    pub in_flight_mib: u32,
    /// Loopback HTTP address for /metrics (its port in DIR/metrics-addr once running).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics: SocketAddr,
    /// Decoded segments range reads share (each a segment's size in memory).
    #[arg(long, default_value_t = 4)]
    pub segments_cached: usize,
}

/// What the gateway did, for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// S3 requests answered, by status class.
    pub ok: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    /// Object bytes received (PUT bodies and parts) and sent (GET bodies).
    pub received_bytes: AtomicU64,
    pub sent_bytes: AtomicU64,
    /// Objects stored on the network (Active) and reads served whole.
    pub objects_stored: AtomicU64,
    pub objects_read: AtomicU64,
}

impl Metrics {
    fn count(&self, status: u16) {
        match status {
            200..=399 => &self.ok,
            400..=499 => &self.client_errors,
            _ => &self.server_errors,
        }
        .fetch_add(1, Relaxed);
    }
}

fn registry(
    metrics: Arc<Metrics>,
    gateway: s3::Gateway,
    requests_max: usize,
    http: Arc<cess_http::HttpStats>,
) -> cess_http::metrics::Registry {
    use cess_http::metrics::{ScrapeFn, Unit};
    let mut registry = cess_http::metrics::Registry::default();
    registry.register_collector(ScrapeFn::boxed(move |scrape| {
        let load = |c: &AtomicU64| c.load(Relaxed);
        scrape.counters(
            "cess_gateway_requests",
            "S3 requests answered, by status class",
            None,
            "class",
            &[
                ("2xx", load(&metrics.ok)),
                ("4xx", load(&metrics.client_errors)),
                ("5xx", load(&metrics.server_errors)),
            ],
        );
        scrape.counter(
            "cess_gateway_received",
            "Object bytes received (PUT bodies and parts)",
            Some(Unit::Bytes),
            load(&metrics.received_bytes),
        );
        scrape.counter(
            "cess_gateway_sent",
            "Object bytes sent (GET bodies)",
            Some(Unit::Bytes),
            load(&metrics.sent_bytes),
        );
        scrape.counter(
            "cess_gateway_objects_stored",
            "Objects stored on the network and Active (PUT, multipart completion, copy)",
            None,
            load(&metrics.objects_stored),
        );
        scrape.counter(
            "cess_gateway_objects_read",
            "GETs whose body was sent whole",
            None,
            load(&metrics.objects_read),
        );
        scrape.gauge(
            "cess_gateway_requests_running",
            "PUTs, GETs and copies holding one of the gateway's turns",
            None,
            requests_max.saturating_sub(gateway.turns_free()) as i64,
        );
        scrape.gauge(
            "cess_gateway_chain_height",
            "Height of the gateway's ledger replica",
            None,
            gateway.chain_height() as i64,
        );
        http.scrape(scrape);
    }));
    registry
}

/// Creates the gateway's directory, key and master secret (once): its account id.
pub fn init(dir: &Path) -> Result<cess_consensus::AccountId> {
    std::fs::create_dir_all(dir.join(STAGING_DIR))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(dir.join(OBJECTS_DIR))?;
    let key = NodeKey::load_or_create(&dir.join(GATEWAY_KEY))?;
    keys::Master::load_or_create(dir)?;
    cess_consensus::net::account_of(&key.peer_id()).context("the gateway key is not Ed25519")
}

/// Serves S3 on `options.listen` until interrupted.
pub fn run(options: &Options) -> Result<()> {
    init(&options.dir)?;
    // Bodies a previous run left half-staged are gone: nothing of them was acknowledged.
    // Multipart uploads untouched for a week are dropped as S3's lifecycle rules would.
    let staging = options.dir.join(STAGING_DIR);
    for entry in std::fs::read_dir(&staging)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("put-") {
            std::fs::remove_file(&path).ok();
        } else if name.starts_with("mpu-") {
            let idle = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if idle.is_some_and(|d| d > MULTIPART_IDLE_MAX) {
                eprintln!("gateway: dropping the abandoned upload {name}");
                std::fs::remove_dir_all(&path).ok();
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let key = Arc::new(NodeKey::load(&options.dir.join(GATEWAY_KEY))?);
    let source = crate::devnet::chain_source(&options.devnet)?;
    let chain = runtime.block_on(ChainClient::connect(
        &source,
        key.clone(),
        Duration::from_secs(60),
    ))?;
    let client = {
        let _guard = runtime.enter();
        crate::transfer::client(key, cess_transport::ClientConfig::default(), None)?
    };
    let table = Arc::new(keys::KeyTable::open(&options.dir)?);
    let metrics = Arc::new(Metrics::default());
    let params = CodecParams {
        segment_bytes: options.segment_mib << 20,
        ..CodecParams::default()
    };
    params.validate()?;
    let gateway = s3::Gateway::new(s3::Inner {
        handle: runtime.handle().clone(),
        account: chain.account.id(),
        chain,
        client,
        keys: table.clone(),
        dir: options.dir.clone(),
        params,
        requests: Arc::new(tokio::sync::Semaphore::new(options.requests_max.max(1))),
        spool_bytes_max: options.spool_mib << 20,
        in_flight_mib: options.in_flight_mib.max(1),
        metrics: metrics.clone(),
        segments: s3::SegmentCache::new(options.segments_cached),
        decoders: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ),
        completing: Default::default(),
    });
    {
        let _guard = runtime.enter();
        let (metrics, gateway, requests_max) = (
            metrics.clone(),
            gateway.clone(),
            options.requests_max.max(1),
        );
        runtime.block_on(crate::node::serve_metrics(
            options.metrics,
            false,
            &options.dir,
            |http| registry(metrics, gateway, requests_max, http),
        ))?;
    }
    let mut builder = s3s::service::S3ServiceBuilder::new(gateway);
    builder.set_auth(keys::Auth(table));
    let service = builder.build();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("listening on {}", options.listen))?;
        eprintln!(
            "gateway: S3 on http://{} (keys in {})",
            listener.local_addr()?,
            options.dir.join(keys::KEYS_FILE).display()
        );
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let open = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
        loop {
            let (socket, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = tokio::signal::ctrl_c() => break,
            };
            let Ok(slot) = open.clone().try_acquire_owned() else {
                drop(socket);
                continue;
            };
            let (service, http, metrics) = (service.clone(), http.clone(), metrics.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let io = hyper_util::rt::TokioIo::new(socket);
                let counted = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (service, metrics) = (service.clone(), metrics.clone());
                        let method = req.method().clone();
                        let path = req.uri().path().to_owned();
                        async move {
                            let response = hyper::service::Service::call(&service, req).await;
                            let status = response.as_ref().map_or(500, |r| r.status().as_u16());
                            metrics.count(status);
                            if status >= 500 {
                                eprintln!("gateway: {method} {path}: answered {status}");
                            }
                            response
                        }
                    },
                );
                if let Err(e) = http.serve_connection(io, counted).with_upgrades().await {
                    tracing::debug!("connection: {e}");
                }
            });
        }
        anyhow::Ok(())
    })
}
