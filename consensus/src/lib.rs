//! The ledger state machine, audits, R²S validator rotation, the BLS VRF and BFT finality.
//!
//! Everything here is a state machine: time, randomness and messages come in as arguments,
//! nothing does I/O, except the drivers: [`store`] (committed blocks on disk), [`checkpoint`]
//! (the ledger on disk every so many blocks), [`wal`] (the consensus log) and `net` (QUIC,
//! feature `quic`). The validator program (`cess validator run`) drives it.
#![forbid(unsafe_code)]

pub mod bft;
pub mod checkpoint;
pub mod codec;
pub mod follow;
pub mod keys;
pub mod ledger;
pub mod light;
#[cfg(feature = "quic")]
pub mod net;
pub mod sim;
#[cfg(feature = "quic")]
pub mod statesync;
pub mod store;
pub mod tx;
pub mod vrf;
pub mod wal;

pub use keys::{AccountId, AccountKey, ValidatorKey, ValidatorPublicKey, ValidatorSignature};
pub use ledger::{BlockInfo, BlockOutcome, Event, Genesis, Ledger, LedgerParams, TxError};
pub use tx::{Call, FragmentId, Transaction};
