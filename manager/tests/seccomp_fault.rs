//! A VMM killed by a seccomp filter becomes a server fault that names the
//! system call (real kilnd, real kiln-vmm, real kernel kill and audit
//! record):
//!
//! - kilnd's `[vmm] binary` is a small wrapper that installs one extra
//!   filter, "exit_group kills the process", then execs the real kiln-vmm
//!   (filters survive execve). The `hello` probe powers off at once, so
//!   kiln-vmm's main thread ends the process with exit_group and the kernel
//!   kills it with SIGSYS, writing an audit record that names system call
//!   231 in thread `kiln-vmm`. No kiln-vmm code path is faked: the only
//!   unusual thing is the extra filter.
//! - A running VMM sent SIGSYS with kill(2) leaves no audit record: the
//!   fault names the signal alone.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::vm::*;
use common::{vmm_bin, Kilnd};
use kiln_api::compute::ServerStatus;

/// The wrapper: Debian's python3 (ctypes), one BPF filter, execv.
const WRAPPER: &str = r#"#!/usr/bin/python3
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
insns = [
    (0x20, 0, 0, 0),           # BPF_LD|BPF_W|BPF_ABS: seccomp_data.nr
    (0x15, 0, 1, 231),         # BPF_JMP|BPF_JEQ|BPF_K: exit_group?
    (0x06, 0, 0, 0x80000000),  # BPF_RET: SECCOMP_RET_KILL_PROCESS
    (0x06, 0, 0, 0x7fff0000),  # BPF_RET: SECCOMP_RET_ALLOW
]
prog = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in insns))
fprog = ctypes.create_string_buffer(struct.pack("=H6xQ", len(insns), ctypes.addressof(prog)))
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit("PR_SET_NO_NEW_PRIVS failed")
if libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
    sys.exit("PR_SET_SECCOMP failed: errno %d" % ctypes.get_errno())
os.execv(VMM, [VMM] + sys.argv[1:])
"#;

fn kilnd_with_wrapper() -> (Kilnd, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("kiln-vmm-exit-group-killed");
    let script = WRAPPER.replace(
        "os.execv(VMM",
        &format!("VMM = {:?}\nos.execv(VMM", vmm_bin().display().to_string()),
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let k = Kilnd::start(&format!(
        "[vmm]\nbinary = \"{}\"\nstop_timeout_s = 2\nboot_timeout_s = 20\n",
        wrapper.display()
    ));
    (k, dir)
}

#[test]
fn a_seccomp_kill_is_a_fault_naming_the_system_call() {
    let (k, _dir) = kilnd_with_wrapper();
    register(&k, "hello", "hello", "");
    // The kernel prints audit records through a rate limit (10 per 5 s);
    // the seccomp kills and log-mode records of the suites run just before
    // may have used it up. Five quiet seconds open a new window, so the
    // record kilnd looks for is printed.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let s = create(&k, "sigsys", "hello");
    let s = k.wait_status(&s.id, ServerStatus::Error, T);
    let fault = s.fault.expect("a fault").message;
    eprintln!("fault: {fault}");
    assert!(
        fault.contains("killed by its seccomp filter (SIGSYS)")
            && fault.contains("system call 231 (exit_group) in thread kiln-vmm"),
        "{fault}\n--- kilnd log ---\n{}",
        k.log()
    );
}

#[test]
fn a_sigsys_without_an_audit_record_names_the_signal() {
    let k = start_kilnd("");
    register(&k, "hold", "hello", "hold");
    let s = create(&k, "held", "hold");
    let s = k.wait_status(&s.id, ServerStatus::Active, T);
    let pid = s.pid.unwrap();
    // SAFETY: kill(2) on the VMM's pid, which kilnd has not reaped.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSYS) }, 0);
    let s = k.wait_status(&s.id, ServerStatus::Error, T);
    let fault = s.fault.expect("a fault").message;
    assert!(
        fault.contains("killed by SIGSYS") && fault.contains("no audit record"),
        "{fault}"
    );
}
