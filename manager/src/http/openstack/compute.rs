//! Nova v2.1 but servers and flavors: version documents, `os-keypairs`,
//! `limits`, `os-hypervisors`, `os-availability-zone`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kiln_api::compute::{KeypairCreate, KeypairType};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{nova, OsError, Service};
use super::{doc, parse, version_entry, Base, Mv};
use crate::http::state::{AppState, St};
use crate::openstack::microversion::{Microversion, MAX, MIN};
use crate::openstack::nova::View;

const NOVA: Service = Service::Compute;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/compute/v2.1/os-keypairs",
            get(keypairs).post(keypair_create),
        )
        .route(
            "/compute/v2.1/os-keypairs/{name}",
            get(keypair).delete(keypair_delete),
        )
        .route("/compute/v2.1/limits", get(limits))
        .route("/compute/v2.1/os-hypervisors", get(hypervisors))
        .route(
            "/compute/v2.1/os-hypervisors/detail",
            get(hypervisors_detail),
        )
        .route("/compute/v2.1/os-availability-zone", get(zones))
}

fn v21(base: &str) -> Value {
    version_entry(
        "v2.1",
        "CURRENT",
        format!("{base}/compute/v2.1/"),
        json!({"version": MAX.to_string(), "min_version": MIN.to_string(),
               "updated": "2013-07-23T11:33:21Z",
               "media-types": [{"base": "application/json",
                                "type": "application/vnd.openstack.compute+json;version=2.1"}]}),
    )
}

/// `GET /compute/`: v2.1 only (Kiln has no v2.0 endpoint).
pub(super) async fn versions(Base(base): Base) -> Response {
    doc(StatusCode::OK, json!({"versions": [v21(&base)]}))
}

pub(super) async fn version(Base(base): Base) -> Response {
    doc(StatusCode::OK, json!({"version": v21(&base)}))
}

/// The view of a request: links under this compute endpoint, at its
/// microversion.
pub(super) fn view<'a>(s: &'a AppState, base: &'a str, mv: Microversion) -> View<'a> {
    View {
        base,
        mv,
        project_id: &s.identity.project_id,
        user_id: &s.identity.user_id,
        host: &s.identity.host,
    }
}

pub(super) fn endpoint(base: &str) -> String {
    format!("{base}/compute/v2.1")
}

async fn keypairs(State(s): St, Base(b): Base, Mv(mv): Mv) -> Result<Json<Value>, OsError> {
    let list = s.store.call(|s| s.list_keypairs()).await.map_err(nova)?;
    let e = endpoint(&b);
    let v = view(&s, &e, mv);
    let list: Vec<Value> = list
        .iter()
        .map(|k| json!({"keypair": v.keypair(k, false)}))
        .collect();
    Ok(Json(json!({"keypairs": list})))
}

async fn keypair(
    State(s): St,
    Base(b): Base,
    Mv(mv): Mv,
    Path(name): Path<String>,
) -> Result<Json<Value>, OsError> {
    let k = s
        .store
        .call(move |s| s.get_keypair(&name))
        .await
        .map_err(nova)?;
    let e = endpoint(&b);
    Ok(Json(json!({"keypair": view(&s, &e, mv).keypair(&k, true)})))
}

#[derive(Deserialize)]
struct KeypairBody {
    keypair: NovaKeypair,
}

#[derive(Deserialize)]
struct NovaKeypair {
    name: String,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// `POST /os-keypairs`: imports `public_key`, or has `crate::keypairs`
/// generate the pair (then the private key is in the answer, once).
async fn keypair_create(
    State(s): St,
    Base(b): Base,
    Mv(mv): Mv,
    body: Bytes,
) -> Result<Response, OsError> {
    let req: KeypairBody = parse(NOVA, &body)?;
    if let Some(k) = req.keypair.kind.as_deref().filter(|k| *k != "ssh") {
        return Err(OsError::bad(
            NOVA,
            format!("keypair type {k:?} is not supported; Kiln keeps ssh key pairs only"),
        ));
    }
    let k = crate::keypairs::create(
        &s.store,
        KeypairCreate {
            name: req.keypair.name,
            public_key: req.keypair.public_key,
            kind: KeypairType::default(),
        },
    )
    .await
    .map_err(nova)?;
    let e = endpoint(&b);
    let status = if mv.0 >= 2 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"keypair": view(&s, &e, mv).keypair(&k, false)})),
    )
        .into_response())
}

async fn keypair_delete(
    State(s): St,
    Mv(mv): Mv,
    Path(name): Path<String>,
) -> Result<StatusCode, OsError> {
    s.store
        .call(move |s| s.delete_keypair(&name))
        .await
        .map_err(nova)?;
    Ok(if mv.0 >= 2 {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::ACCEPTED
    })
}

async fn host_info(s: &AppState) -> Result<kiln_api::compute::HostInfo, OsError> {
    let (used, n) = s.store.call(|s| s.used()).await.map_err(nova)?;
    Ok(s.placement.report(used, n))
}

async fn limits(State(s): St, Base(b): Base, Mv(mv): Mv) -> Result<Json<Value>, OsError> {
    let h = host_info(&s).await?;
    let e = endpoint(&b);
    Ok(Json(view(&s, &e, mv).limits(&h)))
}

async fn hypervisors(State(s): St, Base(b): Base, Mv(mv): Mv) -> Result<Json<Value>, OsError> {
    let h = host_info(&s).await?;
    let e = endpoint(&b);
    let one = view(&s, &e, mv).hypervisor(&s.identity.instance_uuid(), &h, false);
    Ok(Json(json!({"hypervisors": [one]})))
}

async fn hypervisors_detail(
    State(s): St,
    Base(b): Base,
    Mv(mv): Mv,
) -> Result<Json<Value>, OsError> {
    let h = host_info(&s).await?;
    let e = endpoint(&b);
    let one = view(&s, &e, mv).hypervisor(&s.identity.instance_uuid(), &h, true);
    Ok(Json(json!({"hypervisors": [one]})))
}

async fn zones() -> Json<Value> {
    Json(json!({"availabilityZoneInfo": [{"zoneName": "nova",
        "zoneState": {"available": true}, "hosts": null}]}))
}
