//! openstacksdk (pinned in `scripts/setup.sh`, in `cache/venv-openstack`)
//! against a kilnd in a network namespace of its own: the script
//! `openstack_sdk.py` connects with `openstack.connect(cloud="kiln")` on
//! the `clouds.yaml` that `kilnd --print-clouds-yaml` printed, and takes a
//! token, lists flavors, creates and uploads an image, makes a key pair,
//! boots a probe server and waits for it, lists and gets it, reads its
//! console, stops and starts it, deletes it and waits for that; every
//! result it prints is checked here against kilnd's `/v1`.

mod common;

use std::process::Command;

use common::osc::{clouds_yaml, tcp_config, venv_bin};
use common::vm::{register, start_kilnd_in};
use kiln_tests::netns::NetNs;
use serde_json::Value;

#[test]
fn openstacksdk_session() {
    let ns = NetNs::with_peer("ossdk");
    let pre = tempfile::tempdir().unwrap();
    let k = start_kilnd_in(Some(ns.name()), &tcp_config(pre.path(), "127.0.0.1:18784"));
    register(&k, "hold", "hello", "hold");
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"lan","cidr":"10.62.0.0/24","mode":"isolated"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let clouds = clouds_yaml(&k);
    let disk = k.dir.path().join("up.raw");
    let bytes: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&disk, &bytes).unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openstack_sdk.py");
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(venv_bin("python"))
        .arg(script)
        .arg(&disk)
        .arg("hold")
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env_remove("OS_CLOUD")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    assert_eq!(o["token"].as_str().unwrap().len(), 64, "{o}");
    assert_eq!(o["project_id"].as_str().unwrap().len(), 32, "{o}");
    let mut v1_flavors = common::names(&k.json("GET", "/v1/flavors", None), "flavors");
    v1_flavors.sort();
    assert_eq!(o["flavors"], serde_json::json!(v1_flavors));
    assert_eq!(
        o["probe_flavor"],
        serde_json::json!({"ram": 64, "vcpus": 1, "disk": 1})
    );

    // The upload: stored as kiln's, hash and size (gone again at the end).
    assert_eq!(o["image"]["status"], "active", "{o}");
    assert_eq!(o["image"]["size"], bytes.len(), "{o}");
    assert_eq!(o["image"]["hash"], common::sha256sum(&disk).as_str(), "{o}");
    assert_eq!(o["image"]["disk_format"], "raw");
    let img_id = o["image"]["id"].as_str().unwrap();
    assert_eq!(
        k.req("GET", &format!("/v1/images/{img_id}"), None).status,
        404
    );
    assert_eq!(o["images_left"], serde_json::json!(["hold"]));

    assert_eq!(o["keypair"]["name"], "sdk-key");
    assert_eq!(o["keypair"]["private_key"], true);
    assert!(
        o["keypair"]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:"),
        "{o}"
    );
    assert_eq!(k.req("GET", "/v1/keypairs/sdk-key", None).status, 404);

    // The server: ACTIVE with its lan address, listed, shown, its console
    // the probe's, stopped and started, deleted.
    let s = &o["server"];
    assert_eq!(
        (s["status"].as_str(), s["key_name"].as_str()),
        (Some("ACTIVE"), Some("sdk-key"))
    );
    let ip = s["addresses"]["lan"][0]["addr"]
        .as_str()
        .unwrap_or_else(|| panic!("{s}"));
    assert!(ip.starts_with("10.62.0."), "{ip}");
    assert_eq!(o["listed"], serde_json::json!(["sdk-s1"]));
    assert_eq!(o["got"]["name"], "sdk-s1");
    assert_eq!(o["got"]["flavor"], "k1.probe");
    assert_eq!(
        (
            o["got"]["power_state"].as_u64(),
            o["got"]["vm_state"].as_str()
        ),
        (Some(1), Some("active"))
    );
    assert!(
        o["console"]
            .as_str()
            .unwrap()
            .contains("hello from a kiln probe"),
        "{o}"
    );
    assert_eq!(
        o["stopped"],
        serde_json::json!({"status": "SHUTOFF", "power_state": 4})
    );
    assert_eq!(
        o["started"],
        serde_json::json!({"status": "ACTIVE", "power_state": 1})
    );
    assert_eq!(o["after_delete"], serde_json::json!([]));
    assert_eq!(o["missing"], true);
    let id = s["id"].as_str().unwrap();
    assert_eq!(k.req("GET", &format!("/v1/servers/{id}"), None).status, 404);
    common::vm::assert_nothing_left(&k);
}
