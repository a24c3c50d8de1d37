//! The common configuration structure (virtio 1.2, 4.1.4.3): feature
//! negotiation, device status, and the per-queue registers selected by
//! `queue_select`.
//!
//! ```text
//! 0x00 device_feature_select u32   0x04 device_feature u32 (RO)
//! 0x08 driver_feature_select u32   0x0c driver_feature u32
//! 0x10 config_msix_vector u16      0x12 num_queues u16 (RO)
//! 0x14 device_status u8            0x15 config_generation u8 (RO)
//! 0x16 queue_select u16            0x18 queue_size u16
//! 0x1a queue_msix_vector u16       0x1c queue_enable u16
//! 0x1e queue_notify_off u16 (RO)   0x20 queue_desc u64
//! 0x28 queue_driver u64            0x30 queue_device u64
//! ```
//! Accesses of the wrong width read zero and are ignored on write. Queue
//! registers are frozen once the device is live (DRIVER_OK).

use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::interrupt::{VirtioInterrupt, NO_VECTOR};
use crate::devices::virtio::{
    ActivateContext, F_EVENT_IDX, F_VERSION_1, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
};
use crate::devices::GuestMemoryMmap;

/// The device's own copy of a queue the driver set up.
fn copy_queue(q: &Queue) -> Queue {
    let mut c = Queue::new(q.max_size()).expect("the original was built with this size");
    c.set_size(q.size());
    let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
    let (lo, hi) = split(q.desc_table());
    c.set_desc_table_address(lo, hi);
    let (lo, hi) = split(q.avail_ring());
    c.set_avail_ring_address(lo, hi);
    let (lo, hi) = split(q.used_ring());
    c.set_used_ring_address(lo, hi);
    c.set_event_idx(q.event_idx_enabled());
    c.set_ready(q.ready());
    c
}

/// What the transport must do after a common-configuration write.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Reset,
    Activate,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("queue {0} was enabled with rings outside guest memory or a bad size")]
    InvalidQueue(usize),
    #[error("duplicating a queue eventfd failed")]
    EventFd(#[source] std::io::Error),
}

pub struct CommonConfig {
    pub(super) device_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    pub(super) driver_features: u64,
    pub(super) queue_select: u16,
    pub(super) queues: Vec<Queue>,
    pub(super) live: bool,
}

fn read_u16(data: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes(data.try_into().ok()?))
}

fn read_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(data.try_into().ok()?))
}

impl CommonConfig {
    pub fn new(max_sizes: &[u16], device_features: u64) -> Self {
        CommonConfig {
            device_features,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            queue_select: 0,
            queues: max_sizes
                .iter()
                .map(|&m| Queue::new(m).expect("queue sizes are powers of two"))
                .collect(),
            live: false,
        }
    }

    pub fn reset(&mut self) {
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.live = false;
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8], irq: &VirtioInterrupt) {
        let sel = usize::from(self.queue_select);
        let value: u64 = match (offset, data.len()) {
            (0x00, 4) => u64::from(self.device_feature_select),
            (0x04, 4) => match self.device_feature_select {
                0 => self.device_features & 0xffff_ffff,
                1 => self.device_features >> 32,
                _ => 0,
            },
            (0x08, 4) => u64::from(self.driver_feature_select),
            (0x0c, 4) => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            (0x10, 2) => u64::from(irq.config_vector().load(Ordering::Acquire)),
            (0x12, 2) => self.queues.len() as u64,
            (0x14, 1) => u64::from(irq.status()),
            (0x15, 1) => u64::from(irq.config_generation()),
            (0x16, 2) => u64::from(self.queue_select),
            (0x18, 2) => self.queues.get(sel).map_or(0, |q| u64::from(q.size())),
            (0x1a, 2) => irq.queue_vector(sel).map_or(u64::from(NO_VECTOR), |v| {
                u64::from(v.load(Ordering::Acquire))
            }),
            (0x1c, 2) => self.queues.get(sel).map_or(0, |q| u64::from(q.ready())),
            (0x1e, 2) => sel as u64,
            (0x20 | 0x28 | 0x30, 4 | 8) | (0x24 | 0x2c | 0x34, 4) => {
                let Some(q) = self.queues.get(sel) else {
                    data.fill(0);
                    return;
                };
                let addr = match offset & !7 {
                    0x20 => q.desc_table(),
                    0x28 => q.avail_ring(),
                    _ => q.used_ring(),
                };
                if offset & 4 != 0 {
                    addr >> 32
                } else {
                    addr
                }
            }
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    pub fn write(&mut self, offset: u64, data: &[u8], irq: &VirtioInterrupt) -> Action {
        let live = self.live;
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = read_u32(data).unwrap_or(0),
            (0x08, 4) => self.driver_feature_select = read_u32(data).unwrap_or(0),
            (0x0c, 4) => {
                let v = u64::from(read_u32(data).unwrap_or(0));
                if irq.status() & STATUS_FEATURES_OK == 0 {
                    match self.driver_feature_select {
                        0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v,
                        1 => self.driver_features = (self.driver_features & 0xffff_ffff) | v << 32,
                        _ => {}
                    }
                }
            }
            (0x10, 2) => irq
                .config_vector()
                .store(read_u16(data).unwrap_or(NO_VECTOR), Ordering::Release),
            (0x14, 1) => return self.write_status(data[0], irq),
            (0x16, 2) => self.queue_select = read_u16(data).unwrap_or(0),
            (0x18, 2) if !live => {
                let size = read_u16(data).unwrap_or(0);
                if let Some(q) = self.selected() {
                    // Queue refuses sizes that are zero, above the maximum
                    // or not a power of two (it logs and keeps the old one).
                    if size != 0 && size <= q.max_size() && size.is_power_of_two() {
                        q.set_size(size);
                    } else {
                        log::warn!("virtio: driver asked for queue size {size}; ignored");
                    }
                }
            }
            (0x1a, 2) => {
                if let Some(v) = irq.queue_vector(usize::from(self.queue_select)) {
                    v.store(read_u16(data).unwrap_or(NO_VECTOR), Ordering::Release);
                }
            }
            (0x1c, 2) if !live && read_u16(data) == Some(1) => {
                if let Some(q) = self.selected() {
                    q.set_ready(true);
                }
            }
            (0x20 | 0x28 | 0x30, 4) | (0x24 | 0x2c | 0x34, 4) if !live => {
                let v = read_u32(data).unwrap_or(0);
                let (lo, hi) = if offset & 4 == 0 {
                    (Some(v), None)
                } else {
                    (None, Some(v))
                };
                if let Some(q) = self.selected() {
                    match offset & !7 {
                        0x20 => q.set_desc_table_address(lo, hi),
                        0x28 => q.set_avail_ring_address(lo, hi),
                        _ => q.set_used_ring_address(lo, hi),
                    }
                }
            }
            (0x20 | 0x28 | 0x30, 8) if !live => {
                let v = u64::from_le_bytes(data.try_into().expect("8 bytes"));
                let (lo, hi) = (Some(v as u32), Some((v >> 32) as u32));
                if let Some(q) = self.selected() {
                    match offset {
                        0x20 => q.set_desc_table_address(lo, hi),
                        0x28 => q.set_avail_ring_address(lo, hi),
                        _ => q.set_used_ring_address(lo, hi),
                    }
                }
            }
            _ => {}
        }
        Action::None
    }

    fn write_status(&mut self, value: u8, irq: &VirtioInterrupt) -> Action {
        if value == 0 {
            return Action::Reset;
        }
        let old = irq.status();
        let mut new = value | (old & STATUS_NEEDS_RESET);
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let ok = self.driver_features & !self.device_features == 0
                && self.driver_features & F_VERSION_1 != 0;
            if !ok {
                log::warn!(
                    "virtio: driver features {:#x} not a subset of {:#x} with VERSION_1; refused",
                    self.driver_features,
                    self.device_features
                );
                new &= !STATUS_FEATURES_OK;
            }
        }
        // Bits once set stay set until reset.
        new |= old & (STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        irq.set_status(new);
        if new & STATUS_DRIVER_OK != 0
            && old & STATUS_DRIVER_OK == 0
            && new & STATUS_FEATURES_OK != 0
            && !self.live
        {
            self.live = true;
            return Action::Activate;
        }
        Action::None
    }

    /// What the device needs to start, checked against guest memory.
    pub fn activation(
        &mut self,
        mem: &GuestMemoryMmap,
        irq: &std::sync::Arc<VirtioInterrupt>,
        evts: &[EventFd],
    ) -> Result<ActivateContext, ActivationError> {
        let event_idx = self.driver_features & F_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter_mut().enumerate() {
            if !q.ready() {
                queues.push(None);
                continue;
            }
            if !q.is_valid(mem) {
                return Err(ActivationError::InvalidQueue(i));
            }
            q.set_event_idx(event_idx);
            queues.push(Some(copy_queue(q)));
        }
        let queue_evts = evts
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ActivationError::EventFd)?;
        Ok(ActivateContext {
            mem: mem.clone(),
            queues,
            queue_evts,
            interrupt: irq.clone(),
            acked_features: self.driver_features,
        })
    }
}
