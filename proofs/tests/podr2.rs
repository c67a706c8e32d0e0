//! Completeness and soundness of PoDR² (eco-reliability §B4): honest proofs verify across
//! parameters; every tampering, replay or substitution is rejected.

mod common;

use cess_proofs::challenge::ChallengeParams;
use cess_proofs::proof::BatchItem;
use cess_proofs::tag::tag_fragment_naive;
use cess_proofs::{
    Challenge, ChallengeInputs, CpuBackend, FragmentId, FragmentSet, InvalidReason, Proof,
    ProveError, Tags, Verdict, batch_verify, prove, tag_fragment, verify,
};
use common::{MINER, MemSource, challenge, key, store};

fn prove_ok(pk: &cess_proofs::PublicKey, ch: &Challenge, source: &mut MemSource) -> Proof {
    prove(pk, ch, source, &CpuBackend).expect("prove").0
}

fn small_params() -> ChallengeParams {
    ChallengeParams {
        fragments_max: 4,
        blocks_max: 12,
    }
}

#[test]
fn honest_proofs_verify_across_parameters_and_fragment_counts() {
    for (s, lens) in [
        (1u32, vec![31usize, 100]),
        (7, vec![217, 500, 1000]),
        (64, vec![5000, 1984]),
    ] {
        let key = key(s as u8, s);
        let pk = key.public();
        for count in [1usize, 3, 20] {
            let (mut source, set) = store(&key, count, &lens, u64::from(s) * 100 + count as u64);
            for params in [small_params(), ChallengeParams::default()] {
                let ch = challenge(pk, &set, 9, 1, params);
                assert!(ch.fragments().len() <= params.fragments_max as usize);
                let (proof, stats) = prove(pk, &ch, &mut source, &CpuBackend).expect("prove");
                assert_eq!(stats.blocks, ch.block_total());
                assert_eq!(
                    verify(pk, &ch, &proof, &CpuBackend),
                    Verdict::Valid,
                    "s={s} n={count}"
                );
                let decoded = Proof::decode(&proof.encode()).expect("decode");
                assert_eq!(verify(pk, &ch, &decoded, &CpuBackend), Verdict::Valid);
            }
        }
    }
}

#[test]
fn proof_size_does_not_depend_on_how_many_fragments_are_challenged() {
    let key = key(1, 16);
    let pk = key.public();
    let (mut one, set_one) = store(&key, 1, &[2000], 1);
    let (mut many, set_many) = store(&key, 40, &[2000], 2);
    let a = prove_ok(
        pk,
        &challenge(pk, &set_one, 1, 1, ChallengeParams::default()),
        &mut one,
    );
    let b = prove_ok(
        pk,
        &challenge(pk, &set_many, 1, 1, ChallengeParams::default()),
        &mut many,
    );
    assert_eq!(a.encode().len(), b.encode().len());
    assert_eq!(a.encode().len(), Proof::encoded_len(16));
}

#[test]
fn fast_tags_equal_the_textbook_msm_tags() {
    for s in [1u32, 5, 32] {
        let key = key(3, s);
        let data: Vec<u8> = (0..(31 * s as usize * 3 + 17))
            .map(|k| (k * 7 + 3) as u8)
            .collect();
        let id = FragmentId([5u8; 32]);
        let fast = tag_fragment(&key, &CpuBackend, &id, &data).unwrap();
        let naive = tag_fragment_naive(&key, &CpuBackend, &id, &data).unwrap();
        assert_eq!(fast, naive, "s={s}");
        assert_eq!(fast.block_count(), 4);
        assert_eq!(Tags::decode(&fast.encode()).unwrap(), fast);
    }
}

/// Flip one bit of the challenged data: the miner's proof no longer verifies.
#[test]
fn a_flipped_bit_in_challenged_data_is_caught() {
    let key = key(2, 8);
    let pk = key.public();
    let (source, set) = store(&key, 5, &[1000], 3);
    let ch = challenge(pk, &set, 2, 7, small_params());
    let target = &ch.fragments()[0];
    let offset = target.blocks[0].index as usize * 31 * 8;
    for bit in [0usize, 7, 100, 8 * 31 * 8 - 1] {
        let mut corrupt = source.clone();
        let data = corrupt.data.get_mut(&target.id).unwrap();
        let at = (offset + bit / 8).min(data.len() - 1);
        data[at] ^= 1 << (bit % 8);
        let proof = prove_ok(pk, &ch, &mut corrupt);
        assert_eq!(
            verify(pk, &ch, &proof, &CpuBackend),
            Verdict::Invalid(InvalidReason::EquationFails),
            "bit {bit}"
        );
    }
}

/// A missing challenged block, answered with zeros, or with another block's bytes.
#[test]
fn a_missing_or_substituted_block_is_caught() {
    let key = key(4, 8);
    let pk = key.public();
    let (source, set) = store(&key, 3, &[2480], 4);
    let ch = challenge(pk, &set, 3, 1, small_params());
    let target = &ch.fragments()[0];
    let block = target.blocks[0].index as usize;
    let range = block * 248..((block + 1) * 248).min(target.len_bytes as usize);

    let mut zeroed = source.clone();
    zeroed.data.get_mut(&target.id).unwrap()[range.clone()].fill(0);
    let proof = prove_ok(pk, &ch, &mut zeroed);
    assert_eq!(
        verify(pk, &ch, &proof, &CpuBackend),
        Verdict::Invalid(InvalidReason::EquationFails)
    );

    let mut swapped = source.clone();
    let data = swapped.data.get_mut(&target.id).unwrap();
    let other = if block == 0 { 1 } else { 0 };
    let replacement = data[other * 248..(other + 1) * 248].to_vec();
    data[range.clone()].copy_from_slice(&replacement[..range.len()]);
    let proof = prove_ok(pk, &ch, &mut swapped);
    assert_eq!(
        verify(pk, &ch, &proof, &CpuBackend),
        Verdict::Invalid(InvalidReason::EquationFails)
    );

    let mut gone = source.clone();
    gone.data.remove(&target.id);
    assert!(matches!(
        prove(pk, &ch, &mut gone, &CpuBackend),
        Err(ProveError::Source { .. })
    ));
}

/// Two challenged blocks' bytes swapped with each other (reordered data).
#[test]
fn reordered_blocks_are_caught() {
    let key = key(14, 8);
    let pk = key.public();
    let (source, set) = store(&key, 1, &[248 * 10], 14);
    let ch = challenge(pk, &set, 8, 1, small_params());
    let target = &ch.fragments()[0];
    let (a, b) = (
        target.blocks[0].index as usize,
        target.blocks[1].index as usize,
    );
    let mut reordered = source.clone();
    let data = reordered.data.get_mut(&target.id).unwrap();
    let block_a = data[a * 248..(a + 1) * 248].to_vec();
    data.copy_within(b * 248..(b + 1) * 248, a * 248);
    data[b * 248..(b + 1) * 248].copy_from_slice(&block_a);
    let proof = prove_ok(pk, &ch, &mut reordered);
    assert_eq!(
        verify(pk, &ch, &proof, &CpuBackend),
        Verdict::Invalid(InvalidReason::EquationFails)
    );
}

/// One bit of a stored tag: either refused at decode, or a valid point that fails the check.
#[test]
fn a_flipped_bit_in_a_tag_is_caught() {
    let key = key(5, 4);
    let pk = key.public();
    let (source, set) = store(&key, 2, &[1000], 5);
    let ch = challenge(pk, &set, 4, 1, small_params());
    let target = &ch.fragments()[0];
    let header = 8 + 4 + 8 + 32 + 32;
    let tag_at = header + target.blocks[0].index as usize * 48;
    let (mut refused, mut rejected) = (0, 0);
    for bit in 0..(48 * 8) {
        let mut corrupt = source.clone();
        corrupt.tags.get_mut(&target.id).unwrap()[tag_at + bit / 8] ^= 1 << (bit % 8);
        match prove(pk, &ch, &mut corrupt, &CpuBackend) {
            Err(ProveError::Tags { .. }) => refused += 1,
            Ok((proof, _)) => {
                assert_ne!(
                    verify(pk, &ch, &proof, &CpuBackend),
                    Verdict::Valid,
                    "bit {bit}"
                );
                rejected += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(refused + rejected, 384);
    assert!(refused > 0);
}

/// Tags of fragment A presented as the tags of fragment B (same bytes, another id).
#[test]
fn the_tags_of_one_fragment_do_not_serve_another() {
    let key = key(6, 4);
    let pk = key.public();
    let data: Vec<u8> = (0..600u32).map(|k| (k * 13) as u8).collect();
    let (id_a, id_b) = (FragmentId([0xAA; 32]), FragmentId([0xBB; 32]));
    let tags_a = tag_fragment(&key, &CpuBackend, &id_a, &data)
        .unwrap()
        .encode();
    let mut relabelled = tags_a.clone();
    relabelled[52..84].copy_from_slice(id_b.as_bytes());
    let mut source = MemSource::default();
    source.data.insert(id_b, data.clone());
    source.tags.insert(id_b, relabelled);
    let set = FragmentSet::new(vec![(id_b, data.len() as u64)]).unwrap();
    let ch = challenge(pk, &set, 1, 1, small_params());
    let proof = prove_ok(pk, &ch, &mut source);
    assert_eq!(
        verify(pk, &ch, &proof, &CpuBackend),
        Verdict::Invalid(InvalidReason::EquationFails)
    );

    // Unrelabelled, the prover refuses outright.
    source.tags.insert(id_b, tags_a);
    assert!(matches!(
        prove(pk, &ch, &mut source, &CpuBackend),
        Err(ProveError::TagsMismatch { .. })
    ));
}

#[test]
fn flipped_bits_in_the_proof_are_refused_or_rejected() {
    let key = key(7, 4);
    let pk = key.public();
    let (mut source, set) = store(&key, 3, &[700], 7);
    let ch = challenge(pk, &set, 5, 1, small_params());
    let encoded = prove_ok(pk, &ch, &mut source).encode();
    let (mut refused, mut rejected) = (0, 0);
    for bit in (12 * 8)..(encoded.len() * 8) {
        let mut bytes = encoded.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        match Proof::decode(&bytes) {
            Err(_) => refused += 1,
            Ok(proof) => {
                assert_ne!(
                    verify(pk, &ch, &proof, &CpuBackend),
                    Verdict::Valid,
                    "bit {bit}"
                );
                rejected += 1;
            }
        }
    }
    assert!(
        refused > 0 && rejected > 0,
        "refused {refused}, rejected {rejected}"
    );
}

#[test]
fn a_tampered_challenge_rejects_the_proof() {
    let key = key(8, 4);
    let pk = key.public();
    let (mut source, set) = store(&key, 6, &[900], 8);
    let ch = challenge(pk, &set, 6, 1, small_params());
    let proof = prove_ok(pk, &ch, &mut source);
    let encoded = ch.encode();
    let mut checked = 0;
    // Skip the magic, seed and tagger (they do not enter the equation; the tagger is
    // compared); flip every bit of the rest.
    for bit in (72 * 8)..(encoded.len() * 8) {
        let mut bytes = encoded.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        if let Ok(tampered) = Challenge::decode(&bytes) {
            // A fragment's length only bounds its block indices; a flip there that leaves
            // every (fragment, block, ν) the same asks for exactly the same proof.
            let same_question = tampered.fragments().len() == ch.fragments().len()
                && tampered
                    .fragments()
                    .iter()
                    .zip(ch.fragments())
                    .all(|(t, o)| t.id == o.id && t.blocks == o.blocks);
            if same_question {
                continue;
            }
            assert_ne!(
                verify(pk, &tampered, &proof, &CpuBackend),
                Verdict::Valid,
                "bit {bit}"
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} tampered challenges decoded");
}

/// A proof answers one (epoch, miner, round, tagger, fragment set) and nothing else.
#[test]
fn a_proof_replayed_for_other_public_inputs_is_rejected() {
    let key_a = key(9, 4);
    let key_b = key(10, 4);
    let pk = key_a.public();
    let (mut source, set) = store(&key_a, 5, &[800], 9);
    let params = small_params();
    let inputs = ChallengeInputs {
        epoch_randomness: [1; 32],
        miner: MINER,
        round: 1,
        tagger: pk,
        set: &set,
        params,
    };
    let ch = Challenge::derive(&inputs).unwrap();
    let proof = prove_ok(pk, &ch, &mut source);
    assert_eq!(verify(pk, &ch, &proof, &CpuBackend), Verdict::Valid);

    let mut fewer = set.entries().to_vec();
    fewer.pop();
    let other_set = FragmentSet::new(fewer).unwrap();
    let variants = [
        ChallengeInputs {
            epoch_randomness: [2; 32],
            ..inputs
        },
        ChallengeInputs {
            miner: b"miner-2",
            ..inputs
        },
        ChallengeInputs { round: 2, ..inputs },
        ChallengeInputs {
            set: &other_set,
            ..inputs
        },
    ];
    for (k, variant) in variants.iter().enumerate() {
        let other = Challenge::derive(variant).unwrap();
        assert_ne!(other.seed(), ch.seed());
        assert_eq!(
            verify(pk, &other, &proof, &CpuBackend),
            Verdict::Invalid(InvalidReason::EquationFails),
            "variant {k}"
        );
    }
    // Another tagger: its challenge differs, and this proof fails under its key.
    let other_tagger = Challenge::derive(&ChallengeInputs {
        tagger: key_b.public(),
        ..inputs
    })
    .unwrap();
    assert_ne!(
        verify(key_b.public(), &other_tagger, &proof, &CpuBackend),
        Verdict::Valid
    );
    assert_eq!(
        verify(key_b.public(), &ch, &proof, &CpuBackend),
        Verdict::Invalid(InvalidReason::WrongTagger)
    );
}

#[test]
fn batch_verification_accepts_honest_batches_and_names_the_bad_proof() {
    let keys = [key(11, 4), key(12, 4)];
    let mut items = Vec::new();
    for (m, key) in keys
        .iter()
        .chain(keys.iter())
        .chain(keys.iter())
        .enumerate()
    {
        let (mut source, set) = store(key, 3, &[400], 100 + m as u64);
        let ch = challenge(key.public(), &set, m as u8, 1, small_params());
        let proof = prove_ok(key.public(), &ch, &mut source);
        items.push((key.public().clone(), ch, proof));
    }
    let batch: Vec<BatchItem<'_>> = items
        .iter()
        .map(|(key, challenge, proof)| BatchItem {
            key,
            challenge,
            proof,
        })
        .collect();
    assert!(
        batch_verify(&batch, &[7; 32], &CpuBackend)
            .iter()
            .all(|v| *v == Verdict::Valid)
    );

    // Swap two proofs of the same tagger: both become invalid, the others stay valid.
    let mut bad = batch.clone();
    bad[0].proof = &items[2].2;
    bad[2].proof = &items[0].2;
    let verdicts = batch_verify(&bad, &[7; 32], &CpuBackend);
    for (k, verdict) in verdicts.iter().enumerate() {
        let expected = if k == 0 || k == 2 {
            Verdict::Invalid(InvalidReason::EquationFails)
        } else {
            Verdict::Valid
        };
        assert_eq!(*verdict, expected, "item {k}");
    }
}

/// ARCHITECTURE.md: 460 challenged blocks catch 1 % corruption with probability ≈ 0.99.
/// Checked on the real challenge derivation over 2000 epochs.
#[test]
fn default_challenge_detects_one_percent_corruption_with_99_percent_probability() {
    let key = key(13, 1);
    let pk = key.public();
    // 1000 fragments of 100 blocks (s = 1: a block is 31 bytes), 1 % of all blocks bad.
    let entries: Vec<_> = (0..1000u32)
        .map(|k| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&k.to_le_bytes());
            (FragmentId(id), 31 * 100)
        })
        .collect();
    let set = FragmentSet::new(entries).unwrap();
    let mut bad = std::collections::HashSet::new();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    while bad.len() < 1000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bad.insert(((state % 1000) as u32, ((state >> 32) % 100) as u32));
    }
    let trials = 2000u32;
    let mut detected = 0u32;
    for epoch in 0..trials {
        let mut randomness = [0u8; 32];
        randomness[..4].copy_from_slice(&epoch.to_le_bytes());
        let ch = Challenge::derive(&ChallengeInputs {
            epoch_randomness: randomness,
            miner: MINER,
            round: 0,
            tagger: pk,
            set: &set,
            params: ChallengeParams::default(),
        })
        .unwrap();
        assert_eq!(ch.block_total(), 460);
        let hit = ch.fragments().iter().any(|f| {
            let k = u32::from_le_bytes(f.id.0[..4].try_into().unwrap());
            f.blocks.iter().any(|b| bad.contains(&(k, b.index)))
        });
        detected += u32::from(hit);
    }
    let rate = f64::from(detected) / f64::from(trials);
    // Expected 1 − 0.99^460 ≈ 0.990; four standard deviations below is 0.981.
    assert!(rate >= 0.98, "detection rate {rate}");
}

/// With enough challenged blocks the prover decodes tags on two threads while the blocks are
/// read: a bad tag in either half is refused and the first in challenge order is named, and a
/// failed read is still reported before any bad tag.
#[test]
fn bad_tags_are_refused_in_challenge_order_while_reads_overlap() {
    let key = key(8, 4);
    let pk = key.public();
    let (source, set) = store(&key, 12, &[3000], 8);
    let ch = challenge(pk, &set, 3, 1, ChallengeParams::default());
    let wanted: Vec<(usize, u32)> = ch
        .fragments()
        .iter()
        .enumerate()
        .flat_map(|(f, fragment)| fragment.blocks.iter().map(move |b| (f, b.index)))
        .collect();
    assert!(
        wanted.len() >= 32,
        "only {} blocks challenged",
        wanted.len()
    );
    let (early, late) = (wanted[1], wanted[wanted.len() - 1]);
    assert_ne!(
        early.0, late.0,
        "the two bad tags lie in different fragments"
    );
    let header = 8 + 4 + 8 + 32 + 32;
    let name = |f: usize| -> String { ch.fragments()[f].id.to_hex() };
    // 48 zero bytes lack the compressed-point flag: no point decodes from them.
    let break_tag = |source: &mut MemSource, (f, index): (usize, u32)| {
        let blob = source.tags.get_mut(&ch.fragments()[f].id).unwrap();
        blob[header + index as usize * 48..][..48].fill(0);
    };

    let mut both = source.clone();
    break_tag(&mut both, early);
    break_tag(&mut both, late);
    match prove(pk, &ch, &mut both, &CpuBackend) {
        Err(ProveError::Tags { fragment, .. }) => assert_eq!(fragment, name(early.0)),
        other => panic!("expected the early bad tag, got {other:?}"),
    }

    let mut late_only = source.clone();
    break_tag(&mut late_only, late);
    match prove(pk, &ch, &mut late_only, &CpuBackend) {
        Err(ProveError::Tags { fragment, .. }) => assert_eq!(fragment, name(late.0)),
        other => panic!("expected the late bad tag, got {other:?}"),
    }

    let mut unreadable = late_only.clone();
    unreadable.data.remove(&ch.fragments()[early.0].id);
    match prove(pk, &ch, &mut unreadable, &CpuBackend) {
        Err(ProveError::Source { fragment, .. }) => assert_eq!(fragment, name(early.0)),
        other => panic!("expected the failed read, got {other:?}"),
    }
    assert!(prove(pk, &ch, &mut source.clone(), &CpuBackend).is_ok());
}
