//! Nova v2.1's flavors: list and `detail` (paged), show, create, delete
//! (on `crate::flavors` and the store, as `/v1/flavors`), and
//! `os-extra_specs` (list, show, set, unset a key) on
//! `crate::flavors::update_extra_specs`: the keys kiln honours
//! (`crate::qos`), any other a 400.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::compute::{endpoint, view};
use super::compute_servers::{listed, query_pairs};
use super::error::{nova, OsError, Service};
use super::{paging, parse, Base, Mv};
use crate::http::state::{AppState, St};
use crate::openstack::nova::View;

const NOVA: Service = Service::Compute;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/compute/v2.1/flavors", get(flavors).post(create))
        .route("/compute/v2.1/flavors/detail", get(flavors_detail))
        .route("/compute/v2.1/flavors/{id}", get(flavor).delete(delete))
        .route(
            "/compute/v2.1/flavors/{id}/os-extra_specs",
            get(extra_specs).post(extra_specs_set),
        )
        .route(
            "/compute/v2.1/flavors/{id}/os-extra_specs/{key}",
            get(extra_spec)
                .put(extra_spec_put)
                .delete(extra_spec_delete),
        )
}

/// The page of flavors the query asks for, and its `flavors_links`.
async fn page(
    s: &AppState,
    uri: &Uri,
    path: String,
) -> Result<(Vec<kiln_api::compute::Flavor>, Option<Value>), OsError> {
    let list = s.store.call(|s| s.list_flavors()).await.map_err(nova)?;
    let pairs = query_pairs(uri);
    let (list, next) = paging::page(NOVA, &pairs, list, |f| f.id.as_str())?;
    let links =
        next.map(|m| json!([{"rel": "next", "href": paging::next_href(&path, &pairs, &m)}]));
    Ok((list, links))
}

async fn flavors(st: St, b: Base, mv: Mv, uri: Uri) -> Result<Json<Value>, OsError> {
    listing(st, b, mv, uri, "flavors", |v, f| v.flavor_brief(f)).await
}

async fn flavors_detail(st: St, b: Base, mv: Mv, uri: Uri) -> Result<Json<Value>, OsError> {
    listing(st, b, mv, uri, "flavors/detail", |v, f| v.flavor(f)).await
}

/// A page of flavors at `path`, each shown by `show`.
async fn listing(
    State(s): St,
    Base(b): Base,
    Mv(mv): Mv,
    uri: Uri,
    path: &str,
    show: impl Fn(&View<'_>, &kiln_api::compute::Flavor) -> Value,
) -> Result<Json<Value>, OsError> {
    let e = endpoint(&b);
    let (list, links) = page(&s, &uri, format!("{e}/{path}")).await?;
    let v = view(&s, &e, mv);
    Ok(listed(
        "flavors",
        list.iter().map(|f| show(&v, f)).collect(),
        links,
    ))
}

async fn get_flavor(s: &AppState, id: String) -> Result<kiln_api::compute::Flavor, OsError> {
    s.store.call(move |s| s.get_flavor(&id)).await.map_err(nova)
}

async fn flavor(
    State(s): St,
    Base(b): Base,
    Mv(mv): Mv,
    Path(id): Path<String>,
) -> Result<Json<Value>, OsError> {
    let f = get_flavor(&s, id).await?;
    let e = endpoint(&b);
    Ok(Json(json!({"flavor": view(&s, &e, mv).flavor(&f)})))
}

/// `POST /flavors`: 200 and the new flavor (`crate::openstack::nova::flavors`
/// says what Kiln takes).
async fn create(
    State(s): St,
    Base(b): Base,
    Mv(mv): Mv,
    body: Bytes,
) -> Result<Json<Value>, OsError> {
    let mut body: Map<String, Value> = parse(NOVA, &body)?;
    let Some(Value::Object(m)) = body.remove("flavor") else {
        return Err(OsError::bad(NOVA, "the body must be {\"flavor\": {...}}"));
    };
    let req =
        crate::openstack::nova::flavors::flavor_create(&m).map_err(|e| OsError::bad(NOVA, e))?;
    let f = crate::flavors::create(&s.store, req).await.map_err(nova)?;
    let e = endpoint(&b);
    Ok(Json(json!({"flavor": view(&s, &e, mv).flavor(&f)})))
}

/// `DELETE /flavors/{id}`: 202; servers made from it keep their sizes.
async fn delete(State(s): St, Path(id): Path<String>) -> Result<StatusCode, OsError> {
    s.store
        .call(move |s| s.delete_flavor(&id))
        .await
        .map_err(nova)?;
    Ok(StatusCode::ACCEPTED)
}

async fn extra_specs(State(s): St, Path(id): Path<String>) -> Result<Json<Value>, OsError> {
    let f = get_flavor(&s, id).await?;
    Ok(Json(json!({"extra_specs": f.extra_specs})))
}

/// Extra spec values as Nova takes them: strings, numbers and booleans
/// (as their text).
fn specs(m: Map<String, Value>) -> Result<BTreeMap<String, String>, OsError> {
    m.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(n) => Ok((k, n.to_string())),
            Value::Bool(b) => Ok((k, b.to_string())),
            v => Err(OsError::bad(
                NOVA,
                format!("extra spec {k:?}: {v} is not a string"),
            )),
        })
        .collect()
}

async fn update(
    s: &AppState,
    id: String,
    set: BTreeMap<String, String>,
    unset: Vec<String>,
) -> Result<kiln_api::compute::Flavor, OsError> {
    crate::flavors::update_extra_specs(&s.store, id, set, unset)
        .await
        .map_err(nova)
}

/// `POST .../os-extra_specs` `{"extra_specs": {...}}`: these keys set,
/// the others kept.
async fn extra_specs_set(
    State(s): St,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, OsError> {
    let mut body: Map<String, Value> = parse(NOVA, &body)?;
    let Some(Value::Object(m)) = body.remove("extra_specs") else {
        return Err(OsError::bad(
            NOVA,
            "the body must be {\"extra_specs\": {...}}",
        ));
    };
    let set = specs(m)?;
    update(&s, id, set.clone(), Vec::new()).await?;
    Ok(Json(json!({"extra_specs": set})))
}

async fn extra_spec(
    State(s): St,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Value>, OsError> {
    let f = get_flavor(&s, id).await?;
    match f.extra_specs.get(&key) {
        Some(v) => Ok(Json(json!({ key: v }))),
        None => Err(OsError::new(
            NOVA,
            StatusCode::NOT_FOUND,
            format!("Flavor {} has no extra specs with key {key}.", f.id),
        )),
    }
}

/// `PUT .../os-extra_specs/{key}` `{key: value}`.
async fn extra_spec_put(
    State(s): St,
    Path((id, key)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, OsError> {
    let body: Map<String, Value> = parse(NOVA, &body)?;
    let set = specs(body)?;
    if set.len() != 1 || !set.contains_key(&key) {
        return Err(OsError::bad(
            NOVA,
            format!("Request body and URI mismatch: the body must be {{\"{key}\": value}}"),
        ));
    }
    update(&s, id, set.clone(), Vec::new()).await?;
    Ok(Json(json!(set)))
}

async fn extra_spec_delete(
    State(s): St,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, OsError> {
    update(&s, id, BTreeMap::new(), vec![key]).await?;
    Ok(StatusCode::OK)
}
