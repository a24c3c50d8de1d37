//! Neutron's networks, subnets, ports and security groups and Nova's
//! `os-interface` on a kilnd (its TCP listener in a network namespace of
//! this test's own, no VMM) through plain HTTP with a Keystone token:
//! what a Kiln network can be is made and shown in Neutron's shape, on the
//! host too (bridges, the gateway address); what it cannot is refused
//! with a 4xx in the service's error shape that says why, and nothing is
//! half made.

mod common;

use common::api::kernel_image;
use common::openstack::{kilnd, Os};
use kiln_tests::netns::NetNs;
use serde_json::{json, Value};

#[test]
fn neutron_networks_subnets_ports() {
    let ns = NetNs::with_peer("osnet");
    let k = kilnd(&ns, 18777);
    let os = Os::new(ns.name(), 18777);
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
    assert_eq!(
        s["allocation_pools"],
        json!([{"start": "10.71.0.2", "end": "10.71.0.254"}])
    );
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
    // Nova's detail view (typed, openstack/nova/server_view.rs) at the
    // oldest and newest microversions: what each adds, and the address.
    let (c, old) = os.get_at("2.1", "/compute/v2.1/servers/detail");
    assert_eq!(c, 200, "{old}");
    let s1 = &old["servers"][0];
    assert_eq!(s1["id"], json!(srv));
    assert_eq!(s1["flavor"]["id"], json!("k1.probe"), "{s1}");
    assert!(s1["flavor"]["links"][0]["href"]
        .as_str()
        .unwrap()
        .ends_with("/flavors/k1.probe"));
    assert!(
        s1.get("OS-EXT-SRV-ATTR:hostname").is_none() && s1.get("locked").is_none(),
        "{s1}"
    );
    let addrs = s1["addresses"].as_object().unwrap();
    let addr = &addrs.values().next().unwrap()[0];
    assert_eq!(
        (&addr["addr"], &addr["version"]),
        (&json!("10.71.0.7"), &json!(4)),
        "{s1}"
    );
    assert_eq!(s1["os-extended-volumes:volumes_attached"], json!([]));
    assert_eq!(s1["security_groups"], json!([{"name": "default"}]));
    let (c, new) = os.get_at("2.100", "/compute/v2.1/servers/detail");
    assert_eq!(c, 200, "{new}");
    let s2 = &new["servers"][0];
    assert_eq!(s2["flavor"]["original_name"], json!("k1.probe"), "{s2}");
    assert_eq!(s2["flavor"]["vcpus"], json!(1));
    assert_eq!(
        (&s2["locked"], &s2["description"], &s2["tags"]),
        (&json!(false), &Value::Null, &json!([]))
    );
    assert!(
        s2.as_object().unwrap().contains_key("description"),
        "present and null: {s2}"
    );
    assert_eq!(s2["scheduler_hints"], json!({}));
    assert!(s2["OS-EXT-SRV-ATTR:hostname"].is_string(), "{s2}");
    // Nova's changes-since: servers updated at or after it.
    let since = |t: &str| {
        os.call(
            "GET",
            &format!("/compute/v2.1/servers?changes-since={t}"),
            None,
        )
    };
    assert_eq!(
        since("2000-01-01T00:00:00Z").1["servers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(since("2999-01-01T00:00:00Z").1["servers"], json!([]));
    assert_eq!(since("soon").0, 400);
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
