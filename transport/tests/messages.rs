//! Message round trips and every refusal the protocol promises.

use cess_transport::message::{
    self, CHUNK_BYTES_MAX, FRAME_BYTES_MAX, MessageError, decode_frame, encode_frame, sign,
};
use cess_transport::{NodeAddr, NodeKey, Verifier, pb};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NOW: i64 = 1_790_000_000_000;
const WINDOW: i64 = 30_000;

fn write_request(key: &NodeKey, id: u8, data: &[u8]) -> pb::WritefileRequest {
    let mut m = pb::WritefileRequest {
        message_data: None,
        file_id: vec![1; 32],
        fragment_id: vec![2; 32],
        offset: 0,
        data: data.to_vec(),
        fragment_bytes: 8 << 20,
        payload_bytes: 0,
        grant: None,
    };
    sign(&mut m, key, NOW, [id; 16]);
    m
}

#[test]
fn a_signed_message_round_trips_and_names_its_author() {
    let key = NodeKey::generate();
    let m = write_request(&key, 1, b"hello");
    let frame = encode_frame(&m);
    let back: pb::WritefileRequest = decode_frame(&frame).unwrap();
    assert_eq!(back, m);
    let mut v = Verifier::new(WINDOW, 1000);
    assert_eq!(v.verify(&back, NOW + 5).unwrap(), key.peer_id());
}

#[test]
fn tampering_anywhere_breaks_the_signature() {
    let key = NodeKey::generate();
    let m = write_request(&key, 2, b"payload");
    let mut v = Verifier::new(WINDOW, 1000);
    let mut body = m.clone();
    body.data[0] ^= 1;
    assert_eq!(v.verify(&body, NOW), Err(MessageError::BadSignature));
    let mut offset = m.clone();
    offset.offset = 1;
    assert_eq!(v.verify(&offset, NOW), Err(MessageError::BadSignature));
    let mut time = m.clone();
    time.message_data.as_mut().unwrap().timestamp_ms += 1;
    assert_eq!(v.verify(&time, NOW), Err(MessageError::BadSignature));
    // Same fields under another kind: the kind is signed too.
    let read = pb::ReadfileRequest {
        message_data: m.message_data.clone(),
        file_id: m.file_id.clone(),
        fragment_id: m.fragment_id.clone(),
        offset: 0,
    };
    assert_eq!(v.verify(&read, NOW), Err(MessageError::BadSignature));
    assert!(v.verify(&m, NOW).is_ok());
}

#[test]
fn a_foreign_key_or_peer_id_is_refused() {
    let key = NodeKey::generate();
    let other = NodeKey::generate();
    let mut v = Verifier::new(WINDOW, 1000);
    let mut m = write_request(&key, 3, b"x");
    m.message_data.as_mut().unwrap().node_id = other.peer_id().to_base58();
    assert!(matches!(
        v.verify(&m, NOW),
        Err(MessageError::PeerMismatch { .. })
    ));
    let mut m = write_request(&key, 4, b"x");
    m.message_data.as_mut().unwrap().node_pub_key = vec![8, 1, 18, 3, 1, 2, 3];
    assert_eq!(v.verify(&m, NOW), Err(MessageError::BadPublicKey));
    // Someone else's key, with a matching node id but the original signature.
    let mut m = write_request(&key, 5, b"x");
    let h = m.message_data.as_mut().unwrap();
    h.node_pub_key = other.public().encode_protobuf();
    h.node_id = other.peer_id().to_base58();
    assert_eq!(v.verify(&m, NOW), Err(MessageError::BadSignature));
}

#[test]
fn stale_future_and_replayed_messages_are_refused() {
    let key = NodeKey::generate();
    let mut v = Verifier::new(WINDOW, 1000);
    let m = write_request(&key, 6, b"x");
    assert!(matches!(
        v.verify(&m, NOW + WINDOW + 1),
        Err(MessageError::Expired { .. })
    ));
    assert!(matches!(
        v.verify(&m, NOW - WINDOW - 1),
        Err(MessageError::Expired { .. })
    ));
    // Dated ahead: a quarter of the window at most (an id is remembered until its timestamp
    // leaves the window; a whole window ahead would be remembered for two).
    assert!(matches!(
        v.verify(&m, NOW - WINDOW / 4 - 1),
        Err(MessageError::Expired { .. })
    ));
    let ahead = write_request(&key, 13, b"y");
    let mut early = Verifier::new(WINDOW, 1000);
    assert!(early.verify(&ahead, NOW - WINDOW / 4).is_ok());
    assert_eq!(early.len(), 1);
    // One window and a quarter after its arrival, a fresh message finds it forgotten.
    let later = NOW - WINDOW / 4 + WINDOW + WINDOW / 4;
    let mut fresh = write_request(&key, 14, b"z");
    sign(&mut fresh, &key, later, [14; 16]);
    assert!(early.verify(&fresh, later).is_ok());
    assert_eq!(early.len(), 1, "the early id is forgotten by then");
    assert!(v.verify(&m, NOW).is_ok());
    assert_eq!(v.verify(&m, NOW + 1), Err(MessageError::Replayed));
    // Once the window has passed the id is forgotten, and the message is refused as expired.
    assert!(matches!(
        v.verify(&m, NOW + 2 * WINDOW),
        Err(MessageError::Expired { .. })
    ));
    // A full cache fails closed.
    let mut small = Verifier::new(WINDOW, 2);
    assert!(small.verify(&write_request(&key, 7, b"a"), NOW).is_ok());
    assert!(small.verify(&write_request(&key, 8, b"a"), NOW).is_ok());
    assert_eq!(
        small.verify(&write_request(&key, 9, b"a"), NOW),
        Err(MessageError::ReplayCacheFull)
    );
}

#[test]
fn oversize_truncated_and_malformed_frames_are_refused() {
    let key = NodeKey::generate();
    let frame = encode_frame(&write_request(&key, 10, &vec![7; CHUNK_BYTES_MAX]));
    assert!(frame.len() <= FRAME_BYTES_MAX + 4);
    assert!(decode_frame::<pb::WritefileRequest>(&frame).is_ok());
    // A length prefix over the limit is refused before anything else.
    let huge = ((FRAME_BYTES_MAX + 1) as u32).to_le_bytes();
    assert!(matches!(
        message::frame_len(huge),
        Err(MessageError::Oversize { .. })
    ));
    // A chunk over the limit is refused after decoding.
    let mut big = write_request(&key, 11, b"");
    big.data = vec![0; CHUNK_BYTES_MAX + 1];
    assert!(matches!(
        decode_frame::<pb::WritefileRequest>(&encode_frame(&big)),
        Err(MessageError::Oversize { .. } | MessageError::Field { .. })
    ));
    // Every truncation is refused, none panics.
    let small = encode_frame(&write_request(&key, 12, b"abc"));
    for cut in 0..small.len() {
        assert!(
            decode_frame::<pb::WritefileRequest>(&small[..cut]).is_err(),
            "cut {cut}"
        );
    }
    // The wrong kind, an unknown kind, random bytes.
    assert!(matches!(
        decode_frame::<pb::ReadfileRequest>(&small),
        Err(MessageError::WrongKind {
            expected: 3,
            got: 1
        })
    ));
    let mut unknown = small.clone();
    unknown[4] = 99;
    assert_eq!(
        decode_frame::<pb::WritefileRequest>(&unknown),
        Err(MessageError::UnknownKind(99))
    );
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..5000 {
        let mut f = small.clone();
        let at = rng.random_range(0..f.len());
        f[at] = rng.random();
        let _ = decode_frame::<pb::WritefileRequest>(&f);
    }
    // Bounds on the body: a fragment id that is not 32 bytes, data past the fragment's end.
    let mut short_id = write_request(&key, 13, b"x");
    short_id.fragment_id.pop();
    assert!(matches!(
        decode_frame::<pb::WritefileRequest>(&encode_frame(&short_id)),
        Err(MessageError::Field {
            field: "fragment_id",
            ..
        })
    ));
    let mut past_end = write_request(&key, 14, b"xyz");
    past_end.fragment_bytes = 2;
    assert!(matches!(
        decode_frame::<pb::WritefileRequest>(&encode_frame(&past_end)),
        Err(MessageError::Field { .. })
    ));
    // Raw payload announced past the fragment's end.
    let mut payload_past_end = write_request(&key, 15, b"xyz");
    payload_past_end.payload_bytes = (8 << 20) - 2;
    assert!(matches!(
        decode_frame::<pb::WritefileRequest>(&encode_frame(&payload_past_end)),
        Err(MessageError::Field {
            field: "offset + data + payload",
            ..
        })
    ));
}

#[test]
fn node_keys_live_in_owner_only_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let key = NodeKey::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        NodeKey::load_or_create(&path).unwrap().peer_id(),
        key.peer_id()
    );
    assert!(NodeKey::create(&path).is_err(), "never overwrites a key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = NodeKey::load(&path).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    let junk = dir.path().join("junk.key");
    std::fs::write(&junk, b"not a key").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(NodeKey::load(&junk).is_err());
}

#[test]
fn multiaddrs_parse_and_print() {
    let key = NodeKey::generate();
    let text = format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{}", key.peer_id());
    let addr: NodeAddr = text.parse().unwrap();
    assert_eq!(addr.socket, "127.0.0.1:4001".parse().unwrap());
    assert_eq!(addr.peer, key.peer_id());
    assert_eq!(addr.to_string(), text);
    let v6 = format!("/ip6/::1/udp/9/quic-v1/p2p/{}", key.peer_id());
    assert_eq!(v6.parse::<NodeAddr>().unwrap().to_string(), v6);
    for bad in [
        "/ip4/127.0.0.1/tcp/4001".to_string(),
        "/ip4/127.0.0.1/udp/4001/quic-v1".to_string(),
        format!("/ip4/127.0.0.1/udp/4001/p2p/{}", key.peer_id()),
        "not an address".to_string(),
        format!("{text}/udp/1"),
    ] {
        assert!(bad.parse::<NodeAddr>().is_err(), "{bad}");
    }
}

fn mutate(rng: &mut ChaCha8Rng, frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    match rng.random_range(0..5) {
        0 => {
            let bit = rng.random_range(0..f.len() * 8);
            f[bit / 8] ^= 1 << (bit % 8);
        }
        1 => {
            let at = rng.random_range(0..f.len());
            f[at] = rng.random();
        }
        2 => f.truncate(rng.random_range(0..f.len())),
        3 => {
            let extra = rng.random_range(1..32);
            f.extend((0..extra).map(|_| rng.random::<u8>()));
        }
        _ => {
            let at = rng.random_range(0..f.len());
            let len = rng.random_range(0..(f.len() - at).min(16) + 1);
            for b in &mut f[at..at + len] {
                *b = rng.random();
            }
        }
    }
    f
}

/// Decode `frame` as `M`; whatever decodes re-encodes to a frame that decodes the same, and
/// the verifier gives an answer (never a panic). Returns whether it decoded and verified.
fn decode_and_verify<M: message::Signed + PartialEq + std::fmt::Debug>(
    frame: &[u8],
) -> (bool, bool) {
    match decode_frame::<M>(frame) {
        Ok(m) => {
            let again: M = decode_frame(&encode_frame(&m)).expect("a decoded frame re-encodes");
            assert_eq!(again, m);
            (true, Verifier::new(WINDOW, 64).verify(&m, NOW).is_ok())
        }
        Err(_) => (false, false),
    }
}

/// The stable stand-in for the cargo-fuzz target in `transport/fuzz/`: bit flips, overwrites,
/// truncations, extensions and splices of a valid frame of every kind, each decoded as every
/// kind. Nothing panics, and a mutated frame that still verifies must be the original message.
#[test]
fn mutated_frames_of_every_kind_never_panic() {
    let key = NodeKey::generate();
    let mut write_response = pb::WritefileResponse {
        message_data: None,
        code: 1,
        offset: 4096,
        detail: "ok".into(),
    };
    sign(&mut write_response, &key, NOW, [21; 16]);
    let mut read_request = pb::ReadfileRequest {
        message_data: None,
        file_id: vec![3; 32],
        fragment_id: vec![4; 32],
        offset: 8192,
    };
    sign(&mut read_request, &key, NOW, [22; 16]);
    let mut read_response = pb::ReadfileResponse {
        message_data: None,
        code: 1,
        offset: 0,
        data: b"some bytes".to_vec(),
        fragment_bytes: 1 << 20,
        payload_bytes: 1000,
        detail: String::new(),
    };
    sign(&mut read_response, &key, NOW, [23; 16]);
    let mut tag_request = pb::TagRequest {
        message_data: None,
        fragment_id: vec![5; 32],
        fragment_bytes: 8 << 20,
    };
    sign(&mut tag_request, &key, NOW, [24; 16]);
    let mut tag_response = pb::TagResponse {
        message_data: None,
        code: 0,
        detail: String::new(),
        tags: vec![6; 300],
    };
    sign(&mut tag_response, &key, NOW, [25; 16]);
    let frames = [
        encode_frame(&write_request(&key, 20, b"fuzz me")),
        encode_frame(&write_response),
        encode_frame(&read_request),
        encode_frame(&read_response),
        encode_frame(&tag_request),
        encode_frame(&tag_response),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let mut decoded = 0;
    for round in 0..12000 {
        let original = &frames[round % frames.len()];
        let f = mutate(&mut rng, original);
        let results = [
            decode_and_verify::<pb::WritefileRequest>(&f),
            decode_and_verify::<pb::WritefileResponse>(&f),
            decode_and_verify::<pb::ReadfileRequest>(&f),
            decode_and_verify::<pb::ReadfileResponse>(&f),
            decode_and_verify::<pb::TagRequest>(&f),
            decode_and_verify::<pb::TagResponse>(&f),
        ];
        decoded += results.iter().filter(|r| r.0).count();
        if results.iter().any(|r| r.1) {
            // Protobuf has more than one encoding of a message (field order, varint padding),
            // so bytes may differ; the signed message may not.
            let kind = round % frames.len();
            assert!(results[kind].1, "a mutated frame verified as another kind");
            let same = match kind {
                0 => decode_frame::<pb::WritefileRequest>(&f).ok() == decode_frame(original).ok(),
                1 => decode_frame::<pb::WritefileResponse>(&f).ok() == decode_frame(original).ok(),
                2 => decode_frame::<pb::ReadfileRequest>(&f).ok() == decode_frame(original).ok(),
                3 => decode_frame::<pb::ReadfileResponse>(&f).ok() == decode_frame(original).ok(),
                4 => decode_frame::<pb::TagRequest>(&f).ok() == decode_frame(original).ok(),
                _ => decode_frame::<pb::TagResponse>(&f).ok() == decode_frame(original).ok(),
            };
            assert!(same, "round {round}: a changed message still verified");
        }
    }
    assert!(
        decoded > 0,
        "no mutation decoded: the harness is not reaching the decoders"
    );
}

/// Scenario (issue 28): the small-order identity key 01 00…00 with the "signature" 01 00…00
/// passed libp2p's check for any message, so anyone could write as that PeerId. Strict
/// verification refuses it (here in a request header; `is_strong_peer` refuses it as a TLS
/// identity).
#[test]
fn a_small_order_identity_key_signs_nothing() {
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let key = libp2p_identity::PublicKey::from(
        libp2p_identity::ed25519::PublicKey::try_from_bytes(&weak).unwrap(),
    );
    let mut forged = vec![0u8; 64];
    forged[0] = 1;
    let mut m = write_request(&NodeKey::generate(), 9, b"x");
    let h = m.message_data.as_mut().unwrap();
    h.node_pub_key = key.encode_protobuf();
    h.node_id = key.to_peer_id().to_base58();
    h.sign = forged.clone();
    assert!(
        key.verify(b"anything at all", &forged),
        "libp2p's check is lax"
    );
    let mut v = Verifier::new(WINDOW, 1000);
    assert_eq!(v.verify(&m, NOW), Err(MessageError::BadSignature));
    assert!(!cess_transport::identity::is_strong_peer(&key.to_peer_id()));
    assert!(cess_transport::identity::is_strong_peer(
        &NodeKey::generate().peer_id()
    ));
}

/// Replay memory per author: an author over its own bound is refused, others are not; all
/// authors together stay under the total, the least recently heard forgotten first.
#[test]
fn replay_memory_is_bounded_per_peer_and_in_total() {
    let mut replay = cess_transport::PeerReplay::new(WINDOW, 4, 8);
    let (a, b, c) = (
        NodeKey::generate().peer_id(),
        NodeKey::generate().peer_id(),
        NodeKey::generate().peer_id(),
    );
    for i in 0..4u8 {
        replay.remember(a, [i; 16], NOW, NOW).unwrap();
    }
    assert_eq!(
        replay.remember(a, [0; 16], NOW, NOW),
        Err(MessageError::Replayed)
    );
    assert_eq!(
        replay.remember(a, [9; 16], NOW, NOW),
        Err(MessageError::ReplayCacheFull)
    );
    for i in 0..4u8 {
        replay.remember(b, [i; 16], NOW, NOW).unwrap();
    }
    assert_eq!(replay.len(), 8);
    // C is never refused for A's and B's ids: the least recently heard (A) is forgotten.
    for i in 0..4u8 {
        replay.remember(c, [i; 16], NOW, NOW).unwrap();
    }
    assert!(replay.len() <= 8, "{}", replay.len());
    assert_eq!(
        replay.remember(b, [0; 16], NOW, NOW),
        Err(MessageError::Replayed)
    );
}
