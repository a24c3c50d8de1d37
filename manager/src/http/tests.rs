//! Unit tests of the HTTP layer.

use super::*;
use crate::util::read_tail;

#[test]
fn tail_takes_the_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log");
    std::fs::write(&p, "a\nb\nc\n").unwrap();
    assert_eq!(read_tail(&p, Some(2)), "b\nc\n");
    assert_eq!(read_tail(&p, Some(0)), "");
    assert_eq!(read_tail(&p, Some(10)), "a\nb\nc\n");
    assert_eq!(read_tail(&p, None), "a\nb\nc\n");
    assert_eq!(read_tail(&dir.path().join("none"), None), "");
}

#[test]
fn openapi_parses_and_names_every_route() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (route, methods) in [
        ("/openapi.json", &["get"][..]),
        ("/v1/host", &["get"]),
        ("/v1/flavors", &["get", "post"]),
        ("/v1/flavors/{id}", &["get", "delete"]),
        ("/v1/images", &["get", "post"]),
        ("/v1/images/{id}", &["get", "delete"]),
        ("/v1/servers", &["get", "post"]),
        ("/v1/servers/{id}", &["get", "delete"]),
        ("/v1/servers/{id}/action", &["post"]),
        ("/v1/servers/{id}/console", &["get"]),
        ("/v1/servers/{id}/screenshot", &["get"]),
        ("/v1/servers/{id}/keys", &["post"]),
        ("/v1/servers/{id}/guest", &["get"]),
        ("/v1/servers/{id}/remote-consoles", &["post"]),
        ("/v1/servers/{id}/console/attach", &["get"]),
        ("/v1/images/{id}/file", &["put"]),
        ("/v1/networks", &["get", "post"]),
        ("/v1/networks/{id}", &["get", "delete"]),
        ("/v1/servers/{id}/nics", &["get"]),
        ("/v1/servers/{id}/nics/{index}", &["get", "put"]),
        ("/v1/keypairs", &["get", "post"]),
        ("/v1/keypairs/{name}", &["get", "delete"]),
        ("/v1/servers/{id}/password", &["get", "delete"]),
    ] {
        for m in methods {
            assert!(
                paths.get(route).and_then(|p| p.get(*m)).is_some(),
                "{m} {route} missing"
            );
        }
    }
    // And nothing documented that the router lacks.
    assert_eq!(paths.len(), 23);
}

#[test]
fn openapi_task_state_is_the_enum() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Server"]["properties"]["task_state"]["$ref"],
        "#/components/schemas/TaskState"
    );
    let documented: Vec<&str> = schemas["TaskState"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let wire: Vec<String> = kiln_api::compute::TaskState::ALL
        .iter()
        .map(|t| {
            serde_json::to_value(t)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(documented, wire);
}
