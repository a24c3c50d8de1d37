//! Image upload (as Glance does it): `PUT /v1/images/{id}/file` with the
//! image's bytes as the body, for an image created with `source: upload`
//! (status `queued`).
//!
//! The body is streamed into `ID.FORMAT.partial` in the image store, never
//! held whole in memory, hashed (sha256) on the way, with `bytes_done`
//! recorded as it goes. It is not subject to `max_body_bytes`, but to
//! `images.max_upload_bytes` (413 beyond it, checked against
//! `Content-Length` first and then against the bytes that come). At the end
//! the data is checked against the declared format ([`check_complete`]);
//! data that is not what it claims turns the image to `error` with a fault
//! saying why, and the file is removed. An upload that does not end
//! (client gone, too large, or no body bytes for
//! `images.upload_idle_timeout_s`, which answers 408) removes its partial file and leaves the image
//! `queued` again, for another try; a kilnd killed mid-upload leaves it
//! `importing`, which the next start turns to `error` and whose partial
//! file it removes ([`remove_partials`]).

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use http_body_util::BodyExt;
use kiln_api::compute::{ImageKind, ImageStatus};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::images::check_complete;
use crate::server::{ApiError, St};
use crate::store::Store;

/// The suffix of a file still being uploaded.
pub const PARTIAL: &str = ".partial";

/// Removes upload leftovers (`*.partial`) from the image store; run at
/// start, when no upload can be running. Answers what it removed.
pub fn remove_partials(store_dir: &FsPath) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    if let Ok(rd) = std::fs::read_dir(store_dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.to_string_lossy().ends_with(PARTIAL) && std::fs::remove_file(&p).is_ok() {
                removed.push(p);
            }
        }
    }
    removed
}

/// Puts an upload that did not end back to `queued`, without its file,
/// also when the request's future is dropped (the client went away).
struct Unfinished {
    store: Arc<Store>,
    id: String,
    partial: PathBuf,
    armed: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.partial);
            let _ = self.store.requeue_upload(&self.id);
            tracing::warn!(image = self.id, "upload did not end; image queued again");
        }
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the image is larger than the largest upload accepted, {max} bytes (images.max_upload_bytes)"),
    )
}

pub async fn upload(
    State(s): St,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<impl IntoResponse, ApiError> {
    let img = s.store.get_image(&key)?;
    let ImageKind::Disk { path, format, .. } = img.kind.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("image {:?} is a kernel image: nothing to upload", img.name),
        ));
    };
    let conflict = |what: &str| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "image {:?} is {what}: only a queued image (created with source: upload) takes an upload",
                img.name
            ),
        )
    };
    match img.status {
        ImageStatus::Queued => {}
        ImageStatus::Active => return Err(conflict("active")),
        ImageStatus::Importing => return Err(conflict("importing")),
        ImageStatus::Error => return Err(conflict("in error (delete it and create it again)")),
    }
    let max = s.config.images.max_upload_bytes;
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad Content-Length"))?,
        ),
    };
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    if !s.store.start_upload(&img.id, declared.unwrap_or(0))? {
        return Err(conflict("no longer queued"));
    }
    let partial = PathBuf::from(format!("{path}{PARTIAL}"));
    let mut guard = Unfinished {
        store: s.store.clone(),
        id: img.id.clone(),
        partial: partial.clone(),
        armed: true,
    };
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", partial.display())))?;
    let mut hash = Sha256::new();
    let mut done = 0u64;
    let mut last = Instant::now();
    let mut body = body;
    let idle = Duration::from_secs(s.config.images.upload_idle_timeout_s);
    loop {
        let Ok(frame) = tokio::time::timeout(idle, body.frame()).await else {
            tracing::warn!(image = img.id, done, "upload idle, abandoned");
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
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the upload broke off after {done} bytes: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        done += data.len() as u64;
        if done > max {
            return Err(too_large(max));
        }
        hash.update(&data);
        file.write_all(&data)
            .await
            .map_err(|e| ApiError::internal(format!("cannot write the upload: {e}")))?;
        if last.elapsed() >= Duration::from_millis(100) {
            last = Instant::now();
            let _ = s.store.set_import_progress(&img.id, done);
        }
    }
    file.sync_all()
        .await
        .map_err(|e| ApiError::internal(format!("cannot write the upload: {e}")))?;
    drop(file);
    let check = partial.clone();
    let checked = tokio::task::spawn_blocking(move || check_complete(&check, format))
        .await
        .map_err(ApiError::internal)?;
    guard.armed = false;
    if let Err(why) = checked {
        let _ = std::fs::remove_file(&partial);
        let why = format!("upload refused: {why}");
        s.store.fail_import(&img.id, &why)?;
        tracing::warn!(image = img.id, why, "upload refused");
        return Err(ApiError::new(StatusCode::BAD_REQUEST, why));
    }
    if let Err(e) = std::fs::rename(&partial, &path) {
        let _ = std::fs::remove_file(&partial);
        let why = format!("cannot store the upload: {e}");
        s.store.fail_import(&img.id, &why)?;
        return Err(ApiError::internal(why));
    }
    let sha: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    s.store.finish_import(&img.id, done, &sha)?;
    tracing::info!(image = img.id, size = done, "image uploaded");
    Ok(Json(s.store.get_image(&img.id)?))
}
