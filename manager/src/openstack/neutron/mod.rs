//! Neutron v2.0's view of Kiln's networks: each network, and its subnet
//! when it has a `cidr` (one per network, with an id derived from the
//! network's); its servers' NICs as ports and Kiln's isolation as the one
//! `default` security group (`ports.rs`, nothing there pretends to
//! more); Neutron's create bodies as Kiln's requests (`requests.rs`).

pub mod ports;
pub mod requests;

use kiln_api::compute::{Network, NetworkMode};
use serde_json::{json, Value};

/// The id of a network's subnet.
pub fn subnet_id(network_id: &str) -> String {
    super::derived_id(&format!("subnet:{network_id}"))
}

pub fn network(n: &Network, project_id: &str) -> Value {
    let subnets: Vec<String> = n.cidr.iter().map(|_| subnet_id(&n.id)).collect();
    json!({
        "id": n.id,
        "name": n.name,
        "status": "ACTIVE",
        "admin_state_up": true,
        "subnets": subnets,
        "shared": true,
        "tenant_id": project_id,
        "project_id": project_id,
        "mtu": n.mtu,
        // Kiln's `nat` networks are the ones that reach out (through the
        // host); `isolated` and `bridged` ones are tenant and provider
        // networks.
        "router:external": n.mode == NetworkMode::Nat,
        "port_security_enabled": true,
        "provider:network_type": "flat",
        "provider:physical_network": n.bridge,
        "availability_zones": ["nova"],
        "availability_zone_hints": [],
        "ipv4_address_scope": null,
        "ipv6_address_scope": null,
        "is_default": n.name == "default",
        "description": format!("Kiln {} network on bridge {}", n.mode.as_str(), n.bridge),
        "tags": [],
        "created_at": n.created_at,
        "updated_at": n.created_at,
        "revision_number": 0,
    })
}

/// The subnet of a network with a `cidr`, named `name` (Neutron's
/// name for it) or else as its network.
pub fn subnet(n: &Network, project_id: &str, name: Option<&str>) -> Option<Value> {
    let cidr = n.cidr.as_ref()?;
    Some(json!({
        "id": subnet_id(&n.id),
        "name": name.unwrap_or(&n.name),
        "network_id": n.id,
        "tenant_id": project_id,
        "project_id": project_id,
        "ip_version": 4,
        "cidr": cidr,
        "gateway_ip": n.gateway,
        "enable_dhcp": n.dhcp,
        "dns_nameservers": n.dns_nameservers,
        "allocation_pools": allocation_pools(cidr, n.gateway.as_deref()),
        "host_routes": [],
        "ipv6_address_mode": null,
        "ipv6_ra_mode": null,
        "subnetpool_id": null,
        "description": "",
        "tags": [],
        "created_at": n.created_at,
        "updated_at": n.created_at,
        "revision_number": 0,
    }))
}

/// The addresses Kiln gives NICs of a subnet: every host address but
/// the gateway, as Neutron's pools (one or two ranges).
pub fn allocation_pools(cidr: &str, gateway: Option<&str>) -> Value {
    use std::net::Ipv4Addr;
    let Ok(sub) = crate::ipam::Subnet::parse(cidr) else {
        return json!([]);
    };
    let first = u32::from(sub.first_host());
    let last = first + sub.pool_size();
    let gw = gateway
        .and_then(|g| g.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .filter(|g| (first..=last).contains(g));
    let ranges: Vec<(u32, u32)> = match gw {
        None => vec![(first, last)],
        Some(g) => [
            (g > first).then(|| (first, g - 1)),
            (g < last).then(|| (g + 1, last)),
        ]
        .into_iter()
        .flatten()
        .collect(),
    };
    json!(ranges
        .iter()
        .map(|(a, b)| json!({"start": Ipv4Addr::from(*a).to_string(),
                             "end": Ipv4Addr::from(*b).to_string()}))
        .collect::<Vec<_>>())
}

/// Whether a Neutron list entry passes the query's filters: every filter
/// on a member it has must equal it as a string (`name=lan`,
/// `network_id=...`, `admin_state_up=true`); filters on members it lacks
/// (`fields`, `limit`, ...) are not filters.
pub fn matches(v: &Value, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, want)| match v.get(k) {
        None => true,
        Some(Value::String(s)) => s == want,
        Some(Value::Bool(b)) => b.to_string() == want.to_ascii_lowercase(),
        Some(Value::Number(n)) => n.to_string() == *want,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(want.as_str())),
        Some(_) => true,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn pools_are_the_hosts_but_the_gateway() {
        let pools = super::allocation_pools;
        assert_eq!(
            pools("10.1.0.0/24", Some("10.1.0.1")),
            json!([{"start": "10.1.0.2", "end": "10.1.0.254"}])
        );
        assert_eq!(
            pools("10.1.0.0/24", Some("10.1.0.254")),
            json!([{"start": "10.1.0.1", "end": "10.1.0.253"}])
        );
        assert_eq!(
            pools("10.1.0.0/24", Some("10.1.0.9")),
            json!([{"start": "10.1.0.1", "end": "10.1.0.8"},
                   {"start": "10.1.0.10", "end": "10.1.0.254"}])
        );
        assert_eq!(
            pools("10.1.0.0/30", Some("10.1.0.1")),
            json!([{"start": "10.1.0.2", "end": "10.1.0.2"}])
        );
    }
}
