//! PoDR²: publicly verifiable storage proofs on BLS12-381 (Shacham–Waters style).
//!
//! Not implemented yet: issue 5 fills this crate. It exports nothing, so nothing can
//! mistake it for a working prover or verifier.
#![forbid(unsafe_code)]
