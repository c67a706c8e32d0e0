//! PoIS: an honest miner passes certification and space challenges; every way of cheating
//! listed in the issue is refused; a miner that faked or dropped a share of its labels passes
//! at the rate the written bound says, measured on the real challenge derivations.

use cess_proofs::pois::commit::{
    CommitError, commit_pass_probability, commitment_from_layers, open_from_layers,
};
use cess_proofs::pois::label::{reference_layers, reference_layers_with};
use cess_proofs::pois::space::space_pass_probability;
use cess_proofs::pois::{
    CommitChallenge, CommitProof, FileCommitment, Graph, Label, PoisParams, SpaceChallenge,
    SpaceError, SpaceProof, generate_sets, prove_commit, prove_space, replica_id, verify_commit,
    verify_space,
};
use std::sync::Mutex;

const PARAMS: PoisParams = PoisParams::TEST;
const MINER: [u8; 32] = [0xA1; 32];
const OTHER: [u8; 32] = [0xB2; 32];

fn randomness(i: u64) -> [u8; 32] {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

/// An honest miner's set: every layer of every file (the tests' prover) and its commitments.
fn honest_set(miner: &[u8; 32], first: u64) -> (Vec<Vec<Vec<Label>>>, Vec<FileCommitment>) {
    let layers: Vec<_> = (0..u64::from(PARAMS.files_per_set))
        .map(|f| reference_layers(&PARAMS, miner, first + f))
        .collect();
    let commitments = layers.iter().map(|l| commitment_from_layers(l)).collect();
    (layers, commitments)
}

/// A set labelled by the definition in `params` (the replicas of `PARAMS`), file after file,
/// each label passed through `choose(file, layer, index, honest)`: the cheating miners.
fn chained_set(
    params: &PoisParams,
    miner: &[u8; 32],
    first: u64,
    mut choose: impl FnMut(u64, u32, u32, Label) -> Label,
) -> Vec<Vec<Vec<Label>>> {
    let mut set: Vec<Vec<Vec<Label>>> = Vec::new();
    for file in first..first + u64::from(PARAMS.files_per_set) {
        let previous = set.last().map(|layers| layers[layers.len() - 1].clone());
        let replica = replica_id(&PARAMS, miner, file);
        set.push(reference_layers_with(
            params,
            &replica,
            previous.as_deref(),
            |l, i, label| choose(file, l, i, label),
        ));
    }
    set
}

fn prove_from_layers(layers: &[Vec<Vec<Label>>], challenge: &CommitChallenge) -> CommitProof {
    CommitProof {
        openings: layers
            .iter()
            .enumerate()
            .flat_map(|(offset, l)| {
                let previous = offset.checked_sub(1).map(|p| &layers[p][3][..]);
                open_from_layers(
                    &PARAMS,
                    l,
                    previous,
                    challenge.file_indices(&PARAMS, offset),
                )
            })
            .collect(),
    }
}

#[test]
fn an_honest_miner_is_certified_and_passes_its_space_challenges() {
    let graph = Graph::new(&PARAMS);
    let files = Mutex::new(Vec::new());
    generate_sets(&graph, &MINER, &[8], 2, &|file| {
        files.lock().unwrap().push(file)
    });
    let mut files = files.into_inner().unwrap();
    files.sort_by_key(|f| f.index);
    let commitments: Vec<_> = files.iter().map(|f| f.commitment).collect();
    for round in 0..8 {
        let challenge =
            CommitChallenge::derive(&PARAMS, &MINER, 8, &commitments, &randomness(round));
        let proof = prove_commit(&graph, &MINER, &challenge);
        let decoded = CommitProof::decode(&proof.encode(), &PARAMS).unwrap();
        verify_commit(&PARAMS, &MINER, &commitments, &challenge, &decoded).unwrap();
    }
    let roots: Vec<_> = commitments.iter().map(|c| Some(c.last_root)).collect();
    for round in 0..8 {
        let challenge =
            SpaceChallenge::derive(&PARAMS, &MINER, round, &randomness(round), &[0, 8]).unwrap();
        if challenge.first_file != 8 {
            continue;
        }
        let bytes: Vec<Option<&[u8]>> = files.iter().map(|f| Some(&f.bytes[..])).collect();
        let proof = prove_space(&PARAMS, &challenge, &bytes);
        let decoded = SpaceProof::decode(&proof.encode(), &PARAMS).unwrap();
        verify_space(&PARAMS, &roots, &challenge, &decoded).unwrap();
    }
    assert_eq!(
        SpaceChallenge::derive(&PARAMS, &MINER, 0, &randomness(0), &[]),
        None
    );
}

#[test]
fn wrong_labels_wrong_parents_other_indices_other_miners_and_early_answers_are_refused() {
    let (layers, commitments) = honest_set(&MINER, 0);
    let challenge = CommitChallenge::derive(&PARAMS, &MINER, 0, &commitments, &randomness(1));
    let proof = prove_from_layers(&layers, &challenge);
    verify_commit(&PARAMS, &MINER, &commitments, &challenge, &proof).unwrap();

    // A wrong label in an opened column: its path no longer reaches the root.
    let mut bad = proof.clone();
    bad.openings[0].columns[0].labels[1][0] ^= 1;
    assert!(matches!(
        verify_commit(&PARAMS, &MINER, &commitments, &challenge, &bad),
        Err(CommitError::ColumnPath { file: 0, .. })
    ));

    // A miner that made up layer 2 of its first file (a constant, cheap to recompute),
    // labelled the rest honestly over it, and committed to that.
    let faked_layers = chained_set(&PARAMS, &MINER, 0, |file, layer, _, label| {
        if file == 0 && layer == 2 {
            [0x5A; 32]
        } else {
            label
        }
    });
    let faked_commitments: Vec<_> = faked_layers
        .iter()
        .map(|l| commitment_from_layers(l))
        .collect();
    let challenge_f =
        CommitChallenge::derive(&PARAMS, &MINER, 0, &faked_commitments, &randomness(1));
    let proof_f = prove_from_layers(&faked_layers, &challenge_f);
    let result = verify_commit(&PARAMS, &MINER, &faked_commitments, &challenge_f, &proof_f);
    assert!(
        matches!(
            result,
            Err(CommitError::Label {
                file: 0,
                layer: 2,
                ..
            })
        ),
        "{result:?}"
    );

    // Wrong parents: labels computed over another graph (degree 3), consistently committed.
    let cheap = PoisParams {
        degree: 3,
        ..PARAMS
    };
    let wrong_graph = chained_set(&cheap, &MINER, 0, |_, _, _, l| l);
    let wrong_commitments: Vec<_> = wrong_graph
        .iter()
        .map(|l| commitment_from_layers(l))
        .collect();
    let challenge_w =
        CommitChallenge::derive(&PARAMS, &MINER, 0, &wrong_commitments, &randomness(2));
    let proof_w = CommitProof {
        openings: wrong_graph
            .iter()
            .enumerate()
            .flat_map(|(offset, l)| {
                let previous = offset.checked_sub(1).map(|p| &wrong_graph[p][3][..]);
                open_from_layers(
                    &PARAMS,
                    l,
                    previous,
                    challenge_w.file_indices(&PARAMS, offset),
                )
            })
            .collect(),
    };
    assert!(matches!(
        verify_commit(&PARAMS, &MINER, &wrong_commitments, &challenge_w, &proof_w),
        Err(CommitError::Label { layer: 1.., .. })
    ));

    // Openings for other indices: the first two swapped.
    let mut swapped = proof.clone();
    swapped.openings.swap(0, 1);
    if challenge.indices[0] != challenge.indices[1] {
        assert!(verify_commit(&PARAMS, &MINER, &commitments, &challenge, &swapped).is_err());
    }
    // The last label's path given for the neighbouring index.
    let mut moved = proof.clone();
    let c0 = challenge.indices[0];
    let tree_layers = &layers[0];
    let neighbour = open_from_layers(&PARAMS, tree_layers, None, &[c0 ^ 1]);
    moved.openings[0].last_path = neighbour[0].last_path.clone();
    assert!(matches!(
        verify_commit(&PARAMS, &MINER, &commitments, &challenge, &moved),
        Err(CommitError::LastPath { file: 0, .. })
    ));

    // Another miner's files and proof presented as its own.
    let challenge_o = CommitChallenge::derive(&PARAMS, &OTHER, 0, &commitments, &randomness(1));
    let proof_o = prove_from_layers(&layers, &challenge_o);
    assert!(matches!(
        verify_commit(&PARAMS, &OTHER, &commitments, &challenge_o, &proof_o),
        Err(CommitError::Label { layer: 0, .. })
    ));
    // The same files under other numbers.
    let challenge_n = CommitChallenge::derive(&PARAMS, &MINER, 4, &commitments, &randomness(1));
    let proof_n = prove_from_layers(&layers, &challenge_n);
    assert!(matches!(
        verify_commit(&PARAMS, &MINER, &commitments, &challenge_n, &proof_n),
        Err(CommitError::Label { .. })
    ));

    // An answer made before the challenge existed (for a guessed randomness) does not answer
    // the real one.
    let guessed = CommitChallenge::derive(&PARAMS, &MINER, 0, &commitments, &randomness(99));
    let early = prove_from_layers(&layers, &guessed);
    let real = CommitChallenge::derive(&PARAMS, &MINER, 0, &commitments, &randomness(100));
    assert_ne!(guessed, real);
    assert!(verify_commit(&PARAMS, &MINER, &commitments, &real, &early).is_err());

    // The previous file's label left out of an opening of file 1, or another one given.
    let offset_1 = usize::from(PARAMS.commit_challenges_per_file);
    let mut without = proof.clone();
    without.openings[offset_1].previous = None;
    assert!(matches!(
        verify_commit(&PARAMS, &MINER, &commitments, &challenge, &without),
        Err(CommitError::Shape(_))
    ));
    let mut other = proof.clone();
    other.openings[offset_1].previous.as_mut().unwrap().label[0] ^= 1;
    assert!(matches!(
        verify_commit(&PARAMS, &MINER, &commitments, &challenge, &other),
        Err(CommitError::PreviousPath { file: 1, .. })
    ));

    // Shapes: too few openings, too few commitments.
    let mut short = proof.clone();
    short.openings.pop();
    assert!(matches!(
        verify_commit(&PARAMS, &MINER, &commitments, &challenge, &short),
        Err(CommitError::Shape(_))
    ));
    assert!(matches!(
        verify_commit(&PARAMS, &MINER, &commitments[1..], &challenge, &proof),
        Err(CommitError::Shape(_))
    ));
}

/// A miner whose last layer is garbage (not the hash of its parents) at a fraction of the
/// indices, everything after computed honestly from it, passes certification at
/// (1 − fraction)^(F·c): measured over 600 challenges.
#[test]
fn a_miner_that_faked_a_share_of_its_labels_is_certified_at_the_written_rate() {
    let faked_share = 0.1;
    let nodes = PARAMS.nodes();
    let faked_count = (f64::from(nodes) * faked_share) as u32;
    let layers = chained_set(&PARAMS, &MINER, 0, |_, layer, index, label| {
        // Every 10th index, from a seed: cheap to recompute, not a hash of parents.
        let faked =
            layer == u32::from(PARAMS.layers) - 1 && index % 10 == 3 && index / 10 < faked_count;
        if faked {
            *blake3::hash(&index.to_le_bytes()).as_bytes()
        } else {
            label
        }
    });
    let share = f64::from(faked_count) / f64::from(nodes);
    let commitments: Vec<_> = layers.iter().map(|l| commitment_from_layers(l)).collect();
    let trials = 600;
    let mut passed = 0;
    for t in 0..trials {
        let challenge = CommitChallenge::derive(&PARAMS, &MINER, 0, &commitments, &randomness(t));
        let proof = prove_from_layers(&layers, &challenge);
        if verify_commit(&PARAMS, &MINER, &commitments, &challenge, &proof).is_ok() {
            passed += 1;
        }
    }
    let measured = f64::from(passed) / trials as f64;
    let expected = commit_pass_probability(&PARAMS, share);
    eprintln!("certification with {share:.3} faked: passed {measured:.3}, bound {expected:.3}");
    // Binomial standard deviation at p ≈ 0.43, n = 600: 0.02; allow four.
    assert!(
        (measured - expected).abs() < 0.08,
        "passed {measured:.3}, the bound says {expected:.3}"
    );
}

/// A miner keeping a fraction of each file's labels passes a space challenge at kept^(F·S);
/// one keeping some of its sets whole passes at the share of sets kept. Measured over the real
/// derivation; a proof with a made-up label is refused.
#[test]
fn a_miner_that_dropped_labels_or_sets_passes_space_challenges_at_the_written_rate() {
    let graph = Graph::new(&PARAMS);
    let files = Mutex::new(Vec::new());
    generate_sets(&graph, &MINER, &[0], 2, &|file| {
        files.lock().unwrap().push(file)
    });
    let mut files = files.into_inner().unwrap();
    files.sort_by_key(|f| f.index);
    let roots: Vec<_> = files.iter().map(|f| Some(f.commitment.last_root)).collect();

    let kept_share = 0.9;
    let kept = |file: usize, index: u32| {
        // A fixed, file-dependent tenth of the indices is dropped.
        !((index
            .wrapping_mul(2_654_435_761)
            .wrapping_add(file as u32 * 97)
            >> 8)
            .is_multiple_of(10))
    };
    let measured_kept =
        (0..PARAMS.nodes()).filter(|&i| kept(0, i)).count() as f64 / f64::from(PARAMS.nodes());
    assert!((measured_kept - kept_share).abs() < 0.03, "{measured_kept}");
    let trials = 3000;
    let mut passed = 0;
    for round in 0..trials {
        let challenge =
            SpaceChallenge::derive(&PARAMS, &MINER, round, &randomness(round), &[0]).unwrap();
        let honest = (0..usize::from(PARAMS.files_per_set)).all(|f| {
            challenge
                .file_indices(&PARAMS, f)
                .iter()
                .all(|&i| kept(f, i))
        });
        if honest {
            passed += 1;
        } else if round < 20 {
            // What such a miner can send: its kept labels, and made-up ones for the rest.
            let bytes: Vec<Option<&[u8]>> = files.iter().map(|f| Some(&f.bytes[..])).collect();
            let mut proof = prove_space(&PARAMS, &challenge, &bytes);
            for (f, file) in proof.files.iter_mut().enumerate() {
                for (opening, &i) in file.iter_mut().zip(challenge.file_indices(&PARAMS, f)) {
                    if !kept(f, i) {
                        opening.label = [0; 32];
                    }
                }
            }
            assert!(matches!(
                verify_space(&PARAMS, &roots, &challenge, &proof),
                Err(SpaceError::Path { .. })
            ));
        }
    }
    let measured = f64::from(passed as u32) / trials as f64;
    let expected = space_pass_probability(&PARAMS, measured_kept);
    eprintln!("space with {measured_kept:.3} kept: passed {measured:.3}, bound {expected:.3}");
    // p ≈ 0.19, n = 3000: standard deviation 0.007; allow five.
    assert!(
        (measured - expected).abs() < 0.035,
        "passed {measured:.3}, the bound says {expected:.3}"
    );

    // Whole sets: 10 certified, 7 kept.
    let sets: Vec<u64> = (0..10)
        .map(|s| s * u64::from(PARAMS.files_per_set))
        .collect();
    let kept_sets = &sets[..7];
    let chosen_kept = (0..trials)
        .filter(|&round| {
            let challenge =
                SpaceChallenge::derive(&PARAMS, &MINER, round, &randomness(round), &sets).unwrap();
            kept_sets.contains(&challenge.first_file)
        })
        .count();
    let measured = chosen_kept as f64 / trials as f64;
    assert!((measured - 0.7).abs() < 0.05, "{measured}");
}

#[test]
fn a_replaced_file_is_no_longer_challenged_and_nothing_else_may_be_left_out() {
    let graph = Graph::new(&PARAMS);
    let files = Mutex::new(Vec::new());
    generate_sets(&graph, &MINER, &[0], 1, &|file| {
        files.lock().unwrap().push(file)
    });
    let mut files = files.into_inner().unwrap();
    files.sort_by_key(|f| f.index);
    let challenge = SpaceChallenge::derive(&PARAMS, &MINER, 3, &randomness(3), &[0]).unwrap();
    let mut roots: Vec<_> = files.iter().map(|f| Some(f.commitment.last_root)).collect();
    roots[2] = None;
    let mut bytes: Vec<Option<&[u8]>> = files.iter().map(|f| Some(&f.bytes[..])).collect();
    bytes[2] = None;
    let proof = prove_space(&PARAMS, &challenge, &bytes);
    verify_space(&PARAMS, &roots, &challenge, &proof).unwrap();
    // A live file left out.
    bytes[1] = None;
    let short = prove_space(&PARAMS, &challenge, &bytes);
    assert!(matches!(
        verify_space(&PARAMS, &roots, &challenge, &short),
        Err(SpaceError::Shape(_))
    ));
    // Another file's labels for file 1.
    let mut moved = proof.clone();
    moved.files.swap(0, 1);
    assert!(matches!(
        verify_space(&PARAMS, &roots, &challenge, &moved),
        Err(SpaceError::Path { .. })
    ));
}

#[test]
fn the_decoders_refuse_truncated_extended_and_mutated_proofs_without_panicking() {
    let (layers, commitments) = honest_set(&MINER, 0);
    let challenge = CommitChallenge::derive(&PARAMS, &MINER, 0, &commitments, &randomness(7));
    let commit = prove_from_layers(&layers, &challenge).encode();
    let space_challenge = SpaceChallenge::derive(&PARAMS, &MINER, 1, &randomness(1), &[0]).unwrap();
    let bytes: Vec<Vec<u8>> = layers.iter().map(|l| l[3].concat()).collect();
    let views: Vec<Option<&[u8]>> = bytes.iter().map(|b| Some(&b[..])).collect();
    let space = prove_space(&PARAMS, &space_challenge, &views).encode();
    for cut in [0, 7, 8, 9, 10, 50, commit.len() - 1] {
        assert!(
            CommitProof::decode(&commit[..cut], &PARAMS).is_err(),
            "cut {cut}"
        );
    }
    for cut in [0, 9, 10, 11, space.len() - 1] {
        assert!(
            SpaceProof::decode(&space[..cut], &PARAMS).is_err(),
            "cut {cut}"
        );
    }
    let mut longer = commit.clone();
    longer.push(0);
    assert!(CommitProof::decode(&longer, &PARAMS).is_err());
    let mut longer = space.clone();
    longer.push(0);
    assert!(SpaceProof::decode(&longer, &PARAMS).is_err());
    // Counts past the parameters' bounds are refused before anything is read under them.
    let mut many = commit.clone();
    many[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(CommitProof::decode(&many, &PARAMS).is_err());
    let mut many = space.clone();
    many[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(SpaceProof::decode(&many, &PARAMS).is_err());
    // Every single-byte mutation either fails to decode or fails to verify.
    let roots: Vec<_> = commitments.iter().map(|c| Some(c.last_root)).collect();
    for at in (0..commit.len()).step_by(97) {
        let mut mutated = commit.clone();
        mutated[at] ^= 0x40;
        if let Ok(proof) = CommitProof::decode(&mutated, &PARAMS) {
            assert!(
                verify_commit(&PARAMS, &MINER, &commitments, &challenge, &proof).is_err(),
                "byte {at}"
            );
        }
    }
    for at in 0..space.len() {
        let mut mutated = space.clone();
        mutated[at] ^= 0x40;
        if let Ok(proof) = SpaceProof::decode(&mutated, &PARAMS) {
            assert!(
                verify_space(&PARAMS, &roots, &space_challenge, &proof).is_err(),
                "byte {at}"
            );
        }
    }
    // Parameters outside their bounds are refused by the decoders too.
    let wild = PoisParams {
        degree: 200,
        ..PARAMS
    };
    assert!(CommitProof::decode(&commit, &wild).is_err());
}
