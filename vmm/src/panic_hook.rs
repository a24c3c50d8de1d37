//! The panic message of a seccomp-filtered kiln-vmm.
//!
//! Rust's default panic hook prints a backtrace when `RUST_BACKTRACE` (or
//! `RUST_LIB_BACKTRACE`) asks for one, and kilnd passes its environment on
//! to kiln-vmm. Resolving the backtrace reads the executable
//! (`readlink("/proc/self/exe")`, `openat`), which the vCPU and worker
//! filters forbid: a device-model panic that the vCPU thread catches and
//! turns into an exit reason (`vcpu.rs`) killed the whole process with
//! SIGSYS instead, and the fault then blamed the filter, not the bug. Found
//! while looking for the rest of issue #11's class (a library reaching a
//! call outside a thread's list); `RUST_BACKTRACE=1` is set on the test
//! machines.
//!
//! With filters on, [`install`] replaces the hook with one that prints the
//! thread, place and message, and no backtrace (`--seccomp off` gives one).
//! The line starts with `kiln-vmm: `, which kilnd quotes in the server's
//! fault when the VMM then exits with a host error.

/// Replace the panic hook (main, before any thread starts).
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let msg = info.payload_as_str().unwrap_or("(no message)");
        let at = info
            .location()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        eprintln!(
            "kiln-vmm: thread {name} panicked{at}: {msg} (no backtrace under the seccomp \
             filters; run with --seccomp off for one)"
        );
    }));
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Output};

    use crate::seccomp::{apply_with, SeccompMode, ThreadKind};

    const CHILD_ENV: &str = "KILN_PANIC_HOOK_CHILD";

    fn run_child(case: &str) -> Output {
        let exe = std::env::current_exe().expect("current_exe");
        Command::new(exe)
            .args(["--exact", "panic_hook::tests::child_entry", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, case)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run the test binary")
    }

    /// A vCPU-filtered thread catches a panic, as `Vcpu::spawn` does.
    #[test]
    fn child_entry() {
        let Ok(case) = std::env::var(CHILD_ENV) else {
            return;
        };
        if case == "hook" {
            super::install();
        }
        let t = std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(|| {
                apply_with(ThreadKind::Vcpu, SeccompMode::Kill).unwrap();
                let r = std::panic::catch_unwind(|| panic!("a device model bug"));
                assert!(r.is_err());
            })
            .unwrap();
        t.join().unwrap();
        println!("CAUGHT");
    }

    #[test]
    fn a_caught_panic_in_a_filtered_thread_stays_caught_with_backtraces_asked_for() {
        let out = run_child("hook");
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("CAUGHT"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("kiln-vmm: thread vcpu0 panicked at vmm/src/panic_hook.rs")
                && err.contains(": a device model bug (no backtrace"),
            "{err}"
        );
    }

    /// Rust's own hook, asked for a backtrace, reaches a forbidden call.
    #[test]
    fn the_default_hook_would_be_killed() {
        let out = run_child("default");
        assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{out:?}");
    }
}
