//! Disks for the drivers: a virtio-blk device on a temporary raw file, and
//! [`MemDisk`], a [`Disk`] held in memory (fast enough for millions of fuzz
//! runs; the real raw and qcow2 backends have their own tests and fuzzing
//! in kiln-block).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kiln_block::{open_disk, Disk, DiskFormat, OpenOptions};

use crate::devices::virtio::block::{BlockDevice, BlockOptions};

/// A virtio-blk device named `id` on a fresh 1 MiB raw file in the
/// temporary directory, `name` and the process id; the caller removes it.
pub fn temp_block_device(name: &str, id: &str) -> (PathBuf, BlockDevice) {
    let path = std::env::temp_dir().join(format!("{name}-{}.raw", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let disk = open_disk(&path, DiskFormat::Raw, OpenOptions::default()).unwrap();
    let blk = BlockDevice::new(Arc::from(disk), BlockOptions::default(), id.into());
    (path, blk)
}

/// A disk held in memory.
pub struct MemDisk {
    pub data: Mutex<Vec<u8>>,
    pub read_only: bool,
}

impl MemDisk {
    /// `size` zero bytes.
    pub fn new(size: usize, read_only: bool) -> Self {
        MemDisk {
            data: Mutex::new(vec![0; size]),
            read_only,
        }
    }

    fn range(&self, offset: u64, len: u64) -> kiln_block::Result<std::ops::Range<usize>> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => Err(kiln_block::Error::OutOfRange { offset, len, size }),
        }
    }
}

impl Disk for MemDisk {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> kiln_block::Result<()> {
        let r = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.data.lock().unwrap()[r]);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> kiln_block::Result<()> {
        if self.read_only {
            return Err(kiln_block::Error::ReadOnly);
        }
        let r = self.range(offset, buf.len() as u64)?;
        self.data.lock().unwrap()[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> kiln_block::Result<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> kiln_block::Result<()> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> kiln_block::Result<()> {
        if self.read_only {
            return Err(kiln_block::Error::ReadOnly);
        }
        let r = self.range(offset, len)?;
        self.data.lock().unwrap()[r].fill(0);
        Ok(())
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}
