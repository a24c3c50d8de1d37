//! Glance's free-form image properties against the real `openstack`
//! CLI: `image create --property` (with the `owner_specified.openstack.*`
//! ones osc adds), `image set --property/--name`, `image unset
//! --property`, each seen by `image show` and kept across a kilnd
//! restart; what Kiln cannot change is refused with Glance's status and
//! changes nothing, by osc and by curl.

mod common;

use common::api::NO_VMM;
use common::osc::{body_json, curl, password_auth, subject_token, tcp_config, Cli};
use common::Kilnd;
use kiln_tests::netns::NetNs;
use serde_json::Value;

const URL: &str = "http://127.0.0.1:18783";

fn props(cli: &Cli, name: &str) -> Value {
    let shown = cli.json(&["image", "show", name]);
    shown["properties"].clone()
}

#[test]
fn glance_properties_are_kept() {
    let ns = NetNs::with_peer("osimg");
    let n = ns.name();
    let pre = tempfile::tempdir().unwrap();
    let mut k = Kilnd::start_in(
        Some(n),
        &format!(
            "{}{NO_VMM}[openstack]\nadmin_password = \"secret-pw-i\"\n",
            tcp_config(pre.path(), "127.0.0.1:18783")
        ),
    );
    let cli = Cli::new(&k, n);
    let disk = k.dir.path().join("d.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();

    let img = cli.json(&[
        "image",
        "create",
        "--file",
        disk.to_str().unwrap(),
        "--disk-format",
        "raw",
        "--property",
        "team=blue",
        "--property",
        "note=two words",
        "d1",
    ]);
    let id = img["id"].as_str().unwrap().to_owned();
    let p = props(&cli, "d1");
    assert_eq!(
        (p["team"].as_str(), p["note"].as_str()),
        (Some("blue"), Some("two words")),
        "{p}"
    );
    assert!(p["owner_specified.openstack.sha256"].is_string(), "{p}");
    // osc names the uploaded object (its checksums it leaves empty).
    assert_eq!(p["owner_specified.openstack.object"], "images/d1", "{p}");

    cli.run(&[
        "image",
        "set",
        "--property",
        "team=red",
        "--property",
        "extra=1",
        "d1",
    ]);
    cli.run(&["image", "unset", "--property", "note", "d1"]);
    let p = props(&cli, "d1");
    assert_eq!(
        (p["team"].as_str(), p["extra"].as_str()),
        (Some("red"), Some("1")),
        "{p}"
    );
    assert!(p.get("note").is_none(), "{p}");
    cli.run(&["image", "set", "--name", "d2", "d1"]);
    assert_eq!(k.image(&id).name, "d2");
    let shown = cli.json(&["image", "show", "d2"]);
    assert_eq!(shown["id"], id.as_str());

    // Refused: nothing changes.
    for (args, says) in [
        (vec!["--private"], "public for every Kiln image"),
        (vec!["--min-disk", "5"], "not kept"),
        (
            vec!["--property", "os_type=windows"],
            "fixed when the image is made",
        ),
    ] {
        let mut a = vec!["image", "set"];
        a.extend(args);
        a.push("d2");
        let (ok, _, err) = cli.try_run(&a);
        assert!(!ok && err.contains(says), "{a:?}: {err}");
    }
    // By curl: the media type, a read-only member, a missing property,
    // and an all-or-nothing patch.
    let (code, body) = curl(
        n,
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            &password_auth("secret-pw-i"),
            &format!("{URL}/identity/v3/auth/tokens"),
        ],
    );
    assert_eq!(code, 201, "{body}");
    let h = format!("X-Auth-Token: {}", subject_token(&body));
    let img_url = format!("{URL}/image/v2/images/{id}");
    let patch = |ct: &str, ops: &str| {
        curl(
            n,
            &[
                "-X",
                "PATCH",
                "-H",
                &h,
                "-H",
                &format!("Content-Type: {ct}"),
                "-d",
                ops,
                &img_url,
            ],
        )
    };
    let jp = "application/openstack-images-v2.1-json-patch";
    let (code, body) = patch(
        "application/json",
        r#"[{"op":"add","path":"/a","value":"1"}]"#,
    );
    assert_eq!(code, 415, "{body}");
    let (code, body) = patch(jp, r#"[{"op":"replace","path":"/size","value":"1"}]"#);
    assert_eq!(code, 403, "{body}");
    let (code, body) = patch(jp, r#"[{"op":"remove","path":"/nope"}]"#);
    assert_eq!(code, 409, "{body}");
    assert_eq!(body_json(&body)["code"], 409, "Glance's shape: {body}");
    let (code, body) = patch(
        jp,
        r#"[{"op":"add","path":"/half","value":"1"},{"op":"add","path":"/n","value":7}]"#,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = patch(
        jp,
        r#"[{"op":"replace","path":"/name","value":"bad name!"}]"#,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = patch(jp, r#"[{"op":"add","path":"/x~1y","value":"slash"}]"#);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body_json(&body)["x/y"], "slash");
    let p = props(&cli, "d2");
    assert!(p.get("half").is_none(), "{p}");
    assert_eq!(k.image(&id).name, "d2");

    // Kept across a restart.
    k.stop();
    k.spawn();
    let p = props(&cli, "d2");
    assert_eq!(
        (p["team"].as_str(), p["x/y"].as_str()),
        (Some("red"), Some("slash")),
        "{p}"
    );
    let list = cli.json(&["image", "list", "--long"]);
    assert!(list.to_string().contains("d2"), "{list}");
    cli.run(&["image", "delete", "d2"]);
    assert_eq!(k.req("GET", &format!("/v1/images/{id}"), None).status, 404);
}
