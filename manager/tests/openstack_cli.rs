//! The OpenStack API against the real `openstack` CLI
//! (python-openstackclient, pinned in `scripts/setup.sh`, in
//! `cache/venv-openstack`): a kilnd in a network namespace of its own with
//! its TCP listener on that namespace's loopback, the CLI pointed at it by
//! the `clouds.yaml` that `kilnd --print-clouds-yaml` prints, a disk image
//! uploaded, a flavor made and given properties, a network and its subnet
//! made, and a probe server booted on it, listed, its port shown and set,
//! stopped, started, rebooted and deleted through it, a server with a
//! screen shown through `console url show` (`steps.rs`); every command's
//! JSON output checked. Then the
//! tokens: none, a wrong password, a revoked token and another kilnd's
//! token are refused with 401 and change nothing.

mod common;
#[path = "openstack_cli/steps.rs"]
mod steps;

use std::time::{Duration, Instant};

use base64ct::Encoding;
use common::api::NO_VMM;
use common::osc::{curl, password_auth, subject_token, tcp_config, Cli};
use common::vm::{register, start_kilnd_in, T};
use common::Kilnd;
use kiln_api::compute::ServerStatus;
use kiln_tests::netns::NetNs;
use serde_json::Value;

/// Polls `server show` until the server's status is `status`.
fn wait_status(cli: &Cli, name: &str, status: &str) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let s = cli.json(&["server", "show", name]);
        if s["status"] == status && s["OS-EXT-STS:task_state"].is_null() {
            return s;
        }
        assert!(Instant::now() < deadline, "{name} not {status}: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn openstack_cli_session() {
    let ns = NetNs::with_peer("osc");
    let pre = tempfile::tempdir().unwrap();
    let k = start_kilnd_in(
        Some(ns.name()),
        &format!(
            "{}{}",
            tcp_config(pre.path(), "127.0.0.1:18774"),
            common::firmware::firmware_config()
        ),
    );
    register(&k, "hold", "hello", "hold");
    let cli = Cli::new(&k, ns.name());
    let net_id = steps::network(&cli, &k, &ns);

    let token = cli.json(&["token", "issue"]);
    assert_eq!(token["id"].as_str().unwrap().len(), 64, "{token}");
    assert_eq!(token["project_id"].as_str().unwrap().len(), 32, "{token}");
    assert!(token["expires"].as_str().unwrap() > "2026", "{token}");

    let flavors = cli.json(&["flavor", "list"]);
    let probe = flavors
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["Name"] == "k1.probe")
        .unwrap_or_else(|| panic!("{flavors}"));
    assert_eq!(
        (probe["RAM"].as_u64(), probe["VCPUs"].as_u64()),
        (Some(64), Some(1))
    );
    steps::flavors(&cli, &k);

    // A disk image uploaded through Glance: stored as Kiln's, hash and all.
    let disk = k.dir.path().join("d.qcow2");
    common::qemu_img_create(&disk, "16M");
    let img = cli.json(&[
        "image",
        "create",
        "--file",
        disk.to_str().unwrap(),
        "--disk-format",
        "qcow2",
        "d1",
    ]);
    let img_id = img["id"].as_str().unwrap().to_owned();
    let shown = cli.json(&["image", "show", "d1"]);
    assert_eq!(
        (&shown["id"], &shown["status"], &shown["disk_format"]),
        (
            &Value::from(img_id.as_str()),
            &Value::from("active"),
            &Value::from("qcow2")
        ),
        "{shown}"
    );
    let stored = k.image(&img_id);
    let (_, size, sha) = common::disk_of(&stored);
    assert_eq!(size, std::fs::metadata(&disk).unwrap().len());
    assert_eq!(sha, common::sha256sum(&disk));
    let images = cli.json(&["image", "list"]);
    assert_eq!(images.as_array().unwrap().len(), 2, "{images}");
    cli.run(&["image", "delete", "d1"]);
    assert_eq!(
        k.req("GET", &format!("/v1/images/{img_id}"), None).status,
        404
    );

    let key_file = k.dir.path().join("k1.pem");
    let kp = cli.json(&[
        "keypair",
        "create",
        "--private-key",
        key_file.to_str().unwrap(),
        "k1",
    ]);
    assert_eq!(kp["name"], "k1", "{kp}");
    let v1_key = k.json("GET", "/v1/keypairs/k1", None);
    assert_eq!(kp["fingerprint"], v1_key["fingerprint"]);
    let pem = std::fs::read_to_string(&key_file).unwrap();
    assert!(pem.starts_with("-----BEGIN"), "{pem}");

    let user_data = k.dir.path().join("user-data");
    std::fs::write(&user_data, "#cloud-config\nhostname: from-osc\n").unwrap();
    let created = cli.json(&[
        "server",
        "create",
        "--flavor",
        "k1.probe",
        "--image",
        "hold",
        "--network",
        "lan",
        "--key-name",
        "k1",
        "--user-data",
        user_data.to_str().unwrap(),
        "--wait",
        "s1",
    ]);
    assert_eq!(created["status"], "ACTIVE", "{created}");
    assert_eq!(created["key_name"], "k1", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let v1 = k.server(&id);
    assert_eq!(v1.status, ServerStatus::Active);
    let ip = v1.nics[0].ip.clone().unwrap();
    assert!(ip.starts_with("10.61.0."), "{ip}");
    assert!(created["addresses"].to_string().contains(&ip), "{created}");

    let list = cli.json(&["server", "list"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (
            &list[0]["ID"],
            &list[0]["Name"],
            &list[0]["Status"],
            &list[0]["Image"]
        ),
        (
            &Value::from(id.as_str()),
            &Value::from("s1"),
            &Value::from("ACTIVE"),
            &Value::from("hold")
        )
    );
    assert_eq!(list[0]["Networks"]["lan"][0], ip.as_str(), "{list:?}");

    let show = cli.json(&["server", "show", "s1"]);
    // The user data osc sent (base64), as Nova shows it from 2.3 on.
    let ud = show["OS-EXT-SRV-ATTR:user_data"]
        .as_str()
        .unwrap_or_else(|| panic!("{show}"));
    assert_eq!(
        base64ct::Base64::decode_vec(ud).unwrap(),
        b"#cloud-config\nhostname: from-osc\n",
        "{show}"
    );
    assert_eq!(show["id"], id.as_str());
    assert_eq!(show["flavor"]["original_name"], "k1.probe", "{show}");
    assert_eq!(show["OS-EXT-STS:vm_state"], "active");
    assert_eq!(show["OS-EXT-STS:power_state"], 1);
    assert!(
        show["image"].as_str().unwrap().starts_with("hold ("),
        "{show}"
    );

    steps::ports(&cli, &k, &id);
    steps::console(&cli, &k, &ns);

    let log = cli.run(&["console", "log", "show", "s1"]);
    assert!(log.contains("hello from a kiln probe"), "{log}");
    let tail = cli.run(&["console", "log", "show", "--lines", "1", "s1"]);
    assert_eq!(tail.trim_end().lines().count(), 1, "{tail}");

    cli.run(&["server", "stop", "s1"]);
    let s = wait_status(&cli, "s1", "SHUTOFF");
    assert_eq!(s["OS-EXT-STS:power_state"], 4, "{s}");
    assert_eq!(k.server(&id).status, ServerStatus::Shutoff);
    cli.run(&["server", "start", "s1"]);
    wait_status(&cli, "s1", "ACTIVE");
    assert!(k.server(&id).pid.is_some());
    let pid = k.server(&id).pid;
    cli.run(&["server", "reboot", "--hard", "--wait", "s1"]);
    let after = k.wait_status(&id, ServerStatus::Active, T);
    assert_ne!(after.pid, pid, "a hard reboot starts a new VMM");
    cli.run(&["server", "reboot", "--wait", "s1"]);
    wait_status(&cli, "s1", "ACTIVE");

    // An unknown name is a clean miss, not a crash.
    let (ok, _, err) = cli.try_run(&["server", "show", "nope"]);
    assert!(!ok);
    assert!(err.contains("No Server found for nope"), "{err}");

    cli.run(&["server", "delete", "--wait", "s1"]);
    assert_eq!(cli.json(&["server", "list"]), Value::Array(vec![]));
    assert_eq!(k.req("GET", &format!("/v1/servers/{id}"), None).status, 404);
    cli.run(&["keypair", "delete", "k1"]);
    assert_eq!(k.req("GET", "/v1/keypairs/k1", None).status, 404);

    // Unused now: the subnet, the network (its bridge with it), the flavor.
    let bridge = k.json("GET", "/v1/networks/lan", None)["bridge"]
        .as_str()
        .unwrap()
        .to_owned();
    cli.run(&["subnet", "delete", "lan-v4"]);
    let l2 = k.json("GET", "/v1/networks/lan", None);
    assert!(l2.get("cidr").is_none(), "{l2}");
    cli.run(&["network", "delete", "lan"]);
    assert_eq!(
        k.req("GET", &format!("/v1/networks/{net_id}"), None).status,
        404
    );
    assert!(ns.link(&bridge).is_none(), "{bridge} is gone");
    cli.run(&["flavor", "delete", "fw.small"]);
    assert_eq!(k.req("GET", "/v1/flavors/fw.small", None).status, 404);
}

#[test]
fn tokens_are_checked() {
    let ns = NetNs::with_peer("ostok");
    let pre = tempfile::tempdir().unwrap();
    let a = Kilnd::start_in(
        Some(ns.name()),
        &format!(
            "{}{NO_VMM}[openstack]\nadmin_password = \"secret-pw-a\"\n",
            tcp_config(pre.path(), "127.0.0.1:18775")
        ),
    );
    let b = Kilnd::start_in(
        Some(ns.name()),
        &format!(
            "{}{NO_VMM}[openstack]\nadmin_password = \"secret-pw-a\"\n",
            tcp_config(pre.path(), "127.0.0.1:18776")
        ),
    );
    let n = ns.name();
    let url_a = "http://127.0.0.1:18775";
    let json = ["-H", "Content-Type: application/json"];
    common::api::kernel_image(&a, "tiny");
    // A create that a valid token would have accepted.
    let create = r#"{"server":{"name":"x","imageRef":"tiny","flavorRef":"k1.probe"}}"#;
    let bad = r#"{"server":{"name":"x","imageRef":"tiny","flavorRef":"k1.probe","max_count":2}}"#;

    // No token: 401 in Keystone's shape, and the create changed nothing.
    let (code, body) = curl(n, &[&format!("{url_a}/compute/v2.1/servers")]);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains(r#""error":{"code":401"#), "{body}");
    let servers = format!("{url_a}/compute/v2.1/servers");
    let (code, _) = curl(n, &[&json[..], &["-d", create, &servers]].concat());
    assert_eq!(code, 401);
    // The version documents are open, with absolute links.
    let (code, body) = curl(n, &[&format!("{url_a}/compute/")]);
    assert_eq!(code, 200);
    assert!(
        body.contains(r#""href":"http://127.0.0.1:18775/compute/v2.1/""#),
        "{body}"
    );

    // A wrong password: 401 and no token.
    let tokens = format!("{url_a}/identity/v3/auth/tokens");
    let (code, body) = curl(
        n,
        &[&json[..], &["-d", &password_auth("wrong-pw"), &tokens]].concat(),
    );
    assert_eq!(code, 401, "{body}");
    assert!(
        !body.to_ascii_lowercase().contains("x-subject-token"),
        "{body}"
    );

    // The right one: 201, a token, the catalog.
    let (code, body) = curl(
        n,
        &[&json[..], &["-d", &password_auth("secret-pw-a"), &tokens]].concat(),
    );
    assert_eq!(code, 201, "{body}");
    assert!(body.contains(r#""type":"compute""#), "{body}");
    let tok = subject_token(&body);
    let h = format!("X-Auth-Token: {tok}");
    let (code, body) = curl(n, &["-H", &h, &servers]);
    assert_eq!(
        (code, body.ends_with(r#"{"servers":[]}"#)),
        (200, true),
        "{body}"
    );
    // Nova's errors: the /v1 message in Nova's shape; microversions.
    let (code, body) = curl(n, &["-H", &h, &format!("{servers}/nope")]);
    assert_eq!(code, 404);
    assert!(
        body.contains(r#"{"itemNotFound":{"code":404,"message":"server \"nope\" not found"}}"#),
        "{body}"
    );
    let (code, body) = curl(
        n,
        &[
            "-H",
            &h,
            "-H",
            "OpenStack-API-Version: compute 2.101",
            &servers,
        ],
    );
    assert_eq!(code, 406, "{body}");
    let (code, body) = curl(
        n,
        &[
            "-H",
            &h,
            "-H",
            "OpenStack-API-Version: compute 2.47",
            &servers,
        ],
    );
    assert_eq!(code, 200);
    assert!(
        body.to_ascii_lowercase()
            .contains("openstack-api-version: compute 2.47"),
        "{body}"
    );
    // Pages: a next link while there is more, with the marker of the
    // page's last entry.
    let (code, body) = curl(
        n,
        &["-H", &h, &format!("{url_a}/compute/v2.1/flavors?limit=2")],
    );
    assert_eq!(code, 200, "{body}");
    let page: Value = serde_json::from_str(body.rsplit_once("\r\n\r\n").unwrap().1).unwrap();
    let last = page["flavors"][1]["id"].as_str().unwrap();
    let next = page["flavors_links"][0]["href"].as_str().unwrap();
    assert_eq!(
        next,
        format!("{url_a}/compute/v2.1/flavors?limit=2&marker={last}")
    );
    let (code, body) = curl(n, &["-H", &h, next]);
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains(&format!("\"id\":\"{last}\"")), "{body}");
    let (code, body) = curl(n, &["-H", &h, &format!("{servers}?marker=nope")]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("marker [nope] not found"), "{body}");
    // A bad create is a 400 that makes nothing.
    let (code, body) = curl(n, &[&json[..], &["-H", &h, "-d", bad, &servers]].concat());
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains(r#"{"badRequest":{"code":400,"message":"max_count must be 1"#),
        "{body}"
    );
    assert_eq!(
        a.json("GET", "/v1/servers", None)["servers"],
        Value::Array(vec![])
    );
    // The Keystone token does not open /v1 on TCP.
    let (code, _) = curl(n, &["-H", &h, &format!("{url_a}/v1/servers")]);
    assert_eq!(code, 401);

    // Another kilnd does not take this one's token.
    let (code, _) = curl(
        n,
        &["-H", &h, "http://127.0.0.1:18776/compute/v2.1/servers"],
    );
    assert_eq!(code, 401);

    // Checked, then revoked: refused from then on.
    let st = format!("X-Subject-Token: {tok}");
    let (code, _) = curl(n, &["-I", "-H", &h, "-H", &st, &tokens]);
    assert_eq!(code, 200);
    let (code, _) = curl(n, &["-X", "DELETE", "-H", &h, "-H", &st, &tokens]);
    assert_eq!(code, 204);
    let (code, _) = curl(n, &["-H", &h, &servers]);
    assert_eq!(code, 401);
    let (code, _) = curl(
        n,
        &[&json[..], &["-H", &h, "-d", create, &servers]].concat(),
    );
    assert_eq!(code, 401);
    assert_eq!(
        a.json("GET", "/v1/servers", None)["servers"],
        Value::Array(vec![])
    );
    drop(b);
}
