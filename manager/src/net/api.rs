//! The `/v1/networks` routes, and resolving a server create's `networks`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use kiln_api::compute::{NetworkCreate, NetworkList, NicRequest};

use super::teardown::{self, Teardown};
use super::{check_bridge_name, link, parse_mac, MAX_NICS};
use crate::server::{ApiError, AppState, Body, St};
use crate::store::{NewNic, Store, StoreError};
use crate::util::check_name;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/networks", get(list).post(create))
        .route("/v1/networks/{id}", get(show).delete(delete))
}

async fn list(State(s): St) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(NetworkList {
        networks: s.store.list_networks()?,
    }))
}

async fn show(State(s): St, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.store.get_network(&id)?))
}

async fn create(
    State(s): St,
    Body(req): Body<NetworkCreate>,
) -> Result<impl IntoResponse, ApiError> {
    check_name("network", &req.name).map_err(ApiError::bad)?;
    let bridge = req.bridge.clone().unwrap_or_else(|| req.name.clone());
    check_bridge_name(&bridge).map_err(ApiError::bad)?;
    if let Some(m) = req.mtu {
        if !(68..=65535).contains(&m) {
            return Err(ApiError::bad("mtu must be 68 to 65535"));
        }
    }
    let existing = link::get(&bridge).await.map_err(ApiError::internal)?;
    let (mtu, managed) = match &existing {
        Some(l) if l.kind != "bridge" => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "{bridge:?} exists and is not a bridge (it is {})",
                    if l.kind.is_empty() {
                        "a device"
                    } else {
                        &l.kind
                    }
                ),
            ))
        }
        Some(l) => {
            if req.mtu.is_some_and(|m| m != l.mtu) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "bridge {bridge:?} exists with MTU {}, not {}",
                        l.mtu,
                        req.mtu.unwrap_or(0)
                    ),
                ));
            }
            (l.mtu, false)
        }
        None => (req.mtu.unwrap_or(1500), true),
    };
    // The row first: a crash before the bridge exists leaves a managed
    // network whose bridge kilnd creates at its next start.
    let net = s.store.create_network(&req.name, &bridge, mtu, managed)?;
    if managed {
        if let Err(e) = link::create_bridge(&bridge, mtu).await {
            let _ = s.store.begin_delete_network(&net.id);
            let _ = s.store.finish_delete_network(&net.id);
            return Err(ApiError::internal(format!(
                "cannot create bridge {bridge:?}: {e}"
            )));
        }
        tracing::info!(network = net.name, bridge, mtu, "created bridge");
    }
    Ok((StatusCode::CREATED, Json(net)))
}

async fn delete(State(s): St, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let net = s.store.get_network(&id)?;
    let instance = s.store.instance_id()?;
    if net.managed && net.servers.is_empty() {
        // The usual refusal, before the network is marked `deleting`.
        let ports = teardown::foreign_ports_of(&instance, &net.bridge)
            .await
            .map_err(ApiError::internal)?;
        if !ports.is_empty() {
            return Err(refused(&net.name, &net.bridge, &ports));
        }
    }
    let net = s.store.begin_delete_network(&id)?;
    if net.managed {
        let kept = teardown::delete_bridge(&instance, &net.bridge)
            .await
            .map_err(|e| {
                ApiError::internal(format!(
                    "cannot delete bridge {:?} (the delete finishes at kilnd's next start): {e}",
                    net.bridge
                ))
            })?;
        if let Teardown::Kept(ports) = kept {
            // Nothing was deleted: the network stays, naming its bridge.
            s.store.cancel_delete_network(&net.id)?;
            return Err(refused(&net.name, &net.bridge, &ports));
        }
    }
    s.store.finish_delete_network(&net.id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The 409 of a network delete that would cut off `ports`.
fn refused(network: &str, bridge: &str, ports: &[teardown::Port]) -> ApiError {
    let msg = teardown::kept_message(network, bridge, ports);
    tracing::info!(network, "network delete refused: {msg}");
    ApiError::new(StatusCode::CONFLICT, msg)
}

/// Checks a server create's `networks` and resolves each to a network id;
/// 4xx with a message on bad input.
pub fn resolve_nics(store: &Store, reqs: &[NicRequest]) -> Result<Vec<NewNic>, ApiError> {
    if reqs.len() > MAX_NICS {
        return Err(ApiError::bad(format!(
            "networks: at most {MAX_NICS} NICs per server"
        )));
    }
    // MACs first: a malformed request is refused before any lookup.
    let mut macs: Vec<Option<String>> = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let mac = match &r.mac {
            None => None,
            Some(m) => {
                let m = parse_mac(m).map_err(|e| ApiError::bad(format!("networks[{i}]: {e}")))?;
                if macs.iter().any(|x| x.as_deref() == Some(m.as_str())) {
                    return Err(ApiError::bad(format!(
                        "networks[{i}]: mac {m} is given twice"
                    )));
                }
                Some(m)
            }
        };
        macs.push(mac);
    }
    let mut out: Vec<NewNic> = Vec::new();
    for ((i, r), mac) in reqs.iter().enumerate().zip(macs) {
        let net = store.get_network(&r.network).map_err(|e| match e {
            StoreError::NotFound { .. } => {
                ApiError::bad(format!("networks[{i}]: unknown network {:?}", r.network))
            }
            e => e.into(),
        })?;
        out.push(NewNic {
            network_id: net.id,
            mac,
            link: r.link.unwrap_or_default(),
        });
    }
    Ok(out)
}
