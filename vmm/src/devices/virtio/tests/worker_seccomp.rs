//! A device worker's whole life under the shipped filters, as a guest
//! drives it: a thread under the vCPU filter (where the guest's
//! activation runs) starts a real [`Worker`], which installs the worker
//! filter; the worker wakes on its queue eventfd, serves (allocating and
//! freeing megabytes, as a disk worker inflating clusters does), polls,
//! and is stopped and joined (a device reset), three times over. Thread
//! creation, the worker's thread exit (glibc and Rust thread teardown) and
//! the join all run under the filters in kill mode, in a fresh process set
//! up as kiln-vmm is (`seccomp::set_mode`, one malloc arena from the start).

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::super::worker::{Wake, Worker, WorkerHandler};
use crate::seccomp::{self, SeccompMode, ThreadKind};

const CHILD_ENV: &str = "KILN_WORKER_SECCOMP_CHILD";

struct Churn(Arc<AtomicU32>);

impl WorkerHandler for Churn {
    fn handle(&mut self, _wake: Wake) {
        let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 << 10]).collect();
        let big = vec![1u8; 4 << 20];
        assert_eq!(blocks[3][5] as usize + big[7] as usize, 4);
        drop(blocks);
        drop(big);
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn life_cycles() {
    for round in 0..3u32 {
        let served = Arc::new(AtomicU32::new(0));
        let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let poll = Duration::from_micros(u64::from(round) * 100);
        let mut w = Worker::spawn_polling(
            format!("churn{round}-io"),
            vec![kick.try_clone().unwrap()],
            Churn(served.clone()),
            poll,
        )
        .unwrap();
        for n in 1..=3 {
            kick.write(1).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while served.load(Ordering::SeqCst) < n {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: request {n} not served"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        w.stop();
    }
}

#[test]
fn child_entry() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    seccomp::set_mode(SeccompMode::Kill);
    let t = std::thread::spawn(|| {
        seccomp::apply(ThreadKind::Vcpu).unwrap();
        life_cycles();
    });
    t.join().expect("the vCPU-like thread");
    println!("LIFE-OK");
}

#[test]
fn a_worker_starts_serves_polls_and_stops_under_the_filters() {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([
            "--exact",
            "devices::virtio::tests::worker_seccomp::child_entry",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, "1")
        .env("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
        .output()
        .expect("run the test binary");
    assert_ne!(out.status.signal(), Some(libc::SIGSYS), "{out:?}");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("LIFE-OK"),
        "{out:?}"
    );
}
