//! Key pairs (Nova's os-keypairs): the rules a key pair keeps before the
//! store records it.
//!
//! 1. the name is a kiln name (a 400 otherwise);
//! 2. a given `public_key` is one OpenSSH line (`ALGORITHM BASE64
//!    [COMMENT]`, at most 16 KiB) of an ed25519, RSA or ECDSA
//!    (nistp256/384/521) key that decodes (a 400 otherwise); kilnd keeps
//!    it re-encoded from the decoded key, comment kept;
//! 3. without one, kilnd generates an ed25519 pair and answers its
//!    private key once, in the create response; it keeps no copy;
//! 4. the fingerprint is OpenSSH's SHA256 form (`ssh-keygen -l`);
//! 5. the store refuses a name already taken (a 409), nothing recorded.

use std::sync::Arc;

use kiln_api::compute::{Keypair, KeypairCreate, KeypairType};
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey, PublicKey};
use thiserror::Error;

use crate::store::{Store, StoreError};
use crate::util::{check_name, now_rfc3339};

/// The longest public key line taken (a 16384-bit RSA key is ~2.8 KiB).
const MAX_PUBLIC_KEY: usize = 16 * 1024;

#[derive(Debug, Error)]
pub enum KeypairError {
    /// The request breaks a rule (a 400).
    #[error("{0}")]
    Invalid(String),
    /// kilnd failed making a key (a 500).
    #[error("generating an ed25519 key failed")]
    Generate(#[source] ssh_key::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks `req`, imports or generates the key and records the pair.
pub async fn create(store: &Arc<Store>, req: KeypairCreate) -> Result<Keypair, KeypairError> {
    check_name("key pair", &req.name).map_err(|e| KeypairError::Invalid(e.to_string()))?;
    let KeypairType::Ssh = req.kind;
    let (public, private_key) = match &req.public_key {
        Some(line) => (parse_public(line)?, None),
        None => {
            let (public, private) = generate(&req.name)?;
            (public, Some(private))
        }
    };
    let keypair = Keypair {
        name: req.name,
        kind: KeypairType::Ssh,
        public_key: public
            .to_openssh()
            .map_err(|e| KeypairError::Invalid(format!("public_key: {e}")))?,
        fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
        private_key,
        created_at: now_rfc3339(),
    };
    let k = keypair.clone();
    store.call(move |s| s.insert_keypair(&k)).await?;
    Ok(keypair)
}

/// Rule 2: one OpenSSH public key line of a key type kiln takes.
pub fn parse_public(line: &str) -> Result<PublicKey, KeypairError> {
    let bad = |why: String| KeypairError::Invalid(format!("public_key: {why}"));
    let line = line.trim();
    if line.len() > MAX_PUBLIC_KEY {
        return Err(bad(format!("longer than {MAX_PUBLIC_KEY} bytes")));
    }
    if line.contains(['\n', '\r']) {
        return Err(bad("give exactly one OpenSSH public key line".into()));
    }
    let key = PublicKey::from_openssh(line).map_err(|e| {
        bad(format!(
            "not an OpenSSH public key (`ALGORITHM BASE64 [COMMENT]`): {e}"
        ))
    })?;
    match key.algorithm() {
        Algorithm::Ed25519
        | Algorithm::Rsa { .. }
        | Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256 | EcdsaCurve::NistP384 | EcdsaCurve::NistP521,
        } => Ok(key),
        a => Err(bad(format!(
            "key type {} is not taken; use ssh-ed25519, ssh-rsa or ecdsa-sha2-nistp256/384/521",
            a.as_str()
        ))),
    }
}

/// Rule 3: a new ed25519 pair, commented with the pair's name; the
/// private key in OpenSSH's format, unencrypted.
fn generate(name: &str) -> Result<(PublicKey, String), KeypairError> {
    let mut private = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
        .map_err(KeypairError::Generate)?;
    private.set_comment(name);
    let pem = private
        .to_openssh(LineEnding::LF)
        .map_err(KeypairError::Generate)?;
    Ok((private.public_key().clone(), pem.as_str().to_owned()))
}

#[cfg(test)]
mod tests;
