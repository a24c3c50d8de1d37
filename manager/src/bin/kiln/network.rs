//! `kiln network ...`, the `--network NAME[:IP][,mac=MAC][,link=down]` value of
//! `kiln server create`, and `kiln server link` (a NIC's link).

use clap::Subcommand;
use kiln_api::compute::{LinkState, Network, NetworkCreate, NetworkList, NetworkMode, NicRequest};

use crate::tables::{networks, nics};
use crate::{enc, show, Api};

#[derive(Subcommand)]
pub enum NetworkCmd {
    List,
    Show {
        network: String,
    },
    /// A network on a Linux bridge: created (and owned) by kilnd if
    /// missing, else used as it is.
    Create {
        name: String,
        /// The bridge's interface name; the network's name by default.
        #[arg(long)]
        bridge: Option<String>,
        /// MTU of a bridge kilnd creates (default 1500).
        #[arg(long)]
        mtu: Option<u32>,
        /// IPv4 subnet (`10.77.0.0/24`): each NIC gets a fixed address
        /// from it. Without it the network is L2 only.
        #[arg(long)]
        cidr: Option<String>,
        /// The subnet's gateway (default: its first host).
        #[arg(long)]
        gateway: Option<String>,
        /// nat, isolated or bridged (default); recorded only for now.
        #[arg(long, value_parser = parse_mode)]
        mode: Option<NetworkMode>,
        /// Guests are not to use DHCP (recorded for the DHCP server to come).
        #[arg(long)]
        no_dhcp: bool,
        /// A DNS nameserver for the guests (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
    },
    /// Delete a network no server uses (and its bridge if kilnd made it).
    Delete {
        network: String,
    },
}

pub fn run(api: &Api<'_>, json: bool, c: &NetworkCmd) -> Result<(), Box<dyn std::error::Error>> {
    let one = |n: &Network| {
        networks(std::slice::from_ref(n));
    };
    match c {
        NetworkCmd::List => api.show(json, "/v1/networks", |l: &NetworkList| {
            networks(&l.networks)
        })?,
        NetworkCmd::Show { network } => api.show(
            json,
            &format!("/v1/networks/{}", enc(network)),
            |n: &Network| {
                one(n);
                if n.cidr.is_some() {
                    println!("dhcp: {}", if n.dhcp { "yes" } else { "no" });
                }
                if !n.dns_nameservers.is_empty() {
                    println!("dns: {}", n.dns_nameservers.join(", "));
                }
                if !n.servers.is_empty() {
                    println!("servers: {}", n.servers.join(", "));
                }
            },
        )?,
        NetworkCmd::Create {
            name,
            bridge,
            mtu,
            cidr,
            gateway,
            mode,
            no_dhcp,
            dns,
        } => {
            let req = NetworkCreate {
                name: name.clone(),
                bridge: bridge.clone(),
                mtu: *mtu,
                cidr: cidr.clone(),
                gateway: gateway.clone(),
                dhcp: no_dhcp.then_some(false),
                dns_nameservers: dns.clone(),
                mode: *mode,
            };
            show(
                json,
                &api.send::<Network>("POST", "/v1/networks", &req)?,
                one,
            )?
        }
        NetworkCmd::Delete { network } => {
            api.call("DELETE", &format!("/v1/networks/{}", enc(network)), None)?
        }
    }
    Ok(())
}

/// Parses `NAME[:IP][,ip=IP][,mac=MAC][,link=up|down]`.
pub fn parse_nic(s: &str) -> Result<NicRequest, String> {
    let mut parts = s.split(',');
    let first = parts.next().unwrap_or("");
    let (network, mut ip) = match first.split_once(':') {
        Some((n, ip)) => (n.to_string(), Some(ip.to_string())),
        None => (first.to_string(), None),
    };
    if network.is_empty() {
        return Err("--network needs a network name or id".into());
    }
    let (mut mac, mut link) = (None, None);
    for p in parts {
        match p.split_once('=') {
            Some(("mac", m)) => mac = Some(m.to_string()),
            Some(("link", l)) => link = Some(parse_link(l)?),
            Some(("ip", a)) => ip = Some(a.to_string()),
            _ => {
                return Err(format!(
                    "--network: unknown option {p:?} (ip=IP, mac=MAC, link=up|down)"
                ))
            }
        }
    }
    Ok(NicRequest {
        network,
        mac,
        link,
        ip,
    })
}

/// `nat`, `isolated` or `bridged`.
fn parse_mode(s: &str) -> Result<NetworkMode, String> {
    match s {
        "nat" => Ok(NetworkMode::Nat),
        "isolated" => Ok(NetworkMode::Isolated),
        "bridged" => Ok(NetworkMode::Bridged),
        _ => Err(format!("mode must be nat, isolated or bridged, not {s:?}")),
    }
}

/// `up` or `down`.
pub fn parse_link(s: &str) -> Result<LinkState, String> {
    match s {
        "up" => Ok(LinkState::Up),
        "down" => Ok(LinkState::Down),
        _ => Err(format!("link must be up or down, not {s:?}")),
    }
}

/// The NIC lines of `kiln server show`.
pub fn print_nics(s: &kiln_api::compute::Server) {
    if !s.nics.is_empty() {
        nics(&s.nics);
    }
}
