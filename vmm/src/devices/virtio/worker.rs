//! The thread that serves an activated device's queues, off the vCPU
//! threads. It sleeps in epoll on the queue eventfds (signalled by KVM
//! straight from the guest's notify write), any extra fds the device needs
//! (a tap, a rate limiter's timer) and a stop eventfd.
//!
//! [`Worker::stop`] (device reset, VMM exit) wakes it and joins it, so no
//! worker touches guest memory once the device is reset.
//!
//! With a poll window ([`Worker::spawn_polling`], `--disk ...,poll_us=N`)
//! the worker, after serving, spins on the handler's [`WorkerHandler::poll`]
//! (a read of the avail index: no system call, no eventfd) for a bounded,
//! adaptive time before it sleeps, with guest notifications suppressed
//! meanwhile ([`WorkerHandler::set_notify`]). A request that comes inside
//! the window skips the notify exit and the wake-up; the cost is a host CPU
//! busy while polling. When the window expires, notifications are
//! re-enabled and the queue checked once more before sleeping, so a request
//! added as the window closes is served, not lost (see [`PollWindow`]).
//!
//! The transitional devices' INTx resampler
//! (`device_manager::virtio::legacy::IntxResampler`) runs on one too, its resample
//! eventfds standing for the queue eventfds.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// For polling: the queue with work waiting to be served (read from
    /// the ring, not the eventfd), or `None`. Must return `None` while the
    /// device cannot serve (rate limited, broken), or the poll would spin.
    fn poll(&mut self) -> Option<usize> {
        None
    }
    /// For polling: enable (`true`) or suppress guest notifications.
    /// Enabling returns true if work arrived meanwhile (which the driver may
    /// not have notified), like `virtio_queue`'s `enable_notification`.
    fn set_notify(&mut self, _enabled: bool) -> bool {
        false
    }
}

/// The adaptive poll window: how long to spin for the next request after
/// serving. It starts at the maximum; a poll that found nothing halves it,
/// down to a floor of an eighth of the maximum (at least
/// [`PollWindow::MIN`]); a poll that found work, or a sleep that ended
/// within the maximum (polling would have caught that request), doubles
/// it toward the maximum.
///
/// The floor is not zero because the sleep time that would bring a window
/// back includes the wake-up itself (5-40 µs here), so a small maximum
/// could never recover; polling only ever follows served work, so an idle
/// device spins not at all and a sparse one at most the floor per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollWindow {
    max: Duration,
    cur: Duration,
}

impl PollWindow {
    /// The smallest floor (unless the maximum is smaller).
    pub const MIN: Duration = Duration::from_micros(1);

    pub fn new(max: Duration) -> PollWindow {
        PollWindow { max, cur: max }
    }

    /// The current window (zero only if the maximum is: never poll).
    pub fn current(&self) -> Duration {
        self.cur
    }

    /// A poll found work.
    pub fn hit(&mut self) {
        self.grow();
    }

    /// A poll of the whole window found nothing.
    pub fn miss(&mut self) {
        self.cur = (self.cur / 2).max(self.floor());
    }

    fn floor(&self) -> Duration {
        (self.max / 8).max(Self::MIN).min(self.max)
    }

    /// The worker slept `slept` before a wake-up.
    pub fn slept(&mut self, slept: Duration) {
        if slept <= self.max && self.cur < self.max {
            self.grow();
        }
    }

    fn grow(&mut self) {
        self.cur = (self.cur * 2).min(self.max);
    }
}

const STOP_TOKEN: u64 = u64::MAX;
const FD_TOKEN_BASE: u64 = 1 << 32;

/// Poll for work after serving, serving what comes, until a window passes
/// with nothing; then re-enable notifications (serving what came in the
/// meantime, and polling again) and return to sleep. False if the worker
/// is stopping.
fn poll_loop<H: WorkerHandler>(
    handler: &mut H,
    window: &mut PollWindow,
    stopping: &AtomicBool,
) -> bool {
    loop {
        let len = window.current();
        if len.is_zero() {
            return true;
        }
        handler.set_notify(false);
        let start = Instant::now();
        let mut found = None;
        let mut spins = 0u32;
        loop {
            if let Some(q) = handler.poll() {
                found = Some(q);
                break;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            // The clock and the stop flag every few spins (vDSO, no
            // syscall), and a sched_yield: on a host with more runnable
            // threads than CPUs (the vCPU waiting for its interrupt among
            // them), a worker spinning through its time slice would delay
            // the very thread it serves.
            if spins.is_multiple_of(16) {
                std::thread::yield_now();
                if stopping.load(Ordering::Acquire) {
                    return false;
                }
                if start.elapsed() >= len {
                    break;
                }
            }
        }
        match found {
            Some(q) => {
                window.hit();
                handler.handle(Wake::Queue(q));
            }
            None => {
                window.miss();
                // The driver may have added work after the last poll
                // without notifying (notifications were off): re-enabling
                // reports it, and it is served here, not lost.
                if handler.set_notify(true) {
                    if let Some(q) = handler.poll() {
                        handler.handle(Wake::Queue(q));
                        continue;
                    }
                }
                return true;
            }
        }
    }
}

/// A running worker thread.
pub struct Worker {
    stop: EventFd,
    /// Seen by a polling worker without a system call.
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Start `handler` on a thread named `name`, woken by `queue_evts`.
    pub fn spawn<H: WorkerHandler>(
        name: String,
        queue_evts: Vec<EventFd>,
        handler: H,
    ) -> io::Result<Worker> {
        Self::spawn_polling(name, queue_evts, handler, Duration::ZERO)
    }

    /// Like [`Worker::spawn`], polling the queues for up to `poll_max`
    /// after serving (zero: never poll).
    pub fn spawn_polling<H: WorkerHandler>(
        name: String,
        queue_evts: Vec<EventFd>,
        mut handler: H,
        poll_max: Duration,
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
        let stopping = Arc::new(AtomicBool::new(false));
        let stopping_clone = stopping.clone();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let _keep = stop_clone;
            if let Err(e) = crate::devices::thread_start() {
                log::error!("virtio worker: {e}");
                return;
            }
            let mut events = vec![EpollEvent::default(); 16];
            let mut window = PollWindow::new(poll_max);
            let polling = !poll_max.is_zero();
            loop {
                let slept = polling.then(Instant::now);
                let n = match epoll.wait(-1, &mut events) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::error!("virtio worker: epoll failed: {e}");
                        return;
                    }
                };
                if let Some(t) = slept {
                    window.slept(t.elapsed());
                }
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
                if polling && !poll_loop(&mut handler, &mut window, &stopping_clone) {
                    return;
                }
            }
        })?;
        Ok(Worker {
            stop,
            stopping,
            thread: Some(thread),
        })
    }

    /// Stop the thread and wait for it.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stopping.store(true, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn window_halves_on_miss_and_grows_on_hit() {
        let max = Duration::from_micros(64);
        let mut w = PollWindow::new(max);
        assert_eq!(w.current(), max, "starts at the maximum");
        w.hit();
        assert_eq!(w.current(), max, "never above the maximum");
        w.miss();
        assert_eq!(w.current(), max / 2);
        w.miss();
        assert_eq!(w.current(), max / 4);
        w.hit();
        assert_eq!(w.current(), max / 2);
        w.miss();
        assert_eq!(w.current(), max / 4);
        for _ in 0..10 {
            w.miss();
        }
        assert_eq!(w.current(), max / 8, "floor: an eighth of the maximum");
        // A long sleep says polling would not have helped.
        w.slept(Duration::from_millis(5));
        assert_eq!(w.current(), max / 8);
        // A short one says it would have: doubling toward the maximum.
        w.slept(Duration::from_micros(10));
        assert_eq!(w.current(), max / 4);
        w.hit();
        assert_eq!(w.current(), max / 2);
        w.slept(Duration::from_micros(64));
        w.hit();
        assert_eq!(w.current(), max);
        w.slept(Duration::from_micros(1));
        assert_eq!(w.current(), max);
        // A tiny maximum: its floor is itself; zero never polls.
        let mut w = PollWindow::new(Duration::from_nanos(100));
        w.miss();
        assert_eq!(w.current(), Duration::from_nanos(100));
        let mut w = PollWindow::new(Duration::ZERO);
        w.hit();
        w.slept(Duration::ZERO);
        assert_eq!(w.current(), Duration::ZERO);
    }

    /// A queue reduced to two counters, with the driver's notification
    /// protocol: publish the request, then notify only if notifications are
    /// on (both sides sequentially consistent, as the ring's fences are).
    #[derive(Default)]
    struct Ring {
        avail: AtomicU32,
        used: AtomicU32,
        notify_on: AtomicBool,
        notifies: AtomicU32,
        polls_found: AtomicU32,
    }

    struct Handler(Arc<Ring>);

    impl WorkerHandler for Handler {
        fn handle(&mut self, _wake: Wake) {
            let a = self.0.avail.load(Ordering::SeqCst);
            self.0.used.store(a, Ordering::SeqCst);
        }
        fn poll(&mut self) -> Option<usize> {
            let r = &self.0;
            let found = r.avail.load(Ordering::SeqCst) != r.used.load(Ordering::SeqCst);
            if found {
                r.polls_found.fetch_add(1, Ordering::Relaxed);
            }
            found.then_some(0)
        }
        fn set_notify(&mut self, enabled: bool) -> bool {
            let r = &self.0;
            r.notify_on.store(enabled, Ordering::SeqCst);
            enabled && r.avail.load(Ordering::SeqCst) != r.used.load(Ordering::SeqCst)
        }
    }

    fn request(ring: &Ring, kick: &EventFd) -> u32 {
        let n = ring.avail.fetch_add(1, Ordering::SeqCst) + 1;
        if ring.notify_on.load(Ordering::SeqCst) {
            ring.notifies.fetch_add(1, Ordering::Relaxed);
            kick.write(1).unwrap();
        }
        n
    }

    /// Wait (generously: a loaded machine) for request `n` to be served.
    fn served(ring: &Ring, n: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while ring.used.load(Ordering::SeqCst) < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }

    fn spawn(poll: Duration) -> (Worker, Arc<Ring>, EventFd) {
        let ring = Arc::new(Ring {
            notify_on: AtomicBool::new(true),
            ..Ring::default()
        });
        let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let w = Worker::spawn_polling(
            "poll-test".into(),
            vec![kick.try_clone().unwrap()],
            Handler(ring.clone()),
            poll,
        )
        .unwrap();
        (w, ring, kick)
    }

    #[test]
    fn polling_worker_serves_a_request_after_it_went_to_sleep() {
        let (mut w, ring, kick) = spawn(Duration::from_micros(200));
        let n = request(&ring, &kick);
        assert!(served(&ring, n), "first request not served");
        // Long past the window: the worker is back in epoll, notifications on.
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            ring.notify_on.load(Ordering::SeqCst),
            "left notifications off"
        );
        let n = request(&ring, &kick);
        assert!(served(&ring, n), "request after the window was lost");
        w.stop();
    }

    #[test]
    fn no_request_is_lost_around_the_window_expiry() {
        // Requests at delays spread around a 20 µs window: some land while
        // polling (no notify), some as it expires, some after the worker
        // sleeps; every one must be served.
        let (mut w, ring, kick) = spawn(Duration::from_micros(20));
        for i in 0..400u32 {
            let delay = Duration::from_nanos(u64::from(i % 80) * 500);
            let t = Instant::now();
            while t.elapsed() < delay {
                std::hint::spin_loop();
            }
            let n = request(&ring, &kick);
            assert!(served(&ring, n), "request {n} (delay {delay:?}) lost");
        }
        let notifies = ring.notifies.load(Ordering::Relaxed);
        let found = ring.polls_found.load(Ordering::Relaxed);
        eprintln!("400 requests: {notifies} notifications, {found} found by polling");
        assert!(
            notifies + found >= 400,
            "{notifies} + {found}: some request came by neither"
        );
        w.stop();
    }

    #[test]
    fn stop_ends_a_polling_worker() {
        // A huge window: stop must not wait for it.
        let (mut w, ring, kick) = spawn(Duration::from_secs(3600));
        let n = request(&ring, &kick);
        assert!(served(&ring, n));
        w.stop();
        assert!(w.thread.is_none());
    }

    #[test]
    fn without_polling_every_request_is_notified() {
        let (mut w, ring, kick) = spawn(Duration::ZERO);
        for _ in 0..20 {
            let n = request(&ring, &kick);
            assert!(served(&ring, n));
        }
        assert_eq!(ring.notifies.load(Ordering::Relaxed), 20);
        assert_eq!(ring.polls_found.load(Ordering::Relaxed), 0);
        w.stop();
    }
}
