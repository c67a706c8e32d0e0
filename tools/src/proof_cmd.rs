//! `cess proof …`: PoDR² key generation, tagging, challenges, proving and verifying, on
//! fragment files in a directory or on an engine store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use cess_engine::{Class, OpenOptions, Store, Target};
use cess_proofs::{
    Challenge, ChallengeInputs, ChallengeParams, CpuBackend, FragmentId, FragmentSet, Proof,
    ProofSource, PublicKey, SecretKey, Tags, Verdict, prove, tag_fragment, verify,
};
use rand::RngCore as _;

/// Where fragments live: a directory of fragment files (tags beside them as `<name>.tags`) or
/// an engine store (tags in each fragment's metadata blob).
#[derive(Debug, Clone)]
pub enum Holding {
    Dir(PathBuf),
    Store {
        target: PathBuf,
        node_id: cess_engine::NodeId,
    },
}

/// The public inputs a challenge binds (the fragment set comes from the holding).
#[derive(Debug, Clone)]
pub struct Round {
    pub randomness_hex: String,
    pub miner: String,
    pub round: u64,
    pub params: ChallengeParams,
}

/// Creates a tagger key at `out` (0600) and its public key beside it (`.pub`).
pub fn create_tagger_key(out: &Path, sectors_per_block: u32) -> Result<PublicKey> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut seed[..]);
    let key = SecretKey::from_seed(&seed[..], sectors_per_block)?;
    crate::secret::create(out, &key.encode())?;
    let public = public_path(out);
    std::fs::write(&public, key.public().encode())
        .with_context(|| format!("writing {}", public.display()))?;
    Ok(key.public().clone())
}

pub fn keygen(out: &Path, sectors_per_block: u32) -> Result<()> {
    let public = public_path(out);
    let key = create_tagger_key(out, sectors_per_block)?;
    println!(
        "tagger {} (s = {sectors_per_block}): secret key {} (mode 0600, never give it to a \
         miner), public key {}",
        key.id(),
        out.display(),
        public.display()
    );
    Ok(())
}

fn public_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

pub fn read_secret(path: &Path) -> Result<SecretKey> {
    let bytes = crate::secret::read(path, "tagger key")?;
    SecretKey::decode(&bytes)
        .with_context(|| format!("{} is not a tagger secret key", path.display()))
}

pub fn read_public(path: &Path) -> Result<PublicKey> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    PublicKey::decode(&bytes)
        .with_context(|| format!("{} is not a tagger public key", path.display()))
}

fn open_store(target: &Path, node_id: cess_engine::NodeId) -> Result<Store> {
    Store::open(
        &Target::Path(target.to_path_buf()),
        &OpenOptions::new(node_id),
    )
    .with_context(|| format!("opening store {}", target.display()))
}

/// The fragment files of a directory (`.tags` and `.manifest` files are not fragments).
fn dir_fragment_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file()
            && !path
                .extension()
                .is_some_and(|e| e == "tags" || e == "manifest")
        {
            files.push(path);
        }
    }
    Ok(files)
}

/// Fragment files of a directory by id (SHA-256 of their bytes); empty files are skipped.
fn dir_fragments(dir: &Path) -> Result<HashMap<FragmentId, (PathBuf, u64)>> {
    let mut out = HashMap::new();
    for path in dir_fragment_files(dir)? {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if !bytes.is_empty() {
            out.insert(FragmentId::of(&bytes), (path, bytes.len() as u64));
        }
    }
    ensure!(!out.is_empty(), "no fragment files in {}", dir.display());
    Ok(out)
}

fn tags_path(fragment: &Path) -> PathBuf {
    let mut name = fragment.as_os_str().to_owned();
    name.push(".tags");
    PathBuf::from(name)
}

/// Tag every fragment of the holding that has no tags from this tagger yet.
pub fn tag(key_path: &Path, holding: &Holding) -> Result<()> {
    let key = read_secret(key_path)?;
    let started = Instant::now();
    let (mut tagged, mut skipped, mut bytes) = (0u64, 0u64, 0u64);
    let report = |tagged: u64, bytes: u64| {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\rtagged {tagged} fragments, {:.1} MB at {:.1} MB/s   ",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs
        );
    };
    let already = |blob: &[u8]| Tags::decode(blob).is_ok_and(|t| t.tagger() == key.public().id());
    match holding {
        Holding::Dir(dir) => {
            // Each file is read once: its id is the hash of the bytes about to be tagged.
            let files = dir_fragment_files(dir)?;
            ensure!(!files.is_empty(), "no fragment files in {}", dir.display());
            for path in files {
                let tags_file = tags_path(&path);
                if std::fs::read(&tags_file).is_ok_and(|b| already(&b)) {
                    skipped += 1;
                    continue;
                }
                let data =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                if data.is_empty() {
                    continue;
                }
                let id = FragmentId::of(&data);
                let tags = tag_fragment(&key, &CpuBackend, &id, &data)
                    .with_context(|| format!("tagging {}", path.display()))?;
                std::fs::write(&tags_file, tags.encode())
                    .with_context(|| format!("writing {}", tags_file.display()))?;
                tagged += 1;
                bytes += data.len() as u64;
                report(tagged, bytes);
            }
        }
        Holding::Store { target, node_id } => {
            let store = open_store(target, *node_id)?;
            let listed: Vec<_> = store.list().collect::<Result<_, _>>()?;
            for info in listed.into_iter().filter(|i| i.class == Class::Active) {
                if info.meta_len_bytes > 0 && already(&store.meta(info.key).wait()?) {
                    skipped += 1;
                    continue;
                }
                let data = store.get(info.key).wait()?;
                let tags = tag_fragment(&key, &CpuBackend, &info.key, &data)
                    .with_context(|| format!("tagging fragment {}", info.key))?;
                store
                    .set_meta(info.key, &tags.encode())
                    .wait()
                    .with_context(|| {
                        format!(
                            "storing the tags of {} (is max_meta_bytes large enough?)",
                            info.key
                        )
                    })?;
                tagged += 1;
                bytes += data.len() as u64;
                report(tagged, bytes);
            }
        }
    }
    eprintln!();
    println!(
        "tagged {tagged} fragments ({:.1} MB) in {:.1} s; {skipped} already tagged by {}",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        key.public().id()
    );
    Ok(())
}

/// The fragment set a holding holds (what the ledger would record for this miner).
fn fragment_set(holding: &Holding) -> Result<FragmentSet> {
    let entries: Vec<(FragmentId, u64)> = match holding {
        Holding::Dir(dir) => dir_fragments(dir)?
            .into_iter()
            .map(|(id, (_, len))| (id, len))
            .collect(),
        Holding::Store { target, node_id } => open_store(target, *node_id)?
            .list()
            .filter(|i| i.as_ref().map_or(true, |i| i.class == Class::Active))
            .map(|i| i.map(|i| (i.key, i.len_bytes)))
            .collect::<Result<_, _>>()?,
    };
    ensure!(!entries.is_empty(), "no fragments to challenge");
    Ok(FragmentSet::new(entries)?)
}

fn derive(public: &PublicKey, set: &FragmentSet, round: &Round) -> Result<Challenge> {
    let randomness = cess_types::parse_hex32(&round.randomness_hex)
        .context("epoch randomness must be 64 hex digits")?;
    Ok(Challenge::derive(&ChallengeInputs {
        epoch_randomness: randomness,
        miner: round.miner.as_bytes(),
        round: round.round,
        tagger: public,
        set,
        params: round.params,
    })?)
}

pub fn challenge(public_path: &Path, holding: &Holding, round: &Round, out: &Path) -> Result<()> {
    let public = read_public(public_path)?;
    let set = fragment_set(holding)?;
    let challenge = derive(&public, &set, round)?;
    std::fs::write(out, challenge.encode())
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "challenge {}: {} of {} fragments, {} blocks, written to {}",
        &cess_codec::hex(&challenge.seed())[..16],
        challenge.fragments().len(),
        set.len(),
        challenge.block_total(),
        out.display()
    );
    Ok(())
}

struct DirSource {
    files: HashMap<FragmentId, (PathBuf, u64)>,
}

impl ProofSource for DirSource {
    type Error = std::io::Error;

    fn tags(&mut self, id: &FragmentId) -> std::io::Result<Vec<u8>> {
        std::fs::read(tags_path(&self.file(id)?))
    }

    fn read(&mut self, id: &FragmentId, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        std::fs::File::open(self.file(id)?)?.read_exact_at(buf, offset)
    }
}

impl DirSource {
    fn file(&self, id: &FragmentId) -> std::io::Result<PathBuf> {
        self.files.get(id).map(|(p, _)| p.clone()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "fragment not in the directory",
            )
        })
    }
}

pub fn prove_cmd(
    public_path: &Path,
    challenge_path: &Path,
    holding: &Holding,
    out: &Path,
) -> Result<()> {
    let public = read_public(public_path)?;
    let bytes = std::fs::read(challenge_path)
        .with_context(|| format!("reading {}", challenge_path.display()))?;
    let challenge = Challenge::decode(&bytes)
        .with_context(|| format!("{} is not a challenge", challenge_path.display()))?;
    let started = Instant::now();
    let (proof, stats) = match holding {
        Holding::Dir(dir) => prove(
            &public,
            &challenge,
            &mut DirSource {
                files: dir_fragments(dir)?,
            },
            &CpuBackend,
        )?,
        Holding::Store { target, node_id } => {
            let store = open_store(target, *node_id)?;
            prove(
                &public,
                &challenge,
                &mut cess_node::StoreSource(&store),
                &CpuBackend,
            )?
        }
    };
    std::fs::write(out, proof.encode()).with_context(|| format!("writing {}", out.display()))?;
    let total = started.elapsed();
    println!(
        "proof over {} fragments, {} blocks ({} KiB read) in {:.1} ms (reading {:.1} ms, MSM \
         {:.1} ms); {} bytes written to {}",
        stats.fragments,
        stats.blocks,
        stats.bytes_read >> 10,
        total.as_secs_f64() * 1e3,
        stats.read_ns as f64 / 1e6,
        stats.msm_ns as f64 / 1e6,
        proof.encode().len(),
        out.display()
    );
    Ok(())
}

/// Derive the challenge from the public inputs (never trusting a challenge file) and verify.
/// Returns whether the proof is valid.
pub fn verify_cmd(
    public_path: &Path,
    holding: &Holding,
    round: &Round,
    proof_path: &Path,
) -> Result<bool> {
    let public = read_public(public_path)?;
    let bytes =
        std::fs::read(proof_path).with_context(|| format!("reading {}", proof_path.display()))?;
    let proof = match Proof::decode(&bytes) {
        Ok(proof) => proof,
        Err(e) => {
            println!("INVALID: the proof does not decode: {e}");
            return Ok(false);
        }
    };
    let set = fragment_set(holding)?;
    let started = Instant::now();
    let challenge = derive(&public, &set, round)?;
    let verdict = verify(&public, &challenge, &proof, &CpuBackend);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match verdict {
        Verdict::Valid => {
            println!(
                "VALID: {} fragments, {} blocks challenged of {} fragments stored; verified in {ms:.1} ms",
                challenge.fragments().len(),
                challenge.block_total(),
                set.len()
            );
            Ok(true)
        }
        Verdict::Invalid(reason) => {
            println!("INVALID: {reason}");
            Ok(false)
        }
    }
}

pub fn parse_holding(
    dir: Option<PathBuf>,
    store: Option<PathBuf>,
    node_id: cess_engine::NodeId,
) -> Result<Holding> {
    match (dir, store) {
        (Some(dir), None) => Ok(Holding::Dir(dir)),
        (None, Some(target)) => Ok(Holding::Store { target, node_id }),
        _ => bail!("name exactly one of --fragments DIR or --store TARGET"),
    }
}
