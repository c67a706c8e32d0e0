//! `cess put`, `get`, `authorize`, `rent`, `transfer`, `delete`: an account's files on the network.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

use crate::cli::codec::KeyArgs;
use crate::{codec_cmd, devnet, files, transfer};
use cess_codec::CodecParams;

/// The arguments of `cess put` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct PutArgs {
    file: PathBuf,
    /// The network's directory (chain/, client.key).
    #[arg(long, default_value = "cess-devnet")]
    devnet: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    #[arg(long, default_value_t = 32)]
    segment_mib: u32,
    /// A network without a chain only: an owner's upload grant to send with every
    /// write (default: the network's client.grant, when present).
    #[arg(long)]
    grant: Option<PathBuf>,
}

/// The arguments of `cess get` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct GetArgs {
    file_id: String,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "cess-devnet")]
    devnet: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    /// Reads with this account key (a delegate's, see `cess authorize`) instead of the
    /// network's client key: miners serve a file only to its owners, their delegates, a
    /// miner rebuilding it and the validators.
    #[arg(long = "as", value_name = "ACCOUNT_KEY")]
    as_key: Option<PathBuf>,
}

/// The arguments of `cess authorize` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct AuthorizeArgs {
    /// The delegate: its account id (64 hex digits) or its PeerId.
    delegate: String,
    #[arg(long)]
    revoke: bool,
    #[arg(long, default_value = "cess-devnet")]
    devnet: PathBuf,
    /// Signs with this account key instead of the network's client key.
    #[arg(long = "as", value_name = "ACCOUNT_KEY")]
    as_key: Option<PathBuf>,
}

/// The arguments of `cess rent` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct RentArgs {
    #[arg(long, default_value_t = 1)]
    gib: u32,
    #[arg(long, default_value_t = files::LEASE_BLOCKS)]
    blocks: u64,
    #[arg(long, default_value = "cess-devnet")]
    devnet: PathBuf,
    /// Signs with this account key instead of the network's client key.
    #[arg(long = "as", value_name = "ACCOUNT_KEY")]
    as_key: Option<PathBuf>,
}

/// The arguments of `cess transfer` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct TransferArgs {
    to: String,
    tokens: u64,
    #[arg(long, default_value = "cess-devnet")]
    devnet: PathBuf,
}

/// The arguments of `cess delete` (its help is the command's line in `cli/mod.rs`).
#[derive(clap::Args)]
pub struct DeleteArgs {
    file_id: String,
    #[arg(long, default_value = "cess-devnet")]
    devnet: PathBuf,
}

pub fn put(args: PutArgs) -> Result<()> {
    let PutArgs {
        file,
        devnet,
        key,
        segment_mib,
        grant,
    } = args;

    let params = CodecParams {
        segment_bytes: segment_mib << 20,
        ..CodecParams::default()
    };
    let choice = key.choice();
    if devnet::on_chain(&devnet) {
        if grant.is_some() {
            bail!("--grant is for a network without a chain; the chain's order is the permission");
        }
        let (runtime, chain, client) = devnet::chain_client(&devnet)?;
        let report = files::put(
            runtime.handle(),
            &chain,
            client,
            &files::Upload::file(&file),
            &choice,
            params,
        )?;
        println!(
            "file id {}\nactive: {} bytes as {} bytes of fragments on {} miners ({} bytes sent now)\n\
                     encode {:.2} s, order {:.2} s, send {:.2} s, until active {:.2} s: {:.0} MiB/s",
            cess_codec::hex(&report.file_id),
            report.file_bytes,
            report.stored_bytes,
            report.miners,
            report.sent_bytes,
            report.encode.as_secs_f64(),
            report.order.as_secs_f64(),
            report.send.as_secs_f64(),
            report.active.as_secs_f64(),
            codec_cmd::rate(report.file_bytes, report.elapsed())
        );
        return Ok(());
    }
    let nodes_file = devnet.join(devnet::NODES_FILE);
    if !nodes_file.exists() {
        bail!(
            "{} holds no network: start one with `cess devnet up --dir {}`",
            devnet.display(),
            devnet.display()
        );
    }
    let nodes = transfer::read_nodes(&nodes_file)?;
    let (runtime, client) =
        transfer::devnet_client(&devnet, transfer::devnet_grant(&devnet, grant.as_deref())?)?;
    let report = transfer::put(
        runtime.handle(),
        client,
        &file,
        &nodes,
        &choice,
        params,
        &devnet.join(devnet::MANIFESTS),
    )?;
    println!(
        "file id {}
put {} bytes ({} bytes of fragments on {} nodes) at {:.0} MiB/s",
        cess_codec::hex(&report.file_id),
        report.file_bytes,
        report.stored_bytes,
        nodes.len(),
        codec_cmd::rate(report.file_bytes, report.elapsed)
    );
    Ok(())
}

pub fn get(args: GetArgs) -> Result<()> {
    let GetArgs {
        file_id,
        out,
        devnet,
        key,
        as_key,
    } = args;

    let choice = key.choice();
    let report = if devnet::on_chain(&devnet) {
        let (runtime, chain, mut client) = devnet::chain_client(&devnet)?;
        if let Some(path) = &as_key {
            let reader = cess_transport::NodeKey::load(path)
                .with_context(|| format!("loading the account key {}", path.display()))?;
            let _guard = runtime.enter();
            client = transfer::client(
                std::sync::Arc::new(reader),
                cess_transport::ClientConfig::default(),
                None,
            )?;
        }
        files::get(runtime.handle(), &chain, client, &file_id, &choice, &out)?
    } else {
        let (runtime, client) = transfer::devnet_client(&devnet, None)?;
        transfer::get(
            runtime.handle(),
            client,
            &file_id,
            &devnet.join(devnet::MANIFESTS),
            &choice,
            &out,
        )?
    };
    for f in &report.fallbacks {
        eprintln!("fell back: {f}");
    }
    println!(
        "got {} bytes into {} at {:.0} MiB/s",
        report.file_bytes,
        out.display(),
        codec_cmd::rate(report.file_bytes, report.elapsed)
    );
    Ok(())
}

pub fn authorize(args: AuthorizeArgs) -> Result<()> {
    let AuthorizeArgs {
        delegate,
        revoke,
        devnet,
        as_key,
    } = args;

    if !devnet::on_chain(&devnet) {
        bail!(
            "{} is not a network on a chain; delegates are kept on the chain",
            devnet.display()
        );
    }
    let (runtime, chain, _client) = devnet::chain_client_as(&devnet, as_key.as_deref())?;
    let (delegate, height) = files::authorize(runtime.handle(), &chain, &delegate, revoke)?;
    if revoke {
        println!("{delegate} may no longer read this account's files (height {height})");
    } else {
        println!("{delegate} may read this account's files (height {height})");
    }
    Ok(())
}

pub fn rent(args: RentArgs) -> Result<()> {
    let RentArgs {
        gib,
        blocks,
        devnet,
        as_key,
    } = args;

    let (runtime, chain, _client) = devnet::chain_client_as(&devnet, as_key.as_deref())?;
    let height = runtime.block_on(chain.submit(cess_consensus::Call::RentSpace {
        add_gib: gib,
        add_blocks: blocks,
    }))?;
    let lease = chain.ledger(|l| l.lease(&chain.account.id()).copied());
    if let Some(lease) = lease {
        println!(
            "rented at height {height}: {} GiB until height {}, {} bytes free",
            lease.gib,
            lease.until,
            lease.free_bytes()
        );
    }
    Ok(())
}

pub fn transfer(args: TransferArgs) -> Result<()> {
    let TransferArgs { to, tokens, devnet } = args;

    let (runtime, chain, _client) = devnet::chain_client(&devnet)?;
    let to = files::parse_account(&to)?;
    let amount = u128::from(tokens) * cess_consensus::ledger::TOKEN;
    let height = runtime.block_on(chain.submit(cess_consensus::Call::Transfer { to, amount }))?;
    println!("sent {tokens} tokens to {to} (height {height})");
    Ok(())
}

pub fn delete(args: DeleteArgs) -> Result<()> {
    let DeleteArgs { file_id, devnet } = args;

    if !devnet::on_chain(&devnet) {
        bail!(
            "{} is not a network on a chain; deletion goes through the chain",
            devnet.display()
        );
    }
    let (runtime, chain, _client) = devnet::chain_client(&devnet)?;
    let (height, gone) = files::delete(runtime.handle(), &chain, &file_id)?;
    if gone {
        println!(
            "deleted at height {height}: no owner is left, so its miners delete its fragments"
        );
    } else {
        println!("no longer an owner at height {height}; other owners keep the file");
    }
    Ok(())
}
