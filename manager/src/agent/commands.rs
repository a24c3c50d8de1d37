//! The commands kilnd sends a guest agent, and what their answers become.
//! The guest writes the answers: each field is checked for its type, and
//! an address that is not one is left out rather than passed on.

use std::net::IpAddr;
use std::time::Duration;

use kiln_api::compute::{GuestAddress, GuestAddressType, GuestInfo, GuestInterface, GuestOs};
use serde_json::Value;
use tokio::time::Instant;

use super::{AgentError, Session};

/// `guest-info`, `guest-get-osinfo`, `guest-get-host-name` and
/// `guest-network-get-interfaces` in one session. A command the agent
/// refuses (an older agent without it, one disabled by its
/// configuration) leaves its part empty; silence or garbage fails the
/// whole call.
pub async fn guest_info(s: &mut Session) -> Result<GuestInfo, AgentError> {
    let info = optional(s.call("guest-info", None).await)?;
    let os = optional(s.call("guest-get-osinfo", None).await)?;
    let host = optional(s.call("guest-get-host-name", None).await)?;
    let ifaces = optional(s.call("guest-network-get-interfaces", None).await)?;
    Ok(GuestInfo {
        agent_version: info.as_ref().and_then(|v| string(v, "version")),
        os: os.as_ref().map(osinfo).unwrap_or_default(),
        hostname: host.as_ref().and_then(|v| string(v, "host-name")),
        interfaces: ifaces.as_ref().map(interfaces).unwrap_or_default(),
    })
}

/// `guest-shutdown` with mode `powerdown`, then up to `linger` for an
/// error answer (see [`Session::linger`]).
pub async fn shutdown(s: &mut Session, linger: Duration) -> Result<(), AgentError> {
    s.set_deadline(Instant::now() + linger);
    s.send(
        "guest-shutdown",
        Some(serde_json::json!({ "mode": "powerdown" })),
    )
    .await?;
    s.linger("guest-shutdown", linger).await
}

/// A refused command is `None`; any other error stays one.
fn optional(r: Result<Value, AgentError>) -> Result<Option<Value>, AgentError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(AgentError::Guest { command, desc, .. }) => {
            tracing::debug!(command, desc, "guest agent refused a command");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn string(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// `guest-get-osinfo`'s answer (QAPI `GuestOSInfo`).
pub fn osinfo(v: &Value) -> GuestOs {
    GuestOs {
        name: string(v, "name"),
        pretty_name: string(v, "pretty-name"),
        id: string(v, "id"),
        version: string(v, "version"),
        version_id: string(v, "version-id"),
        variant: string(v, "variant"),
        variant_id: string(v, "variant-id"),
        kernel_release: string(v, "kernel-release"),
        kernel_version: string(v, "kernel-version"),
        machine: string(v, "machine"),
    }
}

/// `guest-network-get-interfaces`' answer (QAPI `GuestNetworkInterface`
/// list): names, MACs (lowercased) and addresses whose IP parses and
/// whose prefix fits it.
pub fn interfaces(v: &Value) -> Vec<GuestInterface> {
    let Some(list) = v.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|i| {
            let name = string(i, "name")?;
            let mac = string(i, "hardware-address").map(|m| m.to_ascii_lowercase());
            let addresses = i
                .get("ip-addresses")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(address).collect())
                .unwrap_or_default();
            Some(GuestInterface {
                name,
                mac,
                addresses,
            })
        })
        .collect()
}

fn address(a: &Value) -> Option<GuestAddress> {
    // A Windows agent may append a scope (`fe80::1%3`).
    let text = string(a, "ip-address")?;
    let ip: IpAddr = text.split('%').next()?.parse().ok()?;
    let prefix = u8::try_from(a.get("prefix")?.as_u64()?).ok()?;
    let kind = match ip {
        IpAddr::V4(_) if prefix <= 32 => GuestAddressType::Ipv4,
        IpAddr::V6(_) if prefix <= 128 => GuestAddressType::Ipv6,
        _ => return None,
    };
    Some(GuestAddress { ip, prefix, kind })
}
