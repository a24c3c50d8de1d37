//! `/v1/networks`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use kiln_api::compute::{NetworkCreate, NetworkList};

use super::extract::Body;
use super::state::St;
use super::ApiError;

pub(super) async fn list(State(s): St) -> Result<impl IntoResponse, ApiError> {
    let networks = s.store.call(|s| s.list_networks()).await?;
    Ok(Json(NetworkList { networks }))
}

pub(super) async fn show(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.store.call(move |s| s.get_network(&id)).await?))
}

pub(super) async fn create(
    State(s): St,
    Body(req): Body<NetworkCreate>,
) -> Result<impl IntoResponse, ApiError> {
    let net = crate::networks::create(&s.services, req).await?;
    Ok((StatusCode::CREATED, Json(net)))
}

pub(super) async fn delete(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    crate::networks::delete(&s.services, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
