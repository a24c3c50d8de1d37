//! What a network with a subnet runs on the host, beside its bridge: the
//! bridge up, its addresses (the gateway where the host is the gateway,
//! and 169.254.169.254/32 for the metadata service), and the tasks that
//! serve it (DHCP, metadata), one set per network.
//!
//! [`Services::start`] is idempotent: network create and kilnd's start
//! call it; network delete calls [`Services::stop`] before the bridge
//! goes. Everything here is derived from the store, so a kilnd killed at
//! any point rebuilds it at its next start.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use kiln_api::compute::{Network, NetworkMode};
use tokio::task::AbortHandle;

use super::NetworkError;
use crate::ipam;
use crate::net::addr::{self, IfAddr};
use crate::net::link;
use crate::store::Store;

/// The metadata service's address, on every bridge of a network with a
/// subnet.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Starts a network's metadata listener and answers its task (None if
/// it could not listen). Set by the daemon ([`Services::set_metadata`]):
/// the HTTP side lives in `http/`, which the domain does not import.
pub type MetadataSpawner = Box<dyn Fn(&Network) -> Option<AbortHandle> + Send + Sync>;

/// The running services of every network, by network id.
pub struct Services {
    store: Arc<Store>,
    running: Mutex<HashMap<String, Vec<AbortHandle>>>,
    metadata: std::sync::OnceLock<MetadataSpawner>,
}

impl Services {
    pub fn new(store: Arc<Store>) -> Arc<Services> {
        Arc::new(Services {
            store,
            running: Mutex::new(HashMap::new()),
            metadata: std::sync::OnceLock::new(),
        })
    }

    /// Has every network started from now on run a metadata listener.
    pub fn set_metadata(&self, spawn: MetadataSpawner) {
        let _ = self.metadata.set(spawn);
    }

    /// The store the services read their answers from.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Brings up what `net` needs on the host. An L2-only network (no
    /// subnet) needs nothing. The tasks of a network already served are
    /// left running.
    pub async fn start(&self, net: &Network) -> Result<(), NetworkError> {
        let Some(want) = host_addresses(net) else {
            return Ok(());
        };
        let l = link::get(&net.bridge)
            .await
            .map_err(NetworkError::link("cannot look up the bridge"))?
            .ok_or_else(|| {
                NetworkError::Conflict(format!("bridge {:?} does not exist", net.bridge))
            })?;
        addr::set_up(l.index, &net.bridge)
            .await
            .map_err(NetworkError::link(format!(
                "cannot set {:?} up",
                net.bridge
            )))?;
        // On a bridge kilnd made, the addresses are exactly these; on a
        // user's bridge, kilnd adds its own and removes nothing.
        let (want, keep_others) = if net.managed {
            (want, false)
        } else {
            (want, true)
        };
        let want = if keep_others {
            let mut all = addr::addresses(l.index)
                .await
                .map_err(NetworkError::link("cannot list the bridge's addresses"))?;
            for a in want {
                if !all.contains(&a) {
                    all.push(a);
                }
            }
            all
        } else {
            want
        };
        addr::ensure(l.index, &net.bridge, &want)
            .await
            .map_err(NetworkError::link(format!(
                "cannot set the addresses of {:?}",
                net.bridge
            )))?;
        if self.running.lock().unwrap().contains_key(&net.id) {
            return Ok(());
        }
        let mut tasks: Vec<AbortHandle> = Vec::new();
        // The network's services are spawned here (DHCP, metadata).
        let dhcp = crate::dhcp::spawn(net, self.store.clone(), METADATA_IP).map_err(|e| {
            NetworkError::Conflict(format!("cannot serve DHCP on bridge {:?}: {e}", net.bridge))
        })?;
        tasks.extend(dhcp);
        tasks.extend(self.metadata.get().and_then(|spawn| spawn(net)));
        self.running.lock().unwrap().insert(net.id.clone(), tasks);
        Ok(())
    }

    /// Stops the services of network `id` (nothing if it has none).
    pub fn stop(&self, id: &str) {
        if let Some(tasks) = self.running.lock().unwrap().remove(id) {
            for t in tasks {
                t.abort();
            }
        }
    }

    /// After `net`'s delete: takes kilnd's addresses off a bridge kilnd
    /// did not make (a bridge it made is gone with them).
    pub async fn release(&self, net: &Network) {
        let Some(ours) = host_addresses(net) else {
            return;
        };
        if net.managed {
            return;
        }
        match link::get(&net.bridge).await {
            Ok(Some(l)) => {
                if let Err(e) = addr::remove(l.index, &net.bridge, &ours).await {
                    tracing::warn!(bridge = net.bridge, error = %e, "cannot remove kilnd's addresses");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(bridge = net.bridge, error = %e, "cannot look up bridge"),
        }
    }

    /// Whether network `id` has its services running.
    pub fn is_running(&self, id: &str) -> bool {
        self.running.lock().unwrap().contains_key(id)
    }
}

/// The addresses the host holds on `net`'s bridge: none for an L2-only
/// network; the metadata address for every subnet, and the gateway with
/// the subnet's prefix where the host is the gateway (`nat`, `isolated`).
/// On a `bridged` network the gateway is a router on the uplink.
pub fn host_addresses(net: &Network) -> Option<Vec<IfAddr>> {
    let sub = ipam::Subnet::parse(net.cidr.as_deref()?).ok()?;
    let mut out = vec![IfAddr {
        ip: METADATA_IP,
        prefix: 32,
    }];
    if net.mode != NetworkMode::Bridged {
        if let Some(gw) = net.gateway.as_deref().and_then(|g| g.parse().ok()) {
            out.insert(
                0,
                IfAddr {
                    ip: gw,
                    prefix: sub.prefix(),
                },
            );
        }
    }
    Some(out)
}
