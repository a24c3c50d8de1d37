//! Neutron v2.0's ports (servers' NICs: list, show, `admin_state_up`
//! through `PUT`; create and delete refused, since a Kiln NIC is made and
//! deleted with its server) and security groups (the one `default`
//! group, read only). Views in `crate::openstack::neutron::ports`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use axum::{Json, Router};
use kiln_api::compute::{LinkState, Server};
use serde_json::{json, Map, Value};

use super::compute_servers::query_pairs;
use super::error::{OsError, Service};
use super::network::{err, not_found};
use super::parse;
use crate::http::state::{AppState, St};
use crate::openstack::neutron::{self, ports};

const NEUTRON: Service = Service::Network;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/network/v2.0/ports", get(list).post(create))
        .route(
            "/network/v2.0/ports/{id}",
            get(show).put(update).delete(delete),
        )
        .route(
            "/network/v2.0/security-groups",
            get(groups).post(group_create),
        )
        .route(
            "/network/v2.0/security-groups/{id}",
            get(group).put(group_create).delete(group_create),
        )
        .route(
            "/network/v2.0/security-group-rules",
            get(rules).post(group_create),
        )
        .route(
            "/network/v2.0/security-group-rules/{id}",
            get(rule).delete(group_create),
        )
}

async fn servers(s: &AppState) -> Result<Vec<Server>, OsError> {
    s.store
        .call(|s| s.list_servers(None, None))
        .await
        .map_err(err)
}

/// Every port: (server, NIC index, view).
async fn all(s: &AppState) -> Result<Vec<(String, u32, Value)>, OsError> {
    let (p, h) = (&s.identity.project_id, &s.identity.host);
    Ok(servers(s)
        .await?
        .iter()
        .flat_map(|x| {
            x.nics
                .iter()
                .map(|n| (x.id.clone(), n.index, ports::port(x, n, p, h)))
        })
        .collect())
}

async fn find(s: &AppState, id: &str) -> Result<(String, u32, Value), OsError> {
    all(s)
        .await?
        .into_iter()
        .find(|(_, _, v)| v["id"] == id)
        .ok_or_else(|| not_found("Port", id))
}

async fn list(State(s): St, uri: Uri) -> Result<Json<Value>, OsError> {
    let filters = query_pairs(&uri);
    let list: Vec<Value> = all(&s)
        .await?
        .into_iter()
        .map(|(_, _, v)| v)
        .filter(|v| neutron::matches(v, &filters))
        .collect();
    Ok(Json(json!({ "ports": list })))
}

async fn show(State(s): St, Path(id): Path<String>) -> Result<Json<Value>, OsError> {
    Ok(Json(json!({ "port": find(&s, &id).await?.2 })))
}

async fn create() -> OsError {
    OsError::bad(
        NEUTRON,
        "Kiln makes a server's NICs with the server and cannot make a port alone: \
         create the server with networks [{\"uuid\": NETWORK, \"fixed_ip\": IP}] \
         (openstack server create --nic net-id=NETWORK,v4-fixed-ip=IP)",
    )
}

async fn delete(State(s): St, Path(id): Path<String>) -> Result<StatusCode, OsError> {
    let (server, ..) = find(&s, &id).await?;
    Err(OsError::new(
        NEUTRON,
        StatusCode::CONFLICT,
        format!(
            "port {id} is a NIC of server {server}: Kiln cannot unplug a NIC from a server; \
             it goes when the server is deleted"
        ),
    ))
}

/// `PUT /ports/{id}`: `admin_state_up` sets the NIC's link (the cable
/// in or out, as `PUT /v1/servers/{id}/nics/{index}`); nothing else of a
/// port can change.
async fn update(State(s): St, Path(id): Path<String>, body: Bytes) -> Result<Json<Value>, OsError> {
    let mut v: Map<String, Value> = parse(NEUTRON, &body)?;
    let Some(Value::Object(m)) = v.remove("port") else {
        return Err(OsError::bad(NEUTRON, "the body must be {\"port\": {...}}"));
    };
    let (server, index, _) = find(&s, &id).await?;
    let mut link = None;
    for (k, v) in &m {
        match (k.as_str(), v) {
            ("admin_state_up", Value::Bool(up)) => {
                link = Some(if *up { LinkState::Up } else { LinkState::Down })
            }
            _ => {
                return Err(OsError::bad(
                    NEUTRON,
                    format!("{k} cannot be changed: of a Kiln port only admin_state_up can"),
                ))
            }
        }
    }
    if let Some(link) = link {
        s.sup
            .set_nic_link(&server, index, link)
            .await
            .map_err(err)?;
    }
    Ok(Json(json!({ "port": find(&s, &id).await?.2 })))
}

/// The `default` group, dated as kilnd's oldest network (or now).
async fn default_group(s: &AppState) -> Result<Value, OsError> {
    let created = s
        .store
        .call(|s| s.list_networks())
        .await
        .map_err(err)?
        .first()
        .map(|n| n.created_at.clone())
        .unwrap_or_else(crate::util::now_rfc3339);
    Ok(ports::security_group(&s.identity.project_id, &created))
}

async fn groups(State(s): St, uri: Uri) -> Result<Json<Value>, OsError> {
    let g = default_group(&s).await?;
    let list: Vec<Value> = Some(g)
        .filter(|g| neutron::matches(g, &query_pairs(&uri)))
        .into_iter()
        .collect();
    Ok(Json(json!({ "security_groups": list })))
}

async fn group(State(s): St, Path(id): Path<String>) -> Result<Json<Value>, OsError> {
    let g = default_group(&s).await?;
    if g["id"] != id.as_str() {
        return Err(not_found("Security group", &id));
    }
    Ok(Json(json!({ "security_group": g })))
}

/// Every change to security groups and their rules.
async fn group_create() -> OsError {
    OsError::bad(
        NEUTRON,
        format!(
            "Kiln has one security group, default, which cannot be changed: {}",
            ports::DESCRIPTION
        ),
    )
}

async fn all_rules(s: &AppState) -> Result<Vec<Value>, OsError> {
    let g = default_group(s).await?;
    Ok(g["security_group_rules"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

async fn rules(State(s): St, uri: Uri) -> Result<Json<Value>, OsError> {
    let filters = query_pairs(&uri);
    let list: Vec<Value> = all_rules(&s)
        .await?
        .into_iter()
        .filter(|r| neutron::matches(r, &filters))
        .collect();
    Ok(Json(json!({ "security_group_rules": list })))
}

async fn rule(State(s): St, Path(id): Path<String>) -> Result<Json<Value>, OsError> {
    all_rules(&s)
        .await?
        .into_iter()
        .find(|r| r["id"] == id.as_str())
        .map(|r| Json(json!({ "security_group_rule": r })))
        .ok_or_else(|| not_found("Security group rule", &id))
}
