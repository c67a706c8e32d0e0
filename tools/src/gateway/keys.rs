//! The gateway's secrets and its access keys.
//!
//! SigV4 is a MAC: whoever checks a signature must be able to make it, so a gateway cannot keep
//! only a hash of a secret key and check requests with it. It keeps none of them instead: each
//! secret is derived from the gateway's master secret and the access key id
//! (`keyed BLAKE3(master, "s3 secret" ‖ id)`), shown once when the key is made, and the keys
//! file holds the id, the owner account it acts for, and a BLAKE3 hash of the secret (so a
//! replaced master secret invalidates every key rather than silently minting new ones). The
//! same master secret derives each object's encryption key from its owner, bucket and name:
//! the data is encrypted before it leaves the gateway, and no key is stored anywhere.

use anyhow::{Context, Result, bail};
use cess_codec::FileKey;
use cess_consensus::AccountId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

pub const MASTER_SECRET: &str = "master.secret";
pub const KEYS_FILE: &str = "keys.json";
/// Characters of a derived secret key (S3's are 40).
const SECRET_CHARS: usize = 40;

/// The gateway's master secret: 32 random bytes in an owner-only file.
pub struct Master(Zeroizing<[u8; 32]>);

impl Master {
    pub fn load_or_create(dir: &Path) -> Result<Master> {
        let path = dir.join(MASTER_SECRET);
        if path.exists() {
            let bytes = Zeroizing::new(
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            );
            let secret: [u8; 32] = bytes.as_slice().try_into().with_context(|| {
                format!("{} holds {} bytes, not 32", path.display(), bytes.len())
            })?;
            return Ok(Master(Zeroizing::new(secret)));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::fill(&mut secret[..]);
        write_private(&path, &secret[..])?;
        Ok(Master(secret))
    }

    /// The secret access key of `access_key`.
    pub fn secret_for(&self, access_key: &str) -> Zeroizing<String> {
        use base64::Engine;
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(b"cess-gateway/1 s3 secret\0");
        hasher.update(access_key.as_bytes());
        let encoded =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hasher.finalize().as_bytes());
        Zeroizing::new(encoded[..SECRET_CHARS].to_string())
    }

    /// The encryption key of `owner`'s object `name` in `bucket`.
    pub fn object_key(&self, owner: &AccountId, bucket: &str, name: &str) -> FileKey {
        let mut hasher = blake3::Hasher::new_derive_key("cess-gateway/1 object key");
        hasher.update(&self.0[..]);
        hasher.update(&owner.0);
        hasher.update(&(bucket.len() as u64).to_le_bytes());
        hasher.update(bucket.as_bytes());
        hasher.update(name.as_bytes());
        FileKey::from_bytes(*hasher.finalize().as_bytes())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One access key: the owner it acts for, and the hash of its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key: String,
    /// The owner's account id, 64 hex digits.
    pub owner: String,
    pub secret_blake3: String,
    pub created_unix_s: u64,
}

impl AccessKey {
    pub fn owner_id(&self) -> Result<AccountId> {
        cess_types::parse_hex32(&self.owner)
            .map(AccountId)
            .with_context(|| {
                format!(
                    "key {}: owner {:?} is not an account",
                    self.access_key, self.owner
                )
            })
    }
}

pub fn load_keys(dir: &Path) -> Result<Vec<AccessKey>> {
    let path = dir.join(KEYS_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn save_keys(dir: &Path, keys: &[AccessKey]) -> Result<()> {
    write_private(
        &dir.join(KEYS_FILE),
        serde_json::to_string_pretty(keys)?.as_bytes(),
    )
}

/// Makes an access key for `owner`: the key and its secret (shown once, kept nowhere).
pub fn add(dir: &Path, owner: AccountId) -> Result<(AccessKey, Zeroizing<String>)> {
    let master = Master::load_or_create(dir)?;
    let mut keys = load_keys(dir)?;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut random = [0u8; 16];
    rand::fill(&mut random);
    let access_key: String = "CESS"
        .chars()
        .chain(
            random
                .iter()
                .map(|b| ALPHABET[usize::from(*b) % 32] as char),
        )
        .collect();
    let secret = master.secret_for(&access_key);
    let key = AccessKey {
        access_key,
        owner: owner.to_string(),
        secret_blake3: blake3::hash(secret.as_bytes()).to_hex().to_string(),
        created_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    keys.push(key.clone());
    save_keys(dir, &keys)?;
    Ok((key, secret))
}

/// Removes an access key; whether it was there.
pub fn remove(dir: &Path, access_key: &str) -> Result<bool> {
    let mut keys = load_keys(dir)?;
    let before = keys.len();
    keys.retain(|k| k.access_key != access_key);
    if keys.len() == before {
        return Ok(false);
    }
    save_keys(dir, &keys)?;
    Ok(true)
}

/// The keys as last read, when the file was last looked at, and its modification time then.
type Loaded = (
    HashMap<String, AccountId>,
    Option<Instant>,
    Option<std::time::SystemTime>,
);

/// The keys a running gateway knows, read again when the keys file changes (looked at, at
/// most once a second, on a request): a key added or removed while the gateway runs counts
/// within a second, and a flood of requests costs one `stat` a second.
pub struct KeyTable {
    dir: PathBuf,
    master: Master,
    keys: RwLock<Loaded>,
}

impl KeyTable {
    const RELOAD_EVERY: Duration = Duration::from_secs(1);

    pub fn open(dir: &Path) -> Result<KeyTable> {
        let table = KeyTable {
            dir: dir.to_path_buf(),
            master: Master::load_or_create(dir)?,
            keys: RwLock::new((HashMap::new(), None, None)),
        };
        table.reload()?;
        Ok(table)
    }

    pub fn master(&self) -> &Master {
        &self.master
    }

    fn modified(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.dir.join(KEYS_FILE))
            .and_then(|m| m.modified())
            .ok()
    }

    fn reload(&self) -> Result<()> {
        let modified = self.modified();
        let mut map = HashMap::new();
        for key in load_keys(&self.dir)? {
            let secret = self.master.secret_for(&key.access_key);
            if blake3::hash(secret.as_bytes()).to_hex().as_str() != key.secret_blake3 {
                bail!(
                    "access key {} was made under another master secret; remove it and add a new one",
                    key.access_key
                );
            }
            map.insert(key.access_key.clone(), key.owner_id()?);
        }
        *self.keys.write().expect("keys lock") = (map, Some(Instant::now()), modified);
        Ok(())
    }

    /// The owner `access_key` acts for, as the keys file says now.
    pub fn owner_of(&self, access_key: &str) -> Option<AccountId> {
        let (due, known) = {
            let keys = self.keys.read().expect("keys lock");
            (
                keys.1.is_none_or(|at| at.elapsed() >= Self::RELOAD_EVERY),
                keys.2,
            )
        };
        if due {
            if self.modified() != known {
                if let Err(e) = self.reload() {
                    // The keys stay as they were; the operator sees why.
                    eprintln!("gateway: reading the access keys again: {e:#}");
                }
            } else {
                self.keys.write().expect("keys lock").1 = Some(Instant::now());
            }
        }
        self.keys
            .read()
            .expect("keys lock")
            .0
            .get(access_key)
            .copied()
    }
}

/// The key table as `s3s` asks it for a secret to check a signature with.
pub struct Auth(pub std::sync::Arc<KeyTable>);

#[async_trait::async_trait]
impl s3s::auth::S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        if access_key.len() > 128 || self.0.owner_of(access_key).is_none() {
            return Err(s3s::s3_error!(InvalidAccessKeyId));
        }
        Ok(s3s::auth::SecretKey::from(
            self.0.master.secret_for(access_key).as_str(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_object_keys_are_derived_apart_and_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let master = Master::load_or_create(dir.path()).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(MASTER_SECRET))
                .unwrap()
                .len(),
            32
        );
        let again = Master::load_or_create(dir.path()).unwrap();
        assert_eq!(*master.secret_for("CESSA"), *again.secret_for("CESSA"));
        assert_ne!(*master.secret_for("CESSA"), *master.secret_for("CESSB"));
        assert_eq!(master.secret_for("CESSA").len(), SECRET_CHARS);
        let owner = AccountId([1; 32]);
        // Two keys are the same key when they seal the same bytes the same way.
        let key = |owner: &AccountId, bucket: &str, name: &str| {
            let mut probe = vec![0u8; 64];
            master
                .object_key(owner, bucket, name)
                .sealer()
                .seal(b"probe", &mut probe);
            probe
        };
        let base = key(&owner, "ab", "c");
        assert_eq!(base, key(&owner, "ab", "c"));
        // The bucket's length is bound: ("ab", "c") and ("a", "bc") are different objects.
        assert_ne!(base, key(&owner, "a", "bc"));
        assert_ne!(base, key(&AccountId([2; 32]), "ab", "c"));

        let (added, secret) = add(dir.path(), owner).unwrap();
        let stored = std::fs::read_to_string(dir.path().join(KEYS_FILE)).unwrap();
        assert!(
            !stored.contains(secret.as_str()),
            "no secret in the keys file"
        );
        let table = KeyTable::open(dir.path()).unwrap();
        assert_eq!(table.owner_of(&added.access_key), Some(owner));
        assert_eq!(table.owner_of("CESSNOTAKEY"), None);
        assert!(remove(dir.path(), &added.access_key).unwrap());
        assert!(!remove(dir.path(), &added.access_key).unwrap());

        // A key made under another master secret is refused, not re-derived silently.
        let (_, _) = add(dir.path(), owner).unwrap();
        std::fs::remove_file(dir.path().join(MASTER_SECRET)).unwrap();
        assert!(KeyTable::open(dir.path()).is_err());
    }
}
