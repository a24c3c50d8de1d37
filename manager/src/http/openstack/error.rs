//! Errors in each OpenStack service's JSON shape: Keystone's (also the
//! 401 of every service, as keystonemiddleware answers it) `{"error":
//! {"code", "title", "message"}}`, Nova's `{"itemNotFound": {"code",
//! "message"}}`, Glance's `{"code", "title", "message"}`... and Neutron's
//! `{"NeutronError": {"type", "message", "detail"}}`, Placement's
//! `{"errors": [{"status", "title", "detail", "code"}]}`. The message is the
//! one `/v1` gives for the same error (`crate::http::error`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::http::ApiError;
use crate::openstack::identity::AuthError;

#[derive(Clone, Copy, Debug)]
pub enum Service {
    Identity,
    Compute,
    Image,
    Network,
    Placement,
}

#[derive(Debug)]
pub struct OsError {
    pub service: Service,
    pub status: StatusCode,
    pub message: String,
}

impl OsError {
    pub fn new(service: Service, status: StatusCode, message: impl Into<String>) -> OsError {
        OsError {
            service,
            status,
            message: message.into(),
        }
    }

    pub fn bad(service: Service, message: impl Into<String>) -> OsError {
        OsError::new(service, StatusCode::BAD_REQUEST, message)
    }

    /// A domain error (anything `/v1` maps to a status) in `service`'s
    /// shape.
    pub fn from_api(service: Service, e: impl Into<ApiError>) -> OsError {
        let e: ApiError = e.into();
        OsError::new(service, e.status(), e.message())
    }

    pub fn auth(service: Service, e: AuthError) -> OsError {
        match e {
            AuthError::Unauthorized(m) => OsError::new(service, StatusCode::UNAUTHORIZED, m),
            AuthError::Invalid(m) => OsError::bad(service, m),
            AuthError::Store(s) => OsError::from_api(service, s),
        }
    }
}

/// Nova's fault name of a status.
fn nova_name(s: StatusCode) -> &'static str {
    match s.as_u16() {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        406 => "notAcceptable",
        409 => "conflictingRequest",
        413 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

impl IntoResponse for OsError {
    fn into_response(self) -> Response {
        let code = self.status.as_u16();
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = match (self.service, code) {
            (_, 401) | (Service::Identity, _) => {
                json!({"error": {"code": code, "title": title, "message": self.message}})
            }
            (Service::Compute, _) => {
                json!({ nova_name(self.status): {"code": code, "message": self.message} })
            }
            (Service::Image, _) => json!({"code": code, "title": title, "message": self.message}),
            (Service::Network, _) => json!({"NeutronError": {
                "type": format!("HTTP{}", title.replace(' ', "")),
                "message": self.message, "detail": ""}}),
            (Service::Placement, _) => json!({"errors": [{"status": code, "title": title,
                "detail": self.message, "code": "placement.undefined_code"}]}),
        };
        let mut r = (self.status, Json(body)).into_response();
        if code == 401 {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Keystone uri=\"/identity\""),
            );
        }
        r
    }
}

/// A domain or store error in Nova's shape (`.map_err(nova)`).
pub fn nova(e: impl Into<ApiError>) -> OsError {
    OsError::from_api(Service::Compute, e)
}
