//! Networks and NICs in `kilnd`'s REST API: [`Network`] with its subnet
//! and mode, [`NicRequest`] (a server create's `networks` entries, with an
//! optional fixed address), [`Nic`]. Re-exported by [`super`].

use serde::{Deserialize, Serialize};

use super::LinkState;

/// A network: a Linux bridge that servers' NICs (taps) are attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// The bridge's interface name.
    pub bridge: String,
    pub mtu: u32,
    /// kilnd created the bridge (and deletes it with the network); false
    /// when the bridge existed already and is only used.
    pub managed: bool,
    pub created_at: String,
    /// Ids of the servers (not DELETED) with a NIC on it.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Its IPv4 subnet (`10.77.0.0/24`); absent: the network is L2 only
    /// and its NICs get no address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// The subnet's gateway address (with `cidr` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Whether guests are to get their address by DHCP (recorded; kilnd
    /// runs no DHCP server yet).
    #[serde(default)]
    pub dhcp: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_nameservers: Vec<String>,
    #[serde(default)]
    pub mode: NetworkMode,
}

/// How a network reaches beyond its bridge, enforced by kilnd's nftables
/// firewall (`manager/src/networks/firewall/`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The host is the gateway; guests reach out masqueraded as the host.
    Nat,
    /// The host is the gateway; nothing is forwarded in or out.
    Isolated,
    /// The bridge is the guests' way out, as it is wired (the default): no
    /// NAT, only per-port anti-spoofing.
    #[default]
    Bridged,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Nat => "nat",
            NetworkMode::Isolated => "isolated",
            NetworkMode::Bridged => "bridged",
        }
    }
}

/// `POST /v1/networks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreate {
    pub name: String,
    /// The bridge's interface name (1 to 15 bytes of `A-Z a-z 0-9 _ . -`);
    /// the network's name when absent. Created if missing, else used.
    #[serde(default)]
    pub bridge: Option<String>,
    /// MTU of a bridge kilnd creates (68 to 65535, default 1500); must match
    /// an existing bridge's when given.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// An IPv4 subnet, `A.B.C.D/N` with N from 8 to 30 and no host bits:
    /// each NIC on the network then gets a fixed address from it. Refused
    /// if it overlaps another network's or a host route (other than the
    /// default route). Absent: L2 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// A host address of `cidr` (default: its first host); never given
    /// to a NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Default true; recorded for the DHCP server to come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<bool>,
    /// IPv4 addresses, recorded for DHCP and the config drive to come.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_nameservers: Vec<String>,
    /// Default `bridged` (see [`NetworkMode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<NetworkMode>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkList {
    pub networks: Vec<Network>,
}

/// One NIC asked for in [`super::ServerCreate::networks`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicRequest {
    /// Network id or name.
    pub network: String,
    /// `aa:bb:cc:dd:ee:ff`, unicast; generated (locally administered,
    /// stable for the server and NIC) when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// The NIC's link as the guest first sees it (`up` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkState>,
    /// Its fixed IPv4 address, on a network with a `cidr`: a free host
    /// address of the subnet other than the gateway; the lowest free one
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// A server's NIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Its place among the server's NICs (PCI order), from 0: the
    /// `{index}` of `/v1/servers/{id}/nics/{index}`.
    #[serde(default)]
    pub index: u32,
    pub network_id: String,
    pub network: String,
    pub mac: String,
    /// The host tap device; it exists while the server's kiln-vmm runs.
    pub tap: String,
    /// Its link as the guest sees it (Neutron's port `admin_state_up`,
    /// libvirt's `domif-setlink`): `down` is a cable pulled out, the guest
    /// sees no carrier and no frame passes either way. Kept across stop,
    /// start, reboots and kilnd restarts.
    #[serde(default)]
    pub link: LinkState,
    /// Its fixed IPv4 address (networks with a `cidr` only), held until
    /// the server is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `PUT /v1/servers/{id}/nics/{index}`: change a NIC of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicUpdate {
    pub link: LinkState,
}

/// `GET /v1/servers/{id}/nics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicList {
    pub nics: Vec<Nic>,
}
