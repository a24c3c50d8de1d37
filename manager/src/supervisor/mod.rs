//! The supervisor: one `kiln-vmm` process per running server.
//!
//! How a server runs:
//! 1. [`Supervisor::spawn`] ([`spawn`]) writes `servers/ID/vm.json` (a
//!    [`kiln_api::vm::VmConfig`]: the kernel image, or for a disk image the
//!    firmware with the root disk first (and UEFI's `nvram.fd`, see
//!    [`crate::firmware`]), the config drive second if it has one, built
//!    anew ([`crate::config_drive`]), the flavor's vCPUs and RAM, `serial.log` and
//!    `api.sock` in the server's directory), starts
//!    `kiln-vmm --config vm.json` in a session of its own (so it outlives
//!    kilnd), records its pid, and opens a pidfd on it.
//! 2. A watcher task ([`exit`]) waits on the pidfd (tokio `AsyncFd`). When the VMM
//!    exits it reaps it and, unless an action asked for the exit (its
//!    [`Intent`]), maps the exit: code 0 (guest power-off) -> SHUTOFF,
//!    code 10 (guest reboot) -> a new VMM, anything else -> ERROR with a
//!    fault message. A VMM killed by its seccomp filter (SIGSYS) is a
//!    kiln-vmm bug: the fault names the system call and thread from the
//!    kernel's audit record ([`seccomp_audit`]) where there is one.
//! 3. Actions ([`actions`]) run one at a time per server (a per-server
//!    lock) and talk to the VMM over its control socket
//!    ([`kiln_api::control`]).
//! 4. On start, [`adopt`] re-attaches to VMMs still running from a
//!    previous kilnd and reconciles half-done work.
//! 5. Ending a VMM ([`Supervisor::kill`], in [`control`] with the other
//!    control-socket calls: stop after its timeout, delete,
//!    hard reboot) is orderly first: the control API's kill, or SIGTERM if
//!    the socket does not answer; kiln-vmm then writes its disks back and
//!    exits. Only a VMM still there [`VMM_END_GRACE`] later is SIGKILLed
//!    (which can lose what the guest had not flushed).

pub mod actions;
pub mod adopt;
mod control;
mod error;
mod exit;
mod guest;
pub mod nic_link;
pub mod seccomp_audit;
mod spawn;
pub mod sys;
pub mod tpm;
mod vm_config;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_api::compute::{Server, TaskState};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::config::Config;
use crate::store::Store;
pub use error::{Busy, ConfigError, ControlError, NicNetworkError, NotReady, SpawnError};
pub use exit::{exit_fault, seccomp_fault};
use sys::ExitStatus;

/// Where each VMM records how it ended (see `VmConfig::exit_file`).
const EXIT_FILE: &str = "exit.json";

/// How long an orderly end of a VMM may take before kilnd SIGKILLs it:
/// more than kiln-vmm's own bound on writing its disks back (8 s), as
/// libvirt gives QEMU 10 s between SIGTERM and SIGKILL.
pub const VMM_END_GRACE: Duration = Duration::from_secs(10);

/// Why kilnd itself is ending a VMM, so its exit is not taken for a guest
/// event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    None,
    Stop,
    Restart,
    Delete,
}

/// One running VMM.
pub struct Vm {
    pub pid: u32,
    pidfd: Arc<AsyncFd<OwnedFd>>,
    /// Intent and whether the exit was handled; status changes made on its
    /// behalf happen under this lock, so "became ACTIVE" and "exited"
    /// cannot interleave.
    flags: Mutex<Flags>,
    exited: watch::Receiver<Option<ExitStatus>>,
}

struct Flags {
    intent: Intent,
    exited: bool,
}

impl Vm {
    pub fn set_intent(&self, i: Intent) {
        self.flags().intent = i;
    }

    fn flags(&self) -> std::sync::MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the process is gone and its exit handled, up to `t`.
    pub async fn wait_exit(&self, t: Duration) -> Option<ExitStatus> {
        let mut rx = self.exited.clone();
        let r = tokio::time::timeout(t, rx.wait_for(|s| s.is_some())).await;
        match r {
            Ok(Ok(s)) => *s,
            _ => None,
        }
    }

    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    pub fn sigkill(&self) {
        let _ = sys::pidfd_kill(self.pidfd.get_ref(), libc::SIGKILL);
    }

    /// An orderly end: kiln-vmm writes its disks back, then exits (13).
    pub fn sigterm(&self) {
        let _ = sys::pidfd_kill(self.pidfd.get_ref(), libc::SIGTERM);
    }
}

pub struct Supervisor {
    pub store: Arc<Store>,
    pub config: Arc<Config>,
    servers_dir: PathBuf,
    archive_dir: PathBuf,
    /// Where root disks live (qcow2 overlays or LVM thin snapshots).
    pub disks: crate::disks::DiskBackend,
    vms: Mutex<HashMap<String, Arc<Vm>>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One guest agent session at a time per server.
    pub agents: crate::agent::Agents,
}

/// A server's last picture, kept in its directory: by kiln-vmm when it
/// ends on a guest fault (`DisplayConfig::last_screenshot`), by kilnd
/// before it ends a VMM itself (its TTL, the ready or stop time-out).
pub const LAST_SCREENSHOT: &str = "last-screenshot.png";

impl Supervisor {
    pub fn new(
        store: Arc<Store>,
        config: Arc<Config>,
        disks: crate::disks::DiskBackend,
    ) -> std::io::Result<Arc<Supervisor>> {
        let servers_dir = config.state_dir.join("servers");
        let archive_dir = config.state_dir.join("console-archive");
        std::fs::create_dir_all(&servers_dir)?;
        std::fs::create_dir_all(&archive_dir)?;
        Ok(Arc::new(Supervisor {
            store,
            config,
            servers_dir,
            archive_dir,
            disks,
            vms: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            agents: Default::default(),
        }))
    }

    pub fn server_dir(&self, id: &str) -> PathBuf {
        self.servers_dir.join(id)
    }

    pub fn archived_console(&self, id: &str) -> PathBuf {
        self.archive_dir.join(format!("{id}.log"))
    }

    /// The VMM's interactive console socket.
    pub fn console_socket(&self, id: &str) -> PathBuf {
        self.server_dir(id).join("console.sock")
    }

    /// The VMM's VNC socket (servers with a display).
    pub fn vnc_socket(&self, id: &str) -> PathBuf {
        self.server_dir(id).join(vm_config::VNC_SOCKET)
    }

    fn api_socket(&self, id: &str) -> PathBuf {
        self.server_dir(id).join("api.sock")
    }

    /// The per-server lock that serializes actions.
    pub fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// Takes `server`'s action lock without waiting, or says why it is
    /// busy (what is running on it).
    pub fn try_lock(&self, server: &Server) -> Result<tokio::sync::OwnedMutexGuard<()>, Busy> {
        self.lock_of(&server.id).try_lock_owned().map_err(|_| Busy {
            server: server.name.clone(),
            what: server
                .task_state
                .map_or("an action is running", TaskState::as_str),
        })
    }

    pub fn forget_lock(&self, id: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    pub fn vm(&self, id: &str) -> Option<Arc<Vm>> {
        self.vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn running_count(&self) -> usize {
        self.vms.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Removes a deleted server's files, keeping its console log (and its
    /// last screenshot) in the archive.
    pub fn remove_files(&self, id: &str) {
        self.stop_tpm(id);
        let dir = self.server_dir(id);
        let _ = std::fs::rename(dir.join("serial.log"), self.archived_console(id));
        // The picture kept when its TTL ended (`crate::servers::screenshot`).
        let _ = std::fs::rename(
            dir.join(LAST_SCREENSHOT),
            self.archived_console(id).with_extension("png"),
        );
        if let Err(e) = self.disks.remove_root_disk(id, &dir) {
            tracing::error!(
                server = id,
                error = crate::util::error_chain(&e),
                "cannot remove the root disk"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Deletes archived console logs and DELETED rows older than the
    /// retention time.
    pub fn expire(&self) {
        let keep = Duration::from_secs(self.config.vmm.console_retention_s);
        if let Ok(rd) = std::fs::read_dir(&self.archive_dir) {
            for e in rd.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > keep);
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let before = crate::util::now_secs().saturating_sub(keep.as_secs());
        let _ = self.store.purge_deleted(before);
    }

    pub fn servers_dir(&self) -> &Path {
        &self.servers_dir
    }

    /// Runs `f` on server `id` in the store on the blocking pool
    /// ([`Store::call`]), so async supervisor code never waits on SQLite
    /// on the executor.
    pub(crate) async fn store_call<T, F>(&self, id: &str, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&Store, &str) -> T + Send + 'static,
    {
        let id = id.to_owned();
        self.store.call(move |s| f(s, &id)).await
    }
}
