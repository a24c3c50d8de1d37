//! The thread that serves an activated device's queues, off the vCPU
//! threads. It sleeps in epoll on the queue eventfds (signalled by KVM
//! straight from the guest's notify write), any extra fds the device needs
//! (a tap, a rate limiter's timer) and a stop eventfd.
//!
//! [`Worker::stop`] (device reset, VMM exit) wakes it and joins it, so no
//! worker touches guest memory once the device is reset.
//!
//! The transitional devices' INTx resampler
//! (`virtio_wiring::legacy::IntxResampler`) runs on one too, its resample
//! eventfds standing for the queue eventfds.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// What woke the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The guest notified queue `n` (its eventfd is already drained).
    Queue(usize),
    /// Extra fd `n` (in the order [`WorkerHandler::extra_fds`] gave them)
    /// is readable.
    Fd(usize),
}

/// A device's side of the worker loop.
pub trait WorkerHandler: Send + 'static {
    /// Fds to watch besides the queue eventfds: edge-triggered, readable.
    /// The handler reads each until it would block (or knows another
    /// wake-up will come, e.g. a queue notification).
    fn extra_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// Handle one wake-up.
    fn handle(&mut self, wake: Wake);
}

const STOP_TOKEN: u64 = u64::MAX;
const FD_TOKEN_BASE: u64 = 1 << 32;

/// A running worker thread.
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Start `handler` on a thread named `name`, woken by `queue_evts`.
    pub fn spawn<H: WorkerHandler>(
        name: String,
        queue_evts: Vec<EventFd>,
        mut handler: H,
    ) -> io::Result<Worker> {
        let stop = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        let epoll = Epoll::new()?;
        let add = |fd: RawFd, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(stop.as_raw_fd(), STOP_TOKEN)?;
        for (i, evt) in queue_evts.iter().enumerate() {
            add(evt.as_raw_fd(), i as u64)?;
        }
        for (i, fd) in handler.extra_fds().into_iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(
                    EventSet::IN | EventSet::EDGE_TRIGGERED,
                    FD_TOKEN_BASE + i as u64,
                ),
            )?;
        }
        let stop_clone = stop.try_clone()?;
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let _keep = stop_clone;
            if let Err(e) = crate::seccomp::apply(crate::seccomp::ThreadKind::Worker) {
                log::error!("virtio worker: {}", e.report());
                return;
            }
            let mut events = vec![EpollEvent::default(); 16];
            loop {
                let n = match epoll.wait(-1, &mut events) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::error!("virtio worker: epoll failed: {e}");
                        return;
                    }
                };
                for ev in &events[..n] {
                    match ev.data() {
                        STOP_TOKEN => return,
                        t if t >= FD_TOKEN_BASE => {
                            handler.handle(Wake::Fd((t - FD_TOKEN_BASE) as usize))
                        }
                        q => {
                            let q = q as usize;
                            if let Some(evt) = queue_evts.get(q) {
                                let _ = evt.read();
                            }
                            handler.handle(Wake::Queue(q));
                        }
                    }
                }
            }
        })?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop the thread and wait for it.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.stop.write(1);
            if t.join().is_err() {
                log::error!("virtio worker thread panicked");
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}
