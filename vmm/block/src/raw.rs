//! Raw images: the guest sees the file's bytes one to one. Reads and writes
//! are positioned (`pread`/`pwrite`), discard punches a hole and
//! write-zeroes uses `FALLOC_FL_ZERO_RANGE` with fallbacks.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::HostFile;
use crate::{check_range, Disk, OpenOptions};

/// A raw image file.
pub struct RawDisk {
    file: HostFile,
    size: u64,
    read_only: bool,
}

impl RawDisk {
    /// Opens `path` as a raw image; its size is the file size at open time.
    pub fn open(path: &Path, opts: OpenOptions) -> Result<RawDisk> {
        let file = HostFile::open(path, opts.read_only, opts.direct)?;
        let size = file.len()?;
        Ok(RawDisk {
            file,
            size,
            read_only: opts.read_only,
        })
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }
}

impl Disk for RawDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.file.read_at(offset, buf, "read raw image")
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.writable()?;
        check_range(offset, buf.len() as u64, self.size)?;
        self.file.write_at(offset, buf, "write raw image")
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.writable()?;
        check_range(offset, len, self.size)?;
        // Discard is advisory: a filesystem without hole punching keeps the data.
        let _ = self.file.punch_hole(offset, len);
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.writable()?;
        check_range(offset, len, self.size)?;
        self.file.write_zeroes(offset, len)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}

/// Grows (or keeps) a raw image to `new_size` bytes.
pub fn resize(path: &Path, new_size: u64) -> Result<()> {
    let file = HostFile::open(path, false, false)?;
    let old = file.len()?;
    if new_size < old {
        return Err(Error::InvalidArgument(format!(
            "shrinking from {old} to {new_size} bytes is not supported"
        )));
    }
    file.set_len(new_size)
}
