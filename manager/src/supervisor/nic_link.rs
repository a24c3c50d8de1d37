//! A server NIC's link (Neutron's port `admin_state_up`, libvirt's
//! `domif-setlink`): stored with the NIC, applied at once to a running
//! VMM through its control socket (`PUT /v1/vm/net/{index}`), and handed
//! to every later VMM in its config (`NetConfig::link`, see
//! `vm_config.rs`), so stop/start, hard reboots and guest reboots that
//! kilnd turns into a new VMM all keep it.
//!
//! A change runs under the server's action lock (taken without waiting,
//! as actions do: a busy server answers 409), so it cannot interleave with
//! a boot that reads the NICs and starts a VMM: either the boot comes
//! first and the change goes to its VMM, or the change comes first and the
//! boot's config carries it. A VMM that exits meanwhile (the guest powers
//! off) needs nothing: the next one reads the store. A VMM that is running
//! and refuses the change leaves the stored link as it was, and the client
//! gets the error.
//!
//! After a kilnd restart, [`Supervisor::sync_links`] makes each re-adopted
//! VMM's links match the store (a change whose control request a crash
//! cut off).
//!
//! Store calls run on the blocking pool ([`Supervisor::store_call`]).

use std::sync::Arc;
use std::time::Duration;

use kiln_api::compute::{LinkState, Nic, Server, TaskState};
use kiln_api::control::{Request, VmInfo};
use thiserror::Error;

use super::{Busy, ControlError, Supervisor};
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum NicError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("server {server} has no NIC {index} (it has {count}; NICs are numbered from 0)")]
    NoSuchNic {
        server: String,
        index: u32,
        count: usize,
    },
    #[error("{0}; try again when it is done")]
    Busy(Busy),
    #[error("server {0} is being deleted")]
    Deleting(String),
    #[error("the server's kiln-vmm did not take the change (the link stays {kept})")]
    Vmm {
        kept: &'static str,
        #[source]
        why: ControlError,
    },
}

impl Supervisor {
    /// Sets NIC `index` of server `id` to `link`; answers the NIC.
    pub async fn set_nic_link(
        self: &Arc<Self>,
        id: &str,
        index: u32,
        link: LinkState,
    ) -> Result<Nic, NicError> {
        let server = self.store_call(id, |s, id| s.get_server(id)).await?;
        check_index(&server, index)?;
        let _guard = self.try_lock(&server).map_err(NicError::Busy)?;
        // Re-read under the lock.
        let server = self
            .store_call(&server.id, |s, id| s.get_server(id))
            .await?;
        if server.task_state == Some(TaskState::Deleting) {
            return Err(NicError::Deleting(server.name));
        }
        let id = server.id.as_str();
        let old = self
            .store_call(id, move |s, id| s.set_nic_link(id, index, link))
            .await?;
        if let Some(vm) = self.vm(id).filter(|vm| !vm.has_exited()) {
            if let Err(why) = self.apply_link(id, index, link).await {
                // Gone meanwhile: its successor reads the store.
                if !vm.has_exited() {
                    let _ = self
                        .store_call(id, move |s, id| s.set_nic_link(id, index, old))
                        .await;
                    return Err(NicError::Vmm {
                        kept: old.as_str(),
                        why,
                    });
                }
            }
        }
        tracing::info!(
            server = id,
            nic = index,
            link = link.as_str(),
            "NIC link set"
        );
        let server = self.store_call(id, |s, id| s.get_server(id)).await?;
        Ok(server.nics[index as usize].clone())
    }

    /// `PUT /v1/vm/net/{index}` on the server's VMM.
    async fn apply_link(&self, id: &str, index: u32, link: LinkState) -> Result<(), ControlError> {
        let index = index as usize;
        self.control(id, Request::NetLink { index, link }, Duration::from_secs(5))
            .await
            .map(|_| ())
    }

    /// Brings a re-adopted VMM's links in line with the store.
    pub(super) async fn sync_links(&self, server: &Server, info: &VmInfo) {
        for nic in &server.nics {
            let running = info.nets.get(nic.index as usize).map(|n| n.link);
            if running.is_none_or(|l| l == nic.link) {
                continue;
            }
            match self.apply_link(&server.id, nic.index, nic.link).await {
                Ok(()) => tracing::info!(
                    server = server.id,
                    nic = nic.index,
                    link = nic.link.as_str(),
                    "re-adopted kiln-vmm: NIC link set as stored"
                ),
                Err(e) => tracing::warn!(
                    server = server.id,
                    nic = nic.index,
                    error = crate::util::error_chain(&e),
                    "re-adopted kiln-vmm: cannot set the NIC link"
                ),
            }
        }
    }
}

fn check_index(server: &Server, index: u32) -> Result<(), NicError> {
    if (index as usize) < server.nics.len() {
        Ok(())
    } else {
        Err(NicError::NoSuchNic {
            server: server.name.clone(),
            index,
            count: server.nics.len(),
        })
    }
}
