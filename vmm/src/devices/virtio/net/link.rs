//! A NIC's link state, shared by the device (configuration space), its
//! worker (which delivers nothing while the link is down) and the control
//! API (which sets it). A change bumps the configuration generation and
//! raises the configuration-change interrupt once the transport has
//! handed over its [`VirtioInterrupt`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::mac::MacAddr;
use crate::devices::virtio::VirtioInterrupt;

pub struct NetLink {
    /// The NIC's MAC address, for the control API to report.
    mac: MacAddr,
    up: AtomicBool,
    /// Written on every change, so the worker looks at the link again.
    kick: EventFd,
    interrupt: Mutex<Option<Arc<VirtioInterrupt>>>,
}

impl NetLink {
    pub fn new(mac: MacAddr) -> std::io::Result<Self> {
        Ok(NetLink {
            mac,
            up: AtomicBool::new(true),
            kick: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
            interrupt: Mutex::new(None),
        })
    }

    /// The transport's interrupt state, through which configuration
    /// changes are announced.
    pub fn attach_interrupt(&self, irq: Arc<VirtioInterrupt>) {
        *self.interrupt.lock().unwrap_or_else(|e| e.into_inner()) = Some(irq);
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Set the link; returns whether it changed. A change is announced to
    /// the driver (new configuration generation, configuration interrupt).
    pub fn set_up(&self, up: bool) -> bool {
        if self.up.swap(up, Ordering::AcqRel) == up {
            return false;
        }
        if let Some(irq) = &*self.interrupt.lock().unwrap_or_else(|e| e.into_inner()) {
            irq.config_changed();
        }
        let _ = self.kick.write(1);
        true
    }

    pub(super) fn kick_fd(&self) -> &EventFd {
        &self.kick
    }
}
