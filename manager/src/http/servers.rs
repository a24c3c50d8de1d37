//! `/v1/servers`, their actions, and `/v1/host` (what servers may claim).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use kiln_api::compute::{ServerAction, ServerCreate, ServerList, ServerStatus};
use serde::Deserialize;

use super::extract::{Body, Q};
use super::state::St;
use super::ApiError;

pub(super) async fn host(State(s): St) -> Result<impl IntoResponse, ApiError> {
    let (used, n) = s.store.call(|s| s.used()).await?;
    Ok(Json(s.placement.report(used, n)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    status: Option<String>,
    name: Option<String>,
}

pub(super) async fn list(State(s): St, Q(q): Q<ListQuery>) -> Result<impl IntoResponse, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(st) => Some(ServerStatus::parse(st).ok_or_else(|| {
            ApiError::bad(format!(
                "unknown status {st:?}; one of BUILD, ACTIVE, SHUTOFF, PAUSED, REBOOT, ERROR, DELETED"
            ))
        })?),
    };
    if status.is_none() && q.name.is_none() {
        let json = s.store.call(|s| s.servers_json()).await?;
        return Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response());
    }
    let servers = s
        .store
        .call(move |s| s.list_servers(status, q.name.as_deref()))
        .await?;
    Ok(Json(ServerList { servers }).into_response())
}

pub(super) async fn show(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.store.call(move |s| s.get_server(&id)).await?))
}

pub(super) async fn create(
    State(s): St,
    Body(req): Body<ServerCreate>,
) -> Result<impl IntoResponse, ApiError> {
    let server = crate::servers::create(s.kilnd(), req).await?;
    Ok((StatusCode::ACCEPTED, Json(server)))
}

pub(super) async fn delete(
    State(s): St,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    crate::servers::delete(&s.sup, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn action(
    State(s): St,
    Path(id): Path<String>,
    Body(action): Body<ServerAction>,
) -> Result<impl IntoResponse, ApiError> {
    crate::servers::action(&s.sup, &id, action).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScreenshotQuery {
    #[serde(default)]
    last: bool,
}

/// `GET /v1/servers/{id}/screenshot[?last=true]`: a PNG.
pub(super) async fn screenshot(
    State(s): St,
    Path(id): Path<String>,
    Q(q): Q<ScreenshotQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let png = crate::servers::screenshot::screenshot(&s.store, &s.sup, id, q.last).await?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png))
}

/// `GET /v1/servers/{id}/guest`: what the guest agent says (409 without
/// an agent or when not running, 504 when it does not answer in time).
pub(super) async fn guest(
    State(s): St,
    Path(id): Path<String>,
) -> Result<Json<kiln_api::compute::GuestInfo>, ApiError> {
    Ok(Json(
        crate::servers::guest::guest(&s.store, &s.sup, id).await?,
    ))
}

/// `POST /v1/servers/{id}/keys`: types keys on the server's keyboard
/// (kiln-vmm's `POST /v1/vm/keys` body); 204 once typed.
pub(super) async fn keys(
    State(s): St,
    Path(id): Path<String>,
    Body(req): Body<kiln_api::control::KeysRequest>,
) -> Result<impl IntoResponse, ApiError> {
    crate::servers::keys::send_keys(&s.store, &s.sup, id, req).await?;
    Ok(StatusCode::NO_CONTENT)
}
