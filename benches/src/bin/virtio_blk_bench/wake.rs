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
