//! Key pairs (`/v1/keypairs`, Nova's os-keypairs).

use serde::{Deserialize, Serialize};

/// A key pair's kind; only OpenSSH keys (Nova's `ssh`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeypairType {
    #[default]
    Ssh,
}

/// An SSH key pair (Nova's os-keypairs): kilnd keeps its public half.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keypair {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: KeypairType,
    /// One OpenSSH line: `ALGORITHM BASE64 [COMMENT]`.
    pub public_key: String,
    /// OpenSSH's SHA256 fingerprint, as `ssh-keygen -l` prints it
    /// (`SHA256:` and unpadded base64).
    pub fingerprint: String,
    /// The generated private key (OpenSSH format), in the create response
    /// only and only when kilnd generated the pair; kilnd keeps no copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    pub created_at: String,
}

/// `POST /v1/keypairs`: imports `public_key`, or without one generates an
/// ed25519 pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeypairCreate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: KeypairType,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeypairList {
    pub keypairs: Vec<Keypair>,
}
