//! The `default` network: a `nat` network on bridge [`DEFAULT_BRIDGE`]
//! with `[networks] default_cidr`, made at kilnd's start when the config
//! asks for it (`[networks] default = true`, the embedded default), as
//! libvirt's `default` network (virbr0) is there out of the box.
//!
//! It is made once per config: the store records the cidr it was made
//! with, and while the config names the same cidr kilnd does not make it
//! again, so a user who deleted it keeps it deleted. Changing
//! `default_cidr`, or turning `default` off (which forgets the record,
//! and never deletes a network) and on again, makes it anew. A network
//! already named `default` counts as it. A cidr that overlaps a host
//! route (or another network) is skipped with a warning and tried again
//! at the next start.

use kiln_api::compute::{NetworkCreate, NetworkMode};

use super::{create, NetworkError, Services};
use crate::config::NetworksConfig;
use crate::store::StoreError;

/// The `default` network's name.
pub const DEFAULT_NAME: &str = "default";
/// Its bridge: not libvirt's `virbr0`, so both can live on one host.
pub const DEFAULT_BRIDGE: &str = "kilnbr0";

/// Makes the `default` network if `cfg` asks for it and it was not made
/// for this config before; logs what it did.
pub async fn ensure(services: &Services, cfg: &NetworksConfig) {
    let store = services.store();
    if !cfg.default {
        if let Err(e) = store.call(|s| s.set_default_network_mark(None)).await {
            tracing::warn!(error = %e, "cannot update the default network's record");
        }
        return;
    }
    let cidr = cfg.default_cidr.clone();
    let (mark, exists) = match store
        .call(|s| {
            Ok::<_, StoreError>((
                s.default_network_mark()?,
                s.list_networks()?.iter().any(|n| n.name == DEFAULT_NAME),
            ))
        })
        .await
    {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the default network's record");
            return;
        }
    };
    if mark.as_deref() == Some(cidr.as_str()) {
        return;
    }
    if !exists {
        let req = NetworkCreate {
            name: DEFAULT_NAME.into(),
            bridge: Some(DEFAULT_BRIDGE.into()),
            mtu: None,
            cidr: Some(cidr.clone()),
            gateway: None,
            dhcp: None,
            dns_nameservers: vec![],
            mode: Some(NetworkMode::Nat),
        };
        match create(services, req).await {
            Ok(n) => tracing::info!(
                network = DEFAULT_NAME,
                bridge = n.bridge,
                cidr,
                "created the default network"
            ),
            Err(NetworkError::Conflict(why)) => {
                tracing::warn!(cidr, "not creating the default network: {why}");
                return;
            }
            Err(e) => {
                tracing::warn!(cidr, error = %e, "cannot create the default network");
                return;
            }
        }
    }
    let c = cidr.clone();
    if let Err(e) = store
        .call(move |s| s.set_default_network_mark(Some(&c)))
        .await
    {
        tracing::warn!(error = %e, "cannot record the default network");
    }
}
