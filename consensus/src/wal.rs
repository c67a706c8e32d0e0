//! The consensus write-ahead log: every input Malachite asks to log (the votes and proposals
//! this validator received and cast, the values proposed, the polka certificates, the step
//! timeouts that fired), so a validator that crashes in the middle of a height replays them on
//! restart, re-derives the votes it cast, re-sends them with the signatures it already gave,
//! and never signs a conflicting vote or proposal for a height and round it already voted in.
//!
//! Format: a 48-byte header (magic, version, the chain id), then records
//! `len: u32 LE | checksum: first 8 bytes of SHA-256(height ‖ entry) | height: u64 LE | entry`,
//! the entry one of [`WalEntry`]'s encodings (the network's bounded decoders for votes,
//! proposals and certificates).
//!
//! Order of writes (the driver's, see `net.rs` and `sim.rs`):
//! 1. Entries are buffered as the core emits them ([`Wal::append`]).
//! 2. Before the driver sends anything the core asked to send after an entry, the buffer is
//!    written and the file `fdatasync`ed ([`Wal::sync`]): a vote or proposal is durable before
//!    any peer can see it, and so is every input that led to it (they were logged before it).
//! 3. When a block is committed, the driver appends it to the block store (durable when that
//!    returns) and only then [`Wal::reset`]s the log to the next height: the entries of the
//!    committed height are no longer needed, since a restart resumes after that block.
//!
//! Crash argument: the file is only appended to between resets, and a sync covers every byte
//! before it, so every synced record precedes every unsynced byte; on open, the first record
//! that is cut short or fails its checksum is where the durable log ends, and it and
//! everything after it are dropped. A reset that a crash undoes, or half undoes, leaves records
//! of heights already in the block store; replay takes only the entries of the height after the
//! store's ([`Wal::open`]'s `from_height`), so they are skipped. Media damage in the middle of
//! the log cannot be told from a torn tail and loses the records after it (the block store's
//! checksums do not protect against that either; a mirrored disk does).

use crate::bft::{BlockHash, BlockValue, Cess, Height, MESSAGE_BYTES_MAX, NetMsg};
use crate::codec::{DecodeError, Reader, Writer};
use crate::keys::AccountId;
use crate::tx::Hash32;
use arc_malachitebft_core_consensus::{Input, ProposedValue};
use arc_malachitebft_core_types::{Timeout, TimeoutKind, Validity, ValueOrigin};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 12] = b"cess-wal\0\0\0\0";
const VERSION: u32 = 1;
pub const HEADER_BYTES: u64 = 12 + 4 + 32;
const RECORD_HEAD_BYTES: u64 = 4 + 8 + 8;
/// The largest entry: a proposal or a proposed value with a whole block.
const ENTRY_BYTES_MAX: u64 = MESSAGE_BYTES_MAX as u64 + 64;

/// An input to the consensus core worth logging: only the kinds Malachite logs (and can
/// replay) are representable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEntry(Input<Cess>);

impl WalEntry {
    /// The entry for an input Malachite asked to log, or `None` for a kind it never logs.
    pub(crate) fn from_input(input: Input<Cess>) -> Option<WalEntry> {
        match &input {
            Input::Vote(_)
            | Input::Proposal(_)
            | Input::PolkaCertificate(_)
            | Input::ProposedValue(..) => Some(WalEntry(input)),
            // Malachite logs the step timeouts only.
            Input::TimeoutElapsed(t) => match t.kind {
                TimeoutKind::Propose | TimeoutKind::Prevote | TimeoutKind::Precommit => {
                    Some(WalEntry(input))
                }
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn input(&self) -> &Input<Cess> {
        &self.0
    }

    pub(crate) fn into_input(self) -> Input<Cess> {
        self.0
    }

    pub fn kind(&self) -> &'static str {
        match &self.0 {
            Input::Vote(_) => "vote",
            Input::Proposal(_) => "proposal",
            Input::PolkaCertificate(_) => "polka",
            Input::TimeoutElapsed(_) => "timeout",
            Input::ProposedValue(..) => "proposed_value",
            _ => unreachable!("only loggable inputs are entries"),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match &self.0 {
            Input::Vote(v) => {
                w.u8(1).fixed(&NetMsg::Vote(v.clone()).encode());
            }
            Input::Proposal(p) => {
                w.u8(2).fixed(&NetMsg::Proposal(p.clone()).encode());
            }
            Input::PolkaCertificate(c) => {
                w.u8(3).fixed(&NetMsg::Polka(c.clone()).encode());
            }
            Input::TimeoutElapsed(t) => {
                w.u8(4)
                    .u8(match t.kind {
                        TimeoutKind::Propose => 1,
                        TimeoutKind::Prevote => 2,
                        TimeoutKind::Precommit => 3,
                        _ => unreachable!("only step timeouts are entries"),
                    })
                    .fixed(&crate::bft::round_bytes(t.round));
            }
            Input::ProposedValue(v, origin) => {
                w.u8(5)
                    .u64(v.height.0)
                    .fixed(&crate::bft::round_bytes(v.round))
                    .fixed(&crate::bft::round_bytes(v.valid_round))
                    .fixed(&v.proposer.0)
                    .bool(v.validity == Validity::Valid)
                    .bool(*origin == ValueOrigin::Sync)
                    .bytes(&v.value.block().encode());
            }
            _ => unreachable!("only loggable inputs are entries"),
        }
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<WalEntry, DecodeError> {
        let mut r = Reader::new(bytes);
        let message = |bytes: &[u8]| NetMsg::decode(bytes);
        let input = match r.u8("entry kind")? {
            1 => match message(&bytes[1..])? {
                NetMsg::Vote(v) => return Ok(WalEntry(Input::Vote(v))),
                _ => return Err(DecodeError::Invalid("vote entry")),
            },
            2 => match message(&bytes[1..])? {
                NetMsg::Proposal(p) => return Ok(WalEntry(Input::Proposal(p))),
                _ => return Err(DecodeError::Invalid("proposal entry")),
            },
            3 => match message(&bytes[1..])? {
                NetMsg::Polka(c) => return Ok(WalEntry(Input::PolkaCertificate(c))),
                _ => return Err(DecodeError::Invalid("polka entry")),
            },
            4 => {
                let kind = match r.u8("timeout kind")? {
                    1 => TimeoutKind::Propose,
                    2 => TimeoutKind::Prevote,
                    3 => TimeoutKind::Precommit,
                    _ => return Err(DecodeError::Invalid("timeout kind")),
                };
                let round = crate::bft::decode_round(&mut r, "timeout round")?;
                Input::TimeoutElapsed(Timeout::new(round, kind))
            }
            5 => {
                let height = Height(r.u64("height")?);
                let round = crate::bft::decode_round(&mut r, "round")?;
                let valid_round = crate::bft::decode_round(&mut r, "valid round")?;
                let proposer = AccountId(r.array("proposer")?);
                let validity = if r.bool("validity")? {
                    Validity::Valid
                } else {
                    Validity::Invalid
                };
                let origin = if r.bool("origin")? {
                    ValueOrigin::Sync
                } else {
                    ValueOrigin::Consensus
                };
                let value = BlockValue::decode(r.bytes(crate::bft::BLOCK_BYTES_MAX, "block")?)?;
                if value.block().height != height.0 {
                    return Err(DecodeError::Invalid(
                        "block height differs from the value's",
                    ));
                }
                Input::ProposedValue(
                    ProposedValue {
                        height,
                        round,
                        valid_round,
                        proposer,
                        value,
                        validity,
                    },
                    origin,
                )
            }
            _ => return Err(DecodeError::Invalid("entry kind")),
        };
        r.finish()?;
        Ok(WalEntry(input))
    }

    /// The block of a proposed value, with its id and validity.
    pub(crate) fn proposed_block(&self) -> Option<(BlockHash, &ProposedValue<Cess>)> {
        match &self.0 {
            Input::ProposedValue(v, _) => {
                Some((arc_malachitebft_core_types::Value::id(&v.value), v))
            }
            _ => None,
        }
    }
}

/// Where the log's bytes live: a file ([`FileMedium`]) or, in the simulator, a simulated disk
/// that loses what was not synced when its validator crashes.
pub trait WalMedium {
    fn read_all(&mut self) -> std::io::Result<Vec<u8>>;
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()>;
    fn set_len(&mut self, len_bytes: u64) -> std::io::Result<()>;
    /// Everything written before is durable when this returns.
    fn sync(&mut self) -> std::io::Result<()>;
}

/// The log in a file, locked against a second validator on the same directory.
#[derive(Debug)]
pub struct FileMedium {
    file: File,
}

impl FileMedium {
    pub fn open(path: &Path) -> Result<FileMedium, WalError> {
        match crate::store::open_locked(path) {
            Ok(file) => Ok(FileMedium { file }),
            Err(None) => Err(WalError::Locked {
                path: path.to_path_buf(),
            }),
            Err(Some(source)) => Err(WalError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

impl WalMedium for FileMedium {
    fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        self.file.seek(std::io::SeekFrom::Start(0))?;
        self.file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, bytes, offset)
    }

    fn set_len(&mut self, len_bytes: u64) -> std::io::Result<()> {
        self.file.set_len(len_bytes)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write-ahead log: {0}")]
    Medium(#[from] std::io::Error),
    #[error("{path}: in use by another process (a validator already runs on this directory)")]
    Locked { path: PathBuf },
    #[error("write-ahead log: not a write-ahead log (bad header)")]
    NotALog,
    #[error("write-ahead log: the log of another chain")]
    OtherChain,
    #[error(
        "write-ahead log: record at byte {offset} passes its checksum but does not decode: {source}"
    )]
    Undecodable { offset: u64, source: DecodeError },
}

/// Counters for operators and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    pub entries: u64,
    pub syncs: u64,
    pub bytes: u64,
}

/// The log: what is durable on its medium, and what is buffered to be.
#[derive(Debug)]
pub struct Wal<M> {
    medium: M,
    /// Where the next record goes.
    end: u64,
    /// Records appended since the last sync.
    buffer: Vec<u8>,
    stats: WalStats,
}

/// What opening found.
#[derive(Debug)]
pub struct Recovered {
    /// The entries of `from_height` and after, in the order they were logged.
    pub entries: Vec<(u64, WalEntry)>,
    /// Bytes of an incomplete tail dropped.
    pub torn_bytes: u64,
}

fn checksum(height: u64, entry: &[u8]) -> [u8; 8] {
    let mut hasher = Sha256::new();
    hasher.update(height.to_le_bytes());
    hasher.update(entry);
    hasher.finalize()[..8].try_into().expect("8 of 32 bytes")
}

impl<M: WalMedium> Wal<M> {
    /// Opens the log on `medium` for `chain_id`, returning the entries of heights
    /// `from_height` and up (the block store ends at `from_height − 1`). A torn tail is
    /// dropped; a new or empty medium gets a header.
    pub fn open(
        mut medium: M,
        chain_id: &Hash32,
        from_height: u64,
    ) -> Result<(Wal<M>, Recovered), WalError> {
        let bytes = medium.read_all()?;
        let len = bytes.len() as u64;
        if len < HEADER_BYTES {
            // New, or a crash before the header was durable: nothing was logged yet.
            let mut header = Vec::with_capacity(HEADER_BYTES as usize);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&VERSION.to_le_bytes());
            header.extend_from_slice(chain_id);
            medium.set_len(0)?;
            medium.write_at(0, &header)?;
            medium.sync()?;
            let wal = Wal {
                medium,
                end: HEADER_BYTES,
                buffer: Vec::new(),
                stats: WalStats::default(),
            };
            let recovered = Recovered {
                entries: Vec::new(),
                torn_bytes: len,
            };
            return Ok((wal, recovered));
        }
        if &bytes[..12] != MAGIC || bytes[12..16] != VERSION.to_le_bytes() {
            return Err(WalError::NotALog);
        }
        if bytes[16..48] != chain_id[..] {
            return Err(WalError::OtherChain);
        }
        let mut entries = Vec::new();
        let mut at = HEADER_BYTES;
        let good_end = loop {
            let head_end = at + RECORD_HEAD_BYTES;
            if head_end > len {
                break at;
            }
            let head = &bytes[at as usize..head_end as usize];
            let entry_len = u64::from(u32::from_le_bytes(head[..4].try_into().expect("4")));
            if entry_len > ENTRY_BYTES_MAX || head_end + entry_len > len {
                break at;
            }
            let height = u64::from_le_bytes(head[12..20].try_into().expect("8"));
            let entry = &bytes[head_end as usize..(head_end + entry_len) as usize];
            if head[4..12] != checksum(height, entry) {
                break at;
            }
            if height >= from_height {
                let entry = WalEntry::decode(entry)
                    .map_err(|source| WalError::Undecodable { offset: at, source })?;
                entries.push((height, entry));
            }
            at = head_end + entry_len;
        };
        let torn_bytes = len - good_end;
        if torn_bytes > 0 {
            medium.set_len(good_end)?;
            medium.sync()?;
        }
        let wal = Wal {
            medium,
            end: good_end,
            buffer: Vec::new(),
            stats: WalStats::default(),
        };
        Ok((
            wal,
            Recovered {
                entries,
                torn_bytes,
            },
        ))
    }

    /// Buffers an entry of `height`; durable at the next [`Wal::sync`].
    pub fn append(&mut self, height: u64, entry: &WalEntry) {
        let encoded = entry.encode();
        assert!(
            encoded.len() as u64 <= ENTRY_BYTES_MAX,
            "a log entry within its bound"
        );
        self.buffer
            .extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        self.buffer.extend_from_slice(&checksum(height, &encoded));
        self.buffer.extend_from_slice(&height.to_le_bytes());
        self.buffer.extend_from_slice(&encoded);
        self.stats.entries += 1;
    }

    /// Entries are buffered that are not durable yet.
    pub fn is_dirty(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Writes the buffered entries and makes them durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.medium.write_at(self.end, &self.buffer)?;
        self.medium.sync()?;
        self.end += self.buffer.len() as u64;
        self.stats.bytes += self.buffer.len() as u64;
        self.stats.syncs += 1;
        self.buffer.clear();
        Ok(())
    }

    /// Writes the buffered entries without syncing them: what a process that dies between
    /// `write` and `fdatasync` leaves (the simulator's crash model).
    pub fn write_buffered(&mut self) -> Result<(), WalError> {
        self.medium.write_at(self.end, &self.buffer)?;
        self.end += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Drops every entry: called once the block of the height they were for is durable in the
    /// block store. Not synced itself: until the next sync, a crash may keep the old entries,
    /// which are of a stored height and skipped on open.
    pub fn reset(&mut self) -> Result<(), WalError> {
        self.buffer.clear();
        if self.end > HEADER_BYTES {
            self.medium.set_len(HEADER_BYTES)?;
            self.end = HEADER_BYTES;
        }
        Ok(())
    }

    pub fn stats(&self) -> WalStats {
        self.stats
    }

    pub fn medium_mut(&mut self) -> &mut M {
        &mut self.medium
    }

    pub fn into_medium(self) -> M {
        self.medium
    }

    /// The log's size on its medium, header included (tests, operators).
    pub fn len_bytes(&self) -> u64 {
        self.end
    }
}

/// A simulated disk for the log: bytes written since the last sync are lost, wholly or in part
/// (a prefix of the writes, the last one possibly torn), when its validator crashes.
#[derive(Debug, Clone, Default)]
pub struct SimMedium {
    /// What a crash now would leave.
    durable: Vec<u8>,
    /// What a reader sees (durable plus the unsynced writes).
    current: Vec<u8>,
    /// Writes since the last sync, in order: `(offset, bytes)`, a `set_len` as `(len, None)`.
    unsynced: Vec<(u64, Option<Vec<u8>>)>,
}

impl SimMedium {
    /// The medium after a crash: the durable image with the first `kept` of the unsynced writes
    /// applied, the last of them cut to `torn_permille` of its bytes.
    pub fn crash(&mut self, kept: usize, torn_permille: u32) {
        let kept = kept.min(self.unsynced.len());
        let mut image = std::mem::take(&mut self.durable);
        for (i, (at, write)) in self.unsynced.drain(..).take(kept).enumerate() {
            match write {
                None => image.truncate(at as usize),
                Some(bytes) => {
                    let cut = if i + 1 == kept {
                        bytes.len() * torn_permille.min(1000) as usize / 1000
                    } else {
                        bytes.len()
                    };
                    let end = at as usize + cut;
                    if image.len() < end {
                        image.resize(end, 0);
                    }
                    image[at as usize..end].copy_from_slice(&bytes[..cut]);
                }
            }
        }
        self.current = image.clone();
        self.durable = image;
    }

    /// Writes not yet synced.
    pub fn unsynced_writes(&self) -> usize {
        self.unsynced.len()
    }
}

impl WalMedium for SimMedium {
    fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        Ok(self.current.clone())
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        let end = offset as usize + bytes.len();
        if self.current.len() < end {
            self.current.resize(end, 0);
        }
        self.current[offset as usize..end].copy_from_slice(bytes);
        self.unsynced.push((offset, Some(bytes.to_vec())));
        Ok(())
    }

    fn set_len(&mut self, len_bytes: u64) -> std::io::Result<()> {
        self.current.resize(len_bytes as usize, 0);
        self.unsynced.push((len_bytes, None));
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.durable = self.current.clone();
        self.unsynced.clear();
        Ok(())
    }
}

/// The log of a validator's data directory.
pub fn open_file(
    path: &Path,
    chain_id: &Hash32,
    from_height: u64,
) -> Result<(Wal<FileMedium>, Recovered), WalError> {
    let medium = FileMedium::open(path)?;
    Wal::open(medium, chain_id, from_height).map_err(|e| match e {
        WalError::Medium(source) => WalError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bft::Vote;
    use crate::keys::ValidatorKey;
    use arc_malachitebft_core_types::{NilOrVal, Round, SignedMessage, VoteType};

    const CHAIN: Hash32 = [9; 32];

    fn timeout(round: u32, kind: TimeoutKind) -> WalEntry {
        WalEntry::from_input(Input::TimeoutElapsed(Timeout::new(Round::new(round), kind)))
            .expect("a step timeout is logged")
    }

    fn vote(height: u64, round: u32) -> WalEntry {
        let key = ValidatorKey::from_seed(&[3; 32]);
        let vote = Vote {
            height: Height(height),
            round: Round::new(round),
            value: NilOrVal::Val(BlockHash([height as u8; 32])),
            kind: VoteType::Precommit,
            validator: AccountId([4; 32]),
        };
        let signature = Cess { chain_id: CHAIN }.sign_vote(&key, &vote);
        WalEntry::from_input(Input::Vote(SignedMessage::new(vote, signature)))
            .expect("a vote is logged")
    }

    fn entries_of(height: u64) -> Vec<WalEntry> {
        vec![
            timeout(0, TimeoutKind::Propose),
            vote(height, 0),
            timeout(1, TimeoutKind::Prevote),
            vote(height, 1),
            timeout(1, TimeoutKind::Precommit),
        ]
    }

    #[test]
    fn every_entry_kind_round_trips_and_others_are_not_logged() {
        for entry in entries_of(3) {
            assert_eq!(WalEntry::decode(&entry.encode()).unwrap(), entry);
        }
        let rebroadcast =
            Input::TimeoutElapsed(Timeout::new(Round::new(0), TimeoutKind::Rebroadcast));
        assert!(WalEntry::from_input(rebroadcast).is_none());
        assert!(WalEntry::decode(&[4, 4, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(WalEntry::decode(&[]).is_err());
    }

    #[test]
    fn synced_entries_come_back_and_unsynced_ones_do_not() {
        let (mut wal, recovered) = Wal::open(SimMedium::default(), &CHAIN, 5).unwrap();
        assert!(recovered.entries.is_empty());
        for entry in entries_of(5) {
            wal.append(5, &entry);
        }
        wal.sync().unwrap();
        wal.append(5, &timeout(2, TimeoutKind::Propose));
        // Died between write and sync, the write lost entirely.
        wal.write_buffered().unwrap();
        let mut medium = wal.into_medium();
        medium.crash(0, 0);
        let (_, recovered) = Wal::open(medium, &CHAIN, 5).unwrap();
        let got: Vec<WalEntry> = recovered.entries.into_iter().map(|(_, e)| e).collect();
        assert_eq!(got, entries_of(5));
    }

    /// A write cut anywhere (a crash during the write of the last records) loses only what was
    /// not synced: the synced entries come back whole, the torn tail is dropped, and the log
    /// goes on after it.
    #[test]
    fn a_torn_tail_at_every_cut_is_dropped() {
        let (mut wal, _) = Wal::open(SimMedium::default(), &CHAIN, 1).unwrap();
        wal.append(1, &vote(1, 0));
        wal.sync().unwrap();
        let synced_len = wal.len_bytes();
        wal.append(1, &vote(1, 1));
        wal.append(1, &timeout(1, TimeoutKind::Prevote));
        wal.write_buffered().unwrap();
        let unsynced_len = wal.len_bytes() - synced_len;
        let medium = wal.into_medium();
        for permille in 0..=1000 {
            let mut crashed = medium.clone();
            crashed.crash(1, permille);
            let (mut wal, recovered) = Wal::open(crashed, &CHAIN, 1).unwrap();
            let kept = unsynced_len * permille as u64 / 1000;
            let whole = if kept == unsynced_len {
                3
            } else if kept >= wal_record_len(&vote(1, 1)) {
                2
            } else {
                1
            };
            assert_eq!(recovered.entries.len(), whole, "cut at {permille}‰");
            assert_eq!(recovered.entries[0].1, vote(1, 0));
            // Appends go after the good records.
            wal.append(1, &timeout(3, TimeoutKind::Propose));
            wal.sync().unwrap();
            let (_, again) = Wal::open(wal.into_medium(), &CHAIN, 1).unwrap();
            assert_eq!(again.entries.len(), whole + 1);
            assert_eq!(again.torn_bytes, 0);
        }
    }

    fn wal_record_len(entry: &WalEntry) -> u64 {
        RECORD_HEAD_BYTES + entry.encode().len() as u64
    }

    /// A reset the crash undid (or half did) leaves the records of the stored height, which
    /// are skipped; the next height's synced records are never lost.
    #[test]
    fn a_reset_undone_by_a_crash_leaves_only_stale_entries() {
        let (mut wal, _) = Wal::open(SimMedium::default(), &CHAIN, 7).unwrap();
        for entry in entries_of(7) {
            wal.append(7, &entry);
        }
        wal.sync().unwrap();
        // Block 7 is stored; the log moves on to height 8.
        wal.reset().unwrap();
        wal.append(8, &vote(8, 0));
        wal.write_buffered().unwrap();
        let medium = wal.into_medium();
        for kept in 0..=2 {
            for permille in [0, 300, 1000] {
                let mut crashed = medium.clone();
                crashed.crash(kept, permille);
                let (_, recovered) = Wal::open(crashed, &CHAIN, 8).unwrap();
                assert!(
                    recovered.entries.iter().all(|(h, _)| *h == 8),
                    "kept {kept}, cut {permille}"
                );
            }
        }
        // Synced after the reset: height 8's entry survives any crash.
        let mut medium = medium;
        medium.crash(0, 0);
        let (mut wal, _) = Wal::open(medium, &CHAIN, 8).unwrap();
        wal.append(8, &vote(8, 0));
        wal.sync().unwrap();
        let mut medium = wal.into_medium();
        medium.crash(0, 0);
        let (_, recovered) = Wal::open(medium, &CHAIN, 8).unwrap();
        assert_eq!(recovered.entries.len(), 1);
    }

    #[test]
    fn another_chain_or_another_file_is_refused() {
        let (wal, _) = Wal::open(SimMedium::default(), &CHAIN, 1).unwrap();
        let medium = wal.into_medium();
        assert!(matches!(
            Wal::open(medium.clone(), &[1; 32], 1),
            Err(WalError::OtherChain)
        ));
        let mut other = SimMedium::default();
        other.write_at(0, &[0x55; 64]).unwrap();
        assert!(matches!(
            Wal::open(other, &CHAIN, 1),
            Err(WalError::NotALog)
        ));
    }

    #[test]
    fn a_file_log_is_locked_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("cess-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wal");
        let (mut wal, _) = open_file(&path, &CHAIN, 2).unwrap();
        assert!(matches!(
            open_file(&path, &CHAIN, 2),
            Err(WalError::Locked { .. })
        ));
        for entry in entries_of(2) {
            wal.append(2, &entry);
        }
        wal.sync().unwrap();
        drop(wal);
        let (_, recovered) = open_file(&path, &CHAIN, 2).unwrap();
        assert_eq!(recovered.entries.len(), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
