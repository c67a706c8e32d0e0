//! Suite `proofs`: PoDR² tagging against the textbook s-term MSM, proving from an engine store
//! against reading the same blocks, verification cost against store size, and blst against
//! arkworks on the primitives.

use crate::report::{Case, Options, median};
use ark_ec::pairing::Pairing;
use ark_ec::{CurveGroup, VariableBaseMSM};
use ark_serialize::CanonicalDeserialize;
use cess_engine::{AlignedBuf, Class, FormatOptions, NodeId, OpenOptions, Store, Target, format};
use cess_proofs::curve::{self, G1Affine, G2Affine, Scalar};
use cess_proofs::tag::tag_fragment_naive;
use cess_proofs::{
    Challenge, ChallengeInputs, ChallengeParams, CpuBackend, FragmentId, FragmentSet, ProofSource,
    SECTORS_PER_BLOCK_DEFAULT, SecretKey, Verdict, prove, tag_fragment, verify,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

const NODE: NodeId = NodeId([0xbf; 32]);
const MINER: &[u8] = b"bench-miner";

struct Sizes {
    runs: usize,
    tag_bytes: usize,
    prove_counts: [usize; 3],
    prove_fragment_bytes: usize,
    verify_count: usize,
    verify_fragment_bytes: usize,
    msm_points: usize,
    pairings: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                runs: 1,
                tag_bytes: 40 << 10,
                prove_counts: [1, 10, 100],
                prove_fragment_bytes: 32 << 10,
                verify_count: 100,
                verify_fragment_bytes: 64 << 10,
                msm_points: 64,
                pairings: 2,
            }
        } else {
            Sizes {
                runs: 5,
                tag_bytes: 1 << 20,
                prove_counts: [1, 100, 10_000],
                prove_fragment_bytes: 256 << 10,
                verify_count: 10_000,
                verify_fragment_bytes: 8 << 20,
                msm_points: 4096,
                pairings: 20,
            }
        }
    }
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn key() -> SecretKey {
    SecretKey::from_seed(&[0x42; 32], SECTORS_PER_BLOCK_DEFAULT).expect("bench key")
}

fn ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1000.0
}

pub fn run(options: &Options) -> Result<Vec<Case>, String> {
    let sizes = Sizes::new(options.quick);
    let key = key();
    println!(
        "proofs suite: s = {} sectors per block ({} B blocks), one thread, backend {}",
        key.sectors_per_block(),
        key.public().block_bytes(),
        cess_proofs::Backend::name(&CpuBackend)
    );
    let mut cases = Vec::new();
    if options.wants("tag-vs-naive-msm") {
        cases.push(tag_case(&key, &sizes)?);
    }
    if options.wants("prove") {
        cases.extend(prove_cases(&key, &sizes, options)?);
    }
    if options.wants("verify-10000-vs-1") {
        cases.push(verify_case(&key, &sizes)?);
    }
    if options.wants("msm-blst-vs-arkworks") {
        cases.push(msm_case(&sizes));
    }
    if options.wants("pairing-blst-vs-arkworks") {
        cases.push(pairing_case(&sizes));
    }
    if options.wants("tag-at-tagger") || options.wants("tag-at-tagger-vs-required-work") {
        cases.extend(tag_at_tagger_cases(options)?);
    }
    cases.extend(crate::pois::run(options)?);
    Ok(cases)
}

/// The tagger's side for the bench: admits every peer, tags on a blocking thread as the
/// `cess-tagger` service does (its admission reads a ledger replica; here there is none).
struct BenchTagger(Arc<SecretKey>);

impl cess_transport::tagging::TagService for BenchTagger {
    fn admit(
        &self,
        _: &cess_transport::PeerId,
        _: &FragmentId,
        _: u64,
    ) -> Result<(), cess_transport::tagging::TagRefusal> {
        Ok(())
    }

    async fn tag(&self, id: FragmentId, data: Vec<u8>) -> Result<Vec<u8>, String> {
        let key = self.0.clone();
        tokio::task::spawn_blocking(move || {
            tag_fragment(&key, &CpuBackend, &id, &data)
                .map(|t| t.encode())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Fragments sent to the tagger at once: enough to keep its two tagging threads busy while
/// the next fragments cross the wire.
const TAGS_IN_FLIGHT: usize = 4;

/// `tag-at-tagger`: fragments tagged by a tagger over QUIC on loopback (the signed request,
/// the bytes, the tagger's SHA-256 check, the tags back), [`TAGS_IN_FLIGHT`] at once, against
/// `tag_fragment` called directly on the same fragments on two threads, in the same run;
/// `tag-at-tagger-vs-required-work` against the same plus the work the service must add: the
/// SHA-256 check (a tagger tags only bytes that hash to the id: tags of other bytes under a
/// fragment's id would let a miner prove without the fragment) and the transfer, counted as
/// the CPU time of a bare quinn transfer of the same bytes on loopback (both ends share these
/// two cores here), all measured in the same run.
fn tag_at_tagger_cases(options: &Options) -> Result<Vec<Case>, String> {
    use cess_transport::tagging::{TAG_PROTOCOL, TagServer, TagServerConfig, request_tags};
    use cess_transport::{Endpoint, Limits, NodeKey};
    let (runs, count, fragment_bytes) = if options.quick {
        (1, 2, 256 << 10)
    } else {
        (5, 16, 8 << 20)
    };
    let fragments: Arc<Vec<(FragmentId, Vec<u8>)>> = Arc::new(
        (0..count)
            .map(|i| {
                let data = random(fragment_bytes, 500 + i as u64);
                (FragmentId::of(&data), data)
            })
            .collect(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    // The suite's key, one per side of the comparison's owner (SecretKey is not Clone).
    let key = Arc::new(key());
    let (server_endpoint, client) = runtime.block_on(async {
        let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().expect("valid");
        let tagger_key = Arc::new(NodeKey::generate());
        let server_endpoint = Endpoint::server_for(
            TAG_PROTOCOL,
            tagger_key.clone(),
            loopback,
            Limits::default(),
        )
        .map_err(|e| err(&e))?;
        let server = TagServer::new(
            Arc::new(BenchTagger(key.clone())),
            tagger_key,
            TagServerConfig::default(),
        );
        tokio::spawn(server.serve(server_endpoint.clone()));
        let client = Endpoint::client_for(
            TAG_PROTOCOL,
            Arc::new(NodeKey::generate()),
            loopback,
            Limits::default(),
        )
        .map_err(|e| err(&e))?;
        Ok::<_, String>((server_endpoint, client))
    })?;
    let addr = server_endpoint.node_addr().map_err(|e| err(&e))?;
    let total_mb = (count * fragment_bytes) as f64 / 1e6;
    let (mut ours, mut theirs, mut required) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = ms(|| {
            runtime.block_on(async {
                let mut running: tokio::task::JoinSet<Result<(), String>> =
                    tokio::task::JoinSet::new();
                for i in 0..count {
                    if running.len() >= TAGS_IN_FLIGHT {
                        running
                            .join_next()
                            .await
                            .expect("task")
                            .expect("joined")
                            .expect("tagged");
                    }
                    let (client, addr, fragments) =
                        (client.clone(), addr.clone(), fragments.clone());
                    running.spawn(async move {
                        let (id, data) = &fragments[i];
                        request_tags(
                            &client,
                            &addr,
                            *id,
                            data,
                            std::time::Duration::from_secs(60),
                        )
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                    });
                }
                while let Some(done) = running.join_next().await {
                    done.expect("task").expect("tagged");
                }
            })
        });
        ours.push(total_mb / (t / 1000.0));
        for (with_hash, rates) in [(false, &mut theirs), (true, &mut required)] {
            let t = ms(|| {
                std::thread::scope(|scope| {
                    for half in 0..2 {
                        let (key, fragments) = (&key, &fragments);
                        scope.spawn(move || {
                            for (id, data) in fragments.iter().skip(half).step_by(2) {
                                if with_hash {
                                    std::hint::black_box(cess_engine::FragmentId::of(data));
                                }
                                std::hint::black_box(
                                    tag_fragment(key, &CpuBackend, id, data).expect("tag"),
                                );
                            }
                        });
                    }
                })
            });
            let mut seconds = t / 1000.0;
            if with_hash {
                // The transfer's CPU on both ends, spread over the two cores.
                let fragments_8mib = (count * fragment_bytes).div_ceil(8 << 20);
                seconds += crate::e2e::quic_transfer_cpu_s(fragments_8mib)? / 2.0;
            }
            rates.push(total_mb / seconds);
        }
    }
    server_endpoint.close();
    let mut with_hash = Case::from_runs(ours.clone(), required);
    let mut case = Case::from_runs(ours, theirs);
    case.name = "tag-at-tagger".into();
    case.metric = "throughput";
    case.unit = "MB/s";
    case.goal = Some(0.85);
    case.baseline = "tag_fragment called directly on the same fragments, two threads".into();
    case.note = format!(
        "{count} fragments of {} KiB, {TAGS_IN_FLIGHT} in flight to a tagger over QUIC on \
         loopback (signed request, the bytes, SHA-256 checked by the tagger, tags back), CPU \
         backend",
        fragment_bytes >> 10
    );
    with_hash.name = "tag-at-tagger-vs-required-work".into();
    with_hash.metric = "throughput";
    with_hash.unit = "MB/s";
    with_hash.goal = Some(0.85);
    with_hash.baseline = "SHA-256 then tag_fragment on two threads, plus a bare quinn transfer's \
                          CPU of the same bytes over two cores"
        .into();
    with_hash.note = "the same tagger runs; the baseline adds the hash check and the transfer \
                      the service must do"
        .into();
    Ok(vec![case, with_hash])
}

/// TagGen on one core against tagging the same blocks with an s-term MSM per block.
fn tag_case(key: &SecretKey, sizes: &Sizes) -> Result<Case, String> {
    let data = random(sizes.tag_bytes, 1);
    let id = FragmentId([1; 32]);
    let mb = data.len() as f64 / 1e6;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..sizes.runs {
        // Ours is fast: repeat it so each run lasts long enough to time.
        let reps = if sizes.runs > 1 { 8 } else { 1 };
        let t = ms(|| {
            for _ in 0..reps {
                std::hint::black_box(tag_fragment(key, &CpuBackend, &id, &data).expect("tag"));
            }
        });
        ours.push(mb * reps as f64 / (t / 1000.0));
        let t = ms(|| {
            std::hint::black_box(tag_fragment_naive(key, &CpuBackend, &id, &data).expect("tag"));
        });
        theirs.push(mb / (t / 1000.0));
    }
    let mut case = Case::from_runs(ours, theirs);
    case.name = "tag-vs-naive-msm".into();
    case.metric = "throughput";
    case.unit = "MB/s";
    case.baseline = "s-term blst MSM per block over the public bases".into();
    case.goal = Some(20.0);
    case.note = format!(
        "{} KiB fragment, one core; issue aim: >= 100 MB/s absolute",
        sizes.tag_bytes >> 10
    );
    Ok(case)
}

struct TargetFile(PathBuf);
impl Drop for TargetFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh engine store holding `count` tagged fragments (tagging on two threads).
fn tagged_store(
    key: &SecretKey,
    count: usize,
    fragment_bytes: usize,
    options: &Options,
) -> Result<(Store, FragmentSet, Option<TargetFile>), String> {
    let (path, guard) = match &options.target {
        Some(t) => (t.clone(), None),
        None => {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = dir.join("proofs-target.img");
            let bytes = (count as u64 * (fragment_bytes as u64 + (8 << 10))) * 5 / 4 + (256 << 20);
            let file =
                std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            file.set_len(bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            (path.clone(), Some(TargetFile(path)))
        }
    };
    let target = Target::Path(path);
    let mut format_options = FormatOptions::new(NODE);
    format_options.force = true;
    format(&target, &format_options).map_err(|e| e.to_string())?;
    let store = Arc::new(Store::open(&target, &OpenOptions::new(NODE)).map_err(|e| e.to_string())?);
    let entries = std::sync::Mutex::new(Vec::with_capacity(count));
    let failure = std::sync::Mutex::new(None::<String>);
    std::thread::scope(|scope| {
        for worker in 0..2usize {
            let (store, entries, failure) = (&store, &entries, &failure);
            scope.spawn(move || {
                for k in (worker..count).step_by(2) {
                    let mut buf = AlignedBuf::zeroed(fragment_bytes);
                    ChaCha8Rng::seed_from_u64(1000 + k as u64).fill_bytes(&mut buf);
                    let id = FragmentId::of(&buf);
                    let result = tag_fragment(key, &CpuBackend, &id, &buf)
                        .map_err(|e| e.to_string())
                        .and_then(|tags| {
                            store
                                .put(id, Class::Active, &buf)
                                .wait()
                                .map_err(|e| e.to_string())?;
                            store
                                .set_meta(id, &tags.encode())
                                .wait()
                                .map_err(|e| e.to_string())
                        });
                    match result {
                        Ok(()) => entries
                            .lock()
                            .expect("entries")
                            .push((id, fragment_bytes as u64)),
                        Err(e) => {
                            *failure.lock().expect("failure") = Some(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("failure") {
        return Err(format!("filling the store: {e}"));
    }
    let set =
        FragmentSet::new(entries.into_inner().expect("entries")).map_err(|e| e.to_string())?;
    let store = Arc::into_inner(store).expect("workers are done");
    Ok((store, set, guard))
}

fn derive(key: &SecretKey, set: &FragmentSet, round: u64) -> Result<Challenge, String> {
    Challenge::derive(&ChallengeInputs {
        epoch_randomness: [7; 32],
        miner: MINER,
        round,
        tagger: key.public(),
        set,
        params: ChallengeParams::default(),
    })
    .map_err(|e| e.to_string())
}

/// ProofGen from an engine store holding 1, 100 and 10 000 fragments, against the engine range
/// reads of the same challenged blocks alone (the I/O floor).
fn prove_cases(key: &SecretKey, sizes: &Sizes, options: &Options) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    for count in sizes.prove_counts {
        let started = Instant::now();
        let (store, set, _guard) = tagged_store(key, count, sizes.prove_fragment_bytes, options)?;
        println!(
            "  prove-{count}: stored and tagged {count} fragments of {} KiB in {:.1} s",
            sizes.prove_fragment_bytes >> 10,
            started.elapsed().as_secs_f64()
        );
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let (mut msm_share, mut read_share, mut blocks) = (Vec::new(), Vec::new(), 0);
        let (mut tags_share, mut combine_share) = (Vec::new(), Vec::new());
        for round in 0..sizes.runs.max(3) as u64 {
            let challenge = derive(key, &set, round)?;
            let mut source = cess_node::StoreSource(&store);
            let t = Instant::now();
            let (proof, stats) = prove(key.public(), &challenge, &mut source, &CpuBackend)
                .map_err(|e| e.to_string())?;
            let total_ns = t.elapsed().as_nanos() as f64;
            ours.push(total_ns / 1e6);
            msm_share.push(stats.msm_ns as f64 / total_ns);
            read_share.push(stats.read_ns as f64 / total_ns);
            tags_share.push(stats.tags_ns as f64 / total_ns);
            combine_share.push(stats.combine_ns as f64 / total_ns);
            blocks = stats.blocks;
            if verify(key.public(), &challenge, &proof, &CpuBackend) != Verdict::Valid {
                return Err(format!("prove-{count}: the proof did not verify"));
            }
            // The floor: the same tag blobs and the same batched range reads, nothing else.
            let block_len = key.public().block_bytes();
            let mut requests = Vec::new();
            for f in challenge.fragments() {
                for b in &f.blocks {
                    let offset = u64::from(b.index) * block_len;
                    requests.push((f.id, offset, block_len.min(f.len_bytes - offset)));
                }
            }
            theirs.push(ms(|| {
                for f in challenge.fragments() {
                    std::hint::black_box(store.meta(f.id).wait().expect("meta"));
                }
                for got in store.read_many(&requests, 64) {
                    std::hint::black_box(got.expect("read"));
                }
            }));
        }
        let mut case = Case::from_times(
            format!("prove-{count}"),
            ours,
            theirs,
            "engine range reads of the same blocks and tag blobs, no arithmetic".into(),
        );
        case.note = format!(
            "{count} fragments stored, {blocks} blocks challenged; share of time in MSM {:.0} %, \
             in reading {:.0} %, in loading and checking tags {:.0} %, in combining sectors \
             (μ) {:.0} % (reading runs beside tag decoding, so the shares overlap)",
            100.0 * median(&mut msm_share),
            100.0 * median(&mut read_share),
            100.0 * median(&mut tags_share),
            100.0 * median(&mut combine_share)
        );
        cases.push(case);
    }
    Ok(cases)
}

/// Fragments whose bytes are a function of their id: the verifier never sees data, so only the
/// challenged ones are ever materialised and tagged.
#[derive(Default)]
pub(crate) struct LazySource {
    pub(crate) fragment_bytes: usize,
    data: HashMap<FragmentId, Vec<u8>>,
    tags: HashMap<FragmentId, Vec<u8>>,
}

impl LazySource {
    pub(crate) fn new(fragment_bytes: usize) -> LazySource {
        LazySource {
            fragment_bytes,
            ..Default::default()
        }
    }

    pub(crate) fn materialise(&mut self, key: &SecretKey, challenge: &Challenge) {
        for f in challenge.fragments() {
            if !self.data.contains_key(&f.id) {
                let mut data = vec![0u8; self.fragment_bytes];
                ChaCha8Rng::from_seed(f.id.0).fill_bytes(&mut data);
                let tags = tag_fragment(key, &CpuBackend, &f.id, &data).expect("tag");
                self.tags.insert(f.id, tags.encode());
                self.data.insert(f.id, data);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("fragment not materialised")]
pub(crate) struct NotMaterialised;

impl ProofSource for LazySource {
    type Error = NotMaterialised;
    fn tags(&mut self, id: &FragmentId) -> Result<Vec<u8>, NotMaterialised> {
        self.tags.get(id).cloned().ok_or(NotMaterialised)
    }
    fn read(
        &mut self,
        id: &FragmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), NotMaterialised> {
        let data = self.data.get(id).ok_or(NotMaterialised)?;
        buf.copy_from_slice(&data[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
}

/// Verification with 10 000 fragments stored against 1 stored (same fragment size).
fn verify_case(key: &SecretKey, sizes: &Sizes) -> Result<Case, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut set_for = |count: usize| {
        let entries = (0..count)
            .map(|_| {
                let mut id = [0u8; 32];
                rng.fill_bytes(&mut id);
                (FragmentId(id), sizes.verify_fragment_bytes as u64)
            })
            .collect();
        FragmentSet::new(entries).expect("set")
    };
    let (one, many) = (set_for(1), set_for(sizes.verify_count));
    let mut source = LazySource {
        fragment_bytes: sizes.verify_fragment_bytes,
        ..Default::default()
    };
    let mut prepared = Vec::new();
    for set in [&one, &many] {
        let challenge = derive(key, set, 1)?;
        source.materialise(key, &challenge);
        let proof = prove(key.public(), &challenge, &mut source, &CpuBackend)
            .map_err(|e| e.to_string())?
            .0;
        prepared.push((challenge, proof));
    }
    let (mut t_one, mut t_many) = (Vec::new(), Vec::new());
    for _ in 0..sizes.runs.max(3) {
        for (k, (challenge, proof)) in prepared.iter().enumerate() {
            let mut verdict = Verdict::Valid;
            // The verifier derives the challenge itself from the public inputs.
            let set = if k == 0 { &one } else { &many };
            let t = ms(|| {
                let derived = derive(key, set, 1).expect("derive");
                verdict = verify(key.public(), &derived, proof, &CpuBackend);
            });
            if verdict != Verdict::Valid || derive(key, set, 1)? != *challenge {
                return Err("verify-10000-vs-1: an honest proof did not verify".into());
            }
            if k == 0 {
                t_one.push(t)
            } else {
                t_many.push(t)
            }
        }
    }
    let mut case = Case::from_times(
        "verify-10000-vs-1".into(),
        t_many,
        t_one,
        "the same verification with 1 fragment stored".into(),
    );
    case.goal = Some(0.67);
    case.note = format!(
        "{} fragments of {} KiB stored against 1; {} blocks challenged with 1 stored, {} with \
         {} stored; challenge derivation included",
        sizes.verify_count,
        sizes.verify_fragment_bytes >> 10,
        prepared[0].0.block_total(),
        prepared[1].0.block_total(),
        sizes.verify_count
    );
    Ok(case)
}

fn ark_g1(p: &G1Affine) -> ark_bls12_381::G1Affine {
    ark_bls12_381::G1Affine::deserialize_compressed(&p.compress()[..]).expect("same encoding")
}

fn msm_case(sizes: &Sizes) -> Case {
    let n = sizes.msm_points;
    let scalars: Vec<Scalar> = (0..n as u64)
        .map(|k| Scalar::from_wide_bytes(&[k as u8 ^ 0x5c; 64]).add(&Scalar::from_u64(k)))
        .collect();
    let points = curve::G1::batch_to_affine(
        &scalars
            .iter()
            .map(|s| curve::generator_mul(&s.mul(s)))
            .collect::<Vec<_>>(),
    );
    let ark_points: Vec<_> = points.iter().map(ark_g1).collect();
    let ark_scalars: Vec<ark_bls12_381::Fr> = scalars
        .iter()
        .map(|s| {
            <ark_bls12_381::Fr as ark_ff::PrimeField>::from_le_bytes_mod_order(&s.to_le_bytes())
        })
        .collect();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut agree = true;
    for _ in 0..sizes.runs.max(3) {
        let mut ours_point = None;
        ours.push(ms(|| ours_point = Some(curve::msm(&points, &scalars, 255))));
        let mut theirs_point = None;
        theirs.push(ms(|| {
            theirs_point =
                Some(ark_bls12_381::G1Projective::msm(&ark_points, &ark_scalars).expect("msm"))
        }));
        let ours_affine = ours_point.expect("ran").to_affine();
        agree &= ark_g1(&ours_affine) == theirs_point.expect("ran").into_affine();
    }
    let mut case = Case::from_times(
        "msm-blst-vs-arkworks".into(),
        ours,
        theirs,
        "arkworks 0.6 VariableBaseMSM (one thread)".into(),
    );
    case.note = format!("{n}-point G1 MSM, 255-bit scalars; results agree: {agree}");
    case
}

fn pairing_case(sizes: &Sizes) -> Case {
    let p = curve::generator_mul(&Scalar::from_u64(12345)).to_affine();
    let q = G2Affine::generator_mul(&Scalar::from_u64(678));
    let ark_p = ark_g1(&p);
    let ark_q =
        ark_bls12_381::G2Affine::deserialize_compressed(&q.compress()[..]).expect("same encoding");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..sizes.runs.max(3) {
        ours.push(
            ms(|| {
                for _ in 0..sizes.pairings {
                    std::hint::black_box(curve::pairing_product_is_one(&[(p, q)]));
                }
            }) / sizes.pairings as f64,
        );
        theirs.push(
            ms(|| {
                for _ in 0..sizes.pairings {
                    let _ = std::hint::black_box(ark_bls12_381::Bls12_381::pairing(ark_p, ark_q));
                }
            }) / sizes.pairings as f64,
        );
    }
    let mut case = Case::from_times(
        "pairing-blst-vs-arkworks".into(),
        ours,
        theirs,
        "arkworks 0.6 Bls12_381::pairing".into(),
    );
    case.note = "one pairing (Miller loop and final exponentiation)".into();
    case
}
