//! Node identity, QUIC endpoints and the signed fragment protocol.
//!
//! Not implemented yet: issue 4 fills this crate. It exports nothing, so nothing can
//! mistake it for a working transport.
#![forbid(unsafe_code)]
