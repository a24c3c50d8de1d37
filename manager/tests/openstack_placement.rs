//! Placement (read only) against the real client: osc-placement's
//! `openstack resource provider ...` commands (pinned in
//! `scripts/setup.sh`) on a kilnd with a known host size, each answer
//! compared with `/v1/host` and the servers' flavors; then microversion
//! negotiation, Placement's error shape and the token check by curl.
//! Servers go to ERROR at boot (no VMM) but hold their allocation, as
//! in `/v1`.

mod common;

use common::api::{kernel_image, small_host};
use common::osc::{body_json, curl, password_auth, subject_token, tcp_config, Cli};
use common::Kilnd;
use kiln_tests::netns::NetNs;
use serde_json::Value;

/// The row of an osc list whose `key` is `want`.
fn row<'a>(rows: &'a Value, key: &str, want: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r[key] == want)
        .unwrap_or_else(|| panic!("no {key}={want} in {rows}"))
}

#[test]
fn placement_through_osc_placement() {
    let ns = NetNs::with_peer("osplc");
    let pre = tempfile::tempdir().unwrap();
    let k = Kilnd::start_in(
        Some(ns.name()),
        &format!(
            "{}{}[openstack]\nadmin_password = \"secret-pw-p\"\n",
            tcp_config(pre.path(), "127.0.0.1:18781"),
            small_host(8, 4.0, 8192, 100)
        ),
    );
    kernel_image(&k, "tiny");
    let mut ids = vec![];
    for (name, flavor) in [("a", "m1.small"), ("b", "k1.probe")] {
        let r = common::api::create(&k, name, flavor, "tiny");
        assert_eq!(r.status, 202, "{}", r.text());
        ids.push(
            r.json::<Value>().unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let cli = Cli::new(&k, ns.name());
    let host = k.json("GET", "/v1/host", None);

    // One provider: this host, its uuid Nova's hypervisor id.
    let rps = cli.json(&["resource", "provider", "list"]);
    assert_eq!(rps.as_array().unwrap().len(), 1, "{rps}");
    let uuid = rps[0]["uuid"].as_str().unwrap().to_owned();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(rps[0]["name"], hostname.trim(), "{rps}");
    let hyp = cli.json(&["hypervisor", "list"]);
    assert_eq!(hyp[0]["ID"], uuid.as_str(), "{hyp}");
    let shown = cli.json(&["resource", "provider", "show", &uuid]);
    assert_eq!(shown["uuid"], uuid.as_str(), "{shown}");

    // Inventories: /v1/host's totals, reserved amounts and ratios.
    let inv = cli.json(&["resource", "provider", "inventory", "list", &uuid]);
    for (class, key) in [
        ("VCPU", "vcpus"),
        ("MEMORY_MB", "ram_mb"),
        ("DISK_GB", "disk_gb"),
    ] {
        let r = row(&inv, "resource_class", class);
        let h = &host[key];
        assert_eq!(r["total"], h["total"], "{class}: {r} vs {h}");
        assert_eq!(r["reserved"], h["reserved"], "{class}: {r} vs {h}");
        assert_eq!(
            r["allocation_ratio"].as_f64(),
            h["allocation_ratio"].as_f64(),
            "{class}"
        );
        assert_eq!(
            (r["min_unit"].as_u64(), r["step_size"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(r["max_unit"], h["total"], "{class}");
    }
    assert_eq!(row(&inv, "resource_class", "VCPU")["allocation_ratio"], 4.0);
    assert_eq!(row(&inv, "resource_class", "MEMORY_MB")["reserved"], 512);

    // Usages: what the two servers hold (m1.small 1/2048/20, k1.probe 1/64/1).
    let usage = cli.json(&["resource", "provider", "usage", "show", &uuid]);
    for (class, key, want) in [
        ("VCPU", "vcpus", 2),
        ("MEMORY_MB", "ram_mb", 2048 + 64),
        ("DISK_GB", "disk_gb", 20 + 1),
    ] {
        assert_eq!(
            row(&usage, "resource_class", class)["usage"],
            want,
            "{usage}"
        );
        assert_eq!(host[key]["used"], want, "{host}");
    }

    // A server's allocation, with the project and user (1.12+).
    let token = cli.json(&["token", "issue"]);
    let project = token["project_id"].as_str().unwrap();
    let alloc = cli.json(&["resource", "provider", "allocation", "show", &ids[0]]);
    let a = row(&alloc, "resource_provider", &uuid);
    assert_eq!(
        a["resources"],
        serde_json::json!({"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}),
        "{alloc}"
    );
    assert_eq!(a["project_id"], project, "{alloc}");
    assert_eq!(a["user_id"], token["user_id"], "{alloc}");
    // Per project (1.9+): both servers; another project holds nothing.
    let pu = cli.json(&["resource", "usage", "show", project]);
    assert_eq!(
        row(&pu, "resource_class", "MEMORY_MB")["usage"],
        2112,
        "{pu}"
    );
    let none = cli.json(&[
        "resource",
        "usage",
        "show",
        "0123456789abcdef0123456789abcdef",
    ]);
    assert_eq!(none, Value::Array(vec![]));

    // A deleted server holds nothing any more.
    k.delete_server(&ids[0]);
    let alloc = cli.json(&["resource", "provider", "allocation", "show", &ids[0]]);
    assert_eq!(alloc, Value::Array(vec![]), "{alloc}");
    let usage = cli.json(&["resource", "provider", "usage", "show", &uuid]);
    assert_eq!(row(&usage, "resource_class", "VCPU")["usage"], 1, "{usage}");

    // By curl: the root is open, versions negotiate, errors are Placement's.
    let n = ns.name();
    let url = "http://127.0.0.1:18781/placement";
    let (code, body) = curl(n, &[&format!("{url}/")]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body_json(&body)["versions"][0]["max_version"], "1.39");
    let (code, body) = curl(n, &[&format!("{url}/resource_providers")]);
    assert_eq!(code, 401, "{body}");
    let tokens = "http://127.0.0.1:18781/identity/v3/auth/tokens";
    let (code, body) = curl(
        n,
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            &password_auth("secret-pw-p"),
            tokens,
        ],
    );
    assert_eq!(code, 201, "{body}");
    assert!(body.contains(r#""type":"placement""#), "{body}");
    let h = format!("X-Auth-Token: {}", subject_token(&body));
    let rp = format!("{url}/resource_providers");
    let (code, body) = curl(
        n,
        &["-H", &h, "-H", "OpenStack-API-Version: placement 1.40", &rp],
    );
    assert_eq!(code, 406, "{body}");
    assert_eq!(
        body_json(&body)["errors"][0]["max_version"],
        "1.39",
        "{body}"
    );
    let (code, body) = curl(
        n,
        &["-H", &h, "-H", "OpenStack-API-Version: placement 1.x", &rp],
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = curl(
        n,
        &["-H", &h, "-H", "OpenStack-API-Version: placement 1.14", &rp],
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("openstack-api-version: placement 1.14"),
        "{body}"
    );
    assert_eq!(
        body_json(&body)["resource_providers"][0]["root_provider_uuid"],
        uuid.as_str()
    );
    let (code, body) = curl(n, &["-H", &h, &format!("{rp}/{}", ids[1].as_str())]);
    assert_eq!(code, 404, "{body}");
    let e = &body_json(&body)["errors"][0];
    assert_eq!(
        (e["status"].as_u64(), e["title"].as_str()),
        (Some(404), Some("Not Found")),
        "{body}"
    );
    // Filters: one that fits, one that does not, one Placement refuses.
    let q = |p: &str| {
        curl(
            n,
            &[
                "-H",
                &h,
                "-H",
                "OpenStack-API-Version: placement 1.29",
                &format!("{rp}?{p}"),
            ],
        )
    };
    let (code, body) = q("resources=VCPU:4,MEMORY_MB:1024");
    assert_eq!(
        (
            code,
            body_json(&body)["resource_providers"]
                .as_array()
                .unwrap()
                .len()
        ),
        (200, 1)
    );
    let (code, body) = q("resources=VCPU:40");
    assert_eq!(
        (
            code,
            body_json(&body)["resource_providers"]
                .as_array()
                .unwrap()
                .len()
        ),
        (200, 0)
    );
    let (code, body) = q("resources=GPU:1");
    assert_eq!(code, 400, "{body}");
    let (code, body) = q("colour=red");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("colour"), "{body}");
}
