//! `/v1/flavors`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use kiln_api::compute::{FlavorCreate, FlavorList};

use super::extract::Body;
use super::state::St;
use super::ApiError;

pub(super) async fn list(State(s): St) -> Result<impl IntoResponse, ApiError> {
    let flavors = s.store.call(|s| s.list_flavors()).await?;
    Ok(Json(FlavorList { flavors }))
}

pub(super) async fn show(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.store.call(move |s| s.get_flavor(&id)).await?))
}

pub(super) async fn create(
    State(s): St,
    Body(req): Body<FlavorCreate>,
) -> Result<impl IntoResponse, ApiError> {
    let flavor = crate::flavors::create(&s.store, req).await?;
    Ok((StatusCode::CREATED, Json(flavor)))
}

pub(super) async fn delete(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    s.store.call(move |s| s.delete_flavor(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
