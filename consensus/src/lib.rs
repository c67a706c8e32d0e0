//! The ledger state machine, audits, R²S validator rotation and BFT finality.
//!
//! Not implemented yet: issue 7 fills this crate. It exports nothing, so nothing can
//! mistake it for a working ledger.
#![forbid(unsafe_code)]
