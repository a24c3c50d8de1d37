//! A Nova server's interfaces and consoles: `os-interface` (list, show
//! its NICs as Neutron's ports; attach and detach a 409, since Kiln
//! cannot hot-plug a NIC), `remote-consoles` (2.6 and later) and the
//! older `os-getVNCConsole` action, both on kilnd's browser console
//! (`crate::servers::remote_console`: one-time token, noVNC page).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use kiln_api::compute::{RemoteConsole, RemoteConsoleCreate, RemoteConsoleRequest, Server};
use serde_json::{json, Value};

use super::error::{nova, OsError, Service};
use super::{parse, Mv};
use crate::http::state::{AppState, St};
use crate::openstack::neutron::ports;
use crate::servers::remote_console as rc;

const NOVA: Service = Service::Compute;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/compute/v2.1/servers/{id}/os-interface",
            get(interfaces).post(attach),
        )
        .route(
            "/compute/v2.1/servers/{id}/os-interface/{port}",
            get(interface).delete(detach),
        )
        .route(
            "/compute/v2.1/servers/{id}/remote-consoles",
            axum::routing::post(remote_console),
        )
}

async fn server(s: &AppState, id: String) -> Result<Server, OsError> {
    s.store.call(move |s| s.get_server(&id)).await.map_err(nova)
}

fn attachments(s: &Server, mv: u32) -> Vec<Value> {
    s.nics
        .iter()
        .map(|n| {
            let mut v = json!({
                "port_state": ports::port_status(s, n),
                "fixed_ips": ports::fixed_ips(n),
                "port_id": ports::port_id(&s.id, n.index),
                "net_id": n.network_id,
                "mac_addr": n.mac,
            });
            if mv >= 70 {
                v["tag"] = Value::Null;
            }
            v
        })
        .collect()
}

async fn interfaces(
    State(s): St,
    Mv(mv): Mv,
    Path(id): Path<String>,
) -> Result<Json<Value>, OsError> {
    let x = server(&s, id).await?;
    Ok(Json(json!({"interfaceAttachments": attachments(&x, mv.0)})))
}

async fn interface(
    State(s): St,
    Mv(mv): Mv,
    Path((id, port)): Path<(String, String)>,
) -> Result<Json<Value>, OsError> {
    let x = server(&s, id).await?;
    attachments(&x, mv.0)
        .into_iter()
        .find(|a| a["port_id"] == port.as_str())
        .map(|a| Json(json!({ "interfaceAttachment": a })))
        .ok_or_else(|| {
            OsError::new(
                NOVA,
                StatusCode::NOT_FOUND,
                format!("Port {port} is not attached to server {}", x.id),
            )
        })
}

async fn attach(State(s): St, Path(id): Path<String>) -> Result<StatusCode, OsError> {
    let x = server(&s, id).await?;
    Err(OsError::new(
        NOVA,
        StatusCode::CONFLICT,
        format!(
            "Kiln cannot hot-plug a NIC into server {}: a server's NICs are given at its \
             create (networks)",
            x.id
        ),
    ))
}

async fn detach(
    State(s): St,
    Path((id, port)): Path<(String, String)>,
) -> Result<StatusCode, OsError> {
    let x = server(&s, id).await?;
    if !x
        .nics
        .iter()
        .any(|n| ports::port_id(&x.id, n.index) == port)
    {
        return Err(OsError::new(
            NOVA,
            StatusCode::NOT_FOUND,
            format!("Port {port} is not attached to server {}", x.id),
        ));
    }
    Err(OsError::new(
        NOVA,
        StatusCode::CONFLICT,
        format!(
            "Kiln cannot unplug a NIC from server {}: its NICs go when it is deleted",
            x.id
        ),
    ))
}

/// A console URL of server `id` (kilnd's rules and messages).
pub(super) async fn console(
    s: &AppState,
    id: &str,
    req: RemoteConsoleRequest,
) -> Result<RemoteConsole, OsError> {
    server(s, id.to_owned()).await?;
    rc::create(&s.store, &s.sup, &s.config, &s.consoles, id, req)
        .await
        .map_err(nova)
}

/// `POST /servers/{id}/remote-consoles` (from 2.6): 200 and
/// `{"remote_console": {"protocol", "type", "url"}}`.
async fn remote_console(
    State(s): St,
    Mv(mv): Mv,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, OsError> {
    if mv.0 < 6 {
        return Err(OsError::new(
            NOVA,
            StatusCode::NOT_FOUND,
            "remote-consoles needs microversion 2.6 or later (before it: the \
             os-getVNCConsole action)",
        ));
    }
    let req: RemoteConsoleCreate = parse(NOVA, &body)?;
    let c = console(&s, &id, req.remote_console).await?;
    Ok(Json(json!({ "remote_console": c })))
}
