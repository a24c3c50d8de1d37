//! Creating qcow2 images and overlays (without reading the base beyond its
//! header) and growing them.

use std::fs::OpenOptions as FsOpenOptions;
use std::path::Path;

use super::header::{self, l1_entries_for, MAX_L1_BYTES, MAX_VIRTUAL_SIZE};
use super::{resolve_backing, Qcow2Disk};
use crate::error::{Error, Result};
use crate::io::HostFile;
use crate::{CreateOptions, Disk, OpenOptions};

/// Creates a qcow2 v3 image: header, one refcount table, the refcount
/// blocks that count the metadata, and an empty L1 table.
pub fn create(path: &Path, size: u64, opts: &CreateOptions) -> Result<()> {
    let cb = opts.cluster_bits;
    if !(9..=21).contains(&cb) {
        return Err(Error::InvalidArgument(format!(
            "cluster bits {cb} outside 9..=21"
        )));
    }
    let cs = 1u64 << cb;
    let mut size = size;
    let mut backing = None;
    if let Some((bpath, fmt)) = &opts.backing {
        let name = bpath
            .to_str()
            .ok_or_else(|| Error::InvalidArgument("backing path is not UTF-8".into()))?;
        // Check that the base opens in its stated format (reads its header only).
        let resolved = resolve_backing(path, name)?;
        // The base's own backing file (if any) is not opened.
        let base_size = crate::virtual_size(&resolved, *fmt).map_err(|e| Error::Backing {
            path: resolved.clone(),
            source: Box::new(e),
        })?;
        if size == 0 {
            size = base_size;
        }
        if same_file(path, &resolved) {
            return Err(Error::InvalidArgument(format!(
                "{} would be its own backing file",
                path.display()
            )));
        }
        backing = Some((name.to_owned(), fmt.as_str()));
    }
    if size > MAX_VIRTUAL_SIZE {
        return Err(Error::InvalidArgument(format!("size {size} too large")));
    }
    let l1_entries = l1_entries_for(size, cb).max(1);
    if l1_entries * 8 > MAX_L1_BYTES {
        return Err(Error::InvalidArgument(format!(
            "size {size} needs too large an L1 table for {cs}-byte clusters"
        )));
    }
    let l1c = (l1_entries * 8).div_ceil(cs);
    let per_block = cs * 8 / 16;
    let (mut tc, mut bc) = (1u64, 1u64);
    loop {
        let total = 1 + tc + bc + l1c;
        let nbc = total.div_ceil(per_block);
        let ntc = (nbc * 8).div_ceil(cs);
        if nbc == bc && ntc == tc {
            break;
        }
        bc = nbc;
        tc = ntc;
    }
    let total = 1 + tc + bc + l1c;
    let table_off = cs;
    let blocks_off = (1 + tc) * cs;
    let l1_off = (1 + tc + bc) * cs;

    let f = FsOpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
    drop(f);
    let file = HostFile::open(path, false, false)?;
    let mut c0 = vec![0u8; cs as usize];
    header::build(
        &mut c0,
        cb,
        size,
        l1_entries as u32,
        l1_off,
        table_off,
        tc as u32,
        backing.as_ref().map(|(n, f)| (n.as_str(), *f)),
    )?;
    let mut table = vec![0u8; (tc * cs) as usize];
    for b in 0..bc {
        let off = blocks_off + b * cs;
        table[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&off.to_be_bytes());
    }
    let mut blocks = vec![0u8; (bc * cs) as usize];
    for c in 0..total {
        blocks[(c * 2) as usize..(c * 2 + 2) as usize].copy_from_slice(&1u16.to_be_bytes());
    }
    file.set_len(total * cs)?;
    file.write_at(table_off, &table, "write refcount table")?;
    file.write_at(blocks_off, &blocks, "write refcount blocks")?;
    file.write_at(0, &c0, "write header")?;
    file.sync()
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Grows a qcow2 image to `new_size` bytes.
pub fn resize(path: &Path, new_size: u64) -> Result<()> {
    // Growing touches metadata only: the backing file is not opened.
    let disk = Qcow2Disk::open_in_chain(
        path,
        OpenOptions {
            read_only: false,
            direct: false,
        },
        None,
        &mut Vec::new(),
    )?;
    let old = disk.size();
    if new_size < old {
        return Err(Error::InvalidArgument(format!(
            "shrinking from {old} to {new_size} bytes is not supported"
        )));
    }
    if new_size > MAX_VIRTUAL_SIZE {
        return Err(Error::InvalidArgument(format!("size {new_size} too large")));
    }
    if new_size == old {
        return Ok(());
    }
    let entries = l1_entries_for(new_size, disk.cluster_bits);
    {
        let mut m = disk.lock();
        m.grow_l1(&disk.file, entries)?;
        m.finish(&disk.file)?;
    }
    // The size goes last: a crash before this leaves the old size, valid.
    disk.file.write_at(
        header::OFF_SIZE,
        &new_size.to_be_bytes(),
        "write header size",
    )?;
    disk.file.sync()
}
