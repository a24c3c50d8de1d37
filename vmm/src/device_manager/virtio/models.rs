//! The virtio device models of a VM, built from its configuration before
//! KVM is touched: each disk opened (through `kiln_block`, told its format
//! and its whole backing chain), each NIC's taps opened, the entropy
//! source. A disk or tap that cannot be opened fails here, before
//! `/dev/kvm` is opened; [`super::attach`] then wires the models in.

use std::path::Path;
use std::sync::Arc;

use kiln_api::control::LinkState;
use kiln_api::vm::{AgentConfig, DiskBus, DiskConfig, NetConfig};
use kiln_block::{open_disk_chain, BackingFile, OpenOptions};

use super::WiringError;
use crate::devices::virtio::block::{BlockDevice, BlockOptions};
use crate::devices::virtio::console::ConsoleDevice;
use crate::devices::virtio::input::{InputDevice, Tablet};
use crate::devices::virtio::net::{NetDevice, NetLink, MAX_QUEUE_PAIRS};
use crate::devices::virtio::rng::RngDevice;
use crate::devices::virtio::VirtioDevice;
use crate::disks::{ClosableDisk, DiskSet};
use crate::net::tap::Tap;
use crate::net::MacAddr;

/// The models, in PCI slot order: disks, NICs, entropy, the agent's
/// console.
pub struct VirtioModels {
    /// (model, transitional)
    pub(super) models: Vec<(Box<dyn VirtioDevice>, bool)>,
    /// The link of each NIC, with the index of its model.
    pub(super) links: Vec<(usize, Arc<NetLink>)>,
    /// Every disk, as its device serves it: the main thread closes them
    /// when the VMM ends (`disks.rs`).
    pub(super) disks: DiskSet,
    /// The tablet's host handle, when the VM has one ([`Self::add_tablet`]).
    pub(super) tablet: Option<Tablet>,
}

impl VirtioModels {
    /// Open the configured disks and NICs and make the devices.
    /// `rng`: an entropy device, `Some(transitional)`.
    pub fn open(
        disks: &[DiskConfig],
        nets: &[NetConfig],
        rng: Option<bool>,
    ) -> Result<Self, WiringError> {
        let mut models: Vec<(Box<dyn VirtioDevice>, bool)> = Vec::new();
        let mut disk_set = DiskSet::default();
        // SATA disks are the AHCI controller's (`device_manager/ahci.rs`).
        let virtio_disks = disks.iter().filter(|d| d.bus == DiskBus::Virtio);
        for (i, d) in virtio_disks.enumerate() {
            models.push((block_device(i, d, &mut disk_set)?, d.transitional));
        }
        let mut links = Vec::new();
        for (i, n) in nets.iter().enumerate() {
            let (model, link) = net_device(i, n)?;
            links.push((models.len(), link));
            models.push((model, n.transitional));
        }
        if let Some(transitional) = rng {
            models.push((
                Box::new(RngDevice::new().map_err(WiringError::Rng)?),
                transitional,
            ));
        }
        Ok(VirtioModels {
            models,
            links,
            disks: disk_set,
            tablet: None,
        })
    }

    /// The guest agent channel (a virtio-console), listening on its socket
    /// (a stale socket file there is replaced) before KVM is touched.
    pub fn add_agent(&mut self, agent: Option<&AgentConfig>) -> Result<(), WiringError> {
        let Some(a) = agent else { return Ok(()) };
        let err = |source| WiringError::Agent {
            path: a.socket.clone(),
            source,
        };
        let (listener, _) = crate::controller::bind(&a.socket).map_err(err)?;
        let dev = ConsoleDevice::new(listener).map_err(err)?;
        log::info!("virtio-console: guest agent port on {}", a.socket);
        self.models.push((Box::new(dev), false));
        Ok(())
    }

    /// Add a virtio-input tablet after the other models (their slots stay
    /// where they are without one).
    pub fn add_tablet(&mut self) -> Result<(), WiringError> {
        let (dev, tablet) = InputDevice::tablet().map_err(WiringError::Input)?;
        self.models.push((Box::new(dev), false));
        self.tablet = Some(tablet);
        Ok(())
    }
}

fn block_device(
    i: usize,
    d: &DiskConfig,
    disks: &mut DiskSet,
) -> Result<Box<dyn VirtioDevice>, WiringError> {
    let format = d.format;
    // Only the backing files the config names are opened, and each header
    // must name exactly the next one (never followed on its own say).
    let chain: Vec<BackingFile> = d
        .backing
        .iter()
        .map(|b| BackingFile {
            path: b.path.clone().into(),
            format: b.format,
        })
        .collect();
    let disk = open_disk_chain(
        Path::new(&d.path),
        format,
        OpenOptions {
            read_only: d.readonly,
            direct: d.direct,
        },
        &chain,
    )
    .map_err(|source| WiringError::Disk {
        path: d.path.clone(),
        format: format.as_str(),
        source,
    })?;
    log::info!(
        "virtio-blk{i}: {} ({format}, {} bytes{}{})",
        d.path,
        disk.size(),
        if d.readonly { ", read-only" } else { "" },
        if d.direct { ", O_DIRECT" } else { "" }
    );
    let disk = Arc::new(ClosableDisk::new(disk));
    let name = format!("virtio-blk{i}");
    disks.push(name.clone(), disk.clone());
    Ok(Box::new(BlockDevice::new(
        disk,
        BlockOptions {
            read_only: d.readonly,
            serial: d.serial.clone().unwrap_or_default(),
            rate_limit: d.rate_limit.clone(),
            poll_us: d.poll_us,
        },
        name,
    )))
}

fn net_taps(i: usize, n: &NetConfig) -> Result<Vec<Tap>, WiringError> {
    let queues = usize::from(n.queues.unwrap_or(1));
    if queues == 0 || queues > MAX_QUEUE_PAIRS {
        return Err(WiringError::NetQueues(i));
    }
    let tap_err = |source| WiringError::Tap { index: i, source };
    match (&n.tap, n.fd, &n.fds) {
        (Some(name), None, None) => Tap::open_queues(name, queues).map_err(tap_err),
        (None, Some(fd), None) if queues == 1 => {
            // SAFETY: the configuration hands this fd to the VMM (an
            // inherited tap); nothing else in the process uses it.
            Ok(vec![unsafe { Tap::from_raw_fd(fd) }.map_err(tap_err)?])
        }
        (None, None, Some(fds))
            if !fds.is_empty()
                && fds.len() <= MAX_QUEUE_PAIRS
                && n.queues.is_none_or(|q| usize::from(q) == fds.len()) =>
        {
            fds.iter()
                .map(|&fd| {
                    // SAFETY: as for `fd`: each is an inherited tap queue
                    // handed to the VMM.
                    unsafe { Tap::from_raw_fd(fd) }.map_err(tap_err)
                })
                .collect()
        }
        (None, Some(_), None) | (None, None, Some(_)) => Err(WiringError::NetQueues(i)),
        _ => Err(WiringError::NetBackend(i)),
    }
}

fn net_device(
    i: usize,
    n: &NetConfig,
) -> Result<(Box<dyn VirtioDevice>, Arc<NetLink>), WiringError> {
    let taps = net_taps(i, n)?;
    let mac = match &n.mac {
        Some(m) => m.parse::<MacAddr>().map_err(|_| WiringError::Mac {
            index: i,
            mac: m.clone(),
        })?,
        None => MacAddr::random_local(),
    };
    log::info!(
        "virtio-net{i}: tap {}, {} queue pair(s), MAC {mac}",
        taps[0].name(),
        taps.len()
    );
    let dev = NetDevice::new(
        taps,
        mac,
        n.rate_limit.clone(),
        n.rx_rate_limit.clone(),
        format!("virtio-net{i}"),
    )
    .map_err(|source| WiringError::Net { index: i, source })?;
    let link = dev.link();
    // Down from the start when so configured: before any interrupt is
    // attached, so the guest reads it down at its first look.
    if n.link == LinkState::Down {
        link.set_up(false);
        log::info!("virtio-net{i}: link down");
    }
    Ok((Box::new(dev), link))
}
