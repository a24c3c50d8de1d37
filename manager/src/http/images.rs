//! `/v1/images` (the upload of a queued image's bytes: [`super::upload`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use kiln_api::compute::{ImageCreate, ImageList};

use super::extract::Body;
use super::state::St;
use super::ApiError;

pub(super) async fn list(State(s): St) -> Result<impl IntoResponse, ApiError> {
    let images = s.store.call(|s| s.list_images()).await?;
    Ok(Json(ImageList { images }))
}

pub(super) async fn show(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.store.call(move |s| s.get_image(&id)).await?))
}

/// 201 when the image is ready, 202 when a disk image is being copied.
pub(super) async fn create(
    State(s): St,
    Body(req): Body<ImageCreate>,
) -> Result<impl IntoResponse, ApiError> {
    let (img, copying) = crate::images::create(&s.store, &s.config, req).await?;
    let status = if copying {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(img)))
}

pub(super) async fn delete(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    crate::images::delete(&s.store, &s.config, &s.sup.disks, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
