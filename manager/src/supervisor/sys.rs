//! The few Linux process calls the supervisor needs: pidfds, reaping, and
//! starting a VMM in a session of its own.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// How a VMM process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// Not our child (re-adopted after a kilnd restart): the status went
    /// to init.
    Unknown,
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(pidfd, sig)`: signals exactly that process even if
/// its pid was reused.
pub fn pidfd_kill(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps `pid` once its pidfd said it exited.
pub fn reap(pid: u32) -> ExitStatus {
    let mut status = 0;
    // SAFETY: waitpid with a valid out pointer; WNOHANG never blocks.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    if r != pid as libc::pid_t {
        return ExitStatus::Unknown;
    }
    if libc::WIFEXITED(status) {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Unknown
    }
}

/// Makes the command start in a new session (and process group), so that
/// it outlives kilnd and gets none of kilnd's terminal signals; with umask
/// 077, so every file and socket it makes (its VNC socket, whose mode is
/// the access control, its control and console sockets) is its owner's
/// (root's) only, from the moment it is bound.
pub fn new_session(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls
    // setsid and umask, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::umask(0o077);
            Ok(())
        });
    }
}

/// Makes the command's process inherit `fds` (clearing close-on-exec in
/// the child only, so no other process started meanwhile gets them).
pub fn inherit_fds(cmd: &mut Command, fds: Vec<i32>) {
    if fds.is_empty() {
        return;
    }
    // SAFETY: the closure runs between fork and exec and only calls fcntl
    // (async-signal-safe) on fds open in the parent, hence in the child.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                crate::net::tap::inherit(fd)?;
            }
            Ok(())
        });
    }
}

/// The command line of a process, NUL-separated arguments.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Every process whose command line has `--config PATH` with PATH under
/// `dir`: (pid, PATH).
pub fn processes_with_config_under(dir: &std::path::Path) -> Vec<(u32, String)> {
    let prefix = format!("{}/", dir.display());
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(args) = cmdline(pid) else { continue };
        if let Some(i) = args.iter().position(|a| a == "--config") {
            if let Some(p) = args.get(i + 1) {
                if p.starts_with(&prefix) {
                    out.push((pid, p.clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfd_watch_kill_and_reap() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        new_session(&mut cmd);
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        // SAFETY: getsid on a pid we own.
        let sid = unsafe { libc::getsid(pid as i32) };
        assert_eq!(sid, pid as i32, "own session");
        let fd = pidfd_open(pid).unwrap();
        pidfd_kill(&fd, libc::SIGKILL).unwrap();
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1);
        assert_eq!(reap(pid), ExitStatus::Signal(libc::SIGKILL));
        drop(child);
        // Reaped by `reap`, the way the supervisor reaps VMMs.
        #[allow(clippy::zombie_processes)]
        let ok = Command::new("true").spawn().unwrap();
        let pid = ok.id();
        let fd = pidfd_open(pid).unwrap();
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1);
        assert_eq!(reap(pid), ExitStatus::Code(0));
        assert_eq!(reap(1), ExitStatus::Unknown);
    }
}
