//! `cess tagger`: the tagger service.

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

use crate::tagger;

#[derive(Subcommand)]
pub enum TaggerCommand {
    /// Creates a tagger directory: QUIC identity, PoDR² secret key (0600), tagger.toml.
    Init {
        dir: PathBuf,
        /// UDP address for QUIC.
        #[arg(long, default_value = "127.0.0.1:4100")]
        listen: std::net::SocketAddr,
        /// Use this existing tagger secret key instead of making one.
        #[arg(long)]
        key: Option<PathBuf>,
        /// `auto` (a hardware GPU when found, else the CPU), `cpu` or `gpu`.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// A validator of that chain, /ip4/…/udp/…/quic-v1/p2p/… (repeatable).
        #[arg(long = "validator", required = true)]
        validators: Vec<String>,
        /// Loopback HTTP address for /metrics (its port in DIR/metrics-addr once running).
        #[arg(long, default_value = "127.0.0.1:0")]
        metrics: std::net::SocketAddr,
    },
    /// Runs the tagger until SIGINT or SIGTERM.
    Run {
        /// The tagger directory (with tagger.toml).
        dir: PathBuf,
    },
}

pub fn run(command: TaggerCommand) -> Result<()> {
    match command {
        TaggerCommand::Init {
            dir,
            listen,
            key,
            backend,
            genesis,
            validators,
            metrics,
        } => {
            let id = tagger::init(
                &dir,
                &tagger::InitOptions {
                    listen,
                    tagger_key: key,
                    backend,
                    genesis,
                    validators,
                    metrics: Some(metrics),
                },
            )?;
            println!("tagger {id} set up in {}", dir.display());
            Ok(())
        }
        TaggerCommand::Run { dir } => tagger::run(&dir),
    }
}
