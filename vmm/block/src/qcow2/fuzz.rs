//! The body of the fuzz target (`vmm/block/fuzz`), public so that the
//! regression tests replay kept inputs through exactly the same code: open
//! arbitrary bytes as a qcow2 image read-only and read-write, and do a few
//! reads, writes, discards and flushes. Errors are expected; panics,
//! hangs and huge allocations are bugs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Disk, DiskFormat, OpenOptions};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn scratch() -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("kiln-block-fuzz-{}-{n}.qcow2", std::process::id()))
}

fn exercise(d: &dyn Disk) {
    let size = d.size();
    let mut buf = vec![0u8; 8192];
    for off in [0, size / 3, size / 2, size.saturating_sub(4096)] {
        let len = (size - off.min(size)).min(buf.len() as u64) as usize;
        let _ = d.read_at(off, &mut buf[..len]);
        if !d.read_only() {
            let _ = d.write_at(off, &buf[..len]);
        }
    }
    if !d.read_only() {
        let _ = d.write_zeroes(0, size.min(1 << 17));
        let _ = d.discard(size / 2, size.min(1 << 17) / 2);
        let _ = d.flush();
    }
}

/// Runs one fuzz input. Never panics on any input (that is the property).
pub fn fuzz_one(data: &[u8]) {
    let path = scratch();
    if std::fs::write(&path, data).is_err() {
        return;
    }
    for read_only in [true, false] {
        if let Ok(d) = crate::open_disk(
            &path,
            DiskFormat::Qcow2,
            OpenOptions {
                read_only,
                direct: false,
            },
        ) {
            exercise(&*d);
        }
    }
    let _ = std::fs::remove_file(&path);
}
