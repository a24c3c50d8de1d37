//! Neutron v2.0: version documents, networks and subnets (list, show).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use kiln_api::compute::Network;
use serde_json::{json, Value};

use super::compute_servers::query_pairs;
use super::error::{OsError, Service};
use super::{doc, version_entry, Base};
use crate::http::state::{AppState, St};
use crate::openstack::neutron;

const NEUTRON: Service = Service::Network;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/network/v2.0/networks", get(networks))
        .route("/network/v2.0/networks/{id}", get(network))
        .route("/network/v2.0/subnets", get(subnets))
        .route("/network/v2.0/subnets/{id}", get(subnet))
}

pub(super) async fn versions(Base(base): Base) -> Response {
    doc(
        StatusCode::OK,
        json!({"versions": [version_entry("v2.0", "CURRENT",
                                          format!("{base}/network/v2.0/"), json!({}))]}),
    )
}

async fn all(s: &AppState) -> Result<Vec<Network>, OsError> {
    s.store
        .call(|s| s.list_networks())
        .await
        .map_err(|e| OsError::from_api(NEUTRON, e))
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
async fn network(State(s): St, Path(id): Path<String>) -> Result<Json<Value>, OsError> {
    let n = all(&s)
        .await?
        .into_iter()
        .find(|n| n.id == id)
        .ok_or_else(|| {
            OsError::new(
                NEUTRON,
                StatusCode::NOT_FOUND,
                format!("Network {id} could not be found."),
            )
        })?;
    Ok(Json(
        json!({"network": neutron::network(&n, &s.identity.project_id)}),
    ))
}

async fn subnets(State(s): St, uri: Uri) -> Result<Json<Value>, OsError> {
    let filters = query_pairs(&uri);
    let list: Vec<Value> = all(&s)
        .await?
        .iter()
        .filter_map(|n| neutron::subnet(n, &s.identity.project_id))
        .filter(|v| neutron::matches(v, &filters))
        .collect();
    Ok(Json(json!({ "subnets": list })))
}

async fn subnet(State(s): St, Path(id): Path<String>) -> Result<Json<Value>, OsError> {
    let v = all(&s)
        .await?
        .iter()
        .filter_map(|n| neutron::subnet(n, &s.identity.project_id))
        .find(|v| v["id"] == id.as_str())
        .ok_or_else(|| {
            OsError::new(
                NEUTRON,
                StatusCode::NOT_FOUND,
                format!("Subnet {id} could not be found."),
            )
        })?;
    Ok(Json(json!({ "subnet": v })))
}
