//! The virtio-net device: what it offers, and its worker.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use kiln_api::vm::RateLimitConfig;
use virtio_queue::Queue;

use super::rxtx::{process_rx_hdr, process_tx_hdr};
use super::*;
use crate::devices::virtio::rate_limiter::RateLimiter;
use crate::devices::virtio::worker::{Wake, Worker, WorkerHandler};
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, VirtioDevice, VirtioInterrupt, F_EVENT_IDX,
    F_INDIRECT_DESC, F_VERSION_1, TYPE_NET,
};
use crate::memory::GuestMemoryMmap;
use crate::net::tap::{Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_UFO};
use crate::net::MacAddr;

const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;

pub struct NetDevice {
    tap: Option<Tap>,
    config: [u8; 12],
    features: u64,
    rate_limit: Option<RateLimitConfig>,
    worker: Option<Worker>,
    /// The tap comes back from the worker on reset.
    tap_back: Option<std::sync::mpsc::Receiver<Tap>>,
    name: String,
}

impl NetDevice {
    pub fn new(tap: Tap, mac: MacAddr, rate_limit: Option<RateLimitConfig>, name: String) -> Self {
        let mut config = [0u8; 12];
        config[0..6].copy_from_slice(&mac.0);
        config[6..8].copy_from_slice(&STATUS_LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&1500u16.to_le_bytes());
        let mut features = F_VERSION_1
            | F_INDIRECT_DESC
            | F_EVENT_IDX
            | F_MAC
            | F_STATUS
            | F_CSUM
            | F_GUEST_CSUM
            | F_HOST_TSO4
            | F_HOST_TSO6
            | F_GUEST_TSO4
            | F_GUEST_TSO6;
        // UFO only where this kernel's tap still takes it.
        if tap.set_offload(TUN_F_CSUM | TUN_F_UFO).is_ok() {
            features |= F_GUEST_UFO | F_HOST_UFO;
        }
        let _ = tap.set_offload(0);
        NetDevice {
            tap: Some(tap),
            config,
            features,
            rate_limit,
            worker: None,
            tap_back: None,
            name,
        }
    }

    /// The tap offload flags matching what the guest accepts.
    pub fn tap_offloads(acked: u64) -> u32 {
        let mut f = 0;
        if acked & F_GUEST_CSUM != 0 {
            f |= TUN_F_CSUM;
            if acked & F_GUEST_TSO4 != 0 {
                f |= TUN_F_TSO4;
            }
            if acked & F_GUEST_TSO6 != 0 {
                f |= TUN_F_TSO6;
            }
            if acked & F_GUEST_UFO != 0 {
                f |= TUN_F_UFO;
            }
        }
        f
    }
}

impl VirtioDevice for NetDevice {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn class_code(&self) -> u32 {
        0x020000
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        let rx = ctx.queues.get_mut(RX).and_then(Option::take);
        let tx = ctx.queues.get_mut(TX).and_then(Option::take);
        let (rx, tx) = match (rx, tx) {
            (Some(rx), Some(tx)) => (rx, tx),
            (None, _) => return Err(ActivateError::MissingQueue(RX)),
            (_, None) => return Err(ActivateError::MissingQueue(TX)),
        };
        let tap = self
            .tap
            .take()
            .or_else(|| self.tap_back.take().and_then(|r| r.recv().ok()))
            .ok_or_else(|| ActivateError::Backend(std::io::Error::other("tap lost")))?;
        // A legacy driver (no VERSION_1) uses the 10-byte header unless it
        // took MRG_RXBUF (bit 15, which adds num_buffers); the tap is told
        // the same size, so frames pass through unchanged.
        const MRG_RXBUF: u64 = 1 << 15;
        let hdr_len = if ctx.acked_features & (F_VERSION_1 | MRG_RXBUF) != 0 {
            NET_HDR_LEN
        } else {
            LEGACY_HDR_LEN
        };
        if let Err(e) = tap.set_vnet_hdr_size(hdr_len as i32) {
            self.tap = Some(tap);
            return Err(ActivateError::Backend(std::io::Error::other(e.to_string())));
        }
        if let Err(e) = tap.set_offload(Self::tap_offloads(ctx.acked_features)) {
            self.tap = Some(tap);
            return Err(ActivateError::Backend(std::io::Error::other(e.to_string())));
        }
        let limiter = match &self.rate_limit {
            Some(c) => RateLimiter::from_config(c).map_err(ActivateError::Backend)?,
            None => None,
        };
        let (send_back, tap_back) = std::sync::mpsc::channel();
        self.tap_back = Some(tap_back);
        let handler = NetWorker {
            mem: ctx.mem,
            rx,
            tx,
            tap: Some(tap),
            send_back,
            interrupt: ctx.interrupt,
            limiter,
            pending: None,
            tx_buf: Vec::new(),
            broken: false,
            name: self.name.clone(),
            hdr_len,
        };
        self.worker = Some(
            Worker::spawn(format!("{}-io", self.name), ctx.queue_evts, handler)
                .map_err(ActivateError::Thread)?,
        );
        log::info!("{}: activated", self.name);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
        if self.tap.is_none() {
            self.tap = self.tap_back.take().and_then(|r| r.try_recv().ok());
        }
    }
}

struct NetWorker {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    tap: Option<Tap>,
    send_back: std::sync::mpsc::Sender<Tap>,
    interrupt: Arc<VirtioInterrupt>,
    limiter: Option<RateLimiter>,
    pending: Option<Vec<u8>>,
    tx_buf: Vec<u8>,
    broken: bool,
    name: String,
    /// The virtio-net header's length for the driver's interface.
    hdr_len: usize,
}

impl Drop for NetWorker {
    fn drop(&mut self) {
        if let Some(tap) = self.tap.take() {
            let _ = self.send_back.send(tap);
        }
    }
}

impl NetWorker {
    fn fail(&mut self, e: crate::devices::virtio::queue::QueueError) {
        log::error!("{}: {e}; the device needs a reset", self.name);
        self.broken = true;
        self.interrupt.set_needs_reset();
    }

    fn rx(&mut self) {
        let Some(tap) = self.tap.as_mut() else { return };
        match process_rx_hdr(
            &self.mem,
            &mut self.rx,
            tap,
            &mut self.pending,
            self.hdr_len,
        ) {
            Ok((notify, _)) => {
                if notify {
                    self.interrupt.signal_queue(RX);
                }
            }
            Err(e) => self.fail(e),
        }
    }

    fn tx(&mut self) {
        let Some(tap) = self.tap.as_mut() else { return };
        if self.limiter.as_ref().is_some_and(|l| l.is_blocked()) {
            return;
        }
        match process_tx_hdr(
            &self.mem,
            &mut self.tx,
            tap,
            &mut self.tx_buf,
            self.limiter.as_mut(),
            self.hdr_len,
        ) {
            Ok((notify, _)) => {
                if notify {
                    self.interrupt.signal_queue(TX);
                }
            }
            Err(e) => self.fail(e),
        }
    }
}

impl WorkerHandler for NetWorker {
    fn extra_fds(&self) -> Vec<RawFd> {
        let mut v: Vec<RawFd> = self.tap.iter().map(|t| t.as_raw_fd()).collect();
        if let Some(l) = &self.limiter {
            v.push(l.timer_fd());
        }
        v
    }

    fn handle(&mut self, wake: Wake) {
        if self.broken {
            return;
        }
        match wake {
            Wake::Queue(RX) | Wake::Fd(0) => self.rx(),
            Wake::Queue(_) => self.tx(),
            Wake::Fd(_) => {
                if let Some(l) = &mut self.limiter {
                    l.on_timer();
                }
                self.tx();
            }
        }
    }
}
