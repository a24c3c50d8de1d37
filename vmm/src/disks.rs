//! The VMM's disks at its orderly end: every way kiln-vmm ends except
//! SIGKILL (guest power-off or reboot, the control API's kill or reset,
//! SIGTERM/SIGINT/SIGHUP, a host error) goes through [`DiskSet::close`]
//! before the process exits or re-executes itself. `std::process::exit`
//! and `execve` run no destructors, so nothing else would write back what
//! a qcow2 disk caches (L2 tables, refcounts): the writes the guest saw
//! complete would vanish with the process.
//!
//! How it works: each disk the virtio-blk devices serve is a
//! [`ClosableDisk`], and the main thread holds the same `Arc`s in a
//! [`DiskSet`]. The devices' workers need not be reached (one may be
//! sleeping in a rate limiter's wait, polling its queue, or in the middle
//! of a request): closing a disk takes its gate exclusively, which waits
//! for the calls in flight on it to return, then refuses every later
//! write-type call ([`kiln_block::Error::Closed`]: the guest would see an
//! I/O error, but it is ending), and writes everything back
//! ([`Disk::write_back`]: data and metadata, `fdatasync`). So every write
//! the guest saw complete before the end is in the image, and none
//! completes after it. Reads still work; a worker serving one is left
//! alone.
//!
//! The close runs on its own thread and the main thread waits for it at
//! most a given time ([`DiskSet::close`]'s `limit`), so a host whose
//! storage hangs cannot keep the VMM from ending; kilnd, for its part,
//! SIGKILLs a VMM that has not ended some seconds after it asked.

use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kiln_block::{Disk, Error, Result};

/// A disk that its owner can close for good: afterwards it refuses writes.
pub struct ClosableDisk {
    inner: Box<dyn Disk>,
    /// `true` once closed. Calls that change the disk hold it shared for
    /// their whole length, so taking it exclusively waits for them.
    closed: RwLock<bool>,
}

impl ClosableDisk {
    pub fn new(inner: Box<dyn Disk>) -> Self {
        ClosableDisk {
            inner,
            closed: RwLock::new(false),
        }
    }

    /// Runs `op` unless the disk is closed, holding the gate shared.
    fn open_op(&self, op: impl FnOnce(&dyn Disk) -> Result<()>) -> Result<()> {
        let closed = self.closed.read().unwrap_or_else(|p| p.into_inner());
        if *closed {
            return Err(Error::Closed);
        }
        op(self.inner.as_ref())
    }

    /// Waits for the calls in flight, refuses every later change, and
    /// writes everything back. A second close writes back again.
    pub fn close(&self) -> Result<()> {
        let mut closed = self.closed.write().unwrap_or_else(|p| p.into_inner());
        *closed = true;
        self.inner.write_back()
    }
}

impl Disk for ClosableDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.open_op(|d| d.write_at(offset, buf))
    }

    fn flush(&self) -> Result<()> {
        self.open_op(|d| d.flush())
    }

    fn write_back(&self) -> Result<()> {
        self.open_op(|d| d.write_back())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.open_op(|d| d.discard(offset, len))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.open_op(|d| d.write_zeroes(offset, len))
    }

    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
}

/// Every disk of the VM, by name (`virtio-blk0`, ...), for the main thread.
#[derive(Clone, Default)]
pub struct DiskSet {
    disks: Vec<(String, Arc<ClosableDisk>)>,
}

/// What [`DiskSet::close`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Every disk was written back.
    Done,
    /// These disks failed (name, error) or did not finish in time
    /// (name, "not done within ...").
    Failed(Vec<(String, String)>),
}

impl DiskSet {
    pub fn push(&mut self, name: String, disk: Arc<ClosableDisk>) {
        self.disks.push((name, disk));
    }

    /// Add every disk of `other` (the AHCI controller's to the virtio ones).
    pub fn extend(&mut self, other: DiskSet) {
        self.disks.extend(other.disks);
    }

    pub fn is_empty(&self) -> bool {
        self.disks.is_empty()
    }

    /// Closes every disk (see [`ClosableDisk::close`]) on a thread of its
    /// own and waits for it at most `limit`. Logs what happened.
    pub fn close(&self, limit: Duration) -> CloseOutcome {
        if self.disks.is_empty() {
            return CloseOutcome::Done;
        }
        let start = Instant::now();
        let (tx, rx) = mpsc::channel();
        let disks = self.disks.clone();
        let spawned = std::thread::Builder::new()
            .name("disk-close".into())
            .spawn(move || close_all(&disks, &tx));
        if let Err(e) = spawned {
            // Not bounded then, but still done.
            log::warn!("cannot start the disk-close thread ({e}); closing the disks here");
            let (tx, rx) = mpsc::channel();
            close_all(&self.disks, &tx);
            return Self::collect(&self.disks, rx, start, Duration::MAX);
        }
        Self::collect(&self.disks, rx, start, limit)
    }

    fn collect(
        disks: &[(String, Arc<ClosableDisk>)],
        rx: mpsc::Receiver<Closed>,
        start: Instant,
        limit: Duration,
    ) -> CloseOutcome {
        let mut failed = Vec::new();
        let mut done = 0;
        while done < disks.len() {
            let left = limit.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok((name, Ok(()), took)) => {
                    log::info!("{name}: written back in {} µs", took.as_micros());
                    done += 1;
                }
                Ok((name, Err(e), _)) => {
                    log::error!("{name}: cannot write back: {e}");
                    failed.push((name, e));
                    done += 1;
                }
                Err(_) => {
                    for (name, _) in &disks[done..] {
                        let e = format!("not written back within {} ms", limit.as_millis());
                        log::error!("{name}: {e}");
                        failed.push((name.clone(), e));
                    }
                    break;
                }
            }
        }
        log::info!("disks closed in {} µs", start.elapsed().as_micros());
        if failed.is_empty() {
            CloseOutcome::Done
        } else {
            CloseOutcome::Failed(failed)
        }
    }
}

type Closed = (String, std::result::Result<(), String>, Duration);

/// Closes `disks` in order, sending each one's result as it comes.
fn close_all(disks: &[(String, Arc<ClosableDisk>)], tx: &mpsc::Sender<Closed>) {
    for (name, disk) in disks {
        let t = Instant::now();
        let r = disk.close().map_err(|e| report(&e));
        if tx.send((name.clone(), r, t.elapsed())).is_err() {
            return;
        }
    }
}

/// An error and its causes on one line.
fn report(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut c = e.source();
    while let Some(cause) = c {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        c = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A disk in memory that counts write-backs and can hold a write.
    #[derive(Default)]
    struct MemDisk {
        data: Mutex<Vec<u8>>,
        durable: Mutex<Vec<u8>>,
        /// A write waits until this is dropped (set), to be "in flight".
        hold: Mutex<Option<mpsc::Receiver<()>>>,
    }

    struct Shared(Arc<MemDisk>);

    impl std::ops::Deref for Shared {
        type Target = MemDisk;
        fn deref(&self) -> &MemDisk {
            &self.0
        }
    }

    impl Disk for Shared {
        fn size(&self) -> u64 {
            4096
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            let d = self.data.lock().unwrap();
            let o = offset as usize;
            buf.copy_from_slice(&d[o..o + buf.len()]);
            Ok(())
        }
        fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
            let held = self.hold.lock().unwrap().take();
            if let Some(rx) = held {
                let _ = rx.recv();
            }
            let mut d = self.data.lock().unwrap();
            let o = offset as usize;
            d[o..o + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&self) -> Result<()> {
            *self.durable.lock().unwrap() = self.data.lock().unwrap().clone();
            Ok(())
        }
        fn discard(&self, _: u64, _: u64) -> Result<()> {
            Ok(())
        }
        fn write_zeroes(&self, _: u64, _: u64) -> Result<()> {
            Ok(())
        }
        fn read_only(&self) -> bool {
            false
        }
    }

    fn mem_disk() -> (Arc<MemDisk>, Arc<ClosableDisk>) {
        let m = Arc::new(MemDisk {
            data: Mutex::new(vec![0; 4096]),
            durable: Mutex::new(vec![0; 4096]),
            hold: Mutex::new(None),
        });
        (m.clone(), Arc::new(ClosableDisk::new(Box::new(Shared(m)))))
    }

    #[test]
    fn close_writes_back_and_refuses_later_writes() {
        let (m, d) = mem_disk();
        d.write_at(512, &[7; 512]).unwrap();
        let mut set = DiskSet::default();
        set.push("d0".into(), d.clone());
        assert_eq!(set.close(Duration::from_secs(5)), CloseOutcome::Done);
        assert_eq!(m.durable.lock().unwrap()[512..1024], [7; 512]);
        assert!(matches!(d.write_at(0, &[1; 512]), Err(Error::Closed)));
        assert!(matches!(d.discard(0, 512), Err(Error::Closed)));
        assert!(matches!(d.write_zeroes(0, 512), Err(Error::Closed)));
        assert!(matches!(d.flush(), Err(Error::Closed)));
        let mut buf = [0u8; 512];
        d.read_at(512, &mut buf).unwrap();
        assert_eq!(buf, [7; 512], "reads still served");
    }

    /// A write of `[9; 512]` at 0 in flight on `d`, held inside `m` until
    /// the returned sender releases it; returns once the writer is inside
    /// `write_at`.
    fn write_in_flight(
        m: &MemDisk,
        d: &Arc<ClosableDisk>,
    ) -> (mpsc::Sender<()>, std::thread::JoinHandle<Result<()>>) {
        let (release, held) = mpsc::channel();
        *m.hold.lock().unwrap() = Some(held);
        let writer = {
            let d = d.clone();
            std::thread::spawn(move || d.write_at(0, &[9; 512]))
        };
        // The writer is inside write_at, waiting to be released.
        while m.hold.lock().unwrap().is_some() {
            std::thread::yield_now();
        }
        (release, writer)
    }

    #[test]
    fn close_waits_for_a_write_in_flight() {
        let (m, d) = mem_disk();
        let (release, writer) = write_in_flight(&m, &d);
        let mut set = DiskSet::default();
        set.push("d0".into(), d.clone());
        let closer = std::thread::spawn(move || set.close(Duration::from_secs(20)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!closer.is_finished(), "close did not wait for the write");
        release.send(()).unwrap();
        writer.join().unwrap().unwrap();
        assert_eq!(closer.join().unwrap(), CloseOutcome::Done);
        assert_eq!(m.durable.lock().unwrap()[..512], [9; 512]);
    }

    #[test]
    fn close_gives_up_after_its_limit() {
        let (m, d) = mem_disk();
        let (release, writer) = write_in_flight(&m, &d);
        let mut set = DiskSet::default();
        set.push("d0".into(), d);
        let t = Instant::now();
        let out = set.close(Duration::from_millis(100));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(&out, CloseOutcome::Failed(f) if f.len() == 1 && f[0].0 == "d0"),
            "{out:?}"
        );
        release.send(()).unwrap();
        writer.join().unwrap().unwrap();
    }
}
