//! Neutron's network and subnet create bodies as Kiln's requests: what a
//! Kiln network can be is taken, what it cannot is a message for a 400.
//!
//! A network made through Neutron gets a bridge of its own (`kn` and 12
//! hex digits; Neutron names need not be interface names) and mode
//! `isolated`, as a tenant network without a router: its guests reach
//! each other, the host's DHCP and metadata, nothing else.
//! `router:external: true` makes it `nat` (the host routes it out);
//! `provider:physical_network` names a host bridge to use instead of a
//! new one (a flat provider network, mode `bridged`).

use kiln_api::compute::{NetworkCreate, NetworkMode};
use serde_json::{Map, Value};

use crate::networks::subnet::SubnetRequest;

/// A member `v` that asks for nothing: absent, null, false, empty.
fn is_nothing(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) | Value::Bool(true) => false,
    }
}

fn string(m: &Map<String, Value>, k: &str) -> Result<Option<String>, String> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{k} must be a string")),
    }
}

fn boolean(m: &Map<String, Value>, k: &str) -> Result<Option<bool>, String> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("{k} must be a boolean")),
    }
}

/// Members every create may carry: its project must be this one.
fn check_project(m: &Map<String, Value>, project_id: &str) -> Result<(), String> {
    for k in ["project_id", "tenant_id"] {
        if let Some(p) = string(m, k)? {
            if p != project_id {
                return Err(format!("{k} {p:?}: Kiln has one project, {project_id}"));
            }
        }
    }
    Ok(())
}

/// `POST /v2.0/networks`'s `network`; `bridge_suffix` (12 hex digits)
/// names a new bridge.
pub fn network_create(
    m: &Map<String, Value>,
    project_id: &str,
    bridge_suffix: &str,
) -> Result<NetworkCreate, String> {
    check_project(m, project_id)?;
    for (k, v) in m {
        let ok = match k.as_str() {
            "name"
            | "mtu"
            | "router:external"
            | "provider:physical_network"
            | "project_id"
            | "tenant_id"
            | "shared" => true,
            "admin_state_up" | "port_security_enabled" => v.as_bool() != Some(false),
            "provider:network_type" => v.is_null() || v.as_str() == Some("flat"),
            "availability_zone_hints" => {
                is_nothing(v) || v.as_array().is_some_and(|a| a.iter().all(|z| z == "nova"))
            }
            _ => is_nothing(v),
        };
        if !ok {
            let why = match k.as_str() {
                "description" => "Kiln's networks have no description",
                _ => {
                    "its networks are flat bridges, always up, with port security on every \
                     port, in one project"
                }
            };
            return Err(format!("{k} {v} is not supported by Kiln: {why}"));
        }
    }
    let name = string(m, "name")?
        .filter(|n| !n.is_empty())
        .ok_or("a network needs a name in Kiln")?;
    let mtu = match m.get("mtu") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or("mtu must be a number")?,
        ),
    };
    let external = boolean(m, "router:external")?.unwrap_or(false);
    let physical = string(m, "provider:physical_network")?;
    let mode = match (external, &physical) {
        (true, _) => NetworkMode::Nat,
        (false, Some(_)) => NetworkMode::Bridged,
        (false, None) => NetworkMode::Isolated,
    };
    Ok(NetworkCreate {
        name,
        bridge: Some(physical.unwrap_or_else(|| format!("kn{bridge_suffix}"))),
        mtu,
        cidr: None,
        gateway: None,
        dhcp: None,
        dns_nameservers: Vec::new(),
        mode: Some(mode),
    })
}

/// `POST /v2.0/subnets`'s `subnet`: (the network's id, the request).
pub fn subnet_create(
    m: &Map<String, Value>,
    project_id: &str,
) -> Result<(String, SubnetRequest), String> {
    check_project(m, project_id)?;
    for (k, v) in m {
        let ok = match k.as_str() {
            "name" | "network_id" | "cidr" | "gateway_ip" | "enable_dhcp" | "dns_nameservers"
            | "project_id" | "tenant_id" => true,
            "ip_version" => v.as_u64() == Some(4) || v.as_str() == Some("4"),
            _ => is_nothing(v),
        };
        if !ok {
            let why = match k.as_str() {
                "ip_version" => "Kiln's subnets are IPv4",
                "allocation_pools" => "Kiln hands out every host address but the gateway",
                "subnetpool_id" | "use_default_subnet_pool" | "prefixlen" => {
                    "Kiln has no subnet pools: give the cidr"
                }
                "description" => "Kiln's subnets have no description",
                _ => "Kiln's subnets have a cidr, a gateway, DHCP and name servers only",
            };
            return Err(format!("{k} {v} is not supported: {why}"));
        }
    }
    let network = string(m, "network_id")?.ok_or("a subnet needs its network_id")?;
    let cidr = string(m, "cidr")?.ok_or("a subnet needs a cidr")?;
    let gateway = match m.get("gateway_ip") {
        Some(Value::Null) => {
            return Err("gateway_ip null is not supported: a Kiln subnet has a gateway".into())
        }
        _ => string(m, "gateway_ip")?,
    };
    let dns_nameservers = match m.get("dns_nameservers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|d| d.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("dns_nameservers must be a list of addresses")?,
        Some(_) => return Err("dns_nameservers must be a list of addresses".into()),
    };
    Ok((
        network,
        SubnetRequest {
            cidr,
            gateway,
            dns_nameservers,
            dhcp: boolean(m, "enable_dhcp")?.unwrap_or(true),
            name: string(m, "name")?.filter(|n| !n.is_empty()),
        },
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn networks_map_onto_kiln_modes() {
        let n = network_create(
            &obj(json!({"name": "a", "admin_state_up": true})),
            "p",
            "0a",
        )
        .unwrap();
        assert_eq!(
            (n.bridge.as_deref(), n.mode),
            (Some("kn0a"), Some(NetworkMode::Isolated))
        );
        let n = network_create(
            &obj(json!({"name": "a", "router:external": true})),
            "p",
            "0a",
        )
        .unwrap();
        assert_eq!(n.mode, Some(NetworkMode::Nat));
        let n = network_create(
            &obj(json!({"name": "a", "provider:network_type": "flat",
                        "provider:physical_network": "br0"})),
            "p",
            "0a",
        )
        .unwrap();
        assert_eq!(
            (n.bridge.as_deref(), n.mode),
            (Some("br0"), Some(NetworkMode::Bridged))
        );
        for (body, why) in [
            (
                json!({"name": "a", "provider:network_type": "vxlan"}),
                "vxlan",
            ),
            (
                json!({"name": "a", "admin_state_up": false}),
                "admin_state_up",
            ),
            (json!({"name": "a", "project_id": "q"}), "one project"),
            (json!({"name": "a", "qos_policy_id": "x"}), "qos_policy_id"),
            (json!({"name": "a", "description": "d"}), "description"),
            (json!({"admin_state_up": true}), "name"),
        ] {
            let e = network_create(&obj(body.clone()), "p", "0a").unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
    }

    #[test]
    fn subnets_are_one_ipv4_cidr() {
        let (net, r) = subnet_create(
            &obj(
                json!({"network_id": "n", "cidr": "10.1.0.0/24", "ip_version": 4,
                        "name": "s", "enable_dhcp": false, "dns_nameservers": ["10.1.0.53"]}),
            ),
            "p",
        )
        .unwrap();
        assert_eq!(
            (net.as_str(), r.cidr.as_str(), r.dhcp),
            ("n", "10.1.0.0/24", false)
        );
        assert_eq!((r.name.as_deref(), r.dns_nameservers.len()), (Some("s"), 1));
        for (body, why) in [
            (
                json!({"network_id": "n", "cidr": "fd00::/64", "ip_version": 6}),
                "IPv4",
            ),
            (
                json!({"network_id": "n", "subnetpool_id": "x", "ip_version": 4}),
                "pools",
            ),
            (
                json!({"network_id": "n", "cidr": "10.1.0.0/24", "gateway_ip": null}),
                "gateway",
            ),
            (
                json!({"network_id": "n", "cidr": "10.1.0.0/24",
                       "allocation_pools": [{"start": "10.1.0.9", "end": "10.1.0.20"}]}),
                "allocation_pools",
            ),
            (json!({"cidr": "10.1.0.0/24"}), "network_id"),
        ] {
            let e = subnet_create(&obj(body.clone()), "p")
                .map(|_| ())
                .unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
    }
}
