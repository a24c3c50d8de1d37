//! display_bench: the display beside QEMU's standard VGA, on the display
//! probe (images/mbr/vga.s) in its 1024x768x32 VBE mode, both booted from
//! the same SeaBIOS:
//! - a full 1024x768 VNC update (non-incremental request to the last
//!   byte), raw and zlib, with `kiln_tests::rfb::Viewer`: bytes and time,
//!   against QEMU's `-vnc unix:` with the same encodings;
//! - screenshot latency: `GET /v1/vm/screenshot` (render + PNG) against
//!   QEMU's QMP `screendump` (render + PPM file);
//! - the VMM's CPU while a viewer waits on a still screen (goal: at most
//!   1% of a core), both VMMs.
//!
//! Usage: display_bench [--rounds N]. The kiln-vmm measured is `$KILN_VMM`,
//! else the one of this binary's target profile (`scripts/bench.sh`
//! builds it in release mode).

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use kiln_benches::median;
use kiln_tests::disk::{vga_probe_disk, vga_probe_go};
use kiln_tests::qemu_vga::QemuVga;
use kiln_tests::rfb::{Viewer, ENC_DESKTOP_SIZE, ENC_RAW, ENC_ZLIB};
use kiln_tests::{ScratchDir, Vm, VmSpec};

/// Median bytes and milliseconds of `rounds` full updates in `enc`.
fn full_updates(sock: &Path, enc: i32, rounds: usize) -> (usize, f64) {
    let mut v = Viewer::connect(sock, &[enc, ENC_DESKTOP_SIZE]).expect("VNC viewer");
    v.update(false).expect("first update");
    assert_eq!((v.width, v.height), (1024, 768), "the probe's mode");
    let mut ms = Vec::new();
    let mut bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        v.update(false).expect("update");
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = v.last_update_bytes;
    }
    (bytes, median(ms))
}

/// Nanoseconds process `pid` has run on a CPU: the sum of its threads'
/// `schedstat` (the clock-tick counts of `stat` are 10 ms coarse, which
/// over a few seconds is the 1% to be measured).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split(' ').next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

/// Percent of a core `pid` used over `secs` while a viewer waits.
fn idle_cpu(pid: u32, sock: &Path, secs: u64) -> f64 {
    let mut v = Viewer::connect(sock, &[ENC_ZLIB, ENC_RAW, ENC_DESKTOP_SIZE]).expect("viewer");
    v.update(false).expect("update");
    v.request(true).expect("request");
    sleep(Duration::from_millis(300));
    let before = cpu_ns(pid);
    let t = Instant::now();
    sleep(Duration::from_secs(secs));
    (cpu_ns(pid) - before) as f64 / 1e9 / t.elapsed().as_secs_f64() * 100.0
}

fn main() {
    let mut rounds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            _ => panic!("usage: display_bench [--rounds N]"),
        }
    }
    let dir = ScratchDir::new("display-bench").unwrap();

    // kiln-vmm.
    let kdir = dir.path().join("kiln");
    std::fs::create_dir_all(&kdir).unwrap();
    let disk = vga_probe_disk(&kdir);
    let vnc = kdir.join("vnc.sock");
    let spec = VmSpec::seabios().args([
        "--display".to_string(),
        "vga".to_string(),
        "--vnc".to_string(),
        vnc.display().to_string(),
        "--disk".to_string(),
        format!("path={},format=raw", disk.display()),
    ]);
    let mut vm = Vm::start(&spec);
    vm.wait_serial_line("KILNVGA TEXT", Duration::from_secs(120));
    vga_probe_go(&disk);
    vm.wait_serial_line("KILNVGA VBE", Duration::from_secs(120));
    let k_raw = full_updates(&vnc, ENC_RAW, rounds);
    let k_zlib = full_updates(&vnc, ENC_ZLIB, rounds);
    let mut k_shot = Vec::new();
    for _ in 0..rounds {
        let (_, took) = kiln_tests::screen::screenshot(&vm);
        k_shot.push(took.as_secs_f64() * 1e3);
    }
    let k_idle = idle_cpu(vm.pid(), &vnc, 5);
    drop(vm);

    // QEMU.
    let qdir = dir.path().join("qemu");
    std::fs::create_dir_all(&qdir).unwrap();
    let disk = vga_probe_disk(&qdir);
    let qvnc = qdir.join("vnc.sock");
    let vnc_arg = format!("unix:{}", qvnc.display());
    let mut qemu = QemuVga::start(&qdir, &disk, &["-vnc", &vnc_arg]);
    qemu.wait_serial("KILNVGA TEXT");
    vga_probe_go(&disk);
    qemu.wait_serial("KILNVGA VBE");
    let q_raw = full_updates(&qvnc, ENC_RAW, rounds);
    let q_zlib = full_updates(&qvnc, ENC_ZLIB, rounds);
    let mut q_shot = Vec::new();
    for i in 0..rounds {
        let t = Instant::now();
        qemu.screendump(&qdir.join(format!("s{i}.ppm")));
        q_shot.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let q_idle = idle_cpu(qemu.child.id(), &qvnc, 5);
    drop(qemu);

    println!("display_bench: probe at 1024x768x32, {rounds} rounds, medians");
    println!(
        "{:<34} {:>22} {:>22} {:>7}",
        "", "kiln-vmm", "QEMU", "ratio"
    );
    for (what, k, q) in [
        ("full update, raw", k_raw, q_raw),
        ("full update, zlib", k_zlib, q_zlib),
    ] {
        println!(
            "{what:<34} {:>10} B {:>7.1} ms {:>10} B {:>7.1} ms {:>6.2}x",
            k.0,
            k.1,
            q.0,
            q.1,
            k.1 / q.1
        );
    }
    let (ks, qs) = (median(k_shot), median(q_shot));
    println!(
        "{:<34} {:>19.1} ms {:>19.1} ms {:>6.2}x",
        "screenshot (PNG / QMP screendump)",
        ks,
        qs,
        ks / qs
    );
    println!(
        "{:<34} {:>20.2} % {:>20.2} %   (goal: kiln-vmm <= 1%)",
        "CPU, viewer on a still screen", k_idle, q_idle
    );
}
