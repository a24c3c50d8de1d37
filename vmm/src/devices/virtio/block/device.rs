//! The virtio-blk device: what it offers (features, configuration space)
//! and its worker, which serves queue 0 with [`process_queue`].

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use kiln_api::vm::RateLimitConfig;
use kiln_block::Disk;
use virtio_queue::{Queue, QueueT};

use super::request::{process_queue, BlockBackend, Served};
use super::*;
use crate::devices::virtio::queue;
use crate::devices::virtio::rate_limiter::RateLimiter;
use crate::devices::virtio::worker::{Wake, Worker, WorkerHandler};
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, VirtioDevice, VirtioInterrupt, F_EVENT_IDX,
    F_INDIRECT_DESC, F_VERSION_1, TYPE_BLOCK,
};
use crate::devices::GuestMemoryMmap;

const QUEUE_SIZE: u16 = 256;
const CONFIG_LEN: usize = 60;

/// How the disk is presented.
#[derive(Clone, Debug, Default)]
pub struct BlockOptions {
    pub read_only: bool,
    pub serial: String,
    pub rate_limit: Option<RateLimitConfig>,
    /// Adaptive polling of the queue after serving, at most this many
    /// microseconds (0: off). See `worker.rs`.
    pub poll_us: u32,
}

pub struct BlockDevice {
    disk: Arc<dyn Disk>,
    opts: BlockOptions,
    config: [u8; CONFIG_LEN],
    worker: Option<Worker>,
    /// A name for logs and the worker thread.
    name: String,
}

impl BlockDevice {
    pub fn new(disk: Arc<dyn Disk>, opts: BlockOptions, name: String) -> Self {
        let mut config = [0u8; CONFIG_LEN];
        let capacity = disk.size() / SECTOR_SIZE;
        config[0..8].copy_from_slice(&capacity.to_le_bytes());
        // seg_max: all but header and status of a full queue.
        config[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        // num_queues (only read with VIRTIO_BLK_F_MQ, which is not offered).
        config[34..36].copy_from_slice(&1u16.to_le_bytes());
        let max_sectors = u32::MAX;
        config[36..40].copy_from_slice(&max_sectors.to_le_bytes());
        config[40..44].copy_from_slice(&MAX_DISCARD_SEGS.to_le_bytes());
        config[44..48].copy_from_slice(&1u32.to_le_bytes());
        config[48..52].copy_from_slice(&max_sectors.to_le_bytes());
        config[52..56].copy_from_slice(&MAX_DISCARD_SEGS.to_le_bytes());
        config[56] = 1;
        BlockDevice {
            disk,
            opts,
            config,
            worker: None,
            name,
        }
    }

    fn read_only(&self) -> bool {
        self.opts.read_only || self.disk.read_only()
    }
}

impl VirtioDevice for BlockDevice {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn class_code(&self) -> u32 {
        // Mass storage, SCSI (what QEMU's virtio-blk shows).
        0x010000
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = F_VERSION_1 | F_INDIRECT_DESC | F_EVENT_IDX | F_SEG_MAX | F_BLK_SIZE | F_FLUSH;
        if self.read_only() {
            f |= F_RO;
        } else {
            f |= F_DISCARD | F_WRITE_ZEROES;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        let queue = ctx
            .queues
            .get_mut(0)
            .and_then(Option::take)
            .ok_or(ActivateError::MissingQueue(0))?;
        let mut backend = BlockBackend::new(self.disk.clone(), &self.opts.serial, self.read_only());
        if let Some(rl) = &self.opts.rate_limit {
            backend.limiter = RateLimiter::from_config(rl).map_err(ActivateError::Backend)?;
        }
        let handler = BlockWorker {
            mem: ctx.mem,
            queue,
            backend,
            interrupt: ctx.interrupt,
            broken: false,
            name: self.name.clone(),
        };
        let worker = Worker::spawn_polling(
            format!("{}-io", self.name),
            ctx.queue_evts,
            handler,
            Duration::from_micros(u64::from(self.opts.poll_us)),
        )
        .map_err(ActivateError::Thread)?;
        self.worker = Some(worker);
        if self.opts.poll_us > 0 {
            log::info!(
                "{}: activated, polling up to {} us",
                self.name,
                self.opts.poll_us
            );
        } else {
            log::info!("{}: activated", self.name);
        }
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
    }
}

struct BlockWorker {
    mem: GuestMemoryMmap,
    queue: Queue,
    backend: BlockBackend,
    interrupt: Arc<VirtioInterrupt>,
    /// Set once the driver broke the ring protocol: nothing more is served
    /// until a reset.
    broken: bool,
    name: String,
}

impl BlockWorker {
    fn serve(&mut self) {
        if self.broken {
            return;
        }
        match process_queue(&self.mem, &mut self.queue, &mut self.backend) {
            Ok((notify, served)) => {
                if notify {
                    self.interrupt.signal_queue(0);
                }
                if served == Served::Throttled {
                    log::trace!("{}: rate limited", self.name);
                }
            }
            Err(e) => {
                log::error!("{}: {e}; the device needs a reset", self.name);
                self.broken = true;
                self.interrupt.set_needs_reset();
            }
        }
    }

    /// Whether serving now would do something.
    fn can_serve(&self) -> bool {
        !self.broken
            && !self
                .backend
                .limiter
                .as_ref()
                .is_some_and(|l| l.is_blocked())
    }
}

impl WorkerHandler for BlockWorker {
    fn poll(&mut self) -> Option<usize> {
        if !self.can_serve() {
            return None;
        }
        // A ring error is for `serve` to find and report.
        match queue::has_pending(&self.mem, &self.queue) {
            Ok(false) => None,
            Ok(true) | Err(_) => Some(0),
        }
    }

    fn set_notify(&mut self, enabled: bool) -> bool {
        if self.broken {
            return false;
        }
        if enabled {
            // True if the driver added work since (a ring error too: let
            // `serve` report it).
            self.queue.enable_notification(&self.mem).unwrap_or(true)
        } else {
            queue::suppress_notifications(&self.mem, &mut self.queue);
            false
        }
    }

    fn extra_fds(&self) -> Vec<RawFd> {
        self.backend
            .limiter
            .as_ref()
            .map(|l| vec![l.timer_fd()])
            .unwrap_or_default()
    }

    fn handle(&mut self, wake: Wake) {
        match wake {
            Wake::Queue(_) => {
                // While throttled, the timer decides when to go on.
                if self
                    .backend
                    .limiter
                    .as_ref()
                    .is_some_and(|l| l.is_blocked())
                {
                    return;
                }
                self.serve();
            }
            Wake::Fd(_) => {
                if let Some(l) = &mut self.backend.limiter {
                    l.on_timer();
                }
                self.serve();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{mem_two_regions, GuestQueue};
    use vm_memory::{Bytes, GuestAddress};

    /// The driver's test (virtio 1.2, 2.7.10): notify if the new index
    /// passed `event` since `old`.
    fn need_event(event: u16, new: u16, old: u16) -> bool {
        new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
    }

    #[test]
    fn polling_suppresses_and_restores_notifications() {
        let mem = mem_two_regions();
        for event_idx in [false, true] {
            let gq = GuestQueue::new(&mem, 0x1000, 16);
            let mut q = gq.queue();
            q.set_event_idx(event_idx);
            // As if 5 requests had been offered and served.
            gq.set_avail_idx(5);
            q.set_next_avail(5);
            let flags = |m: &GuestMemoryMmap| m.read_obj::<u16>(GuestAddress(gq.used)).unwrap();
            let avail_event = |m: &GuestMemoryMmap| {
                m.read_obj::<u16>(GuestAddress(gq.used + 4 + 8 * 16))
                    .unwrap()
            };
            queue::suppress_notifications(&mem, &mut q);
            if event_idx {
                let e = avail_event(&mem);
                assert!(
                    !need_event(e, 6, 5),
                    "driver would still notify (avail_event {e})"
                );
                assert!(!need_event(e, 40, 5));
            } else {
                assert_eq!(flags(&mem) & 1, 1, "VIRTQ_USED_F_NO_NOTIFY not set");
            }
            // Nothing new: enabling says so and restores notifications.
            assert!(!q.enable_notification(&mem).unwrap());
            if event_idx {
                assert!(
                    need_event(avail_event(&mem), 6, 5),
                    "notifications not back"
                );
            } else {
                assert_eq!(flags(&mem) & 1, 0);
            }
            // A request published while suppressed is reported on enabling.
            queue::suppress_notifications(&mem, &mut q);
            gq.set_avail_idx(6);
            assert!(
                q.enable_notification(&mem).unwrap(),
                "event_idx {event_idx}"
            );
        }
    }
}
