//! `kiln network ...`, the `--network NAME[,mac=MAC][,link=down]` value of
//! `kiln server create`, and `kiln server link` (a NIC's link).

use clap::Subcommand;
use kiln_api::compute::{LinkState, Network, NetworkCreate, NetworkList, NicRequest};

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
                if !n.servers.is_empty() {
                    println!("servers: {}", n.servers.join(", "));
                }
            },
        )?,
        NetworkCmd::Create { name, bridge, mtu } => {
            let req = NetworkCreate {
                name: name.clone(),
                bridge: bridge.clone(),
                mtu: *mtu,
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

/// Parses `NAME[,mac=MAC][,link=up|down]`.
pub fn parse_nic(s: &str) -> Result<NicRequest, String> {
    let mut parts = s.split(',');
    let network = parts.next().unwrap_or("").to_string();
    if network.is_empty() {
        return Err("--network needs a network name or id".into());
    }
    let (mut mac, mut link) = (None, None);
    for p in parts {
        match p.split_once('=') {
            Some(("mac", m)) => mac = Some(m.to_string()),
            Some(("link", l)) => link = Some(parse_link(l)?),
            _ => {
                return Err(format!(
                    "--network: unknown option {p:?} (mac=MAC, link=up|down)"
                ))
            }
        }
    }
    Ok(NicRequest { network, mac, link })
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
