//! A ledger driven block by block, with keys for every actor.
#![allow(dead_code)]

use cess_consensus::ledger::{GenesisValidator, TOKEN};
use cess_consensus::tx::{FragmentId, Hash32, SegmentDecl, TaggerApproval, TxTerms};
use cess_consensus::{
    AccountId, AccountKey, BlockInfo, BlockOutcome, Call, Genesis, Ledger, LedgerParams,
    Transaction, ValidatorKey,
};
use cess_proofs::{CpuBackend, MemorySource, SecretKey, tag_fragment};
use sha2::{Digest, Sha256};

pub const START_BALANCE: u128 = 1_000_000 * TOKEN;

pub struct Chain {
    pub ledger: Ledger,
    pub accounts: Vec<AccountKey>,
    pub validator_keys: Vec<ValidatorKey>,
    /// Fees each account paid in the blocks applied through [`Chain::block`].
    pub fees_paid: std::collections::BTreeMap<AccountId, u128>,
    pub genesis: Genesis,
    /// The time between two blocks (ledger ms): 1000 unless a test changes it.
    pub block_interval_ms: u64,
}

/// Short periods so tests see audits, epochs and eras within a few dozen blocks.
pub fn test_params() -> LedgerParams {
    LedgerParams {
        audit_period_blocks: 5,
        audit_miners_permille: 1000,
        audit_deadline_base_blocks: 3,
        miner_cooling_off_blocks: 10,
        restoral_claim_blocks: 4,
        epoch_blocks: 4,
        era_blocks: 8,
        validators_per_era: 4,
        // Tests run many audit rounds without answering them; the rule has its own test.
        audit_misses_max: 1000,
        lease_grace_blocks: 5,
        pois: cess_proofs::pois::PoisParams::TEST,
        // Drawn 3 blocks after its round opens, answered within the 5-block period.
        pois_space_deadline_blocks: 1,
        ..LedgerParams::default()
    }
}

pub fn account(i: usize) -> AccountKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    AccountKey::from_seed(seed)
}

pub fn validator_key(i: usize) -> ValidatorKey {
    let mut seed = [0x55u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    ValidatorKey::from_seed(&seed)
}

pub fn sha(bytes: &[u8]) -> Hash32 {
    Sha256::digest(bytes).into()
}

impl Chain {
    /// `accounts` funded accounts; the first `validators` of them are genesis validators.
    pub fn new(accounts: usize, validators: usize, params: LedgerParams) -> Chain {
        let keys: Vec<AccountKey> = (0..accounts).map(account).collect();
        let vkeys: Vec<ValidatorKey> = (0..validators).map(validator_key).collect();
        let genesis = Genesis {
            chain_name: "test".into(),
            time_ms: 0,
            accounts: keys.iter().map(|k| (k.id(), START_BALANCE)).collect(),
            reward_pool: 1_000 * TOKEN,
            validators: vkeys
                .iter()
                .zip(&keys)
                .map(|(v, a)| GenesisValidator {
                    account: a.id(),
                    key: v.public().to_bytes(),
                    possession: v.proof_of_possession().to_bytes(),
                    stake: params.candidate_stake_min,
                })
                .collect(),
            taggers: Vec::new(),
            params,
        };
        Chain {
            ledger: Ledger::genesis(&genesis).expect("genesis"),
            genesis,
            accounts: keys,
            validator_keys: vkeys,
            fees_paid: Default::default(),
            block_interval_ms: 1000,
        }
    }

    pub fn fees_paid(&self, i: usize) -> u128 {
        self.fees_paid.get(&self.id(i)).copied().unwrap_or(0)
    }

    pub fn id(&self, i: usize) -> AccountId {
        self.accounts[i].id()
    }

    /// Account `i`'s next transaction, with the least fee it needs.
    pub fn tx(&self, i: usize, call: Call) -> Transaction {
        self.ledger.transaction(&self.accounts[i], call)
    }

    /// A transaction signed with chosen terms.
    pub fn tx_with(&self, i: usize, terms: TxTerms, call: Call) -> Transaction {
        Transaction::sign(&self.accounts[i], &self.ledger.chain_id(), terms, call)
    }

    pub fn next_info(&self) -> BlockInfo {
        let height = self.ledger.height() + 1;
        BlockInfo {
            height,
            time_ms: self.ledger.time_ms() + self.block_interval_ms,
            vrf_output: sha(&height.to_le_bytes()),
            last_commit: self.ledger.validators().iter().map(|v| v.account).collect(),
        }
    }

    pub fn block(&mut self, txs: &[Transaction]) -> BlockOutcome {
        let info = self.next_info();
        let outcome = self.ledger.apply_block(&info, txs, &CpuBackend);
        for (tx, receipt) in txs.iter().zip(&outcome.receipts) {
            if receipt.as_ref().map_or_else(|e| e.charged(), |_| true) {
                *self.fees_paid.entry(tx.signer).or_default() += tx.fee;
            }
        }
        self.ledger.assert_storage_invariants();
        assert_eq!(outcome.root, self.ledger.root());
        assert_eq!(
            self.ledger.root(),
            self.ledger.root_from_scratch(),
            "the kept state hash equals the one from scratch"
        );
        assert_eq!(
            self.ledger.count_money(),
            self.ledger.total_money(),
            "money conserved"
        );
        outcome
    }

    /// Apply one transaction alone in a block; its receipt.
    pub fn run(&mut self, i: usize, call: Call) -> Result<(), cess_consensus::TxError> {
        let tx = self.tx(i, call);
        self.block(&[tx]).receipts.remove(0)
    }

    /// A tagger registration by account `owner`, approved by the validators named in
    /// `approving` (indexes into `validator_keys`).
    pub fn tagger_call(&self, owner: usize, key: Vec<u8>, approving: &[usize]) -> Call {
        let tagger_id = cess_proofs::PublicKey::id_of_encoding(&key).0;
        let approvals = approving
            .iter()
            .map(|&v| {
                TaggerApproval::sign(
                    &self.validator_keys[v],
                    self.id(v),
                    &self.ledger.chain_id(),
                    &tagger_id,
                    &self.id(owner),
                )
            })
            .collect();
        Call::RegisterTagger { key, approvals }
    }

    /// Registers a tagger owned by `owner`, approved by every genesis validator.
    pub fn register_tagger(&mut self, owner: usize, key: Vec<u8>) {
        let every: Vec<usize> = (0..self.validator_keys.len()).collect();
        let call = self.tagger_call(owner, key, &every);
        self.run(owner, call).expect("register tagger");
    }

    /// The index of the account with this id.
    pub fn index_of(&self, id: &AccountId) -> usize {
        self.accounts
            .iter()
            .position(|k| k.id() == *id)
            .expect("a test account")
    }

    /// The account (index) the ledger placed column `column` of `file_id` on.
    pub fn holder(&self, file_id: &Hash32, column: u16) -> usize {
        let file = self.ledger.file(file_id).expect("declared file");
        let miner = file.segments[0].fragments[usize::from(column)]
            .miner
            .expect("placed");
        self.index_of(&miner)
    }

    /// The accounts holding each column of `file_id`, in column order.
    pub fn holders(&self, file_id: &Hash32) -> Vec<usize> {
        let columns = self.ledger.file(file_id).expect("declared").segments[0]
            .fragments
            .len();
        (0..columns as u16)
            .map(|c| self.holder(file_id, c))
            .collect()
    }

    /// Every column's miner reports it, all in one block.
    pub fn report_all(&mut self, file_id: &Hash32) {
        let txs: Vec<Transaction> = self
            .holders(file_id)
            .into_iter()
            .enumerate()
            .map(|(column, holder)| {
                let call = Call::ReportStored {
                    file_id: *file_id,
                    column: column as u16,
                };
                self.tx(holder, call)
            })
            .collect();
        let outcome = self.block(&txs);
        assert!(
            outcome.receipts.iter().all(|r| r.is_ok()),
            "report stored: {:?}",
            outcome.receipts
        );
    }

    /// Account `i` rents `gib` GiB for `blocks` blocks.
    pub fn rent(&mut self, i: usize, gib: u32, blocks: u64) {
        self.run(
            i,
            Call::RentSpace {
                add_gib: gib,
                add_blocks: blocks,
            },
        )
        .expect("rent space");
    }

    pub fn register_miner(&mut self, i: usize, declared_bytes: u64) {
        let id = self.id(i);
        let peer_id = id.peer_id().unwrap().to_bytes();
        self.run(
            i,
            Call::RegisterMiner {
                peer_id,
                endpoint: format!("/ip4/127.0.0.1/udp/{}/quic-v1", 4000 + i),
                declared_bytes,
                collateral: 1000 * TOKEN,
            },
        )
        .expect("register miner");
    }
}

/// A tagger with a small s, and fragments it tagged, held in memory.
pub struct Storage {
    pub tagger: SecretKey,
    pub source: MemorySource,
}

pub const SECTORS: u32 = 16;

impl Storage {
    pub fn new(seed: u8) -> Storage {
        Storage {
            tagger: SecretKey::from_seed(&[seed; 32], SECTORS).unwrap(),
            source: MemorySource::default(),
        }
    }

    pub fn tagger_id(&self) -> Hash32 {
        self.tagger.public().id().0
    }

    /// A fragment of `len` bytes derived from `seed`, tagged and kept.
    pub fn fragment(&mut self, seed: u64, len: usize) -> FragmentId {
        let mut data = vec![0u8; len];
        for (counter, chunk) in data.chunks_mut(32).enumerate() {
            let h = sha(&[seed.to_le_bytes(), (counter as u64).to_le_bytes()].concat());
            chunk.copy_from_slice(&h[..chunk.len()]);
        }
        let id = FragmentId::of(&data);
        let tags = tag_fragment(&self.tagger, &CpuBackend, &id, &data).unwrap();
        self.source.data.insert(id, data);
        self.source.tags.insert(id, tags.encode());
        id
    }

    /// A storage order of `segments` segments of 12 fragments, tagged and kept here.
    pub fn order(&mut self, seed: u64, segments: usize, fragment_bytes: usize) -> (Hash32, Call) {
        let columns = 12;
        let mut decls = Vec::new();
        for s in 0..segments {
            let fragments: Vec<FragmentId> = (0..columns)
                .map(|c| self.fragment(seed * 1000 + (s * columns + c) as u64, fragment_bytes))
                .collect();
            decls.push(SegmentDecl {
                segment_id: sha(&[seed.to_le_bytes(), (s as u64).to_le_bytes()].concat()),
                fragments,
            });
        }
        let file_id = sha(&seed.to_le_bytes());
        let call = Call::DeclareFile {
            file_id,
            file_name: format!("file-{seed}"),
            bucket: String::new(),
            size_bytes: (segments * fragment_bytes * 4) as u64,
            fragment_bytes: fragment_bytes as u64,
            tagger: self.tagger_id(),
            segments: decls,
            meta: Vec::new(),
        };
        (file_id, call)
    }
}
