//! Each TPM server's swtpm: the software TPM 2.0 behind kiln-vmm's CRB
//! device, run as libvirt runs it for QEMU.
//!
//! - State: `tpm/` in the server's directory, made once before its first
//!   start by `swtpm_setup --tpm2 --create-ek-cert --create-platform-cert
//!   --lock-nvram` (an endorsement key with its certificate, which Windows
//!   Server 2025 wants) into `tpm.partial/`, renamed when complete, so it
//!   is there whole or not at all. Kept across stop, start and guest
//!   reboots; deleted with the server's directory.
//! - Process: before every VMM start a new `swtpm socket --tpm2 --daemon`
//!   on that state with only its control socket (`tpm/ctrl.sock`, which
//!   `vm.json` names; kiln-vmm hands it the data channel), its log
//!   (`tpm/swtpm.log`) and pid file; any swtpm left for the server is
//!   ended first. Each VMM is a cold boot: no volatile state is ever
//!   stored (kiln-vmm sends no `CMD_STORE_VOLATILE`), so there is none to
//!   drop. No `--terminate`: an API reset re-executes kiln-vmm,
//!   which drops the data channel, and swtpm must stay. Its pid is
//!   recorded with the server (`tpm_pid`).
//! - End: kiln-vmm's orderly end (exit 0 or 13) shuts swtpm down itself
//!   (`TPM2_Shutdown(STATE)`, which keeps PCRs 0-15 for a resume by
//!   tools on the stopped state, then CMD_SHUTDOWN); whatever ended the
//!   VMM, kilnd then ends a swtpm still there (SIGTERM, then SIGKILL), so
//!   none outlives its VMM. Re-adoption ([`super::adopt`]) keeps the swtpm
//!   of a VMM it re-adopts and ends every other one found under
//!   `servers/` ([`processes_under`]).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::{sys, Supervisor};
use crate::config::TpmConfig;

/// The TPM's directory in a server's directory.
pub const DIR: &str = "tpm";
/// swtpm's control socket in [`DIR`].
const CTRL: &str = "ctrl.sock";
const PID_FILE: &str = "swtpm.pid";
/// A file swtpm_setup leaves in a complete TPM 2 state.
const PERMALL: &str = "tpm2-00.permall";
/// How long a new swtpm has to make its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum TpmError {
    #[error(
        "{path} (kilnd config tpm.{key}) is missing or not an executable file: install Debian's \
         {package} package, or set tpm.{key}; a server with tpm: true needs it"
    )]
    Missing {
        path: String,
        key: &'static str,
        package: &'static str,
    },
    #[error("cannot run {what} for the TPM state in {dir}")]
    Run {
        what: &'static str,
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("swtpm_setup failed for {dir}: {output}")]
    Setup { dir: String, output: String },
    #[error("swtpm on {dir} did not start within {secs} s (see swtpm.log there): {why}")]
    Start { dir: String, secs: u64, why: String },
}

/// The state directory in server directory `server_dir`.
pub fn state_dir(server_dir: &Path) -> PathBuf {
    server_dir.join(DIR)
}

/// swtpm's control socket for the server in `server_dir`.
pub fn ctrl_socket(server_dir: &Path) -> PathBuf {
    state_dir(server_dir).join(CTRL)
}

/// Checks that swtpm and swtpm_setup are there (at create).
pub fn check_host(config: &TpmConfig) -> Result<(), TpmError> {
    use std::os::unix::fs::PermissionsExt;
    for (key, path, package) in [
        ("swtpm", &config.swtpm, "swtpm"),
        ("swtpm_setup", &config.swtpm_setup, "swtpm-tools"),
    ] {
        let ok = std::fs::metadata(path)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !ok {
            return Err(TpmError::Missing {
                path: path.display().to_string(),
                key,
                package,
            });
        }
    }
    Ok(())
}

/// Makes the server's TPM state unless it is there. Blocking (1–2 s).
pub fn ensure_state(config: &TpmConfig, server_dir: &Path) -> Result<(), TpmError> {
    let dir = state_dir(server_dir);
    if dir.join(PERMALL).exists() {
        return Ok(());
    }
    check_host(config)?;
    let partial = server_dir.join("tpm.partial");
    let fail = |what, source| TpmError::Run {
        what,
        dir: dir.display().to_string(),
        source,
    };
    // Left by a crash in the middle of an earlier setup.
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| fail("mkdir", e))?;
    let t0 = Instant::now();
    let out = Command::new(&config.swtpm_setup)
        .arg("--tpm")
        .arg(format!("{} socket", config.swtpm.display()))
        .args(["--tpm2", "--tpmstate"])
        .arg(&partial)
        .args(["--create-ek-cert", "--create-platform-cert", "--lock-nvram"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail("swtpm_setup", e))?;
    if !out.status.success() || !partial.join(PERMALL).exists() {
        let _ = std::fs::remove_dir_all(&partial);
        let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stdout));
        return Err(TpmError::Setup {
            dir: dir.display().to_string(),
            output: output.trim().chars().take(1024).collect(),
        });
    }
    // A state dir without permall (a crash before the first rename) goes.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir).map_err(|e| fail("rename", e))?;
    let ms = t0.elapsed().as_millis() as u64;
    tracing::info!(dir = %dir.display(), ms, "TPM state made by swtpm_setup");
    Ok(())
}

/// Starts the server's swtpm (ending any left from before) and waits until
/// its control socket is there; answers its pid. Blocking.
pub fn start(config: &TpmConfig, server_dir: &Path) -> Result<u32, TpmError> {
    let dir = state_dir(server_dir);
    for pid in processes_of(&dir) {
        stop(pid, &dir);
    }
    let ctrl = dir.join(CTRL);
    let pid_file = dir.join(PID_FILE);
    let _ = std::fs::remove_file(&ctrl);
    let _ = std::fs::remove_file(&pid_file);
    // A new VMM is a cold boot, and no volatile state is there to resume:
    // kiln-vmm never stores one (`CMD_STORE_VOLATILE`; see vmm/src/tpm.rs),
    // and swtpm stores none by itself, at its end or on a signal.
    let mut cmd = Command::new(&config.swtpm);
    cmd.args(["socket", "--tpm2", "--daemon", "--ctrl"])
        .arg(format!("type=unixio,path={},mode=0600", ctrl.display()))
        .arg("--tpmstate")
        .arg(format!("dir={}", dir.display()))
        .arg("--log")
        .arg(format!("file={}", dir.join("swtpm.log").display()))
        .arg("--pid")
        .arg(format!("file={}", pid_file.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own session, so it outlives kilnd as the VMM does.
    sys::new_session(&mut cmd);
    let fail = |why: String| TpmError::Start {
        dir: dir.display().to_string(),
        secs: START_TIMEOUT.as_secs(),
        why,
    };
    let t0 = Instant::now();
    // With --daemon the first process exits once the daemon is made (no
    // pipe to it: the daemon would hold it open); errors go to its log.
    let status = cmd
        .status()
        .map_err(|e| fail(format!("cannot run {}: {e}", config.swtpm.display())))?;
    if !status.success() {
        let log = crate::util::read_tail(&dir.join("swtpm.log"), Some(5));
        return Err(fail(format!("{status}: {}", log.trim())));
    }
    loop {
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let (Some(pid), true) = (pid, ctrl.exists()) {
            let ms = t0.elapsed().as_millis() as u64;
            tracing::info!(dir = %dir.display(), pid, ms, "swtpm started");
            return Ok(pid);
        }
        if t0.elapsed() > START_TIMEOUT {
            for pid in processes_of(&dir) {
                stop(pid, &dir);
            }
            return Err(fail("no control socket".into()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ends swtpm `pid` if it is still the swtpm on `dir` (SIGTERM, then
/// SIGKILL after a second) and waits until it is gone. Blocking.
pub fn stop(pid: u32, dir: &Path) {
    let Ok(fd) = sys::pidfd_open(pid) else {
        return; // gone already
    };
    // The pidfd pins the process: check it is ours before signalling.
    if !is_swtpm_on(pid, dir) {
        return;
    }
    for (sig, wait) in [(libc::SIGTERM, 1000), (libc::SIGKILL, 5000)] {
        let _ = sys::pidfd_kill(&fd, sig);
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd that lives across the call.
        if unsafe { libc::poll(&mut p, 1, wait) } > 0 {
            return;
        }
    }
    tracing::warn!(pid, "swtpm did not end after SIGKILL");
}

/// Whether `pid` is a swtpm whose state is `dir`.
fn is_swtpm_on(pid: u32, dir: &Path) -> bool {
    let want = format!("dir={}", dir.display());
    sys::cmdline(pid).is_some_and(|a| {
        a.iter().any(|x| x == "socket")
            && a.windows(2)
                .any(|w| w[0] == "--tpmstate" && w[1].split(',').next() == Some(want.as_str()))
    })
}

/// The swtpm processes on state directory `dir`.
fn processes_of(dir: &Path) -> Vec<u32> {
    let Some(servers) = dir.parent().and_then(Path::parent) else {
        return Vec::new();
    };
    let id = dir.parent().and_then(Path::file_name);
    processes_under(servers)
        .into_iter()
        .filter(|(_, i)| Some(std::ffi::OsStr::new(i)) == id)
        .map(|(p, _)| p)
        .collect()
}

/// Every swtpm whose state lies in a server directory under `servers`:
/// (pid, server id).
pub fn processes_under(servers: &Path) -> Vec<(u32, String)> {
    let prefix = format!("dir={}/", servers.display());
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(args) = sys::cmdline(pid) else {
            continue;
        };
        let state = args
            .windows(2)
            .find(|w| w[0] == "--tpmstate")
            .and_then(|w| w[1].split(',').next()?.strip_prefix(&prefix));
        if let Some(rest) = state {
            if let Some(id) = rest.strip_suffix(&format!("/{DIR}")) {
                if !id.contains('/') {
                    out.push((pid, id.to_owned()));
                }
            }
        }
    }
    out
}

impl Supervisor {
    /// Ends server `id`'s swtpm if one runs (recorded or found), and clears
    /// its record. Blocking.
    pub fn stop_tpm(&self, id: &str) {
        let dir = state_dir(&self.server_dir(id));
        let recorded = self.store.tpm_pid(id).ok().flatten();
        let found = processes_under(self.servers_dir())
            .into_iter()
            .filter(|(_, i)| i == id)
            .map(|(p, _)| p);
        for pid in recorded.into_iter().chain(found) {
            stop(pid, &dir);
        }
        if recorded.is_some() {
            let _ = self.store.set_tpm_pid(id, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(swtpm: &str, setup: &str) -> TpmConfig {
        TpmConfig {
            swtpm: swtpm.into(),
            swtpm_setup: setup.into(),
        }
    }

    #[test]
    fn missing_programs_are_named_with_their_config_key() {
        let e = check_host(&config("/nonexistent/swtpm", "/usr/bin/swtpm_setup"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tpm.swtpm)") && e.contains("swtpm package"),
            "{e}"
        );
        // A file that is not executable does not count.
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("swtpm_setup");
        std::fs::write(&plain, b"#!/bin/sh\n").unwrap();
        let e = check_host(&config("/usr/bin/swtpm", plain.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tpm.swtpm_setup") && e.contains("swtpm-tools"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_setup_leaves_nothing_and_a_good_one_is_kept() {
        let servers = tempfile::tempdir().unwrap();
        let dir = servers.path().join("s1");
        std::fs::create_dir(&dir).unwrap();
        // swtpm_setup that fails: its message, no state, no partial.
        let e = ensure_state(&config("/usr/bin/swtpm", "/bin/false"), &dir).unwrap_err();
        assert!(matches!(e, TpmError::Setup { .. }), "{e}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        // The real one, then a swtpm on it, found under `servers`, ended.
        let c = config("/usr/bin/swtpm", "/usr/bin/swtpm_setup");
        ensure_state(&c, &dir).unwrap();
        let permall = std::fs::read(state_dir(&dir).join(PERMALL)).unwrap();
        ensure_state(&c, &dir).unwrap();
        assert_eq!(
            std::fs::read(state_dir(&dir).join(PERMALL)).unwrap(),
            permall
        );
        let pid = start(&c, &dir).unwrap();
        assert!(ctrl_socket(&dir).exists());
        assert_eq!(processes_under(servers.path()), vec![(pid, "s1".into())]);
        // Another directory's swtpm is not this one.
        assert!(!is_swtpm_on(pid, &state_dir(&servers.path().join("s2"))));
        // A second start ends the first swtpm.
        let pid2 = start(&c, &dir).unwrap();
        assert_ne!(pid, pid2);
        assert_eq!(processes_under(servers.path()), vec![(pid2, "s1".into())]);
        stop(pid2, &state_dir(&dir));
        assert!(processes_under(servers.path()).is_empty());
    }
}
