//! Crash test: a child process (this test binary, re-executed) writes rounds
//! of random data to an image, flushing after each round and reporting it;
//! the parent SIGKILLs it at a random moment. The image must then pass
//! `qemu-img check` (leaks allowed) and hold every flushed round's data;
//! the round in progress may be present or not, sector by sector.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kiln_block::{create_qcow2, CreateOptions, DiskFormat, OpenOptions};

const SIZE: u64 = 24 << 20;
const CHILD_ENV: &str = "KILN_BLOCK_CRASH_CHILD";

/// The writes of round `r`: (offset, data). Deterministic in (seed, r).
fn round(seed: u64, r: u64) -> Vec<(u64, Vec<u8>)> {
    let mut rng = Rng(seed.wrapping_mul(1_000_003) ^ (r + 1).wrapping_mul(0x9e37_79b9));
    (0..12)
        .map(|i| {
            let len = [512u64, 4096, 65536, 200_000][rng.below(4) as usize];
            let off = rng.below(SIZE - len) / 512 * 512;
            (off, pattern(seed ^ (r << 20) ^ i, len as usize))
        })
        .collect()
}

/// Child side: runs only when re-executed by `killed_writers_leave_consistent_images`.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (path, seed) = spec.split_once(',').expect("spec");
    let seed: u64 = seed.parse().expect("seed");
    // Every other run uses O_DIRECT (data written through Linux AIO).
    let direct = seed % 4 >= 2;
    let d = open_trusted(
        Path::new(path),
        DiskFormat::Qcow2,
        OpenOptions {
            read_only: false,
            direct,
        },
    )
    .expect("open");
    for r in 0.. {
        for (off, data) in round(seed, r) {
            d.write_at(off, &data).expect("write");
        }
        d.flush().expect("flush");
        println!("flushed {r}");
    }
}

fn apply(model: &mut [u8], seed: u64, r: u64) {
    for (off, data) in round(seed, r) {
        model[off as usize..off as usize + data.len()].copy_from_slice(&data);
    }
}

#[test]
fn killed_writers_leave_consistent_images() {
    let dir = tmpdir();
    let base = p(dir.path(), "base.raw");
    let base_data = pattern(99, SIZE as usize);
    std::fs::write(&base, &base_data).expect("base");
    let mut rng = Rng(0x5eed);
    let mut saw_progress = false;
    for iter in 0..10u64 {
        let img = p(dir.path(), &format!("crash{iter}.qcow2"));
        let overlay = iter % 2 == 1;
        let cluster_bits = if iter % 3 == 0 { 9 } else { 16 };
        let backing = overlay.then(|| (base.clone(), DiskFormat::Raw));
        create_qcow2(
            &img,
            SIZE,
            CreateOptions {
                cluster_bits,
                backing,
            },
        )
        .expect("create");
        let seed = 1000 + iter;
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{},{seed}", s(&img)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let last = Arc::new(AtomicI64::new(-1));
        let out = child.stdout.take().expect("stdout");
        let l2 = last.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                // libtest may print "test crash_child ... " on the same line.
                if let Some(pos) = line.find("flushed ") {
                    let n = line[pos + 8..].trim();
                    l2.store(n.parse().expect("round"), Ordering::SeqCst);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let r = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(r, 0, "kill child");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "child must have been killed, not exit");
        reader.join().expect("reader");
        let last = last.load(Ordering::SeqCst);
        saw_progress |= last >= 0;
        eprintln!("iteration {iter}: killed after {} flushed rounds", last + 1);

        check_clean(&img, true);
        let mut old = if overlay {
            base_data.clone()
        } else {
            vec![0u8; SIZE as usize]
        };
        for r in 0..=last {
            apply(&mut old, seed, r as u64);
        }
        // A sector holds its flushed value or, if the round in progress
        // wrote it, the data of one of that round's writes (any prefix of
        // the round may have landed).
        let next = round(seed, (last + 1) as u64);
        let d = open_trusted(
            &img,
            DiskFormat::Qcow2,
            OpenOptions {
                read_only: true,
                direct: false,
            },
        )
        .expect("reopen");
        let mut got = vec![0u8; SIZE as usize];
        d.read_at(0, &mut got).expect("read");
        for sector in 0..(SIZE / 512) as usize {
            let at = (sector * 512) as u64;
            let g = &got[sector * 512..sector * 512 + 512];
            // Replay the round's writes on this sector, accepting any prefix.
            let mut state = old[sector * 512..sector * 512 + 512].to_vec();
            let mut ok = g == &state[..];
            for (off, data) in &next {
                let end = off + data.len() as u64;
                if ok || *off >= at + 512 || end <= at {
                    continue;
                }
                let lo = at.max(*off);
                let hi = (at + 512).min(end);
                state[(lo - at) as usize..(hi - at) as usize]
                    .copy_from_slice(&data[(lo - off) as usize..(hi - off) as usize]);
                ok = g == &state[..];
            }
            assert!(
                ok,
                "iteration {iter}: sector {sector} holds neither the flushed data (round {last}) \
                 nor a state of round {}",
                last + 1
            );
        }
    }
    assert!(
        saw_progress,
        "no child ever completed a flushed round: the test proved nothing"
    );
}
