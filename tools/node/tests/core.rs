// Long file: the core's tests share one seeded harness.
//! The node core under a seeded in-process run: a real ledger applied block by block, nodes
//! whose stores are maps, an owner that rents space and places orders. Writes are allowed only
//! for fragments the ledger assigned to the node; a column is reported only when all of it is
//! durable; fragments leave the stores when the ledger lets go of them; a restarted node
//! reconciles its store with the ledger.

use cess_consensus::ledger::{
    BlockInfo, Event, FileState, GenesisTagger, Ledger, LedgerParams, TOKEN,
};
use cess_consensus::sim::genesis;
use cess_consensus::tx::{FragmentId, Hash32, SegmentDecl};
use cess_consensus::{AccountKey, Call, Transaction};
use cess_node::{Action, NodeCore, NodeIdentity, WriteRefused};
use cess_proofs::pois::{Graph, generate_set, prove_commit, prove_space};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const COLUMNS: usize = 3;
const FRAGMENT: u64 = 1024;

struct Net {
    ledger: Ledger,
    validators: Vec<cess_consensus::AccountId>,
    owner: AccountKey,
    miners: Vec<AccountKey>,
    nodes: Vec<NodeCore>,
    /// Each node's store: fragment id → length.
    stores: Vec<BTreeMap<FragmentId, u64>>,
    tagger: Hash32,
    /// Calls the nodes asked for, to go in the next block.
    queued: Vec<(usize, Call)>,
    /// Whether the tagger answers: a node's `Tag` is then served at once (the driver's
    /// fetch, check and keep), else it is only counted.
    tagger_up: bool,
    /// Tags asked for while the tagger was down: (node, fragment).
    tags_unanswered: Vec<(usize, FragmentId)>,
    /// Proofs the nodes set out to make: (node, round, deadline, height asked at).
    proofs_asked: Vec<(usize, u64, u64, u64)>,
    /// Rebuilds the nodes asked their drivers for: (node, fragment, own).
    rebuilds_asked: Vec<(usize, FragmentId, bool)>,
    /// Read-backs asked for, by node.
    checks_asked: Vec<usize>,
    /// Idle files' bytes by key (the idle fragments of every store), for the proofs.
    idle_bytes: BTreeMap<FragmentId, Vec<u8>>,
    /// Whether the nodes answer their space audits.
    space_answered: bool,
    rng: ChaCha8Rng,
}

fn params() -> LedgerParams {
    LedgerParams {
        data_fragments: 1,
        fragments_per_segment: COLUMNS as u16,
        validators_per_era: 1,
        order_validity_blocks: 30,
        lease_grace_blocks: 2,
        ..LedgerParams::default()
    }
}

impl Net {
    fn with_params(nodes: usize, seed: u64, params: LedgerParams) -> Net {
        let (mut genesis, validators, users) = genesis(1, nodes + 1, seed, params);
        let tagger_key = cess_proofs::SecretKey::from_seed(&[7; 32], 4).unwrap();
        genesis.taggers.push(GenesisTagger {
            owner: users[0].id(),
            key: tagger_key.public().encode(),
        });
        let ledger = Ledger::genesis(&genesis).unwrap();
        let miners: Vec<AccountKey> = users[1..].to_vec();
        let node_cores = miners
            .iter()
            .enumerate()
            .map(|(i, m)| {
                NodeCore::new(
                    NodeIdentity {
                        account: m.id(),
                        peer_id: m.id().peer_id().unwrap().to_bytes(),
                        endpoint: format!("/ip4/127.0.0.1/udp/{}/quic-v1", 7000 + i),
                        capacity_bytes: 1 << 20,
                        collateral: 1000 * TOKEN,
                    },
                    [],
                )
            })
            .collect();
        Net {
            ledger,
            validators: validators.iter().map(|(a, _)| a.id()).collect(),
            owner: users[0].clone(),
            stores: vec![BTreeMap::new(); nodes],
            nodes: node_cores,
            miners,
            tagger: tagger_key.public().id().0,
            queued: Vec::new(),
            tagger_up: true,
            tags_unanswered: Vec::new(),
            proofs_asked: Vec::new(),
            rebuilds_asked: Vec::new(),
            checks_asked: Vec::new(),
            idle_bytes: BTreeMap::new(),
            space_answered: true,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Applies a block with `txs` and the nodes' queued calls; every node then sees it, and
    /// its deletions run against its store at once.
    fn block(&mut self, mut txs: Vec<Transaction>) -> cess_consensus::BlockOutcome {
        let mut nonces: BTreeMap<cess_consensus::AccountId, u64> = BTreeMap::new();
        for (i, call) in std::mem::take(&mut self.queued) {
            let key = &self.miners[i];
            let nonce = nonces
                .entry(key.id())
                .or_insert(self.ledger.account(&key.id()).nonce);
            txs.push(self.ledger.transaction_with_nonce(key, *nonce, call));
            *nonce += 1;
        }
        let height = self.ledger.height() + 1;
        let info = BlockInfo {
            height,
            time_ms: height * 1000,
            vrf_output: self.rng.random(),
            last_commit: self.validators.clone(),
        };
        let outcome = self
            .ledger
            .apply_block(&info, &txs, &cess_proofs::CpuBackend);
        self.ledger.assert_storage_invariants();
        for i in 0..self.nodes.len() {
            let actions = self.nodes[i].on_block(&self.ledger);
            self.act(i, actions);
        }
        outcome
    }

    fn act(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Submit(call) => self.queued.push((i, call)),
                Action::Delete(id) => {
                    assert!(
                        self.stores[i].remove(&id).is_some(),
                        "deletes what it holds"
                    );
                    self.nodes[i].on_deleted(&id);
                }
                Action::Tag {
                    fragment_id,
                    len_bytes,
                    tagger,
                } => {
                    assert_eq!(tagger, self.tagger, "the order's tagger");
                    assert!(
                        self.stores[i].contains_key(&fragment_id),
                        "tags what it holds"
                    );
                    if self.tagger_up {
                        let actions = self.nodes[i].on_stored(&self.ledger, fragment_id, len_bytes);
                        self.act(i, actions);
                    } else {
                        self.tags_unanswered.push((i, fragment_id));
                    }
                }
                Action::Prove {
                    round, deadline, ..
                } => {
                    let height = self.ledger.height();
                    self.proofs_asked.push((i, round, deadline, height));
                }
                Action::Rebuild { fragment_id, own } => {
                    self.rebuilds_asked.push((i, fragment_id, own));
                }
                Action::Check { .. } => self.checks_asked.push(i),
                // The driver's work, done here at once: files generated into the store,
                // proofs made from them.
                Action::GenerateIdle { first_file } => {
                    let params = self.ledger.params().pois;
                    let graph = Graph::new(&params);
                    let me = self.miners[i].id();
                    let owner = self.ledger.idle_replica_owner(&me).unwrap();
                    let (mut files, mut commitments) = (Vec::new(), Vec::new());
                    generate_set(&graph, &owner, first_file, |file| {
                        let key = FragmentId::of(&file.bytes);
                        self.stores[i].insert(key, file.bytes.len() as u64);
                        files.push((file.index, key));
                        commitments.push(file.commitment.encode());
                        self.idle_bytes.insert(key, file.bytes);
                    });
                    self.nodes[i]
                        .idle_mut()
                        .on_generated(first_file, files, commitments);
                }
                Action::ProveIdleCommit { first_file } => {
                    let params = self.ledger.params().pois;
                    let me = self.miners[i].id();
                    let challenge = self.ledger.idle_commit_challenge(&me, first_file).unwrap();
                    let owner = self.ledger.idle_replica_owner(&me).unwrap();
                    let proof = prove_commit(&Graph::new(&params), &owner, &challenge);
                    self.queued.push((
                        i,
                        Call::ProveIdle {
                            first_file,
                            proof: proof.encode(),
                        },
                    ));
                }
                Action::ProveSpace {
                    round, first_file, ..
                } => {
                    if !self.space_answered {
                        continue;
                    }
                    let params = self.ledger.params().pois;
                    let me = self.miners[i].id();
                    let (_, challenge) = self.ledger.space_challenge(&me).unwrap();
                    let (_, set) = self
                        .ledger
                        .idle_sets(&me)
                        .find(|(f, _)| *f == first_file)
                        .unwrap();
                    let files: Vec<Option<&[u8]>> = set
                        .files
                        .iter()
                        .enumerate()
                        .map(|(offset, f)| {
                            f.map(|_| {
                                let key =
                                    self.nodes[i].idle().files()[&(first_file + offset as u64)];
                                &self.idle_bytes[&key][..]
                            })
                        })
                        .collect();
                    let proof = prove_space(&params, &challenge, &files).encode();
                    self.queued
                        .push((i, Call::SubmitSpaceProof { round, proof }));
                }
            }
        }
    }

    fn owner_tx(&self, call: Call) -> Transaction {
        self.ledger.transaction(&self.owner, call)
    }

    /// An order of `segments` segments, declared in one block; its file id.
    fn declare(&mut self, seed: u8, segments: usize) -> Hash32 {
        let (file_id, call) = order_with_tagger(seed, segments, self.tagger);
        let tx = self.owner_tx(call);
        let outcome = self.block(vec![tx]);
        assert_eq!(outcome.receipts, vec![Ok(())]);
        file_id
    }
}

/// The storage order of file `[seed; 32]` with `segments` segments (its tagger: the net's).
fn order_with_tagger(seed: u8, segments: usize, tagger: Hash32) -> (Hash32, Call) {
    let file_id = [seed; 32];
    let call = Call::DeclareFile {
        file_id,
        file_name: format!("f{seed}"),
        bucket: String::new(),
        size_bytes: FRAGMENT,
        fragment_bytes: FRAGMENT,
        tagger,
        segments: (0..segments)
            .map(|s| SegmentDecl {
                segment_id: {
                    let mut id = [0u8; 32];
                    id[0] = seed;
                    id[1] = s as u8;
                    id[3] = 0xEE;
                    id
                },
                fragments: (0..COLUMNS)
                    .map(|c| {
                        let mut id = [0u8; 32];
                        id[0] = seed;
                        id[1] = s as u8;
                        id[2] = c as u8;
                        id[3] = 0xF5;
                        FragmentId(id)
                    })
                    .collect(),
            })
            .collect(),
        meta: Vec::new(),
    };
    (file_id, call)
}

impl Net {
    /// Node `i` receives fragment `id`: checked, stored, reported to the core.
    fn write(&mut self, i: usize, id: FragmentId, len: u64) -> Result<(), WriteRefused> {
        self.nodes[i].check_write(&self.ledger, &id, len)?;
        self.stores[i].insert(id, len);
        let actions = self.nodes[i].on_durable(&self.ledger, id, len);
        self.act(i, actions);
        Ok(())
    }

    fn node_of(&self, miner: &cess_consensus::AccountId) -> usize {
        self.miners.iter().position(|m| m.id() == *miner).unwrap()
    }

    /// (node, fragment id) for every fragment of `file_id`.
    fn placement(&self, file_id: &Hash32) -> Vec<(usize, FragmentId)> {
        let file = self.ledger.file(file_id).unwrap();
        file.segments
            .iter()
            .flat_map(|s| s.fragments.iter())
            .map(|f| (self.node_of(&f.miner.unwrap()), f.id))
            .collect()
    }
}

/// Nodes register themselves, then the owner rents space.
fn started(nodes: usize, seed: u64) -> Net {
    started_with(nodes, seed, params())
}

fn started_with(nodes: usize, seed: u64, params: LedgerParams) -> Net {
    let mut net = Net::with_params(nodes, seed, params);
    net.block(Vec::new());
    let outcome = net.block(Vec::new());
    assert!(
        outcome.receipts.iter().all(|r| r.is_ok()),
        "{:?}",
        outcome.receipts
    );
    for m in &net.miners {
        assert!(net.ledger.miner(&m.id()).is_some(), "registered itself");
    }
    let rent = net.owner_tx(Call::RentSpace {
        add_gib: 1,
        add_blocks: 1000,
    });
    net.block(vec![rent]);
    net
}

#[test]
fn nodes_register_store_only_what_is_assigned_and_report_complete_columns() {
    let mut net = started(5, 1);
    // Registration is not repeated once it is on the ledger.
    let again = net.block(Vec::new());
    assert!(again.receipts.is_empty(), "{:?}", again.receipts);

    let file_id = net.declare(1, 2);
    let placement = net.placement(&file_id);
    let (first, fragment) = placement[0];
    let stranger = (0..5)
        .find(|i| placement.iter().all(|(n, _)| n != i))
        .unwrap();
    assert_eq!(
        net.write(stranger, fragment, FRAGMENT),
        Err(WriteRefused::NotAssigned),
        "a fragment of another miner's column"
    );
    assert_eq!(
        net.write(first, FragmentId([9; 32]), FRAGMENT),
        Err(WriteRefused::UnknownFragment)
    );
    assert_eq!(
        net.write(first, fragment, FRAGMENT - 1),
        Err(WriteRefused::WrongLength {
            expected: FRAGMENT,
            got: FRAGMENT - 1
        })
    );

    // Column 0 has two segments: the report waits for both.
    net.write(first, fragment, FRAGMENT).unwrap();
    assert!(net.queued.is_empty(), "half a column is not reported");
    let (n, second_half) = placement[COLUMNS];
    assert_eq!(n, first, "a column is one miner");
    net.write(first, second_half, FRAGMENT).unwrap();
    assert_eq!(
        net.queued,
        vec![(first, Call::ReportStored { file_id, column: 0 })]
    );
    // Every other fragment, then the reports go in.
    for &(i, id) in &placement {
        if i != first {
            net.write(i, id, FRAGMENT).unwrap();
        }
    }
    let outcome = net.block(Vec::new());
    assert_eq!(outcome.receipts.len(), COLUMNS);
    assert!(outcome.receipts.iter().all(|r| r.is_ok()));
    assert_eq!(net.ledger.file(&file_id).unwrap().state, FileState::Active);
    // Nothing more to report, nothing to delete.
    net.block(Vec::new());
    assert!(net.queued.is_empty());
    for (i, id) in &placement {
        assert!(net.stores[*i].contains_key(id));
    }
}

#[test]
fn fragments_leave_the_stores_when_the_last_owner_deletes_or_the_order_expires() {
    let mut net = started(4, 2);
    let file_id = net.declare(2, 1);
    let placement = net.placement(&file_id);
    for &(i, id) in &placement {
        net.write(i, id, FRAGMENT).unwrap();
    }
    net.block(Vec::new());
    assert_eq!(net.ledger.file(&file_id).unwrap().state, FileState::Active);
    let delete = net.owner_tx(Call::DeleteFile { file_id });
    net.block(vec![delete]);
    for (i, id) in &placement {
        assert!(!net.stores[*i].contains_key(id), "deleted on node {i}");
    }
    let space: u64 = net
        .miners
        .iter()
        .map(|m| net.ledger.miner(&m.id()).unwrap().active_bytes)
        .sum();
    assert_eq!(space, 0, "the space returned on the ledger");

    // An order never completed: what was stored of it goes when it expires.
    let pending = net.declare(3, 1);
    let placement = net.placement(&pending);
    let (i, id) = placement[0];
    net.write(i, id, FRAGMENT).unwrap();
    for _ in 0..params().order_validity_blocks {
        net.block(Vec::new());
    }
    assert!(net.ledger.file(&pending).is_none(), "expired");
    assert!(
        !net.stores[i].contains_key(&id),
        "its fragment left the store"
    );
}

#[test]
fn a_restarted_node_reconciles_its_store_with_the_ledger() {
    let mut net = started(4, 3);
    let kept = net.declare(4, 1);
    let dropped = net.declare(5, 1);
    // Every node stores both files' fragments, but crashes before reporting (its calls are
    // lost with it).
    for file_id in [kept, dropped] {
        for (i, id) in net.placement(&file_id) {
            net.write(i, id, FRAGMENT).unwrap();
        }
    }
    net.queued.clear();
    // While down, the owner deletes one file.
    let delete = net.owner_tx(Call::DeleteFile { file_id: dropped });
    // Restart: new cores from what the stores hold; the next block reconciles.
    for i in 0..net.nodes.len() {
        let identity = net.nodes[i].identity().clone();
        let stored = net.stores[i].clone();
        net.nodes[i] = NodeCore::new(identity, stored);
    }
    net.block(vec![delete]);
    for (i, id) in net.placement(&kept) {
        assert!(net.stores[i].contains_key(&id), "kept on node {i}");
    }
    assert!(net.ledger.file(&dropped).is_none());
    for store in &net.stores {
        for id in store.keys() {
            assert_ne!(id.0[0], 5, "the deleted file's fragments are gone");
        }
    }
    // The reports lost in the crash are submitted again, and the kept file becomes active.
    assert_eq!(net.queued.len(), COLUMNS, "{:?}", net.queued);
    net.block(Vec::new());
    assert_eq!(net.ledger.file(&kept).unwrap().state, FileState::Active);
}

#[test]
fn a_column_is_reported_only_once_its_tags_are_kept_and_tags_are_asked_again() {
    // Long enough an order for two rounds of asking.
    let mut net = Net::with_params(
        4,
        4,
        LedgerParams {
            order_validity_blocks: 100,
            ..params()
        },
    );
    net.block(Vec::new());
    net.block(Vec::new());
    let rent = net.owner_tx(Call::RentSpace {
        add_gib: 1,
        add_blocks: 1000,
    });
    net.block(vec![rent]);
    net.tagger_up = false;
    let file_id = net.declare(6, 1);
    let placement = net.placement(&file_id);
    for &(i, id) in &placement {
        net.write(i, id, FRAGMENT).unwrap();
    }
    assert_eq!(
        net.tags_unanswered.len(),
        placement.len(),
        "each asked once"
    );
    assert!(net.queued.is_empty(), "nothing reported without tags");
    // A peer's reads of a fragment waiting for its tags (each asks the store its length) ask
    // for nothing more.
    let (i, id) = placement[0];
    for _ in 0..10 {
        let actions = net.nodes[i].on_durable(&net.ledger, id, FRAGMENT);
        assert!(actions.is_empty(), "{actions:?}");
    }
    // The tagger stays down: the tags are asked again after RESUBMIT_BLOCKS, not before.
    for _ in 0..cess_node::RESUBMIT_BLOCKS - 1 {
        net.block(Vec::new());
    }
    assert_eq!(net.tags_unanswered.len(), placement.len());
    net.block(Vec::new());
    assert_eq!(
        net.tags_unanswered.len(),
        2 * placement.len(),
        "asked again"
    );
    assert_eq!(net.ledger.file(&file_id).unwrap().state, FileState::Pending);
    // The tagger is back: the next ask is answered and the columns are reported.
    net.tagger_up = true;
    for _ in 0..cess_node::RESUBMIT_BLOCKS + 1 {
        net.block(Vec::new());
    }
    assert_eq!(net.ledger.file(&file_id).unwrap().state, FileState::Active);
}

#[test]
fn every_open_audit_is_proved_once_again_when_not_taken_and_never_past_its_deadline() {
    let audit_params = LedgerParams {
        audit_period_blocks: 10,
        audit_miners_permille: 1000,
        audit_deadline_base_blocks: 30,
        ..params()
    };
    let mut net = Net::with_params(4, 5, audit_params);
    net.block(Vec::new());
    net.block(Vec::new());
    let rent = net.owner_tx(Call::RentSpace {
        add_gib: 1,
        add_blocks: 1000,
    });
    net.block(vec![rent]);
    let file_id = net.declare(7, 1);
    for (i, id) in net.placement(&file_id) {
        net.write(i, id, FRAGMENT).unwrap();
    }
    net.block(Vec::new());
    assert_eq!(net.ledger.file(&file_id).unwrap().state, FileState::Active);
    let holders: std::collections::BTreeSet<usize> =
        net.placement(&file_id).iter().map(|(i, _)| *i).collect();
    // Up to the first round and a few blocks into it.
    while net.ledger.height() < 14 {
        net.block(Vec::new());
    }
    let round = net.ledger.height() / 10;
    let asked: Vec<_> = net
        .proofs_asked
        .iter()
        .filter(|(_, r, _, _)| *r == round)
        .collect();
    let askers: std::collections::BTreeSet<usize> = asked.iter().map(|(i, ..)| *i).collect();
    assert_eq!(askers, holders, "every node holding data, and only those");
    assert_eq!(asked.len(), holders.len(), "once each");
    // Nobody submits (the sim has no bytes to prove from): asked again after
    // RESUBMIT_BLOCKS while the deadline allows, never after it.
    let deadline = asked[0].2;
    while net.ledger.height() <= deadline + 5 {
        net.block(Vec::new());
    }
    for &(i, r, d, at) in &net.proofs_asked {
        assert!(
            at <= d,
            "node {i} asked to prove round {r} at {at}, past {d}"
        );
    }
    let again = net
        .proofs_asked
        .iter()
        .filter(|(_, r, _, _)| *r == round)
        .count();
    assert_eq!(
        again,
        2 * holders.len(),
        "asked again once within the deadline"
    );
}

#[test]
fn a_fragment_is_read_only_by_owners_delegates_restorers_and_validators() {
    use cess_node::{ReadRefused, ReadRight, check_read};
    // Audits every 6 blocks for every miner holding data.
    let mut net = started_with(
        5,
        6,
        LedgerParams {
            audit_period_blocks: 6,
            audit_miners_permille: 1000,
            audit_deadline_base_blocks: 2,
            pois_space_deadline_blocks: 2,
            // The harness proves nothing: no miner's data is released for missed audits.
            audit_misses_max: 1000,
            ..params()
        },
    );
    let file_id = net.declare(6, 1);
    let placement = net.placement(&file_id);
    for &(i, id) in &placement {
        net.write(i, id, FRAGMENT).unwrap();
    }
    net.block(Vec::new());
    let (holder, fragment) = placement[0];
    let (sibling, _) = placement[1];
    let stranger = (0..5)
        .find(|i| placement.iter().all(|(n, _)| n != i))
        .unwrap();
    let owner = net.owner.id();
    let read = |net: &Net, who: &cess_consensus::AccountId| check_read(&net.ledger, who, &fragment);

    assert_eq!(read(&net, &owner), Ok(ReadRight::Owner));
    assert_eq!(
        read(&net, &net.validators[0].clone()),
        Ok(ReadRight::Validator)
    );
    // The lazy miner's way out: rebuild a challenged fragment from its siblings. Refused
    // while it has an audit open; between audits it may repair its own (a self-repair).
    // Nor in the last blocks before a round opens (a replica behind the proposer would serve
    // a miner that already knows the challenge).
    let sibling_id = net.miners[sibling].id();
    let period = net.ledger.params().audit_period_blocks;
    let quiet = |net: &Net| {
        (1..=cess_node::REPAIR_QUIET_BLOCKS)
            .any(|a| (net.ledger.height() + a).is_multiple_of(period))
    };
    // From the end of one of its audits to the opening of the next.
    while !net.ledger.has_open_audit(&sibling_id) {
        net.block(Vec::new());
    }
    while net.ledger.has_open_audit(&sibling_id) {
        assert_eq!(read(&net, &sibling_id), Err(ReadRefused::NotPermitted));
        net.block(Vec::new());
    }
    let (mut served, mut quiet_refused) = (0, 0);
    while !net.ledger.has_open_audit(&sibling_id) {
        if quiet(&net) {
            assert_eq!(read(&net, &sibling_id), Err(ReadRefused::NotPermitted));
            quiet_refused += 1;
        } else {
            assert_eq!(read(&net, &sibling_id), Ok(ReadRight::Repairer));
            served += 1;
        }
        net.block(Vec::new());
    }
    assert!(served > 0 && quiet_refused > 0, "{served} {quiet_refused}");
    assert_eq!(read(&net, &sibling_id), Err(ReadRefused::NotPermitted));
    while net.ledger.has_open_audit(&sibling_id) || quiet(&net) {
        net.block(Vec::new());
    }
    assert_eq!(read(&net, &sibling_id), Ok(ReadRight::Repairer));
    assert_eq!(
        check_read(&net.ledger, &owner, &FragmentId([0xAB; 32])),
        Err(ReadRefused::UnknownFragment)
    );

    // A delegate the owner authorized reads; once taken back, it does not.
    let gateway = net.miners[stranger].id();
    assert_eq!(read(&net, &gateway), Err(ReadRefused::NotPermitted));
    let authorize = net.owner_tx(Call::Authorize { delegate: gateway });
    assert_eq!(net.block(vec![authorize]).receipts, vec![Ok(())]);
    assert_eq!(read(&net, &gateway), Ok(ReadRight::Delegate(owner)));
    let revoke = net.owner_tx(Call::Deauthorize { delegate: gateway });
    assert_eq!(net.block(vec![revoke]).receipts, vec![Ok(())]);
    assert_eq!(read(&net, &gateway), Err(ReadRefused::NotPermitted));

    // A miner that claimed the restoral of a lost fragment of the segment reads its siblings.
    // (The loss is reported between the holder's audits: the ledger refuses it during one.)
    let holder_id = net.miners[holder].id();
    while net.ledger.has_open_audit(&holder_id) || (net.ledger.height() + 1).is_multiple_of(period)
    {
        net.block(Vec::new());
    }
    let lost = net.ledger.transaction(
        &net.miners[holder],
        Call::ReportLost {
            fragment_id: fragment,
        },
    );
    assert_eq!(net.block(vec![lost]).receipts, vec![Ok(())]);
    let restorer = net.miners[stranger].clone();
    let (_, sibling_fragment) = placement[1];
    assert_eq!(
        check_read(&net.ledger, &restorer.id(), &sibling_fragment),
        Err(ReadRefused::NotPermitted),
        "before the claim"
    );
    // The spare nodes' cores claim it on their own; the one whose claim went in reads.
    let _ = restorer;
    net.block(Vec::new());
    let (claimant, _) = net.ledger.restoral(&fragment).unwrap().claim.unwrap();
    assert!(
        placement
            .iter()
            .all(|(n, _)| net.miners[*n].id() != claimant)
    );
    assert_eq!(
        check_read(&net.ledger, &claimant, &sibling_fragment),
        Ok(ReadRight::Restorer)
    );
}

#[test]
fn only_accounts_with_standing_on_the_chain_may_connect() {
    use cess_node::{Standing, check_peer};
    let mut net = started(3, 7);
    let owner = net.owner.id();
    assert_eq!(check_peer(&net.ledger, &owner), Some(Standing::Lessee));
    assert_eq!(
        check_peer(&net.ledger, &net.miners[0].id()),
        Some(Standing::Miner)
    );
    assert_eq!(
        check_peer(&net.ledger, &net.validators[0].clone()),
        Some(Standing::Validator)
    );
    // A fresh key costs nothing to make, so it has none.
    let fresh = AccountKey::generate().id();
    assert_eq!(check_peer(&net.ledger, &fresh), None);
    // An owner's delegate has standing while it is one.
    let authorize = net.owner_tx(Call::Authorize { delegate: fresh });
    assert_eq!(net.block(vec![authorize]).receipts, vec![Ok(())]);
    assert_eq!(check_peer(&net.ledger, &fresh), Some(Standing::Delegate));
    let revoke = net.owner_tx(Call::Deauthorize { delegate: fresh });
    assert_eq!(net.block(vec![revoke]).receipts, vec![Ok(())]);
    assert_eq!(check_peer(&net.ledger, &fresh), None);
}

/// Deduplication lets anyone with rented space become an owner of an existing file. A miner
/// that dropped its fragment could join the file when challenged and read the siblings: an
/// owner that joined reads only once every audit open at its joining has closed.
#[test]
fn an_owner_that_joins_an_existing_file_reads_only_after_the_audit_window() {
    use cess_node::{ReadRefused, ReadRight, check_read};
    let mut net = started(5, 8);
    let file_id = net.declare(8, 1);
    let placement = net.placement(&file_id);
    for &(i, id) in &placement {
        net.write(i, id, FRAGMENT).unwrap();
    }
    net.block(Vec::new());
    // A miner holding nothing of the segment (one that holds a part has its own, capped,
    // self-repair right between audits: see the test above).
    let joiner = (0..5)
        .find(|i| placement.iter().all(|(n, _)| n != i))
        .unwrap();
    let (_, sibling) = placement[1];
    let miner = net.miners[joiner].clone();
    let rent = net.ledger.transaction(
        &miner,
        Call::RentSpace {
            add_gib: 1,
            add_blocks: 1000,
        },
    );
    assert_eq!(net.block(vec![rent]).receipts, vec![Ok(())]);
    let (_, join) = order_with_tagger(8, 1, net.tagger);
    let join = net.ledger.transaction(&miner, join);
    assert_eq!(net.block(vec![join]).receipts, vec![Ok(())]);
    assert!(
        net.ledger
            .file(&file_id)
            .unwrap()
            .owners
            .contains_key(&miner.id())
    );
    assert_eq!(
        check_read(&net.ledger, &miner.id(), &sibling),
        Err(ReadRefused::NotPermitted),
        "just joined"
    );
    let window = net.ledger.params().audit_window_blocks_max();
    for _ in 0..window {
        net.block(Vec::new());
    }
    assert!(
        check_read(&net.ledger, &miner.id(), &sibling).is_err(),
        "an audit opened as it joined may still be open"
    );
    net.block(Vec::new());
    assert_eq!(
        check_read(&net.ledger, &miner.id(), &sibling),
        Ok(ReadRight::Owner),
        "an owner for longer than any audit stays open"
    );
    // The declaring owner reads at once.
    assert_eq!(
        check_read(&net.ledger, &net.owner.id(), &sibling),
        Ok(ReadRight::Owner)
    );
}

/// A node whose store lost a few of its fragments (the chain has them as stored here)
/// rebuilds them itself; when that fails, or when it lost more than it rebuilds itself (a
/// wiped disk), it reports them lost, so the network rebuilds them and it is not paid for
/// what it does not hold.
#[test]
fn a_node_rebuilds_a_few_lost_fragments_itself_and_reports_the_rest_lost() {
    let mut net = started(4, 21);
    let file_id = net.declare(21, 2);
    let placement = net.placement(&file_id);
    for &(i, id) in &placement {
        net.write(i, id, FRAGMENT).unwrap();
    }
    net.block(Vec::new());
    assert_eq!(net.ledger.file(&file_id).unwrap().state, FileState::Active);
    // Node `a` loses one fragment behind its core's back (found at restart).
    let (a, lost) = placement[0];
    net.stores[a].remove(&lost);
    let identity = net.nodes[a].identity().clone();
    net.nodes[a] = NodeCore::new(identity.clone(), net.stores[a].clone());
    net.block(Vec::new());
    assert_eq!(
        net.rebuilds_asked,
        vec![(a, lost, true)],
        "a self-repair first"
    );
    assert!(
        net.queued.is_empty(),
        "nothing reported yet: {:?}",
        net.queued
    );
    // The self-repair fails, is tried again, and after the last try the fragment is
    // reported lost.
    for _ in 1..cess_node::SELF_REPAIR_TRIES {
        net.rebuilds_asked.clear();
        assert!(
            net.nodes[a]
                .on_rebuild_failed(&net.ledger, &lost, false)
                .is_empty()
        );
        net.block(Vec::new());
        assert_eq!(net.rebuilds_asked, vec![(a, lost, true)], "tried again");
        assert!(net.queued.is_empty());
    }
    assert!(
        net.nodes[a]
            .on_rebuild_failed(&net.ledger, &lost, false)
            .is_empty()
    );
    net.block(Vec::new());
    assert_eq!(
        net.queued,
        vec![(a, Call::ReportLost { fragment_id: lost })]
    );
    let outcome = net.block(Vec::new());
    assert_eq!(outcome.receipts, vec![Ok(())]);
    assert_eq!(
        net.ledger.restoral(&lost).unwrap().lost_by,
        identity.account
    );

    // Node `b` lost its whole store (two fragments, more than it repairs itself): both are
    // reported lost at once, no self-repair asked.
    let (b, _) = placement[1];
    let held: Vec<FragmentId> = placement
        .iter()
        .filter(|(n, _)| *n == b)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(held.len(), 2);
    net.stores[b].clear();
    let identity = net.nodes[b].identity().clone();
    net.nodes[b] = NodeCore::new(identity, []).with_policy(cess_node::RestorePolicy {
        self_repair_max: 1,
        ..cess_node::RestorePolicy::default()
    });
    net.rebuilds_asked.clear();
    net.block(Vec::new());
    assert!(
        !net.rebuilds_asked.iter().any(|(n, _, own)| *n == b && *own),
        "{:?}",
        net.rebuilds_asked
    );
    let reported: Vec<FragmentId> = net
        .queued
        .iter()
        .filter(|(n, _)| *n == b)
        .filter_map(|(_, c)| match c {
            Call::ReportLost { fragment_id } => Some(*fragment_id),
            _ => None,
        })
        .collect();
    assert_eq!(reported.len(), 2, "{:?}", net.queued);
}

/// Four nodes, a one-segment file stored on three, and the holder of column `column`
/// reporting its fragment lost in the last block: (net, file, the spare node, the fragment).
fn one_fragment_reported_lost(seed: u8, column: usize) -> (Net, Hash32, usize, FragmentId) {
    let mut net = started(4, u64::from(seed));
    let file_id = net.declare(seed, 1);
    let placement = net.placement(&file_id);
    for &(i, id) in &placement {
        net.write(i, id, FRAGMENT).unwrap();
    }
    net.block(Vec::new());
    let spare = (0..4)
        .find(|i| placement.iter().all(|(n, _)| n != i))
        .unwrap();
    let (loser, lost) = placement[column];
    let report = net
        .ledger
        .transaction(&net.miners[loser], Call::ReportLost { fragment_id: lost });
    net.block(vec![report]);
    (net, file_id, spare, lost)
}

/// A node with room claims an open order it may take (never its own loss, never a segment
/// it holds part of), rebuilds the fragment, stores it, gets its tags and takes it over: the
/// file is active again. A failed proof asks for a read-back of the store.
#[test]
fn a_spare_node_claims_an_order_rebuilds_the_fragment_and_takes_it_over() {
    let (mut net, file_id, spare, lost) = one_fragment_reported_lost(22, 2);
    assert!(matches!(
        net.ledger.file(&file_id).unwrap().state,
        FileState::Recovery { .. }
    ));
    // Only the spare claims: the loser never claims its own loss, the others hold the segment.
    assert_eq!(
        net.queued,
        vec![(spare, Call::ClaimRestoral { fragment_id: lost })]
    );
    net.block(Vec::new());
    let claim = net.ledger.restoral(&lost).unwrap().claim.unwrap();
    assert_eq!(claim.0, net.miners[spare].id());
    assert!(
        net.rebuilds_asked.contains(&(spare, lost, false)),
        "{:?}",
        net.rebuilds_asked
    );
    // The rebuild fails (the siblings' replicas had not applied the claim yet): tried again
    // two blocks later, not twenty.
    assert!(
        net.nodes[spare]
            .on_rebuild_failed(&net.ledger, &lost, false)
            .is_empty()
    );
    net.rebuilds_asked.clear();
    for _ in 0..cess_node::REBUILD_RETRY_BLOCKS {
        net.block(Vec::new());
    }
    assert!(
        net.rebuilds_asked.contains(&(spare, lost, false)),
        "retried: {:?}",
        net.rebuilds_asked
    );
    // The node restarts before rebuilding: its claim, found on the ledger, is rebuilt.
    let identity = net.nodes[spare].identity().clone();
    net.nodes[spare] = NodeCore::new(identity, net.stores[spare].clone());
    net.rebuilds_asked.clear();
    net.block(Vec::new());
    assert!(
        net.rebuilds_asked.contains(&(spare, lost, false)),
        "after a restart: {:?}",
        net.rebuilds_asked
    );
    // The driver rebuilt and stored it: tags, then the completion.
    net.stores[spare].insert(lost, FRAGMENT);
    let actions = net.nodes[spare].on_durable(&net.ledger, lost, FRAGMENT);
    net.act(spare, actions);
    assert_eq!(
        net.queued,
        vec![(spare, Call::CompleteRestoral { fragment_id: lost })]
    );
    let outcome = net.block(Vec::new());
    assert_eq!(outcome.receipts, vec![Ok(())]);
    let fragment = &net.ledger.file(&file_id).unwrap().segments[0].fragments[2];
    assert_eq!(fragment.miner, Some(net.miners[spare].id()));
    assert_eq!(net.ledger.file(&file_id).unwrap().state, FileState::Active);
    assert!(
        net.stores[spare].contains_key(&lost),
        "kept by its new holder"
    );
    // A failed proof: the store is read back, once while a read-back runs.
    let actions = net.nodes[spare].on_proof_failed(&net.ledger);
    assert_eq!(actions, vec![Action::Check { proof: false }]);
    assert!(net.nodes[spare].on_proof_failed(&net.ledger).is_empty());
    net.nodes[spare].on_checked();
    assert_eq!(
        net.nodes[spare].on_proof_failed(&net.ledger),
        vec![Action::Check { proof: false }]
    );
    // The operator's check waits for the running one.
    assert_eq!(net.nodes[spare].on_check_requested(&net.ledger, true), None);
    net.nodes[spare].on_checked();
    assert_eq!(
        net.nodes[spare].on_check_requested(&net.ledger, true),
        Some(Action::Check { proof: true })
    );
}

/// A claimed fragment whose siblings do not rebuild it to its id (a column declared unlike
/// its encoding) is given back at once (`ReleaseClaim`), counting no expiry against the node,
/// and the node does not claim it again.
#[test]
fn a_claim_that_cannot_be_rebuilt_is_given_back_and_not_claimed_again() {
    let (mut net, _, spare, lost) = one_fragment_reported_lost(23, 1);
    net.block(Vec::new());
    assert!(net.ledger.restoral(&lost).unwrap().claim.is_some());
    let actions = net.nodes[spare].on_rebuild_failed(&net.ledger, &lost, true);
    assert_eq!(
        actions,
        vec![Action::Submit(Call::ReleaseClaim { fragment_id: lost })]
    );
    net.act(spare, actions);
    let outcome = net.block(Vec::new());
    assert!(
        outcome.receipts.iter().all(|r| r.is_ok()),
        "{:?}",
        outcome.receipts
    );
    let order = net.ledger.restoral(&lost).unwrap();
    assert!(order.claim.is_none(), "open to others again");
    let me = net.ledger.miner(&net.miners[spare].id()).unwrap();
    assert_eq!((me.restoral_claims, me.claims_expired), (0, 0));
    for _ in 0..3 {
        net.block(Vec::new());
        assert!(
            !net.queued
                .iter()
                .any(|(n, c)| *n == spare && matches!(c, Call::ClaimRestoral { .. })),
            "not claimed again: {:?}",
            net.queued
        );
    }
}

/// Idle space under a seeded run: nodes fill what their policy allows with idle sets, get them
/// certified, answer their space audits, give idle files up for data (reported on the ledger),
/// lose a set they stop answering for, delete its files and fill the room again; a restarted
/// node keeps every live idle file.
#[test]
fn nodes_fill_certify_and_keep_idle_space_and_give_it_up_for_data() {
    let params = LedgerParams {
        pois: cess_proofs::pois::PoisParams::TEST,
        audit_period_blocks: 6,
        audit_miners_permille: 1000,
        audit_deadline_base_blocks: 3,
        miner_cooling_off_blocks: 20,
        pois_space_deadline_blocks: 2,
        ..params()
    };
    let pois = params.pois;
    let mut net = Net::with_params(3, 21, params);
    let policy = cess_node::idle::IdlePolicy {
        fill_bytes_max: 2 * pois.set_bytes(),
        store_bytes_max: u64::MAX,
        parallel_sets: 2,
    };
    net.nodes = std::mem::take(&mut net.nodes)
        .into_iter()
        .map(|n| n.with_idle(cess_node::idle::IdleCore::new(policy, [])))
        .collect();
    let mut valid = 0;
    for _ in 0..40 {
        let outcome = net.block(Vec::new());
        for event in &outcome.events {
            match event {
                Event::SpaceProofValid { .. } => valid += 1,
                Event::SpaceProofInvalid { .. } | Event::SpaceProofMissing { .. } => {
                    panic!("an honest node failed a space audit: {event:?}")
                }
                Event::IdleRefused { .. } => panic!("an honest set was refused: {event:?}"),
                _ => {}
            }
        }
    }
    assert!(valid >= 6, "space audits answered: {valid}");
    for (i, m) in net.miners.iter().enumerate() {
        assert_eq!(
            net.ledger.idle_verified_bytes(&m.id()),
            2 * pois.set_bytes(),
            "node {i}"
        );
        assert_eq!(
            net.nodes[i].idle().files().len(),
            2 * usize::from(pois.files_per_set)
        );
        assert_eq!(net.stores[i].len(), 2 * usize::from(pois.files_per_set));
    }

    // Node 0 gives one idle file up for data (the driver's make_room): reported, and no
    // longer verified.
    let me = net.miners[0].id();
    let (number, key) = net.nodes[0].idle().replaceable(&net.ledger, &me)[0];
    net.stores[0].remove(&key);
    net.nodes[0].idle_mut().on_replaced(number);
    // The report waits out a round's draw window (up to 4 of the 6 blocks of a period).
    for _ in 0..8 {
        net.block(Vec::new());
    }
    assert_eq!(
        net.ledger.idle_verified_bytes(&me),
        2 * pois.set_bytes() - pois.file_bytes()
    );

    // A restart keeps every live idle file.
    let files: Vec<(u64, FragmentId)> = net.nodes[0]
        .idle()
        .files()
        .iter()
        .map(|(n, k)| (*n, *k))
        .collect();
    let identity = net.nodes[0].identity().clone();
    net.nodes[0] = NodeCore::new(identity, [])
        .with_idle(cess_node::idle::IdleCore::new(policy, files.clone()));
    net.block(Vec::new());
    assert_eq!(
        net.nodes[0].idle().files().len(),
        files.len(),
        "no live idle file deleted"
    );

    // Nodes stop answering: their sets are decertified one audit at a time, their files
    // deleted, and new sets fill the room once they answer again.
    net.space_answered = false;
    let mut missed = 0;
    for _ in 0..14 {
        let outcome = net.block(Vec::new());
        missed += outcome
            .events
            .iter()
            .filter(|e| matches!(e, Event::SpaceProofMissing { .. }))
            .count();
    }
    assert!(missed >= 3, "missed: {missed}");
    net.space_answered = true;
    for _ in 0..30 {
        net.block(Vec::new());
    }
    for (i, m) in net.miners.iter().enumerate() {
        let live: usize = net
            .ledger
            .idle_sets(&m.id())
            .map(|(_, s)| s.live_files() as usize)
            .sum();
        assert_eq!(
            net.nodes[i].idle().files().len(),
            live,
            "node {i} keeps its live files alone"
        );
        assert_eq!(net.stores[i].len(), live, "node {i}'s store");
        assert!(live > 0, "node {i} filled its room again");
    }
}
