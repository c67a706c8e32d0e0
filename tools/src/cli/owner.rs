//! `cess owner`: an owner's key and the upload grants it signs.

use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

use crate::owner;

#[derive(Subcommand)]
pub enum OwnerCommand {
    /// Creates an owner key (mode 0600) unless it exists; prints the owner's PeerId, which
    /// nodes list in `trusted_owners`.
    Init { key: PathBuf },
    /// Signs a grant letting UPLOADER (a PeerId) write to the nodes that trust this owner.
    Grant {
        #[arg(long)]
        owner_key: PathBuf,
        #[arg(long)]
        uploader: String,
        /// How long the grant holds, in hours.
        #[arg(long, default_value_t = 24)]
        valid_hours: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Checks a grant file's signature and says who may upload until when.
    Show { grant: PathBuf },
}

pub fn run(command: OwnerCommand) -> Result<()> {
    match command {
        OwnerCommand::Init { key } => {
            println!("owner {}", owner::init(&key)?);
            Ok(())
        }
        OwnerCommand::Grant {
            owner_key,
            uploader,
            valid_hours,
            out,
        } => {
            let uploader: cess_transport::PeerId = uploader
                .parse()
                .with_context(|| format!("uploader {uploader:?} is not a PeerId"))?;
            let valid_for = std::time::Duration::from_secs(valid_hours.saturating_mul(3600));
            let grant = owner::issue(&owner_key, uploader, valid_for, &out)?;
            println!("wrote {}: {}", out.display(), owner::describe(&grant));
            Ok(())
        }
        OwnerCommand::Show { grant } => {
            println!("{}", owner::describe(&owner::load(&grant)?));
            Ok(())
        }
    }
}
