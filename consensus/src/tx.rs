// Long file: every call's encoding and decoding side by side.
//! Transactions: what an account asks the ledger to do, signed by the account.
//!
//! The signature covers a domain tag, the chain id (so a transaction cannot be replayed on
//! another network), the signer, its nonce and the call, in the canonical encoding.

use crate::codec::{DecodeError, Reader, Writer, hash};
use crate::keys::{
    ACCOUNT_SIGNATURE_BYTES, AccountId, AccountKey, VALIDATOR_KEY_BYTES, VALIDATOR_SIGNATURE_BYTES,
    ValidatorKey, ValidatorPublicKey, ValidatorSignature,
};

const TX_DOMAIN: &[u8] = b"cess-ledger/1 transaction\0";

/// Largest encoded transaction: a storage order of 2 GiB of file at 32 MiB segments (64
/// segments of 12 fragment ids) fits with room; a proof of s = 8192 sectors is 262 KiB.
pub const TX_BYTES_MAX: usize = 512 << 10;
pub const NAME_BYTES_MAX: usize = 256;
/// S3's limit on a bucket name (3 to 63 of `a-z0-9.-`; see
/// [`crate::ledger::check_bucket_name`]).
pub const BUCKET_NAME_BYTES_MAX: usize = 63;
/// Most bytes of the client's header a storage order carries (the codec's encryption header:
/// key check, KDF salt and cost, manifest MAC; about 90 bytes today).
pub const FILE_META_BYTES_MAX: usize = 256;
pub const ENDPOINT_BYTES_MAX: usize = 256;
pub const PEER_ID_BYTES_MAX: usize = 64;
pub const SEGMENTS_PER_ORDER_MAX: usize = 1024;
pub const FRAGMENTS_PER_SEGMENT_MAX: usize = 64;
/// A tagger key of s = 8192 sectors (the most `cess-proofs` allows) is 393 KiB.
pub const TAGGER_KEY_BYTES_MAX: usize = 400 << 10;
pub const PROOF_BYTES_MAX: usize = 300 << 10;
/// Largest PoIS proof (commit or space) a transaction carries; the ledger's PoIS parameters
/// must keep their proofs under it (the network's commit proof is at most 454 KiB), and it
/// under [`TX_BYTES_MAX`] with room for the rest of the transaction.
pub const IDLE_PROOF_BYTES_MAX: usize = 480 << 10;
const _: () = assert!(IDLE_PROOF_BYTES_MAX + (16 << 10) <= TX_BYTES_MAX);

pub type Hash32 = [u8; 32];

/// The one fragment id type every crate shares.
pub use cess_types::FragmentId;

/// One segment of a storage order: its id and its fragments' ids, fragment j for miner j.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDecl {
    pub segment_id: Hash32,
    pub fragments: Vec<FragmentId>,
}

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Transfer {
        to: AccountId,
        amount: u128,
    },
    /// Register the signer as a storage miner. `peer_id` is the transport PeerId (bytes) and
    /// must be the signer's own key; `collateral` moves from balance.
    RegisterMiner {
        peer_id: Vec<u8>,
        endpoint: String,
        declared_bytes: u64,
        collateral: u128,
    },
    UpdateMiner {
        endpoint: String,
        declared_bytes: u64,
    },
    /// Start leaving: no new data; held fragments become restoral orders.
    ExitMiner,
    /// After the cooling-off period: collateral returns, the miner is removed.
    WithdrawMiner,
    /// Register a tagger's public key (the `cess-proofs` encoding), owned by the signer.
    /// Whoever holds a tagger's secret can forge proofs for what it tagged, so a tagger is
    /// trusted: it needs the approvals of more than two thirds of the current validators.
    RegisterTagger {
        key: Vec<u8>,
        approvals: Vec<TaggerApproval>,
    },
    /// A storage order: the file, its segments and fragments. The ledger places the columns
    /// on miners it draws with its randomness (never the uploader's choice), and the order
    /// uses that many bytes of the signer's rented space. An existing file id adds the
    /// signer as another owner (deduplication), which uses the signer's space too.
    DeclareFile {
        file_id: Hash32,
        file_name: String,
        /// The owner's bucket the file is listed in (the seed's `bucket_name`); empty for
        /// none. A named bucket must be one of the owner's (see [`Call::CreateBucket`]).
        bucket: String,
        size_bytes: u64,
        fragment_bytes: u64,
        tagger: Hash32,
        segments: Vec<SegmentDecl>,
        /// What the uploader's client needs to read the file back with only its key, kept
        /// and never interpreted by the ledger (see [`FILE_META_BYTES_MAX`]).
        meta: Vec<u8>,
    },
    /// Rent space, or extend the signer's lease: `add_gib` more GiB until the lease ends,
    /// and the end `add_blocks` later. Paid now, for every GiB-block added (a new lease
    /// also pays for its grace blocks).
    RentSpace {
        add_gib: u32,
        add_blocks: u64,
    },
    /// Miner of `column` reports it stores that column's fragment of every segment.
    ReportStored {
        file_id: Hash32,
        column: u16,
    },
    /// The signer stops owning the file; the last owner's deletion frees the content.
    DeleteFile {
        file_id: Hash32,
    },
    /// The answer to the signer's audit of `round` for `tagger`.
    SubmitProof {
        round: u64,
        tagger: Hash32,
        proof: Vec<u8>,
    },
    /// The holder reports a fragment lost: a restoral order is opened.
    ReportLost {
        fragment_id: FragmentId,
    },
    ClaimRestoral {
        fragment_id: FragmentId,
    },
    CompleteRestoral {
        fragment_id: FragmentId,
    },
    /// Give back a restoral claim the signer cannot complete (its siblings do not rebuild
    /// it to its id: a column declared unlike its encoding); counts no expiry.
    ReleaseClaim {
        fragment_id: FragmentId,
    },
    /// Become a validator candidate with `stake` moved from balance.
    RegisterCandidate {
        key: [u8; VALIDATOR_KEY_BYTES],
        possession: [u8; VALIDATOR_SIGNATURE_BYTES],
        stake: u128,
    },
    Bond {
        amount: u128,
    },
    /// A miner adds collateral from its balance.
    AddCollateral {
        amount: u128,
    },
    Unbond {
        amount: u128,
    },
    /// Let `delegate` act for the signer on its files: read them from the miners (a gateway,
    /// a backup agent). At most [`crate::ledger::DELEGATES_PER_OWNER_MAX`] per owner.
    Authorize {
        delegate: AccountId,
    },
    /// Take back an [`Call::Authorize`].
    Deauthorize {
        delegate: AccountId,
    },
    /// Two conflicting messages signed by one validator candidate: it is slashed and left out
    /// of every later election; the reporter gets a share of the slash.
    ReportEquivocation {
        evidence: Box<Equivocation>,
    },
    /// Where the signer, a validator candidate, listens for consensus messages: a multiaddr
    /// (`/ip4/…/udp/…/quic-v1`) in canonical form. Validators dial the members of each
    /// era's set at the endpoint the chain gives them.
    SetValidatorEndpoint {
        endpoint: String,
    },
    /// A named group of the signer's files (the seed's `create_bucket`; an S3 bucket). At
    /// most [`crate::ledger::BUCKETS_PER_OWNER_MAX`] per owner; needs a lease.
    CreateBucket {
        name: String,
    },
    /// Removes an empty bucket of the signer's.
    DeleteBucket {
        name: String,
    },
    /// A delegate (see [`Call::Authorize`]) acting for `owner`: `call` runs as if `owner`
    /// signed it, paid by the delegate's fee. Only the calls a gateway needs are allowed
    /// ([`Call::allowed_for_owner`]): declaring, deleting, and the buckets. Money, leases
    /// and delegates stay the owner's own.
    ForOwner {
        owner: AccountId,
        call: Box<Call>,
    },
    /// The roots of the signer's next set of idle files (`cess_proofs::pois`), one
    /// `FileCommitment` encoding per file, numbered from `first_file`.
    CommitIdle {
        first_file: u64,
        commitments: Vec<[u8; 64]>,
    },
    /// The answer to a committed set's commit challenge (a `CommitProof` encoding).
    ProveIdle {
        first_file: u64,
        proof: Vec<u8>,
    },
    /// Idle files the signer deleted to make room for user data.
    ReplaceIdle {
        files: Vec<u64>,
    },
    /// The answer to the signer's space audit of `round` (a `SpaceProof` encoding).
    SubmitSpaceProof {
        round: u64,
        proof: Vec<u8>,
    },
}

/// What a validator signed twice: two votes of one kind, or two proposals, for one height and
/// round, with different contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    pub offender: AccountId,
    pub height: u64,
    pub round: u32,
    pub kind: EquivocationKind,
    pub first: SignedValue,
    pub second: SignedValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EquivocationKind {
    Prevote,
    Precommit,
    Proposal,
}

/// One of the two messages: the block voted or proposed (`None`: a nil vote), the proposal's
/// proof-of-lock round (−1 for none, and for votes), and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedValue {
    pub value: Option<Hash32>,
    pub pol_round: i64,
    pub signature: [u8; VALIDATOR_SIGNATURE_BYTES],
}

impl SignedValue {
    fn encode(&self, w: &mut Writer) {
        match &self.value {
            None => w.u8(0),
            Some(hash) => w.u8(1).fixed(hash),
        };
        w.u64(self.pol_round as u64).fixed(&self.signature);
    }

    fn decode(r: &mut Reader<'_>, kind: EquivocationKind) -> Result<SignedValue, DecodeError> {
        let value = match r.u8("value tag")? {
            0 => None,
            1 => Some(r.array("value")?),
            _ => return Err(DecodeError::Invalid("value tag")),
        };
        let pol_round = r.u64("pol round")? as i64;
        let ok = match kind {
            EquivocationKind::Proposal => {
                value.is_some() && (-1..=i64::from(u32::MAX)).contains(&pol_round)
            }
            _ => pol_round == -1,
        };
        if !ok {
            return Err(DecodeError::Invalid("signed value"));
        }
        Ok(SignedValue {
            value,
            pol_round,
            signature: r.array("signature")?,
        })
    }
}

impl Equivocation {
    fn encode(&self, w: &mut Writer) {
        w.fixed(&self.offender.0)
            .u64(self.height)
            .u32(self.round)
            .u8(match self.kind {
                EquivocationKind::Prevote => 1,
                EquivocationKind::Precommit => 2,
                EquivocationKind::Proposal => 3,
            });
        self.first.encode(w);
        self.second.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Equivocation, DecodeError> {
        let offender = AccountId(r.array("offender")?);
        let height = r.u64("height")?;
        let round = r.u32("round")?;
        let kind = match r.u8("equivocation kind")? {
            1 => EquivocationKind::Prevote,
            2 => EquivocationKind::Precommit,
            3 => EquivocationKind::Proposal,
            _ => return Err(DecodeError::Invalid("equivocation kind")),
        };
        let first = SignedValue::decode(r, kind)?;
        let second = SignedValue::decode(r, kind)?;
        Ok(Equivocation {
            offender,
            height,
            round,
            kind,
            first,
            second,
        })
    }
}

impl Call {
    fn tag(&self) -> u8 {
        match self {
            Call::Transfer { .. } => 1,
            Call::RegisterMiner { .. } => 2,
            Call::UpdateMiner { .. } => 3,
            Call::ExitMiner => 4,
            Call::WithdrawMiner => 5,
            Call::RegisterTagger { .. } => 6,
            Call::DeclareFile { .. } => 7,
            Call::ReportStored { .. } => 8,
            Call::DeleteFile { .. } => 9,
            Call::SubmitProof { .. } => 10,
            Call::ReportLost { .. } => 11,
            Call::ClaimRestoral { .. } => 12,
            Call::CompleteRestoral { .. } => 13,
            Call::RegisterCandidate { .. } => 14,
            Call::Bond { .. } => 15,
            Call::Unbond { .. } => 16,
            Call::AddCollateral { .. } => 17,
            Call::RentSpace { .. } => 18,
            Call::Authorize { .. } => 19,
            Call::Deauthorize { .. } => 20,
            Call::ReportEquivocation { .. } => 21,
            Call::SetValidatorEndpoint { .. } => 22,
            Call::ReleaseClaim { .. } => 23,
            Call::CreateBucket { .. } => 24,
            Call::DeleteBucket { .. } => 25,
            Call::ForOwner { .. } => 26,
            Call::CommitIdle { .. } => 27,
            Call::ProveIdle { .. } => 28,
            Call::ReplaceIdle { .. } => 29,
            Call::SubmitSpaceProof { .. } => 30,
        }
    }

    /// Whether a delegate may make this call for an owner ([`Call::ForOwner`]).
    pub fn allowed_for_owner(&self) -> bool {
        matches!(
            self,
            Call::DeclareFile { .. }
                | Call::DeleteFile { .. }
                | Call::CreateBucket { .. }
                | Call::DeleteBucket { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Call::Transfer { .. } => "transfer",
            Call::RegisterMiner { .. } => "register_miner",
            Call::UpdateMiner { .. } => "update_miner",
            Call::ExitMiner => "exit_miner",
            Call::WithdrawMiner => "withdraw_miner",
            Call::RegisterTagger { .. } => "register_tagger",
            Call::DeclareFile { .. } => "declare_file",
            Call::ReportStored { .. } => "report_stored",
            Call::DeleteFile { .. } => "delete_file",
            Call::SubmitProof { .. } => "submit_proof",
            Call::ReportLost { .. } => "report_lost",
            Call::ClaimRestoral { .. } => "claim_restoral",
            Call::CompleteRestoral { .. } => "complete_restoral",
            Call::ReleaseClaim { .. } => "release_claim",
            Call::RegisterCandidate { .. } => "register_candidate",
            Call::Bond { .. } => "bond",
            Call::Unbond { .. } => "unbond",
            Call::AddCollateral { .. } => "add_collateral",
            Call::RentSpace { .. } => "rent_space",
            Call::Authorize { .. } => "authorize",
            Call::Deauthorize { .. } => "deauthorize",
            Call::ReportEquivocation { .. } => "report_equivocation",
            Call::SetValidatorEndpoint { .. } => "set_validator_endpoint",
            Call::CreateBucket { .. } => "create_bucket",
            Call::DeleteBucket { .. } => "delete_bucket",
            Call::ForOwner { .. } => "for_owner",
            Call::CommitIdle { .. } => "commit_idle",
            Call::ProveIdle { .. } => "prove_idle",
            Call::ReplaceIdle { .. } => "replace_idle",
            Call::SubmitSpaceProof { .. } => "submit_space_proof",
        }
    }

    pub fn encode(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            Call::Transfer { to, amount } => {
                w.fixed(&to.0).u128(*amount);
            }
            Call::RegisterMiner {
                peer_id,
                endpoint,
                declared_bytes,
                collateral,
            } => {
                w.bytes(peer_id)
                    .str(endpoint)
                    .u64(*declared_bytes)
                    .u128(*collateral);
            }
            Call::UpdateMiner {
                endpoint,
                declared_bytes,
            } => {
                w.str(endpoint).u64(*declared_bytes);
            }
            Call::ExitMiner | Call::WithdrawMiner => {}
            Call::RegisterTagger { key, approvals } => {
                w.bytes(key).count(approvals.len());
                for approval in approvals {
                    w.fixed(&approval.validator.0).fixed(&approval.signature);
                }
            }
            Call::DeclareFile {
                file_id,
                file_name,
                bucket,
                size_bytes,
                fragment_bytes,
                tagger,
                segments,
                meta,
            } => {
                w.fixed(file_id)
                    .str(file_name)
                    .str(bucket)
                    .u64(*size_bytes)
                    .u64(*fragment_bytes)
                    .fixed(tagger)
                    .count(segments.len());
                for segment in segments {
                    w.fixed(&segment.segment_id).count(segment.fragments.len());
                    for fragment in &segment.fragments {
                        w.fragment_id(fragment);
                    }
                }
                w.bytes(meta);
            }
            Call::ReportStored { file_id, column } => {
                w.fixed(file_id).u16(*column);
            }
            Call::DeleteFile { file_id } => {
                w.fixed(file_id);
            }
            Call::SubmitProof {
                round,
                tagger,
                proof,
            } => {
                w.u64(*round).fixed(tagger).bytes(proof);
            }
            Call::ReportLost { fragment_id }
            | Call::ClaimRestoral { fragment_id }
            | Call::CompleteRestoral { fragment_id }
            | Call::ReleaseClaim { fragment_id } => {
                w.fragment_id(fragment_id);
            }
            Call::RegisterCandidate {
                key,
                possession,
                stake,
            } => {
                w.fixed(key).fixed(possession).u128(*stake);
            }
            Call::Bond { amount } | Call::Unbond { amount } | Call::AddCollateral { amount } => {
                w.u128(*amount);
            }
            Call::RentSpace {
                add_gib,
                add_blocks,
            } => {
                w.u32(*add_gib).u64(*add_blocks);
            }
            Call::Authorize { delegate } | Call::Deauthorize { delegate } => {
                w.fixed(&delegate.0);
            }
            Call::ReportEquivocation { evidence } => evidence.encode(w),
            Call::SetValidatorEndpoint { endpoint } => {
                w.str(endpoint);
            }
            Call::CreateBucket { name } | Call::DeleteBucket { name } => {
                w.str(name);
            }
            Call::ForOwner { owner, call } => {
                w.fixed(&owner.0);
                call.encode(w);
            }
            Call::CommitIdle {
                first_file,
                commitments,
            } => {
                w.u64(*first_file).count(commitments.len());
                for commitment in commitments {
                    w.fixed(commitment);
                }
            }
            Call::ProveIdle { first_file, proof } => {
                w.u64(*first_file).bytes(proof);
            }
            Call::ReplaceIdle { files } => {
                w.count(files.len());
                for file in files {
                    w.u64(*file);
                }
            }
            Call::SubmitSpaceProof { round, proof } => {
                w.u64(*round).bytes(proof);
            }
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Call, DecodeError> {
        let kind = r.u8("call kind")?;
        Call::decode_kind(kind, r)
    }

    fn decode_kind(kind: u8, r: &mut Reader<'_>) -> Result<Call, DecodeError> {
        let call = match kind {
            1 => Call::Transfer {
                to: AccountId(r.array("to")?),
                amount: r.u128("amount")?,
            },
            2 => Call::RegisterMiner {
                peer_id: r.bytes(PEER_ID_BYTES_MAX, "peer id")?.to_vec(),
                endpoint: r.string(ENDPOINT_BYTES_MAX, "endpoint")?,
                declared_bytes: r.u64("declared bytes")?,
                collateral: r.u128("collateral")?,
            },
            3 => Call::UpdateMiner {
                endpoint: r.string(ENDPOINT_BYTES_MAX, "endpoint")?,
                declared_bytes: r.u64("declared bytes")?,
            },
            4 => Call::ExitMiner,
            5 => Call::WithdrawMiner,
            6 => {
                let key = r.bytes(TAGGER_KEY_BYTES_MAX, "tagger key")?.to_vec();
                let count = r.count(
                    crate::bft::VALIDATORS_MAX,
                    32 + VALIDATOR_SIGNATURE_BYTES,
                    "tagger approvals",
                )?;
                let mut approvals = Vec::with_capacity(count);
                for _ in 0..count {
                    approvals.push(TaggerApproval {
                        validator: AccountId(r.array("approving validator")?),
                        signature: r.array("approval signature")?,
                    });
                }
                Call::RegisterTagger { key, approvals }
            }
            7 => {
                let file_id = r.array("file id")?;
                let file_name = r.string(NAME_BYTES_MAX, "file name")?;
                let bucket = r.string(BUCKET_NAME_BYTES_MAX, "bucket")?;
                let size_bytes = r.u64("size")?;
                let fragment_bytes = r.u64("fragment bytes")?;
                let tagger = r.array("tagger")?;
                let segment_count = r.count(SEGMENTS_PER_ORDER_MAX, 36, "segments")?;
                let mut segments = Vec::with_capacity(segment_count);
                for _ in 0..segment_count {
                    let segment_id = r.array("segment id")?;
                    let fragment_count = r.count(FRAGMENTS_PER_SEGMENT_MAX, 32, "fragments")?;
                    let mut fragments = Vec::with_capacity(fragment_count);
                    for _ in 0..fragment_count {
                        fragments.push(r.fragment_id("fragment id")?);
                    }
                    segments.push(SegmentDecl {
                        segment_id,
                        fragments,
                    });
                }
                let meta = r.bytes(FILE_META_BYTES_MAX, "file meta")?.to_vec();
                Call::DeclareFile {
                    file_id,
                    file_name,
                    bucket,
                    size_bytes,
                    fragment_bytes,
                    tagger,
                    segments,
                    meta,
                }
            }
            8 => Call::ReportStored {
                file_id: r.array("file id")?,
                column: r.u16("column")?,
            },
            9 => Call::DeleteFile {
                file_id: r.array("file id")?,
            },
            10 => Call::SubmitProof {
                round: r.u64("round")?,
                tagger: r.array("tagger")?,
                proof: r.bytes(PROOF_BYTES_MAX, "proof")?.to_vec(),
            },
            11 => Call::ReportLost {
                fragment_id: r.fragment_id("fragment id")?,
            },
            12 => Call::ClaimRestoral {
                fragment_id: r.fragment_id("fragment id")?,
            },
            13 => Call::CompleteRestoral {
                fragment_id: r.fragment_id("fragment id")?,
            },
            14 => Call::RegisterCandidate {
                key: r.array("validator key")?,
                possession: r.array("proof of possession")?,
                stake: r.u128("stake")?,
            },
            15 => Call::Bond {
                amount: r.u128("amount")?,
            },
            16 => Call::Unbond {
                amount: r.u128("amount")?,
            },
            17 => Call::AddCollateral {
                amount: r.u128("amount")?,
            },
            18 => Call::RentSpace {
                add_gib: r.u32("GiB")?,
                add_blocks: r.u64("blocks")?,
            },
            19 => Call::Authorize {
                delegate: AccountId(r.array("delegate")?),
            },
            20 => Call::Deauthorize {
                delegate: AccountId(r.array("delegate")?),
            },
            21 => Call::ReportEquivocation {
                evidence: Box::new(Equivocation::decode(r)?),
            },
            22 => Call::SetValidatorEndpoint {
                endpoint: r.string(ENDPOINT_BYTES_MAX, "endpoint")?,
            },
            23 => Call::ReleaseClaim {
                fragment_id: r.fragment_id("fragment id")?,
            },
            24 => Call::CreateBucket {
                name: r.string(BUCKET_NAME_BYTES_MAX, "bucket")?,
            },
            25 => Call::DeleteBucket {
                name: r.string(BUCKET_NAME_BYTES_MAX, "bucket")?,
            },
            26 => {
                let owner = AccountId(r.array("owner")?);
                // One level only: a nested `ForOwner` is refused by its kind byte before
                // anything under it is read, so no peer can nest them deep; any other call a
                // delegate may not make is refused once decoded (within the transaction's
                // size bound).
                let inner = r.u8("call kind")?;
                if inner == 26 {
                    return Err(DecodeError::Invalid("call a delegate may not make"));
                }
                let call = Call::decode_kind(inner, r)?;
                if !call.allowed_for_owner() {
                    return Err(DecodeError::Invalid("call a delegate may not make"));
                }
                Call::ForOwner {
                    owner,
                    call: Box::new(call),
                }
            }
            27 => {
                let first_file = r.u64("first idle file")?;
                let count = r.count(256, 64, "idle commitments")?;
                let commitments = (0..count)
                    .map(|_| r.array("idle commitment"))
                    .collect::<Result<Vec<_>, _>>()?;
                Call::CommitIdle {
                    first_file,
                    commitments,
                }
            }
            28 => Call::ProveIdle {
                first_file: r.u64("first idle file")?,
                proof: r.bytes(IDLE_PROOF_BYTES_MAX, "idle proof")?.to_vec(),
            },
            29 => {
                let count = r.count(crate::ledger::IDLE_REPLACE_FILES_MAX, 8, "idle files")?;
                let files = (0..count)
                    .map(|_| r.u64("idle file"))
                    .collect::<Result<Vec<_>, _>>()?;
                Call::ReplaceIdle { files }
            }
            30 => Call::SubmitSpaceProof {
                round: r.u64("round")?,
                proof: r.bytes(IDLE_PROOF_BYTES_MAX, "space proof")?.to_vec(),
            },
            _ => return Err(DecodeError::Invalid("call kind")),
        };
        Ok(call)
    }
}

const TAGGER_APPROVAL_DOMAIN: &[u8] = b"cess-ledger/1 tagger approval\0";

/// A validator's approval of a tagger: its BLS signature of
/// [`TaggerApproval::message`] for this chain, tagger and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggerApproval {
    pub validator: AccountId,
    pub signature: [u8; VALIDATOR_SIGNATURE_BYTES],
}

impl TaggerApproval {
    /// What an approving validator signs: the chain, the tagger's id (SHA-256 of its
    /// encoded public key) and the account that will own it.
    pub fn message(chain_id: &Hash32, tagger_id: &Hash32, owner: &AccountId) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed(chain_id).fixed(tagger_id).fixed(&owner.0);
        w.into_bytes()
    }

    pub fn sign(
        key: &ValidatorKey,
        validator: AccountId,
        chain_id: &Hash32,
        tagger_id: &Hash32,
        owner: &AccountId,
    ) -> TaggerApproval {
        let message = TaggerApproval::message(chain_id, tagger_id, owner);
        TaggerApproval {
            validator,
            signature: key.sign(TAGGER_APPROVAL_DOMAIN, &message).to_bytes(),
        }
    }

    /// Whether this is `validator_key`'s approval of the tagger for `owner`.
    pub fn verify(
        &self,
        validator_key: &ValidatorPublicKey,
        chain_id: &Hash32,
        tagger_id: &Hash32,
        owner: &AccountId,
    ) -> bool {
        let Ok(signature) = ValidatorSignature::decode(&self.signature) else {
            return false;
        };
        let message = TaggerApproval::message(chain_id, tagger_id, owner);
        validator_key.verify(TAGGER_APPROVAL_DOMAIN, &message, &signature)
    }
}

/// What a signer commits to besides the call: its nonce, the fee it pays whether or not the
/// call succeeds, and the last height at which the transaction may be included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxTerms {
    pub nonce: u64,
    /// Paid from the signer's balance to the reward pool once the transaction is included,
    /// even when its call is refused (at least [`crate::LedgerParams::min_fee`]).
    pub fee: u128,
    /// The last block height that may include the transaction; after it, every mempool
    /// drops it and the ledger refuses it.
    pub valid_until: u64,
}

/// A signed transaction. Decoding checks the encoding and bounds, not the signature: the
/// ledger checks that (`Ledger::check`) against the chain id it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub signer: AccountId,
    pub nonce: u64,
    pub fee: u128,
    pub valid_until: u64,
    pub call: Call,
    pub signature: [u8; ACCOUNT_SIGNATURE_BYTES],
}

impl Transaction {
    /// Build and sign.
    pub fn sign(key: &AccountKey, chain_id: &Hash32, terms: TxTerms, call: Call) -> Transaction {
        let signer = key.id();
        let message = signing_bytes(chain_id, &signer, &terms, &call);
        Transaction {
            signature: key.sign(&message),
            signer,
            nonce: terms.nonce,
            fee: terms.fee,
            valid_until: terms.valid_until,
            call,
        }
    }

    pub fn terms(&self) -> TxTerms {
        TxTerms {
            nonce: self.nonce,
            fee: self.fee,
            valid_until: self.valid_until,
        }
    }

    pub fn signature_is_valid(&self, chain_id: &Hash32) -> bool {
        let message = signing_bytes(chain_id, &self.signer, &self.terms(), &self.call);
        self.signer.verify(&message, &self.signature)
    }

    /// Length of [`Transaction::encode`]'s output (what fees and byte bounds count).
    pub fn encoded_len(&self) -> usize {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.as_bytes().len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.into_bytes()
    }

    pub fn encode_into(&self, w: &mut Writer) {
        w.fixed(&self.signer.0)
            .u64(self.nonce)
            .u128(self.fee)
            .u64(self.valid_until);
        self.call.encode(w);
        w.fixed(&self.signature);
    }

    pub fn decode(bytes: &[u8]) -> Result<Transaction, DecodeError> {
        if bytes.len() > TX_BYTES_MAX {
            return Err(DecodeError::TooLong {
                what: "transaction",
                len: bytes.len() as u64,
                max: TX_BYTES_MAX as u64,
            });
        }
        let mut r = Reader::new(bytes);
        let tx = Transaction::decode_from(&mut r)?;
        r.finish()?;
        Ok(tx)
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Transaction, DecodeError> {
        Ok(Transaction {
            signer: AccountId(r.array("signer")?),
            nonce: r.u64("nonce")?,
            fee: r.u128("fee")?,
            valid_until: r.u64("valid until")?,
            call: Call::decode(r)?,
            signature: r.array("signature")?,
        })
    }

    /// The transaction's id: SHA-256 of its encoding.
    pub fn id(&self) -> Hash32 {
        hash(b"cess-ledger/1 tx id\0", &[&self.encode()])
    }
}

/// Smallest encoded transaction (signer, nonce, fee, validity, call kind, signature) plus its
/// length prefix.
const TX_BYTES_MIN: usize = 4 + 32 + 8 + 16 + 8 + 1 + 64;

/// A list of transactions (blocks, relays), each length-prefixed.
pub fn encode_list(txs: &[Transaction], w: &mut Writer) {
    w.count(txs.len());
    for tx in txs {
        w.bytes(&tx.encode());
    }
}

/// Decodes [`encode_list`]'s output of at most `max` transactions.
pub fn decode_list(r: &mut Reader<'_>, max: usize) -> Result<Vec<Transaction>, DecodeError> {
    let count = r.count(max, TX_BYTES_MIN, "transactions")?;
    let mut txs = Vec::with_capacity(count);
    for _ in 0..count {
        txs.push(Transaction::decode(r.bytes(TX_BYTES_MAX, "transaction")?)?);
    }
    Ok(txs)
}

/// A transaction whose signature was checked for a chain. Drivers check signatures on their
/// own threads and hand the core only these, so the core's loop spends no time on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTx {
    tx: Transaction,
    chain_id: Hash32,
}

impl VerifiedTx {
    /// `None` when the signature does not verify for `chain_id`.
    pub fn check(tx: Transaction, chain_id: &Hash32) -> Option<VerifiedTx> {
        let valid = tx.signature_is_valid(chain_id);
        valid.then_some(VerifiedTx {
            tx,
            chain_id: *chain_id,
        })
    }

    pub fn tx(&self) -> &Transaction {
        &self.tx
    }

    pub fn chain_id(&self) -> &Hash32 {
        &self.chain_id
    }

    pub fn into_tx(self) -> Transaction {
        self.tx
    }
}

fn signing_bytes(chain_id: &Hash32, signer: &AccountId, terms: &TxTerms, call: &Call) -> Vec<u8> {
    let mut w = Writer::with_domain(TX_DOMAIN);
    w.fixed(chain_id)
        .fixed(&signer.0)
        .u64(terms.nonce)
        .u128(terms.fee)
        .u64(terms.valid_until);
    call.encode(&mut w);
    w.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_calls() -> Vec<Call> {
        vec![
            Call::Transfer {
                to: AccountId([9; 32]),
                amount: 77,
            },
            Call::RegisterMiner {
                peer_id: vec![1, 2, 3],
                endpoint: "/ip4/127.0.0.1/udp/1/quic-v1".into(),
                declared_bytes: 1 << 30,
                collateral: 5,
            },
            Call::ExitMiner,
            Call::DeclareFile {
                file_id: [1; 32],
                file_name: "a.txt".into(),
                bucket: "photos".into(),
                size_bytes: 10,
                fragment_bytes: 8 << 20,
                tagger: [2; 32],
                segments: vec![SegmentDecl {
                    segment_id: [4; 32],
                    fragments: vec![crate::tx::FragmentId([5; 32]); 12],
                }],
                meta: vec![9; 40],
            },
            Call::SubmitProof {
                round: 3,
                tagger: [6; 32],
                proof: vec![7; 100],
            },
            Call::RentSpace {
                add_gib: 3,
                add_blocks: 400,
            },
            Call::RegisterCandidate {
                key: [8; 48],
                possession: [9; 96],
                stake: 1000,
            },
            Call::SetValidatorEndpoint {
                endpoint: "/ip4/127.0.0.1/udp/9/quic-v1".into(),
            },
            Call::CreateBucket {
                name: "photos".into(),
            },
            Call::DeleteBucket {
                name: "photos".into(),
            },
            Call::ForOwner {
                owner: AccountId([3; 32]),
                call: Box::new(Call::DeleteFile { file_id: [4; 32] }),
            },
        ]
    }

    #[test]
    fn transactions_round_trip_and_signatures_bind_everything() {
        let key = AccountKey::from_seed([1; 32]);
        let chain = [7u8; 32];
        for (nonce, call) in sample_calls().into_iter().enumerate() {
            let terms = TxTerms {
                nonce: nonce as u64,
                fee: 1000 + nonce as u128,
                valid_until: 50,
            };
            let tx = Transaction::sign(&key, &chain, terms, call);
            let bytes = tx.encode();
            let back = Transaction::decode(&bytes).unwrap();
            assert_eq!(back, tx);
            assert_eq!(back.encode(), bytes);
            assert!(back.signature_is_valid(&chain));
            assert!(!back.signature_is_valid(&[8u8; 32]), "another chain");
            assert_eq!(back.encoded_len(), bytes.len());
            let mut bumped = back.clone();
            bumped.nonce += 1;
            assert!(!bumped.signature_is_valid(&chain));
            let mut cheaper = back.clone();
            cheaper.fee -= 1;
            assert!(!cheaper.signature_is_valid(&chain), "the fee is signed");
            let mut longer_lived = back.clone();
            longer_lived.valid_until += 1;
            assert!(
                !longer_lived.signature_is_valid(&chain),
                "the validity is signed"
            );
            // Every truncation is refused, and so is a trailing byte.
            for len in 0..bytes.len() {
                assert!(Transaction::decode(&bytes[..len]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Transaction::decode(&longer).is_err());
        }
    }

    #[test]
    fn a_file_header_over_its_bound_is_refused_at_decode() {
        let key = AccountKey::from_seed([1; 32]);
        let terms = TxTerms {
            nonce: 0,
            fee: 1,
            valid_until: 5,
        };
        let order = |meta_len: usize| Call::DeclareFile {
            file_id: [1; 32],
            file_name: "a".into(),
            bucket: String::new(),
            size_bytes: 1,
            fragment_bytes: 1,
            tagger: [2; 32],
            segments: Vec::new(),
            meta: vec![3; meta_len],
        };
        let at_bound = Transaction::sign(&key, &[7; 32], terms, order(FILE_META_BYTES_MAX));
        assert_eq!(Transaction::decode(&at_bound.encode()), Ok(at_bound));
        let over = Transaction::sign(&key, &[7; 32], terms, order(FILE_META_BYTES_MAX + 1));
        assert!(Transaction::decode(&over.encode()).is_err());
    }

    /// A delegate's call wraps only the calls a gateway needs, one level deep: a nested
    /// `ForOwner` is refused by its kind byte before anything under it is read, so a
    /// transaction of nested wrappers costs no recursion.
    #[test]
    fn a_delegate_call_is_one_level_of_an_allowed_call() {
        let wrap = |call: Call| Call::ForOwner {
            owner: AccountId([3; 32]),
            call: Box::new(call),
        };
        let decode = |call: &Call| {
            let mut w = Writer::new();
            call.encode(&mut w);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            let call = Call::decode(&mut r)?;
            r.finish()?;
            Ok::<Call, DecodeError>(call)
        };
        let allowed = wrap(Call::CreateBucket { name: "b".into() });
        assert_eq!(decode(&allowed), Ok(allowed.clone()));
        assert_eq!(
            decode(&wrap(Call::Transfer {
                to: AccountId([1; 32]),
                amount: 1
            })),
            Err(DecodeError::Invalid("call a delegate may not make"))
        );
        assert_eq!(
            decode(&wrap(allowed)),
            Err(DecodeError::Invalid("call a delegate may not make"))
        );
        // 100,000 nested wrappers: refused at the second level.
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            bytes.push(26);
            bytes.extend_from_slice(&[3; 32]);
        }
        let mut r = Reader::new(&bytes);
        assert_eq!(
            Call::decode(&mut r),
            Err(DecodeError::Invalid("call a delegate may not make"))
        );
    }

    #[test]
    fn unknown_call_kind_is_refused() {
        let mut bytes = vec![0u8; 32 + 8 + 16 + 8];
        bytes.push(99);
        bytes.extend_from_slice(&[0; 64]);
        assert_eq!(
            Transaction::decode(&bytes),
            Err(DecodeError::Invalid("call kind"))
        );
    }
}
