//! `PUT /v1/images/{id}/file`: a queued disk image's bytes as the body
//! (as Glance takes them). The body is streamed, never held whole in
//! memory, into the upload protocol of [`crate::images::Upload`]; it is
//! not subject to `max_body_bytes`, but to `images.max_upload_bytes` (413
//! beyond it, checked against `Content-Length` first and then against the
//! bytes that come). A client that sends no body bytes for
//! `images.upload_idle_timeout_s` gets a 408; one that leaves, nothing.
//! Either way the upload is dropped and the image is `queued` again.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use http_body_util::BodyExt;
use kiln_api::compute::Image;

use super::state::{AppState, St};
use super::ApiError;
use crate::images::Upload;

pub(super) async fn upload(
    State(s): St,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(receive(&s, key, &headers, body).await?))
}

/// Streams `body` into queued image `key`'s upload (also Glance's `PUT
/// /v2/images/{id}/file`, `http/openstack/image.rs`).
pub(crate) async fn receive(
    s: &AppState,
    key: String,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Image, ApiError> {
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad("bad Content-Length"))?,
        ),
    };
    let mut upload = Upload::begin(&s.store, &s.config, key, declared).await?;
    let mut body = body;
    let idle = Duration::from_secs(s.config.images.upload_idle_timeout_s);
    loop {
        let Ok(frame) = tokio::time::timeout(idle, body.frame()).await else {
            let done = upload.done();
            tracing::warn!(image = upload.id(), done, "upload idle, abandoned");
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the upload sent no data for {} s (images.upload_idle_timeout_s) after {done} bytes: abandoned, the image is queued again",
                    idle.as_secs()
                ),
            ));
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| {
            ApiError::bad(format!(
                "the upload broke off after {} bytes: {e}",
                upload.done()
            ))
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        upload.write(&data).await?;
    }
    Ok(upload.finish().await?)
}
