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
//! waiting for the client. At most `requests_max` PUTs, GETs and copies run at once; the rest
//! wait for a turn.

pub mod keys;
pub mod s3;

use crate::chain::ChainClient;
use anyhow::{Context, Result};
use cess_engine::codec::CodecParams;
use cess_transport::NodeKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const GATEWAY_KEY: &str = "gateway.key";
pub const STAGING_DIR: &str = "staging";
pub const OBJECTS_DIR: &str = "objects";

/// How a gateway runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub devnet: PathBuf,
    pub listen: SocketAddr,
    pub segment_mib: u32,
    pub requests_max: usize,
    pub spool_mib: u64,
    pub in_flight_mib: u32,
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
    // Uploads a previous run left half-done are gone: nothing of them was acknowledged.
    let staging = options.dir.join(STAGING_DIR);
    for entry in std::fs::read_dir(&staging)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("put-"))
        {
            std::fs::remove_file(&path).ok();
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
        crate::net::client(key, cess_transport::ClientConfig::default(), None)?
    };
    let table = Arc::new(keys::KeyTable::open(&options.dir)?);
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
    });
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
        let http = hyper::server::conn::http1::Builder::new();
        loop {
            let (socket, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = tokio::signal::ctrl_c() => break,
            };
            let service = service.clone();
            let http = http.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(socket);
                if let Err(e) = http.serve_connection(io, service).with_upgrades().await {
                    tracing::debug!("connection: {e}");
                }
            });
        }
        anyhow::Ok(())
    })
}
