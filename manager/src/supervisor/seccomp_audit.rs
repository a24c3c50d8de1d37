//! What killed a VMM that died of SIGSYS: the kernel's audit record of the
//! seccomp kill (`type=1326`, AUDIT_SECCOMP), read from the kernel log
//! (`/dev/kmsg`), where the kernel prints audit records when no audit daemon
//! takes them. A record names the process (`pid=`), the thread (`comm=`),
//! the signal (`sig=31` for a kill; a `--seccomp log` record has `sig=0`)
//! and the system call's number (`syscall=`), which [`syscall_name`] turns
//! into its x86_64 name. Where there is no record (an audit daemon took it,
//! the log wrapped, the signal came from `kill`), the fault names the
//! signal alone.
//!
//! The kernel prints the record from its audit thread, so it can show up a
//! little after the process is gone: [`find`] looks again for up to a
//! second. A record is matched by pid only; the newest one wins, so an old
//! record of an earlier process with the same pid can only be picked if the
//! new one is missing.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

/// The audit record type of a seccomp action (AUDIT_SECCOMP).
const AUDIT_SECCOMP: &str = "1326";
/// `arch=` of x86_64 (AUDIT_ARCH_X86_64).
const ARCH_X86_64: &str = "c000003e";

/// A system call that a seccomp filter killed a process for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeccompKill {
    /// The system call's number.
    pub syscall: u32,
    /// Its name, when the record's architecture is x86_64 and the number
    /// is known.
    pub name: Option<&'static str>,
    /// The thread that made the call (kiln-vmm names its threads: `vcpu0`,
    /// `virtio-blk0-io`, `rtc`, ...).
    pub thread: Option<String>,
}

impl std::fmt::Display for SeccompKill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "system call {}", self.syscall)?;
        if let Some(n) = self.name {
            write!(f, " ({n})")?;
        }
        if let Some(t) = &self.thread {
            write!(f, " in thread {t}")?;
        }
        Ok(())
    }
}

/// The seccomp kill of `pid` that `line` records, if it is one. `line` is a
/// kernel log line in any of the usual shapes: a `/dev/kmsg` record
/// (`5,345,371193952,-;audit: type=1326 ...`), a `dmesg` line (`[  371.19]
/// audit: type=1326 ...`) or an audit log line (`type=SECCOMP msg=...`).
pub fn parse_audit_line(line: &str, pid: u32) -> Option<SeccompKill> {
    let mut is_seccomp = false;
    let (mut pid_ok, mut killed) = (false, false);
    let (mut syscall, mut arch, mut thread) = (None, None, None);
    for token in line.split_whitespace() {
        // A kmsg record's prefix ends in ';' right before "audit:".
        let token = token.rsplit(';').next().unwrap_or(token);
        let Some((key, value)) = token.split_once('=') else {
            continue;
        };
        match key {
            "type" => is_seccomp = value == AUDIT_SECCOMP || value == "SECCOMP",
            "pid" => pid_ok = value.parse::<u32>().ok() == Some(pid),
            "sig" => killed = value.parse::<i32>().ok() == Some(libc::SIGSYS),
            "syscall" => syscall = value.parse::<u32>().ok(),
            "arch" => arch = Some(value),
            "comm" => thread = Some(decode_comm(value)),
            _ => {}
        }
    }
    if !(is_seccomp && pid_ok && killed) {
        return None;
    }
    let syscall = syscall?;
    let name = match arch {
        Some(ARCH_X86_64) | None => syscall_name(syscall),
        Some(_) => None,
    };
    Some(SeccompKill {
        syscall,
        name,
        thread,
    })
}

/// `comm=` as audit writes it: quoted, or in hex when the name has spaces,
/// quotes or control characters.
fn decode_comm(v: &str) -> String {
    if let Some(q) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        return q.to_owned();
    }
    let hex = v.len().is_multiple_of(2) && v.bytes().all(|b| b.is_ascii_hexdigit());
    if hex {
        let bytes: Vec<u8> = (0..v.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&v[i..i + 2], 16).ok())
            .collect();
        return String::from_utf8_lossy(&bytes).into_owned();
    }
    v.to_owned()
}

/// The newest seccomp kill of `pid` in the kernel log (`/dev/kmsg`), if
/// there is one and the log can be read (root, or `dmesg_restrict` off).
pub fn find_in_kernel_log(pid: u32) -> Option<SeccompKill> {
    let mut kmsg = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut found = None;
    // One record per read; EAGAIN at the end; EPIPE when the ring buffer
    // overwrote the record this reader was at (read on).
    let mut buf = vec![0u8; 8192];
    for _ in 0..1_000_000 {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let line = String::from_utf8_lossy(&buf[..n]);
                if let Some(k) = parse_audit_line(&line, pid) {
                    found = Some(k);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    found
}

/// [`find_in_kernel_log`], looking again for up to `wait` while the record
/// is not there yet.
pub async fn find(pid: u32, wait: Duration) -> Option<SeccompKill> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let found = tokio::task::spawn_blocking(move || find_in_kernel_log(pid))
            .await
            .ok()
            .flatten();
        if found.is_some() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The name of x86_64 system call `nr` (the kernel's `asm/unistd_64.h`
/// up to Linux 6.10; `-` marks unused numbers).
pub fn syscall_name(nr: u32) -> Option<&'static str> {
    SYSCALL_NAMES
        .split_ascii_whitespace()
        .nth(nr as usize)
        .filter(|n| *n != "-")
}

/// x86_64 system call names in number order, 0 to 462.
const SYSCALL_NAMES: &str = "\
    read write open close stat fstat lstat poll lseek mmap mprotect munmap brk rt_sigaction \
    rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select \
    sched_yield mremap msync mincore madvise shmget shmat shmctl dup dup2 pause nanosleep \
    getitimer alarm setitimer getpid sendfile socket connect accept sendto recvfrom sendmsg \
    recvmsg shutdown bind listen getsockname getpeername socketpair setsockopt getsockopt \
    clone fork vfork execve exit wait4 kill uname semget semop semctl shmdt msgget msgsnd \
    msgrcv msgctl fcntl flock fsync fdatasync truncate ftruncate getdents getcwd chdir \
    fchdir rename mkdir rmdir creat link unlink symlink readlink chmod fchmod chown fchown \
    lchown umask gettimeofday getrlimit getrusage sysinfo times ptrace getuid syslog getgid \
    setuid setgid geteuid getegid setpgid getppid getpgrp setsid setreuid setregid getgroups \
    setgroups setresuid getresuid setresgid getresgid getpgid setfsuid setfsgid getsid \
    capget capset rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend sigaltstack \
    utime mknod uselib personality ustat statfs fstatfs sysfs getpriority setpriority \
    sched_setparam sched_getparam sched_setscheduler sched_getscheduler \
    sched_get_priority_max sched_get_priority_min sched_rr_get_interval mlock munlock \
    mlockall munlockall vhangup modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex \
    setrlimit chroot sync acct settimeofday mount umount2 swapon swapoff reboot sethostname \
    setdomainname iopl ioperm create_module init_module delete_module get_kernel_syms \
    query_module quotactl nfsservctl getpmsg putpmsg afs_syscall tuxcall security gettid \
    readahead setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr \
    flistxattr removexattr lremovexattr fremovexattr tkill time futex sched_setaffinity \
    sched_getaffinity set_thread_area io_setup io_destroy io_getevents io_submit io_cancel \
    get_thread_area lookup_dcookie epoll_create epoll_ctl_old epoll_wait_old \
    remap_file_pages getdents64 set_tid_address restart_syscall semtimedop fadvise64 \
    timer_create timer_settime timer_gettime timer_getoverrun timer_delete clock_settime \
    clock_gettime clock_getres clock_nanosleep exit_group epoll_wait epoll_ctl tgkill utimes \
    vserver mbind set_mempolicy get_mempolicy mq_open mq_unlink mq_timedsend mq_timedreceive \
    mq_notify mq_getsetattr kexec_load waitid add_key request_key keyctl ioprio_set \
    ioprio_get inotify_init inotify_add_watch inotify_rm_watch migrate_pages openat mkdirat \
    mknodat fchownat futimesat newfstatat unlinkat renameat linkat symlinkat readlinkat \
    fchmodat faccessat pselect6 ppoll unshare set_robust_list get_robust_list splice tee \
    sync_file_range vmsplice move_pages utimensat epoll_pwait signalfd timerfd_create \
    eventfd fallocate timerfd_settime timerfd_gettime accept4 signalfd4 eventfd2 \
    epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev rt_tgsigqueueinfo perf_event_open \
    recvmmsg fanotify_init fanotify_mark prlimit64 name_to_handle_at open_by_handle_at \
    clock_adjtime syncfs sendmmsg setns getcpu process_vm_readv process_vm_writev kcmp \
    finit_module sched_setattr sched_getattr renameat2 seccomp getrandom memfd_create \
    kexec_file_load bpf execveat userfaultfd membarrier mlock2 copy_file_range preadv2 \
    pwritev2 pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq - - - - - - - - - - \
    - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - \
    - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - pidfd_send_signal \
    io_uring_setup io_uring_enter io_uring_register open_tree move_mount fsopen fsconfig \
    fsmount fspick pidfd_open clone3 close_range openat2 pidfd_getfd faccessat2 \
    process_madvise epoll_pwait2 mount_setattr quotactl_fd landlock_create_ruleset \
    landlock_add_rule landlock_restrict_self memfd_secret process_mrelease futex_waitv \
    set_mempolicy_home_node cachestat fchmodat2 map_shadow_stack futex_wake futex_wait \
    futex_requeue statmount listmount lsm_get_self_attr lsm_set_self_attr lsm_list_modules \
    mseal";

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;
    use std::time::Instant;

    use super::*;

    /// A record the kernel wrote here when the virtio-blk worker of an
    /// unfixed kiln-vmm hit glibc's heap shrink (issue #11), as
    /// `/dev/kmsg` gives it.
    const KMSG: &str = "5,345,371193952,-;audit: type=1326 audit(1796651939.835:3): \
        auid=4294967295 uid=0 gid=0 ses=4294967295 pid=21052 comm=\"virtio-blk0-io\" \
        exe=\"/tmp/kiln-vmm\" sig=31 arch=c000003e syscall=257 compat=0 ip=0x7f20007b1001 \
        code=0x80000000\n";

    #[test]
    fn a_kmsg_record_names_the_syscall_and_thread() {
        let k = parse_audit_line(KMSG, 21052).unwrap();
        assert_eq!(k.syscall, 257);
        assert_eq!(k.name, Some("openat"));
        assert_eq!(k.thread.as_deref(), Some("virtio-blk0-io"));
        assert_eq!(
            k.to_string(),
            "system call 257 (openat) in thread virtio-blk0-io"
        );
    }

    #[test]
    fn other_pids_log_mode_and_other_records_do_not_match() {
        assert_eq!(parse_audit_line(KMSG, 2105), None);
        assert_eq!(parse_audit_line(KMSG, 210520), None);
        // --seccomp log: the call was allowed, nothing was killed.
        let logged = KMSG
            .replace("sig=31", "sig=0")
            .replace("0x80000000", "0x7ffc0000");
        assert_eq!(parse_audit_line(&logged, 21052), None);
        let other = KMSG.replace("type=1326", "type=1400");
        assert_eq!(parse_audit_line(&other, 21052), None);
        assert_eq!(parse_audit_line("", 1), None);
        assert_eq!(parse_audit_line("pid=1 sig=31 syscall=2", 1), None);
    }

    #[test]
    fn dmesg_and_audit_log_lines_and_hex_thread_names() {
        let dmesg = "[  371.193952] audit: type=1326 audit(1796651939.835:3): pid=7 \
            comm=\"vcpu0\" sig=31 arch=c000003e syscall=41 code=0x80000000";
        let k = parse_audit_line(dmesg, 7).unwrap();
        assert_eq!((k.syscall, k.name), (41, Some("socket")));
        assert_eq!(k.thread.as_deref(), Some("vcpu0"));
        // auditd's log; a name with a space is written in hex.
        let audit = "type=SECCOMP msg=audit(1796651939.835:3): pid=9 comm=6D7920746872 \
            sig=31 arch=c000003e syscall=59 compat=0";
        let k = parse_audit_line(audit, 9).unwrap();
        assert_eq!(k.name, Some("execve"));
        assert_eq!(k.thread.as_deref(), Some("my thr"));
        // Another architecture: the number, no x86_64 name.
        let arm = dmesg.replace("c000003e", "c00000b7");
        let k = parse_audit_line(&arm, 7).unwrap();
        assert_eq!((k.syscall, k.name), (41, None));
        assert_eq!(k.to_string(), "system call 41 in thread vcpu0");
    }

    #[test]
    fn syscall_names_follow_the_kernel_numbers() {
        assert_eq!(SYSCALL_NAMES.split_ascii_whitespace().count(), 463);
        for (nr, name) in [
            (libc::SYS_read, "read"),
            (libc::SYS_openat, "openat"),
            (libc::SYS_futex, "futex"),
            (libc::SYS_ioctl, "ioctl"),
            (libc::SYS_socket, "socket"),
            (libc::SYS_pkey_free, "pkey_free"),
            (libc::SYS_statx, "statx"),
            (libc::SYS_rseq, "rseq"),
            (libc::SYS_pidfd_send_signal, "pidfd_send_signal"),
            (libc::SYS_io_uring_setup, "io_uring_setup"),
            (libc::SYS_clone3, "clone3"),
            (libc::SYS_openat2, "openat2"),
            (libc::SYS_futex_waitv, "futex_waitv"),
            (libc::SYS_set_mempolicy_home_node, "set_mempolicy_home_node"),
        ] {
            assert_eq!(syscall_name(nr as u32), Some(name), "{nr}");
        }
        assert_eq!(syscall_name(462), Some("mseal"));
        assert_eq!(syscall_name(335), None);
        assert_eq!(syscall_name(423), None);
        assert_eq!(syscall_name(463), None);
    }

    #[test]
    fn the_fault_message_says_what_was_killed_and_whose_bug_it_is() {
        use crate::supervisor::{seccomp_fault, sys::ExitStatus};
        let k = parse_audit_line(KMSG, 21052).unwrap();
        let m = seccomp_fault(21052, ExitStatus::Signal(libc::SIGSYS), Some(&k));
        assert_eq!(
            m,
            "kiln-vmm (pid 21052) was killed by its seccomp filter (SIGSYS): system call 257 \
             (openat) in thread virtio-blk0-io is outside that thread's allowlist; a kiln-vmm \
             bug, see vmm.log"
        );
        let m = seccomp_fault(5, ExitStatus::Signal(libc::SIGSYS), None);
        assert!(
            m.contains("killed by SIGSYS, the signal of its seccomp filter"),
            "{m}"
        );
        assert!(m.contains("ausearch -m SECCOMP -p 5"), "{m}");
        let m = seccomp_fault(5, ExitStatus::Unknown, Some(&k));
        assert!(m.contains("re-adopted"), "{m}");
        assert!(m.contains("(openat)"), "{m}");
    }

    const CHILD_ENV: &str = "KILND_SIGSYS_CHILD";

    /// The child side of the test below: a thread named `sigsys-probe`
    /// installs a filter that kills the process on getppid, and calls it.
    #[test]
    fn child_entry() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let t = std::thread::Builder::new()
            .name("sigsys-probe".into())
            .spawn(|| {
                let op = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
                    code: code as u16,
                    jt,
                    jf,
                    k,
                };
                let prog = [
                    // Load seccomp_data.nr (offset 0).
                    op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
                    op(
                        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                        libc::SYS_getppid as u32,
                        0,
                        1,
                    ),
                    op(
                        libc::BPF_RET | libc::BPF_K,
                        libc::SECCOMP_RET_KILL_PROCESS,
                        0,
                        0,
                    ),
                    op(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW, 0, 0),
                ];
                let fprog = libc::sock_fprog {
                    len: prog.len() as u16,
                    filter: prog.as_ptr() as *mut libc::sock_filter,
                };
                // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
                let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                assert_eq!(r, 0);
                // SAFETY: `fprog` points at `prog`, which outlives the call;
                // the kernel copies the program.
                let r = unsafe {
                    libc::prctl(
                        libc::PR_SET_SECCOMP,
                        libc::SECCOMP_MODE_FILTER,
                        &fprog as *const libc::sock_fprog,
                    )
                };
                assert_eq!(r, 0);
                // SAFETY: getppid has no arguments; the filter kills here.
                unsafe { libc::getppid() };
            })
            .unwrap();
        let _ = t.join();
        println!("NOT-KILLED");
    }

    /// The kernel prints audit records through a rate limit (10 per 5 s,
    /// then "kauditd_printk_skb: N callbacks suppressed"): other tests'
    /// seccomp kills and log-mode records just before this one can use it
    /// up, and the record looked for is then never printed. Five quiet
    /// seconds open a new window.
    fn wait_out_the_audit_rate_limit() {
        std::thread::sleep(Duration::from_secs(6));
    }

    /// A real seccomp kill, found in this machine's kernel log: the number,
    /// the name and the thread.
    #[tokio::test]
    async fn a_real_seccomp_kill_is_found_in_the_kernel_log() {
        wait_out_the_audit_rate_limit();
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args(["--exact", "supervisor::seccomp_audit::tests::child_entry"])
            .args(["--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = out.id();
        let out = out.wait_with_output().unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{out:?}");
        let t = Instant::now();
        let k = find(pid, Duration::from_secs(5)).await.unwrap_or_else(|| {
            panic!(
                "no seccomp record for pid {pid} in /dev/kmsg (root can read it; \
                 kernel.seccomp.actions_logged must hold kill_process)"
            )
        });
        assert_eq!(k.syscall, libc::SYS_getppid as u32);
        assert_eq!(k.name, Some("getppid"));
        assert_eq!(k.thread.as_deref(), Some("sigsys-probe"));
        eprintln!("found after {:?}", t.elapsed());
    }
}
