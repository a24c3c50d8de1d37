//! MSI-X delivery on KVM: one GSI and one irqfd per vector, and the VM's
//! GSI routing table (KVM_SET_GSI_ROUTING) that points each GSI at the MSI
//! message the guest programmed.
//!
//! KVM_SET_GSI_ROUTING replaces the whole table, so [`MsiRouter`] keeps it:
//! the PC's legacy routes (`arch::x86_64::irq::legacy_routes`, which
//! `vm.rs` installs first) plus one MSI route per routed vector, and
//! commits the lot on every change. Devices see only
//! [`MsiVectors`](crate::devices::virtio::msix::MsiVectors): writing a
//! vector's irqfd makes KVM inject it without any vCPU exit.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQ_ROUTING_MSI};
use kvm_ioctls::{Kvm, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::irq;
use crate::devices::virtio::msix::{MsiMessage, MsiVectors};

/// First GSI handed to MSI vectors (after the 24 IOAPIC pins).
pub const FIRST_MSI_GSI: u32 = irq::IOAPIC_PINS;
/// KVM's limit on routes (KVM_MAX_IRQ_ROUTES).
const MAX_ROUTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum InterruptError {
    #[error("duplicating the VM fd failed")]
    DupVm(#[source] io::Error),
    #[error("opening /dev/kvm failed")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error("creating an irqfd eventfd failed")]
    EventFd(#[source] io::Error),
    #[error("registering the irqfd of GSI {gsi} failed")]
    Irqfd {
        gsi: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("no GSIs left for {0} more vectors")]
    OutOfGsis(usize),
}

/// A second handle on the VM fd, for threads that outlive the borrow of
/// the VM's own (the router, the BAR mover).
pub fn dup_vm_fd(vm: &VmFd) -> Result<VmFd, InterruptError> {
    let kvm = Kvm::new().map_err(InterruptError::Kvm)?;
    // SAFETY: dup of a valid open fd; the result is checked before use.
    let fd = unsafe { libc::dup(vm.as_raw_fd()) };
    if fd < 0 {
        return Err(InterruptError::DupVm(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh duplicate of a KVM VM fd, owned by nothing
    // else; the new VmFd takes ownership of it.
    unsafe { kvm.create_vmfd_from_rawfd(fd) }.map_err(InterruptError::Kvm)
}

fn msi_entry(gsi: u32, msg: MsiMessage) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = msg.address as u32;
    e.u.msi.address_hi = (msg.address >> 32) as u32;
    e.u.msi.data = msg.data;
    e
}

struct RouterState {
    msi: BTreeMap<u32, MsiMessage>,
    next_gsi: u32,
}

/// The VM's GSI routing table.
pub struct MsiRouter {
    vm: VmFd,
    state: Mutex<RouterState>,
}

impl MsiRouter {
    pub fn new(vm: &VmFd) -> Result<Arc<Self>, InterruptError> {
        Ok(Arc::new(MsiRouter {
            vm: dup_vm_fd(vm)?,
            state: Mutex::new(RouterState {
                msi: BTreeMap::new(),
                next_gsi: FIRST_MSI_GSI,
            }),
        }))
    }

    fn commit(&self, st: &RouterState) -> io::Result<()> {
        let mut entries = irq::legacy_routes();
        entries.extend(st.msi.iter().map(|(&gsi, &m)| msi_entry(gsi, m)));
        let routing = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| io::Error::other(format!("routing table: {e:?}")))?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    fn set(&self, gsi: u32, msg: Option<MsiMessage>) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match msg {
            Some(m) => st.msi.insert(gsi, m) != Some(m),
            None => st.msi.remove(&gsi).is_some(),
        };
        if changed {
            self.commit(&st)?;
        }
        Ok(())
    }

    /// `count` vectors for one device: a GSI and a registered irqfd each.
    pub fn allocate(self: &Arc<Self>, count: u16) -> Result<Arc<KvmMsiVectors>, InterruptError> {
        let base = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let base = st.next_gsi;
            let end = base as usize + usize::from(count);
            if end > MAX_ROUTES {
                return Err(InterruptError::OutOfGsis(usize::from(count)));
            }
            st.next_gsi = end as u32;
            base
        };
        let mut irqfds = Vec::with_capacity(usize::from(count));
        for i in 0..u32::from(count) {
            let gsi = base + i;
            let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(InterruptError::EventFd)?;
            self.vm
                .register_irqfd(&evt, gsi)
                .map_err(|source| InterruptError::Irqfd { gsi, source })?;
            irqfds.push(evt);
        }
        Ok(Arc::new(KvmMsiVectors {
            router: self.clone(),
            base,
            irqfds,
        }))
    }
}

/// One device's vectors on KVM.
pub struct KvmMsiVectors {
    router: Arc<MsiRouter>,
    base: u32,
    irqfds: Vec<EventFd>,
}

impl KvmMsiVectors {
    /// The GSI of `vector`.
    pub fn gsi(&self, vector: u16) -> u32 {
        self.base + u32::from(vector)
    }
}

impl MsiVectors for KvmMsiVectors {
    fn route(&self, vector: u16, msg: Option<MsiMessage>) -> io::Result<()> {
        if usize::from(vector) >= self.irqfds.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        self.router.set(self.gsi(vector), msg)
    }

    fn trigger(&self, vector: u16) -> io::Result<()> {
        match self.irqfds.get(usize::from(vector)) {
            Some(evt) => evt.write(1),
            None => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }
}

impl Drop for KvmMsiVectors {
    fn drop(&mut self) {
        for (i, evt) in self.irqfds.iter().enumerate() {
            let _ = self.router.vm.unregister_irqfd(evt, self.base + i as u32);
            let _ = self.router.set(self.base + i as u32, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real KVM: routes commit, and a routed vector's irqfd is accepted.
    #[test]
    fn routes_and_irqfds_on_real_kvm() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("SKIP: /dev/kvm is absent (this test uses a real KVM VM)");
            return;
        }
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        let router = MsiRouter::new(&vm).unwrap();
        let a = router.allocate(3).unwrap();
        let b = router.allocate(2).unwrap();
        assert_eq!((a.gsi(0), b.gsi(0)), (FIRST_MSI_GSI, FIRST_MSI_GSI + 3));
        let msg = MsiMessage {
            address: 0xfee0_0000,
            data: 0x30,
        };
        a.route(1, Some(msg)).unwrap();
        b.route(0, Some(msg)).unwrap();
        a.trigger(1).unwrap();
        assert!(a.route(3, Some(msg)).is_err());
        assert!(a.trigger(7).is_err());
        assert_eq!(router.state.lock().unwrap().msi.len(), 2);
        drop(a);
        assert_eq!(router.state.lock().unwrap().msi.len(), 1);
    }
}
