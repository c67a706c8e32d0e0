//! `cess chain …`: what the chain holds, read from a follower's replica (every block checked
//! against its commit, no validator trusted) and printed as tables or `--json`.

use anyhow::{Context, Result, bail};
use cess_consensus::codec::hex;
use cess_consensus::follow::FollowerConfig;
use cess_consensus::ledger::{FileState, Ledger, MinerState, TOKEN};
use cess_consensus::net::{self, FollowerHandle};
use cess_consensus::{AccountId, AccountKey, Call};
use cess_transport::identity::{NodeAddr, NodeKey};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the chain is: a genesis file and validators' addresses.
#[derive(Debug, Clone)]
pub struct ChainSource {
    pub genesis: PathBuf,
    pub validators: Vec<NodeAddr>,
}

impl ChainSource {
    /// A directory made by `cess validator testnet` (genesis.bin, validators.txt), or an
    /// explicit genesis file and validator list (which win).
    pub fn resolve(
        dir: &Path,
        genesis: Option<PathBuf>,
        validators: &[String],
    ) -> Result<ChainSource> {
        let genesis = genesis.unwrap_or_else(|| dir.join("genesis.bin"));
        let listed: Vec<String> = if validators.is_empty() {
            let path = dir.join("validators.txt");
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "reading {} (or name validators with --validator)",
                        path.display()
                    )
                })?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        } else {
            validators.to_vec()
        };
        Ok(ChainSource {
            genesis,
            validators: parse_validators(&listed)?,
        })
    }
}

/// The ledger at genesis, from a genesis file (its hash is the chain id).
pub fn genesis_ledger(path: &Path) -> Result<Ledger> {
    Ok(cess_node::config::genesis_ledger(path)?)
}

/// Validators' multiaddrs (`/ip4/…/udp/…/quic-v1/p2p/…`), at least one.
pub fn parse_validators(listed: &[String]) -> Result<Vec<NodeAddr>> {
    Ok(cess_node::config::parse_validators(listed)?)
}

/// Follows the chain until the replica is at the tip a validator claims; the follower.
pub async fn synced_follower(source: &ChainSource, timeout: Duration) -> Result<FollowerHandle> {
    // A throwaway identity: a follower proves nothing about itself.
    let key = Arc::new(NodeKey::from_ed25519(
        AccountKey::generate().ed25519().clone(),
    ));
    follow_to_tip(source, key, FollowerConfig::default(), timeout).await
}

/// A replica of `source`'s chain from genesis, followed as `key` until at the tip.
async fn follow_to_tip(
    source: &ChainSource,
    key: Arc<NodeKey>,
    config: FollowerConfig,
    timeout: Duration,
) -> Result<FollowerHandle> {
    let ledger = genesis_ledger(&source.genesis)?;
    let follower = net::follow(ledger, key, source.validators.clone(), config)?;
    let status = follower.wait_synced(timeout).await.with_context(|| {
        let s = follower.status();
        format!(
            "no validator of {} brought this replica to its tip (at height {}, tip {:?}); \
             is the chain running?",
            source.validators.len(),
            s.height,
            s.tip
        )
    })?;
    if let Some(reason) = status.diverged {
        bail!("{reason}");
    }
    Ok(follower)
}

fn tokens(pico: u128) -> String {
    format!("{}.{:06}", pico / TOKEN, (pico % TOKEN) / 1_000_000)
}

fn file_state(state: FileState) -> &'static str {
    state.name()
}

/// One segment's health: fragments held (stored or not yet), under restoral (claimed or
/// not), and whether more than a third are under restoral (at risk).
fn segment_health(l: &Ledger, segment: &cess_consensus::ledger::SegmentInfo) -> serde_json::Value {
    let held = segment
        .fragments
        .iter()
        .filter(|x| x.miner.is_some())
        .count();
    let restoring: Vec<_> = segment
        .fragments
        .iter()
        .filter_map(|x| l.restoral(&x.id).map(|o| (x, o)))
        .map(|(x, o)| {
            json!({
                "fragment_id": x.id.to_hex(),
                "lost_by": hex(&o.lost_by.0),
                "opened_at": o.opened_at,
                "claimed_by": o.claim.map(|(m, _)| hex(&m.0)),
                "claim_until": o.claim.map(|(_, until)| until),
            })
        })
        .collect();
    let unheld = segment.fragments.len() - held;
    json!({
        "segment_id": hex(&segment.segment_id),
        "held": held,
        "under_restoral": restoring.len(),
        "at_risk": cess_consensus::ledger::segment_at_risk(unheld, segment.fragments.len()),
        "restorals": restoring,
        "fragments": segment.fragments.iter().map(|x| json!({
            "id": x.id.to_hex(),
            "miner": x.miner.map(|m| hex(&m.0)),
            "stored": x.stored,
        })).collect::<Vec<_>>(),
    })
}

fn parse_account(text: &str) -> Result<AccountId> {
    let bytes = cess_types::parse_hex32(text).context("an account id is 64 hex digits")?;
    Ok(AccountId(bytes))
}

#[derive(Debug, Clone)]
pub enum Query {
    Status,
    Miners,
    Files,
    File(String),
    Account(String),
}

/// Runs one query and prints its answer.
pub fn run(source: &ChainSource, query: Query, json_out: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let follower = synced_follower(source, Duration::from_secs(30)).await?;
        let status = follower.status();
        let out = follower.with_ledger(|l| render(l, &query, json_out, status.tip))?;
        follower.shutdown();
        print!("{out}");
        Ok(())
    })
}

fn render(l: &Ledger, query: &Query, json_out: bool, tip: Option<u64>) -> Result<String> {
    let mut out = String::new();
    match query {
        Query::Status => {
            let value = json!({
                "chain_id": hex(&l.chain_id()),
                "height": l.height(),
                "tip_claimed": tip,
                "time_ms": l.time_ms(),
                "state_root": hex(&l.root()),
                "validators": l.validators().iter().map(|v| hex(&v.account.0)).collect::<Vec<_>>(),
                "miners": l.miners().count(),
                "files": l.files().count(),
                "reward_pool": l.reward_pool().to_string(),
            });
            if json_out {
                out = format!("{value:#}\n");
            } else {
                out += &format!("chain       {}\n", hex(&l.chain_id()[..8]));
                out += &format!("height      {} (tip claimed {:?})\n", l.height(), tip);
                out += &format!("state root  {}\n", hex(&l.root()));
                out += &format!("validators  {}\n", l.validators().len());
                out += &format!("miners      {}\n", l.miners().count());
                out += &format!("files       {}\n", l.files().count());
                out += &format!("reward pool {} tokens\n", tokens(l.reward_pool()));
            }
        }
        Query::Miners => {
            let rows: Vec<_> = l
                .miners()
                .map(|(id, m)| {
                    json!({
                        "account": hex(&id.0),
                        "endpoint": m.endpoint,
                        "declared_bytes": m.declared_bytes,
                        "active_bytes": m.active_bytes,
                        "locked_bytes": m.locked_bytes,
                        "idle_verified_bytes": l.idle_verified_bytes(id),
                        "idle_committed_sets": l.idle_space(id).map_or(0, |i| i.pending.len()),
                        "idle_space_audit": l.idle_space(id).and_then(|i| i.audit).map(|a| json!({
                            "round": a.round, "first_file": a.first_file, "deadline": a.deadline,
                        })),
                        "collateral": m.collateral.to_string(),
                        "state": match m.state { MinerState::Active => "active".to_string(), MinerState::Exiting { since } => format!("exiting since {since}") },
                        "reputation": m.reputation,
                    })
                })
                .collect();
            if json_out {
                out = format!("{:#}\n", json!(rows));
            } else {
                out += &format!(
                    "{:<16} {:>14} {:>14} {:>14} {:>12} {:<8} endpoint\n",
                    "miner", "declared", "stored", "idle verified", "collateral", "state"
                );
                for (id, m) in l.miners() {
                    out += &format!(
                        "{:<16} {:>14} {:>14} {:>14} {:>12} {:<8} {}\n",
                        hex(&id.0[..8]),
                        m.declared_bytes,
                        m.active_bytes,
                        l.idle_verified_bytes(id),
                        tokens(m.collateral),
                        if m.state == MinerState::Active {
                            "active"
                        } else {
                            "exiting"
                        },
                        m.endpoint
                    );
                }
            }
        }
        Query::Files => {
            let rows: Vec<_> = l
                .files()
                .map(|(id, f)| {
                    json!({
                        "file_id": hex(id),
                        "size_bytes": f.size_bytes,
                        "segments": f.segments.len(),
                        "owners": f.owners.len(),
                        // Each owner's name for it, `bucket/name` when listed in a bucket.
                        "names": f.owners.values().map(|o| if o.bucket.is_empty() {
                            o.name.clone()
                        } else {
                            format!("{}/{}", o.bucket, o.name)
                        }).collect::<Vec<_>>(),
                        "state": file_state(f.state),
                    })
                })
                .collect();
            if json_out {
                out = format!("{:#}\n", json!(rows));
            } else {
                out += &format!(
                    "{:<64} {:>14} {:>8} {:>6} state\n",
                    "file", "bytes", "segments", "owners"
                );
                for (id, f) in l.files() {
                    out += &format!(
                        "{:<64} {:>14} {:>8} {:>6} {}\n",
                        hex(id),
                        f.size_bytes,
                        f.segments.len(),
                        f.owners.len(),
                        file_state(f.state)
                    );
                }
            }
        }
        Query::File(id_hex) => {
            let id = cess_types::parse_hex32(id_hex).context("a file id is 64 hex digits")?;
            let f = l
                .file(&id)
                .with_context(|| format!("no file {id_hex} on the chain"))?;
            let columns: Vec<_> = f.segments[0]
                .fragments
                .iter()
                .map(|x| x.miner.map(|m| hex(&m.0)))
                .collect();
            let (lost_at, lost_at_height) = match f.state {
                FileState::Recovery { lost_at, .. } => (lost_at, None),
                FileState::Lost { at } => (None, Some(at)),
                _ => (None, None),
            };
            let segments: Vec<_> = f.segments.iter().map(|s| segment_health(l, s)).collect();
            let value = json!({
                "file_id": id_hex,
                "size_bytes": f.size_bytes,
                "fragment_bytes": f.fragment_bytes,
                "tagger": hex(&f.tagger),
                "state": file_state(f.state),
                "lost_at": lost_at,
                "lost_at_height": lost_at_height,
                "declared_at": f.declared_at,
                "owners": f.owners.iter().map(|(o, owner)| json!({"account": hex(&o.0), "name": owner.name, "bucket": owner.bucket, "since": owner.since})).collect::<Vec<_>>(),
                "column_miners": columns,
                "segments": segments,
            });
            if json_out {
                out = format!("{value:#}\n");
            } else {
                out += &format!("file      {id_hex}\n");
                out += &format!("state     {}", file_state(f.state));
                match (lost_at, lost_at_height) {
                    (Some(at), _) => out += &format!(" (lost at height {at} unless rebuilt first)"),
                    (_, Some(at)) => {
                        out += &format!(
                            " (since height {at}: no segment could be rebuilt by the rule)"
                        )
                    }
                    _ => {}
                }
                out += &format!(
                    "\nsize      {} bytes, {} segments of {} fragments\n",
                    f.size_bytes,
                    f.segments.len(),
                    f.segments[0].fragments.len()
                );
                for (i, s) in segments.iter().enumerate() {
                    out += &format!(
                        "segment {i:<4} {} held, {} under restoral{}\n",
                        s["held"],
                        s["under_restoral"],
                        if s["at_risk"] == true {
                            ", AT RISK"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        Query::Account(id_hex) => {
            let id = parse_account(id_hex)?;
            let a = l.account(&id);
            let lease = l.lease(&id);
            let value = json!({
                "account": id_hex,
                "balance": a.balance.to_string(),
                "nonce": a.nonce,
                "miner": l.miner(&id).is_some(),
                "lease": lease.map(|x| json!({"gib": x.gib, "used_bytes": x.used_bytes, "until": x.until})),
            });
            if json_out {
                out = format!("{value:#}\n");
            } else {
                out += &format!("account {id_hex}\n");
                out += &format!("balance {} tokens\n", tokens(a.balance));
                out += &format!("nonce   {}\n", a.nonce);
                if let Some(x) = lease {
                    out += &format!(
                        "lease   {} GiB until height {}, {} bytes used\n",
                        x.gib, x.until, x.used_bytes
                    );
                }
            }
        }
    }
    Ok(out)
}

/// A client on the chain: its own replica (every block checked), an account to sign with,
/// and validators to send to (the next one when one fails).
pub struct ChainClient {
    pub follower: FollowerHandle,
    pub node_key: Arc<NodeKey>,
    pub account: AccountKey,
    validators: Vec<NodeAddr>,
    sender: tokio::sync::Mutex<(usize, Option<net::TxClient>)>,
    /// Held through a whole submit: a transaction's nonce comes from the replica, so two in
    /// flight at once from one account would carry the same one.
    submitting: tokio::sync::Mutex<()>,
}

/// How long a transaction is waited for before a client gives up on it.
pub const INCLUSION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a sent transaction is waited for before it is sent again, to another validator
/// (a block comes every second or two; five of them missing it means it was lost).
pub const RESEND_AFTER: Duration = Duration::from_secs(8);

impl ChainClient {
    /// Follows the chain of `source` until at its tip, signing as `node_key`'s account.
    pub async fn connect(
        source: &ChainSource,
        node_key: Arc<NodeKey>,
        timeout: Duration,
    ) -> Result<ChainClient> {
        let account =
            AccountKey::from_libp2p(node_key.keypair()).context("the client key is not Ed25519")?;
        let follower = follow_to_tip(
            source,
            node_key.clone(),
            cess_node::chain::follower_config(),
            timeout,
        )
        .await?;
        Ok(ChainClient {
            follower,
            node_key,
            account,
            validators: source.validators.clone(),
            sender: tokio::sync::Mutex::new((0, None)),
            submitting: tokio::sync::Mutex::new(()),
        })
    }

    pub fn ledger<T>(&self, read: impl FnOnce(&Ledger) -> T) -> T {
        self.follower.with_ledger(read)
    }

    /// Signs `call` with the next nonce, sends it and waits until a block includes it: the
    /// height, or why not (the ledger's reason when it refused the call). A validator may
    /// take the bytes and still lose them (it closed the connection after the handshake, it
    /// restarted): not included within [`RESEND_AFTER`], the same transaction goes to the next
    /// validator (a mempool keeps one copy), until [`INCLUSION_TIMEOUT`].
    pub async fn submit(&self, call: Call) -> Result<u64> {
        let what = call.name();
        let _one_at_a_time = self.submitting.lock().await;
        let (tx, balance) = self.ledger(|l| {
            (
                l.transaction(&self.account, call),
                l.account(&self.account.id()).balance,
            )
        });
        // A validator drops what its signer cannot pay for; say so now, not after a timeout.
        if balance < tx.fee {
            bail!(
                "{what}: account {} holds {balance} and the fee is {}: fund it (`cess transfer {} TOKENS`)",
                self.account.id(),
                tx.fee,
                self.account.id()
            );
        }
        let mut blocks = self.follower.applied();
        let deadline = tokio::time::Instant::now() + INCLUSION_TIMEOUT;
        let mut rotate = false;
        loop {
            self.send_once(what, &tx, rotate).await?;
            rotate = true;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = left.min(RESEND_AFTER);
            match FollowerHandle::wait_for_inclusion(&mut blocks, &tx, wait).await {
                Err(net::InclusionError::Timeout { .. }) if wait < left => {
                    tracing::debug!("{what}: not included within {wait:?}; sending it again");
                }
                Err(net::InclusionError::Timeout { .. }) => {
                    bail!(
                        "{what}: not included within {} ms",
                        INCLUSION_TIMEOUT.as_millis()
                    )
                }
                outcome => return outcome.with_context(|| what.to_string()),
            }
        }
    }

    /// Hands `tx` to one validator: the current one, or the next when `rotate`.
    async fn send_once(
        &self,
        what: &str,
        tx: &cess_consensus::Transaction,
        rotate: bool,
    ) -> Result<()> {
        let mut sender = self.sender.lock().await;
        if rotate {
            sender.1 = None;
            sender.0 += 1;
        }
        let mut errors = Vec::new();
        for _ in 0..self.validators.len() {
            let validator = &self.validators[sender.0 % self.validators.len()];
            if sender.1.is_none() {
                match net::TxClient::connect(self.node_key.clone(), validator).await {
                    Ok(c) => sender.1 = Some(c),
                    Err(e) => {
                        errors.push(format!("{validator}: {e}"));
                        sender.0 += 1;
                        continue;
                    }
                }
            }
            match sender
                .1
                .as_mut()
                .expect("connected")
                .send(std::slice::from_ref(tx))
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    errors.push(format!("{validator}: {e}"));
                    sender.1 = None;
                    sender.0 += 1;
                }
            }
        }
        bail!(
            "{what}: no validator took the transaction:\n  {}",
            errors.join("\n  ")
        )
    }

    /// Waits until `test` finds what it looks for in the replica (checked after every block),
    /// or `timeout` passes (then the error says what was waited for).
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut test: impl FnMut(&Ledger) -> Option<T>,
    ) -> Result<T> {
        let mut blocks = self.follower.applied();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = self.ledger(&mut test) {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, blocks.recv()).await {
                Err(_) => bail!("{what}: not within {} s", timeout.as_secs()),
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    bail!("{what}: the follower stopped")
                }
                Ok(_) => {}
            }
        }
    }
}

impl Drop for ChainClient {
    fn drop(&mut self) {
        self.follower.shutdown();
    }
}
