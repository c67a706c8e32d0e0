//! Checkpoints: the ledger at a height, written every so often beside the block store, so a
//! restart replays only the blocks after the last one instead of the whole chain.
//!
//! File `DIR/checkpoint`: `magic (16) ‖ version u32 ‖ chain id ‖ height u64 ‖ hash of the block
//! at that height ‖ the set that decided it (count u32, (account ‖ BLS key)…, lottery seed) ‖
//! ledger snapshot (len u64 ‖ [`Ledger::encode_snapshot`]) ‖ SHA-256 of everything before`.
//!
//! Crash argument: a checkpoint is written whole to `checkpoint.tmp`, `fsync`ed, renamed over
//! `checkpoint`, and the directory `fsync`ed: a crash leaves the old file or the new one, never
//! a mix. It is written only after the block of its height is durable in the block store, so
//! it is never ahead of the store; one that is (a store that lost blocks), one that fails its
//! checksum or decode, or one of another chain is ignored with a warning and the store is
//! replayed from genesis: a checkpoint of this validator's own only ever saves time, it is
//! never trusted over its blocks. (A checkpoint taken from a peer, `crate::statesync`,
//! replaces the blocks before it: it is checked against the validator sets first, and the
//! store then starts at its height.) The snapshot's state root is recomputed on decode and must be the one it carries,
//! and the first replayed block must name it as its parent root.

use crate::bft::{Validator, ValidatorSet};
use crate::codec::{DecodeError, Reader, Writer};
use crate::keys::{AccountId, VALIDATOR_KEY_BYTES, ValidatorPublicKey};
use crate::ledger::{Ledger, SnapshotError};
use crate::tx::Hash32;
use sha2::{Digest, Sha256};
use std::path::Path;

pub const CHECKPOINT_FILE: &str = "checkpoint";
const MAGIC: &[u8; 16] = b"cess-checkpoint\0";
const VERSION: u32 = 1;
/// A validator writes a checkpoint after every this many blocks by default.
pub const CHECKPOINT_EVERY_BLOCKS: u64 = 1000;

/// The ledger after a block, with what a core resumed there needs besides it.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub ledger: Ledger,
    /// Hash of the block at the ledger's height (the chain id at genesis).
    pub last_hash: Hash32,
    /// The set that decided that block (none at genesis).
    pub previous_validators: Option<ValidatorSet>,
}

/// Why a checkpoint was not used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("not a checkpoint of this build (magic or version)")]
    NotACheckpoint,
    #[error("checkpoint checksum does not match (damaged)")]
    Checksum,
    #[error("checkpoint of another chain")]
    OtherChain,
    #[error("checkpoint: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("checkpoint says height {said}, its ledger is at {ledger}")]
    Height { said: u64, ledger: u64 },
}

/// Where a checkpoint's height is in its bytes (after the magic, the version and the chain id).
pub const HEIGHT_AT: usize = 16 + 4 + 32;

/// The height a checkpoint's first bytes say (unchecked: the whole is checked on decode);
/// `None` if they are not a checkpoint's of this version.
pub fn peek_height(prefix: &[u8]) -> Option<u64> {
    let head = prefix.get(..HEIGHT_AT + 8)?;
    if &head[..16] != MAGIC || head[16..20] != VERSION.to_le_bytes() {
        return None;
    }
    Some(u64::from_le_bytes(
        head[HEIGHT_AT..].try_into().expect("8 bytes"),
    ))
}

/// The checkpoint's bytes.
pub fn encode(checkpoint: &Checkpoint) -> Vec<u8> {
    let snapshot = checkpoint.ledger.encode_snapshot();
    let mut w = Writer::new();
    w.fixed(MAGIC)
        .u32(VERSION)
        .fixed(&checkpoint.ledger.chain_id())
        .u64(checkpoint.ledger.height())
        .fixed(&checkpoint.last_hash);
    match &checkpoint.previous_validators {
        None => {
            w.count(0);
        }
        Some(set) => {
            w.count(set.len());
            for account in set.accounts() {
                let validator = set.get(account).expect("a set's accounts are in it");
                w.fixed(&account.0).fixed(&validator.key.to_bytes());
            }
            w.fixed(&set.seed);
        }
    }
    w.u64(snapshot.len() as u64).fixed(&snapshot);
    let mut bytes = w.into_bytes();
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    bytes
}

/// A checkpoint of `chain_id` from its bytes: checksum, chain, snapshot (root recomputed).
pub fn decode(bytes: &[u8], chain_id: &Hash32) -> Result<Checkpoint, CheckpointError> {
    if bytes.len() < MAGIC.len() + 4 + 32 || !bytes.starts_with(MAGIC) {
        return Err(CheckpointError::NotACheckpoint);
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body)[..] != digest[..] {
        return Err(CheckpointError::Checksum);
    }
    let mut r = Reader::new(&body[MAGIC.len()..]);
    if r.u32("version")? != VERSION {
        return Err(CheckpointError::NotACheckpoint);
    }
    let chain: Hash32 = r.array("chain id")?;
    if chain != *chain_id {
        return Err(CheckpointError::OtherChain);
    }
    let height = r.u64("height")?;
    let last_hash = r.array("last hash")?;
    let count = r.count(
        crate::bft::VALIDATORS_MAX,
        32 + VALIDATOR_KEY_BYTES,
        "previous validators",
    )?;
    let previous_validators = if count == 0 {
        None
    } else {
        let validators = (0..count)
            .map(|_| {
                let account = AccountId(r.array("validator")?);
                let key: [u8; VALIDATOR_KEY_BYTES] = r.array("validator key")?;
                let key = ValidatorPublicKey::decode(&key)
                    .map_err(|_| DecodeError::Invalid("validator key"))?;
                Ok(Validator { account, key })
            })
            .collect::<Result<Vec<Validator>, DecodeError>>()?;
        // In account order, each once, as a set keeps them (one encoding).
        if validators.windows(2).any(|w| w[0].account >= w[1].account) {
            return Err(DecodeError::Invalid("previous validators").into());
        }
        Some(ValidatorSet::new(validators, r.array("lottery seed")?))
    };
    let len = r.u64("snapshot length")?;
    let snapshot = r.bytes_exact(len, "snapshot")?;
    r.finish()?;
    let ledger = Ledger::decode_snapshot(snapshot)?;
    if ledger.height() != height || ledger.chain_id() != *chain_id {
        return Err(CheckpointError::Height {
            said: height,
            ledger: ledger.height(),
        });
    }
    Ok(Checkpoint {
        ledger,
        last_hash,
        previous_validators,
    })
}

/// Writes `checkpoint` to `dir/checkpoint` crash-safely (see the module documentation).
pub fn write(dir: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    use std::io::Write;
    let path = dir.join(CHECKPOINT_FILE);
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let io = |source| CheckpointError::Io {
        path: path.clone(),
        source,
    };
    let bytes = encode(checkpoint);
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

/// The checkpoint in `dir`, if there is one.
pub fn read(dir: &Path, chain_id: &Hash32) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = dir.join(CHECKPOINT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Io { path, source }),
    };
    decode(&bytes, chain_id).map(Some)
}
