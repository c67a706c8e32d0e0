//! The file codec: round trips, lost and corrupt fragments, repair, keys, tampering.

use cess_codec::{
    self as codec, CodecError, CodecParams, DirFragments, EncodeOptions, FileKey, FragmentId,
    FragmentSink, FragmentSource, Id, KdfParams, Manifest, file_id, sha256,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::sync::Mutex;

/// Fragments in memory, with what a test needs to lose or damage them.
#[derive(Default)]
struct Mem(Mutex<HashMap<FragmentId, Vec<u8>>>);

impl FragmentSink for Mem {
    fn fragment(
        &mut self,
        _: u64,
        _: usize,
        id: &FragmentId,
        bytes: &[u8],
    ) -> Result<(), CodecError> {
        self.0.lock().unwrap().insert(*id, bytes.to_vec());
        Ok(())
    }
}

impl FragmentSource for Mem {
    fn fetch(&self, _: u64, _: usize, id: &FragmentId, buf: &mut [u8]) -> Result<bool, CodecError> {
        match self.0.lock().unwrap().get(id) {
            Some(b) if b.len() == buf.len() => {
                buf.copy_from_slice(b);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl Mem {
    fn without(&self, ids: &[FragmentId]) -> Mem {
        let mut map = self.0.lock().unwrap().clone();
        for id in ids {
            map.remove(id);
        }
        Mem(Mutex::new(map))
    }
    fn flip_bit(&self, id: &FragmentId, bit: usize) {
        let mut map = self.0.lock().unwrap();
        let bytes = map.get_mut(id).unwrap();
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
}

/// Small segments so exhaustive tests stay fast: 4 fragments of 96 KiB (not a whole number of
/// 256 KiB stripes, and not a power of two).
fn small() -> CodecParams {
    CodecParams {
        segment_bytes: 4 * 96 * 1024,
        data_shards: 4,
        parity_shards: 8,
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn encode_with(data: &[u8], options: &EncodeOptions) -> (Manifest, Mem) {
    let mut mem = Mem::default();
    let manifest = codec::encode(
        &mut &data[..],
        data.len() as u64,
        options,
        &mut mem,
        &mut |_| {},
    )
    .expect("encode");
    (manifest, mem)
}

fn options(params: CodecParams, key: Option<FileKey>) -> EncodeOptions {
    EncodeOptions {
        params,
        key,
        ..EncodeOptions::default()
    }
}

fn decode_with(
    manifest: &Manifest,
    key: Option<&FileKey>,
    source: &Mem,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    codec::decode(manifest, key, source, &mut out, 2, &mut |_| {})?;
    Ok(out)
}

fn test_key() -> FileKey {
    FileKey::from_bytes([7u8; 32])
}

#[test]
fn round_trips_every_boundary_size_with_and_without_a_key() {
    let params = small();
    for key in [None, Some(test_key())] {
        let payload = params.payload_bytes(key.is_some()) as usize;
        for len in [0, 1, payload - 1, payload, payload + 1, 3 * payload + 17] {
            let data = random_bytes(len, len as u64);
            let (manifest, mem) = encode_with(&data, &options(params, key.clone()));
            assert_eq!(
                manifest.segments.len() as u64,
                params.segment_count(len as u64, key.is_some())
            );
            // The manifest survives its own encoding.
            assert_eq!(Manifest::decode(&manifest.encode()).unwrap(), manifest);
            assert!(
                decode_with(&manifest, key.as_ref(), &mem).unwrap() == data,
                "len {len}"
            );
        }
    }
}

/// A range read decodes only the segments it needs: each run of segments gives exactly its
/// slice of the file (checked against the whole decode, the reference), and fragments of the
/// other segments are never fetched.
#[test]
fn a_run_of_segments_decodes_to_its_slice_of_the_file_alone() {
    let params = small();
    for key in [None, Some(test_key())] {
        let payload = params.payload_bytes(key.is_some()) as usize;
        let data = random_bytes(3 * payload + 17, 5);
        let (manifest, mem) = encode_with(&data, &options(params, key.clone()));
        let count = manifest.segments.len() as u64;
        assert_eq!(count, 4);
        for first in 0..count {
            for end in first..=count {
                // Only the asked segments' fragments are present.
                let others: Vec<FragmentId> = manifest
                    .segments
                    .iter()
                    .enumerate()
                    .filter(|(s, _)| !(first..end).contains(&(*s as u64)))
                    .flat_map(|(_, s)| s.fragments.clone())
                    .collect();
                let source = mem.without(&others);
                let mut out = Vec::new();
                codec::decode_segments(
                    &manifest,
                    key.as_ref(),
                    &source,
                    &mut out,
                    first..end,
                    2,
                    &mut |_| {},
                )
                .unwrap();
                let (from, _) = codec::segment_span(&manifest, key.is_some(), first);
                let to = if end == 0 {
                    0
                } else {
                    let (offset, len) = codec::segment_span(&manifest, key.is_some(), end - 1);
                    offset + len
                };
                let to = to.max(from);
                assert!(
                    out == data[from as usize..to as usize],
                    "segments {first}..{end}"
                );
            }
        }
        let mut out = Vec::new();
        assert!(matches!(
            codec::decode_segments(
                &manifest,
                key.as_ref(),
                &mem,
                &mut out,
                2..5,
                1,
                &mut |_| {}
            ),
            Err(CodecError::BadManifest(_))
        ));
    }
}

#[test]
fn default_parameters_round_trip_a_segment_plus_one() {
    let params = CodecParams::default();
    let data = random_bytes(params.segment_bytes as usize + 1, 9);
    let (manifest, mem) = encode_with(&data, &options(params, None));
    assert_eq!(manifest.segments.len(), 2);
    // Decode from parity only: drop the four data fragments of each segment.
    let data_ids: Vec<FragmentId> = manifest
        .segments
        .iter()
        .flat_map(|s| s.fragments[..4].to_vec())
        .collect();
    assert!(decode_with(&manifest, None, &mem.without(&data_ids)).unwrap() == data);
}

#[test]
fn any_m_fragments_may_be_lost() {
    let params = small();
    let data = random_bytes(params.segment_bytes as usize - 5, 1);
    let (manifest, mem) = encode_with(&data, &options(params, None));
    let ids = &manifest.segments[0].fragments;
    // Every way to keep exactly 4 of the 12 (495 subsets).
    let mut subsets = 0;
    for mask in 0u32..(1 << 12) {
        if mask.count_ones() != 4 {
            continue;
        }
        let lost: Vec<FragmentId> = (0..12)
            .filter(|i| mask & (1 << i) == 0)
            .map(|i| ids[i])
            .collect();
        let out = decode_with(&manifest, None, &mem.without(&lost)).unwrap();
        assert!(out == data, "kept {mask:012b}");
        subsets += 1;
    }
    assert_eq!(subsets, 495);
    // Five kept of twelve is never needed; three is never enough, and the error names it.
    let lost: Vec<FragmentId> = ids[..9].to_vec();
    match decode_with(&manifest, None, &mem.without(&lost)) {
        Err(CodecError::SegmentUnrecoverable {
            segment: 0,
            good: 3,
            needed: 4,
            missing: 9,
            corrupt: 0,
        }) => {}
        other => panic!("expected unrecoverable segment 0, got {other:?}"),
    }
}

#[test]
fn corrupt_fragments_are_detected_and_tolerated_while_k_remain() {
    let params = small();
    let key = test_key();
    let data = random_bytes(3 * params.payload_bytes(true) as usize, 2);
    let (manifest, mem) = encode_with(&data, &options(params, Some(key.clone())));
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // One flipped bit in each of 8 random fragments of every segment: 4 good remain.
    for segment in &manifest.segments {
        let mut indexes: Vec<usize> = (0..12).collect();
        for _ in 0..8 {
            let i = indexes.swap_remove(rng.random_range(0..indexes.len()));
            mem.flip_bit(&segment.fragments[i], rng.random::<u32>() as usize);
        }
    }
    assert!(decode_with(&manifest, Some(&key), &mem).unwrap() == data);
    // A ninth corrupt fragment in segment 2 makes it unrecoverable, and the error says so.
    let segment = &manifest.segments[2];
    for id in &segment.fragments {
        mem.flip_bit(id, 12345);
    }
    match decode_with(&manifest, Some(&key), &mem) {
        Err(CodecError::SegmentUnrecoverable {
            segment: 2,
            good,
            corrupt,
            ..
        }) => assert!(good < 4 && corrupt > 8),
        other => panic!("expected unrecoverable segment 2, got {other:?}"),
    }
}

#[test]
fn repair_rebuilds_missing_fragments_byte_for_byte() {
    let params = small();
    let data = random_bytes(2 * params.segment_bytes as usize, 4);
    let (manifest, mem) = encode_with(&data, &options(params, Some(test_key())));
    let segment = &manifest.segments[1];
    let originals: Vec<Vec<u8>> = [0, 5, 11]
        .iter()
        .map(|&i| mem.0.lock().unwrap()[&segment.fragments[i]].clone())
        .collect();
    // Lose 8 of 12, among them the three to rebuild.
    let lost: Vec<FragmentId> = [0, 1, 2, 5, 6, 7, 9, 11]
        .iter()
        .map(|&i| segment.fragments[i])
        .collect();
    let rebuilt = codec::repair_segment(&manifest, 1, &mem.without(&lost), &[0, 5, 11]).unwrap();
    for ((index, bytes), original) in rebuilt.iter().zip(&originals) {
        assert!(bytes == original, "fragment {index}");
    }
    assert!(matches!(
        codec::repair_segment(&manifest, 1, &mem, &[12]),
        Err(CodecError::NoSuchFragment { index: 12, .. })
    ));
}

#[test]
fn known_answers_for_fragment_segment_and_file_ids() {
    let params = CodecParams::default();
    let (manifest, mem) = encode_with(b"abc", &options(params, None));
    let segment = &manifest.segments[0];
    // Data fragments 1..3 hold only pad. Zeros would make each CESS's ZeroFileHash_8M, one id
    // for three places (and for every other small file's); the pad is a BLAKE3 stream keyed
    // by the file length and its tail.
    let zero_8m = "2daeb1f36095b44b318410b3f4e8b5d989dcc7bb023d1426c492dab0a3053e74";
    let mut padded = vec![0u8; 32 << 20];
    padded[..3].copy_from_slice(b"abc");
    let mut pad_key = blake3::Hasher::new_derive_key("cess codec pad v1");
    pad_key.update(&3u64.to_le_bytes()).update(b"abc");
    pad_key.finalize_xof().fill(&mut padded[3..]);
    let ids: std::collections::HashSet<_> = segment.fragments.iter().collect();
    assert_eq!(ids.len(), 12, "every fragment of the segment is distinct");
    for i in 1..4 {
        assert_ne!(segment.fragments[i].to_hex(), zero_8m);
    }
    // Another small file's pad-only fragments are its own.
    let (other, _) = encode_with(b"abd", &options(params, None));
    for id in &other.segments[0].fragments {
        assert!(
            !ids.contains(id),
            "fragment ids are not shared across files"
        );
    }
    assert_eq!(segment.id, sha256(&padded));
    assert_eq!(segment.fragments[0], FragmentId::of(&padded[..8 << 20]));
    let pair = sha256(&[segment.id, segment.id].concat());
    assert_eq!(manifest.file_id, pair);
    assert_eq!(file_id(&[segment.id]), Some(pair));
    // Parity agrees with reed-solomon-simd's one-call encoder on whole fragments.
    let originals: Vec<&[u8]> = padded.chunks(8 << 20).collect();
    let parity = reed_solomon_simd::encode(4, 8, &originals).unwrap();
    for (p, bytes) in parity.iter().enumerate() {
        assert_eq!(
            segment.fragments[4 + p],
            FragmentId::of(bytes),
            "parity {p}"
        );
        assert!(mem.0.lock().unwrap()[&segment.fragments[4 + p]] == *bytes);
    }
}

#[test]
fn encoding_is_deterministic_so_identical_files_deduplicate() {
    let params = small();
    let data = random_bytes(params.segment_bytes as usize * 2 + 3, 5);
    for key in [None, Some(test_key())] {
        let (a, _) = encode_with(&data, &options(params, key.clone()));
        let (b, _) = encode_with(&data, &options(params, key.clone()));
        assert_eq!(a, b);
    }
    let (plain, _) = encode_with(&data, &options(params, None));
    let (sealed, _) = encode_with(&data, &options(params, Some(test_key())));
    let (other, _) = encode_with(&data, &options(params, Some(FileKey::from_bytes([8; 32]))));
    assert_ne!(plain.file_id, sealed.file_id);
    assert_ne!(sealed.file_id, other.file_id);
}

#[test]
fn passphrase_keys_are_salted_and_reproducible() {
    let cheap = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let a = FileKey::from_passphrase(b"correct horse", &[1; 16], cheap).unwrap();
    let b = FileKey::from_passphrase(b"correct horse", &[1; 16], cheap).unwrap();
    let c = FileKey::from_passphrase(b"correct horse", &[2; 16], cheap).unwrap();
    let data = random_bytes(1000, 6);
    let mut opts = options(small(), Some(a));
    opts.kdf = Some(([1; 16], cheap));
    let (manifest, mem) = encode_with(&data, &opts);
    let kdf = manifest.encryption.as_ref().unwrap().kdf.unwrap();
    assert_eq!(kdf, ([1; 16], cheap));
    assert!(decode_with(&manifest, Some(&b), &mem).unwrap() == data);
    assert!(matches!(
        decode_with(&manifest, Some(&c), &mem),
        Err(CodecError::WrongKey)
    ));
    assert!(FileKey::from_passphrase(b"", &[1; 16], cheap).is_err());
}

#[test]
fn wrong_or_missing_keys_are_named() {
    let data = random_bytes(5000, 7);
    let (sealed, mem) = encode_with(&data, &options(small(), Some(test_key())));
    let wrong = FileKey::from_bytes([9; 32]);
    assert!(matches!(
        decode_with(&sealed, Some(&wrong), &mem),
        Err(CodecError::WrongKey)
    ));
    assert!(matches!(
        decode_with(&sealed, None, &mem),
        Err(CodecError::KeyRequired)
    ));
    let (plain, mem) = encode_with(&data, &options(small(), None));
    assert!(matches!(
        decode_with(&plain, Some(&test_key()), &mem),
        Err(CodecError::KeyNotExpected)
    ));
}

/// Edits a manifest and rebuilds its file id, as an attacker could; with `reauth`, also its
/// MAC, as only the key holder could (to reach the segments' own AEAD checks).
fn edited(manifest: &Manifest, edit: &dyn Fn(&mut Manifest), reauth: Option<&FileKey>) -> Manifest {
    let mut m = manifest.clone();
    edit(&mut m);
    let ids: Vec<Id> = m.segments.iter().map(|s| s.id).collect();
    m.file_id = file_id(&ids).unwrap();
    if let Some(key) = reauth {
        m.authenticate(key);
    }
    Manifest::decode(&m.encode()).expect("edited manifest is well formed")
}

#[test]
fn reordering_truncating_and_splicing_are_refused() {
    let params = small();
    let key = test_key();
    let payload = params.payload_bytes(true) as usize;
    let a = random_bytes(3 * payload, 10);
    let mut b = a.clone();
    b[payload + 7] ^= 1; // B differs from A in segment 1 only, same length and key.
    let (ma, mem_a) = encode_with(&a, &options(params, Some(key.clone())));
    let (mb, mem_b) = encode_with(&b, &options(params, Some(key.clone())));
    mem_a
        .0
        .lock()
        .unwrap()
        .extend(mem_b.0.lock().unwrap().clone());
    let mem = mem_a;
    assert!(decode_with(&ma, Some(&key), &mem).unwrap() == a);

    let swap = |m: &mut Manifest| m.segments.swap(0, 2);
    let truncate = |m: &mut Manifest| {
        m.segments.pop();
        m.file_bytes = 2 * payload as u64;
    };
    let splice = |m: &mut Manifest| m.segments[1] = mb.segments[1].clone();
    // Without the key the edits break the manifest's MAC.
    for edit in [&swap as &dyn Fn(&mut Manifest), &truncate, &splice] {
        let m = edited(&ma, edit, None);
        assert!(
            matches!(
                decode_with(&m, Some(&key), &mem),
                Err(CodecError::ManifestTampered)
            ),
            "edit passed the MAC"
        );
    }
    // Even re-authenticated, a reordered or truncated file fails the segments' AEAD.
    let m = edited(&ma, &swap, Some(&key));
    assert!(matches!(
        decode_with(&m, Some(&key), &mem),
        Err(CodecError::SegmentAuth { segment: 0 })
    ));
    let m = edited(&ma, &truncate, Some(&key));
    assert!(matches!(
        decode_with(&m, Some(&key), &mem),
        Err(CodecError::SegmentAuth { .. })
    ));
}

#[test]
fn truncated_or_overlong_input_is_refused() {
    let data = random_bytes(1000, 11);
    let mut sink = Mem::default();
    let short = codec::encode(
        &mut &data[..],
        1001,
        &options(small(), None),
        &mut sink,
        &mut |_| {},
    );
    assert!(matches!(
        short,
        Err(CodecError::InputLength {
            expected_bytes: 1001,
            read_bytes: 1000
        })
    ));
    let long = codec::encode(
        &mut &data[..],
        999,
        &options(small(), None),
        &mut sink,
        &mut |_| {},
    );
    assert!(matches!(
        long,
        Err(CodecError::InputLength {
            expected_bytes: 999,
            ..
        })
    ));
}

#[test]
fn hostile_manifests_are_refused_with_a_reason() {
    let data = random_bytes(3000, 12);
    let (manifest, _) = encode_with(&data, &options(small(), Some(test_key())));
    let good = manifest.encode();
    assert!(matches!(
        Manifest::decode(b"\xff\xff\xff"),
        Err(CodecError::BadManifest(_))
    ));
    // Every truncation is refused or decodes to a checked manifest; none panics.
    for cut in 0..good.len() {
        let _ = Manifest::decode(&good[..cut]);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for _ in 0..2000 {
        let mut bytes = good.clone();
        let at = rng.random_range(0..bytes.len());
        bytes[at] = rng.random();
        if let Ok(m) = Manifest::decode(&bytes) {
            // Whatever survives decoding is internally consistent.
            let ids: Vec<Id> = m.segments.iter().map(|s| s.id).collect();
            assert_eq!(file_id(&ids), Some(m.file_id));
        }
    }
    let mut wrong_len = manifest.clone();
    wrong_len.file_bytes *= 1000;
    assert!(matches!(
        Manifest::decode(&wrong_len.encode()),
        Err(CodecError::BadManifest(_))
    ));
    let mut bad_params = manifest.clone();
    bad_params.params.parity_shards = 0;
    assert!(matches!(
        Manifest::decode(&bad_params.encode()),
        Err(CodecError::InvalidParams(_))
    ));
}

#[test]
fn fragments_in_a_directory_round_trip() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = random_bytes(small().segment_bytes as usize + 99, 14);
    let mut sink = DirFragments::new(dir.path());
    let manifest = codec::encode(
        &mut &data[..],
        data.len() as u64,
        &options(small(), None),
        &mut sink,
        &mut |_| {},
    )
    .unwrap();
    let source = DirFragments::new(dir.path());
    // A fragment cut short counts as missing; decoding still succeeds.
    let victim = source.path_of(&manifest.segments[0].fragments[0]);
    std::fs::write(&victim, b"short").unwrap();
    let mut out = Vec::new();
    codec::decode(&manifest, None, &source, &mut out, 2, &mut |_| {}).unwrap();
    assert!(out == data);
}

#[test]
fn a_manifest_rebuilt_from_its_header_and_segments_is_the_same_and_checks_its_key() {
    let data = random_bytes(small().segment_bytes as usize * 2 + 5, 15);
    let (manifest, _) = encode_with(&data, &options(small(), Some(test_key())));
    let header = manifest.header();
    // Small enough for a ledger to keep beside the ids it holds anyway.
    assert!(header.len() < 256, "header of {} bytes", header.len());
    let rebuilt = Manifest::from_header(&header, &manifest.segments).unwrap();
    assert_eq!(rebuilt, manifest);
    rebuilt.check_key(Some(&test_key())).unwrap();
    // Segments swapped by whoever served them: the key holder's MAC refuses them.
    let mut swapped = manifest.segments.clone();
    swapped[0].fragments.swap(0, 1);
    let forged = Manifest::from_header(&header, &swapped).unwrap();
    assert!(matches!(
        forged.check_key(Some(&test_key())),
        Err(CodecError::ManifestTampered)
    ));
    // A segment left out does not make a manifest at all.
    assert!(matches!(
        Manifest::from_header(&header, &manifest.segments[1..]),
        Err(CodecError::BadManifest(_))
    ));
    // A full manifest is not a header.
    assert!(matches!(
        Manifest::from_header(&manifest.encode(), &manifest.segments),
        Err(CodecError::BadManifest(_))
    ));
}
