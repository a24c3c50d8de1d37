//! The OpenStack-compatible API's HTTP side: Keystone under `/identity`,
//! Nova under `/compute`, Glance under `/image`, Neutron under `/network`,
//! Placement under `/placement` (the prefixes the catalog publishes), on the unix socket and the TCP
//! listener. The version documents and `POST /identity/v3/auth/tokens`
//! are open; every other route needs a valid Keystone token in
//! `X-Auth-Token` ([`require_keystone`]). Nova's routes negotiate a
//! microversion first ([`nova_version`]). The domain side (views,
//! tokens, microversions) is `crate::openstack`.

mod app_creds;
mod compute;
mod compute_flavors;
mod compute_server_io;
mod compute_servers;
pub mod error;
mod identity;
mod image;
mod network;
mod network_ports;
mod paging;
mod placement;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::state::AppState;
use crate::openstack::microversion::{self, Microversion, VersionError};
use error::{OsError, Service};

/// The path prefixes of the OpenStack API.
pub const PREFIXES: [&str; 5] = ["/identity", "/compute", "/image", "/network", "/placement"];

/// Whether `path` is under one of [`PREFIXES`] (these check
/// `X-Auth-Token`, not the TCP listener's bearer token).
pub fn is_openstack_path(path: &str) -> bool {
    PREFIXES.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let auth = from_fn_with_state(state.clone(), require_keystone);
    let open = Router::new()
        .route("/identity", get(identity::versions))
        .route("/identity/", get(identity::versions))
        .route("/identity/v3", get(identity::version))
        .route("/identity/v3/", get(identity::version))
        .route("/compute", get(compute::versions))
        .route("/compute/", get(compute::versions))
        .route("/compute/v2.1", get(compute::version))
        .route("/compute/v2.1/", get(compute::version))
        .route("/image", get(image::versions))
        .route("/image/", get(image::versions))
        .route("/image/versions", get(image::versions))
        .route("/network", get(network::versions))
        .route("/network/", get(network::versions))
        .route("/placement", get(placement::root))
        .route("/placement/", get(placement::root))
        .route(
            "/identity/v3/auth/tokens",
            axum::routing::post(identity::issue)
                .get(identity::check)
                .head(identity::check)
                .delete(identity::revoke),
        )
        .route("/identity/{*rest}", any(|| not_found(Service::Identity)))
        .route("/compute/{*rest}", any(|| not_found(Service::Compute)))
        .route("/image/{*rest}", any(|| not_found(Service::Image)))
        .route("/network/{*rest}", any(|| not_found(Service::Network)))
        .route("/placement/{*rest}", any(|| not_found(Service::Placement)));
    let nova = compute::routes()
        .merge(compute_flavors::routes())
        .merge(compute_server_io::routes())
        .merge(compute_servers::routes())
        .route_layer(from_fn(nova_version))
        .route_layer(auth.clone());
    let placement = placement::routes()
        .route_layer(from_fn(placement::placement_version))
        .route_layer(auth.clone());
    let others = image::routes()
        .merge(network::routes())
        .merge(app_creds::routes())
        .route_layer(auth);
    open.merge(nova).merge(placement).merge(others)
}

async fn not_found(service: Service) -> OsError {
    OsError::new(service, StatusCode::NOT_FOUND, "no such route")
}

/// The service of a path under [`PREFIXES`].
fn service_of(path: &str) -> Service {
    match path.split('/').nth(1) {
        Some("compute") => Service::Compute,
        Some("image") => Service::Image,
        Some("network") => Service::Network,
        Some("placement") => Service::Placement,
        _ => Service::Identity,
    }
}

/// Refuses a request without a valid `X-Auth-Token` (401, Keystone's
/// shape), before its handler runs; the handler gets the token's row
/// (`Extension<TokenRow>`).
async fn require_keystone(
    State(s): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let service = service_of(req.uri().path());
    let Some(token) = header_str(req.headers(), "x-auth-token") else {
        return OsError::new(
            service,
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication: no X-Auth-Token.",
        )
        .into_response();
    };
    let token = token.to_owned();
    match s.identity.validate(&s.store, &token).await {
        Ok(row) => {
            req.extensions_mut().insert(row);
            next.run(req).await
        }
        Err(e) => OsError::auth(service, e).into_response(),
    }
}

/// Negotiates Nova's microversion (400 or 406 when it cannot), hands it
/// to the handler as an extension and names it in the answer's headers.
async fn nova_version(mut req: Request, next: Next) -> Response {
    let h = req.headers();
    let mv = match microversion::negotiate(
        header_str(h, "openstack-api-version"),
        header_str(h, "x-openstack-nova-api-version"),
    ) {
        Ok(v) => v,
        Err(e) => {
            let status = match e {
                VersionError::Malformed(_) => StatusCode::BAD_REQUEST,
                VersionError::Unsupported(_) => StatusCode::NOT_ACCEPTABLE,
            };
            return OsError::new(Service::Compute, status, e.to_string()).into_response();
        }
    };
    req.extensions_mut().insert(mv);
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("compute {mv}")) {
        h.insert("openstack-api-version", v);
    }
    if let Ok(v) = HeaderValue::from_str(&mv.to_string()) {
        h.insert("x-openstack-nova-api-version", v);
    }
    h.insert(
        header::VARY,
        HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    );
    r
}

fn header_str<'a>(h: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The base URL of the request's links and catalog
/// (`crate::openstack::identity::Identity::base_url`).
pub struct Base(pub String);

impl FromRequestParts<Arc<AppState>> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        s: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Base(
            s.identity.base_url(header_str(&parts.headers, "host")),
        ))
    }
}

/// The negotiated microversion ([`nova_version`] put it there).
pub struct Mv(pub Microversion);

impl<S: Send + Sync> FromRequestParts<S> for Mv {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Mv(parts
            .extensions
            .get::<Microversion>()
            .copied()
            .unwrap_or(microversion::MIN)))
    }
}

/// A JSON body parsed into `T`, its rejections a 400 in `service`'s shape.
pub fn parse<T: serde::de::DeserializeOwned>(service: Service, body: &[u8]) -> Result<T, OsError> {
    serde_json::from_slice(body)
        .map_err(|e| OsError::bad(service, format!("invalid request body: {e}")))
}

/// A version discovery answer: `300 Multiple Choices` for the lists, as
/// Keystone and Glance answer them, else 200.
fn doc(status: StatusCode, v: Value) -> Response {
    (status, Json(v)).into_response()
}

/// `{"rel": "self", "href": href}` and the media type, as every
/// version entry has them.
fn version_entry(id: &str, status: &str, href: String, extra: Value) -> Value {
    let mut v = json!({"id": id, "status": status, "updated": "2026-12-01T00:00:00Z",
        "links": [{"rel": "self", "href": href}],
        "media-types": [{"base": "application/json", "type": "application/json"}]});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}
