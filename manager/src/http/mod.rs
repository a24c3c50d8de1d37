//! The REST API (axum): routes under `/v1`, JSON in and out, every error a
//! [`kiln_api::compute::ErrorBody`] with a 4xx status unless kilnd itself
//! failed.
//!
//! How a request travels: the router (here) picks a handler in the file of
//! its resource; the handler parses the path, query and body
//! ([`extract`]: every rejection a JSON 4xx), calls one domain function
//! ([`crate::servers`], [`crate::networks`], [`crate::images`],
//! [`crate::flavors`], [`crate::keypairs`]) or, for a running server's actions, the
//! supervisor, and answers; a domain error becomes a status in one place
//! ([`error`]). This is the only module that knows axum.

mod console;
pub mod error;
pub mod extract;
mod flavors;
mod images;
mod keypairs;
pub mod metadata;
mod networks;
mod nics;
pub mod openstack;
mod password;
mod remote_console;
pub mod serve;
mod servers;
pub mod state;
mod upload;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::Router;

pub use error::ApiError;
pub use state::AppState;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../../api/openapi.json");

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/host", get(servers::host))
        .route("/v1/flavors", get(flavors::list).post(flavors::create))
        .route(
            "/v1/flavors/{id}",
            get(flavors::show).delete(flavors::delete),
        )
        .route("/v1/images", get(images::list).post(images::create))
        .route("/v1/images/{id}", get(images::show).delete(images::delete))
        // Streamed to disk: images.max_upload_bytes, not max_body_bytes.
        .route(
            "/v1/images/{id}/file",
            put(upload::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/servers", get(servers::list).post(servers::create))
        .route(
            "/v1/servers/{id}",
            get(servers::show).delete(servers::delete),
        )
        .route("/v1/servers/{id}/action", post(servers::action))
        .route("/v1/servers/{id}/console", get(console::output))
        .route("/v1/servers/{id}/screenshot", get(servers::screenshot))
        .route("/v1/servers/{id}/keys", post(servers::keys))
        .route("/v1/servers/{id}/guest", get(servers::guest))
        .route(
            "/v1/servers/{id}/remote-consoles",
            post(remote_console::create),
        )
        .route("/v1/servers/{id}/console/attach", get(console::attach))
        .route("/v1/networks", get(networks::list).post(networks::create))
        .route(
            "/v1/networks/{id}",
            get(networks::show).delete(networks::delete),
        )
        .route("/v1/keypairs", get(keypairs::list).post(keypairs::create))
        .route(
            "/v1/keypairs/{name}",
            get(keypairs::show).delete(keypairs::delete),
        )
        .route(
            "/v1/servers/{id}/password",
            get(password::show).delete(password::clear),
        )
        .route("/v1/servers/{id}/nics", get(nics::list))
        .route(
            "/v1/servers/{id}/nics/{index}",
            get(nics::show).put(nics::update),
        )
        .merge(openstack::router(state.clone()))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Serves `app` on the unix socket until `shutdown` completes.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    app: Router,
    limits: serve::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve::serve(listener, app, limits, shutdown).await
}

/// Serves `app` on a TCP listener in the background, every request
/// refused without `Authorization: Bearer token` but the OpenStack API's
/// (which need Keystone tokens instead) and the browser console's page,
/// files and websocket, which its own one-time tokens guard
/// ([`remote_console::console_router`]).
pub fn spawn_tcp(
    tcp: tokio::net::TcpListener,
    app: Router,
    token: String,
    state: Arc<AppState>,
    limits: serve::Limits,
) {
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        .merge(remote_console::console_router(state));
    tokio::spawn(serve::serve(tcp, app, limits, std::future::pending()));
}

/// Refuses a TCP request without the right `Authorization: Bearer` token.
async fn require_token(
    axum::extract::State(token): axum::extract::State<Arc<String>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // The OpenStack routes check Keystone tokens themselves.
    if openstack::is_openstack_path(req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid `Authorization: Bearer TOKEN` header is required on the TCP API",
        )
        .into_response();
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
