//! `cess gateway`: the S3 gateway and its access keys.

use anyhow::{Result, bail};
use clap::Subcommand;
use std::path::PathBuf;

use crate::{files, gateway};

#[derive(Subcommand)]
pub enum GatewayCommand {
    /// Creates the gateway's directory, account key and master secret (once); prints the
    /// account id owners authorize (`cess authorize ID`).
    Init {
        #[arg(long, default_value = "cess-gateway")]
        dir: PathBuf,
    },
    /// Serves S3 until interrupted.
    Run(gateway::Options),
    /// The access keys (each acts for one owner account).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Makes an access key for OWNER (an account id or PeerId); prints the key and its secret
    /// (shown this once; it is derived again from the gateway's master secret).
    Add {
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "cess-gateway")]
        dir: PathBuf,
    },
    /// Lists the access keys and their owners.
    List {
        #[arg(long, default_value = "cess-gateway")]
        dir: PathBuf,
    },
    /// Removes an access key: a running gateway refuses requests signed with it within a
    /// second.
    Remove {
        access_key: String,
        #[arg(long, default_value = "cess-gateway")]
        dir: PathBuf,
    },
}

pub fn run(command: GatewayCommand) -> Result<()> {
    match command {
        GatewayCommand::Init { dir } => {
            let account = gateway::init(&dir)?;
            println!(
                "gateway {account}\n(owners authorize it with `cess authorize {account}`; add \
                 their access keys with `cess gateway keys add --owner ACCOUNT`)"
            );
            Ok(())
        }
        GatewayCommand::Run(options) => gateway::run(&options),
        GatewayCommand::Keys(KeysCommand::Add { owner, dir }) => {
            gateway::init(&dir)?;
            let owner = files::parse_account(&owner)?;
            let (key, secret) = gateway::keys::add(&dir, owner)?;
            println!(
                "access key {}\nsecret key {}\nowner {owner}\n(the secret is shown this once)",
                key.access_key,
                secret.as_str()
            );
            Ok(())
        }
        GatewayCommand::Keys(KeysCommand::List { dir }) => {
            for key in gateway::keys::load_keys(&dir)? {
                println!("{} owner {}", key.access_key, key.owner);
            }
            Ok(())
        }
        GatewayCommand::Keys(KeysCommand::Remove { access_key, dir }) => {
            if !gateway::keys::remove(&dir, &access_key)? {
                bail!("no access key {access_key} in {}", dir.display());
            }
            println!("removed {access_key}");
            Ok(())
        }
    }
}
