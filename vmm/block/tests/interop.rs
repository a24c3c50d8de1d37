//! Interoperability with the real qemu-img, both ways: images qemu-img makes
//! (plain, with backing chains, compressed with zlib and zstd, v2, odd
//! refcount widths) read back byte-identical through Kiln; images Kiln makes
//! and writes pass `qemu-img check` and `qemu-img compare`.

mod common;

use std::path::Path;

use common::*;
use kiln_block::{
    create_qcow2, resize, set_write_engine, CreateOptions, Disk, DiskFormat, OpenOptions,
    WriteEngine,
};

const MIB: u64 = 1 << 20;

fn rw() -> OpenOptions {
    OpenOptions {
        read_only: false,
        direct: false,
    }
}
fn ro() -> OpenOptions {
    OpenOptions {
        read_only: true,
        direct: false,
    }
}

fn read_all(d: &dyn Disk) -> Vec<u8> {
    let mut v = vec![0u8; d.size() as usize];
    // Read in odd-sized pieces to cross cluster boundaries.
    let mut pos = 0usize;
    let mut n = 12345usize;
    while pos < v.len() {
        let len = n.min(v.len() - pos);
        d.read_at(pos as u64, &mut v[pos..pos + len]).expect("read");
        pos += len;
        n = n * 7 % 300_000 + 512;
    }
    v
}

/// A new qcow2 image `img` of `size` bytes with clusters of
/// `1 << cluster_bits`, no backing file.
fn create_plain(img: &Path, size: u64, cluster_bits: u32) {
    let opts = CreateOptions {
        cluster_bits,
        backing: None,
    };
    create_qcow2(img, size, opts).expect("create");
}

/// `img` passes `qemu-img check` and holds exactly `model` (`qemu-img
/// compare` against a raw copy of it written into `dir`).
fn assert_qcow2_holds(dir: &Path, img: &Path, model: &[u8]) {
    check_clean(img, true);
    assert_qcow2_reads_as(dir, img, model);
}

/// qemu-img reads the qcow2 image `img` as `model` (written to
/// `dir/model.raw` for the comparison).
fn assert_qcow2_reads_as(dir: &Path, img: &Path, model: &[u8]) {
    let raw = p(dir, "model.raw");
    std::fs::write(&raw, model).expect("write");
    compare_raw(img, "qcow2", &raw);
}

/// Writes a raw file with random data in some regions and holes elsewhere.
fn make_raw(path: &Path, size: u64, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; size as usize];
    let mut rng = Rng(seed);
    for _ in 0..40 {
        let off = rng.below(size) as usize;
        let len = (rng.below(300_000) as usize).min(data.len() - off);
        data[off..off + len].copy_from_slice(&pattern(rng.next(), len));
    }
    std::fs::write(path, &data).expect("write raw");
    data
}

#[test]
fn reads_qemu_images_of_every_cluster_size_and_compression() {
    let dir = tmpdir();
    let raw = p(dir.path(), "src.raw");
    let data = make_raw(&raw, 8 * MIB + 4096 + 512, 1);
    for (i, opts) in [
        vec!["-o", "cluster_size=512"],
        vec!["-o", "cluster_size=4096"],
        vec![],
        vec!["-o", "cluster_size=2M"],
        vec!["-o", "compat=0.10"],
        vec!["-c"],
        vec!["-c", "-o", "cluster_size=4096"],
        vec!["-c", "-o", "compression_type=zstd"],
        vec!["-c", "-o", "compression_type=zstd,cluster_size=2M"],
        vec!["-o", "refcount_bits=1"],
        vec!["-o", "refcount_bits=64"],
    ]
    .iter()
    .enumerate()
    {
        let img = p(dir.path(), &format!("img{i}.qcow2"));
        raw_to_qcow2(&raw, &img, opts);
        let d = open_trusted(&img, DiskFormat::Qcow2, ro()).expect("open");
        assert_eq!(d.size(), data.len() as u64);
        assert!(
            read_all(&*d) == data,
            "content differs for options {opts:?}"
        );
    }
}

#[test]
fn reads_qemu_backing_chain_qcow2_on_qcow2_on_raw() {
    let dir = tmpdir();
    let base = p(dir.path(), "base.raw");
    let mut expect = make_raw(&base, 4 * MIB, 2);
    let mid = p(dir.path(), "mid.qcow2");
    // Relative backing name: resolved against the overlay's directory.
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        s(&mid),
    ]);
    let top = p(dir.path(), "top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        "-b",
        s(&mid),
        "-F",
        "qcow2",
        s(&top),
        "6M",
    ]);
    qemu_io(&mid, "qcow2", "write -P 0xab 100k 200k");
    expect[100 * 1024..300 * 1024].fill(0xab);
    qemu_io(&top, "qcow2", "write -P 0xcd 250k 10k");
    expect[250 * 1024..260 * 1024].fill(0xcd);
    qemu_io(&top, "qcow2", "write -z 1M 64k");
    expect[MIB as usize..MIB as usize + 65536].fill(0);
    qemu_io(&top, "qcow2", "write -P 0x11 5M 4k");
    expect.resize(6 * MIB as usize, 0);
    expect[5 * MIB as usize..5 * MIB as usize + 4096].fill(0x11);
    let d = open_trusted(&top, DiskFormat::Qcow2, ro()).expect("open chain");
    assert!(read_all(&*d) == expect);
}

/// [`random_io`] on the qcow2 image `img`, opened read-write for it and
/// closed again.
fn random_io_on(img: &Path, model: Vec<u8>, seed: u64, ops: usize, zero_discards: bool) -> Vec<u8> {
    let d = open_trusted(img, DiskFormat::Qcow2, rw()).expect("open");
    random_io(&*d, model, seed, ops, zero_discards)
}

/// Applies the same random writes, zeroes and discards to a Kiln disk and to
/// an in-memory model; returns the model.
fn random_io(
    d: &dyn Disk,
    mut model: Vec<u8>,
    seed: u64,
    ops: usize,
    zero_discards: bool,
) -> Vec<u8> {
    let mut rng = Rng(seed);
    let size = model.len() as u64;
    for i in 0..ops {
        let off = rng.below(size);
        let len = rng.below(200_000).min(size - off).max(1);
        let kind = if zero_discards { rng.below(10) } else { 0 };
        match kind {
            0..=6 => {
                let buf = pattern(seed * 1000 + i as u64, len as usize);
                d.write_at(off, &buf).expect("write");
                model[off as usize..(off + len) as usize].copy_from_slice(&buf);
            }
            7 | 8 => {
                d.write_zeroes(off, len).expect("write zeroes");
                model[off as usize..(off + len) as usize].fill(0);
            }
            _ => {
                // Discarded ranges may read as old data or zeros: only check
                // that the engine and qemu agree afterwards, so zero the model
                // by reading back what the engine says.
                d.discard(off, len).expect("discard");
                let mut back = vec![0u8; len as usize];
                d.read_at(off, &mut back).expect("read");
                for (a, b) in back.iter().zip(&model[off as usize..(off + len) as usize]) {
                    assert!(
                        *a == 0 || *a == *b,
                        "discard produced data that was never written"
                    );
                }
                model[off as usize..(off + len) as usize].copy_from_slice(&back);
            }
        }
        if i % 37 == 0 {
            d.flush().expect("flush");
        }
    }
    d.flush().expect("flush");
    model
}

#[test]
fn kiln_created_and_written_images_pass_qemu_check_and_compare() {
    let dir = tmpdir();
    for cb in [9u32, 12, 16, 21] {
        let img = p(dir.path(), &format!("k{cb}.qcow2"));
        let size = 8 * MIB + 1536;
        create_plain(&img, size, cb);
        check_clean(&img, false);
        let model = {
            let d = open_trusted(&img, DiskFormat::Qcow2, rw()).expect("open");
            let m = random_io(&*d, vec![0u8; size as usize], cb as u64, 120, true);
            assert!(
                read_all(&*d) == m,
                "kiln reads back what it wrote (cb {cb})"
            );
            m
        };
        check_clean(&img, true);
        let raw = p(dir.path(), &format!("k{cb}.raw"));
        std::fs::write(&raw, &model).expect("write");
        compare_raw(&img, "qcow2", &raw);
        let info = qemu_img(&["info", "--output=json", s(&img)]);
        assert!(
            info.contains(&format!("\"cluster-size\": {}", 1u64 << cb)),
            "{info}"
        );
    }
}

#[test]
fn kiln_writes_qemu_images_v2_v3_and_odd_refcount_widths() {
    let dir = tmpdir();
    for (i, o) in [
        "compat=0.10",
        "compat=1.1",
        "refcount_bits=1",
        "refcount_bits=8",
        "refcount_bits=64,cluster_size=512",
        "lazy_refcounts=on",
    ]
    .iter()
    .enumerate()
    {
        let img = p(dir.path(), &format!("q{i}.qcow2"));
        qemu_img(&["create", "-f", "qcow2", "-o", o, s(&img), "4M"]);
        qemu_io(&img, "qcow2", "write -P 0x5a 0 300k");
        let mut model = vec![0u8; 4 * MIB as usize];
        model[..300 * 1024].fill(0x5a);
        model = random_io_on(&img, model, 50 + i as u64, 80, true);
        assert_qcow2_holds(dir.path(), &img, &model);
    }
}

#[test]
fn overwrites_compressed_clusters_and_frees_them() {
    let dir = tmpdir();
    let raw = p(dir.path(), "src.raw");
    let data = make_raw(&raw, 4 * MIB, 9);
    for ct in ["zlib", "zstd"] {
        let img = p(dir.path(), &format!("c-{ct}.qcow2"));
        raw_to_qcow2(&raw, &img, &["-c", "-o", &format!("compression_type={ct}")]);
        let model = random_io_on(&img, data.clone(), 77, 60, true);
        assert_qcow2_holds(dir.path(), &img, &model);
    }
}

/// What kiln-vmm's orderly end relies on: after `write_back` the image on
/// disk is complete and clean (no leak) although the disk is never dropped
/// (the process exits without running destructors), here over a
/// compressed image whose overwritten clusters release references.
#[test]
fn write_back_leaves_a_clean_image_without_drop() {
    let dir = tmpdir();
    let raw = p(dir.path(), "src.raw");
    let data = make_raw(&raw, 4 * MIB, 21);
    let img = p(dir.path(), "c.qcow2");
    raw_to_qcow2(&raw, &img, &["-c"]);
    let d = open_trusted(&img, DiskFormat::Qcow2, rw()).expect("open");
    let model = random_io(&*d, data, 31, 40, true);
    d.write_back().expect("write back");
    // As `std::process::exit` would: no Drop.
    std::mem::forget(d);
    check_clean(&img, false);
    assert_qcow2_reads_as(dir.path(), &img, &model);
}

#[test]
fn overlay_on_base_copies_up_and_leaves_base_unchanged() {
    let dir = tmpdir();
    let base = p(dir.path(), "base.qcow2");
    let braw = p(dir.path(), "base.raw");
    let data = make_raw(&braw, 6 * MIB, 3);
    raw_to_qcow2(&braw, &base, &[]);
    let before = std::fs::read(&base).expect("read base");
    let top = p(dir.path(), "top.qcow2");
    create_qcow2(
        &top,
        0,
        CreateOptions {
            cluster_bits: 16,
            backing: Some(("base.qcow2".into(), DiskFormat::Qcow2)),
        },
    )
    .expect("create overlay");
    let info = qemu_img(&["info", "--output=json", s(&top)]);
    assert!(
        info.contains("\"backing-filename-format\": \"qcow2\""),
        "{info}"
    );
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 6 * MIB)),
        "{info}"
    );
    let model = random_io_on(&top, data.clone(), 5, 150, true);
    assert!(
        std::fs::read(&base).expect("read base") == before,
        "base changed"
    );
    assert_qcow2_holds(dir.path(), &top, &model);
    // And qemu-img sees the same through the chain when converting.
    let flat = p(dir.path(), "flat.raw");
    qemu_img(&["convert", "-O", "raw", s(&top), s(&flat)]);
    assert!(std::fs::read(&flat).expect("read") == model);
}

#[test]
fn concurrent_writers_keep_the_image_consistent() {
    let dir = tmpdir();
    let base = p(dir.path(), "base.raw");
    let data = make_raw(&base, 16 * MIB, 4);
    let top = p(dir.path(), "top.qcow2");
    create_qcow2(
        &top,
        0,
        CreateOptions {
            cluster_bits: 16,
            backing: Some((base.clone(), DiskFormat::Raw)),
        },
    )
    .expect("create");
    let d: std::sync::Arc<dyn Disk> = open_trusted(&top, DiskFormat::Qcow2, rw())
        .expect("open")
        .into();
    // 8 threads write disjoint 4 KiB blocks, interleaved inside shared clusters.
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in 0..512u64 {
                    let blk = i * 8 + t;
                    d.write_at(blk * 4096, &pattern(blk, 4096)).expect("write");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    d.flush().expect("flush");
    drop(d);
    let mut model = data;
    for blk in 0..4096u64 {
        model[(blk * 4096) as usize..((blk + 1) * 4096) as usize]
            .copy_from_slice(&pattern(blk, 4096));
    }
    assert_qcow2_holds(dir.path(), &top, &model);
}

#[test]
fn small_clusters_grow_the_refcount_table() {
    let dir = tmpdir();
    let img = p(dir.path(), "small.qcow2");
    // 512-byte clusters: one refcount block covers 128 KiB, one table cluster 8 MiB.
    let size = 24 * MIB;
    create_plain(&img, size, 9);
    let mut model = vec![0u8; size as usize];
    {
        let d = open_trusted(&img, DiskFormat::Qcow2, rw()).expect("open");
        for i in 0..(size / 65536) {
            let buf = pattern(i, 65536);
            d.write_at(i * 65536, &buf).expect("write");
            model[(i * 65536) as usize..((i + 1) * 65536) as usize].copy_from_slice(&buf);
        }
        d.flush().expect("flush");
    }
    assert_qcow2_holds(dir.path(), &img, &model);
}

#[test]
fn direct_io_reads_and_writes_unaligned_requests_with_every_write_engine() {
    let dir = tmpdir();
    for (i, engine) in [
        WriteEngine::IoUring,
        WriteEngine::LinuxAio,
        WriteEngine::Sync,
    ]
    .into_iter()
    .enumerate()
    {
        // Process-wide; other tests running meanwhile are correct with any engine.
        set_write_engine(engine);
        let img = p(dir.path(), &format!("d{i}.qcow2"));
        create_qcow2(&img, 4 * MIB, CreateOptions::default()).expect("create");
        let d = open_trusted(
            &img,
            DiskFormat::Qcow2,
            OpenOptions {
                read_only: false,
                direct: true,
            },
        )
        .expect("open");
        let model = random_io(&*d, vec![0u8; 4 * MIB as usize], 11 + i as u64, 60, true);
        assert!(read_all(&*d) == model, "{engine:?}");
        drop(d);
        check_clean(&img, true);
        let raw = p(dir.path(), &format!("r{i}.raw"));
        std::fs::write(&raw, &model).expect("write");
        let r = open_trusted(
            &raw,
            DiskFormat::Raw,
            OpenOptions {
                read_only: false,
                direct: true,
            },
        )
        .expect("open raw");
        let model2 = random_io(&*r, model, 12 + i as u64, 60, true);
        drop(r);
        assert!(std::fs::read(&raw).expect("read") == model2, "{engine:?}");
    }
    set_write_engine(WriteEngine::LinuxAio);
}

#[test]
fn resize_grows_l1_and_keeps_data() {
    let dir = tmpdir();
    let img = p(dir.path(), "r.qcow2");
    create_plain(&img, MIB, 9);
    let mut model = random_io_on(&img, vec![0u8; MIB as usize], 21, 30, false);
    resize(&img, DiskFormat::Qcow2, 40 * MIB).expect("resize");
    check_clean(&img, true);
    model.resize(40 * MIB as usize, 0);
    {
        let d = open_trusted(&img, DiskFormat::Qcow2, rw()).expect("open");
        assert_eq!(d.size(), 40 * MIB);
        model = random_io(&*d, model, 22, 30, false);
    }
    check_clean(&img, true);
    let raw = p(dir.path(), "m.raw");
    std::fs::write(&raw, &model).expect("write");
    compare_raw(&img, "qcow2", &raw);
    assert!(
        resize(&img, DiskFormat::Qcow2, MIB).is_err(),
        "shrink refused"
    );
    // Raw resize too.
    resize(&raw, DiskFormat::Raw, 41 * MIB).expect("raw resize");
    assert_eq!(std::fs::metadata(&raw).expect("stat").len(), 41 * MIB);
}

#[test]
fn create_is_constant_time_in_the_base_size() {
    let dir = tmpdir();
    let base = p(dir.path(), "huge.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&base), "4T"]);
    let top = p(dir.path(), "top.qcow2");
    let t = std::time::Instant::now();
    create_qcow2(
        &top,
        0,
        CreateOptions {
            cluster_bits: 16,
            backing: Some((base.clone(), DiskFormat::Qcow2)),
        },
    )
    .expect("create");
    assert!(
        t.elapsed() < std::time::Duration::from_millis(500),
        "took {:?}",
        t.elapsed()
    );
    assert!(std::fs::metadata(&top).expect("stat").len() < 2 * MIB);
    check_clean(&top, false);
    let d = open_trusted(&top, DiskFormat::Qcow2, ro()).expect("open");
    assert_eq!(d.size(), 4 << 40);
}

#[test]
fn backing_without_format_and_loops_are_refused() {
    let dir = tmpdir();
    let base = p(dir.path(), "base.raw");
    std::fs::write(&base, vec![1u8; 65536]).expect("write");
    let top = p(dir.path(), "top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "raw",
        s(&top),
    ]);
    // Drop the recorded format (rebase -u without -F keeps none).
    qemu_img(&[
        "rebase",
        "-u",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "raw",
        s(&top),
    ]);
    let r = open_trusted(&top, DiskFormat::Qcow2, ro());
    assert!(r.is_ok());
    let nofmt = p(dir.path(), "nofmt.qcow2");
    create_qcow2(&nofmt, 65536, CreateOptions::default()).expect("create");
    // Point nofmt at base without a backing format extension (patch the header).
    let mut h = std::fs::read(&nofmt).expect("read");
    let name = s(&base).as_bytes();
    h[8..16].copy_from_slice(&512u64.to_be_bytes());
    h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
    h[512..512 + name.len()].copy_from_slice(name);
    std::fs::write(&nofmt, &h).expect("write");
    let e = open_trusted(&nofmt, DiskFormat::Qcow2, ro())
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("backing format") || format!("{e:?}").contains("backing format"),
        "{e}"
    );
    // A loop: a -> b -> a.
    let a = p(dir.path(), "a.qcow2");
    let b = p(dir.path(), "b.qcow2");
    create_qcow2(&a, MIB, CreateOptions::default()).expect("a");
    create_qcow2(
        &b,
        0,
        CreateOptions {
            cluster_bits: 16,
            backing: Some((a.clone(), DiskFormat::Qcow2)),
        },
    )
    .expect("b");
    qemu_img(&[
        "rebase",
        "-u",
        "-f",
        "qcow2",
        "-b",
        s(&b),
        "-F",
        "qcow2",
        s(&a),
    ]);
    // Creating an image on top of itself is refused before anything is written.
    assert!(create_qcow2(
        &a,
        0,
        CreateOptions {
            cluster_bits: 16,
            backing: Some((a.clone(), DiskFormat::Qcow2)),
        },
    )
    .is_err());
    let e = open_trusted(&a, DiskFormat::Qcow2, ro())
        .err()
        .expect("loop refused");
    let chain = format!("{e:?}");
    assert!(chain.contains("loops"), "{chain}");
}

#[test]
fn format_is_explicit_and_raw_disk_with_qcow2_header_stays_raw() {
    let dir = tmpdir();
    let img = p(dir.path(), "q.qcow2");
    create_qcow2(&img, MIB, CreateOptions::default()).expect("create");
    let d = open_trusted(&img, DiskFormat::Raw, ro()).expect("open raw");
    assert_eq!(d.size(), std::fs::metadata(&img).expect("stat").len());
    let mut b = [0u8; 4];
    d.read_at(0, &mut b).expect("read");
    assert_eq!(&b, b"QFI\xfb");
    assert!("vmdk".parse::<DiskFormat>().is_err());
    assert_eq!(
        "qcow2".parse::<DiskFormat>().expect("parse"),
        DiskFormat::Qcow2
    );
}

/// A backing file is opened only when the caller names it, and only if the
/// header names the same file in the same format; a data file is refused.
#[test]
fn backing_files_open_only_when_named() {
    use kiln_block::{backing_of, open_disk, open_disk_chain, BackingFile};
    let dir = tmpdir();
    let base = p(dir.path(), "base.raw");
    make_raw(&base, MIB, 5);
    let other = p(dir.path(), "other.raw");
    make_raw(&other, MIB, 6);
    let top = p(dir.path(), "top.qcow2");
    qcow2_overlay(&top, &base, "raw");
    let named = |path: &Path, format| BackingFile {
        path: path.to_owned(),
        format,
    };
    let err = |r: kiln_block::Result<Box<dyn Disk>>| format!("{:?}", r.err().expect("refused"));
    let chain = |files: &[BackingFile]| open_disk_chain(&top, DiskFormat::Qcow2, ro(), files);
    // The header alone opens nothing.
    let e = err(open_disk(&top, DiskFormat::Qcow2, ro()));
    assert!(e.contains("which the caller did not give"), "{e}");
    // Another file, or the right file in another format: refused.
    let e = err(chain(&[named(&other, DiskFormat::Raw)]));
    assert!(e.contains("not "), "{e}");
    let e = err(chain(&[named(&base, DiskFormat::Qcow2)]));
    assert!(e.contains("as the caller says"), "{e}");
    // A chain longer than the headers say.
    let e = err(chain(&[
        named(&base, DiskFormat::Raw),
        named(&other, DiskFormat::Raw),
    ]));
    assert!(e.contains("is raw and has no backing file"), "{e}");
    // Named as the header names it: opens, and reads the base.
    let d = chain(&[named(&base, DiskFormat::Raw)]).expect("open");
    assert!(read_all(&*d) == std::fs::read(&base).unwrap());
    let (name, b) = backing_of(&top, DiskFormat::Qcow2).unwrap().unwrap();
    assert_eq!(
        (name.as_str(), b),
        (s(&base), named(&base, DiskFormat::Raw))
    );
    // An external data file is refused, named.
    let df = p(dir.path(), "df.qcow2");
    qcow2_with_data_file(&df, &other);
    let e = err(open_disk(&df, DiskFormat::Qcow2, ro()));
    assert!(
        e.contains("external data file") && e.contains("other.raw"),
        "{e}"
    );
    assert!(backing_of(&df, DiskFormat::Qcow2).is_err());
}
