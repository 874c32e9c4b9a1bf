//! Content-addressed blobs (SHA-256) for inputs and artifacts.
//!
//! - [`Digest`]: a validated SHA-256, written as 64 lowercase hex digits.
//! - [`store::BlobStore`]: the coordinator's blob store on `object_store`, a local
//!   directory by default or an S3-compatible bucket; puts are streamed, checked
//!   against their digest and refused past a size limit before they fill a disk.
//! - [`manifest`]: an input tree as a sorted list of (path, mode, size, digest),
//!   hashed in parallel with a git-index-like cache so an unchanged tree is not
//!   read again; path safety (no `..`, no absolute paths, no symlink leaving the tree).
//! - [`cache`]: the agent's blob cache (size limit, LRU eviction, every blob
//!   verified as it is used) and [`cache::materialize`], which writes a
//!   manifest's tree under one directory and nowhere else.

pub mod cache;
pub mod manifest;
pub mod store;

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

pub use cache::{BlobCache, Fetcher, MaterializeStats, materialize};
pub use manifest::{Entry, EntryKind, HashCache, Manifest, TreeFile, hash_tree};
pub use store::{BlobBackend, BlobMeta, BlobStore, S3Config};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The digest of what `reader` yields, read to its end.
    pub fn of_reader(mut reader: impl Read) -> std::io::Result<(Digest, u64)> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut len = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok((Digest(hasher.finalize().into()), len))
    }

    /// The digest and size of a file.
    pub fn of_file(path: &Path) -> Result<(Digest, u64), CasError> {
        let file = std::fs::File::open(path).map_err(|e| CasError::io(path, e))?;
        Digest::of_reader(file).map_err(|e| CasError::io(path, e))
    }

    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest(hasher.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `sha256:<hex>` or plain hex.
    pub fn parse_prefixed(text: &str) -> Result<Digest, CasError> {
        text.strip_prefix("sha256:").unwrap_or(text).parse()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = CasError;

    fn from_str(s: &str) -> Result<Digest, CasError> {
        let bad = || CasError::InvalidDigest(s.chars().take(80).collect());
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    #[error(
        "`{0}` is not a SHA-256 digest (expected 64 lowercase hexadecimal digits, optionally prefixed by `sha256:`)"
    )]
    InvalidDigest(String),
    #[error("blob {0} not found")]
    NotFound(Digest),
    #[error("the blob is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("the content does not match its digest: expected {expected}, got {actual}")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("blob store error: {0}")]
    Store(#[from] object_store::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("unsafe path `{path}`: {reason}")]
    UnsafePath { path: String, reason: String },
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("transfer failed: {0}")]
    Transfer(String),
    #[error("invalid blob store configuration: {0}")]
    Config(String),
}

impl CasError {
    pub fn io(path: &Path, source: std::io::Error) -> CasError {
        CasError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub fn unsafe_path(path: impl Into<String>, reason: impl Into<String>) -> CasError {
        CasError::UnsafePath {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_strictly() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.to_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert_eq!(Digest::parse_prefixed(&format!("sha256:{d}")).unwrap(), d);
        for bad in [
            "",
            "abc",
            &d.to_hex().to_uppercase(),
            &format!("{d}0"),
            "../../../../etc/passwd",
            &"g".repeat(64),
        ] {
            let err = bad.parse::<Digest>().unwrap_err().to_string();
            assert!(err.contains("not a SHA-256 digest"), "{bad}: {err}");
        }
    }
}
