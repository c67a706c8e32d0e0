//! The ledger state machine, audits, R²S validator rotation, the BLS VRF and BFT finality.
//!
//! Everything here is a state machine: time, randomness and messages come in as arguments,
//! nothing does I/O. The validator program (`cess validator run`) drives it over QUIC.
#![forbid(unsafe_code)]

pub mod bft;
pub mod codec;
pub mod follow;
pub mod keys;
pub mod ledger;
#[cfg(feature = "quic")]
pub mod net;
pub mod sim;
pub mod tx;
pub mod vrf;

pub use keys::{AccountId, AccountKey, ValidatorKey, ValidatorPublicKey, ValidatorSignature};
pub use ledger::{BlockInfo, BlockOutcome, Event, Genesis, Ledger, LedgerParams, TxError};
pub use tx::{Call, Transaction};
