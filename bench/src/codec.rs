//! Suite `codec`: the file codec against its stages run alone, and reed-solomon-simd called
//! directly on whole fragments.

use crate::report::{Case, Options};
use cess_codec::{
    self as codec, CodecError, CodecParams, EncodeOptions, FileKey, FragmentSink, SegmentCoder,
    sha256,
};
use cess_types::FragmentId;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reed_solomon_simd::ReedSolomonDecoder;
use std::time::Instant;

const MIB: f64 = 1024.0 * 1024.0;

/// Drops fragments: a case that measures coding, not storage.
pub(crate) struct NullSink;
impl FragmentSink for NullSink {
    fn fragment(
        &mut self,
        _: u64,
        _: usize,
        _: &FragmentId,
        bytes: &[u8],
    ) -> Result<(), CodecError> {
        std::hint::black_box(bytes);
        Ok(())
    }
}

struct Setup {
    params: CodecParams,
    segments: usize,
    runs: usize,
}

impl Setup {
    fn new(quick: bool) -> Setup {
        if quick {
            Setup {
                params: CodecParams {
                    segment_bytes: 4 * 96 * 1024,
                    ..CodecParams::default()
                },
                segments: 3,
                runs: 1,
            }
        } else {
            Setup {
                params: CodecParams::default(),
                segments: 48,
                runs: 5,
            }
        }
    }
}

pub(crate) fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn secs(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

pub fn run(options: &Options) -> Result<Vec<Case>, String> {
    let setup = Setup::new(options.quick);
    let p = setup.params;
    println!(
        "codec suite: {} segments of {} MiB, RS {}+{}, 2 worker threads",
        setup.segments,
        p.segment_bytes >> 20,
        p.data_shards,
        p.parity_shards
    );
    let mut cases = Vec::new();
    for (name, key) in [
        ("pipeline-rs-sha256-2core", None),
        (
            "pipeline-aead-rs-sha256-2core",
            Some(FileKey::from_bytes([3; 32])),
        ),
    ] {
        if options.wants(name) {
            cases.push(pipeline_case(&setup, name, key)?);
        }
    }
    if options.wants("rs-striped-vs-whole") {
        cases.push(striped_case(&setup)?);
    }
    for (name, present) in [
        ("decode-data-shards", vec![0, 1, 2, 3]),
        ("decode-parity-only", vec![4, 5, 6, 7]),
        ("repair-one-fragment", vec![1, 2, 3, 4]),
    ] {
        if options.wants(name) {
            cases.push(decode_case(&setup, name, &present)?);
        }
    }
    Ok(cases)
}

/// Seconds each stage takes alone on one core over `segments` (already sealed when `key`).
fn stage_seconds(setup: &Setup, input: &[u8], key: Option<&FileKey>) -> Result<f64, String> {
    let p = setup.params;
    let seg = p.segment_bytes as usize;
    let mut coder = SegmentCoder::new(p).map_err(|e| e.to_string())?;
    let mut segment = vec![0u8; seg];
    let mut parity = vec![0u8; usize::from(p.parity_shards) * p.fragment_bytes()];
    let mut total = 0.0;
    let sealer = key.map(FileKey::sealer);
    for chunk in input.chunks(seg) {
        segment[..chunk.len()].copy_from_slice(chunk);
        if let Some(sealer) = &sealer {
            total += secs(|| sealer.seal(&[0u8; 44], &mut segment));
        }
        total += secs(|| coder.encode_parity(&segment, &mut parity).expect("rs"));
        total += secs(|| {
            std::hint::black_box(sha256(&segment));
            for f in segment
                .chunks(p.fragment_bytes())
                .chain(parity.chunks(p.fragment_bytes()))
            {
                std::hint::black_box(sha256(f));
            }
        });
    }
    Ok(total)
}

fn pipeline_case(setup: &Setup, name: &str, key: Option<FileKey>) -> Result<Case, String> {
    let p = setup.params;
    let len = setup.segments * p.payload_bytes(key.is_some()) as usize;
    let input = random(len, 1);
    let options = EncodeOptions {
        params: p,
        key: key.clone(),
        threads: 2,
        ..EncodeOptions::default()
    };
    let (mut ours, mut ideal) = (Vec::new(), Vec::new());
    for _ in 0..setup.runs {
        let t = secs(|| {
            codec::encode(
                &mut &input[..],
                len as u64,
                &options,
                &mut NullSink,
                &mut |_| {},
            )
            .expect("encode");
        });
        ours.push(len as f64 / MIB / t);
        let stages = stage_seconds(setup, &input, key.as_ref())?;
        ideal.push(2.0 * len as f64 / MIB / stages);
    }
    let stages = if key.is_some() {
        "AEAD + RS + SHA-256"
    } else {
        "RS + SHA-256"
    };
    Ok(Case {
        name: name.into(),
        metric: "throughput",
        unit: "MiB/s",
        baseline: format!("ideal 2-core: 2 / sum of one-core {stages} stage times"),
        goal: Some(0.85),
        note: format!(
            "{} MiB input; SHA-256 of the segment and all {} fragments",
            len >> 20,
            p.shard_count()
        ),
        ..Case::from_runs(ours, ideal)
    })
}

fn striped_case(setup: &Setup) -> Result<Case, String> {
    let p = setup.params;
    let (k, m) = (usize::from(p.data_shards), usize::from(p.parity_shards));
    let segment = random(p.segment_bytes as usize, 2);
    let mut parity = vec![0u8; m * p.fragment_bytes()];
    let mut coder = SegmentCoder::new(p).map_err(|e| e.to_string())?;
    let reps = setup.segments;
    let bytes = (reps * segment.len()) as f64 / MIB;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..setup.runs {
        ours.push(
            bytes
                / secs(|| {
                    for _ in 0..reps {
                        coder.encode_parity(&segment, &mut parity).expect("rs");
                    }
                }),
        );
        let originals: Vec<&[u8]> = segment.chunks(p.fragment_bytes()).collect();
        theirs.push(
            bytes
                / secs(|| {
                    for _ in 0..reps {
                        std::hint::black_box(
                            reed_solomon_simd::encode(k, m, &originals).expect("rs"),
                        );
                    }
                }),
        );
    }
    Ok(Case {
        name: "rs-striped-vs-whole".into(),
        metric: "throughput",
        unit: "MiB/s",
        baseline: format!(
            "reed_solomon_simd::encode on whole {} MiB shards",
            p.fragment_bytes() >> 20
        ),
        goal: Some(2.0),
        note: format!("{} KiB stripes", codec::STRIPE_BYTES >> 10),
        ..Case::from_runs(ours, theirs)
    })
}

/// Rebuilding a segment from the fragments `present` (data first, then parity): ours
/// (stripes) against reed-solomon-simd's decoder on whole fragments, both ending with the
/// segment contiguous in memory.
fn decode_case(setup: &Setup, name: &str, present: &[usize]) -> Result<Case, String> {
    let p = setup.params;
    let (k, m, frag) = (
        usize::from(p.data_shards),
        usize::from(p.parity_shards),
        p.fragment_bytes(),
    );
    let original = random(p.segment_bytes as usize, 3);
    let mut parity = vec![0u8; m * frag];
    let mut coder = SegmentCoder::new(p).map_err(|e| e.to_string())?;
    coder
        .encode_parity(&original, &mut parity)
        .map_err(|e| e.to_string())?;
    let fragment = |i: usize| -> &[u8] {
        if i < k {
            &original[i * frag..][..frag]
        } else {
            &parity[(i - k) * frag..][..frag]
        }
    };
    let mut flags = vec![false; k + m];
    for &i in present {
        flags[i] = true;
    }
    let mut segment = vec![0u8; p.segment_bytes as usize];
    let mut decoder = ReedSolomonDecoder::new(k, m, frag).map_err(|e| e.to_string())?;
    let reps = setup.segments;
    let bytes = (reps * original.len()) as f64 / MIB;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..setup.runs {
        ours.push(
            bytes
                / secs(|| {
                    for _ in 0..reps {
                        for i in present.iter().filter(|i| **i < k) {
                            segment[i * frag..][..frag].copy_from_slice(fragment(*i));
                        }
                        coder
                            .reconstruct(&mut segment, &parity, &flags)
                            .expect("reconstruct");
                    }
                }),
        );
        theirs.push(
            bytes
                / secs(|| {
                    for _ in 0..reps {
                        decoder.reset(k, m, frag).expect("reset");
                        for &i in present {
                            if i < k {
                                segment[i * frag..][..frag].copy_from_slice(fragment(i));
                                decoder.add_original_shard(i, fragment(i)).expect("add");
                            } else {
                                decoder.add_recovery_shard(i - k, fragment(i)).expect("add");
                            }
                        }
                        let result = decoder.decode().expect("decode");
                        for (i, restored) in result.restored_original_iter() {
                            segment[i * frag..][..frag].copy_from_slice(restored);
                        }
                    }
                }),
        );
    }
    if segment != original {
        return Err(format!(
            "{name}: the rebuilt segment differs from the original"
        ));
    }
    Ok(Case {
        name: name.into(),
        metric: "throughput",
        unit: "MiB/s",
        baseline: format!(
            "reed-solomon-simd decoder on whole {} KiB shards",
            frag >> 10
        ),
        goal: Some(0.90),
        note: format!("segment rebuilt from fragments {present:?}"),
        ..Case::from_runs(ours, theirs)
    })
}
