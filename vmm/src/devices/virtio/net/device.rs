//! The virtio-net device: what it offers, its configuration space, and
//! activation (which starts the worker in `worker.rs`).
//!
//! Queues: receive/transmit pair `i` is queues `2i`/`2i + 1` and is served
//! by tap queue `i`. With more than one tap queue the device offers
//! `VIRTIO_NET_F_MQ` and `VIRTIO_NET_F_CTRL_VQ`; the control queue is then
//! queue `2 * max_virtqueue_pairs`. A single-queue NIC offers neither and
//! looks exactly as before multiqueue existed.

use std::sync::Arc;

use kiln_api::vm::RateLimitConfig;

use super::link::NetLink;
use super::worker::{NetWorker, Pair};
use super::*;
use crate::devices::virtio::rate_limiter::RateLimiter;
use crate::devices::virtio::worker::Worker;
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, VirtioDevice, F_EVENT_IDX, F_INDIRECT_DESC,
    F_VERSION_1, TYPE_NET,
};
use libc::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_UFO};

use super::mac::MacAddr;
use super::TapQueue;

const QUEUE_SIZE: u16 = 256;
/// Most queue pairs of one NIC (33 queues, 34 MSI-X vectors).
pub const MAX_QUEUE_PAIRS: usize = 16;

pub struct NetDevice {
    taps: Vec<Arc<dyn TapQueue>>,
    mac: MacAddr,
    features: u64,
    rate_limit: Option<RateLimitConfig>,
    rx_rate_limit: Option<RateLimitConfig>,
    link: Arc<NetLink>,
    worker: Option<Worker>,
    name: String,
}

impl NetDevice {
    /// A NIC on `taps` (one per queue pair, 1 to [`MAX_QUEUE_PAIRS`], all
    /// queues of one tap). `rate_limit` limits transmit, `rx_rate_limit`
    /// receive.
    pub fn new<T: TapQueue + 'static>(
        taps: Vec<T>,
        mac: MacAddr,
        rate_limit: Option<RateLimitConfig>,
        rx_rate_limit: Option<RateLimitConfig>,
        name: String,
    ) -> std::io::Result<Self> {
        if taps.is_empty() || taps.len() > MAX_QUEUE_PAIRS {
            return Err(std::io::Error::other(format!(
                "{} tap queues; 1 to {MAX_QUEUE_PAIRS} are supported",
                taps.len()
            )));
        }
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
        if taps.len() > 1 {
            features |= F_MQ | F_CTRL_VQ;
        }
        // UFO only where this kernel's tap still takes it.
        if taps[0].set_offload(TUN_F_CSUM | TUN_F_UFO).is_ok() {
            features |= F_GUEST_UFO | F_HOST_UFO;
        }
        let _ = taps[0].set_offload(0);
        Ok(NetDevice {
            taps: taps
                .into_iter()
                .map(|t| Arc::new(t) as Arc<dyn TapQueue>)
                .collect(),
            mac,
            features,
            rate_limit,
            rx_rate_limit,
            link: Arc::new(NetLink::new(mac)?),
            worker: None,
            name,
        })
    }

    /// The link state, for the control API (and the wiring, which gives
    /// it the transport's interrupt).
    pub fn link(&self) -> Arc<NetLink> {
        self.link.clone()
    }

    fn pairs(&self) -> usize {
        self.taps.len()
    }

    /// The configuration space: mac, status, max_virtqueue_pairs, mtu.
    fn config(&self) -> [u8; 12] {
        let mut config = [0u8; 12];
        config[0..6].copy_from_slice(&self.mac.0);
        let status = if self.link.is_up() { STATUS_LINK_UP } else { 0 };
        config[6..8].copy_from_slice(&status.to_le_bytes());
        config[8..10].copy_from_slice(&(self.pairs() as u16).to_le_bytes());
        config[10..12].copy_from_slice(&1500u16.to_le_bytes());
        config
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

fn limiter(c: &Option<RateLimitConfig>) -> Result<Option<RateLimiter>, ActivateError> {
    match c {
        Some(c) => RateLimiter::from_config(c).map_err(ActivateError::Backend),
        None => Ok(None),
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
        let n = if self.pairs() > 1 {
            2 * self.pairs() + 1
        } else {
            2
        };
        vec![QUEUE_SIZE; n]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        let mq = ctx.acked_features & F_MQ != 0;
        // A legacy driver (no VERSION_1) uses the 10-byte header unless it
        // took MRG_RXBUF (bit 15, which adds num_buffers); the tap is told
        // the same size, so frames pass through unchanged.
        const MRG_RXBUF: u64 = 1 << 15;
        let hdr_len = if ctx.acked_features & (F_VERSION_1 | MRG_RXBUF) != 0 {
            NET_HDR_LEN
        } else {
            LEGACY_HDR_LEN
        };
        // Without MQ only pair 0 exists for the driver.
        let usable = if mq { self.pairs() } else { 1 };
        let mut pairs = Vec::with_capacity(usable);
        for (i, tap) in self.taps.iter().enumerate().take(usable) {
            let rx = ctx.queues.get_mut(2 * i).and_then(Option::take);
            let tx = ctx.queues.get_mut(2 * i + 1).and_then(Option::take);
            if i == 0 && rx.is_none() {
                return Err(ActivateError::MissingQueue(0));
            }
            if i == 0 && tx.is_none() {
                return Err(ActivateError::MissingQueue(1));
            }
            tap.set_vnet_hdr_size(hdr_len as i32)
                .map_err(|e| ActivateError::Backend(std::io::Error::other(e.to_string())))?;
            tap.set_offload(Self::tap_offloads(ctx.acked_features))
                .map_err(|e| ActivateError::Backend(std::io::Error::other(e.to_string())))?;
            pairs.push(Pair {
                rx,
                tx,
                tap: tap.clone(),
                backlog: Default::default(),
            });
        }
        let ctrl = if ctx.acked_features & F_CTRL_VQ != 0 {
            let at = 2 * usable;
            ctx.queues
                .get_mut(at)
                .and_then(Option::take)
                .map(|q| (at, q))
        } else {
            None
        };
        // One pair until the driver asks for more (virtio 1.2, 5.1.6.5.5).
        for (i, tap) in self.taps.iter().enumerate() {
            super::worker::attach(&**tap, i == 0);
        }
        let handler = NetWorker::new(
            ctx.mem,
            pairs,
            ctrl,
            mq,
            ctx.interrupt,
            limiter(&self.rate_limit)?,
            limiter(&self.rx_rate_limit)?,
            self.link.clone(),
            self.name.clone(),
        )
        .with_hdr_len(hdr_len);
        self.worker = Some(
            Worker::spawn(format!("{}-io", self.name), ctx.queue_evts, handler)
                .map_err(ActivateError::Thread)?,
        );
        log::info!(
            "{}: activated, {usable} queue pair(s){}",
            self.name,
            if mq { " (MQ)" } else { "" }
        );
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
    }
}
