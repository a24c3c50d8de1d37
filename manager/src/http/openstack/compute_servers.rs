//! Nova v2.1's servers: create, list, `detail`, show, delete and
//! actions, each on the domain function `/v1` calls
//! (`crate::servers::{create, delete, action, console}`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kiln_api::compute::{Flavor, Server, ServerStatus};
use serde_json::{json, Map, Value};

use super::compute::{endpoint, view};
use super::error::{nova, OsError, Service};
use super::{paging, parse, Base, Mv};
use crate::http::state::{AppState, St};
use crate::openstack::nova::{self, Action, CreateBody, ServerView};

const NOVA: Service = Service::Compute;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/compute/v2.1/servers", get(list).post(create))
        .route("/compute/v2.1/servers/detail", get(detail))
        .route("/compute/v2.1/servers/{id}", get(show).delete(delete))
        .route("/compute/v2.1/servers/{id}/action", post(action))
}

/// The query's pairs, percent-decoded (`name=a&status=ACTIVE`); an
/// undecodable query is no filter.
pub(super) fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

/// The servers a list's `name`, `status` and `changes-since` filters
/// keep (other filters Nova has are not applied; `manager/README.md`),
/// then the page `limit` and `marker` ask for, with its `servers_links`
/// (under `path`).
async fn filtered(
    s: &AppState,
    uri: &Uri,
    path: String,
) -> Result<(Vec<Server>, Option<Value>), OsError> {
    let pairs = query_pairs(uri);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let status = match get("status") {
        None => None,
        Some(st) => Some(
            ServerStatus::parse(&st)
                .ok_or_else(|| OsError::bad(NOVA, format!("Invalid status value {st:?}")))?,
        ),
    };
    let since = match get("changes-since") {
        None => None,
        Some(t) => Some(nova::parse_time(&t).ok_or_else(|| {
            OsError::bad(
                NOVA,
                format!("Invalid changes-since value {t:?}: an ISO 8601 time is expected"),
            )
        })?),
    };
    let name = get("name");
    let mut servers = s
        .store
        .call(move |s| s.list_servers(status, name.as_deref()))
        .await
        .map_err(nova)?;
    if let Some(since) = since {
        servers.retain(|x| nova::parse_time(&x.updated_at).is_some_and(|u| u >= since));
    }
    let (servers, next) = paging::page(NOVA, &pairs, servers, |x| x.id.as_str())?;
    let links =
        next.map(|m| json!([{"rel": "next", "href": paging::next_href(&path, &pairs, &m)}]));
    Ok((servers, links))
}

/// A list answer: `{key: list}` and, when there is a next page,
/// `{key}_links`.
pub(super) fn listed(key: &str, list: Vec<Value>, links: Option<Value>) -> Json<Value> {
    let mut v = json!({ key: list });
    if let Some(l) = links {
        v[format!("{key}_links")] = l;
    }
    Json(v)
}

async fn list(State(s): St, Base(b): Base, Mv(mv): Mv, uri: Uri) -> Result<Json<Value>, OsError> {
    let e = endpoint(&b);
    let (servers, links) = filtered(&s, &uri, format!("{e}/servers")).await?;
    let v = view(&s, &e, mv);
    let list = servers.iter().map(|x| v.server_brief(x)).collect();
    Ok(listed("servers", list, links))
}

async fn flavors(s: &AppState) -> Result<Vec<Flavor>, OsError> {
    s.store.call(|s| s.list_flavors()).await.map_err(nova)
}

/// `GET /servers/detail`: typed views serialized straight to the body
/// (no `Value` per server: see `openstack::nova::server_view`).
async fn detail(State(s): St, Base(b): Base, Mv(mv): Mv, uri: Uri) -> Result<Response, OsError> {
    #[derive(serde::Serialize)]
    struct Detail<'a> {
        servers: Vec<ServerView<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        servers_links: Option<Value>,
    }
    let e = endpoint(&b);
    let (servers, links) = filtered(&s, &uri, format!("{e}/servers/detail")).await?;
    let flavors = flavors(&s).await?;
    let user_data = s
        .store
        .call(|s| s.servers_user_data())
        .await
        .map_err(nova)?;
    let v = view(&s, &e, mv);
    let servers = servers
        .iter()
        .map(|x| {
            let f = flavors.iter().find(|f| f.id == x.flavor_id);
            v.server_view(x, f, user_data.get(&x.id).map(String::as_str))
        })
        .collect();
    Ok(Json(Detail {
        servers,
        servers_links: links,
    })
    .into_response())
}

async fn one(s: &AppState, id: String) -> Result<Server, OsError> {
    s.store.call(move |s| s.get_server(&id)).await.map_err(nova)
}

async fn show(
    State(s): St,
    Base(b): Base,
    Mv(mv): Mv,
    Path(id): Path<String>,
) -> Result<Json<Value>, OsError> {
    let server = one(&s, id).await?;
    let flavors = flavors(&s).await?;
    let key = server.id.clone();
    let user_data = s
        .store
        .call(move |s| s.server_user_data(&key))
        .await
        .map_err(nova)?;
    let e = endpoint(&b);
    let f = flavors.iter().find(|f| f.id == server.flavor_id);
    let v = view(&s, &e, mv);
    Ok(Json(
        json!({"server": v.server(&server, f, user_data.as_deref())}),
    ))
}

/// `POST /servers`: 202 with the new server's id, links and `adminPass`
/// (when one was given), and its URL in `Location`.
async fn create(State(s): St, Base(b): Base, Mv(mv): Mv, body: Bytes) -> Result<Response, OsError> {
    let req: CreateBody = parse(NOVA, &body)?;
    let default_net = s
        .store
        .call(|s| s.get_network("default"))
        .await
        .ok()
        .map(|n| n.id);
    let req = nova::to_kiln(req.server, default_net).map_err(|m| OsError::bad(NOVA, m))?;
    let server = crate::servers::create(s.kilnd(), req).await.map_err(nova)?;
    let e = endpoint(&b);
    let v = view(&s, &e, mv);
    let mut out = json!({"id": server.id, "links": v.server_brief(&server)["links"],
        "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}]});
    if let Some(p) = &server.admin_pass {
        out["adminPass"] = json!(p);
    }
    let mut r = (StatusCode::ACCEPTED, Json(json!({ "server": out }))).into_response();
    if let Ok(l) = HeaderValue::from_str(&format!("{e}/servers/{}", server.id)) {
        r.headers_mut().insert(header::LOCATION, l);
    }
    Ok(r)
}

async fn delete(State(s): St, Path(id): Path<String>) -> Result<StatusCode, OsError> {
    // Nova's ids only: a name is a 404, as Nova's.
    one(&s, id.clone()).await?;
    crate::servers::delete(&s.sup, &id).await.map_err(nova)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /servers/{id}/action`: 202 for the power actions, 200 and the
/// log for `os-getConsoleOutput`, 200 and a URL for `os-getVNCConsole`.
async fn action(State(s): St, Path(id): Path<String>, body: Bytes) -> Result<Response, OsError> {
    let body: Map<String, Value> = parse(NOVA, &body)?;
    let act = nova::action(&body).map_err(|m| OsError::bad(NOVA, m))?;
    one(&s, id.clone()).await?;
    match act {
        Action::Kiln(a) => {
            crate::servers::action(&s.sup, &id, a).await.map_err(nova)?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Action::ConsoleOutput(length) => {
            let output = crate::servers::console(&s.store, &s.sup, id, length)
                .await
                .map_err(nova)?;
            Ok(Json(json!({ "output": output })).into_response())
        }
        Action::VncConsole(kind) => {
            let req = kiln_api::compute::RemoteConsoleRequest {
                protocol: "vnc".into(),
                kind,
            };
            let c = super::compute_server_io::console(&s, &id, req).await?;
            Ok(Json(json!({"console": {"type": c.kind, "url": c.url}})).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let uri: Uri = "/s?name=a%20b&status=ACTIVE&x".parse().unwrap();
        assert_eq!(
            query_pairs(&uri),
            [
                ("name".to_owned(), "a b".to_owned()),
                ("status".to_owned(), "ACTIVE".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );
        assert!(query_pairs(&"/s".parse().unwrap()).is_empty());
    }
}
