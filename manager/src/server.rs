//! The REST API (axum): routes under `/v1`, JSON in and out, every error a
//! [`kiln_api::compute::ErrorBody`] with a 4xx status unless kilnd itself
//! failed. Request bodies go through [`Body`], which turns every rejection
//! (bad JSON, unknown fields, wrong types, negative sizes, oversize bodies)
//! into a JSON 4xx.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use kiln_api::compute::{
    ConsoleOutput, ErrorBody, Firmware, FlavorCreate, FlavorList, ImageCreate, ImageKind,
    ImageList, ServerAction, ServerCreate, ServerList, ServerStatus,
};
use serde::Deserialize;

use crate::config::Config;
use crate::images::{check_cmdline, prepare_image, ImageError};
use crate::placement::Placement;
use crate::store::{NewServer, Store, StoreError};
use crate::supervisor::actions::ActionError;
use crate::supervisor::Supervisor;
use crate::util::check_name;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../api/openapi.json");

pub struct AppState {
    pub store: Arc<Store>,
    pub sup: Arc<Supervisor>,
    pub placement: Placement,
    pub config: Arc<Config>,
}

pub(crate) type St = State<Arc<AppState>>;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 500 saying what went wrong inside kilnd.
    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            StoreError::NoCapacity(r) => ApiError::new(StatusCode::CONFLICT, r.to_string()),
            StoreError::Sqlite(ref s) => {
                tracing::error!(error = %s, "store error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}: {s}"))
            }
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> ApiError {
        match e {
            ActionError::Store(s) => s.into(),
            ActionError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
        }
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> ApiError {
        match e {
            ImageError::Invalid(m) => ApiError::bad(m),
            ImageError::Copy(ref s) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}: {s}"))
            }
        }
    }
}

/// A JSON request body whose rejections are JSON errors.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T> FromRequest<S> for Body<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(r) => {
                let status = match r.status() {
                    StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
                    s => s,
                };
                Err(ApiError::new(status, r.body_text()))
            }
        }
    }
}

/// A query string whose rejections are JSON errors.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T> FromRequestParts<S> for Q<T>
where
    Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Q(v)),
            Err(r) => Err(ApiError::bad(r.body_text())),
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/host", get(host))
        .route("/v1/flavors", get(list_flavors).post(create_flavor))
        .route("/v1/flavors/{id}", get(show_flavor).delete(delete_flavor))
        .route("/v1/images", get(list_images).post(create_image))
        .route("/v1/images/{id}", get(show_image).delete(delete_image))
        // Streamed to disk: images.max_upload_bytes, not max_body_bytes.
        .route(
            "/v1/images/{id}/file",
            put(crate::upload::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/servers", get(list_servers).post(create_server))
        .route("/v1/servers/{id}", get(show_server).delete(delete_server))
        .route("/v1/servers/{id}/action", post(server_action))
        .route("/v1/servers/{id}/console", get(console))
        .route(
            "/v1/servers/{id}/console/attach",
            get(crate::attach::attach),
        )
        .merge(crate::net::api::routes())
        .merge(crate::nics::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn host(State(s): St) -> Result<impl IntoResponse, ApiError> {
    let (used, n) = s.store.used()?;
    Ok(Json(s.placement.report(used, n)))
}

async fn list_flavors(State(s): St) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(FlavorList {
        flavors: s.store.list_flavors()?,
    }))
}

async fn show_flavor(State(s): St, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.store.get_flavor(&id)?))
}

async fn create_flavor(
    State(s): St,
    Body(req): Body<FlavorCreate>,
) -> Result<impl IntoResponse, ApiError> {
    check_name("flavor", &req.name).map_err(ApiError::bad)?;
    if !(1..=255).contains(&req.vcpus) {
        return Err(ApiError::bad("vcpus must be 1 to 255"));
    }
    if !(1..=4 << 20).contains(&req.ram_mb) {
        return Err(ApiError::bad("ram_mb must be 1 to 4194304"));
    }
    if req.disk_gb > 1 << 20 {
        return Err(ApiError::bad("disk_gb must be at most 1048576"));
    }
    // Nova's `quota:*` extra specs: refused unless kiln honours them.
    crate::qos::Qos::from_specs(&req.extra_specs).map_err(|e| ApiError::bad(e.to_string()))?;
    Ok((StatusCode::CREATED, Json(s.store.create_flavor(&req)?)))
}

async fn delete_flavor(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    s.store.delete_flavor(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_images(State(s): St) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ImageList {
        images: s.store.list_images()?,
    }))
}

async fn show_image(State(s): St, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.store.get_image(&id)?))
}

async fn create_image(
    State(s): St,
    Body(req): Body<ImageCreate>,
) -> Result<impl IntoResponse, ApiError> {
    let name = match &req {
        ImageCreate::Kernel { name, .. } | ImageCreate::Disk { name, .. } => name.clone(),
    };
    check_name("image", &name).map_err(ApiError::bad)?;
    if s.store.image_name_taken(&name)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("an image named {name:?} already exists"),
        ));
    }
    let dir = s.config.state_dir.join("images");
    let dirs =
        crate::import_path::ImportDirs::new(&s.config.state_dir, &s.config.images.import_dirs);
    let (img, job) = tokio::task::spawn_blocking(move || prepare_image(&req, &dir, &dirs))
        .await
        .map_err(ApiError::internal)??;
    if let Err(e) = s.store.insert_image(&img) {
        // A kernel image's store copies, made by prepare_image.
        crate::kernels::remove(&s.config.state_dir.join("images"), &img.id);
        return Err(e.into());
    }
    let Some(job) = job else {
        return Ok((StatusCode::CREATED, Json(img)));
    };
    // A disk image: copy and hash in the background, reporting progress.
    let store = s.store.clone();
    let id = img.id.clone();
    tokio::task::spawn_blocking(move || {
        let mut last = std::time::Instant::now();
        let r = job.run(|done| {
            if last.elapsed() >= std::time::Duration::from_millis(100) {
                last = std::time::Instant::now();
                let _ = store.set_import_progress(&id, done);
            }
        });
        match r {
            Ok((size, sha)) => {
                tracing::info!(image = id, size, "image imported");
                let _ = store.finish_import(&id, size, &sha);
            }
            Err(e) => {
                let why = match &e {
                    ImageError::Copy(io) => format!("{e}: {io}"),
                    _ => e.to_string(),
                };
                tracing::warn!(image = id, why, "image import failed");
                let _ = store.fail_import(&id, &why);
            }
        }
    });
    Ok((StatusCode::ACCEPTED, Json(img)))
}

async fn delete_image(State(s): St, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let img = s.store.delete_image(&id)?;
    if let ImageKind::Kernel { .. } = img.kind {
        crate::kernels::remove(&s.config.state_dir.join("images"), &img.id);
    }
    if let ImageKind::Disk { path, .. } = img.kind {
        let _ = std::fs::remove_file(path);
        // The lvm backend's copy of it (the next start reconciles a failure).
        let disks = s.sup.disks.clone();
        let _ = tokio::task::spawn_blocking(move || disks.remove_image(&img.id)).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    name: Option<String>,
}

async fn list_servers(State(s): St, Q(q): Q<ListQuery>) -> Result<impl IntoResponse, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(st) => Some(ServerStatus::parse(st).ok_or_else(|| {
            ApiError::bad(format!(
                "unknown status {st:?}; one of BUILD, ACTIVE, SHUTOFF, PAUSED, REBOOT, ERROR, DELETED"
            ))
        })?),
    };
    if status.is_none() && q.name.is_none() {
        let json = s.store.servers_json()?;
        return Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response());
    }
    Ok(Json(ServerList {
        servers: s.store.list_servers(status, q.name.as_deref())?,
    })
    .into_response())
}

async fn show_server(State(s): St, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.store.get_server(&id)?))
}

async fn create_server(
    State(s): St,
    Body(req): Body<ServerCreate>,
) -> Result<impl IntoResponse, ApiError> {
    check_name("server", &req.name).map_err(ApiError::bad)?;
    let flavor = s.store.get_flavor(&req.flavor).map_err(|e| match e {
        StoreError::NotFound { .. } => ApiError::bad(format!("unknown flavor {:?}", req.flavor)),
        e => e.into(),
    })?;
    let image = s.store.get_image(&req.image).map_err(|e| match e {
        StoreError::NotFound { .. } => ApiError::bad(format!("unknown image {:?}", req.image)),
        e => e.into(),
    })?;
    let store_dir = s.config.state_dir.join("images");
    let (firmware, disk_image_id, cmdline) = match &image.kind {
        ImageKind::Kernel {
            cmdline: default_cmdline,
            ..
        } => {
            // The kernel's store copies, checked again.
            let (check, dir) = (image.clone(), store_dir.clone());
            tokio::task::spawn_blocking(move || crate::kernels::stored(&check, &dir))
                .await
                .map_err(ApiError::internal)?
                .map_err(|m| ApiError::new(StatusCode::CONFLICT, m))?;
            if let Some(f) = req.firmware {
                return Err(ApiError::bad(format!(
                    "image {:?} is a kernel image, which boots directly: firmware {:?} applies only \
                     to servers whose image is a disk image",
                    image.name,
                    f.as_str()
                )));
            }
            let disk_image_id = match &req.disk_image {
                None => None,
                Some(key) => {
                    let img = s.store.get_image(key).map_err(|e| match e {
                        StoreError::NotFound { .. } => {
                            ApiError::bad(format!("unknown disk image {key:?}"))
                        }
                        e => e.into(),
                    })?;
                    check_root_image(&img, flavor.disk_gb, &store_dir).await?;
                    Some(img.id)
                }
            };
            let cmdline = req
                .cmdline
                .clone()
                .unwrap_or_else(|| default_cmdline.clone());
            check_cmdline(&cmdline)?;
            (None, disk_image_id, cmdline)
        }
        ImageKind::Disk {
            firmware: image_firmware,
            ..
        } => {
            if req.disk_image.is_some() {
                return Err(ApiError::bad(format!(
                    "image {:?} is a disk image, which becomes the root disk: disk_image goes \
                     only with a kernel image",
                    image.name
                )));
            }
            if req.cmdline.is_some() {
                return Err(ApiError::bad(format!(
                    "image {:?} is a disk image, which boots through firmware and its own boot \
                     loader: cmdline goes only with a kernel image",
                    image.name
                )));
            }
            check_root_image(&image, flavor.disk_gb, &store_dir).await?;
            let fw = req.firmware.unwrap_or(*image_firmware);
            crate::firmware::check_host_files(&s.config.firmware, fw)
                .map_err(|m| ApiError::new(StatusCode::CONFLICT, m))?;
            (Some(fw), Some(image.id.clone()), String::new())
        }
    };
    if req.user_data.as_ref().is_some_and(|u| u.len() > 65535) {
        return Err(ApiError::bad("user_data is longer than 65535 bytes"));
    }
    if req.metadata.len() > 128
        || req
            .metadata
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 255 || v.len() > 255)
    {
        return Err(ApiError::bad(
            "metadata: at most 128 items, keys 1 to 255 bytes, values at most 255 bytes",
        ));
    }
    if let Some(r) = &req.ready {
        match (&r.console, r.debug_code) {
            (Some(p), None) => {
                crate::util::console_regex(p).map_err(ApiError::bad)?;
            }
            (None, Some(_)) => {}
            _ => {
                return Err(ApiError::bad(
                    "ready: give exactly one of console and debug_code",
                ))
            }
        }
    }
    let expires_at = match req.ttl_s {
        None => None,
        Some(t @ 1..=31_536_000) => Some(crate::util::now_secs() + t),
        Some(_) => return Err(ApiError::bad("ttl_s must be 1 to 31536000 seconds")),
    };
    let nics = crate::net::api::resolve_nics(&s.store, &req.networks)?;
    let virtio_model = req.virtio_model.unwrap_or(image.virtio_model);
    let server = s.store.create_server(
        &s.placement,
        NewServer {
            name: req.name,
            flavor,
            image_id: image.id,
            disk_image_id,
            cmdline,
            user_data: req.user_data,
            metadata: req.metadata,
            ready: req.ready,
            expires_at,
            nics,
            firmware,
            nvram_under: (firmware == Some(Firmware::Uefi)).then(|| s.sup.servers_dir().to_owned()),
            virtio_model,
        },
    )?;
    s.sup.build(server.clone());
    Ok((StatusCode::ACCEPTED, Json(server)))
}

/// Checks that a disk image can be a root disk of `disk_gb`: active, and
/// no larger than the flavor's disk.
async fn check_root_image(
    img: &kiln_api::compute::Image,
    disk_gb: u64,
    store_dir: &std::path::Path,
) -> Result<(), ApiError> {
    if !matches!(img.kind, ImageKind::Disk { .. }) {
        return Err(ApiError::bad(format!(
            "image {:?} is not a disk image",
            img.name
        )));
    }
    if img.status != kiln_api::compute::ImageStatus::Active {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "disk image {:?} is not active (it is {:?})",
                img.name, img.status
            ),
        ));
    }
    // A server is never built on a chain that leaves the image store.
    let (check, store_dir) = (img.clone(), store_dir.to_owned());
    tokio::task::spawn_blocking(move || crate::images::check_stored_image(&check, &store_dir))
        .await
        .map_err(ApiError::internal)?
        .map_err(|m| ApiError::new(StatusCode::CONFLICT, m))?;
    let check = img.clone();
    tokio::task::spawn_blocking(move || crate::disks::root_size(&check, disk_gb))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::bad)?;
    Ok(())
}

async fn delete_server(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    s.sup.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn server_action(
    State(s): St,
    Path(id): Path<String>,
    Body(action): Body<ServerAction>,
) -> Result<impl IntoResponse, ApiError> {
    s.sup.action(&id, action)?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleQuery {
    tail: Option<usize>,
}

async fn console(
    State(s): St,
    Path(id): Path<String>,
    Q(q): Q<ConsoleQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let path = match s.store.get_server(&id) {
        Ok(_) => s.sup.server_dir(&id).join("serial.log"),
        Err(StoreError::NotFound { .. }) if uuid::Uuid::parse_str(&id).is_ok() => {
            let p = s.sup.archived_console(&id);
            if !p.exists() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("server {id:?} not found"),
                ));
            }
            p
        }
        Err(e) => return Err(e.into()),
    };
    let output = tokio::task::spawn_blocking(move || crate::util::read_tail(&path, q.tail))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(ConsoleOutput { output }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::read_tail;

    #[test]
    fn tail_takes_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(read_tail(&p, Some(2)), "b\nc\n");
        assert_eq!(read_tail(&p, Some(0)), "");
        assert_eq!(read_tail(&p, Some(10)), "a\nb\nc\n");
        assert_eq!(read_tail(&p, None), "a\nb\nc\n");
        assert_eq!(read_tail(&dir.path().join("none"), None), "");
    }

    #[test]
    fn openapi_parses_and_names_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for (route, methods) in [
            ("/openapi.json", &["get"][..]),
            ("/v1/host", &["get"]),
            ("/v1/flavors", &["get", "post"]),
            ("/v1/flavors/{id}", &["get", "delete"]),
            ("/v1/images", &["get", "post"]),
            ("/v1/images/{id}", &["get", "delete"]),
            ("/v1/servers", &["get", "post"]),
            ("/v1/servers/{id}", &["get", "delete"]),
            ("/v1/servers/{id}/action", &["post"]),
            ("/v1/servers/{id}/console", &["get"]),
            ("/v1/servers/{id}/console/attach", &["get"]),
            ("/v1/images/{id}/file", &["put"]),
            ("/v1/networks", &["get", "post"]),
            ("/v1/networks/{id}", &["get", "delete"]),
            ("/v1/servers/{id}/nics", &["get"]),
            ("/v1/servers/{id}/nics/{index}", &["get", "put"]),
        ] {
            for m in methods {
                assert!(
                    paths.get(route).and_then(|p| p.get(*m)).is_some(),
                    "{m} {route} missing"
                );
            }
        }
        // And nothing documented that the router lacks.
        assert_eq!(paths.len(), 16);
    }
}
