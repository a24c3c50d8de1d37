//! The OpenStack tree, as Nova's `nova/api/metadata/base.py` and
//! `nova/virt/netutils.py` render it: versions, `meta_data.json`,
//! `network_data.json`, the vendor data and the version listings.

use std::net::Ipv4Addr;

use base64ct::Encoding;
use serde_json::{json, Map, Value};

use super::Facts;

/// Nova's OpenStack metadata versions, oldest first; each adds what its
/// name says below.
pub const VERSIONS: &[&str] = &[
    "2012-08-10", // FOLSOM: meta_data.json, user_data
    GRIZZLY,      // random_seed, password
    HAVANA,       // vendor_data.json
    LIBERTY,      // network_data.json, project_id
    NEWTON_ONE,   // devices
    NEWTON_TWO,   // vendor_data2.json
    "2017-02-22", // OCATA: vlans in devices
    "2018-08-27", // ROCKY: vf_trusted in devices
    VICTORIA,     // dedicated_cpus
];
const GRIZZLY: &str = "2013-04-04";
const HAVANA: &str = "2013-10-17";
const LIBERTY: &str = "2015-10-15";
const NEWTON_ONE: &str = "2016-06-30";
const NEWTON_TWO: &str = "2016-10-06";
const VICTORIA: &str = "2020-10-14";

/// Whether `v` is a version this tree answers (`latest` included).
pub fn known(v: &str) -> bool {
    v == "latest" || VERSIONS.contains(&v)
}

/// Whether version `v` (known) has what `since` added.
fn since(v: &str, since: &str) -> bool {
    v == "latest" || v >= since
}

/// `GET /openstack`: the versions, then `latest`.
pub fn version_list() -> String {
    let mut v: Vec<&str> = VERSIONS.to_vec();
    v.push("latest");
    v.join("\n")
}

/// `GET /openstack/<v>`: the files of version `v`.
pub fn listing(f: &Facts, v: &str) -> String {
    let mut out = vec!["meta_data.json"];
    if f.user_data.is_some() {
        out.push("user_data");
    }
    if since(v, GRIZZLY) {
        out.push("password");
    }
    if since(v, HAVANA) {
        out.push("vendor_data.json");
    }
    if since(v, LIBERTY) {
        out.push("network_data.json");
    }
    if since(v, NEWTON_TWO) {
        out.push("vendor_data2.json");
    }
    out.join("\n")
}

/// Whether version `v` has file `name` (for a server with or without
/// user data).
pub fn has_file(f: &Facts, v: &str, name: &str) -> bool {
    listing(f, v).split('\n').any(|n| n == name)
}

/// `meta_data.json` of version `v`.
pub fn meta_data(f: &Facts, v: &str) -> Value {
    let mut m = Map::new();
    m.insert("uuid".into(), json!(f.id));
    if !f.meta.is_empty() {
        m.insert("meta".into(), json!(f.meta));
    }
    if let Some(p) = &f.admin_pass {
        m.insert("admin_pass".into(), json!(p));
    }
    if let Some(k) = &f.key {
        m.insert("public_keys".into(), json!({ &k.name: k.public_key }));
        m.insert(
            "keys".into(),
            json!([{"name": k.name, "type": k.kind, "data": k.public_key}]),
        );
    }
    m.insert("hostname".into(), json!(f.hostname));
    m.insert("name".into(), json!(f.name));
    m.insert("launch_index".into(), json!(f.launch_index));
    m.insert("availability_zone".into(), json!(f.availability_zone));
    if since(v, GRIZZLY) {
        if let Some(seed) = &f.random_seed {
            let b64 = base64ct::Base64::encode_string(seed);
            m.insert("random_seed".into(), json!(b64));
        }
    }
    if since(v, LIBERTY) {
        m.insert("project_id".into(), json!(f.project_id));
    }
    if since(v, NEWTON_ONE) {
        m.insert("devices".into(), json!([]));
    }
    if since(v, VICTORIA) {
        m.insert("dedicated_cpus".into(), json!([]));
    }
    Value::Object(m)
}

/// `network_data.json`: a link per NIC; a network per NIC with an
/// address (`ipv4_dhcp` where the network runs DHCP, else `ipv4` with the
/// address, mask, default route and DNS); the DNS servers of all.
pub fn network_data(f: &Facts) -> Value {
    let mut links = Vec::new();
    let mut networks = Vec::new();
    let mut services: Vec<Value> = Vec::new();
    for (i, nic) in f.nics.iter().enumerate() {
        links.push(json!({
            "id": nic.link,
            "vif_id": format!("{}-{i}", f.id),
            "type": "bridge",
            "mtu": nic.mtu,
            "ethernet_mac_address": nic.mac,
        }));
        let Some(ip) = nic.ip else { continue };
        let id = format!("network{}", networks.len());
        let dns: Vec<Value> = nic
            .dns
            .iter()
            .map(|d| json!({"type": "dns", "address": d.to_string()}))
            .collect();
        for d in &dns {
            if !services.contains(d) {
                services.push(d.clone());
            }
        }
        if nic.dhcp {
            networks.push(json!({
                "id": id,
                "type": "ipv4_dhcp",
                "link": nic.link,
                "network_id": nic.network_id,
            }));
            continue;
        }
        let routes: Vec<Value> = nic
            .gateway
            .iter()
            .map(|g| json!({"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": g.to_string()}))
            .collect();
        let mut n = json!({
            "id": id,
            "type": "ipv4",
            "link": nic.link,
            "ip_address": ip.to_string(),
            "netmask": netmask(nic.prefix).to_string(),
            "routes": routes,
            "network_id": nic.network_id,
        });
        if !dns.is_empty() {
            n["services"] = Value::Array(dns);
        }
        networks.push(n);
    }
    json!({"links": links, "networks": networks, "services": services})
}

/// The vendor data (`vendor_data.json`, `vendor_data2.json`): Kiln has
/// no vendor data driver, so both are `{}`.
pub fn vendor_data() -> Value {
    json!({})
}

/// The mask of a prefix length (`24` → `255.255.255.0`).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}
