//! `cess encode`, `cess decode`, `cess keygen`: files to fragments and back.

use anyhow::{Context, Result, bail};
use cess_codec::{
    self as codec, CodecParams, DirFragments, EncodeOptions, FileKey, KdfParams, Manifest, hex,
};
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the key comes from.
#[derive(Default)]
pub struct KeyChoice {
    pub key_file: Option<PathBuf>,
    pub passphrase: bool,
    /// A key the caller derived (the S3 gateway's, one per owner and object).
    pub given: Option<FileKey>,
}

/// Reads the passphrase from `CESS_PASSPHRASE`, or one line of standard input.
fn read_passphrase() -> Result<zeroize::Zeroizing<String>> {
    if let Ok(p) = std::env::var("CESS_PASSPHRASE") {
        return Ok(zeroize::Zeroizing::new(p));
    }
    if std::io::stdin().is_terminal() {
        eprint!("passphrase (input is echoed; set CESS_PASSPHRASE to avoid this): ");
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the passphrase from standard input")?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    if trimmed.is_empty() {
        bail!("empty passphrase");
    }
    Ok(trimmed)
}

/// Throttled progress: a live line on a terminal, a plain line every few seconds otherwise.
pub struct Meter {
    what: &'static str,
    total: u64,
    started: Instant,
    last: Instant,
    every: Duration,
}

impl Meter {
    pub fn new(what: &'static str, total: u64) -> Meter {
        let every = if std::io::stderr().is_terminal() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        let now = Instant::now();
        Meter {
            what,
            total,
            started: now,
            last: now,
            every,
        }
    }
    pub fn update(&mut self, done: u64) {
        if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            progress_line(self.what, done, self.total, self.started.elapsed());
        }
    }
    pub fn finish(&self) -> Duration {
        progress_line(self.what, self.total, self.total, self.started.elapsed());
        finish_progress();
        self.started.elapsed()
    }
}

pub fn rate(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9)
}

pub fn keygen(out: &Path) -> Result<()> {
    FileKey::generate().write_key_file(out)?;
    println!("wrote a new 256-bit key to {} (mode 0600)", out.display());
    Ok(())
}

/// Encode options for `params` with the key the user chose (none: not encrypted).
pub fn encode_options(key: &KeyChoice, params: CodecParams) -> Result<EncodeOptions> {
    let mut options = EncodeOptions {
        params,
        ..EncodeOptions::default()
    };
    if let Some(given) = &key.given {
        options.key = Some(given.clone());
    } else if let Some(path) = &key.key_file {
        options.key = Some(FileKey::from_key_file(path)?);
    } else if key.passphrase {
        let mut salt = [0u8; 16];
        rand::fill(&mut salt);
        let kdf = KdfParams::default();
        let passphrase = read_passphrase()?;
        options.key = Some(FileKey::from_passphrase(passphrase.as_bytes(), &salt, kdf)?);
        options.kdf = Some((salt, kdf));
    }
    Ok(options)
}

pub fn encode(file: &Path, out: &Path, key: KeyChoice, params: CodecParams) -> Result<()> {
    let options = encode_options(&key, params)?;
    let mut input =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let len = input
        .metadata()
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut sink = DirFragments::new(out);
    let mut meter = Meter::new("encode", len);
    let manifest = codec::encode(&mut input, len, &options, &mut sink, &mut |done| {
        meter.update(done)
    })?;
    let elapsed = meter.finish();
    let manifest_path = out.join(format!("{}.manifest", hex(&manifest.file_id)));
    write_new(&manifest_path, &manifest.encode())?;
    println!(
        "file id {}\n{} bytes in {} segments, {} fragments of {} bytes ({}+{}), {}\nmanifest {}\n{:.0} MiB/s",
        hex(&manifest.file_id),
        len,
        manifest.segments.len(),
        manifest.segments.len() * params.shard_count(),
        params.fragment_bytes(),
        params.data_shards,
        params.parity_shards,
        if options.key.is_some() {
            "encrypted"
        } else {
            "not encrypted"
        },
        manifest_path.display(),
        rate(len, elapsed)
    );
    Ok(())
}

/// Writes `bytes` to `path` through a temporary name, so `path` is complete or absent.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}

/// The key to decode `manifest`'s file with, from the user's choice.
pub fn decode_key(key: &KeyChoice, manifest: &Manifest) -> Result<Option<FileKey>> {
    Ok(
        match (&key.key_file, key.passphrase, &manifest.encryption) {
            _ if key.given.is_some() => key.given.clone(),
            (Some(path), _, _) => Some(FileKey::from_key_file(path)?),
            (None, true, Some(e)) => {
                let Some((salt, kdf)) = e.kdf else {
                    bail!("this file was encrypted with a key file, not a passphrase: use --key");
                };
                let passphrase = read_passphrase()?;
                Some(FileKey::from_passphrase(passphrase.as_bytes(), &salt, kdf)?)
            }
            (None, true, None) => bail!("this file is not encrypted: drop --passphrase"),
            (None, false, _) => None,
        },
    )
}

pub fn decode(
    manifest_path: &Path,
    out: &Path,
    fragments: Option<PathBuf>,
    key: KeyChoice,
) -> Result<()> {
    let manifest: Manifest = codec::read_manifest(manifest_path)?;
    let file_key = decode_key(&key, &manifest)?;
    let dir = fragments.unwrap_or_else(|| {
        manifest_path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    let source = DirFragments::new(&dir);
    let elapsed = decode_to_file(&manifest, file_key.as_ref(), &source, out)?;
    println!(
        "decoded {} bytes of file {} to {} ({:.0} MiB/s)",
        manifest.file_bytes,
        hex(&manifest.file_id),
        out.display(),
        rate(manifest.file_bytes, elapsed)
    );
    Ok(())
}

/// Decodes to `out` through `out.partial`, renamed only once every segment verified; returns
/// the time taken.
pub fn decode_to_file(
    manifest: &Manifest,
    file_key: Option<&FileKey>,
    source: &dyn codec::FragmentSource,
    out: &Path,
) -> Result<Duration> {
    // Decoded bytes go to a temporary name and take the final one only when every segment
    // was verified: a failed decode never leaves a plausible-looking output behind.
    let tmp = out.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut meter = Meter::new("decode", manifest.file_bytes);
    let result = codec::decode(manifest, file_key, source, &mut writer, 0, &mut |done| {
        meter.update(done)
    });
    if let Err(e) = result {
        drop(writer);
        std::fs::remove_file(&tmp).ok();
        return Err(e.into());
    }
    let file = writer.into_inner().context("flushing output")?;
    file.sync_all().context("syncing output")?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(meter.finish())
}

/// One progress line on standard error: rewritten in place on a terminal, appended otherwise.
pub fn progress_line(what: &str, done: u64, total: u64, elapsed: Duration) {
    let mib = done as f64 / (1 << 20) as f64;
    let rate = mib / elapsed.as_secs_f64().max(1e-9);
    let pct = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    if std::io::stderr().is_terminal() {
        eprint!("\r{what}: {pct:5.1}%  {mib:.0} MiB  {rate:.0} MiB/s   ");
    } else {
        eprintln!("{what}: {pct:.1}% {mib:.0} MiB {rate:.0} MiB/s");
    }
}

/// Ends a progress line rewritten in place.
pub fn finish_progress() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}
