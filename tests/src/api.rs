//! The tests' calls on a VMM's control socket, made with Kiln's one HTTP
//! client ([`kiln_api::client`]): raw method and path here, for tests that
//! send what kilnd never would; [`crate::Vm::info`] uses the typed
//! [`kiln_api::control::Request`].

use std::path::Path;
use std::time::Duration;

use kiln_api::client::{self, ClientError};

/// How long a control request may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the VM has no api socket")]
    NoSocket,
    #[error("control request")]
    Client(#[from] ClientError),
    #[error("HTTP {0}: {1}")]
    Status(u16, String),
    #[error("bad JSON ({0}): {1}")]
    Json(String, String),
}

/// Send `method path` (no body) to the socket; returns (status, body).
pub fn request(sock: &Path, method: &str, path: &str) -> Result<(u16, String), ApiError> {
    let r = client::request(sock, method, path, None, TIMEOUT)?;
    Ok((r.status, r.text()))
}

/// `PUT path` with a JSON body; returns (status, body).
pub fn put_json(sock: &Path, path: &str, body: &str) -> Result<(u16, String), ApiError> {
    let r = client::request(sock, "PUT", path, Some(body.as_bytes()), TIMEOUT)?;
    Ok((r.status, r.text()))
}

/// `POST path` with a JSON body; returns (status, body).
pub fn post_json(sock: &Path, path: &str, body: &str) -> Result<(u16, String), ApiError> {
    let r = client::request(sock, "POST", path, Some(body.as_bytes()), TIMEOUT)?;
    Ok((r.status, r.text()))
}
