//! `/v1/keypairs`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use kiln_api::compute::{KeypairCreate, KeypairList};

use super::extract::Body;
use super::state::St;
use super::ApiError;

pub(super) async fn list(State(s): St) -> Result<impl IntoResponse, ApiError> {
    let keypairs = s.store.call(|s| s.list_keypairs()).await?;
    Ok(Json(KeypairList { keypairs }))
}

pub(super) async fn show(
    State(s): St,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.store.call(move |s| s.get_keypair(&name)).await?))
}

pub(super) async fn create(
    State(s): St,
    Body(req): Body<KeypairCreate>,
) -> Result<impl IntoResponse, ApiError> {
    let keypair = crate::keypairs::create(&s.store, req).await?;
    Ok((StatusCode::CREATED, Json(keypair)))
}

pub(super) async fn delete(
    State(s): St,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    s.store.call(move |s| s.delete_keypair(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
