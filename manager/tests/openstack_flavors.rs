//! Nova's flavor create and delete and `os-extra_specs` through plain
//! HTTP with a Keystone token (a kilnd without a VMM, its TCP listener in
//! a network namespace of this test's own): Kiln's flavor rules and
//! extra-spec checks (`crate::qos`) in Nova's shape; a refusal changes
//! nothing.

mod common;

use common::openstack::{kilnd, Os};
use kiln_tests::netns::NetNs;
use serde_json::json;

#[test]
fn nova_flavors_and_extra_specs() {
    let ns = NetNs::with_peer("osflv");
    let k = kilnd(&ns, 18778);
    let os = Os::new(ns.name(), 18778);
    let flavors = "/compute/v2.1/flavors";
    let before = k.json("GET", "/v1/flavors", None);
    for (extra, why) in [
        (json!({"id": "42"}), "leave id out"),
        (json!({"swap": 512}), "swap"),
        (json!({"OS-FLV-EXT-DATA:ephemeral": 1}), "ephemeral"),
        (json!({"os-flavor-access:is_public": false}), "public"),
        (json!({"rxtx_factor": 2.0}), "quota:vif"),
        (json!({"vcpus": 0}), "vcpus must be 1 to 255"),
        (json!({"ram": "lots"}), "whole number"),
        (json!({"name": "k1.probe"}), "already exists"),
    ] {
        let mut f = json!({"name": "f1", "vcpus": 1, "ram": 128, "disk": 1});
        for (key, v) in extra.as_object().unwrap() {
            f[key] = v.clone();
        }
        let code = if why == "already exists" { 409 } else { 400 };
        os.nova_refuses("POST", flavors, Some(json!({"flavor": f})), code, why);
    }
    assert_eq!(k.json("GET", "/v1/flavors", None), before);

    let f = os.ok(
        "POST",
        flavors,
        Some(json!({"flavor": {"name": "f1", "vcpus": 2, "ram": 128, "disk": 1, "id": null}})),
    )["flavor"]
        .clone();
    assert_eq!(
        (&f["vcpus"], &f["ram"], &f["disk"]),
        (&json!(2), &json!(128), &json!(1)),
        "{f}"
    );
    let fid = f["id"].as_str().unwrap().to_owned();
    let specs = format!("{flavors}/{fid}/os-extra_specs");
    os.ok("POST", &specs, Some(json!({"extra_specs": {"quota:disk_total_iops_sec": "300", "quota:vif_inbound_average": 1000}})));
    assert_eq!(
        k.json("GET", "/v1/flavors/f1", None)["extra_specs"],
        json!({"quota:disk_total_iops_sec": "300", "quota:vif_inbound_average": "1000"})
    );
    // Keys kiln does not honour, bad values, mismatched bodies: 400, and
    // the specs are as they were.
    for (body, why) in [
        (
            json!({"extra_specs": {"hw:cpu_policy": "dedicated"}}),
            "hw:cpu_policy",
        ),
        (
            json!({"extra_specs": {"quota:disk_total_iops_sec": "lots"}}),
            "quota:disk_total_iops_sec",
        ),
        (
            json!({"extra_specs": {"quota:disk_total_iops_sec": ["1"]}}),
            "not a string",
        ),
        (json!({"specs": {}}), "extra_specs"),
    ] {
        os.nova_refuses("POST", &specs, Some(body), 400, why);
    }
    os.nova_refuses(
        "PUT",
        &format!("{specs}/quota:vif_inbound_average"),
        Some(json!({"quota:vif_outbound_average": "1"})),
        400,
        "mismatch",
    );
    assert_eq!(
        os.ok("GET", &specs, None)["extra_specs"]
            .as_object()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        os.ok(
            "PUT",
            &format!("{specs}/quota:vif_inbound_average"),
            Some(json!({"quota:vif_inbound_average": "2000"}))
        ),
        json!({"quota:vif_inbound_average": "2000"})
    );
    assert_eq!(
        os.ok("GET", &format!("{specs}/quota:vif_inbound_average"), None),
        json!({"quota:vif_inbound_average": "2000"})
    );
    assert_eq!(
        os.call(
            "DELETE",
            &format!("{specs}/quota:vif_inbound_average"),
            None
        )
        .0,
        200
    );
    os.nova_refuses(
        "DELETE",
        &format!("{specs}/quota:vif_inbound_average"),
        None,
        404,
        "quota:vif_inbound_average",
    );
    os.nova_refuses(
        "GET",
        &format!("{specs}/nope"),
        None,
        404,
        "no extra specs with key nope",
    );
    assert_eq!(
        os.ok("GET", &specs, None)["extra_specs"],
        json!({"quota:disk_total_iops_sec": "300"})
    );
    // Shown from 2.61 on; deleted with 202.
    let (c, _, v) = os.raw("GET", &format!("{flavors}/{fid}"), None);
    assert_eq!((c, &v["flavor"]["name"]), (200, &json!("f1")));
    assert_eq!(os.call("DELETE", &format!("{flavors}/{fid}"), None).0, 202);
    assert_eq!(k.req("GET", "/v1/flavors/f1", None).status, 404);
    os.nova_refuses("DELETE", &format!("{flavors}/{fid}"), None, 404, &fid);
}
