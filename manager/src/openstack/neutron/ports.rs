//! Neutron's ports and security groups as Kiln has them: a port is one
//! NIC of a server (made and deleted with it; its id derived from the
//! server's and the NIC's place, so Nova's `os-interface` names the same
//! port), and the one security group, `default`, describes the isolation
//! kilnd's firewall enforces on every port (`crate::networks::firewall`):
//! it cannot be edited, and no other group exists.

use kiln_api::compute::{LinkState, Nic, Server, ServerStatus};
use serde_json::{json, Value};

/// The id of NIC `index` of server `server` as a port.
pub fn port_id(server: &str, index: u32) -> String {
    super::super::derived_id(&format!("port:{server}:{index}"))
}

/// The id of the `default` security group of `project_id`.
pub fn security_group_id(project_id: &str) -> String {
    super::super::derived_id(&format!("security-group:default:{project_id}"))
}

/// `ACTIVE` while the server's VMM runs with the NIC's link up, else
/// `DOWN` (Neutron's port status).
pub fn port_status(s: &Server, n: &Nic) -> &'static str {
    let running = s.pid.is_some()
        && matches!(
            s.status,
            ServerStatus::Active | ServerStatus::Paused | ServerStatus::Reboot
        );
    if running && n.link == LinkState::Up {
        "ACTIVE"
    } else {
        "DOWN"
    }
}

/// The fixed IP of a NIC as Neutron lists it.
pub fn fixed_ips(n: &Nic) -> Value {
    match &n.ip {
        Some(ip) => json!([{"subnet_id": super::subnet_id(&n.network_id), "ip_address": ip}]),
        None => json!([]),
    }
}

/// NIC `n` of server `s` as a port.
pub fn port(s: &Server, n: &Nic, project_id: &str, host: &str) -> Value {
    json!({
        "id": port_id(&s.id, n.index),
        "name": "",
        "network_id": n.network_id,
        "tenant_id": project_id,
        "project_id": project_id,
        "mac_address": n.mac,
        "admin_state_up": n.link == LinkState::Up,
        "status": port_status(s, n),
        "device_id": s.id,
        "device_owner": "compute:nova",
        "fixed_ips": fixed_ips(n),
        "allowed_address_pairs": [],
        "extra_dhcp_opts": [],
        "security_groups": [security_group_id(project_id)],
        "port_security_enabled": true,
        "binding:host_id": host,
        "binding:vif_type": "tap",
        "binding:vnic_type": "normal",
        "binding:vif_details": {"tap": n.tap},
        "binding:profile": {},
        "dns_name": "",
        "dns_assignment": [],
        "description": format!("NIC {} of server {}", n.index, s.name),
        "tags": [],
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "revision_number": 0,
    })
}

/// The `default` security group, with rules saying what kilnd enforces
/// on every port; its description says the rest.
pub fn security_group(project_id: &str, created_at: &str) -> Value {
    let id = security_group_id(project_id);
    let rule = |n: u32, direction: &str, remote_group: Option<&str>, remote_ip: Option<&str>| {
        json!({
            "id": super::super::derived_id(&format!("security-group-rule:{n}:{project_id}")),
            "security_group_id": id,
            "tenant_id": project_id,
            "project_id": project_id,
            "direction": direction,
            "ethertype": "IPv4",
            "protocol": null,
            "port_range_min": null,
            "port_range_max": null,
            "remote_group_id": remote_group,
            "remote_ip_prefix": remote_ip,
            "remote_address_group_id": null,
            "normalized_cidr": remote_ip,
            "description": "",
            "tags": [],
            "created_at": created_at,
            "updated_at": created_at,
            "revision_number": 0,
        })
    };
    json!({
        "id": id,
        "name": "default",
        "stateful": true,
        "shared": false,
        "tenant_id": project_id,
        "project_id": project_id,
        "description": DESCRIPTION,
        "security_group_rules": [
            rule(1, "ingress", Some(&id), None),
            rule(2, "egress", None, Some("0.0.0.0/0")),
        ],
        "tags": [],
        "created_at": created_at,
        "updated_at": created_at,
        "revision_number": 0,
    })
}

/// What the `default` group is, truthfully.
pub const DESCRIPTION: &str = "Kiln's fixed isolation, on every port and not editable: \
    a port sends only from its own MAC and IP (ARP too); ports of one network reach each \
    other freely; nat networks reach out masqueraded as the host and take nothing in, \
    isolated networks forward nothing in or out, bridged networks pass what their uplink \
    carries; networks never reach each other; guests reach the host only for DHCP and \
    metadata. No other group exists.";
