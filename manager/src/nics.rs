//! The `/v1/servers/{id}/nics` routes: a server's NICs, and setting a
//! NIC's link (`PUT /v1/servers/{id}/nics/{index}` with
//! `{"link":"up"|"down"}`, as Neutron's port `admin_state_up` or libvirt's
//! `domif-setlink`). The work is in [`crate::supervisor::nic_link`].

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use kiln_api::compute::{NicList, NicUpdate};

use crate::server::{ApiError, AppState, Body, St};
use crate::supervisor::nic_link::NicError;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/servers/{id}/nics", get(list))
        .route("/v1/servers/{id}/nics/{index}", get(show).put(update))
}

impl From<NicError> for ApiError {
    fn from(e: NicError) -> ApiError {
        match e {
            NicError::Store(s) => s.into(),
            NicError::NoSuchNic { .. } => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            NicError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            NicError::Vmm { .. } => ApiError::internal(e),
        }
    }
}

/// A NIC index from the path: a decimal number (a bad one is a 400; one
/// the server does not have, a 404).
fn index(raw: &str) -> Result<u32, ApiError> {
    raw.parse::<u32>().map_err(|_| {
        ApiError::bad(format!(
            "NIC index {raw:?} is not a number (NICs are numbered from 0)"
        ))
    })
}

async fn list(State(s): St, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(NicList {
        nics: s.store.get_server(&id)?.nics,
    }))
}

async fn show(
    State(s): St,
    Path((id, raw)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let i = index(&raw)?;
    let server = s.store.get_server(&id)?;
    let count = server.nics.len();
    server
        .nics
        .into_iter()
        .nth(i as usize)
        .map(Json)
        .ok_or_else(|| {
            NicError::NoSuchNic {
                server: server.name,
                index: i,
                count,
            }
            .into()
        })
}

async fn update(
    State(s): St,
    Path((id, raw)): Path<(String, String)>,
    Body(req): Body<NicUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    let i = index(&raw)?;
    Ok(Json(s.sup.set_nic_link(&id, i, req.link).await?))
}
