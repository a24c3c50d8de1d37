//! The worker of an activated virtio-net device: one thread for the whole
//! device, serving every queue pair, the control queue, link changes and
//! both rate limiters.
//!
//! Why one thread per device rather than one per pair: the machines this
//! runs on have few cores shared with the vCPUs, where a thread per pair
//! adds wake-ups and contention rather than parallelism; one thread keeps
//! the rate limits exact across pairs (one bucket, no lock), and the
//! guest's gain from multiqueue (a queue per vCPU, no lock between them in
//! its driver) stays. Each pair is still served only when its own queue or
//! tap wakes the thread.
//!
//! Wake-ups: queue `2i` (buffers for pair `i`) and tap `i` → receive on
//! pair `i`; queue `2i + 1` → transmit; the control queue; the link's
//! eventfd; each limiter's timer. Taps and timers are edge-triggered, so
//! receive reads a tap until it would block, stops for lack of buffers
//! (the queue notifies), or is throttled (the timer fires).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_queue::Queue;

use super::ctrl::process_ctrl;
use super::link::NetLink;
use super::rxtx::{discard_rx, process_rx_hdr, process_tx_hdr, FrameIo, RxBacklog};
use super::TapQueue;
use super::NET_HDR_LEN;
use crate::devices::virtio::queue::QueueError;
use crate::devices::virtio::rate_limiter::RateLimiter;
use crate::devices::virtio::worker::{Wake, WorkerHandler};
use crate::devices::virtio::VirtioInterrupt;
use crate::devices::GuestMemoryMmap;

/// One receive/transmit pair and its tap queue. Queues of pairs above 0
/// may be missing (the driver did not enable them).
pub(super) struct Pair {
    pub rx: Option<Queue>,
    pub tx: Option<Queue>,
    pub tap: Arc<dyn TapQueue>,
    /// What receiving left for next time.
    pub backlog: RxBacklog,
}

/// Attach or detach a tap queue; "already so" (EINVAL) is fine.
pub(super) fn attach(tap: &dyn TapQueue, on: bool) -> bool {
    match tap.set_queue_attached(on) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => true,
        Err(e) => {
            log::warn!("tap {}: TUNSETQUEUE: {e}", tap.name());
            false
        }
    }
}

/// Where transmitted frames go while the link is down.
struct Discard;

impl FrameIo for Discard {
    fn send(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn recv(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    unsafe fn recv_iov(&mut self, _: &[libc::iovec]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// A tap queue as a [`FrameIo`] (a tap reads and writes through `&self`).
struct TapIo<'a>(&'a dyn TapQueue);

impl FrameIo for TapIo<'_> {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.0.write(frame).map(drop)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
    unsafe fn recv_iov(&mut self, iov: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: passed on from our caller.
        unsafe { self.0.readv(iov) }
    }
}

pub(super) struct NetWorker {
    mem: GuestMemoryMmap,
    pairs: Vec<Pair>,
    /// (queue index, queue).
    ctrl: Option<(usize, Queue)>,
    mq: bool,
    /// Pairs in use (VQ_PAIRS_SET); receive only on these.
    active: usize,
    interrupt: Arc<VirtioInterrupt>,
    tx_limiter: Option<RateLimiter>,
    rx_limiter: Option<RateLimiter>,
    link: Arc<NetLink>,
    tx_buf: Vec<u8>,
    broken: bool,
    name: String,
    /// The virtio-net header's length for the driver's interface.
    hdr_len: usize,
}

impl NetWorker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        mem: GuestMemoryMmap,
        pairs: Vec<Pair>,
        ctrl: Option<(usize, Queue)>,
        mq: bool,
        interrupt: Arc<VirtioInterrupt>,
        tx_limiter: Option<RateLimiter>,
        rx_limiter: Option<RateLimiter>,
        link: Arc<NetLink>,
        name: String,
    ) -> Self {
        NetWorker {
            mem,
            pairs,
            ctrl,
            mq,
            active: 1,
            interrupt,
            tx_limiter,
            rx_limiter,
            link,
            tx_buf: Vec::new(),
            broken: false,
            name,
            hdr_len: NET_HDR_LEN,
        }
    }

    /// Frames carry a header of `n` bytes (a legacy driver's is 10).
    pub(super) fn with_hdr_len(mut self, n: usize) -> Self {
        self.hdr_len = n;
        self
    }

    /// Extra fd indices: taps `0..n`, then the link, then the timers.
    fn link_fd(&self) -> usize {
        self.pairs.len()
    }

    fn tx_timer_fd(&self) -> Option<usize> {
        self.tx_limiter.as_ref().map(|_| self.pairs.len() + 1)
    }

    fn rx_timer_fd(&self) -> Option<usize> {
        self.rx_limiter
            .as_ref()
            .map(|_| self.pairs.len() + 1 + usize::from(self.tx_limiter.is_some()))
    }

    fn fail(&mut self, e: QueueError) {
        log::error!("{}: {e}; the device needs a reset", self.name);
        self.broken = true;
        self.interrupt.set_needs_reset();
    }

    fn rx(&mut self, i: usize) {
        let up = self.link.is_up();
        let active = self.active;
        let Some(p) = self.pairs.get_mut(i) else {
            return;
        };
        if !up {
            // Nothing is delivered while the link is down (as QEMU does).
            discard_rx(&mut TapIo(&*p.tap));
            return;
        }
        if i >= active {
            return;
        }
        let Some(q) = p.rx.as_mut() else { return };
        let r = process_rx_hdr(
            &self.mem,
            q,
            &mut TapIo(&*p.tap),
            &mut p.backlog,
            self.rx_limiter.as_mut(),
            self.hdr_len,
        );
        match r {
            Ok((true, _)) => self.interrupt.signal_queue(2 * i),
            Ok(_) => {}
            Err(e) => self.fail(e),
        }
    }

    fn tx(&mut self, i: usize) {
        let up = self.link.is_up();
        let Some(p) = self.pairs.get_mut(i) else {
            return;
        };
        let Some(q) = p.tx.as_mut() else { return };
        let r = if up {
            if self.tx_limiter.as_ref().is_some_and(|l| l.is_blocked()) {
                return;
            }
            process_tx_hdr(
                &self.mem,
                q,
                &mut TapIo(&*p.tap),
                &mut self.tx_buf,
                self.tx_limiter.as_mut(),
                self.hdr_len,
            )
        } else {
            // Frames sent while the link is down are dropped.
            process_tx_hdr(
                &self.mem,
                q,
                &mut Discard,
                &mut self.tx_buf,
                None,
                self.hdr_len,
            )
        };
        match r {
            Ok((true, _)) => self.interrupt.signal_queue(2 * i + 1),
            Ok(_) => {}
            Err(e) => self.fail(e),
        }
    }

    /// VQ_PAIRS_SET `n`: every pair below `n` needs both queues.
    fn set_active(&mut self, n: u16) -> bool {
        let n = usize::from(n);
        if n > self.pairs.len()
            || self.pairs[..n]
                .iter()
                .any(|p| p.rx.is_none() || p.tx.is_none())
        {
            return false;
        }
        let mut ok = true;
        for (i, p) in self.pairs.iter().enumerate() {
            ok &= attach(&*p.tap, i < n);
        }
        let was = self.active;
        self.active = n;
        log::info!("{}: {n} queue pair(s) in use", self.name);
        // Newly used pairs may already have frames waiting.
        for i in was..n {
            self.rx(i);
        }
        ok
    }

    fn ctrl(&mut self) {
        let Some((at, mut q)) = self.ctrl.take() else {
            return;
        };
        let (mq, max) = (self.mq, self.pairs.len() as u16);
        let mem = self.mem.clone();
        let r = process_ctrl(&mem, &mut q, mq, max, &mut |n| self.set_active(n));
        self.ctrl = Some((at, q));
        match r {
            Ok(true) => self.interrupt.signal_queue(at),
            Ok(false) => {}
            Err(e) => self.fail(e),
        }
    }

    fn all(&mut self, rx: bool, tx: bool) {
        for i in 0..self.pairs.len() {
            if tx {
                self.tx(i);
            }
            if rx {
                self.rx(i);
            }
        }
    }
}

impl WorkerHandler for NetWorker {
    fn extra_fds(&self) -> Vec<RawFd> {
        let mut v: Vec<RawFd> = self.pairs.iter().map(|p| p.tap.as_raw_fd()).collect();
        v.push(self.link.kick_fd().as_raw_fd());
        if let Some(l) = &self.tx_limiter {
            v.push(l.timer_fd());
        }
        if let Some(l) = &self.rx_limiter {
            v.push(l.timer_fd());
        }
        v
    }

    fn handle(&mut self, wake: Wake) {
        if self.broken {
            return;
        }
        match wake {
            Wake::Queue(q) if self.ctrl.as_ref().is_some_and(|(at, _)| *at == q) => self.ctrl(),
            Wake::Queue(q) if q % 2 == 0 => self.rx(q / 2),
            Wake::Queue(q) => self.tx(q / 2),
            Wake::Fd(i) if i < self.pairs.len() => self.rx(i),
            Wake::Fd(i) if i == self.link_fd() => {
                let _ = self.link.kick_fd().read();
                self.all(true, true);
            }
            Wake::Fd(i) if Some(i) == self.tx_timer_fd() => {
                if let Some(l) = &mut self.tx_limiter {
                    l.on_timer();
                }
                self.all(false, true);
            }
            Wake::Fd(i) if Some(i) == self.rx_timer_fd() => {
                if let Some(l) = &mut self.rx_limiter {
                    l.on_timer();
                }
                self.all(true, false);
            }
            Wake::Fd(_) => {}
        }
    }
}
