//! A network's subnet added or taken away after the network exists
//! (Neutron makes networks and their subnets in two steps; `/v1` in
//! one): the same checks as a create's subnet ([`crate::ipam`], host
//! routes, overlaps), then the network's host side and services are
//! started or stopped, and the firewall synced. Only while no server
//! has a NIC on the network (the store refuses it otherwise).

use kiln_api::compute::Network;

use super::{check_host_routes, firewall, NetworkError, Services};
use crate::ipam;
use crate::net::{addr, link};

/// What a new subnet is to be.
pub struct SubnetRequest {
    pub cidr: String,
    pub gateway: Option<String>,
    pub dns_nameservers: Vec<String>,
    pub dhcp: bool,
    /// The subnet's own name (Neutron's); the network's when absent.
    pub name: Option<String>,
}

/// Gives network `key` (id or name) a subnet and brings its services up;
/// a failure leaves the network as it was.
pub async fn add(
    services: &Services,
    key: String,
    req: SubnetRequest,
) -> Result<Network, NetworkError> {
    let store = services.store();
    let spec = ipam::check_subnet(
        Some(&req.cidr),
        req.gateway.as_deref(),
        &req.dns_nameservers,
    )
    .map_err(NetworkError::Invalid)?
    .ok_or_else(|| NetworkError::Invalid("a subnet needs a cidr".into()))?;
    if let Some(n) = &req.name {
        crate::util::check_name("subnet", n).map_err(|e| NetworkError::Invalid(e.to_string()))?;
    }
    let (net, bridges) = store
        .call(move |s| {
            let bridges: Vec<String> = s.list_networks()?.into_iter().map(|n| n.bridge).collect();
            Ok::<_, crate::store::StoreError>((s.get_network(&key)?, bridges))
        })
        .await?;
    check_host_routes(spec.cidr, bridges).await?;
    let id = net.id.clone();
    let (dhcp, name) = (req.dhcp, req.name);
    let net = store
        .call(move |s| s.set_network_subnet(&id, Some((&spec, dhcp, name.as_deref()))))
        .await?;
    if let Err(e) = up(services, &net).await {
        tracing::warn!(network = net.name, error = %e, "cannot serve the new subnet");
        let _ = remove(services, net.id.clone()).await;
        return Err(e);
    }
    Ok(net)
}

async fn up(services: &Services, net: &Network) -> Result<(), NetworkError> {
    services.start(net).await?;
    firewall::sync(services.store()).await?;
    Ok(())
}

/// Takes network `key`'s subnet away: its services stop and kilnd's
/// addresses leave the bridge.
pub async fn remove(services: &Services, key: String) -> Result<Network, NetworkError> {
    let store = services.store();
    let old = store.call(move |s| s.get_network(&key)).await?;
    let id = old.id.clone();
    let net = store.call(move |s| s.set_network_subnet(&id, None)).await?;
    services.stop(&net.id);
    if let Some(ours) = super::host_addresses(&old) {
        if let Ok(Some(l)) = link::get(&old.bridge).await {
            if let Err(e) = addr::remove(l.index, &old.bridge, &ours).await {
                tracing::warn!(bridge = old.bridge, error = %e, "cannot remove kilnd's addresses");
            }
        }
    }
    firewall::sync_or_warn(store).await;
    Ok(net)
}
