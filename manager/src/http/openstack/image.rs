//! Glance v2: version documents, images list, show, create (free-form
//! properties kept), update (`PATCH`, a JSON patch), upload (`PUT
//! .../file`, streamed as `/v1`'s upload) and delete, and the image
//! schema openstackclient reads.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::compute_servers::query_pairs;
use super::error::{OsError, Service};
use super::{doc, parse, version_entry, Base};
use crate::http::state::{AppState, St};
use crate::openstack::glance;
use crate::openstack::glance_props::{self, PropError};

const GLANCE: Service = Service::Image;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/image/v2/images", get(list).post(create))
        .route(
            "/image/v2/images/{id}",
            get(show).delete(delete).patch(update),
        )
        // Streamed to disk: images.max_upload_bytes, not max_body_bytes.
        .route(
            "/image/v2/images/{id}/file",
            put(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/image/v2/schemas/image", get(schema))
}

/// `GET /image/`: 300 and v2 (as Glance, which also lists its minor
/// versions; Kiln serves the subset `manager/README.md` names).
pub(super) async fn versions(Base(base): Base) -> Response {
    let v =
        |id: &str, status: &str| version_entry(id, status, format!("{base}/image/v2/"), json!({}));
    doc(
        StatusCode::MULTIPLE_CHOICES,
        json!({"versions": [v("v2.9", "CURRENT"), v("v2.0", "SUPPORTED")]}),
    )
}

async fn list(State(s): St, uri: Uri) -> Result<Json<Value>, OsError> {
    let images = s
        .store
        .call(|s| s.list_images())
        .await
        .map_err(|e| OsError::from_api(GLANCE, e))?;
    let props = s
        .store
        .call(|s| s.all_image_properties())
        .await
        .map_err(|e| OsError::from_api(GLANCE, e))?;
    let filters = query_pairs(&uri);
    let owner = &s.identity.project_id;
    let list: Vec<Value> = images
        .iter()
        .map(|i| glance::image(i, owner, props.get(&i.id)))
        .filter(|v| glance::matches(v, &filters))
        .collect();
    let (list, next) = super::paging::page(GLANCE, &filters, list, |v| {
        v["id"].as_str().unwrap_or_default()
    })?;
    let mut out = json!({"images": list, "first": "/v2/images", "schema": "/v2/schemas/images"});
    if let Some(m) = next {
        out["next"] = json!(super::paging::next_href("/v2/images", &filters, &m));
    }
    Ok(Json(out))
}

/// `GET /image/v2/images/{id}`: by id only (a name is a 404, as Glance).
async fn show(State(s): St, Path(id): Path<String>) -> Result<Json<Value>, OsError> {
    let img = by_id(&s, &id).await?;
    view(&s, &img).await.map(Json)
}

/// An image's Glance view with its properties.
async fn view(s: &AppState, img: &kiln_api::compute::Image) -> Result<Value, OsError> {
    let id = img.id.clone();
    let props = s
        .store
        .call(move |s| s.image_properties(&id))
        .await
        .map_err(|e| OsError::from_api(GLANCE, e))?;
    Ok(glance::image(img, &s.identity.project_id, Some(&props)))
}

fn prop_err(e: PropError) -> OsError {
    let status = match e {
        PropError::Bad(_) => StatusCode::BAD_REQUEST,
        PropError::ReadOnly(_) => StatusCode::FORBIDDEN,
        PropError::Conflict(_) => StatusCode::CONFLICT,
    };
    OsError::new(GLANCE, status, e.to_string())
}

/// `PATCH /image/v2/images/{id}`: a JSON patch
/// (`application/openstack-images-v2.1-json-patch`) of its name and
/// properties, all or nothing (`crate::openstack::glance_props`); 200
/// and the image.
async fn update(
    State(s): St,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, OsError> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/openstack-images-v2.1-json-patch")
        && !ct.starts_with("application/openstack-images-v2.0-json-patch")
    {
        return Err(OsError::new(
            GLANCE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {ct:?}: use application/openstack-images-v2.1-json-patch"),
        ));
    }
    let img = by_id(&s, &id).await?;
    let ops: Value = parse(GLANCE, &body)?;
    let key = id.clone();
    let now = s
        .store
        .call(move |s| s.image_properties(&key))
        .await
        .map_err(|e| OsError::from_api(GLANCE, e))?;
    let p = glance_props::apply(&ops, &img.name, &now).map_err(prop_err)?;
    if let Some(n) = &p.name {
        crate::util::check_name("image", n).map_err(|e| OsError::bad(GLANCE, e.to_string()))?;
    }
    s.store
        .call(move |s| s.set_image_properties(&id, p.name.as_deref(), &p.properties))
        .await
        .map_err(|e| OsError::from_api(GLANCE, e))?;
    let img = by_id(&s, &img.id).await?;
    view(&s, &img).await.map(Json)
}

/// `POST /image/v2/images`: 201 and the queued image.
async fn create(State(s): St, body: Bytes) -> Result<Response, OsError> {
    let body: serde_json::Map<String, Value> = parse(GLANCE, &body)?;
    let req = glance::to_kiln(&body).map_err(|m| OsError::bad(GLANCE, m))?;
    let props = glance_props::from_create(&body).map_err(prop_err)?;
    let (img, _) = crate::images::create(&s.store, &s.config, req)
        .await
        .map_err(|e| OsError::from_api(GLANCE, e))?;
    if !props.is_empty() {
        let (id, p) = (img.id.clone(), props.clone());
        s.store
            .call(move |s| s.set_image_properties(&id, None, &p))
            .await
            .map_err(|e| OsError::from_api(GLANCE, e))?;
    }
    let v = glance::image(&img, &s.identity.project_id, Some(&props));
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `PUT /image/v2/images/{id}/file`: 204 once stored and checked.
async fn upload(
    State(s): St,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, OsError> {
    by_id(&s, &id).await?;
    crate::http::upload::receive(&s, id, &headers, body)
        .await
        .map_err(|e| OsError::from_api(GLANCE, e))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete(State(s): St, Path(id): Path<String>) -> Result<StatusCode, OsError> {
    by_id(&s, &id).await?;
    crate::images::delete(&s.store, &s.config, &s.sup.disks, id)
        .await
        .map_err(|e| OsError::from_api(GLANCE, e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The image whose id (not name) is `id`.
async fn by_id(s: &AppState, id: &str) -> Result<kiln_api::compute::Image, OsError> {
    let key = id.to_owned();
    let img = s
        .store
        .call(move |s| s.get_image(&key))
        .await
        .map_err(|e| OsError::from_api(GLANCE, e))?;
    if img.id != id {
        return Err(OsError::new(
            GLANCE,
            StatusCode::NOT_FOUND,
            format!("No image found with ID {id}"),
        ));
    }
    Ok(img)
}

/// The image schema, as much of it as a client reads: the properties
/// Kiln's images have; more are allowed.
async fn schema() -> Json<Value> {
    let s = |t: &str| json!({"type": t});
    Json(json!({
        "name": "image",
        "properties": {
            "id": s("string"), "name": s("string"), "status": s("string"),
            "visibility": s("string"), "protected": s("boolean"), "os_hidden": s("boolean"),
            "disk_format": s("string"), "container_format": s("string"),
            "size": s("integer"), "virtual_size": s("integer"), "checksum": s("string"),
            "os_hash_algo": s("string"), "os_hash_value": s("string"),
            "min_disk": s("integer"), "min_ram": s("integer"), "owner": s("string"),
            "created_at": s("string"), "updated_at": s("string"), "tags": s("array"),
            "self": s("string"), "file": s("string"), "schema": s("string"),
        },
        "additionalProperties": {"type": "string"},
        "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
                  {"rel": "describedby", "href": "{schema}"}],
    }))
}
