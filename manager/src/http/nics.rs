//! The `/v1/servers/{id}/nics` routes: a server's NICs, and setting a
//! NIC's link (`PUT /v1/servers/{id}/nics/{index}` with
//! `{"link":"up"|"down"}`, as Neutron's port `admin_state_up` or libvirt's
//! `domif-setlink`). The work is in [`crate::supervisor::nic_link`].

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use kiln_api::compute::{NicList, NicUpdate};

use super::extract::Body;
use super::state::St;
use super::ApiError;
use crate::supervisor::nic_link::NicError;

/// A NIC index from the path: a decimal number (a bad one is a 400; one
/// the server does not have, a 404).
fn index(raw: &str) -> Result<u32, ApiError> {
    raw.parse::<u32>().map_err(|_| {
        ApiError::bad(format!(
            "NIC index {raw:?} is not a number (NICs are numbered from 0)"
        ))
    })
}

pub(super) async fn list(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let nics = s.store.call(move |s| s.get_server(&id)).await?.nics;
    Ok(Json(NicList { nics }))
}

pub(super) async fn show(
    State(s): St,
    Path((id, raw)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let i = index(&raw)?;
    let server = s.store.call(move |s| s.get_server(&id)).await?;
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

pub(super) async fn update(
    State(s): St,
    Path((id, raw)): Path<(String, String)>,
    Body(req): Body<NicUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    let i = index(&raw)?;
    Ok(Json(s.sup.set_nic_link(&id, i, req.link).await?))
}
