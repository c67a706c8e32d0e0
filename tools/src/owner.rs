//! `cess owner init | grant`: an owner's key and the upload grants it signs, which let an
//! uploader write to every node that trusts the owner (`trusted_owners` in `node.toml`).

use anyhow::{Context, Result, bail};
use cess_transport::protocol::now_ms;
use cess_transport::{NodeKey, PeerId, grant, pb};
use std::path::Path;
use std::time::Duration;

/// Loads the owner key at `path`, creating it (mode 0600) when absent; returns its PeerId.
pub fn init(path: &Path) -> Result<PeerId> {
    Ok(NodeKey::load_or_create(path)?.peer_id())
}

/// Signs a grant for `uploader`, valid for `valid_for` from now, and writes it to `out`.
pub fn issue(
    owner_key: &Path,
    uploader: PeerId,
    valid_for: Duration,
    out: &Path,
) -> Result<pb::UploadGrant> {
    let owner = NodeKey::load(owner_key)
        .with_context(|| format!("loading the owner key {}", owner_key.display()))?;
    let valid_ms = i64::try_from(valid_for.as_millis()).context("validity too long")?;
    let grant = grant::issue(&owner, uploader, now_ms().saturating_add(valid_ms));
    std::fs::write(out, grant::encode(&grant))
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(grant)
}

/// Reads a grant file and checks its signature; refuses an expired one with how to renew it.
pub fn load(path: &Path) -> Result<pb::UploadGrant> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let grant = grant::decode(&bytes).with_context(|| format!("grant {}", path.display()))?;
    grant::owner_of(&grant).with_context(|| format!("grant {}", path.display()))?;
    let now = now_ms();
    if grant.not_after_ms < now {
        bail!(
            "grant {} expired {} s ago; ask its owner for a new one (`cess owner grant`)",
            path.display(),
            (now - grant.not_after_ms) / 1000
        );
    }
    Ok(grant)
}

/// One line: owner, uploader and how long the grant still holds.
pub fn describe(grant: &pb::UploadGrant) -> String {
    let owner = grant::owner_of(grant).map_or_else(|e| e.to_string(), |p| p.to_base58());
    let uploader = grant::uploader_of(grant).map_or_else(|e| e.to_string(), |p| p.to_base58());
    let left_s = (grant.not_after_ms - now_ms()) / 1000;
    format!("owner {owner} lets {uploader} upload for {left_s} s more")
}
