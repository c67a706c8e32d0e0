//! `cess encode`, `decode`, `keygen`: files to fragments and back, on the local disk.

use anyhow::{Context, Result};
use std::path::PathBuf;

use crate::codec_cmd;

/// The arguments of `cess encode` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct EncodeArgs {
    file: PathBuf,
    /// Directory for the fragments and the manifest (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    #[arg(long, default_value_t = 32)]
    segment_mib: u32,
    #[arg(long, default_value_t = 4)]
    data_shards: u16,
    #[arg(long, default_value_t = 8)]
    parity_shards: u16,
}

/// The arguments of `cess decode` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct DecodeArgs {
    manifest: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Where the fragments are (default: the manifest's directory).
    #[arg(long)]
    fragments: Option<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
}

pub fn encode(args: EncodeArgs) -> Result<()> {
    let EncodeArgs {
        file,
        out,
        key,
        segment_mib,
        data_shards,
        parity_shards,
    } = args;

    let params = cess_codec::CodecParams {
        segment_bytes: segment_mib
            .checked_mul(1 << 20)
            .context("segment size too large")?,
        data_shards,
        parity_shards,
    };
    let key = key.choice();
    codec_cmd::encode(&file, &out, key, params)
}

pub fn decode(args: DecodeArgs) -> Result<()> {
    let DecodeArgs {
        manifest,
        out,
        fragments,
        key,
    } = args;

    let key = key.choice();
    codec_cmd::decode(&manifest, &out, fragments, key)
}

/// How a file is keyed: a key file or a passphrase; neither, a plain (unencrypted) file.
#[derive(clap::Args)]
pub struct KeyArgs {
    /// The file key: a key file of 32 raw bytes or 64 hex digits (see `cess keygen`).
    #[arg(long, conflicts_with = "passphrase")]
    key: Option<PathBuf>,
    /// The file key from a passphrase (Argon2id), read from CESS_PASSPHRASE or standard input.
    #[arg(long)]
    passphrase: bool,
}

impl KeyArgs {
    pub fn choice(self) -> codec_cmd::KeyChoice {
        codec_cmd::KeyChoice {
            key_file: self.key,
            passphrase: self.passphrase,
            given: None,
        }
    }
}

/// The arguments of `cess keygen` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct KeygenArgs {
    out: PathBuf,
}

pub fn keygen(args: KeygenArgs) -> Result<()> {
    codec_cmd::keygen(&args.out)
}
