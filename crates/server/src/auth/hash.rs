//! Secret and token hashing: argon2id for passwords and agent secrets,
//! SHA-256 for API tokens, random token and secret generation, and user
//! records (argon2 hash plus Digest HA1 values).

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};
use testfleet_store::StoredUser;

use super::digest::digest_ha1;

/// Why a secret could not be hashed or made.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("failed to hash the secret: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the operating system gave no randomness: {0}")]
    Random(getrandom::Error),
}

/// Hashes a password or agent secret with argon2id (PHC string).
pub fn hash_secret(secret: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|h| h.to_string())
        .map_err(HashError::Hash)
}

/// Checks a secret against an argon2 PHC hash.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(secret.as_bytes(), hash)
        .is_ok()
}

/// A new random API token (shown once) and the hash to store.
pub fn new_token() -> Result<(String, String), HashError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(HashError::Random)?;
    let token = format!("tf_{}", hex::encode(bytes));
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// A new random agent secret.
pub fn new_secret() -> Result<String, HashError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(HashError::Random)?;
    Ok(hex::encode(bytes))
}

/// The stored form of an API token: tokens are long random strings, so a
/// plain SHA-256 is enough (no salt or stretching needed).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A user record for `password`: its argon2 hash and its Digest HA1 values
/// for `realm`, computed together so they always match.
pub fn user_record(
    name: &str,
    password: &str,
    admin: bool,
    realm: &str,
) -> Result<StoredUser, HashError> {
    let (md5, sha256) = digest_ha1(name, realm, password);
    Ok(StoredUser {
        name: name.to_owned(),
        password_hash: hash_secret(password)?,
        admin,
        digest_realm: Some(realm.to_owned()),
        digest_ha1_md5: Some(md5),
        digest_ha1_sha256: Some(sha256),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_verify() {
        let hash = hash_secret("hunter2").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_secret("hunter2", &hash));
        assert!(!verify_secret("hunter3", &hash));
        assert!(!verify_secret("hunter2", "not a hash"));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, ha) = new_token().unwrap();
        let (b, _) = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), ha);
        assert_eq!(ha.len(), 64);
    }
}
