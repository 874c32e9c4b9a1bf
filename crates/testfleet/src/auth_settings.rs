//! `[server.auth] digest_key_file`: the Digest nonce key that coordinators
//! behind one load balancer share. Part of `settings`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use testfleet_server::auth::NonceKey;

/// The least a shared secret holds (after surrounding whitespace).
const MIN_SECRET: usize = 16;

/// The nonce key derived from the secret in `path`.
pub fn digest_key(path: &Path) -> Result<NonceKey> {
    let secret = std::fs::read(path).with_context(|| {
        format!(
            "config `server.auth.digest_key_file`: cannot read {}",
            path.display()
        )
    })?;
    let secret = secret.trim_ascii();
    if secret.len() < MIN_SECRET {
        bail!(
            "config `server.auth.digest_key_file`: {} holds {} byte(s); give at least {MIN_SECRET} random bytes (for example `openssl rand -hex 32`)",
            path.display(),
            secret.len()
        );
    }
    Ok(NonceKey::from_secret(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use testfleet_server::auth::NonceCheck;

    #[test]
    fn two_coordinators_reading_one_file_accept_each_others_nonces() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("digest.key");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").expect("write");
        let (a, b) = (digest_key(&path).expect("a"), digest_key(&path).expect("b"));
        let nonce = a.nonce_at("r", 1_000_000);
        assert_eq!(
            b.check("r", &nonce, 1_000_010, Duration::from_secs(300)),
            NonceCheck::Fresh
        );
    }

    #[test]
    fn a_short_or_missing_secret_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("digest.key");
        std::fs::write(&path, "short\n").expect("write");
        let e = format!("{:#}", digest_key(&path).expect_err("refused"));
        assert!(
            e.contains("digest_key_file") && e.contains("5 byte(s)"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            digest_key(&dir.path().join("none")).expect_err("refused")
        );
        assert!(e.contains("cannot read"), "{e}");
    }
}
