//! Neutron's networks, subnets, ports and security groups and Nova's
//! flavor writes, extra specs and `os-interface` on a kilnd (its TCP
//! listener in a network namespace of this test's own, no VMM) through
//! plain HTTP with a Keystone token: what Kiln can be is made and shown
//! in each service's shape, on the host too (bridges, the gateway
//! address); what it cannot is refused with a 4xx in the service's
//! error shape that says why, and nothing is half made.

mod common;

use std::process::Command;

use common::api::{kernel_image, NO_VMM};
use common::Kilnd;
use kiln_tests::netns::NetNs;
use serde_json::{json, Value};

const URL: &str = "http://127.0.0.1:18777";

/// curl in the namespace with a token.
struct Os {
    ns: String,
    token: String,
}

impl Os {
    fn new(ns: &str) -> Os {
        let mut os = Os {
            ns: ns.to_owned(),
            token: String::new(),
        };
        let auth = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": "pw-0123456789"}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}});
        let (code, head, _) = os.raw("POST", "/identity/v3/auth/tokens", Some(&auth));
        assert_eq!(code, 201, "{head}");
        os.token = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("x-subject-token:")
                    .then(|| l.split_once(':').unwrap().1.trim().to_owned())
            })
            .unwrap();
        os
    }

    /// (status, headers, body as JSON or Null).
    fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String, Value) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "curl", "-s", "-i", "-X", method]);
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "-w",
            "\n%{http_code}",
        ]);
        if !self.token.is_empty() {
            cmd.args(["-H", &format!("X-Auth-Token: {}", self.token)]);
        }
        if let Some(b) = body {
            cmd.args(["-d", &b.to_string()]);
        }
        let out = cmd.arg(format!("{URL}{path}")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (resp, code) = text.rsplit_once('\n').unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
        let v = serde_json::from_str(body).unwrap_or(Value::Null);
        (code.trim().parse().unwrap(), head.to_owned(), v)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (c, _, v) = self.raw(method, path, body.as_ref());
        (c, v)
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (c, v) = self.call(method, path, body);
        assert!((200..300).contains(&c), "{method} {path}: {c} {v}");
        v
    }

    /// A Neutron refusal: `code`, its shape, `why` in the message.
    fn neutron_refuses(&self, method: &str, path: &str, body: Value, code: u16, why: &str) {
        let (c, v) = self.call(method, path, Some(body.clone()));
        assert_eq!(c, code, "{path} {body}: {v}");
        let m = v["NeutronError"]["message"].as_str().unwrap_or_default();
        assert!(m.contains(why), "{path} {body}: {v}");
        assert!(v["NeutronError"]["type"].as_str().is_some(), "{v}");
    }

    /// A Nova refusal: `code`, its shape, `why` in the message.
    fn nova_refuses(&self, method: &str, path: &str, body: Option<Value>, code: u16, why: &str) {
        let (c, v) = self.call(method, path, body.clone());
        assert_eq!(c, code, "{path} {body:?}: {v}");
        let (_, fault) = v.as_object().and_then(|o| o.iter().next()).unwrap();
        assert_eq!(fault["code"], code, "{v}");
        assert!(
            fault["message"].as_str().unwrap().contains(why),
            "{path}: {v}"
        );
    }
}

fn kilnd(ns: &NetNs) -> Kilnd {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("t");
    std::fs::write(&token, "v1-bearer-token-0123456789\n").unwrap();
    let k = Kilnd::start_in(
        Some(ns.name()),
        &format!(
            "[tcp]\nlisten = \"127.0.0.1:18777\"\ntoken_file = \"{}\"\n{NO_VMM}\
             [openstack]\nadmin_password = \"pw-0123456789\"\n",
            token.display()
        ),
    );
    std::mem::forget(dir);
    k
}

#[test]
fn neutron_networks_subnets_ports() {
    let ns = NetNs::with_peer("osnet");
    let k = kilnd(&ns);
    let os = Os::new(ns.name());
    let nets = "/network/v2.0/networks";
    let subnets = "/network/v2.0/subnets";

    // Refused networks make nothing.
    let before = k.json("GET", "/v1/networks", None)["networks"].clone();
    for (body, code, why) in [
        (
            json!({"network": {"name": "x", "provider:network_type": "vlan"}}),
            400,
            "vlan",
        ),
        (
            json!({"network": {"name": "x", "admin_state_up": false}}),
            400,
            "admin_state_up",
        ),
        (
            json!({"network": {"name": "x", "port_security_enabled": false}}),
            400,
            "port security",
        ),
        (
            json!({"network": {"name": "x", "project_id": "other"}}),
            400,
            "one project",
        ),
        (
            json!({"network": {"name": "x", "provider:segmentation_id": 5}}),
            400,
            "segmentation",
        ),
        (json!({"network": {}}), 400, "needs a name"),
        (json!({"network": {"name": "a b"}}), 400, "network"),
        (
            json!({"networks": [{"name": "x"}]}),
            400,
            "one network per request",
        ),
    ] {
        os.neutron_refuses("POST", nets, body, code, why);
    }
    assert_eq!(k.json("GET", "/v1/networks", None)["networks"], before);

    // A tenant network: isolated, a bridge of its own.
    let n = os.ok(
        "POST",
        nets,
        Some(json!({"network": {"name": "t1", "mtu": 1400}})),
    )["network"]
        .clone();
    let id = n["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (&n["router:external"], &n["mtu"], &n["subnets"]),
        (&json!(false), &json!(1400), &json!([])),
        "{n}"
    );
    let v1 = k.json("GET", "/v1/networks/t1", None);
    let bridge = v1["bridge"].as_str().unwrap().to_owned();
    assert!(bridge.starts_with("kn") && bridge.len() == 14, "{v1}");
    assert_eq!(
        (&v1["mode"], &v1["managed"]),
        (&json!("isolated"), &json!(true))
    );
    assert!(ns.link(&bridge).unwrap().contains("mtu 1400"));
    os.neutron_refuses(
        "POST",
        nets,
        json!({"network": {"name": "t1"}}),
        409,
        "already exists",
    );

    // Its subnet: refusals first, none of which changes the network.
    for (sub, code, why) in [
        (json!({"cidr": "fd00::/64", "ip_version": 6}), 400, "IPv4"),
        (
            json!({"cidr": "10.71.0.0/24", "gateway_ip": null}),
            400,
            "has a gateway",
        ),
        (
            json!({"cidr": "10.71.0.0/24", "allocation_pools": [{"start": "10.71.0.10", "end": "10.71.0.20"}]}),
            400,
            "allocation_pools",
        ),
        (
            json!({"cidr": "10.71.0.0/24", "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.71.0.9"}]}),
            400,
            "host_routes",
        ),
        (
            json!({"subnetpool_id": "p", "ip_version": 4}),
            400,
            "subnet pools",
        ),
        (json!({"cidr": "10.71.0.0/33"}), 400, "10.71.0.0/33"),
        (
            json!({"cidr": "10.71.0.0/24", "gateway_ip": "10.72.0.1"}),
            400,
            "gateway",
        ),
    ] {
        let mut body = sub.clone();
        body["network_id"] = json!(id);
        os.neutron_refuses("POST", subnets, json!({"subnet": body}), code, why);
    }
    os.neutron_refuses(
        "POST",
        subnets,
        json!({"subnet": {"network_id": "nope", "cidr": "10.71.0.0/24"}}),
        404,
        "nope",
    );
    assert!(k.json("GET", "/v1/networks/t1", None).get("cidr").is_none());

    let s = os.ok(
        "POST",
        subnets,
        Some(json!({"subnet": {"network_id": id, "cidr": "10.71.0.0/24",
        "name": "t1-v4", "ip_version": 4, "dns_nameservers": ["10.71.0.53"]}})),
    )["subnet"]
        .clone();
    assert_eq!(
        (
            &s["name"],
            &s["gateway_ip"],
            &s["enable_dhcp"],
            &s["dns_nameservers"]
        ),
        (
            &json!("t1-v4"),
            &json!("10.71.0.1"),
            &json!(true),
            &json!(["10.71.0.53"])
        ),
        "{s}"
    );
    let sid = s["id"].as_str().unwrap().to_owned();
    assert!(ns
        .ip(&["-4", "addr", "show", "dev", &bridge])
        .contains("10.71.0.1/24"));
    assert_eq!(
        os.ok("GET", &format!("{nets}/{id}"), None)["network"]["subnets"],
        json!([sid])
    );
    assert_eq!(
        os.ok("GET", &format!("{subnets}?name=t1-v4"), None)["subnets"][0]["id"],
        json!(sid)
    );
    os.neutron_refuses(
        "POST",
        subnets,
        json!({"subnet": {"network_id": id, "cidr": "10.72.0.0/24"}}),
        409,
        "already has subnet",
    );

    // An external network: nat; its subnet may not overlap t1's.
    let e = os.ok(
        "POST",
        nets,
        Some(json!({"network": {"name": "ext", "router:external": true}})),
    )["network"]
        .clone();
    assert_eq!(e["router:external"], json!(true));
    assert_eq!(k.json("GET", "/v1/networks/ext", None)["mode"], "nat");
    os.neutron_refuses(
        "POST",
        subnets,
        json!({"subnet": {"network_id": e["id"], "cidr": "10.71.0.0/16"}}),
        409,
        "overlaps",
    );
    // A flat provider network on a host bridge: bridged, the bridge kept.
    ns.ip(&["link", "add", "uplink0", "type", "bridge"]);
    let p = os.ok(
        "POST",
        nets,
        Some(json!({"network": {"name": "prov",
        "provider:network_type": "flat", "provider:physical_network": "uplink0"}})),
    )["network"]
        .clone();
    assert_eq!(p["provider:physical_network"], "uplink0");
    let v1 = k.json("GET", "/v1/networks/prov", None);
    assert_eq!(
        (&v1["mode"], &v1["managed"]),
        (&json!("bridged"), &json!(false))
    );

    // A server's NIC is a port (and Nova's os-interface); ports cannot be
    // made or unplugged.
    kernel_image(&k, "tiny");
    let r = k.req("POST", "/v1/servers", Some(&format!(
        r#"{{"name":"s","flavor":"k1.probe","image":"tiny","networks":[{{"network":"{id}","ip":"10.71.0.7"}}]}}"#)));
    assert_eq!(r.status, 202, "{}", r.text());
    let srv: Value = serde_json::from_slice(&r.body).unwrap();
    let srv = srv["id"].as_str().unwrap();
    let ports =
        os.ok("GET", &format!("/network/v2.0/ports?device_id={srv}"), None)["ports"].clone();
    assert_eq!(ports.as_array().unwrap().len(), 1, "{ports}");
    let port = ports[0].clone();
    let pid = port["id"].as_str().unwrap();
    assert_eq!(
        (&port["network_id"], &port["fixed_ips"]),
        (
            &json!(id),
            &json!([{"subnet_id": sid, "ip_address": "10.71.0.7"}])
        ),
        "{port}"
    );
    let ifs = os.ok(
        "GET",
        &format!("/compute/v2.1/servers/{srv}/os-interface"),
        None,
    );
    assert_eq!(
        ifs["interfaceAttachments"][0]["port_id"],
        json!(pid),
        "{ifs}"
    );
    assert_eq!(
        ifs["interfaceAttachments"][0]["mac_addr"],
        port["mac_address"]
    );
    let one = os.ok(
        "GET",
        &format!("/compute/v2.1/servers/{srv}/os-interface/{pid}"),
        None,
    );
    assert_eq!(one["interfaceAttachment"]["net_id"], json!(id));
    os.nova_refuses(
        "POST",
        &format!("/compute/v2.1/servers/{srv}/os-interface"),
        Some(json!({"interfaceAttachment": {"net_id": id}})),
        409,
        "hot-plug",
    );
    os.nova_refuses(
        "DELETE",
        &format!("/compute/v2.1/servers/{srv}/os-interface/{pid}"),
        None,
        409,
        "unplug",
    );
    os.nova_refuses(
        "GET",
        &format!("/compute/v2.1/servers/{srv}/os-interface/nope"),
        None,
        404,
        "nope",
    );
    os.neutron_refuses(
        "POST",
        "/network/v2.0/ports",
        json!({"port": {"network_id": id}}),
        400,
        "cannot make a port alone",
    );
    os.neutron_refuses(
        "DELETE",
        &format!("/network/v2.0/ports/{pid}"),
        json!({}),
        409,
        "cannot unplug",
    );
    os.neutron_refuses(
        "PUT",
        &format!("/network/v2.0/ports/{pid}"),
        json!({"port": {"mac_address": "02:00:00:00:00:01"}}),
        400,
        "only admin_state_up",
    );
    // While the server has its NIC, the subnet and network stay.
    os.neutron_refuses(
        "DELETE",
        &format!("{subnets}/{sid}"),
        json!({}),
        409,
        "servers use it",
    );
    os.neutron_refuses(
        "DELETE",
        &format!("{nets}/{id}"),
        json!({}),
        409,
        "in use by",
    );
    k.delete_server(srv);

    // The one security group.
    let groups = os.ok("GET", "/network/v2.0/security-groups", None)["security_groups"].clone();
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups}");
    assert_eq!(groups[0]["name"], "default");
    let gid = groups[0]["id"].as_str().unwrap();
    assert_eq!(port["security_groups"], json!([gid]));
    let rules =
        os.ok("GET", "/network/v2.0/security-group-rules", None)["security_group_rules"].clone();
    assert_eq!(rules.as_array().unwrap().len(), 2, "{rules}");
    os.ok("GET", &format!("/network/v2.0/security-groups/{gid}"), None);
    os.neutron_refuses(
        "POST",
        "/network/v2.0/security-groups",
        json!({"security_group": {"name": "web"}}),
        400,
        "one security group",
    );
    os.neutron_refuses(
        "POST",
        "/network/v2.0/security-group-rules",
        json!({"security_group_rule": {}}),
        400,
        "cannot be changed",
    );

    // The subnet goes (the gateway address with it), comes back, and the
    // network goes with its bridge; the user's bridge stays.
    assert_eq!(os.call("DELETE", &format!("{subnets}/{sid}"), None).0, 204);
    assert!(!ns
        .ip(&["-4", "addr", "show", "dev", &bridge])
        .contains("10.71.0.1"));
    assert_eq!(
        os.ok("GET", &format!("{nets}/{id}"), None)["network"]["subnets"],
        json!([])
    );
    os.ok(
        "POST",
        subnets,
        Some(json!({"subnet": {"network_id": id, "cidr": "10.73.0.0/24"}})),
    );
    assert_eq!(
        k.json("GET", "/v1/networks/t1", None)["cidr"],
        "10.73.0.0/24"
    );
    assert_eq!(os.call("DELETE", &format!("{nets}/{id}"), None).0, 204);
    assert!(ns.link(&bridge).is_none());
    assert_eq!(
        os.call(
            "DELETE",
            &format!("{nets}/{}", p["id"].as_str().unwrap()),
            None
        )
        .0,
        204
    );
    assert!(ns.link("uplink0").is_some());
    assert_eq!(os.call("GET", &format!("{nets}/{id}"), None).0, 404);
}

#[test]
fn nova_flavors_and_extra_specs() {
    let ns = NetNs::with_peer("osflv");
    let k = kilnd(&ns);
    let os = Os::new(ns.name());
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
