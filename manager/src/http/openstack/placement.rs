//! Placement (read only) under `/placement`: the root document,
//! `resource_providers` (this host), its inventories, usages and
//! allocations, `allocations/{consumer}` and `usages?project_id=`, each
//! at the microversion `OpenStack-API-Version: placement 1.Y` asks for
//! ([`placement_version`]). The views are `crate::openstack::placement`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kiln_api::compute::Server;
use serde_json::{json, Value};

use super::compute_servers::query_pairs;
use super::error::{OsError, Service};
use super::header_str;
use crate::http::state::{AppState, St};
use crate::openstack::placement::{self, Version, VersionError, View};
use crate::placement::Resources;

const PLACEMENT: Service = Service::Placement;

pub(super) fn routes() -> Router<Arc<AppState>> {
    let rp = "/placement/resource_providers/{uuid}";
    Router::new()
        .route("/placement/resource_providers", get(providers))
        .route(rp, get(provider))
        .route(&format!("{rp}/inventories"), get(inventories))
        .route(&format!("{rp}/inventories/{{class}}"), get(inventory))
        .route(&format!("{rp}/usages"), get(usages))
        .route(&format!("{rp}/allocations"), get(provider_allocations))
        .route("/placement/allocations/{consumer}", get(allocations))
        .route("/placement/usages", get(project_usages))
}

/// `GET /placement/` (open, as Placement's root): the one version and
/// its range.
pub(super) async fn root() -> Json<Value> {
    Json(placement::versions())
}

/// Negotiates the request's Placement microversion (400 malformed, 406
/// out of range with `max_version` and `min_version` in the error, which
/// osc-placement reads to fall back) and names it in the answer.
pub(super) async fn placement_version(mut req: Request, next: Next) -> Response {
    let mv = match placement::negotiate(header_str(req.headers(), "openstack-api-version")) {
        Ok(v) => v,
        Err(e @ VersionError::Malformed(_)) => {
            return OsError::bad(PLACEMENT, e.to_string()).into_response()
        }
        Err(e @ VersionError::Unsupported(_)) => {
            let body = json!({"errors": [{"status": 406, "title": "Not Acceptable",
                "detail": e.to_string(), "code": "placement.undefined_code",
                "max_version": placement::MAX.to_string(),
                "min_version": placement::MIN.to_string()}]});
            return (StatusCode::NOT_ACCEPTABLE, Json(body)).into_response();
        }
    };
    req.extensions_mut().insert(mv);
    let mut r = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&format!("placement {mv}")) {
        r.headers_mut().insert("openstack-api-version", v);
    }
    r.headers_mut().insert(
        header::VARY,
        HeaderValue::from_static("openstack-api-version"),
    );
    r
}

/// The negotiated Placement microversion ([`placement_version`] put it
/// there).
pub(super) struct Pv(Version);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Pv {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Pv(parts
            .extensions
            .get::<Version>()
            .copied()
            .unwrap_or(placement::MIN)))
    }
}

/// This host's provider as a request at `mv` sees it.
fn view<'a>(s: &'a AppState, uuid: &'a str, mv: Version) -> View<'a> {
    View {
        mv,
        uuid,
        name: &s.identity.host,
        project_id: &s.identity.project_id,
        user_id: &s.identity.user_id,
    }
}

fn store_err(e: impl Into<crate::http::ApiError>) -> OsError {
    OsError::from_api(PLACEMENT, e)
}

/// 404 unless `uuid` is this host's provider.
fn this_provider(s: &AppState, uuid: &str) -> Result<String, OsError> {
    let mine = s.identity.instance_uuid();
    if uuid != mine {
        return Err(OsError::new(
            PLACEMENT,
            StatusCode::NOT_FOUND,
            format!("No resource provider with uuid {uuid} found"),
        ));
    }
    Ok(mine)
}

/// The servers holding resources (all but DELETED ones).
async fn servers(s: &AppState) -> Result<Vec<Server>, OsError> {
    s.store
        .call(|s| s.list_servers(None, None))
        .await
        .map_err(store_err)
}

async fn used(s: &AppState) -> Result<Resources, OsError> {
    let (used, _) = s.store.call(|s| s.used()).await.map_err(store_err)?;
    Ok(used)
}

/// The query parameters `GET /resource_providers` takes at `mv`
/// (Placement refuses others with a 400).
fn provider_params(mv: Version) -> Vec<&'static str> {
    let mut p = vec!["uuid", "name"];
    for (since, k) in [
        (3, "member_of"),
        (4, "resources"),
        (14, "in_tree"),
        (18, "required"),
    ] {
        if mv.0 >= since {
            p.push(k);
        }
    }
    p
}

/// `GET /resource_providers`: this host, if it passes the filters:
/// `uuid`, `name`, `in_tree` (its own uuid), `resources` (each amount
/// fits beside what servers hold), `member_of` (kilnd has no
/// aggregates: none passes) and `required` (no traits: only forbidden
/// ones, `!T`, pass).
async fn providers(State(s): St, Pv(mv): Pv, uri: Uri) -> Result<Json<Value>, OsError> {
    let uuid = s.identity.instance_uuid();
    let allowed = provider_params(mv);
    let mut keep = true;
    for (k, v) in query_pairs(&uri) {
        if !allowed.contains(&k.as_str()) {
            return Err(OsError::bad(
                PLACEMENT,
                format!(
                    "Invalid query string parameters: {k:?} is not one of {} at {mv}",
                    allowed.join(", ")
                ),
            ));
        }
        keep &= match k.as_str() {
            "uuid" | "in_tree" => v == uuid,
            "name" => v == s.identity.host,
            "member_of" => false,
            "required" => v.split(',').all(|t| t.starts_with('!')),
            _ => fits(&s, &v).await?,
        };
    }
    let list = if keep {
        vec![view(&s, &uuid, mv).provider()]
    } else {
        vec![]
    };
    Ok(Json(json!({"resource_providers": list})))
}

/// Whether `CLASS:N,...` fits on this host now (400 for a class kilnd
/// does not count or an amount that is not a number).
async fn fits(s: &AppState, spec: &str) -> Result<bool, OsError> {
    let mut want = Resources::default();
    for part in spec.split(',') {
        let bad = || {
            OsError::bad(
                PLACEMENT,
                format!("Badly formed resources parameter {part:?}: use CLASS:AMOUNT with VCPU, MEMORY_MB or DISK_GB"),
            )
        };
        let (class, n) = part.split_once(':').ok_or_else(bad)?;
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        match class.trim() {
            "VCPU" => want.vcpus = n,
            "MEMORY_MB" => want.ram_mb = n,
            "DISK_GB" => want.disk_gb = n,
            _ => return Err(bad()),
        }
    }
    let used = used(s).await?;
    Ok(s.placement.check(used, want).is_ok())
}

async fn provider(
    State(s): St,
    Pv(mv): Pv,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, OsError> {
    let uuid = this_provider(&s, &uuid)?;
    Ok(Json(view(&s, &uuid, mv).provider()))
}

async fn inventories(
    State(s): St,
    Pv(mv): Pv,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, OsError> {
    let uuid = this_provider(&s, &uuid)?;
    Ok(Json(view(&s, &uuid, mv).inventories(&s.placement)))
}

async fn inventory(
    State(s): St,
    Pv(mv): Pv,
    Path((uuid, class)): Path<(String, String)>,
) -> Result<Json<Value>, OsError> {
    let uuid = this_provider(&s, &uuid)?;
    view(&s, &uuid, mv)
        .inventory(&s.placement, &class)
        .map(Json)
        .ok_or_else(|| {
            OsError::new(
                PLACEMENT,
                StatusCode::NOT_FOUND,
                format!("No inventory of class {class} for {uuid}"),
            )
        })
}

async fn usages(
    State(s): St,
    Pv(mv): Pv,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, OsError> {
    let uuid = this_provider(&s, &uuid)?;
    let used = used(&s).await?;
    Ok(Json(view(&s, &uuid, mv).usages(used)))
}

async fn provider_allocations(
    State(s): St,
    Pv(mv): Pv,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, OsError> {
    let uuid = this_provider(&s, &uuid)?;
    let list = servers(&s).await?;
    Ok(Json(view(&s, &uuid, mv).provider_allocations(&list)))
}

/// `GET /allocations/{consumer}`: a server's holding; any other consumer
/// holds nothing (`{"allocations": {}}`, as Placement answers).
async fn allocations(
    State(s): St,
    Pv(mv): Pv,
    Path(consumer): Path<String>,
) -> Result<Json<Value>, OsError> {
    let key = consumer.clone();
    let server = match s.store.call(move |s| s.get_server(&key)).await {
        Ok(server) => Some(server),
        Err(crate::store::StoreError::NotFound { .. }) => None,
        Err(e) => return Err(store_err(e)),
    };
    let uuid = s.identity.instance_uuid();
    Ok(Json(
        view(&s, &uuid, mv).consumer_allocations(server.as_ref()),
    ))
}

/// `GET /usages?project_id=[&user_id=]` (from 1.9).
async fn project_usages(State(s): St, Pv(mv): Pv, uri: Uri) -> Result<Json<Value>, OsError> {
    if mv.0 < 9 {
        return Err(OsError::new(
            PLACEMENT,
            StatusCode::NOT_FOUND,
            "GET /usages needs microversion 1.9 or later",
        ));
    }
    let q = query_pairs(&uri);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Some((k, _)) = q
        .iter()
        .find(|(k, _)| !["project_id", "user_id"].contains(&k.as_str()))
    {
        return Err(OsError::bad(
            PLACEMENT,
            format!("Invalid query string parameters: {k:?} is not one of project_id, user_id"),
        ));
    }
    let project = get("project_id").ok_or_else(|| {
        OsError::bad(
            PLACEMENT,
            "Invalid query string parameters: project_id is required",
        )
    })?;
    let list = servers(&s).await?;
    let uuid = s.identity.instance_uuid();
    Ok(Json(view(&s, &uuid, mv).project_usages(
        &project,
        get("user_id").as_deref(),
        &list,
    )))
}
