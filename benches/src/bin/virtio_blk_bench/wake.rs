//! The wake-up floor a real VM adds to every request at queue depth 1,
//! which the device-path rows above do not include (they call
//! `process_queue` directly): the guest's notify reaches the device's
//! worker thread through an eventfd (KVM's ioeventfd), the worker sleeps in
//! `epoll_wait`, reads the eventfd, serves the queue and signals the
//! interrupt through another eventfd (KVM's irqfd). Here a "guest" thread
//! writes the notify eventfd and blocks reading the "irqfd"; a worker
//! thread does exactly the worker's system calls with no I/O in between.
//! One round trip is the host-side floor per request (the guest's VM exit
//! for the notify and the interrupt injection come on top).

use std::io;
use std::time::{Duration, Instant};

/// An eventfd closed on drop.
struct EventFd(libc::c_int);

impl EventFd {
    fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; the new fd is owned by the result.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EventFd(fd))
    }

    fn write(&self) -> io::Result<()> {
        let v = 1u64;
        // SAFETY: writes 8 bytes from a live u64.
        let r = unsafe { libc::write(self.0, (&v as *const u64).cast(), 8) };
        if r == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn read(&self) -> io::Result<u64> {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64.
        let r = unsafe { libc::read(self.0, (&mut v as *mut u64).cast(), 8) };
        if r == 8 {
            Ok(v)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: closes the fd this value owns.
        unsafe { libc::close(self.0) };
    }
}

/// Median round trip (notify -> worker wake-up -> interrupt -> guest
/// wake-up) over `rounds` runs of `secs` seconds each.
pub fn round_trip(secs: f64, rounds: usize) -> Result<Duration, String> {
    let mut v = Vec::new();
    for _ in 0..rounds {
        v.push(one_run(secs).map_err(|e| format!("wake-up floor: {e}"))?);
    }
    v.sort();
    Ok(v[v.len() / 2])
}

fn one_run(secs: f64) -> io::Result<Duration> {
    let notify = EventFd::new()?;
    let irq = EventFd::new()?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    // SAFETY: epoll_create1 takes no pointers; the fd is owned below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    let ep = EventFd(ep);
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: registers our eventfd; `ev` is read during the call only.
    if unsafe { libc::epoll_ctl(ep.0, libc::EPOLL_CTL_ADD, notify.0, &mut ev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let budget = Duration::from_secs_f64(secs);
    std::thread::scope(|s| {
        let worker = s.spawn(|| -> io::Result<()> {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
            loop {
                // SAFETY: `events` has room for 4 entries.
                let n = unsafe { libc::epoll_wait(ep.0, events.as_mut_ptr(), 4, -1) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                notify.read()?;
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    return Ok(());
                }
                irq.write()?;
            }
        });
        let t0 = Instant::now();
        let mut n = 0u32;
        let res = loop {
            if t0.elapsed() >= budget {
                break Ok(t0.elapsed() / n.max(1));
            }
            if let Err(e) = notify.write().and_then(|_| irq.read()) {
                break Err(e);
            }
            n += 1;
        };
        stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = notify.write();
        let joined = worker
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("worker panicked")));
        res.and_then(|d| joined.map(|_| d))
    })
}

/// The same round trip through kiln-vmm's own worker loop
/// ([`kiln_vmm::devices::virtio::worker::Worker`]), polling for up to
/// `poll` after each request (zero: off, the epoll path). The "guest"
/// follows the driver's protocol: it publishes a request (an avail
/// counter), kicks the notify eventfd only while the worker has
/// notifications on, and blocks on the "irqfd" for the completion. Returns
/// the median round trip and the share of requests that needed a kick.
pub fn worker_round_trip(
    secs: f64,
    rounds: usize,
    poll: Duration,
) -> Result<(Duration, f64), String> {
    let mut v = Vec::new();
    for _ in 0..rounds {
        v.push(worker_run(secs, poll).map_err(|e| format!("worker round trip: {e}"))?);
    }
    v.sort_by_key(|r| r.0);
    Ok(v[v.len() / 2])
}

mod ring {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    use kiln_vmm::devices::virtio::worker::{Wake, WorkerHandler};
    use vmm_sys_util::eventfd::EventFd;

    /// The queue reduced to what the protocol needs.
    pub struct Ring {
        pub avail: AtomicU64,
        pub used: AtomicU64,
        pub notify_on: AtomicBool,
    }

    pub struct Handler {
        pub ring: Arc<Ring>,
        pub irq: EventFd,
    }

    impl WorkerHandler for Handler {
        fn handle(&mut self, _wake: Wake) {
            let a = self.ring.avail.load(Ordering::SeqCst);
            if a != self.ring.used.load(Ordering::SeqCst) {
                self.ring.used.store(a, Ordering::SeqCst);
                let _ = self.irq.write(1);
            }
        }
        fn poll(&mut self) -> Option<usize> {
            (self.ring.avail.load(Ordering::SeqCst) != self.ring.used.load(Ordering::SeqCst))
                .then_some(0)
        }
        fn set_notify(&mut self, enabled: bool) -> bool {
            self.ring.notify_on.store(enabled, Ordering::SeqCst);
            enabled && self.poll().is_some()
        }
    }
}

fn worker_run(secs: f64, poll: Duration) -> io::Result<(Duration, f64)> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use vmm_sys_util::eventfd::EventFd;

    let ring = Arc::new(ring::Ring {
        avail: AtomicU64::new(0),
        used: AtomicU64::new(0),
        notify_on: AtomicBool::new(true),
    });
    let notify = EventFd::new(libc::EFD_CLOEXEC)?;
    let irq = EventFd::new(libc::EFD_CLOEXEC)?;
    let handler = ring::Handler {
        ring: ring.clone(),
        irq: irq.try_clone()?,
    };
    let mut worker = kiln_vmm::devices::virtio::worker::Worker::spawn_polling(
        "bench-worker".into(),
        vec![notify.try_clone()?],
        handler,
        poll,
    )?;
    let budget = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let (mut n, mut kicks) = (0u64, 0u64);
    while t0.elapsed() < budget {
        ring.avail.fetch_add(1, Ordering::SeqCst);
        if ring.notify_on.load(Ordering::SeqCst) {
            kicks += 1;
            notify.write(1)?;
        }
        irq.read()?;
        n += 1;
    }
    let d = t0.elapsed() / n.max(1) as u32;
    worker.stop();
    Ok((d, kicks as f64 / n.max(1) as f64))
}
