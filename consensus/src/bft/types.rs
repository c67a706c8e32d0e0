// Long file: every consensus message type with its bounded codec.
//! The Malachite `Context` of this ledger: heights, blocks as values, votes and proposals
//! signed with validator BLS keys, validator sets carrying the slot lottery's seed.

use crate::codec::{DecodeError, Reader, Writer, hash, hex};
use crate::keys::{
    AccountId, VALIDATOR_SIGNATURE_BYTES, ValidatorKey, ValidatorPublicKey, ValidatorSignature,
};
use crate::ledger::ValidatorEntry;
use crate::tx::{Hash32, Transaction};
use crate::vrf;
use arc_malachitebft_core_types as mt;
use mt::{NilOrVal, Round, VoteType};
use std::sync::Arc;

const VOTE_DOMAIN: &[u8] = b"cess-bft/1 vote\0";
const PROPOSAL_DOMAIN: &[u8] = b"cess-bft/1 proposal\0";

/// Largest encoded block and most transactions in one.
pub const BLOCK_BYTES_MAX: usize = 16 << 20;
pub const BLOCK_TXS_MAX: usize = 20_000;
/// Most signatures a commit record carries (a validator set is at most this large).
pub const VALIDATORS_MAX: usize = 256;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl std::fmt::Display for Height {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl mt::Height for Height {
    const ZERO: Height = Height(0);
    const INITIAL: Height = Height(1);

    fn increment_by(&self, n: u64) -> Height {
        Height(self.0 + n)
    }

    fn decrement_by(&self, n: u64) -> Option<Height> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

impl mt::Address for AccountId {}

/// A block's hash: what validators vote on.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockHash(pub Hash32);

impl std::fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blk:{}", hex(&self.0[..6]))
    }
}

impl std::fmt::Display for BlockHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0[..8]))
    }
}

/// The precommits that finalized a height: enough of its validator set, each signature a
/// precommit for (height, round, block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    pub round: u32,
    pub signatures: Vec<(AccountId, ValidatorSignature)>,
}

impl CommitRecord {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.round).count(self.signatures.len());
        for (account, signature) in &self.signatures {
            w.fixed(&account.0).fixed(&signature.to_bytes());
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<CommitRecord, DecodeError> {
        let round = r.u32("commit round")?;
        let count = r.count(
            VALIDATORS_MAX,
            32 + VALIDATOR_SIGNATURE_BYTES,
            "commit signatures",
        )?;
        let mut signatures = Vec::with_capacity(count);
        for _ in 0..count {
            let account = AccountId(r.array("commit signer")?);
            let signature = ValidatorSignature::decode(&r.array("commit signature")?)?;
            signatures.push((account, signature));
        }
        Ok(CommitRecord { round, signatures })
    }

    /// Whether these are valid precommits for `block` at `height` by more than two thirds of
    /// `validators`, each signer once.
    pub fn verify(
        &self,
        chain_id: &Hash32,
        height: u64,
        block: &BlockHash,
        validators: &ValidatorSet,
    ) -> bool {
        let ctx = Cess {
            chain_id: *chain_id,
        };
        let votes = self.signatures.iter().map(|(account, signature)| {
            let vote = precommit(Height(height), Round::new(self.round), *block, *account);
            (vote, signature)
        });
        verify_votes(&ctx, validators, votes, mt::ThresholdParam::TWO_F_PLUS_ONE).is_ok()
    }
}

/// A block: the transactions the ledger applies at `height`, with what proves who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub height: u64,
    /// Hash of the block at `height − 1` (the chain id for the first block).
    pub parent: Hash32,
    /// The ledger's state root after `height − 1` (genesis for the first block): the commit
    /// of this block certifies it, so a follower checks its replica against 2f + 1 validators.
    pub parent_root: Hash32,
    /// At an era's last block, the set it elects (deciding the heights after it, accounts and
    /// keys, in the set's order), as the state before the block decides it
    /// ([`crate::ledger::Ledger::elected_by_next_block`]); `None` elsewhere. The commit of
    /// this block, by the outgoing set, vouches for the incoming one: a node without the
    /// state follows the sets era by era from headers alone ([`crate::light`]).
    pub next_validators: Option<Vec<ValidatorEntry>>,
    pub time_ms: u64,
    pub proposer: AccountId,
    /// The proposer's VRF proof for this slot; its output seeds the next slot's lottery.
    pub vrf_proof: ValidatorSignature,
    /// The commit of `height − 1` (none for the first block).
    pub last_commit: Option<CommitRecord>,
    pub txs: Vec<Transaction>,
}

/// A block without its transactions, which it names by their hash: what the block's hash is
/// computed over, so a header proves what a block says without its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    pub height: u64,
    pub parent: Hash32,
    pub parent_root: Hash32,
    pub next_validators: Option<Vec<ValidatorEntry>>,
    pub time_ms: u64,
    pub proposer: AccountId,
    pub vrf_proof: ValidatorSignature,
    pub last_commit: Option<CommitRecord>,
    /// SHA-256 (domain-separated) of the encoded transaction list.
    pub txs_hash: Hash32,
}

fn txs_hash(txs: &[Transaction]) -> Hash32 {
    let mut w = Writer::new();
    crate::tx::encode_list(txs, &mut w);
    encoded_txs_hash(w.as_bytes())
}

/// The same hash over a transaction list's encoding (the encoding is canonical, so received
/// bytes hash as their re-encoding would).
fn encoded_txs_hash(encoded: &[u8]) -> Hash32 {
    hash(b"cess-bft/2 block transactions\0", &[encoded])
}

/// The fields a block and its header share, in their encoded order.
fn encode_head(
    w: &mut Writer,
    (height, parent, parent_root): (u64, &Hash32, &Hash32),
    next_validators: &Option<Vec<ValidatorEntry>>,
    (time_ms, proposer, vrf_proof): (u64, &AccountId, &ValidatorSignature),
    last_commit: &Option<CommitRecord>,
) {
    w.u64(height).fixed(parent).fixed(parent_root);
    match next_validators {
        Some(set) => {
            w.u8(1).count(set.len());
            for v in set {
                w.fixed(&v.account.0).fixed(&v.key.to_bytes());
            }
        }
        None => {
            w.u8(0);
        }
    }
    w.u64(time_ms)
        .fixed(&proposer.0)
        .fixed(&vrf_proof.to_bytes());
    match last_commit {
        Some(commit) => {
            w.u8(1);
            commit.encode(w);
        }
        None => {
            w.u8(0);
        }
    }
}

type Head = (
    u64,
    Hash32,
    Hash32,
    Option<Vec<ValidatorEntry>>,
    u64,
    AccountId,
    ValidatorSignature,
    Option<CommitRecord>,
);

fn decode_head(r: &mut Reader<'_>) -> Result<Head, DecodeError> {
    let height = r.u64("height")?;
    let parent = r.array("parent")?;
    let parent_root = r.array("parent root")?;
    let next_validators = match r.u8("next validators flag")? {
        0 => None,
        1 => {
            let count = r.count(
                VALIDATORS_MAX,
                32 + crate::keys::VALIDATOR_KEY_BYTES,
                "next validators",
            )?;
            let mut set: Vec<ValidatorEntry> = Vec::with_capacity(count);
            for _ in 0..count {
                let account = AccountId(r.array("next validator")?);
                let key = ValidatorPublicKey::decode(&r.array("next validator key")?)
                    .map_err(|_| DecodeError::Invalid("next validator key"))?;
                // The ledger orders a set by account: anything else is not a set it elected.
                if set.last().is_some_and(|last| last.account >= account) {
                    return Err(DecodeError::Invalid("next validators out of order"));
                }
                set.push(ValidatorEntry { account, key });
            }
            if set.is_empty() {
                return Err(DecodeError::Invalid("an empty validator set"));
            }
            Some(set)
        }
        _ => return Err(DecodeError::Invalid("next validators flag")),
    };
    let time_ms = r.u64("time")?;
    let proposer = AccountId(r.array("proposer")?);
    let vrf_proof = ValidatorSignature::decode(&r.array("vrf proof")?)?;
    let last_commit = match r.u8("commit flag")? {
        0 => None,
        1 => Some(CommitRecord::decode(r)?),
        _ => return Err(DecodeError::Invalid("commit flag")),
    };
    Ok((
        height,
        parent,
        parent_root,
        next_validators,
        time_ms,
        proposer,
        vrf_proof,
        last_commit,
    ))
}

impl Block {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        encode_head(
            &mut w,
            (self.height, &self.parent, &self.parent_root),
            &self.next_validators,
            (self.time_ms, &self.proposer, &self.vrf_proof),
            &self.last_commit,
        );
        crate::tx::encode_list(&self.txs, &mut w);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Block, DecodeError> {
        Ok(Self::decode_parts(bytes)?.0)
    }

    /// A received block and its hash, taken over the bytes it came in (the head as received,
    /// the transactions by the hash of their received encoding): nothing encoded again.
    pub fn decode_hashed(bytes: &[u8]) -> Result<(Block, BlockHash), DecodeError> {
        let (block, head_len) = Self::decode_parts(bytes)?;
        let (head, txs) = bytes.split_at(head_len);
        let mut header = Vec::with_capacity(head.len() + 32);
        header.extend_from_slice(head);
        header.extend_from_slice(&encoded_txs_hash(txs));
        Ok((block, block_hash(&header)))
    }

    /// The block, and the length of its head (the bytes before its transaction list).
    fn decode_parts(bytes: &[u8]) -> Result<(Block, usize), DecodeError> {
        if bytes.len() > BLOCK_BYTES_MAX {
            return Err(DecodeError::TooLong {
                what: "block",
                len: bytes.len() as u64,
                max: BLOCK_BYTES_MAX as u64,
            });
        }
        let mut r = Reader::new(bytes);
        let (
            height,
            parent,
            parent_root,
            next_validators,
            time_ms,
            proposer,
            vrf_proof,
            last_commit,
        ) = decode_head(&mut r)?;
        let head_len = bytes.len() - r.remaining();
        let txs = crate::tx::decode_list(&mut r, BLOCK_TXS_MAX)?;
        r.finish()?;
        let block = Block {
            height,
            parent,
            parent_root,
            next_validators,
            time_ms,
            proposer,
            vrf_proof,
            last_commit,
            txs,
        };
        Ok((block, head_len))
    }

    /// The header (its transactions hashed).
    pub fn header(&self) -> BlockHeader {
        BlockHeader {
            height: self.height,
            parent: self.parent,
            parent_root: self.parent_root,
            next_validators: self.next_validators.clone(),
            time_ms: self.time_ms,
            proposer: self.proposer,
            vrf_proof: self.vrf_proof.clone(),
            last_commit: self.last_commit.clone(),
            txs_hash: txs_hash(&self.txs),
        }
    }

    /// The hash of its header, which names the transactions by their hash.
    pub fn hash(&self) -> BlockHash {
        let mut w = Writer::new();
        encode_head(
            &mut w,
            (self.height, &self.parent, &self.parent_root),
            &self.next_validators,
            (self.time_ms, &self.proposer, &self.vrf_proof),
            &self.last_commit,
        );
        w.fixed(&txs_hash(&self.txs));
        block_hash(w.as_bytes())
    }

    pub fn vrf_output(&self) -> Hash32 {
        vrf::vrf_output(&self.vrf_proof)
    }
}

impl BlockHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_to(&mut w);
        w.into_bytes()
    }

    fn encode_to(&self, w: &mut Writer) {
        encode_head(
            w,
            (self.height, &self.parent, &self.parent_root),
            &self.next_validators,
            (self.time_ms, &self.proposer, &self.vrf_proof),
            &self.last_commit,
        );
        w.fixed(&self.txs_hash);
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<BlockHeader, DecodeError> {
        let (
            height,
            parent,
            parent_root,
            next_validators,
            time_ms,
            proposer,
            vrf_proof,
            last_commit,
        ) = decode_head(r)?;
        let txs_hash = r.array("transactions hash")?;
        Ok(BlockHeader {
            height,
            parent,
            parent_root,
            next_validators,
            time_ms,
            proposer,
            vrf_proof,
            last_commit,
            txs_hash,
        })
    }

    /// The same hash as the block's.
    pub fn hash(&self) -> BlockHash {
        block_hash(&self.encode())
    }
}

fn block_hash(encoded_header: &[u8]) -> BlockHash {
    BlockHash(hash(b"cess-bft/2 block\0", &[encoded_header]))
}

/// A block as a consensus value: compared and identified by its hash.
#[derive(Clone, Debug)]
pub struct BlockValue {
    hash: BlockHash,
    block: Arc<Block>,
}

impl BlockValue {
    pub fn new(block: Block) -> BlockValue {
        BlockValue {
            hash: block.hash(),
            block: Arc::new(block),
        }
    }

    /// A received block, hashed over the bytes it came in (the encoding is canonical, so they
    /// are its encoding), not over an encoding made again.
    pub fn decode(bytes: &[u8]) -> Result<BlockValue, DecodeError> {
        let (block, hash) = Block::decode_hashed(bytes)?;
        debug_assert_eq!(block.encode(), bytes, "the block encoding is canonical");
        debug_assert_eq!(
            block.hash(),
            hash,
            "the hash of the received bytes is the block's"
        );
        Ok(BlockValue {
            hash,
            block: Arc::new(block),
        })
    }

    pub fn block(&self) -> &Arc<Block> {
        &self.block
    }
}

impl PartialEq for BlockValue {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}

impl Eq for BlockValue {}

impl PartialOrd for BlockValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BlockValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.hash.cmp(&other.hash)
    }
}

impl mt::Value for BlockValue {
    type Id = BlockHash;

    fn id(&self) -> BlockHash {
        self.hash
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub pol_round: Round,
    pub value: BlockValue,
    pub proposer: AccountId,
}

impl Proposal {
    pub fn sign_bytes(&self, chain_id: &Hash32) -> Vec<u8> {
        proposal_sign_bytes(
            chain_id,
            self.height.0,
            self.round,
            self.pol_round,
            &self.value.hash.0,
            &self.proposer,
        )
    }
}

/// What a proposer signs: the proposal's header, the block by its hash.
fn proposal_sign_bytes(
    chain_id: &Hash32,
    height: u64,
    round: Round,
    pol_round: Round,
    block: &Hash32,
    proposer: &AccountId,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.fixed(chain_id)
        .u64(height)
        .fixed(&round_bytes(round))
        .fixed(&round_bytes(pol_round))
        .fixed(block)
        .fixed(&proposer.0);
    w.into_bytes()
}

/// A round as 8 bytes: −1 (nil) or the round number.
pub(crate) fn round_bytes(round: Round) -> [u8; 8] {
    round.as_i64().to_le_bytes()
}

impl mt::Proposal<Cess> for Proposal {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &BlockValue {
        &self.value
    }

    fn take_value(self) -> BlockValue {
        self.value
    }

    fn pol_round(&self) -> Round {
        self.pol_round
    }

    fn validator_address(&self) -> &AccountId {
        &self.proposer
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub height: Height,
    pub round: Round,
    pub value: NilOrVal<BlockHash>,
    pub kind: VoteType,
    pub validator: AccountId,
}

impl Vote {
    pub fn sign_bytes(&self, chain_id: &Hash32) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed(chain_id)
            .u8(match self.kind {
                VoteType::Prevote => 1,
                VoteType::Precommit => 2,
            })
            .u64(self.height.0)
            .fixed(&round_bytes(self.round));
        match &self.value {
            NilOrVal::Nil => w.u8(0),
            NilOrVal::Val(hash) => w.u8(1).fixed(&hash.0),
        };
        w.fixed(&self.validator.0);
        w.into_bytes()
    }
}

impl mt::Vote<Cess> for Vote {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &NilOrVal<BlockHash> {
        &self.value
    }

    fn take_value(self) -> NilOrVal<BlockHash> {
        self.value
    }

    fn vote_type(&self) -> VoteType {
        self.kind
    }

    fn validator_address(&self) -> &AccountId {
        &self.validator
    }

    fn extension(&self) -> Option<&mt::SignedExtension<Cess>> {
        None
    }

    fn take_extension(&mut self) -> Option<mt::SignedExtension<Cess>> {
        None
    }

    /// Vote extensions are disabled in this network.
    fn extend(self, _extension: mt::SignedExtension<Cess>) -> Vote {
        self
    }
}

/// Blocks travel whole inside their proposal; there are no parts. This type has no values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoParts {}

impl mt::ProposalPart<Cess> for NoParts {
    fn is_first(&self) -> bool {
        match *self {}
    }

    fn is_last(&self) -> bool {
        match *self {}
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    pub account: AccountId,
    pub key: ValidatorPublicKey,
}

impl mt::Validator<Cess> for Validator {
    fn address(&self) -> &AccountId {
        &self.account
    }

    fn public_key(&self) -> &ValidatorPublicKey {
        &self.key
    }

    /// Every elected validator weighs the same: BFT counts validators (n ≥ 3f + 1).
    fn voting_power(&self) -> mt::VotingPower {
        1
    }
}

/// The validators of one height, ordered by account, and the slot lottery's seed for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Arc<Vec<Validator>>,
    accounts: Arc<Vec<AccountId>>,
    pub seed: Hash32,
}

impl ValidatorSet {
    pub fn new(mut validators: Vec<Validator>, seed: Hash32) -> ValidatorSet {
        assert!(!validators.is_empty() && validators.len() <= VALIDATORS_MAX);
        validators.sort_by_key(|v| v.account);
        validators.dedup_by_key(|v| v.account);
        let accounts = validators.iter().map(|v| v.account).collect();
        ValidatorSet {
            validators: Arc::new(validators),
            accounts: Arc::new(accounts),
            seed,
        }
    }

    pub fn len(&self) -> usize {
        self.validators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    pub fn get(&self, account: &AccountId) -> Option<&Validator> {
        self.accounts
            .binary_search(account)
            .ok()
            .map(|i| &self.validators[i])
    }

    pub fn accounts(&self) -> &[AccountId] {
        &self.accounts
    }

    pub fn proposer(&self, height: u64, round: u32) -> &Validator {
        &self.validators[vrf::proposer_index(&self.seed, height, round, &self.accounts)]
    }
}

impl mt::ValidatorSet<Cess> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> mt::VotingPower {
        self.validators.len() as u64
    }

    fn get_by_address(&self, address: &AccountId) -> Option<&Validator> {
        self.get(address)
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// BLS signatures on validator keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bls;

impl mt::SigningScheme for Bls {
    type DecodingError = DecodeError;
    type Signature = ValidatorSignature;
    type PublicKey = ValidatorPublicKey;
    type PrivateKey = ValidatorKey;

    fn decode_signature(bytes: &[u8]) -> Result<ValidatorSignature, DecodeError> {
        let bytes = bytes
            .try_into()
            .map_err(|_| DecodeError::Invalid("signature length"))?;
        ValidatorSignature::decode(bytes)
    }

    fn encode_signature(signature: &ValidatorSignature) -> Vec<u8> {
        signature.to_bytes().to_vec()
    }

    fn decode_public_key(bytes: &[u8]) -> Result<ValidatorPublicKey, DecodeError> {
        let bytes = bytes
            .try_into()
            .map_err(|_| DecodeError::Invalid("public key length"))?;
        ValidatorPublicKey::decode(bytes)
    }

    fn encode_public_key(key: &ValidatorPublicKey) -> Vec<u8> {
        key.to_bytes().to_vec()
    }
}

/// The consensus context: which chain votes and proposals are signed for.
#[derive(Clone, Debug)]
pub struct Cess {
    pub chain_id: Hash32,
}

impl mt::Context for Cess {
    type Address = AccountId;
    type Height = Height;
    type ProposalPart = NoParts;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = StepTimeouts;
    type Value = BlockValue;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = Bls;

    fn select_proposer<'a>(
        &self,
        validators: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        validators.proposer(height.0, round.as_u32().unwrap_or(0))
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockValue,
        pol_round: Round,
        address: AccountId,
    ) -> Proposal {
        Proposal {
            height,
            round,
            pol_round,
            value,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value: NilOrVal<BlockHash>,
        address: AccountId,
    ) -> Vote {
        Vote {
            height,
            round,
            value,
            kind: VoteType::Prevote,
            validator: address,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value: NilOrVal<BlockHash>,
        address: AccountId,
    ) -> Vote {
        Vote {
            height,
            round,
            value,
            kind: VoteType::Precommit,
            validator: address,
        }
    }
}

impl Cess {
    pub fn sign_vote(&self, key: &ValidatorKey, vote: &Vote) -> ValidatorSignature {
        key.sign(VOTE_DOMAIN, &vote.sign_bytes(&self.chain_id))
    }

    pub fn verify_vote(
        &self,
        key: &ValidatorPublicKey,
        vote: &Vote,
        signature: &ValidatorSignature,
    ) -> bool {
        key.verify(VOTE_DOMAIN, &vote.sign_bytes(&self.chain_id), signature)
    }

    /// Whether `key` signed a proposal of `block` with this header (what equivocation evidence
    /// carries: the block by its hash only).
    #[allow(clippy::too_many_arguments)]
    pub fn verify_proposal_of(
        &self,
        key: &ValidatorPublicKey,
        height: u64,
        round: Round,
        pol_round: Round,
        block: &Hash32,
        proposer: &AccountId,
        signature: &ValidatorSignature,
    ) -> bool {
        let bytes = proposal_sign_bytes(&self.chain_id, height, round, pol_round, block, proposer);
        key.verify(PROPOSAL_DOMAIN, &bytes, signature)
    }

    pub fn sign_proposal(&self, key: &ValidatorKey, proposal: &Proposal) -> ValidatorSignature {
        key.sign(PROPOSAL_DOMAIN, &proposal.sign_bytes(&self.chain_id))
    }

    pub fn verify_proposal(
        &self,
        key: &ValidatorPublicKey,
        proposal: &Proposal,
        signature: &ValidatorSignature,
    ) -> bool {
        key.verify(
            PROPOSAL_DOMAIN,
            &proposal.sign_bytes(&self.chain_id),
            signature,
        )
    }
}

/// Step timeouts that grow with the round, and a rebroadcast period that does not.
///
/// Votes are republished every `rebroadcast_ms` while a validator waits; because step timeouts
/// grow by their delta each round and the period stays fixed, from some round on a lost vote
/// is re-sent before the step times out, so rounds eventually succeed even when messages are
/// lost (Malachite's `LinearTimeouts` grows the rebroadcast period too, which assumes a
/// gossip layer that never loses a vote).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepTimeouts {
    pub propose_ms: u64,
    pub prevote_ms: u64,
    pub precommit_ms: u64,
    /// Added to each step timeout per round.
    pub delta_ms: u64,
    pub rebroadcast_ms: u64,
    pub max_ms: u64,
}

impl Default for StepTimeouts {
    /// For validators on a LAN or a region: a 1 s propose step, 0.5 s vote steps, +0.25 s
    /// per round, votes republished every second while waiting.
    fn default() -> StepTimeouts {
        StepTimeouts {
            propose_ms: 1000,
            prevote_ms: 500,
            precommit_ms: 500,
            delta_ms: 250,
            rebroadcast_ms: 1000,
            max_ms: 30_000,
        }
    }
}

impl StepTimeouts {
    pub fn duration_for(&self, timeout: mt::Timeout) -> std::time::Duration {
        let round = u64::from(timeout.round.as_u32().unwrap_or(0));
        let grow = |base: u64| base.saturating_add(self.delta_ms.saturating_mul(round));
        let ms = match timeout.kind {
            mt::TimeoutKind::Propose => grow(self.propose_ms),
            mt::TimeoutKind::Prevote => grow(self.prevote_ms),
            mt::TimeoutKind::Precommit => grow(self.precommit_ms),
            mt::TimeoutKind::Rebroadcast => self.rebroadcast_ms,
            mt::TimeoutKind::FinalizeHeight(duration) => return duration,
        };
        std::time::Duration::from_millis(ms.min(self.max_ms))
    }
}

impl mt::Timeouts<Cess> for StepTimeouts {
    fn duration_for(&self, timeout: mt::Timeout) -> std::time::Duration {
        StepTimeouts::duration_for(self, timeout)
    }
}

pub(crate) fn precommit(
    height: Height,
    round: Round,
    value: BlockHash,
    validator: AccountId,
) -> Vote {
    Vote {
        height,
        round,
        value: NilOrVal::Val(value),
        kind: VoteType::Precommit,
        validator,
    }
}

/// Why a set of signed votes is not a certificate.
pub(crate) enum VotesFailure {
    Unknown(AccountId),
    Duplicate(AccountId),
    BadSignature(usize),
    Short {
        signed: u64,
        total: u64,
        expected: u64,
    },
}

impl VotesFailure {
    pub(crate) fn into_error(
        self,
        bad_signature: impl FnOnce(usize) -> mt::CertificateError<Cess>,
    ) -> mt::CertificateError<Cess> {
        match self {
            VotesFailure::Unknown(address) => mt::CertificateError::UnknownValidator(address),
            VotesFailure::Duplicate(address) => mt::CertificateError::DuplicateVote(address),
            VotesFailure::BadSignature(index) => bad_signature(index),
            VotesFailure::Short {
                signed,
                total,
                expected,
            } => mt::CertificateError::NotEnoughVotingPower {
                signed,
                total,
                expected,
            },
        }
    }
}

pub(crate) fn verify_votes<'s>(
    ctx: &Cess,
    validators: &ValidatorSet,
    votes: impl Iterator<Item = (Vote, &'s ValidatorSignature)>,
    threshold: mt::ThresholdParam,
) -> Result<(), VotesFailure> {
    let mut seen = std::collections::BTreeSet::new();
    let mut checks = Vec::new();
    for (vote, signature) in votes {
        let address = vote.validator;
        let validator = validators
            .get(&address)
            .ok_or(VotesFailure::Unknown(address))?;
        if !seen.insert(address) {
            return Err(VotesFailure::Duplicate(address));
        }
        checks.push((validator, vote, signature));
    }
    // Counted before any pairing: a short certificate costs nothing to refuse.
    let total = validators.len() as u64;
    let signed = seen.len() as u64;
    if !threshold.is_met(signed, total) {
        return Err(VotesFailure::Short {
            signed,
            total,
            expected: threshold.min_expected(total),
        });
    }
    // All signatures at once (n + 1 pairings); only a failed batch pays for finding which.
    let batch: Vec<_> = checks
        .iter()
        .map(|(validator, vote, signature)| {
            let message = [VOTE_DOMAIN, vote.sign_bytes(&ctx.chain_id).as_slice()].concat();
            (&validator.key, message, *signature)
        })
        .collect();
    if crate::keys::verify_batch(&batch) {
        return Ok(());
    }
    for (index, (validator, vote, signature)) in checks.iter().enumerate() {
        if !ctx.verify_vote(&validator.key, vote, signature) {
            return Err(VotesFailure::BadSignature(index));
        }
    }
    // Never expected (valid signatures satisfy the weighted equation): the reference decides.
    tracing::error!("a batch of votes failed although each signature verifies");
    Ok(())
}
