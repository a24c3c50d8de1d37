//! Malformed images: every case must give a clear error (never a panic, a
//! hang or a huge allocation), and a refused write must not damage the file.
//! Cases found by the fuzz target are kept in `tests/corpus/` and replayed.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kiln_block::{create_qcow2, CreateOptions, DiskFormat, Error, OpenOptions};

const RO: OpenOptions = OpenOptions {
    read_only: true,
    direct: false,
};
const RW: OpenOptions = OpenOptions {
    read_only: false,
    direct: false,
};

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let img = dir.join(name);
    create_qcow2(&img, 4 << 20, CreateOptions::default()).expect("create");
    // Put some data in so that L2 tables exist.
    let d = open_trusted(&img, DiskFormat::Qcow2, RW).expect("open");
    d.write_at(0, &pattern(1, 200_000)).expect("write");
    drop(d);
    img
}

fn patch(img: &Path, off: usize, bytes: &[u8]) {
    let mut b = std::fs::read(img).expect("read");
    if b.len() < off + bytes.len() {
        b.resize(off + bytes.len(), 0);
    }
    b[off..off + bytes.len()].copy_from_slice(bytes);
    std::fs::write(img, b).expect("write");
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}
fn be64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Opening must fail with an error whose text contains `needle`.
fn refused(img: &Path, opts: OpenOptions, needle: &str) {
    match open_trusted(img, DiskFormat::Qcow2, opts) {
        Ok(_) => panic!(
            "{} opened, expected an error about {needle:?}",
            img.display()
        ),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            assert!(
                msg.contains(needle),
                "error {msg:?} does not mention {needle:?}"
            );
        }
    }
}

#[test]
fn header_fields_out_of_range_are_refused() {
    let dir = tmpdir();
    let cases: Vec<(&str, usize, Vec<u8>, &str)> = vec![
        ("magic", 0, be32(0x1234).to_vec(), "magic"),
        ("version", 4, be32(4).to_vec(), "version 4"),
        ("cluster bits 8", 20, be32(8).to_vec(), "cluster bits 8"),
        ("cluster bits 22", 20, be32(22).to_vec(), "cluster bits 22"),
        (
            "cluster bits huge",
            20,
            be32(u32::MAX).to_vec(),
            "cluster bits",
        ),
        ("size huge", 24, be64(1 << 62).to_vec(), "virtual size"),
        ("encrypted", 32, be32(1).to_vec(), "encrypted"),
        ("l1 too small", 36, be32(0).to_vec(), "too small"),
        (
            "l1 too big",
            36,
            be32(0x7fff_ffff).to_vec(),
            "exceeds the cap",
        ),
        ("l1 past eof", 40, be64(1 << 40).to_vec(), "past the end"),
        (
            "l1 unaligned",
            40,
            be64(0x30001).to_vec(),
            "cluster boundary",
        ),
        ("l1 at 0", 40, be64(0).to_vec(), "cluster boundary"),
        (
            "l1 offset overflow",
            40,
            be64(u64::MAX - 0xffff).to_vec(),
            "past the end",
        ),
        ("reftable at 0", 48, be64(0).to_vec(), "cluster boundary"),
        (
            "reftable past eof",
            48,
            be64(1 << 45).to_vec(),
            "past the end",
        ),
        (
            "reftable zero clusters",
            56,
            be32(0).to_vec(),
            "zero clusters",
        ),
        (
            "reftable huge",
            56,
            be32(0xffff_ffff).to_vec(),
            "exceeds the cap",
        ),
        ("snapshots", 60, be32(1_000_000).to_vec(), "snapshots"),
        (
            "unknown incompatible",
            72,
            be64(1 << 40).to_vec(),
            "unknown incompatible",
        ),
        (
            "external data file",
            72,
            be64(1 << 2).to_vec(),
            "external data",
        ),
        ("extended l2", 72, be64(1 << 4).to_vec(), "extended L2"),
        ("refcount order 7", 96, be32(7).to_vec(), "refcount order"),
        ("header length", 100, be32(3).to_vec(), "header length"),
        (
            "header length huge",
            100,
            be32(0x10_0000).to_vec(),
            "header length",
        ),
        (
            "backing name size",
            8,
            [&be64(512)[..], &be32(0xffff_ffff)].concat(),
            "backing file name",
        ),
        (
            "extension overrun",
            112,
            [be32(0x1234_5678), be32(0xffff_fff0)].concat(),
            "overruns",
        ),
        (
            "data file extension",
            112,
            [&be32(0x4441_5441)[..], &be32(4), b"x.rw"].concat(),
            "external data",
        ),
    ];
    for (name, off, bytes, needle) in cases {
        let img = fresh(dir.path(), &format!("{}.qcow2", name.replace(' ', "-")));
        patch(&img, off, &bytes);
        refused(&img, RO, needle);
    }
    // Backing name offset outside the first cluster.
    let img = fresh(dir.path(), "b.qcow2");
    patch(&img, 8, &be64(65530));
    patch(&img, 16, &be32(100));
    refused(&img, RO, "outside the first cluster");
    // Truncated file.
    let img = dir.path().join("t.qcow2");
    std::fs::write(&img, b"QFI\xfb\0\0\0\x03").expect("write");
    refused(&img, RO, "too short");
    // Empty file.
    std::fs::write(&img, b"").expect("write");
    refused(&img, RO, "too short");
}

#[test]
fn dirty_corrupt_and_snapshot_images_are_read_only() {
    let dir = tmpdir();
    for (bit, needle) in [(1u64, "dirty"), (2, "corrupt")] {
        let img = fresh(dir.path(), "d.qcow2");
        patch(&img, 72, &be64(bit));
        refused(&img, RW, needle);
        open_trusted(&img, DiskFormat::Qcow2, RO).expect("read-only open works");
    }
    let img = fresh(dir.path(), "s.qcow2");
    qemu_img(&["snapshot", "-c", "snap1", s(&img)]);
    refused(&img, RW, "snapshots");
    let d = open_trusted(&img, DiskFormat::Qcow2, RO).expect("ro");
    let mut b = vec![0u8; 200_000];
    d.read_at(0, &mut b).expect("read");
    assert!(b == pattern(1, 200_000));
}

#[test]
fn bad_table_entries_give_errors_on_io() {
    let dir = tmpdir();
    // L1 entry unaligned: refused at open.
    let img = fresh(dir.path(), "l1.qcow2");
    let l1_off = u64::from_be_bytes(
        std::fs::read(&img).expect("r")[40..48]
            .try_into()
            .expect("8"),
    );
    patch(&img, l1_off as usize, &be64((1 << 63) | 0x12345));
    refused(&img, RO, "L1 entry 0");

    // L2 entry with an unaligned data offset: reads fail cleanly.
    let img = fresh(dir.path(), "l2.qcow2");
    let bytes = std::fs::read(&img).expect("r");
    let l2 = u64::from_be_bytes(
        bytes[l1_off as usize..l1_off as usize + 8]
            .try_into()
            .expect("8"),
    ) & 0x00ff_ffff_ffff_fe00;
    patch(&img, l2 as usize, &be64((1 << 63) | 0x10200));
    let d = open_trusted(&img, DiskFormat::Qcow2, RW).expect("open");
    let mut b = vec![0u8; 4096];
    let e = d.read_at(0, &mut b).expect_err("unaligned data offset");
    assert!(matches!(e, Error::Malformed(_)), "{e}");
    assert!(d.write_at(0, &b).is_err());
    drop(d);

    // L2 entry pointing at the refcount table: writes are refused, the
    // refcount table is not overwritten.
    let img = fresh(dir.path(), "ov.qcow2");
    let bytes = std::fs::read(&img).expect("r");
    let rt = u64::from_be_bytes(bytes[48..56].try_into().expect("8"));
    patch(&img, l2 as usize, &be64((1 << 63) | rt));
    let before = std::fs::read(&img).expect("r");
    let d = open_trusted(&img, DiskFormat::Qcow2, RW).expect("open");
    let e = d.write_at(0, &[0xffu8; 4096]).expect_err("overlap");
    assert!(matches!(e, Error::Corrupt(_)), "{e}");
    assert!(
        d.write_at(1 << 20, &[1u8; 512]).is_err(),
        "no more writes after corruption"
    );
    drop(d);
    assert!(
        std::fs::read(&img).expect("r")[rt as usize..rt as usize + 65536]
            == before[rt as usize..rt as usize + 65536]
    );

    // Refcount table without the block that counts the header: the
    // allocator would hand out metadata; the engine notices and refuses.
    let img = fresh(dir.path(), "rb0.qcow2");
    patch(&img, rt as usize, &be64(0));
    let d = open_trusted(&img, DiskFormat::Qcow2, RW).expect("open");
    let e = d
        .write_at(3 << 20, &[7u8; 4096])
        .expect_err("allocating write");
    assert!(matches!(e, Error::Corrupt(_)), "{e}");
    drop(d);
    assert_eq!(
        &std::fs::read(&img).expect("r")[..4],
        b"QFI\xfb",
        "header intact"
    );

    // Refcount table entry with reserved bits.
    let img = fresh(dir.path(), "rbr.qcow2");
    patch(&img, rt as usize, &be64(0x20001));
    refused(&img, RW, "refcount table entry 0");

    // Compressed cluster with garbage data: read error, no panic.
    let img = fresh(dir.path(), "cz.qcow2");
    let x = 62 - (16 - 8);
    patch(&img, l2 as usize, &be64((1 << 62) | (3u64 << x) | 0x50000));
    patch(&img, 0x50000, &[0xffu8; 2048]);
    let d = open_trusted(&img, DiskFormat::Qcow2, RO).expect("open");
    let e = d.read_at(0, &mut b).expect_err("bad deflate");
    assert!(matches!(e, Error::Decompress { .. }), "{e}");
}

#[test]
fn over_long_backing_chains_are_refused() {
    let dir = tmpdir();
    let mut prev = dir.path().join("c0.qcow2");
    create_qcow2(&prev, 1 << 20, CreateOptions::default()).expect("create");
    for i in 1..=kiln_block::MAX_CHAIN_DEPTH {
        let next = dir.path().join(format!("c{i}.qcow2"));
        // Build with qemu-img so our own create does not open the chain.
        qcow2_naming_backing(&next, s(&prev), "qcow2");
        prev = next;
    }
    refused(&prev, RO, "longer than");
}

/// Replays inputs kept from fuzzing (tests/corpus/*.qcow2): each must open
/// or fail without panicking, and I/O on it must not panic either.
#[test]
fn fuzz_regressions_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries {
        let path = e.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        kiln_block::qcow2::fuzz_one(&data);
    }
}
