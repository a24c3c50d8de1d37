//! The interactive console: `GET /v1/servers/{id}/console/attach` with
//! `Connection: Upgrade` and `Upgrade: kiln-console` answers
//! `101 Switching Protocols`, after which the connection carries the raw
//! bytes of the server's serial console both ways (kilnd relays them to
//! and from the VMM's console socket). `kiln console NAME` uses it; so
//! can `curl --unix-socket` or any HTTP client that does upgrades.
//! And `GET /v1/servers/{id}/console`: the serial log's last lines.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper_util::rt::TokioIo;
use kiln_api::compute::{ConsoleOutput, ServerStatus};
use serde::Deserialize;

use super::extract::Q;
use super::state::St;
use super::ApiError;

/// The upgrade protocol name.
pub const PROTOCOL: &str = "kiln-console";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsoleQuery {
    tail: Option<usize>,
}

pub(super) async fn output(
    State(s): St,
    Path(id): Path<String>,
    Q(q): Q<ConsoleQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let output = crate::servers::console(&s.store, &s.sup, id, q.tail).await?;
    Ok(Json(ConsoleOutput { output }))
}

pub(super) async fn attach(
    State(s): St,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let key = id.clone();
    let server = s.store.call(move |s| s.get_server(&key)).await?;
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !wants {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!("send `Connection: Upgrade` and `Upgrade: {PROTOCOL}` to attach"),
        ));
    }
    if !matches!(server.status, ServerStatus::Active | ServerStatus::Paused)
        || s.sup.vm(&id).is_none()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "server {} is {}: no console to attach to",
                server.name,
                server.status.as_str()
            ),
        ));
    }
    let path = s.sup.console_socket(&id);
    let vm_side = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("cannot reach the console of server {}: {e}", server.name),
        )
    })?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut vm_side = vm_side;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut vm_side).await;
            }
            Err(e) => tracing::warn!(server = id, error = %e, "console upgrade failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    Ok(resp)
}
