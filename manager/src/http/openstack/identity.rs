//! Keystone v3: version documents and `/v3/auth/tokens` (issue, check,
//! revoke); application credentials are `app_creds.rs`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::{OsError, Service};
use super::{doc, header_str, parse, version_entry, Base};
use crate::http::state::{AppState, St};
use crate::openstack::identity::AuthBody;
use crate::store::{AppCredRow, TokenRow};

const ID: Service = Service::Identity;

fn v3(base: &str) -> serde_json::Value {
    version_entry(
        "v3.14",
        "stable",
        format!("{base}/identity/v3/"),
        json!({"media-types": [{"base": "application/json",
                                "type": "application/vnd.openstack.identity-v3+json"}]}),
    )
}

/// `GET /identity/`: 300 and the one version, as Keystone answers.
pub(super) async fn versions(Base(base): Base) -> Response {
    doc(
        StatusCode::MULTIPLE_CHOICES,
        json!({"versions": {"values": [v3(&base)]}}),
    )
}

pub(super) async fn version(Base(base): Base) -> Response {
    doc(StatusCode::OK, json!({"version": v3(&base)}))
}

/// `POST /identity/v3/auth/tokens`: 201, the token in `X-Subject-Token`.
pub(super) async fn issue(
    State(s): St,
    Base(base): Base,
    body: Bytes,
) -> Result<Response, OsError> {
    let req: AuthBody = parse(ID, &body)?;
    let issued = s
        .identity
        .authenticate(&s.store, req)
        .await
        .map_err(|e| OsError::auth(ID, e))?;
    let cred = cred_of(&s, &issued.row).await?;
    let mut r = (
        StatusCode::CREATED,
        Json(s.identity.token_body(&issued.row, &base, cred.as_ref())),
    )
        .into_response();
    let v = HeaderValue::from_str(&issued.token).expect("hex is a header value");
    r.headers_mut().insert("x-subject-token", v);
    Ok(r)
}

/// The application credential `row` was issued through, if any.
async fn cred_of(s: &AppState, row: &TokenRow) -> Result<Option<AppCredRow>, OsError> {
    let Some(id) = row.app_cred_id.clone() else {
        return Ok(None);
    };
    s.store
        .call(move |s| s.get_app_cred(&id))
        .await
        .map_err(|e| OsError::from_api(ID, e))
}

/// The caller's token (`X-Auth-Token`), which must be valid, and the one
/// asked about (`X-Subject-Token`).
async fn caller_and_subject(s: &AppState, h: &HeaderMap) -> Result<String, OsError> {
    let caller = header_str(h, "x-auth-token").ok_or_else(|| {
        OsError::new(
            ID,
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication: no X-Auth-Token.",
        )
    })?;
    s.identity
        .validate(&s.store, caller)
        .await
        .map_err(|e| OsError::auth(ID, e))?;
    header_str(h, "x-subject-token")
        .map(str::to_owned)
        .ok_or_else(|| OsError::bad(ID, "X-Subject-Token is required"))
}

/// `GET`/`HEAD /identity/v3/auth/tokens`: 200 and the subject token's
/// body, 404 when it is not valid (as Keystone).
pub(super) async fn check(
    st: St,
    method: Method,
    Base(base): Base,
    h: HeaderMap,
) -> Result<Response, OsError> {
    let subject = caller_and_subject(&st.0, &h).await?;
    let s = &st.0;
    let row = s
        .identity
        .validate(&s.store, &subject)
        .await
        .map_err(|e| OsError::new(ID, StatusCode::NOT_FOUND, e.to_string()))?;
    let mut r = if method == Method::HEAD {
        StatusCode::OK.into_response()
    } else {
        let cred = cred_of(s, &row).await?;
        Json(s.identity.token_body(&row, &base, cred.as_ref())).into_response()
    };
    let v = HeaderValue::from_str(&subject).map_err(|_| OsError::bad(ID, "bad X-Subject-Token"))?;
    r.headers_mut().insert("x-subject-token", v);
    Ok(r)
}

/// `DELETE /identity/v3/auth/tokens`: 204; the token is refused from then
/// on.
pub(super) async fn revoke(st: St, h: HeaderMap) -> Result<StatusCode, OsError> {
    let subject = caller_and_subject(&st.0, &h).await?;
    let s = &st.0;
    s.identity
        .revoke(&s.store, &subject)
        .await
        .map_err(|e| OsError::new(ID, StatusCode::NOT_FOUND, e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}
