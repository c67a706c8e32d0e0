//! `cess`: the project's programs (the storage node, validators, the tagger, the client, the
//! S3 gateway, the local network and the operator's commands). The command line is in
//! `cli/`, one module per family; the modules beside it do the work.

#![forbid(unsafe_code)]

mod chain;
mod cli;
mod codec_cmd;
mod devnet;
mod files;
mod gateway;
mod node;
mod owner;
mod proof_cmd;
mod secret;
mod tagger;
mod transfer;
mod validator;

use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env() // s3s logs every error answer at ERROR; the gateway logs its own failures once.
                .unwrap_or_else(|_| "warn,s3s=off".into()),
        )
        .init();
    if let Err(e) = cli::run(cli::Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
