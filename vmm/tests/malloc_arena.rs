//! A thread under the virtio worker's seccomp filter (`--seccomp kill`)
//! allocates and frees megabytes, the way the virtio-blk worker did when it
//! inflated compressed qcow2 clusters for copy-on-write (issue #11):
//!
//! - with [`kiln_vmm::malloc::configure`] called first thing in `main`, as
//!   kiln-vmm does, the process lives;
//! - with glibc's defaults, the thread's own heap is shrunk after the frees,
//!   glibc opens `/proc/sys/vm/overcommit_memory`, and the filter kills the
//!   process with SIGSYS. That half keeps the first honest: it is the path
//!   that killed the VMM.
//!
//! Each case runs in a fresh process (glibc reads the file once per
//! process, and no filter may land on the test's own process). No libtest
//! harness: it runs every test on a thread of its own, and that thread
//! would have allocated before `configure` could run.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use kiln_vmm::seccomp::{apply_with, SeccompMode, ThreadKind};

const CHILD_ENV: &str = "KILN_MALLOC_CHILD";

/// Under the worker filter: 4 rounds of 256 blocks of 64 KiB (below glibc's
/// mmap threshold, so they come from the thread's heap), all freed, which
/// leaves 16 MiB free at the top of that heap each round.
fn allocate_and_free_in_a_worker() {
    let t = std::thread::spawn(|| {
        apply_with(ThreadKind::Worker, SeccompMode::Kill).expect("install the worker filter");
        for round in 0..4u8 {
            let blocks: Vec<Vec<u8>> = (0..256).map(|_| vec![round + 1; 64 * 1024]).collect();
            let sum: u64 = blocks.iter().map(|b| u64::from(b[17])).sum();
            assert_eq!(sum, 256 * u64::from(round + 1));
            drop(blocks);
        }
    });
    t.join().expect("worker thread");
    println!("SURVIVED");
    std::io::stdout().flush().unwrap();
}

fn run_child(case: &str) -> std::process::Output {
    let exe = std::env::current_exe().expect("current_exe");
    Command::new(exe)
        .env(CHILD_ENV, case)
        .output()
        .expect("run this test binary again")
}

fn main() {
    if let Ok(case) = std::env::var(CHILD_ENV) {
        if case == "configured" {
            kiln_vmm::malloc::configure();
        }
        allocate_and_free_in_a_worker();
        return;
    }
    // `cargo test -- --list` and filters: this binary has the two checks
    // below and runs them both; it has no ignored tests.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--ignored") {
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("malloc_arena: test");
        return;
    }

    let out = run_child("configured");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("SURVIVED"),
        "a filtered worker freeing large buffers died with one arena: {out:?}"
    );
    println!("test a_worker_freeing_large_buffers_stays_inside_its_filter ... ok");

    if cfg!(target_env = "gnu") {
        let out = run_child("glibc-default");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSYS),
            "with glibc's default arenas the same worker should reach openat: {out:?}"
        );
        println!("test without_one_arena_the_same_worker_is_killed ... ok");
    }
}
