//! Messages between validators, in the ledger's canonical encoding. Every field is bounded
//! and checked when decoded (signatures and keys on the curve and in the subgroup, rounds in
//! range, blocks within their limits); signatures are verified by the consensus core.

use super::types::{
    Block, BlockHash, BlockHeader, BlockValue, Cess, CommitRecord, Height, Proposal,
    VALIDATORS_MAX, Vote, round_bytes,
};
use crate::codec::{DecodeError, Reader, Writer};
use crate::keys::{AccountId, ValidatorSignature};
use crate::tx::Transaction;
use arc_malachitebft_core_types::{
    NilOrVal, PolkaCertificate, PolkaSignature, Round, RoundCertificate, RoundCertificateType,
    RoundSignature, SignedProposal, SignedVote, VoteType,
};

/// Most transactions one message relays.
pub const TXS_PER_MESSAGE_MAX: usize = 4096;

/// Largest message: a full block plus its proposal header.
pub const MESSAGE_BYTES_MAX: usize = super::types::BLOCK_BYTES_MAX + 4096;

/// A header's bound: its fixed fields, a full next set and a full last commit, with room.
pub const HEADER_BYTES_MAX: usize = 64 << 10;
const _: () = assert!(
    HEADER_BYTES_MAX
        >= 256
            + VALIDATORS_MAX * (32 + crate::keys::VALIDATOR_KEY_BYTES)
            + VALIDATORS_MAX * (32 + crate::keys::VALIDATOR_SIGNATURE_BYTES)
);

/// A checkpoint travels in chunks of at most this many bytes, and is at most
/// [`CHECKPOINT_BYTES_MAX`] in all (what a node fetching one holds in memory).
pub const CHECKPOINT_CHUNK_BYTES: usize = 1 << 20;
pub const CHECKPOINT_BYTES_MAX: u64 = 1 << 30;

/// Most blocks one sync request asks for (a validator catching up keeps about one and a half
/// such batches in flight instead of one block per round trip).
pub const SYNC_BATCH_MAX: u32 = 64;

/// Most encoded transaction bytes one relay carries (with their length prefixes and the
/// message header, well within [`MESSAGE_BYTES_MAX`]).
pub const RELAY_TX_BYTES_MAX: usize = 8 << 20;

/// Transactions in relay messages, each within [`TXS_PER_MESSAGE_MAX`] transactions and
/// [`RELAY_TX_BYTES_MAX`] bytes, in order.
pub fn split_txs(txs: Vec<Transaction>) -> Vec<Vec<Transaction>> {
    const _: () = assert!(crate::tx::TX_BYTES_MAX <= RELAY_TX_BYTES_MAX);
    const _: () = assert!(
        RELAY_TX_BYTES_MAX + 4 * TXS_PER_MESSAGE_MAX + 64 <= MESSAGE_BYTES_MAX,
        "a full relay fits a message"
    );
    let mut chunks = Vec::new();
    let mut chunk: Vec<Transaction> = Vec::new();
    let mut bytes = 0;
    for tx in txs {
        let len = tx.encoded_len();
        if !chunk.is_empty()
            && (chunk.len() == TXS_PER_MESSAGE_MAX || bytes + len > RELAY_TX_BYTES_MAX)
        {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += len;
        chunk.push(tx);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMsg {
    /// A signed proposal carrying its whole block.
    Proposal(SignedProposal<Cess>),
    Vote(SignedVote<Cess>),
    /// Transactions for the mempools (at most [`TXS_PER_MESSAGE_MAX`]).
    Txs(Vec<Transaction>),
    /// "Send me the blocks decided from this height on, up to `count` of them" (1 to
    /// [`SYNC_BATCH_MAX`]; the answerer may send fewer: those it has, within its bounds), each
    /// as its own `SyncResponse`, in height order.
    SyncRequest {
        height: u64,
        count: u32,
    },
    /// A decided block and the precommits that decided it.
    SyncResponse {
        block: Box<Block>,
        commit: CommitRecord,
    },
    /// The answer to a `SyncRequest` above what the validator has decided: its height. A
    /// follower learns it is at the tip without waiting for a timeout (and how far behind it
    /// is, as far as that validator says).
    Tip {
        height: u64,
    },
    /// "Send me the headers of the blocks at `height`, `height + step`, … (`count` of them,
    /// 1 to [`SYNC_BATCH_MAX`])": how a node without the state follows the validator sets
    /// era by era ([`crate::light`]). Answered with a `HeaderResponse` each, in order, and
    /// the tip when cut short by it.
    HeaderRequest {
        height: u64,
        step: u64,
        count: u32,
    },
    /// A decided block's header and the precommits that decided it.
    HeaderResponse {
        header: Box<BlockHeader>,
        commit: CommitRecord,
    },
    /// "Send me your latest checkpoint's bytes from `offset`."
    CheckpointRequest {
        offset: u64,
    },
    /// Part of the answerer's latest checkpoint ([`crate::checkpoint`]): at most
    /// [`CHECKPOINT_CHUNK_BYTES`] from `offset` of its `total_bytes` (at most
    /// [`CHECKPOINT_BYTES_MAX`]); `height` says which checkpoint (none: 0 and no bytes).
    CheckpointChunk {
        height: u64,
        total_bytes: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// 2f+1 prevotes for one block in one round, delivered together so a validator that
    /// missed some of them can still follow a re-proposal of a locked block.
    Polka(PolkaCertificate<Cess>),
    /// The votes that justify moving to a round (f+1 of a higher round, or 2f+1 precommits).
    RoundCertificate(RoundCertificate<Cess>),
}

impl NetMsg {
    pub fn kind(&self) -> &'static str {
        match self {
            NetMsg::Proposal(_) => "proposal",
            NetMsg::Vote(_) => "vote",
            NetMsg::Txs(_) => "txs",
            NetMsg::SyncRequest { .. } => "sync_request",
            NetMsg::SyncResponse { .. } => "sync_response",
            NetMsg::Tip { .. } => "tip",
            NetMsg::HeaderRequest { .. } => "header_request",
            NetMsg::HeaderResponse { .. } => "header_response",
            NetMsg::CheckpointRequest { .. } => "checkpoint_request",
            NetMsg::CheckpointChunk { .. } => "checkpoint_chunk",
            NetMsg::Polka(_) => "polka_certificate",
            NetMsg::RoundCertificate(_) => "round_certificate",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            NetMsg::Proposal(signed) => {
                let p = &signed.message;
                w.u8(1)
                    .u64(p.height.0)
                    .fixed(&round_bytes(p.round))
                    .fixed(&round_bytes(p.pol_round))
                    .fixed(&p.proposer.0)
                    .bytes(&p.value.block().encode())
                    .fixed(&signed.signature.to_bytes());
            }
            NetMsg::Vote(signed) => {
                let v = &signed.message;
                w.u8(2)
                    .u8(vote_type_byte(v.kind))
                    .u64(v.height.0)
                    .fixed(&round_bytes(v.round));
                encode_nil_or_val(&mut w, &v.value);
                w.fixed(&v.validator.0).fixed(&signed.signature.to_bytes());
            }
            NetMsg::Txs(txs) => {
                w.u8(3);
                crate::tx::encode_list(txs, &mut w);
            }
            NetMsg::SyncRequest { height, count } => {
                w.u8(4).u64(*height).u32(*count);
            }
            NetMsg::SyncResponse { block, commit } => {
                w.u8(5).bytes(&block.encode());
                commit.encode(&mut w);
            }
            NetMsg::Tip { height } => {
                w.u8(8).u64(*height);
            }
            NetMsg::HeaderRequest {
                height,
                step,
                count,
            } => {
                w.u8(9).u64(*height).u64(*step).u32(*count);
            }
            NetMsg::HeaderResponse { header, commit } => {
                w.u8(10).bytes(&header.encode());
                commit.encode(&mut w);
            }
            NetMsg::CheckpointRequest { offset } => {
                w.u8(11).u64(*offset);
            }
            NetMsg::CheckpointChunk {
                height,
                total_bytes,
                offset,
                bytes,
            } => {
                w.u8(12)
                    .u64(*height)
                    .u64(*total_bytes)
                    .u64(*offset)
                    .bytes(bytes);
            }
            NetMsg::Polka(cert) => {
                w.u8(6)
                    .u64(cert.height.0)
                    .fixed(&round_bytes(cert.round))
                    .fixed(&cert.value_id.0)
                    .count(cert.polka_signatures.len());
                for s in &cert.polka_signatures {
                    w.fixed(&s.address.0).fixed(&s.signature.to_bytes());
                }
            }
            NetMsg::RoundCertificate(cert) => {
                w.u8(7)
                    .u64(cert.height.0)
                    .fixed(&round_bytes(cert.round))
                    .u8(match cert.cert_type {
                        RoundCertificateType::Skip => 1,
                        RoundCertificateType::Precommit => 2,
                    })
                    .count(cert.round_signatures.len());
                for s in &cert.round_signatures {
                    w.u8(vote_type_byte(s.vote_type));
                    encode_nil_or_val(&mut w, &s.value_id);
                    w.fixed(&s.address.0).fixed(&s.signature.to_bytes());
                }
            }
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<NetMsg, DecodeError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(DecodeError::TooLong {
                what: "message",
                len: bytes.len() as u64,
                max: MESSAGE_BYTES_MAX as u64,
            });
        }
        let mut r = Reader::new(bytes);
        let msg = match r.u8("message kind")? {
            1 => {
                let height = Height(r.u64("height")?);
                let round = decode_round(&mut r, "round")?;
                let pol_round = decode_round(&mut r, "pol round")?;
                if round.is_nil() {
                    return Err(DecodeError::Invalid("proposal round is nil"));
                }
                let proposer = AccountId(r.array("proposer")?);
                let value = BlockValue::decode(r.bytes(super::types::BLOCK_BYTES_MAX, "block")?)?;
                if value.block().height != height.0 {
                    return Err(DecodeError::Invalid(
                        "block height differs from the proposal's",
                    ));
                }
                let signature = ValidatorSignature::decode(&r.array("signature")?)?;
                NetMsg::Proposal(SignedProposal::new(
                    Proposal {
                        height,
                        round,
                        pol_round,
                        value,
                        proposer,
                    },
                    signature,
                ))
            }
            2 => {
                let kind = decode_vote_type(&mut r)?;
                let height = Height(r.u64("height")?);
                let round = decode_defined_round(&mut r)?;
                let value = decode_nil_or_val(&mut r)?;
                let validator = AccountId(r.array("validator")?);
                let signature = ValidatorSignature::decode(&r.array("signature")?)?;
                NetMsg::Vote(SignedVote::new(
                    Vote {
                        height,
                        round,
                        value,
                        kind,
                        validator,
                    },
                    signature,
                ))
            }
            3 => NetMsg::Txs(crate::tx::decode_list(&mut r, TXS_PER_MESSAGE_MAX)?),
            4 => {
                let height = r.u64("height")?;
                let count = r.u32("sync count")?;
                if count == 0 || count > SYNC_BATCH_MAX {
                    return Err(DecodeError::Invalid("sync count"));
                }
                NetMsg::SyncRequest { height, count }
            }
            5 => {
                let block = Block::decode(r.bytes(super::types::BLOCK_BYTES_MAX, "block")?)?;
                let commit = CommitRecord::decode(&mut r)?;
                NetMsg::SyncResponse {
                    block: Box::new(block),
                    commit,
                }
            }
            6 => {
                let height = Height(r.u64("height")?);
                let round = decode_defined_round(&mut r)?;
                let value_id = BlockHash(r.array("polka value")?);
                let count = r.count(VALIDATORS_MAX, 32 + 96, "polka signatures")?;
                let mut polka_signatures = Vec::with_capacity(count);
                for _ in 0..count {
                    polka_signatures.push(PolkaSignature::new(
                        AccountId(r.array("polka signer")?),
                        ValidatorSignature::decode(&r.array("polka signature")?)?,
                    ));
                }
                NetMsg::Polka(PolkaCertificate {
                    height,
                    round,
                    value_id,
                    polka_signatures,
                })
            }
            7 => {
                let height = Height(r.u64("height")?);
                let round = decode_defined_round(&mut r)?;
                let cert_type = match r.u8("certificate type")? {
                    1 => RoundCertificateType::Skip,
                    2 => RoundCertificateType::Precommit,
                    _ => return Err(DecodeError::Invalid("certificate type")),
                };
                let count = r.count(VALIDATORS_MAX, 1 + 1 + 32 + 96, "round signatures")?;
                let mut round_signatures = Vec::with_capacity(count);
                for _ in 0..count {
                    let vote_type = decode_vote_type(&mut r)?;
                    let value_id = decode_nil_or_val(&mut r)?;
                    round_signatures.push(RoundSignature::new(
                        vote_type,
                        value_id,
                        AccountId(r.array("round signer")?),
                        ValidatorSignature::decode(&r.array("round signature")?)?,
                    ));
                }
                NetMsg::RoundCertificate(RoundCertificate {
                    height,
                    round,
                    cert_type,
                    round_signatures,
                })
            }
            8 => NetMsg::Tip {
                height: r.u64("tip height")?,
            },
            9 => {
                let height = r.u64("header height")?;
                let step = r.u64("header step")?;
                let count = r.u32("header count")?;
                if step == 0 || count == 0 || count > SYNC_BATCH_MAX {
                    return Err(DecodeError::Invalid("header request"));
                }
                NetMsg::HeaderRequest {
                    height,
                    step,
                    count,
                }
            }
            10 => {
                let bytes = r.bytes(HEADER_BYTES_MAX, "header")?;
                let mut header_reader = Reader::new(bytes);
                let header = BlockHeader::decode(&mut header_reader)?;
                header_reader.finish()?;
                let commit = CommitRecord::decode(&mut r)?;
                NetMsg::HeaderResponse {
                    header: Box::new(header),
                    commit,
                }
            }
            11 => NetMsg::CheckpointRequest {
                offset: r.u64("checkpoint offset")?,
            },
            12 => {
                let height = r.u64("checkpoint height")?;
                let total_bytes = r.u64("checkpoint bytes")?;
                let offset = r.u64("checkpoint offset")?;
                let bytes = r
                    .bytes(CHECKPOINT_CHUNK_BYTES, "checkpoint chunk")?
                    .to_vec();
                if total_bytes > CHECKPOINT_BYTES_MAX
                    || offset
                        .checked_add(bytes.len() as u64)
                        .is_none_or(|end| end > total_bytes)
                {
                    return Err(DecodeError::Invalid("checkpoint chunk"));
                }
                NetMsg::CheckpointChunk {
                    height,
                    total_bytes,
                    offset,
                    bytes,
                }
            }
            _ => return Err(DecodeError::Invalid("message kind")),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn vote_type_byte(kind: VoteType) -> u8 {
    match kind {
        VoteType::Prevote => 1,
        VoteType::Precommit => 2,
    }
}

fn decode_vote_type(r: &mut Reader<'_>) -> Result<VoteType, DecodeError> {
    match r.u8("vote type")? {
        1 => Ok(VoteType::Prevote),
        2 => Ok(VoteType::Precommit),
        _ => Err(DecodeError::Invalid("vote type")),
    }
}

fn encode_nil_or_val(w: &mut Writer, value: &NilOrVal<BlockHash>) {
    match value {
        NilOrVal::Nil => w.u8(0),
        NilOrVal::Val(hash) => w.u8(1).fixed(&hash.0),
    };
}

fn decode_nil_or_val(r: &mut Reader<'_>) -> Result<NilOrVal<BlockHash>, DecodeError> {
    match r.u8("vote value flag")? {
        0 => Ok(NilOrVal::Nil),
        1 => Ok(NilOrVal::Val(BlockHash(r.array("vote value")?))),
        _ => Err(DecodeError::Invalid("vote value flag")),
    }
}

fn decode_defined_round(r: &mut Reader<'_>) -> Result<Round, DecodeError> {
    let round = decode_round(r, "round")?;
    if round.is_nil() {
        return Err(DecodeError::Invalid("round is nil"));
    }
    Ok(round)
}

pub(crate) fn decode_round(r: &mut Reader<'_>, what: &'static str) -> Result<Round, DecodeError> {
    let value = i64::from_le_bytes(r.array(what)?);
    match value {
        -1 => Ok(Round::Nil),
        0..=0xFFFF_FFFF => Ok(Round::new(value as u32)),
        _ => Err(DecodeError::Invalid(what)),
    }
}
