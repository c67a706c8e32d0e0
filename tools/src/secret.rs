//! Secret key files: created with mode 0600 and never overwritten; refused when group or
//! others can read them.

use anyhow::{Context, Result, ensure};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Creates `path` (it must not exist) with mode 0600 and writes `bytes`, synced.
pub fn create(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads the secret `what` at `path`, refusing a file others can read.
pub fn read(path: &Path, what: &str) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    ensure!(
        mode & 0o077 == 0,
        "{what} {} has mode {mode:o}: readable by others; run chmod 600 on it",
        path.display()
    );
    Ok(zeroize::Zeroizing::new(
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    ))
}
