//! The qcow2 header and its extensions: parsing with every field checked
//! against sane caps and the file size, and the byte layout used to create
//! images. Nothing here trusts the file.

use crate::error::{Error, Result};

pub const MAGIC: u32 = 0x5146_49fb; // "QFI\xfb"
pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
pub const EXT_BITMAPS: u32 = 0x2385_2875;
pub const EXT_CRYPTO: u32 = 0x0537_be77;
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;

/// Byte offsets of header fields that are rewritten in place.
pub const OFF_SIZE: u64 = 24;
pub const OFF_L1_SIZE: u64 = 36;
pub const OFF_REFTABLE: u64 = 48;
pub const OFF_AUTOCLEAR: u64 = 88;

/// QEMU's caps: 32 MiB of L1 table, 8 MiB of refcount table.
pub const MAX_L1_BYTES: u64 = 32 << 20;
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Host offsets use bits 0..=55 of table entries.
pub const MAX_HOST_OFFSET: u64 = 1 << 56;
/// Largest virtual size accepted (QEMU's limit is 2^61 - 1 sectors-ish; we
/// keep every offset computation far from overflow).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 56;
pub const MAX_BACKING_NAME: u32 = 1023;

/// How compressed clusters are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zlib,
    Zstd,
}

/// A parsed, validated header.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub incompatible: u64,
    pub compatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: Compression,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn bad(msg: String) -> Error {
    Error::Malformed(msg)
}

/// Number of L1 entries needed for a virtual size.
pub fn l1_entries_for(size: u64, cluster_bits: u32) -> u64 {
    let l2_bits = cluster_bits - 3;
    let per_l1 = 1u64 << (cluster_bits + l2_bits);
    size.div_ceil(per_l1)
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Parses the first cluster of an image. `first` holds at least the
    /// first 104 bytes; `read_cluster0` returns the whole first cluster once
    /// the cluster size is known. `file_len` bounds every table.
    pub fn parse(
        first: &[u8],
        cluster0: impl FnOnce(u64) -> Result<Vec<u8>>,
        file_len: u64,
    ) -> Result<Header> {
        if first.len() < 72 || be32(first, 0) != MAGIC {
            return Err(bad("no qcow2 magic".into()));
        }
        let version = be32(first, 4);
        if version != 2 && version != 3 {
            return Err(Error::Unsupported(format!("qcow2 version {version}")));
        }
        let cluster_bits = be32(first, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(bad(format!("cluster bits {cluster_bits} outside 9..=21")));
        }
        let cs = 1u64 << cluster_bits;
        let c0 = cluster0(cs)?;
        let b = &c0[..];
        let backing_file_offset = be64(b, 8);
        let backing_file_size = be32(b, 16);
        let size = be64(b, 24);
        let crypt = be32(b, 32);
        let l1_size = be32(b, 36);
        let l1_table_offset = be64(b, 40);
        let refcount_table_offset = be64(b, 48);
        let refcount_table_clusters = be32(b, 56);
        let nb_snapshots = be32(b, 60);
        let snapshots_offset = be64(b, 64);

        let (incompatible, compatible, autoclear, refcount_order, header_length) = if version == 3 {
            let hl = be32(b, 100);
            (be64(b, 72), be64(b, 80), be64(b, 88), be32(b, 96), hl)
        } else {
            (0, 0, 0, 4, 72)
        };
        if version == 3
            && (header_length < 104 || header_length % 8 != 0 || u64::from(header_length) > cs)
        {
            return Err(bad(format!("header length {header_length}")));
        }
        if refcount_order > 6 {
            return Err(bad(format!("refcount order {refcount_order} above 6")));
        }
        if crypt != 0 {
            return Err(Error::Unsupported("encrypted images".into()));
        }
        // An external data file is refused (after the extensions are read,
        // so that the error can name the file).
        let data_file_bit = incompatible & INCOMPAT_DATA_FILE != 0;
        if incompatible & INCOMPAT_EXTL2 != 0 {
            return Err(Error::Unsupported(
                "extended L2 entries (subclusters)".into(),
            ));
        }
        let known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION | INCOMPAT_DATA_FILE;
        if incompatible & !known != 0 {
            return Err(Error::Unsupported(format!(
                "unknown incompatible features {:#x}",
                incompatible & !known
            )));
        }
        let compression = if incompatible & INCOMPAT_COMPRESSION != 0 {
            if header_length < 105 {
                return Err(bad("compression type bit set but header too short".into()));
            }
            match b[104] {
                0 => Compression::Zlib,
                1 => Compression::Zstd,
                t => return Err(Error::Unsupported(format!("compression type {t}"))),
            }
        } else {
            if header_length >= 105 && b[104] != 0 {
                return Err(bad(
                    "non-zlib compression type without its feature bit".into()
                ));
            }
            Compression::Zlib
        };
        if size > MAX_VIRTUAL_SIZE {
            return Err(bad(format!("virtual size {size} too large")));
        }
        let need_l1 = l1_entries_for(size, cluster_bits);
        if u64::from(l1_size) < need_l1 {
            return Err(bad(format!(
                "L1 table of {l1_size} entries is too small for size {size}"
            )));
        }
        if u64::from(l1_size) * 8 > MAX_L1_BYTES {
            return Err(bad(format!(
                "L1 table of {l1_size} entries exceeds the cap"
            )));
        }
        check_table(
            l1_table_offset,
            u64::from(l1_size) * 8,
            cs,
            file_len,
            "L1 table",
            l1_size == 0,
        )?;
        if refcount_table_clusters == 0 {
            return Err(bad("refcount table of zero clusters".into()));
        }
        let rt_bytes = u64::from(refcount_table_clusters) << cluster_bits;
        if rt_bytes > MAX_REFTABLE_BYTES {
            return Err(bad(format!(
                "refcount table of {refcount_table_clusters} clusters exceeds the cap"
            )));
        }
        check_table(
            refcount_table_offset,
            rt_bytes,
            cs,
            file_len,
            "refcount table",
            false,
        )?;
        if nb_snapshots > 65536 {
            return Err(bad(format!("{nb_snapshots} snapshots")));
        }
        if nb_snapshots > 0
            && (!snapshots_offset.is_multiple_of(cs)
                || snapshots_offset == 0
                || snapshots_offset >= MAX_HOST_OFFSET)
        {
            return Err(bad(format!("snapshot table offset {snapshots_offset:#x}")));
        }

        // Header extensions: from the end of the header to the end of the
        // first cluster (or the backing file name, whichever comes first).
        let mut ext_end = cs;
        if backing_file_offset != 0 {
            if backing_file_size == 0 || backing_file_size > MAX_BACKING_NAME {
                return Err(bad(format!(
                    "backing file name of {backing_file_size} bytes"
                )));
            }
            match backing_file_offset.checked_add(u64::from(backing_file_size)) {
                Some(end) if end <= cs && backing_file_offset >= u64::from(header_length) => {}
                _ => {
                    return Err(bad(format!(
                        "backing file name at {backing_file_offset:#x} outside the first cluster"
                    )))
                }
            }
            ext_end = backing_file_offset;
        }
        let mut backing_format = None;
        let mut pos = u64::from(header_length);
        loop {
            if pos + 8 > ext_end {
                break;
            }
            let p = pos as usize;
            let ty = be32(b, p);
            let len = u64::from(be32(b, p + 4));
            if ty == EXT_END {
                break;
            }
            let data_start = pos + 8;
            let data_end = data_start
                .checked_add(len)
                .filter(|&e| e <= ext_end)
                .ok_or_else(|| {
                    bad(format!(
                        "header extension {ty:#x} of {len} bytes overruns the header"
                    ))
                })?;
            let data = &b[data_start as usize..data_end as usize];
            match ty {
                EXT_BACKING_FORMAT => {
                    let s = std::str::from_utf8(data)
                        .map_err(|_| bad("backing format is not UTF-8".into()))?;
                    backing_format = Some(s.trim_end_matches('\0').to_owned());
                }
                EXT_DATA_FILE => {
                    let name = String::from_utf8_lossy(data);
                    return Err(Error::Unsupported(format!(
                        "external data file {:?}",
                        name.trim_end_matches('\0')
                    )));
                }
                EXT_CRYPTO => return Err(Error::Unsupported("encrypted images".into())),
                _ => {} // feature table, bitmaps and unknown extensions are ignored
            }
            pos = data_start + len.div_ceil(8) * 8;
        }
        if data_file_bit {
            return Err(Error::Unsupported("external data files".into()));
        }
        let backing_file = if backing_file_offset != 0 {
            let s = &b[backing_file_offset as usize
                ..(backing_file_offset + u64::from(backing_file_size)) as usize];
            let name =
                std::str::from_utf8(s).map_err(|_| bad("backing file name is not UTF-8".into()))?;
            if name.contains('\0') {
                return Err(bad("backing file name contains NUL".into()));
            }
            Some(name.to_owned())
        } else {
            None
        };
        Ok(Header {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_table_offset,
            refcount_table_offset,
            refcount_table_clusters,
            nb_snapshots,
            incompatible,
            compatible,
            autoclear,
            refcount_order,
            header_length,
            compression,
            backing_file,
            backing_format,
        })
    }
}

/// A table must be cluster aligned, not at offset 0 (the header), and lie
/// inside the file.
fn check_table(
    off: u64,
    bytes: u64,
    cs: u64,
    file_len: u64,
    what: &str,
    may_be_empty: bool,
) -> Result<()> {
    if may_be_empty && bytes == 0 {
        return Ok(());
    }
    if off == 0 || !off.is_multiple_of(cs) {
        return Err(bad(format!(
            "{what} offset {off:#x} is not a cluster boundary past the header"
        )));
    }
    match off.checked_add(bytes) {
        Some(end) if end <= file_len && end <= MAX_HOST_OFFSET => Ok(()),
        _ => Err(bad(format!("{what} at {off:#x} ({bytes} bytes) extends past the end of the file ({file_len} bytes)"))),
    }
}

/// Writes a version 3 header (112 bytes, zlib compression) followed by
/// extensions and the backing file name into `buf` (the first cluster).
#[allow(clippy::too_many_arguments)]
pub fn build(
    buf: &mut [u8],
    cluster_bits: u32,
    size: u64,
    l1_size: u32,
    l1_table_offset: u64,
    refcount_table_offset: u64,
    refcount_table_clusters: u32,
    backing: Option<(&str, &str)>,
) -> Result<()> {
    let put32 = |b: &mut [u8], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_be_bytes());
    let put64 = |b: &mut [u8], o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_be_bytes());
    buf.fill(0);
    put32(buf, 0, MAGIC);
    put32(buf, 4, 3);
    put32(buf, 20, cluster_bits);
    put64(buf, 24, size);
    put32(buf, 36, l1_size);
    put64(buf, 40, l1_table_offset);
    put64(buf, 48, refcount_table_offset);
    put32(buf, 56, refcount_table_clusters);
    put32(buf, 96, 4); // refcount order: 16-bit refcounts
    put32(buf, 100, 112);
    let mut pos = 112usize;
    if let Some((name, fmt)) = backing {
        let flen = fmt.len();
        let padded = flen.div_ceil(8) * 8;
        if name.is_empty()
            || name.len() > MAX_BACKING_NAME as usize
            || pos + 8 + padded + 8 + name.len() > buf.len()
        {
            return Err(Error::InvalidArgument(format!(
                "backing file name of {} bytes does not fit",
                name.len()
            )));
        }
        put32(buf, pos, EXT_BACKING_FORMAT);
        put32(buf, pos + 4, flen as u32);
        buf[pos + 8..pos + 8 + flen].copy_from_slice(fmt.as_bytes());
        pos += 8 + padded;
        put32(buf, pos, EXT_END);
        put32(buf, pos + 4, 0);
        pos += 8;
        put64(buf, 8, pos as u64);
        put32(buf, 16, name.len() as u32);
        buf[pos..pos + name.len()].copy_from_slice(name.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_header_parses_back() {
        let mut c0 = vec![0u8; 65536];
        build(
            &mut c0,
            16,
            1 << 30,
            2,
            0x30000,
            0x10000,
            1,
            Some(("../base.img", "raw")),
        )
        .expect("build");
        let h = Header::parse(&c0[..104], |_| Ok(c0.clone()), 0x40000).expect("parse");
        assert_eq!(h.version, 3);
        assert_eq!(h.size, 1 << 30);
        assert_eq!(h.l1_size, 2);
        assert_eq!(h.refcount_order, 4);
        assert_eq!(h.backing_file.as_deref(), Some("../base.img"));
        assert_eq!(h.backing_format.as_deref(), Some("raw"));
        assert_eq!(h.compression, Compression::Zlib);
        // The same bytes with a file too short for the L1 table are refused.
        assert!(Header::parse(&c0[..104], |_| Ok(c0.clone()), 0x30008).is_err());
    }

    #[test]
    fn l1_entries_cover_the_size() {
        assert_eq!(l1_entries_for(0, 16), 0);
        assert_eq!(l1_entries_for(1, 16), 1);
        assert_eq!(l1_entries_for(512 << 20, 16), 1);
        assert_eq!(l1_entries_for((512 << 20) + 1, 16), 2);
        assert_eq!(l1_entries_for(MAX_VIRTUAL_SIZE, 9), 1 << 41);
    }
}
