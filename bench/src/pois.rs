//! Suite `proofs`, PoIS cases: the labeller against the bound set by its hashing and parent
//! reads alone, the whole generation (columns and trees too) against the same bound, and the
//! verification of a commitment and of a space proof with 10× the space certified.

use crate::report::{Case, Options};
use cess_proofs::pois::commit::for_each_parallel;
use cess_proofs::pois::label::{label_layers, label_of};
use cess_proofs::pois::{
    CommitChallenge, CommitProof, FileCommitment, Graph, Label, PoisParams, SpaceChallenge,
    SpaceProof, generate_sets, prove_commit, prove_space, replica_id, verify_commit, verify_space,
};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Instant;

const MINER: [u8; 32] = [0x3C; 32];
const THREADS: usize = 2;

fn params(quick: bool) -> PoisParams {
    if quick {
        PoisParams {
            nodes_log2: 12,
            ..PoisParams::TEST
        }
    } else {
        PoisParams::NETWORK
    }
}

pub fn run(options: &Options) -> Result<Vec<Case>, String> {
    let params = params(options.quick);
    // A network file is 16 layers of 2^21 labels, about 20 s of one core: 3 runs.
    let runs = if options.quick { 1 } else { 3 };
    let graph = Graph::new(&params);
    println!(
        "pois: N = 2^{}, K = {}, D = {}, {} files per set ({} MiB), {THREADS} threads",
        params.nodes_log2,
        params.layers,
        params.degree,
        params.files_per_set,
        params.set_bytes() >> 20
    );
    let mut cases = Vec::new();
    if options.wants("pois-label") || options.wants("pois-generate") {
        cases.extend(label_cases(&graph, runs));
    }
    if options.wants("pois-relabel-file") {
        cases.push(relabel_case(&graph, runs, options.quick));
    }
    if options.wants("pois-verify-commit") || options.wants("pois-verify-space") {
        cases.extend(verify_cases(&graph, runs)?);
    }
    Ok(cases)
}

/// MB/s of labels computed (K × N × 32 bytes per file) by `work` on one file per thread.
fn label_rate(graph: &Graph, work: impl Fn(u64) + Sync) -> f64 {
    let params = graph.params();
    let files = THREADS as u64;
    let start = Instant::now();
    for_each_parallel(files as usize, THREADS, |f| work(f as u64));
    let bytes = files * u64::from(params.layers) * params.file_bytes();
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// The bound: the same messages (header, chain, direct, D expander parents from the same graph)
/// gathered from two layers of labels and hashed, with the result stored, but without the
/// dependency of each label on the one before (nothing waits on a hash).
fn hash_and_gather(graph: &Graph, file: u64) {
    let params = graph.params();
    let nodes = params.nodes() as usize;
    let replica = replica_id(params, &MINER, file);
    let previous: Vec<Label> = (0..nodes).map(|i| [i as u8; 32]).collect();
    let chain: Vec<Label> = (0..nodes).map(|i| [(i >> 3) as u8; 32]).collect();
    let mut out: Vec<Label> = vec![[0; 32]; nodes];
    let mut message = [0u8; 40 + 34 * 32];
    message[..32].copy_from_slice(&replica);
    for layer in 0..u32::from(params.layers) {
        message[32..36].copy_from_slice(&layer.to_le_bytes());
        for index in 0..nodes {
            message[36..40].copy_from_slice(&(index as u32).to_le_bytes());
            let mut len = 40;
            if index > 0 {
                message[len..len + 32].copy_from_slice(&chain[index - 1]);
                len += 32;
            }
            if layer > 0 {
                message[len..len + 32].copy_from_slice(&previous[index]);
                len += 32;
                for &parent in graph.parents(index as u32) {
                    message[len..len + 32].copy_from_slice(&previous[parent as usize]);
                    len += 32;
                }
            }
            out[index] = label_of(&message[..len]);
        }
        black_box(&out);
    }
}

fn label_cases(graph: &Graph, runs: usize) -> Vec<Case> {
    let (mut labelled, mut generated, mut bound) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        bound.push(label_rate(graph, |f| hash_and_gather(graph, f)));
        labelled.push(label_rate(graph, |f| {
            label_layers(
                graph,
                &replica_id(graph.params(), &MINER, f),
                None,
                |_, labels| {
                    black_box(labels);
                },
            )
        }));
        generated.push(label_rate(graph, |f| {
            // A set's first file (the others follow one another; the work per file is the same).
            let first = f * u64::from(graph.params().files_per_set);
            black_box(cess_proofs::pois::commit::generate(
                graph, &MINER, first, None,
            ));
        }));
    }
    let params = graph.params();
    let per_file_s = f64::from(params.layers) * params.file_bytes() as f64
        / 1e6
        / (crate::report::median(&mut labelled.clone()) / THREADS as f64);
    let mut label = Case::from_runs(labelled, bound.clone());
    label.name = "pois-label".into();
    label.metric = "throughput";
    label.unit = "MB/s";
    label.goal = Some(0.8);
    label.baseline =
        "the same messages gathered from the same graph and hashed, no label waiting on another"
            .into();
    label.note = format!(
        "labels of K layers, {THREADS} files at once; one file takes {per_file_s:.2} s on one core \
         (the time to regenerate a deleted idle file)"
    );
    let mut generate = Case::from_runs(generated, bound);
    generate.name = "pois-generate".into();
    generate.metric = "throughput";
    generate.unit = "MB/s";
    generate.baseline = label.baseline.clone();
    generate.note =
        "the whole generation: labels, column digests and both Merkle trees (the honest \
                     bound for a file made ready to commit; no goal)"
            .into();
    vec![label, generate]
}

/// The time bound of a space audit: a miner that deleted an idle file (or any share of its
/// labels: the missing ones need the layers below, which are not kept) must label it again,
/// one label after the other, and the deadline must run out first. Timed: one file labelled
/// alone on one core (the other idle), the attacker's best case on this machine; against the
/// most time a miner can get to answer: the network's deadline, a proposer's clock ahead by
/// the most validators accept, and the block after the deadline (at most a propose timeout).
/// Longer is better here: the ratio is the relabelling time over that window, and its goal
/// (1.5) is the margin left for an attacker's faster core.
fn relabel_case(graph: &Graph, runs: usize, quick: bool) -> Case {
    let mut seconds = Vec::new();
    for run in 0..runs {
        let replica = replica_id(graph.params(), &MINER, run as u64);
        let start = Instant::now();
        label_layers(graph, &replica, None, |_, labels| {
            black_box(labels);
        });
        seconds.push(start.elapsed().as_secs_f64());
    }
    let ledger = cess_consensus::LedgerParams::default();
    let window_ms = ledger.pois_space_deadline_ms
        + cess_consensus::bft::TIME_AHEAD_MS_MAX
        + cess_consensus::bft::CoreConfig::default()
            .timeouts
            .propose_ms;
    let window_s = window_ms as f64 / 1000.0;
    let params = graph.params();
    let mut case = Case::from_runs(seconds, vec![window_s]);
    case.name = "pois-relabel-file".into();
    case.metric = "time";
    case.unit = "s";
    case.goal = Some(1.5);
    case.baseline = format!(
        "the most a miner gets to answer a space audit: pois_space_deadline_ms ({} s) + \
         TIME_AHEAD_MS_MAX + a propose timeout",
        ledger.pois_space_deadline_ms / 1000
    );
    case.note = format!(
        "one {} MiB idle file (K = {}, N = 2^{}) labelled on one core; longer is better: a \
         deleted file cannot be rebuilt before the deadline{}",
        params.file_bytes() >> 20,
        params.layers,
        params.nodes_log2,
        if quick {
            " (quick: small files, the ratio means nothing)"
        } else {
            ""
        }
    );
    case
}

/// One real set, certified among `certified_sets` others (the ledger's table of the miner's
/// commitments), and the median time to look up and verify its commit proof and a space proof.
struct Certified {
    commitments: BTreeMap<u64, FileCommitment>,
    sets: Vec<u64>,
}

impl Certified {
    /// `count` sets, all carrying the real set's roots (a verifier cannot tell, and the real
    /// files back every one of them).
    fn new(params: &PoisParams, real: &[FileCommitment], count: u64) -> Certified {
        let files = u64::from(params.files_per_set);
        let mut commitments = BTreeMap::new();
        for set in 0..count {
            for (offset, commitment) in real.iter().enumerate() {
                commitments.insert(set * files + offset as u64, *commitment);
            }
        }
        Certified {
            commitments,
            sets: (0..count).map(|s| s * files).collect(),
        }
    }

    fn set(&self, params: &PoisParams, first: u64) -> Vec<FileCommitment> {
        self.commitments
            .range(first..first + u64::from(params.files_per_set))
            .map(|(_, c)| *c)
            .collect()
    }
}

fn verify_cases(graph: &Graph, runs: usize) -> Result<Vec<Case>, String> {
    let params = *graph.params();
    let files: Mutex<Vec<cess_proofs::pois::IdleFile>> = Mutex::new(Vec::new());
    generate_sets(graph, &MINER, &[0], THREADS, &|f| {
        files.lock().expect("no panic").push(f)
    });
    let mut files = files.into_inner().map_err(|_| "poisoned")?;
    files.sort_by_key(|f| f.index);
    let real: Vec<FileCommitment> = files.iter().map(|f| f.commitment).collect();
    let randomness = [0x77; 32];
    let challenge = CommitChallenge::derive(&params, &MINER, 0, &real, &randomness);
    let commit_bytes = prove_commit(graph, &MINER, &challenge).encode();
    let small = Certified::new(&params, &real, 10);
    let large = Certified::new(&params, &real, 100);

    let verify_commit_ms = |certified: &Certified| -> Result<f64, String> {
        let reps = 20;
        let start = Instant::now();
        for _ in 0..reps {
            let commitments = certified.set(&params, 0);
            let challenge = CommitChallenge::derive(&params, &MINER, 0, &commitments, &randomness);
            let proof = CommitProof::decode(&commit_bytes, &params).map_err(|e| e.to_string())?;
            verify_commit(&params, &MINER, &commitments, &challenge, &proof)
                .map_err(|e| e.to_string())?;
        }
        Ok(start.elapsed().as_secs_f64() * 1000.0 / reps as f64)
    };
    let views: Vec<Option<&[u8]>> = files.iter().map(|f| Some(&f.bytes[..])).collect();
    let prove_ms = Mutex::new(Vec::new());
    let verify_space_ms = |certified: &Certified| -> Result<f64, String> {
        // Each answer is proven first (4 trees of 2^21 leaves on the network): few reps.
        let reps = 4;
        let mut total = 0.0;
        for round in 0..reps {
            let challenge =
                SpaceChallenge::derive(&params, &MINER, round, &randomness, &certified.sets)
                    .ok_or("no set")?;
            let start = Instant::now();
            let bytes = prove_space(&params, &challenge, &views).encode();
            prove_ms
                .lock()
                .expect("no panic")
                .push(start.elapsed().as_secs_f64() * 1000.0);
            let start = Instant::now();
            let roots: Vec<_> = certified
                .set(&params, challenge.first_file)
                .iter()
                .map(|c| Some(c.last_root))
                .collect();
            let challenge =
                SpaceChallenge::derive(&params, &MINER, round, &randomness, &certified.sets)
                    .ok_or("no set")?;
            let proof = SpaceProof::decode(&bytes, &params).map_err(|e| e.to_string())?;
            verify_space(&params, &roots, &challenge, &proof).map_err(|e| e.to_string())?;
            total += start.elapsed().as_secs_f64() * 1000.0;
        }
        Ok(total / reps as f64)
    };
    let (mut commit_small, mut commit_large, mut space_small, mut space_large) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        commit_small.push(verify_commit_ms(&small)?);
        commit_large.push(verify_commit_ms(&large)?);
        space_small.push(verify_space_ms(&small)?);
        space_large.push(verify_space_ms(&large)?);
    }
    let set_mib = params.set_bytes() >> 20;
    let mut commit = Case::from_times(
        "pois-verify-commit".into(),
        commit_large,
        commit_small,
        format!("the same with 10 sets certified ({} MiB)", 10 * set_mib),
    );
    commit.goal = Some(0.9);
    commit.note = format!(
        "decode and verify one set's commit proof ({} bytes) with 100 sets certified ({} MiB)",
        commit_bytes.len(),
        100 * set_mib
    );
    let mut space = Case::from_times(
        "pois-verify-space".into(),
        space_large,
        space_small,
        format!("the same with 10 sets certified ({} MiB)", 10 * set_mib),
    );
    space.goal = Some(0.9);
    let mut prove_ms = prove_ms.into_inner().map_err(|_| "poisoned")?;
    space.note = format!(
        "derive, decode and verify one space proof ({} bytes at most) with 100 sets certified; \
         the honest answer (the set's trees hashed from its files in memory) takes {:.0} ms",
        params.space_proof_bytes_max(),
        crate::report::median(&mut prove_ms)
    );
    Ok(vec![commit, space])
}
