//! `/v1/servers/{id}/password`: the password a server's guest posted to
//! the metadata service (cloudbase-init's encrypted admin password), as
//! Nova's os-server-password: read it, or clear it so the guest may post
//! again.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::state::St;
use super::ApiError;

pub(super) async fn show(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let password = s.store.call(move |s| s.server_password(&id)).await?;
    Ok(Json(
        serde_json::json!({ "password": password.unwrap_or_default() }),
    ))
}

pub(super) async fn clear(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    s.store.call(move |s| s.clear_server_password(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
