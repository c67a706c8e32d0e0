//! The node's driver on the chain: a follower keeps the ledger replica, the [`NodeCore`]
//! decides, and this module does the I/O it asks for (submit transactions, delete fragments).
//! [`ChainStore`] puts the chain rule in front of the engine: the fragment protocol asks it
//! before any byte of a write is buffered, and tells the core when a fragment is durable.

use crate::{Action, EngineStore, NodeCore, WriteRefused};
use cess_consensus::codec::hex;
use cess_consensus::net::{FollowerHandle, TxClient};
use cess_consensus::{AccountKey, Call, Transaction};
use cess_engine::Key;
use cess_transport::server::{FragmentStore, StoreFault};
use cess_transport::{NodeAddr, NodeKey, PeerId};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a submitted transaction is waited for before the core may send it again.
pub const INCLUSION_TIMEOUT: Duration = Duration::from_secs(30);

/// How a node or a client follows: at the tip it asks for the next block every 250 ms (a
/// put waits on several blocks; a request costs a validator one read of its block store).
pub fn follower_config() -> cess_consensus::follow::FollowerConfig {
    cess_consensus::follow::FollowerConfig {
        poll_ms: 250,
        ..cess_consensus::follow::FollowerConfig::default()
    }
}

/// The replica, the core and the queue of what the core asked for, shared by the store and
/// the driver tasks.
#[derive(Debug)]
pub struct ChainLink {
    follower: FollowerHandle,
    core: Mutex<NodeCore>,
    actions: mpsc::UnboundedSender<Action>,
}

/// What the submitter did, for `/status` (the rest of the chain side is read from the
/// replica: [`ChainLink::summary`]).
#[derive(Debug, Clone, Default)]
pub struct LinkStatus {
    pub submitted: u64,
    pub included: u64,
    pub refused: u64,
    pub last_error: Option<String>,
}

impl ChainLink {
    pub fn follower(&self) -> &FollowerHandle {
        &self.follower
    }

    /// Whether the chain lets `fragment_id` be written here now.
    pub fn check_write(&self, fragment_id: &[u8; 32], len_bytes: u64) -> Result<(), String> {
        let status = self.follower.status();
        if let Some(e) = status.diverged {
            return Err(format!(
                "this node's ledger replica diverged ({e}); it stores nothing"
            ));
        }
        if !status.synced {
            return Err(format!(
                "this node has not caught up with the chain yet (at {}, {} behind)",
                status.height, status.behind
            ));
        }
        self.follower
            .with_ledger(|ledger| {
                self.core
                    .lock()
                    .expect("core lock")
                    .check_write(ledger, fragment_id, len_bytes)
            })
            .map_err(|e: WriteRefused| e.to_string())
    }

    fn stored(&self, fragment_id: [u8; 32], len_bytes: u64) {
        let actions = self.follower.with_ledger(|ledger| {
            self.core
                .lock()
                .expect("core lock")
                .on_stored(ledger, fragment_id, len_bytes)
        });
        self.queue(actions);
    }

    fn on_block(&self) {
        let actions = self
            .follower
            .with_ledger(|ledger| self.core.lock().expect("core lock").on_block(ledger));
        self.queue(actions);
    }

    fn queue(&self, actions: Vec<Action>) {
        for action in actions {
            // The receiver lives as long as the driver; after shutdown nothing is done.
            let _ = self.actions.send(action);
        }
    }

    /// (registered, fragments assigned here, fragments the core knows stored).
    pub fn summary(&self) -> (bool, u64, u64) {
        self.follower.with_ledger(|ledger| {
            let core = self.core.lock().expect("core lock");
            let me = core.identity().account;
            (
                ledger.miner(&me).is_some(),
                ledger.assigned_to(&me).count() as u64,
                core.stored().len() as u64,
            )
        })
    }
}

/// The engine behind the fragment protocol, with the chain rule in front.
#[derive(Debug, Clone)]
pub struct ChainStore {
    pub engine: EngineStore,
    pub link: Arc<ChainLink>,
}

impl FragmentStore for ChainStore {
    type WriteBuf = <EngineStore as FragmentStore>::WriteBuf;
    type ReadBuf = <EngineStore as FragmentStore>::ReadBuf;

    fn admit(&self, _writer: &PeerId, id: &[u8; 32], fragment_bytes: u64) -> Result<(), String> {
        self.link.check_write(id, fragment_bytes)
    }

    fn alloc(&self, len_bytes: usize) -> Self::WriteBuf {
        self.engine.alloc(len_bytes)
    }

    fn fragment_bytes_max(&self) -> u64 {
        self.engine.fragment_bytes_max()
    }

    async fn len_of(&self, id: [u8; 32]) -> Result<Option<u64>, StoreFault> {
        let len = self.engine.len_of(id).await?;
        if let Some(len_bytes) = len {
            // A resumed upload of a fragment already here: the core learns (again) that it
            // is durable, so a report lost in a restart is made.
            self.link.stored(id, len_bytes);
        }
        Ok(len)
    }

    async fn put(&self, id: [u8; 32], data: Self::WriteBuf) -> Result<(), StoreFault> {
        let len_bytes = data.len() as u64;
        self.engine.put(id, data).await?;
        // Durable now (the engine acknowledges after its journal commit).
        self.link.stored(id, len_bytes);
        Ok(())
    }

    async fn read(
        &self,
        id: [u8; 32],
        offset: u64,
        len_bytes: u64,
    ) -> Result<Self::ReadBuf, StoreFault> {
        self.engine.read(id, offset, len_bytes).await
    }
}

/// Starts the driver: the core's decisions after every block, deletions in the store,
/// transactions signed with `key` and sent to `validators`. Must run inside a tokio runtime.
pub fn start(
    follower: FollowerHandle,
    core: NodeCore,
    engine: EngineStore,
    key: Arc<NodeKey>,
    validators: Vec<NodeAddr>,
    status: Arc<Mutex<LinkStatus>>,
) -> Arc<ChainLink> {
    assert!(
        !validators.is_empty(),
        "a node follows at least one validator"
    );
    let (actions_tx, mut actions_rx) = mpsc::unbounded_channel();
    let link = Arc::new(ChainLink {
        follower,
        core: Mutex::new(core),
        actions: actions_tx,
    });
    let (calls_tx, calls_rx) = mpsc::unbounded_channel();
    // Decisions after every block, once the replica is at the tip.
    {
        let link = link.clone();
        let mut applied = link.follower.applied();
        tokio::spawn(async move {
            if link
                .follower
                .wait_synced(Duration::from_secs(3600 * 24 * 365))
                .await
                .is_err()
            {
                return;
            }
            link.on_block();
            loop {
                match applied.recv().await {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        link.on_block()
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    // Actions: deletions here, calls to the submitter.
    {
        let link = link.clone();
        tokio::spawn(async move {
            while let Some(action) = actions_rx.recv().await {
                match action {
                    Action::Submit(call) => {
                        let _ = calls_tx.send(call);
                    }
                    Action::Delete(id) => match engine.0.delete(Key(id)).await {
                        Ok(_) => {
                            link.core.lock().expect("core lock").on_deleted(&id);
                            tracing::info!(fragment = %hex(&id), "deleted: the chain no longer assigns it here");
                        }
                        Err(e) => {
                            tracing::warn!(fragment = %hex(&id), "delete failed: {e}");
                        }
                    },
                }
            }
        });
    }
    tokio::spawn(submit_loop(link.clone(), key, validators, calls_rx, status));
    link
}

/// Sends the core's calls, as many as are queued at once with consecutive nonces from the
/// replica's, and waits for each to be included. A call that was not taken is sent again by
/// the core after `RESUBMIT_BLOCKS`.
async fn submit_loop(
    link: Arc<ChainLink>,
    key: Arc<NodeKey>,
    validators: Vec<NodeAddr>,
    mut calls: mpsc::UnboundedReceiver<Call>,
    status: Arc<Mutex<LinkStatus>>,
) {
    let Some(account) = AccountKey::from_libp2p(key.keypair()) else {
        tracing::error!("the node key is not Ed25519; it cannot sign transactions");
        return;
    };
    let mut client: Option<TxClient> = None;
    let mut next_validator = 0usize;
    while let Some(first) = calls.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = calls.try_recv() {
            batch.push(more);
        }
        let txs: Vec<Transaction> = link.follower.with_ledger(|ledger| {
            let nonce = ledger.account(&account.id()).nonce;
            batch
                .into_iter()
                .enumerate()
                .map(|(i, call)| ledger.transaction_with_nonce(&account, nonce + i as u64, call))
                .collect()
        });
        let mut waits: Vec<_> = txs.iter().map(|_| link.follower.applied()).collect();
        let mut sent = false;
        for _ in 0..validators.len() {
            if client.is_none() {
                let validator = &validators[next_validator % validators.len()];
                match TxClient::connect(key.clone(), validator).await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        record_error(&status, format!("validator {validator}: {e}"));
                        next_validator += 1;
                        continue;
                    }
                }
            }
            match client.as_mut().expect("connected above").send(&txs).await {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(e) => {
                    record_error(&status, format!("sending transactions: {e}"));
                    client = None;
                    next_validator += 1;
                }
            }
        }
        if !sent {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        status.lock().expect("status lock").submitted += txs.len() as u64;
        for (tx, blocks) in txs.iter().zip(waits.iter_mut()) {
            let what = tx.call.name();
            match FollowerHandle::wait_for_inclusion(blocks, tx, INCLUSION_TIMEOUT).await {
                Ok(height) => {
                    tracing::info!("{what} included at height {height}");
                    status.lock().expect("status lock").included += 1;
                }
                Err(e) => {
                    tracing::warn!("{what}: {e}");
                    let mut s = status.lock().expect("status lock");
                    s.refused += 1;
                    s.last_error = Some(format!("{what}: {e}"));
                }
            }
        }
    }
}

fn record_error(status: &Mutex<LinkStatus>, message: String) {
    tracing::warn!("{message}");
    status.lock().expect("status lock").last_error = Some(message);
}
