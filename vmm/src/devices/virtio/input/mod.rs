//! virtio-input (virtio 1.2, 5.8) as an absolute pointer: a tablet whose
//! position the guest reads in 0..=[`ABS_MAX`] on both axes, so that a
//! VNC viewer's cursor and the guest's agree (the PS/2 mouse only has
//! relative motion, which the guest accelerates).
//!
//! The configuration space answers the driver's select/subsel queries:
//! the name ([`NAME`]), IDs (virtual bus), the event types and codes the
//! device sends (EV_KEY: BTN_LEFT, BTN_RIGHT, BTN_MIDDLE; EV_REL:
//! REL_WHEEL; EV_ABS: ABS_X, ABS_Y) and both axes' ranges. Queue 0
//! (eventq) takes device-writable buffers of 8 bytes, one
//! `virtio_input_event` each; queue 1 (statusq, LEDs) is read and dropped.
//!
//! The host side is a [`Tablet`] handle (the VNC server, the control
//! API): [`Tablet::report`] queues one report (position, changed buttons,
//! wheel, SYN_REPORT) and wakes the worker through an eventfd; the worker
//! moves queued events into the buffers the driver offered. Reports made
//! while no driver runs the device are dropped, and at most
//! [`MAX_EVENTS`] events wait: a report that does not fit whole is
//! dropped, so the guest never sees half of one.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::chain::Buffers;
use super::queue::{self, Batch, QueueError};
use super::worker::{Wake, Worker, WorkerHandler};
use super::{ActivateContext, ActivateError, VirtioDevice, VirtioInterrupt, F_VERSION_1};
use crate::devices::GuestMemoryMmap;

/// virtio device type 18.
pub const TYPE_INPUT: u32 = 18;
/// What the driver reads as the device's name.
pub const NAME: &str = "Kiln Tablet";
/// Both axes run 0..=ABS_MAX.
pub const ABS_MAX: u32 = 32767;
/// Events waiting for buffers at most.
pub const MAX_EVENTS: usize = 256;
const QUEUE_SIZE: u16 = 64;

// Linux input event types and codes (include/uapi/linux/input-event-codes.h).
pub const EV_SYN: u16 = 0;
pub const EV_KEY: u16 = 1;
pub const EV_REL: u16 = 2;
pub const EV_ABS: u16 = 3;
pub const SYN_REPORT: u16 = 0;
pub const BTN_LEFT: u16 = 0x110;
pub const BTN_RIGHT: u16 = 0x111;
pub const BTN_MIDDLE: u16 = 0x112;
pub const REL_WHEEL: u16 = 0x08;
pub const ABS_X: u16 = 0;
pub const ABS_Y: u16 = 1;

// Configuration selects (virtio 1.2, 5.8.5).
const CFG_ID_NAME: u8 = 0x01;
const CFG_ID_SERIAL: u8 = 0x02;
const CFG_ID_DEVIDS: u8 = 0x03;
const CFG_EV_BITS: u8 = 0x11;
const CFG_ABS_INFO: u8 = 0x12;
/// select, subsel, size, reserved[5], then the 128-byte union.
const CONFIG_LEN: usize = 8 + 128;

/// Tablet buttons for [`Tablet::report`].
pub const LEFT: u8 = 1;
pub const RIGHT: u8 = 2;
pub const MIDDLE: u8 = 4;
const BUTTONS: [(u8, u16); 3] = [(LEFT, BTN_LEFT), (RIGHT, BTN_RIGHT), (MIDDLE, BTN_MIDDLE)];

/// One `virtio_input_event`: le16 type, le16 code, le32 value.
pub fn event(kind: u16, code: u16, value: u32) -> [u8; 8] {
    let mut e = [0u8; 8];
    e[..2].copy_from_slice(&kind.to_le_bytes());
    e[2..4].copy_from_slice(&code.to_le_bytes());
    e[4..].copy_from_slice(&value.to_le_bytes());
    e
}

/// What the host side and the worker share.
struct Shared {
    events: Mutex<Pending>,
    wake: EventFd,
    active: AtomicBool,
}

#[derive(Default)]
struct Pending {
    queue: VecDeque<[u8; 8]>,
    buttons: u8,
}

/// The host's handle on the tablet.
#[derive(Clone)]
pub struct Tablet(Arc<Shared>);

impl Tablet {
    /// The pointer is at (`x`, `y`) (0..=[`ABS_MAX`], clamped), holds
    /// `buttons` ([`LEFT`]...) and turned the wheel by `wheel` notches
    /// (positive: away from the user, up).
    pub fn report(&self, x: u32, y: u32, buttons: u8, wheel: i32) {
        if !self.0.active.load(Ordering::Acquire) {
            return;
        }
        let mut p = self.0.events.lock().unwrap_or_else(|e| e.into_inner());
        let mut group = vec![
            event(EV_ABS, ABS_X, x.min(ABS_MAX)),
            event(EV_ABS, ABS_Y, y.min(ABS_MAX)),
        ];
        for (bit, code) in BUTTONS {
            if (buttons ^ p.buttons) & bit != 0 {
                group.push(event(EV_KEY, code, u32::from(buttons & bit != 0)));
            }
        }
        if wheel != 0 {
            group.push(event(EV_REL, REL_WHEEL, wheel as u32));
        }
        group.push(event(EV_SYN, SYN_REPORT, 0));
        if p.queue.len() + group.len() > MAX_EVENTS {
            log::debug!("virtio-input: the guest does not take events, report dropped");
            return;
        }
        p.buttons = buttons;
        p.queue.extend(group);
        drop(p);
        if let Err(e) = self.0.wake.write(1) {
            log::warn!("virtio-input: waking the worker: {e}");
        }
    }

    /// Events waiting (for tests).
    pub fn pending(&self) -> usize {
        self.0.events.lock().map(|p| p.queue.len()).unwrap_or(0)
    }
}

/// The configuration union for `select`/`subsel`: its bytes.
fn config_data(select: u8, subsel: u8) -> Vec<u8> {
    let bitmap = |codes: &[u16]| {
        let top = codes.iter().max().map_or(0, |&c| usize::from(c) / 8 + 1);
        let mut b = vec![0u8; top];
        for &c in codes {
            b[usize::from(c) / 8] |= 1 << (c % 8);
        }
        b
    };
    match (select, subsel) {
        (CFG_ID_NAME, 0) => NAME.as_bytes().to_vec(),
        (CFG_ID_SERIAL, 0) => b"kiln-tablet".to_vec(),
        // bustype BUS_VIRTUAL, vendor, product, version.
        (CFG_ID_DEVIDS, 0) => [0x06u16, 0x0627, 0x0003, 0x0001]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        (CFG_EV_BITS, s) if u16::from(s) == EV_KEY => bitmap(&[BTN_LEFT, BTN_RIGHT, BTN_MIDDLE]),
        (CFG_EV_BITS, s) if u16::from(s) == EV_REL => bitmap(&[REL_WHEEL]),
        (CFG_EV_BITS, s) if u16::from(s) == EV_ABS => bitmap(&[ABS_X, ABS_Y]),
        // min, max, fuzz, flat, res.
        (CFG_ABS_INFO, s) if u16::from(s) == ABS_X || u16::from(s) == ABS_Y => {
            [0, ABS_MAX, 0, 0, 0]
                .iter()
                .flat_map(|v: &u32| v.to_le_bytes())
                .collect()
        }
        _ => Vec::new(),
    }
}

/// The tablet device.
pub struct InputDevice {
    shared: Arc<Shared>,
    select: u8,
    subsel: u8,
    worker: Option<Worker>,
}

impl InputDevice {
    /// The device and the host's handle on it.
    pub fn tablet() -> std::io::Result<(InputDevice, Tablet)> {
        let shared = Arc::new(Shared {
            events: Mutex::new(Pending::default()),
            wake: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
            active: AtomicBool::new(false),
        });
        let dev = InputDevice {
            shared: shared.clone(),
            select: 0,
            subsel: 0,
            worker: None,
        };
        Ok((dev, Tablet(shared)))
    }

    fn stop(&mut self) {
        self.shared.active.store(false, Ordering::Release);
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
        let mut p = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
        *p = Pending::default();
    }
}

impl VirtioDevice for InputDevice {
    fn device_type(&self) -> u32 {
        TYPE_INPUT
    }

    fn class_code(&self) -> u32 {
        // Input device controller, other (QEMU's virtio-input-pci).
        0x098000
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; CONFIG_LEN];
        let union = config_data(self.select, self.subsel);
        config[0] = self.select;
        config[1] = self.subsel;
        config[2] = union.len() as u8;
        config[8..8 + union.len()].copy_from_slice(&union);
        super::read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(0) => self.select = b,
                Some(1) => self.subsel = b,
                _ => {}
            }
        }
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        let mut take = |i: usize| {
            ctx.queues
                .get_mut(i)
                .and_then(Option::take)
                .ok_or(ActivateError::MissingQueue(i))
        };
        let (events, status) = (take(0)?, take(1)?);
        let handler = InputWorker {
            mem: ctx.mem,
            events,
            status,
            interrupt: ctx.interrupt,
            shared: self.shared.clone(),
            broken: false,
        };
        self.worker = Some(
            Worker::spawn("virtio-input".into(), ctx.queue_evts, handler)
                .map_err(ActivateError::Thread)?,
        );
        self.shared.active.store(true, Ordering::Release);
        Ok(())
    }

    fn reset(&mut self) {
        self.stop();
    }
}

impl Drop for InputDevice {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Move waiting events into the event queue's buffers, one event per
/// buffer (a buffer shorter than an event is given back empty and the
/// event waits for the next). Returns whether to interrupt.
pub fn deliver(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    pending: &mut VecDeque<[u8; 8]>,
) -> Result<bool, QueueError> {
    if pending.is_empty() {
        return Ok(false);
    }
    let mut b = Batch::new(mem, q)?;
    while let Some(ev) = pending.front() {
        let Some(chain) = queue::pop_chain(mem, &mut b)? else {
            break;
        };
        let bufs = Buffers { mem, chain: &chain };
        let written = match bufs.write(0, ev) {
            Ok(8) => {
                pending.pop_front();
                8
            }
            _ => 0,
        };
        queue::complete(&mut b, chain.head, written)?;
    }
    b.finish()
}

/// Take (and drop) what the driver sent on the status queue.
pub fn drain_status(mem: &GuestMemoryMmap, q: &mut Queue) -> Result<bool, QueueError> {
    let drained = queue::drain(mem, q, |b| {
        while let Some(chain) = queue::pop_chain(mem, b)? {
            queue::complete(b, chain.head, 0)?;
        }
        Ok(true)
    })?;
    Ok(drained.notify)
}

struct InputWorker {
    mem: GuestMemoryMmap,
    events: Queue,
    status: Queue,
    interrupt: Arc<VirtioInterrupt>,
    shared: Arc<Shared>,
    broken: bool,
}

impl InputWorker {
    fn serve(&mut self, wake: Wake) -> Result<(), QueueError> {
        if wake == Wake::Queue(1) {
            if drain_status(&self.mem, &mut self.status)? {
                self.interrupt.signal_queue(1);
            }
            return Ok(());
        }
        if wake == Wake::Fd(0) {
            // Non-blocking: EAGAIN only means another wake-up drained it.
            let _ = self.shared.wake.read();
        }
        let mut p = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
        if deliver(&self.mem, &mut self.events, &mut p.queue)? {
            drop(p);
            self.interrupt.signal_queue(0);
        }
        Ok(())
    }
}

impl WorkerHandler for InputWorker {
    fn extra_fds(&self) -> Vec<RawFd> {
        vec![self.shared.wake.as_raw_fd()]
    }

    fn handle(&mut self, wake: Wake) {
        if self.broken {
            return;
        }
        if let Err(e) = self.serve(wake) {
            log::error!("virtio-input: {e}; the device needs a reset");
            self.broken = true;
            self.interrupt.set_needs_reset();
        }
    }
}

#[cfg(test)]
mod tests;
