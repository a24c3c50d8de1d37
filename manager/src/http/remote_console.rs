//! The browser console over HTTP: `POST /v1/servers/{id}/remote-consoles`
//! (Nova's body and answer) on every listener, and on the TCP listener
//! only, outside the bearer token ([`console_router`]): the console page
//! (`/console/vnc.html`, shown for a live token), noVNC's files
//! (`/console/novnc/...` from `[console] novnc_dir`) and the websocket
//! (`/console/websockify`) that carries RFB between the browser and the
//! server's `vnc.sock` as websockify does: binary frames both ways, one
//! bounded buffer per direction, each side waiting for the other (a slow
//! browser slows the VMM's writes; kilnd never queues more). The token
//! rules are [`crate::servers::remote_console`].

use std::path::{Component, Path as FsPath};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use kiln_api::compute::{RemoteConsoleBody, RemoteConsoleCreate};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::extract::{Body, Q};
use super::state::{AppState, St};
use super::ApiError;
use crate::servers::remote_console as rc;

/// The page, with noVNC's module beside it.
const PAGE: &str = include_str!("remote_console.html");
/// One read from the VMM, one websocket frame: at most this much in flight
/// per direction.
const CHUNK: usize = 64 * 1024;
/// The largest message a browser may send (RFB client messages are small;
/// a clipboard text is the largest).
const MAX_MESSAGE: usize = 1 << 20;

/// `POST /v1/servers/{id}/remote-consoles`: a URL with a one-time token.
pub(super) async fn create(
    State(s): St,
    Path(id): Path<String>,
    Body(req): Body<RemoteConsoleCreate>,
) -> Result<impl IntoResponse, ApiError> {
    let console = rc::create(
        &s.store,
        &s.sup,
        &s.config,
        &s.consoles,
        &id,
        req.remote_console,
    )
    .await?;
    Ok(Json(RemoteConsoleBody {
        remote_console: console,
    }))
}

/// The console's routes on the TCP listener, outside its bearer token.
pub fn console_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(rc::PAGE_PATH, get(page))
        .route("/console/novnc/{*path}", get(asset))
        .route(rc::WEBSOCKET_PATH, get(websocket))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenQuery {
    server: Option<String>,
    token: Option<String>,
}

async fn page(State(s): St, Q(q): Q<TokenQuery>) -> Result<Response, ApiError> {
    let server = q.server.unwrap_or_default();
    rc::check_page(&s.consoles, &server, q.token.as_deref())?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response())
}

/// One of noVNC's files, by a plain relative path and a known type.
async fn asset(State(s): St, Path(path): Path<String>) -> Result<Response, ApiError> {
    let Some(dir) = &s.config.console.novnc_dir else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no noVNC here: set [console] novnc_dir in kilnd's config",
        ));
    };
    let rel = FsPath::new(&path);
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    let ctype = match rel.extension().and_then(|e| e.to_str()) {
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        Some("css") => "text/css",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "",
    };
    if !plain || ctype.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such file"));
    }
    match tokio::fs::read(dir.join(rel)).await {
        Ok(b) => Ok(([(header::CONTENT_TYPE, ctype)], b).into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "no such file"))
        }
        Err(e) => Err(ApiError::internal(&e)),
    }
}

/// The websocket: the token checked and used up, then the server's VNC
/// socket connected, before the upgrade is answered.
async fn websocket(
    State(s): St,
    Q(q): Q<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Some(server) = q.server else {
        return Err(ApiError::bad("name the server: ?server=ID&token=TOKEN"));
    };
    let path = rc::open(&s.store, &s.sup, &s.consoles, &server, q.token.as_deref()).await?;
    let vnc = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("cannot reach the display of server {server:?}: {e}"),
        )
    })?;
    tracing::info!(server, "browser console opened");
    Ok(ws
        .protocols(["binary"])
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| relay(socket, vnc, server)))
}

/// RFB both ways until either side closes.
async fn relay(socket: WebSocket, vnc: tokio::net::UnixStream, server: String) {
    let (mut to_browser, mut from_browser) = socket.split();
    let (mut vnc_rd, mut vnc_wr) = vnc.into_split();
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match vnc_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let frame = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n]));
            if to_browser.send(frame).await.is_err() {
                break;
            }
        }
        let _ = to_browser.close().await;
    };
    let up = async {
        while let Some(Ok(msg)) = from_browser.next().await {
            match msg {
                Message::Binary(b) => {
                    if vnc_wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                // websockify's old base64 text frames: not RFB here.
                Message::Text(_) => break,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
        let _ = vnc_wr.shutdown().await;
    };
    tokio::select! {
        () = down => {}
        () = up => {}
    }
    tracing::info!(server, "browser console closed");
}
