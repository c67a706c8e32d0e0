//! Untrusted bytes from the wire: a frame of every message kind, then the verifier on whatever
//! decodes. Nothing may panic; a decoded frame re-encodes to a frame that decodes the same.
#![no_main]

use cess_transport::message::{decode_frame, encode_frame};
use cess_transport::{Verifier, pb};
use libfuzzer_sys::fuzz_target;

fn check<M: cess_transport::message::Signed + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(message) = decode_frame::<M>(data) {
        let again: M = decode_frame(&encode_frame(&message)).expect("re-encoded frame decodes");
        assert_eq!(again, message);
        let _ = Verifier::new(30_000, 16).verify(&message, 1_790_000_000_000);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.first_chunk::<4>() {
        let _ = cess_transport::message::frame_len(*prefix);
    }
    check::<pb::WritefileRequest>(data);
    check::<pb::WritefileResponse>(data);
    check::<pb::ReadfileRequest>(data);
    check::<pb::ReadfileResponse>(data);
    check::<pb::TagRequest>(data);
    check::<pb::TagResponse>(data);
});
