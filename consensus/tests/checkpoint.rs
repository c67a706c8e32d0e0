//! Checkpoints: a validator's disk with a checkpoint resumes by replaying only the blocks after
//! it, to the same ledger, the same last hash, the same recent blocks and the same deciding set
//! as replaying its whole store; a checkpoint at the store's last height replays nothing. A
//! damaged checkpoint, one of another chain and one ahead of the store are set aside (the
//! reason is reported) and the store is replayed from genesis.

use cess_consensus::checkpoint::{self, Checkpoint};
use cess_consensus::ledger::{Ledger, LedgerParams};
use cess_consensus::sim::{empty_chain, genesis};
use cess_consensus::store::{BLOCKS_FILE, BlockStore, open_disk};

struct Setup {
    dir: tempfile::TempDir,
    genesis: Ledger,
    /// Ledger at 199 and 200, and hash of block 200.
    at_199: Ledger,
    at_200: Ledger,
    hash_200: [u8; 32],
    /// Ledger after the 300 stored blocks.
    full: Ledger,
}

fn setup(seed: u64) -> Setup {
    let params = LedgerParams {
        validators_per_era: 1,
        epoch_blocks: 10,
        era_blocks: 20,
        ..LedgerParams::default()
    };
    let (genesis_file, keys, _) = genesis(1, 1, seed, params);
    let genesis = Ledger::genesis(&genesis_file).unwrap();
    let (account, key) = &keys[0];
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) =
        BlockStore::open(&dir.path().join(BLOCKS_FILE), &genesis.chain_id()).unwrap();
    let mut blocks = Vec::new();
    let mut ledger = genesis.clone();
    let mut hash = ledger.chain_id();
    hash = empty_chain(&mut ledger, hash, key, account.id(), 199, |b, c| {
        blocks.push((b, c))
    });
    let at_199 = ledger.clone();
    let hash_200 = empty_chain(&mut ledger, hash, key, account.id(), 1, |b, c| {
        blocks.push((b, c))
    });
    let at_200 = ledger.clone();
    empty_chain(&mut ledger, hash_200, key, account.id(), 100, |b, c| {
        blocks.push((b, c))
    });
    store
        .append_all(blocks.iter().map(|(b, c)| (&**b, c)))
        .unwrap();
    Setup {
        dir,
        genesis,
        at_199,
        at_200,
        hash_200,
        full: ledger,
    }
}

#[test]
fn a_checkpoint_cuts_the_replay_to_the_blocks_after_it() {
    let s = setup(61);
    let dir = s.dir.path();
    let whole = open_disk(dir, s.genesis.clone(), 16, false).unwrap();
    assert_eq!(whole.checkpoint_height, None);
    assert_eq!(whole.replayed_blocks, 300);
    assert_eq!(whole.restored.ledger.root(), s.full.root());
    let (whole_root, whole_hash, whole_previous, whole_recent) = (
        whole.restored.ledger.root(),
        whole.restored.last_hash,
        whole.restored.previous_validators.clone(),
        whole
            .restored
            .recent
            .iter()
            .map(|(b, _)| b.height)
            .collect::<Vec<_>>(),
    );
    drop(whole);

    checkpoint::write(
        dir,
        &Checkpoint {
            ledger: s.at_200.clone(),
            last_hash: s.hash_200,
            previous_validators: Some(cess_consensus::bft::validator_set(&s.at_199)),
        },
    )
    .unwrap();
    let resumed = open_disk(dir, s.genesis.clone(), 16, false).unwrap();
    assert_eq!(resumed.checkpoint_height, Some(200));
    assert_eq!(resumed.checkpoint_refused, None);
    assert_eq!(resumed.replayed_blocks, 100);
    assert_eq!(resumed.restored.ledger.root(), whole_root);
    assert_eq!(
        resumed.restored.ledger.encode_snapshot(),
        s.full.encode_snapshot()
    );
    assert_eq!(resumed.restored.last_hash, whole_hash);
    assert_eq!(resumed.restored.previous_validators, whole_previous);
    let recent: Vec<u64> = resumed
        .restored
        .recent
        .iter()
        .map(|(b, _)| b.height)
        .collect();
    assert_eq!(recent, whole_recent);
    drop(resumed);

    // Replaying fewer blocks than the recent ones kept: the rest are read from the store.
    let resumed = open_disk(dir, s.genesis.clone(), 200, false).unwrap();
    let recent: Vec<u64> = resumed
        .restored
        .recent
        .iter()
        .map(|(b, _)| b.height)
        .collect();
    assert_eq!(recent, (101..=300).collect::<Vec<_>>());
    drop(resumed);

    // Damaged: set aside, the whole store replayed, the same ledger.
    let path = dir.join(checkpoint::CHECKPOINT_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let refused = open_disk(dir, s.genesis.clone(), 16, false).unwrap();
    assert_eq!(refused.checkpoint_height, None);
    assert!(
        refused
            .checkpoint_refused
            .as_deref()
            .is_some_and(|r| r.contains("checksum")),
        "{:?}",
        refused.checkpoint_refused
    );
    assert_eq!(refused.replayed_blocks, 300);
    assert_eq!(refused.restored.ledger.root(), whole_root);
}

#[test]
fn a_checkpoint_of_another_chain_or_ahead_of_the_store_is_set_aside() {
    let s = setup(62);
    let dir = s.dir.path();
    let other = setup(63);
    checkpoint::write(
        dir,
        &Checkpoint {
            ledger: other.at_200.clone(),
            last_hash: other.hash_200,
            previous_validators: None,
        },
    )
    .unwrap();
    let opened = open_disk(dir, s.genesis.clone(), 16, false).unwrap();
    assert!(
        opened
            .checkpoint_refused
            .as_deref()
            .is_some_and(|r| r.contains("another chain")),
        "{:?}",
        opened.checkpoint_refused
    );
    assert_eq!(opened.restored.ledger.root(), s.full.root());
    drop(opened);

    // A store of 200 blocks with a checkpoint at 300 (the store lost blocks).
    let short = tempfile::tempdir().unwrap();
    let (mut store, _) =
        BlockStore::open(&short.path().join(BLOCKS_FILE), &s.genesis.chain_id()).unwrap();
    let opened = open_disk(dir, s.genesis.clone(), 0, false).unwrap();
    let blocks: Vec<_> = (1..=200)
        .map(|h| opened.disk.store.read(h).unwrap().unwrap())
        .collect();
    drop(opened);
    store
        .append_all(blocks.iter().map(|(b, c)| (&**b, c)))
        .unwrap();
    drop(store);
    checkpoint::write(
        short.path(),
        &Checkpoint {
            ledger: s.full.clone(),
            last_hash: [0; 32],
            previous_validators: None,
        },
    )
    .unwrap();
    let opened = open_disk(short.path(), s.genesis.clone(), 16, false).unwrap();
    assert!(
        opened
            .checkpoint_refused
            .as_deref()
            .is_some_and(|r| r.contains("ahead")),
        "{:?}",
        opened.checkpoint_refused
    );
    assert_eq!(opened.replayed_blocks, 200);
    assert_eq!(opened.restored.ledger.root(), s.at_200.root());
}

/// Taking a peer's checkpoint replaces the store with one that starts at its height, crash-
/// safely: a pending store whose checkpoint was not written yet is dropped (the old state
/// stays); one whose checkpoint was written is put in place; a store that starts at a taken
/// checkpoint cannot be opened without that checkpoint (its earlier blocks are not there).
#[test]
fn a_taken_checkpoint_is_installed_crash_safely() {
    use cess_consensus::store::{DiskError, PENDING_BLOCKS_FILE};
    let s = setup(67);
    let dir = s.dir.path();
    let chain_id = s.genesis.chain_id();
    // Crashed after the pending store, before the checkpoint: the old state is used.
    drop(
        BlockStore::create_at(&dir.join(PENDING_BLOCKS_FILE), &chain_id, 200, s.hash_200).unwrap(),
    );
    let opened = open_disk(dir, s.genesis.clone(), 4, false).unwrap();
    assert_eq!(opened.restored.ledger.root(), s.full.root());
    assert_eq!(opened.replayed_blocks, 300);
    assert!(
        !dir.join(PENDING_BLOCKS_FILE).exists(),
        "the pending store is removed"
    );
    drop(opened);

    // Crashed after the checkpoint, before the rename: the install is finished on open.
    drop(
        BlockStore::create_at(&dir.join(PENDING_BLOCKS_FILE), &chain_id, 200, s.hash_200).unwrap(),
    );
    let taken = Checkpoint {
        ledger: s.at_200.clone(),
        last_hash: s.hash_200,
        previous_validators: Some(cess_consensus::bft::validator_set(&s.at_199)),
    };
    checkpoint::write(dir, &taken).unwrap();
    let opened = open_disk(dir, s.genesis.clone(), 4, false).unwrap();
    assert_eq!(opened.checkpoint_height, Some(200));
    assert_eq!(opened.replayed_blocks, 0);
    assert_eq!(opened.disk.store.base(), 200);
    assert_eq!(opened.disk.store.height(), 200);
    assert_eq!(opened.restored.ledger.root(), s.at_200.root());
    assert_eq!(opened.restored.last_hash, s.hash_200);
    assert!(
        opened.disk.store.read(150).unwrap().is_none(),
        "blocks before the base are gone"
    );
    drop(opened);

    // Without its checkpoint, such a store cannot be replayed: said, not replayed from genesis.
    std::fs::remove_file(dir.join(checkpoint::CHECKPOINT_FILE)).unwrap();
    match open_disk(dir, s.genesis.clone(), 4, false) {
        Err(DiskError::NoBaseCheckpoint { base: 200, .. }) => {}
        other => panic!("{:?}", other.map(|o| o.restored.ledger.height())),
    }

    // The whole install in one call.
    cess_consensus::store::install_based(dir, &taken).unwrap();
    let opened = open_disk(dir, s.genesis.clone(), 4, false).unwrap();
    assert_eq!(opened.checkpoint_height, Some(200));
    assert_eq!(opened.disk.store.base(), 200);
}
