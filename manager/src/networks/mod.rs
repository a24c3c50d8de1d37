//! Networks: the rules of a network's create and the network delete
//! protocol, which `DELETE /v1/networks/{id}` and start-up reconcile both
//! run ([`delete`], [`reconcile`]); and resolving a server create's
//! `networks` into NICs ([`resolve_nics`]). The Linux side (bridges, taps,
//! who owns a port, host routes) is [`crate::net`]; subnets and address
//! picking are [`crate::ipam`].
//!
//! A network with a subnet also has a host side (its bridge up, the
//! gateway and metadata addresses on it) and services (DHCP, metadata),
//! run by [`Services`] from what the store says. A network's `mode`
//! decides whether the host is its gateway; its NAT, isolation and
//! anti-spoofing rules are [`firewall`]'s. The `default` network is
//! [`default_network`]'s.
//!
//! # The delete protocol
//!
//! 1. **Begin**: the store marks the network `deleting` (refused while a
//!    server has a NIC on it). A crash from here on leaves the mark, and
//!    the next start runs the steps below again.
//! 2. **Teardown** (managed networks only): the bridge is deleted unless a
//!    port kilnd did not make is on it ([`crate::net::teardown`]).
//! 3. **Finish** (the row goes) when the bridge is gone, or **cancel** (the
//!    network is active again and still names its bridge) when such ports
//!    kept it. A teardown that fails leaves the network `deleting`.

pub mod default_network;
pub mod firewall;
mod services;
pub mod subnet;

pub use services::{host_addresses, MetadataSpawner, Services, METADATA_IP};

use std::sync::Arc;

use kiln_api::compute::{Network, NetworkCreate, NicRequest};
use thiserror::Error;

use crate::ipam;
use crate::net::link::{self, LinkError};
use crate::net::routes;
use crate::net::teardown::{self, Port, Teardown};
use crate::net::{check_bridge_name, parse_mac, MAX_NICS};
use crate::store::{NetworkSpec, NewNic, Store, StoreError};
use crate::util::check_name;

#[derive(Debug, Error)]
pub enum NetworkError {
    /// The request breaks a rule (a 400).
    #[error("{0}")]
    Invalid(String),
    /// The host or the store says no (a 409): a device that is not a
    /// bridge, another MTU, ports kilnd did not make on the bridge.
    #[error("{0}")]
    Conflict(String),
    /// A netlink step failed; `what` says which.
    #[error("{what}")]
    Link {
        what: String,
        #[source]
        source: LinkError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The network's firewall rules could not be applied.
    #[error(transparent)]
    Firewall(#[from] firewall::FirewallError),
}

impl NetworkError {
    fn link(what: impl Into<String>) -> impl FnOnce(LinkError) -> NetworkError {
        let what = what.into();
        move |source| NetworkError::Link { what, source }
    }
}

/// Checks `req` against the host and records the network, creating its
/// bridge when none of that name exists (the network is then managed).
pub async fn create(services: &Services, req: NetworkCreate) -> Result<Network, NetworkError> {
    let store = services.store();
    check_name("network", &req.name).map_err(|e| NetworkError::Invalid(e.to_string()))?;
    let bridge = req.bridge.clone().unwrap_or_else(|| req.name.clone());
    check_bridge_name(&bridge).map_err(|e| NetworkError::Invalid(e.to_string()))?;
    if let Some(m) = req.mtu {
        if !(68..=65535).contains(&m) {
            return Err(NetworkError::Invalid("mtu must be 68 to 65535".into()));
        }
    }
    let subnet = ipam::check_subnet(
        req.cidr.as_deref(),
        req.gateway.as_deref(),
        &req.dns_nameservers,
    )
    .map_err(NetworkError::Invalid)?;
    if let Some(sub) = &subnet {
        let bridges = store
            .call(|s| s.list_networks())
            .await?
            .into_iter()
            .map(|n| n.bridge)
            .collect();
        check_host_routes(sub.cidr, bridges).await?;
    }
    let spec = NetworkSpec {
        subnet,
        dhcp: req.dhcp.unwrap_or(true),
        mode: req.mode.unwrap_or_default(),
    };
    let existing = link::get(&bridge)
        .await
        .map_err(NetworkError::link("cannot look up the bridge"))?;
    let (mtu, managed) = match &existing {
        Some(l) if l.kind != "bridge" => {
            return Err(NetworkError::Conflict(format!(
                "{bridge:?} exists and is not a bridge (it is {})",
                if l.kind.is_empty() {
                    "a device"
                } else {
                    &l.kind
                }
            )))
        }
        Some(l) => {
            if req.mtu.is_some_and(|m| m != l.mtu) {
                return Err(NetworkError::Conflict(format!(
                    "bridge {bridge:?} exists with MTU {}, not {}",
                    l.mtu,
                    req.mtu.unwrap_or(0)
                )));
            }
            (l.mtu, false)
        }
        None => (req.mtu.unwrap_or(1500), true),
    };
    // The row first: a crash before the bridge exists leaves a managed
    // network whose bridge kilnd creates at its next start.
    let (name, br) = (req.name.clone(), bridge.clone());
    let net = store
        .call(move |s| s.create_network(&name, &br, mtu, managed, &spec))
        .await?;
    if managed {
        if let Err(e) = link::create_bridge(&bridge, mtu).await {
            let id = net.id.clone();
            store
                .call(move |s| {
                    let _ = s.begin_delete_network(&id);
                    let _ = s.finish_delete_network(&id);
                })
                .await;
            return Err(NetworkError::link(format!(
                "cannot create bridge {bridge:?}"
            ))(e));
        }
        tracing::info!(network = net.name, bridge, mtu, "created bridge");
    }
    if let Err(e) = services.start(&net).await {
        // The network exists; its host side is made again at the next
        // start. A managed bridge goes with the failed create.
        tracing::warn!(network = net.name, error = %e, "cannot start the network's services");
        let _ = delete(services, net.id.clone()).await;
        return Err(e);
    }
    if let Err(e) = firewall::sync(store).await {
        // No network without its isolation: the create is undone.
        tracing::warn!(network = net.name, error = %e, "cannot apply the network's firewall");
        let _ = delete(services, net.id.clone()).await;
        return Err(e.into());
    }
    Ok(net)
}

/// Refuses a subnet that overlaps a route of the host's main table (the
/// default route aside), naming the route and its device. Routes on the
/// bridges of Kiln's own networks (`ours`: the subnets of networks where
/// the host is the gateway) are left to the store's overlap check, which
/// names the network.
async fn check_host_routes(sub: ipam::Subnet, ours: Vec<String>) -> Result<(), NetworkError> {
    let routes = routes::host_routes()
        .await
        .map_err(NetworkError::link("cannot read the host's routes"))?;
    let links = link::list()
        .await
        .map_err(NetworkError::link("cannot list links"))?;
    let ours: Vec<u32> = links
        .iter()
        .filter(|l| ours.contains(&l.name))
        .map(|l| l.index)
        .collect();
    for r in routes {
        if r.oif.is_some_and(|i| ours.contains(&i)) {
            continue;
        }
        let dst = ipam::Subnet::of(r.dst, r.prefix);
        if dst.overlaps(sub) {
            let dev = r
                .oif
                .and_then(|i| links.iter().find(|l| l.index == i))
                .map(|l| format!(" dev {}", l.name))
                .unwrap_or_default();
            return Err(NetworkError::Conflict(format!(
                "cidr {sub} overlaps the host route {dst}{dev}"
            )));
        }
    }
    Ok(())
}

/// Deletes network `key` (id or name) by the delete protocol. Ports
/// kilnd did not make on its bridge refuse it (a [`NetworkError::Conflict`]
/// naming them) and nothing is deleted.
pub async fn delete(services: &Services, key: String) -> Result<(), NetworkError> {
    let store = services.store();
    let (net, instance) = store
        .call(move |s| Ok::<_, StoreError>((s.get_network(&key)?, s.instance_id()?)))
        .await?;
    if net.managed && net.servers.is_empty() {
        // The usual refusal, before the network is marked `deleting`.
        let ports = teardown::foreign_ports_of(&instance, &net.bridge)
            .await
            .map_err(NetworkError::link("cannot list the bridge's ports"))?;
        if !ports.is_empty() {
            return Err(refused(&net.name, &net.bridge, &ports));
        }
    }
    let id = net.id.clone();
    let net = store.call(move |s| s.begin_delete_network(&id)).await?;
    services.stop(&net.id);
    let done = finish_delete(store, &instance, &net).await;
    firewall::sync_or_warn(store).await;
    match done {
        Ok(Outcome::Kept(ports)) => {
            // The network is active again: so are its services.
            if let Err(e) = services.start(&net).await {
                tracing::warn!(network = net.name, error = %e, "cannot restart the network's services");
            }
            Err(refused(&net.name, &net.bridge, &ports))
        }
        Ok(Outcome::Deleted) => {
            services.release(&net).await;
            Ok(())
        }
        Err(NetworkError::Link { source, .. }) => Err(NetworkError::Link {
            what: format!(
                "cannot delete bridge {:?} (the delete finishes at kilnd's next start)",
                net.bridge
            ),
            source,
        }),
        Err(e) => Err(e),
    }
}

/// How the steps after begin ended.
enum Outcome {
    /// The network and (if managed) its bridge are gone.
    Deleted,
    /// Ports kilnd did not make kept the bridge; the delete was cancelled
    /// and the network is active again.
    Kept(Vec<Port>),
}

/// Steps 2 and 3 of the delete protocol for `net`, marked `deleting`.
async fn finish_delete(
    store: &Arc<Store>,
    instance: &str,
    net: &Network,
) -> Result<Outcome, NetworkError> {
    let id = net.id.clone();
    if net.managed {
        let kept = teardown::delete_bridge(instance, &net.bridge)
            .await
            .map_err(NetworkError::link(format!(
                "cannot delete bridge {:?}",
                net.bridge
            )))?;
        if let Teardown::Kept(ports) = kept {
            // Nothing was deleted: the network stays, naming its bridge.
            store.call(move |s| s.cancel_delete_network(&id)).await?;
            return Ok(Outcome::Kept(ports));
        }
    }
    store.call(move |s| s.finish_delete_network(&id)).await?;
    Ok(Outcome::Deleted)
}

/// The refusal of a network delete that would cut off `ports`.
fn refused(network: &str, bridge: &str, ports: &[Port]) -> NetworkError {
    let msg = teardown::kept_message(network, bridge, ports);
    tracing::info!(network, "network delete refused: {msg}");
    NetworkError::Conflict(msg)
}

/// At start: finishes network deletes a crash interrupted (by the same
/// protocol as [`delete`]), recreates missing bridges of managed
/// networks, and starts every network's services.
pub async fn reconcile(services: &Services) {
    let store = services.store();
    let Ok((nets, instance)) = store
        .call(|s| Ok::<_, StoreError>((s.all_networks()?, s.instance_id())))
        .await
    else {
        return;
    };
    for (net, deleting) in nets {
        if deleting {
            tracing::info!(network = net.name, "finishing an interrupted delete");
            let instance = match &instance {
                Ok(i) => i,
                Err(e) => {
                    // Tried again at the next start.
                    tracing::warn!(bridge = net.bridge, error = %e, "cannot delete bridge");
                    continue;
                }
            };
            match finish_delete(store, instance, &net).await {
                Ok(Outcome::Deleted) => services.release(&net).await,
                Ok(Outcome::Kept(ports)) => {
                    tracing::warn!(
                        network = net.name,
                        bridge = net.bridge,
                        "not finishing an interrupted network delete, the network is kept: {}",
                        teardown::kept_message(&net.name, &net.bridge, &ports)
                    );
                    if let Err(e) = services.start(&net).await {
                        tracing::warn!(network = net.name, error = %e, "cannot start the network's services");
                    }
                }
                // Tried again at the next start.
                Err(e) => tracing::warn!(bridge = net.bridge, error = %e, "cannot delete bridge"),
            }
            continue;
        }
        match link::get(&net.bridge).await {
            Ok(Some(_)) => {}
            Ok(None) if net.managed => {
                tracing::info!(bridge = net.bridge, "recreating the bridge of a network");
                if let Err(e) = link::create_bridge(&net.bridge, net.mtu).await {
                    tracing::warn!(bridge = net.bridge, error = %e, "cannot create bridge");
                }
            }
            Ok(None) => {
                tracing::warn!(
                    bridge = net.bridge,
                    network = net.name,
                    "the bridge of an unmanaged network is missing"
                )
            }
            Err(e) => tracing::warn!(error = %e, "cannot look up bridge"),
        }
        if let Err(e) = services.start(&net).await {
            tracing::warn!(network = net.name, error = %e, "cannot start the network's services");
        }
    }
    firewall::sync_or_warn(store).await;
}

/// Checks a server create's `networks` and resolves each to a network id.
pub fn resolve_nics(store: &Store, reqs: &[NicRequest]) -> Result<Vec<NewNic>, NetworkError> {
    let bad = NetworkError::Invalid;
    if reqs.len() > MAX_NICS {
        return Err(bad(format!("networks: at most {MAX_NICS} NICs per server")));
    }
    // MACs first: a malformed request is refused before any lookup.
    let mut macs: Vec<Option<String>> = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let mac = match &r.mac {
            None => None,
            Some(m) => {
                let m = parse_mac(m).map_err(|e| bad(format!("networks[{i}]: {e}")))?;
                if macs.iter().any(|x| x.as_deref() == Some(m.as_str())) {
                    return Err(bad(format!("networks[{i}]: mac {m} is given twice")));
                }
                Some(m)
            }
        };
        macs.push(mac);
    }
    let mut out: Vec<NewNic> = Vec::new();
    for ((i, r), mac) in reqs.iter().enumerate().zip(macs) {
        let net = store.get_network(&r.network).map_err(|e| match e {
            StoreError::NotFound { .. } => {
                bad(format!("networks[{i}]: unknown network {:?}", r.network))
            }
            e => e.into(),
        })?;
        let ip = match (&r.ip, &net.cidr, &net.gateway) {
            (None, _, _) => None,
            (Some(_), None, _) | (Some(_), _, None) => {
                return Err(bad(format!(
                    "networks[{i}]: network {:?} has no cidr, so its NICs get no ip",
                    net.name
                )))
            }
            (Some(ip), Some(cidr), Some(gw)) => {
                let ip = ipam::parse_ip(&format!("networks[{i}]: ip"), ip).map_err(bad)?;
                let (sub, gw) = match (ipam::Subnet::parse(cidr), gw.parse()) {
                    (Ok(s), Ok(g)) => (s, g),
                    _ => {
                        return Err(NetworkError::Conflict(format!(
                            "network {:?} has a bad subnet",
                            net.name
                        )))
                    }
                };
                ipam::check_ip(sub, gw, ip)
                    .map_err(|e| bad(format!("networks[{i}]: network {:?}: {e}", net.name)))?;
                if out.iter().any(|n| n.ip == Some(ip)) {
                    return Err(bad(format!("networks[{i}]: ip {ip} is given twice")));
                }
                Some(ip)
            }
        };
        out.push(NewNic {
            network_id: net.id,
            mac,
            link: r.link.unwrap_or_default(),
            ip,
        });
    }
    Ok(out)
}
