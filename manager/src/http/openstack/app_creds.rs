//! Keystone v3's application credentials of a user:
//! `/identity/v3/users/{user_id}/application_credentials` (create, list
//! with `?name=`) and `.../{id}` (show, delete). The rules are
//! `crate::openstack::app_creds`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::compute_servers::query_pairs;
use super::error::{OsError, Service};
use super::{parse, Base};
use crate::http::state::{AppState, St};
use crate::openstack::app_creds::{self, AppCredError, CreateBody};
use crate::store::{AppCredRow, TokenRow};

const ID: Service = Service::Identity;

pub(super) fn routes() -> Router<Arc<AppState>> {
    let base = "/identity/v3/users/{user_id}/application_credentials";
    Router::new()
        .route(base, get(list).post(create))
        .route(&format!("{base}/{{id}}"), get(show).delete(delete))
}

fn err(e: AppCredError) -> OsError {
    match e {
        AppCredError::NotFound(m) => OsError::new(ID, StatusCode::NOT_FOUND, m),
        AppCredError::Invalid(m) => OsError::bad(ID, m),
        AppCredError::Forbidden(m) => OsError::new(ID, StatusCode::FORBIDDEN, m),
        AppCredError::Store(e) => OsError::from_api(ID, e),
    }
}

/// `POST`: 201 and the credential with its secret (shown this once).
async fn create(
    State(s): St,
    Base(base): Base,
    Extension(caller): Extension<TokenRow>,
    Path(user_id): Path<String>,
    body: Bytes,
) -> Result<Response, OsError> {
    app_creds::check_user(&s.identity, &user_id).map_err(err)?;
    app_creds::check_caller(&s.store, &caller)
        .await
        .map_err(err)?;
    let req: CreateBody = parse(ID, &body)?;
    let (row, secret) = app_creds::create(&s.identity, &s.store, req.application_credential)
        .await
        .map_err(err)?;
    let v = app_creds::view(&row, &base, Some(&secret));
    Ok((
        StatusCode::CREATED,
        Json(json!({"application_credential": v})),
    )
        .into_response())
}

async fn list(
    State(s): St,
    Base(base): Base,
    Path(user_id): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, OsError> {
    app_creds::check_user(&s.identity, &user_id).map_err(err)?;
    let name = query_pairs(&uri)
        .into_iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v);
    let inst = s.identity.instance.clone();
    let list = s
        .store
        .call(move |s| s.list_app_creds(&inst, &user_id, name.as_deref()))
        .await
        .map_err(|e| OsError::from_api(ID, e))?;
    let views: Vec<Value> = list
        .iter()
        .map(|c| app_creds::view(c, &base, None))
        .collect();
    Ok(Json(json!({"application_credentials": views,
        "links": {"self": format!("{base}{}", uri.path()), "previous": null, "next": null}})))
}

/// The user's credential `id` made by this kilnd (404 otherwise; a name
/// is not an id, so clients fall back to `?name=`).
async fn get_one(s: &AppState, user_id: &str, id: String) -> Result<AppCredRow, OsError> {
    app_creds::check_user(&s.identity, user_id).map_err(err)?;
    let key = id.clone();
    let c = s
        .store
        .call(move |s| s.get_app_cred(&key))
        .await
        .map_err(|e| OsError::from_api(ID, e))?;
    c.filter(|c| c.user_id == user_id && c.instance == s.identity.instance)
        .ok_or_else(|| {
            OsError::new(
                ID,
                StatusCode::NOT_FOUND,
                format!("Could not find application credential: {id}."),
            )
        })
}

async fn show(
    State(s): St,
    Base(base): Base,
    Path((user_id, id)): Path<(String, String)>,
) -> Result<Json<Value>, OsError> {
    let c = get_one(&s, &user_id, id).await?;
    Ok(Json(
        json!({"application_credential": app_creds::view(&c, &base, None)}),
    ))
}

/// `DELETE`: 204; every token issued through it is revoked with it.
async fn delete(
    State(s): St,
    Extension(caller): Extension<TokenRow>,
    Path((user_id, id)): Path<(String, String)>,
) -> Result<StatusCode, OsError> {
    let c = get_one(&s, &user_id, id).await?;
    app_creds::check_caller(&s.store, &caller)
        .await
        .map_err(err)?;
    s.store
        .call(move |s| s.delete_app_cred(&c.user_id, &c.id))
        .await
        .map_err(|e| OsError::from_api(ID, e))?;
    Ok(StatusCode::NO_CONTENT)
}
