//! Neutron v2.0: version documents, networks and subnets (list, show,
//! create, delete) on `crate::networks`; ports and security groups are
//! `network_ports.rs`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kiln_api::compute::Network;
use serde_json::{json, Map, Value};

use super::compute_servers::query_pairs;
use super::error::{OsError, Service};
use super::{doc, parse, version_entry, Base};
use crate::http::state::{AppState, St};
use crate::openstack::neutron::{self, requests};

const NEUTRON: Service = Service::Network;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/network/v2.0/networks", get(networks).post(network_create))
        .route(
            "/network/v2.0/networks/{id}",
            get(network).delete(network_delete),
        )
        .route("/network/v2.0/subnets", get(subnets).post(subnet_create))
        .route(
            "/network/v2.0/subnets/{id}",
            get(subnet).delete(subnet_delete),
        )
        .route("/network/v2.0/extensions", get(extensions))
        .route("/network/v2.0/extensions/{alias}", get(extension))
        .merge(super::network_ports::routes())
}

/// The Neutron extensions whose attributes Kiln's answers carry (and
/// honour as `manager/README.md` says): clients ask before some calls.
const EXTENSIONS: [(&str, &str); 9] = [
    ("binding", "Port Binding"),
    ("external-net", "Neutron external network"),
    ("network-mtu", "Network MTU"),
    ("port-security", "Port Security"),
    ("provider", "Provider Network"),
    ("security-group", "security-group"),
    ("standard-attr-description", "standard-attr-description"),
    ("standard-attr-revisions", "Resource revision numbers"),
    ("standard-attr-timestamp", "Resource timestamps"),
];

fn extension_view(alias: &str, name: &str) -> Value {
    json!({"alias": alias, "name": name, "description": name,
           "updated": "2026-12-01T00:00:00-00:00", "links": []})
}

async fn extensions() -> Json<Value> {
    let list: Vec<Value> = EXTENSIONS
        .iter()
        .map(|(a, n)| extension_view(a, n))
        .collect();
    Json(json!({ "extensions": list }))
}

async fn extension(Path(alias): Path<String>) -> Result<Json<Value>, OsError> {
    EXTENSIONS
        .iter()
        .find(|(a, _)| *a == alias)
        .map(|(a, n)| Json(json!({"extension": extension_view(a, n)})))
        .ok_or_else(|| not_found("Extension", &alias))
}

pub(super) async fn versions(Base(base): Base) -> Response {
    doc(
        StatusCode::OK,
        json!({"versions": [version_entry("v2.0", "CURRENT",
                                          format!("{base}/network/v2.0/"), json!({}))]}),
    )
}

/// A domain or store error in Neutron's shape.
pub(super) fn err(e: impl Into<crate::http::ApiError>) -> OsError {
    OsError::from_api(NEUTRON, e)
}

/// Neutron's 404 for `what` `id`.
pub(super) fn not_found(what: &str, id: &str) -> OsError {
    OsError::new(
        NEUTRON,
        StatusCode::NOT_FOUND,
        format!("{what} {id} could not be found."),
    )
}

async fn all(s: &AppState) -> Result<Vec<Network>, OsError> {
    s.store.call(|s| s.list_networks()).await.map_err(err)
}

/// Every subnet's view.
async fn all_subnets(s: &AppState) -> Result<Vec<Value>, OsError> {
    let (nets, names) = s
        .store
        .call(|s| Ok::<_, crate::store::StoreError>((s.list_networks()?, s.subnet_names()?)))
        .await
        .map_err(err)?;
    Ok(nets
        .iter()
        .filter_map(|n| {
            neutron::subnet(
                n,
                &s.identity.project_id,
                names.get(&n.id).map(String::as_str),
            )
        })
        .collect())
}

/// The body's one member `key`, an object (`{"network": {...}}`).
fn member(body: &[u8], key: &str) -> Result<Map<String, Value>, OsError> {
    let mut v: Map<String, Value> = parse(NEUTRON, body)?;
    match v.remove(key) {
        Some(Value::Object(m)) if v.is_empty() => Ok(m),
        _ => Err(OsError::bad(
            NEUTRON,
            format!("the body must be {{\"{key}\": {{...}}}}: one {key} per request"),
        )),
    }
}

async fn networks(State(s): St, uri: Uri) -> Result<Json<Value>, OsError> {
    let filters = query_pairs(&uri);
    let list: Vec<Value> = all(&s)
        .await?
        .iter()
        .map(|n| neutron::network(n, &s.identity.project_id))
        .filter(|v| neutron::matches(v, &filters))
        .collect();
    Ok(Json(json!({ "networks": list })))
}

/// By id only: a name is a 404 (clients then list with `name=`).
async fn find(s: &AppState, id: &str) -> Result<Network, OsError> {
    all(s)
        .await?
        .into_iter()
        .find(|n| n.id == id)
        .ok_or_else(|| not_found("Network", id))
}

async fn network(State(s): St, Path(id): Path<String>) -> Result<Json<Value>, OsError> {
    let n = find(&s, &id).await?;
    Ok(Json(
        json!({"network": neutron::network(&n, &s.identity.project_id)}),
    ))
}

/// `POST /networks`: a Kiln network without a subnet, on a bridge of its
/// own (`crate::openstack::neutron::requests`).
async fn network_create(State(s): St, body: Bytes) -> Result<Response, OsError> {
    let m = member(&body, "network")?;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let req = requests::network_create(&m, &s.identity.project_id, &suffix)
        .map_err(|e| OsError::bad(NEUTRON, e))?;
    let n = crate::networks::create(&s.services, req)
        .await
        .map_err(err)?;
    let v = neutron::network(&n, &s.identity.project_id);
    Ok((StatusCode::CREATED, Json(json!({ "network": v }))).into_response())
}

/// `DELETE /networks/{id}`: the network and its subnet, by Kiln's
/// delete protocol (409 while servers have NICs on it).
async fn network_delete(State(s): St, Path(id): Path<String>) -> Result<StatusCode, OsError> {
    find(&s, &id).await?;
    crate::networks::delete(&s.services, id)
        .await
        .map_err(err)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn subnets(State(s): St, uri: Uri) -> Result<Json<Value>, OsError> {
    let filters = query_pairs(&uri);
    let list: Vec<Value> = all_subnets(&s)
        .await?
        .into_iter()
        .filter(|v| neutron::matches(v, &filters))
        .collect();
    Ok(Json(json!({ "subnets": list })))
}

async fn find_subnet(s: &AppState, id: &str) -> Result<Value, OsError> {
    all_subnets(s)
        .await?
        .into_iter()
        .find(|v| v["id"] == id)
        .ok_or_else(|| not_found("Subnet", id))
}

async fn subnet(State(s): St, Path(id): Path<String>) -> Result<Json<Value>, OsError> {
    Ok(Json(json!({ "subnet": find_subnet(&s, &id).await? })))
}

/// `POST /subnets`: the network's one IPv4 subnet (409 if it has one or
/// servers use it), its DHCP and metadata started.
async fn subnet_create(State(s): St, body: Bytes) -> Result<Response, OsError> {
    let m = member(&body, "subnet")?;
    let (network, req) = requests::subnet_create(&m, &s.identity.project_id)
        .map_err(|e| OsError::bad(NEUTRON, e))?;
    // By id, as Neutron: a missing network is a 404.
    find(&s, &network).await?;
    let n = crate::networks::subnet::add(&s.services, network, req)
        .await
        .map_err(err)?;
    let v = find_subnet(&s, &neutron::subnet_id(&n.id)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "subnet": v }))).into_response())
}

/// `DELETE /subnets/{id}`: the network stays, L2 only (409 while
/// servers have NICs on it).
async fn subnet_delete(State(s): St, Path(id): Path<String>) -> Result<StatusCode, OsError> {
    let v = find_subnet(&s, &id).await?;
    let network = v["network_id"].as_str().unwrap_or_default().to_owned();
    crate::networks::subnet::remove(&s.services, network)
        .await
        .map_err(err)?;
    Ok(StatusCode::NO_CONTENT)
}
