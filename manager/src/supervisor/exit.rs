//! A VMM's end: the watcher on its pidfd, how it ended (exit code, the
//! exit record, the seccomp audit record) mapped to the server's status,
//! the guest's reboot, and the fault messages.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_api::compute::{ServerStatus, TaskState};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::sys::{self, ExitStatus};
use super::{seccomp_audit, Flags, Intent, Supervisor, Vm, EXIT_FILE};

impl Supervisor {
    /// Registers a VMM and starts its watcher.
    pub(super) fn watch(
        self: &Arc<Self>,
        id: &str,
        pid: u32,
        pidfd: OwnedFd,
        child: bool,
    ) -> std::io::Result<Arc<Vm>> {
        let (tx, rx) = watch::channel(None);
        let vm = Arc::new(Vm {
            pid,
            // SAFETY: `pidfd` is an open fd that the AsyncFd owns from now
            // on, so it stays the same open file for the AsyncFd's life.
            pidfd: Arc::new(
                unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
                    .map_err(std::io::Error::from)?,
            ),
            flags: Mutex::new(Flags {
                intent: Intent::None,
                exited: false,
            }),
            exited: rx,
        });
        self.vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), vm.clone());
        let this = self.clone();
        let id = id.to_owned();
        let vm2 = vm.clone();
        tokio::spawn(async move {
            let _ = vm2.pidfd.readable().await;
            let status = if child {
                sys::reap(pid)
            } else {
                this.recorded_exit(&id)
            };
            let intent = vm2.flags().intent;
            let seccomp = match (intent, status) {
                (Intent::None, ExitStatus::Signal(libc::SIGSYS)) => {
                    seccomp_audit::find(pid, Duration::from_secs(1)).await
                }
                // Re-adopted: how it ended is unknown, but the kernel log
                // may say.
                (Intent::None, ExitStatus::Unknown) => {
                    seccomp_audit::find(pid, Duration::ZERO).await
                }
                _ => None,
            };
            // It writes the store: on the blocking pool.
            let handled = tokio::task::spawn_blocking(move || {
                this.on_exit(&id, &vm2, status, seccomp.as_ref())
            })
            .await;
            if let Err(e) = handled {
                tracing::error!(pid, error = %e, "kiln-vmm exit handling failed");
            }
            let _ = tx.send(Some(status));
        });
        Ok(vm)
    }

    /// The exit status a VMM that is not our child wrote before exiting
    /// (`exit.json`), or `Unknown` if it wrote none (killed by a signal).
    fn recorded_exit(&self, id: &str) -> ExitStatus {
        std::fs::read(self.server_dir(id).join(EXIT_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<kiln_api::control::ExitRecord>(&b).ok())
            .map_or(ExitStatus::Unknown, |r| ExitStatus::Code(r.code))
    }

    /// What the VMM recorded about how the guest ended, when that says
    /// more than the exit code: where an instruction could not be emulated
    /// (firmware such as OVMF on a nested KVM), which vCPU triple-faulted,
    /// the host error; for a VMM that failed before its VM ran (no record),
    /// the error it printed last in `vmm.log`.
    fn exit_detail(&self, id: &str, status: ExitStatus) -> Option<String> {
        use kiln_api::control::{ExitReason, ExitRecord};
        let dir = self.server_dir(id);
        let record = std::fs::read(dir.join(EXIT_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<ExitRecord>(&b).ok());
        let Some(record) = record else {
            if status != ExitStatus::Code(1) {
                return None;
            }
            let log = crate::util::read_tail(&dir.join("vmm.log"), Some(10));
            return log
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("kiln-vmm: "))
                .map(|l| l.chars().take(1024).collect());
        };
        match record.reason {
            ExitReason::EmulationFailure { vcpu, registers } => {
                Some(format!("vCPU {vcpu} stopped at {registers}"))
            }
            ExitReason::TripleFault { vcpu } => Some(format!("vCPU {vcpu} triple-faulted")),
            ExitReason::HostError { message } => Some(message),
            _ => None,
        }
    }

    /// What happens when a VMM exits.
    fn on_exit(
        self: &Arc<Self>,
        id: &str,
        vm: &Arc<Vm>,
        status: ExitStatus,
        seccomp: Option<&seccomp_audit::SeccompKill>,
    ) {
        {
            let mut vms = self.vms.lock().unwrap_or_else(|e| e.into_inner());
            if vms.get(id).is_some_and(|v| Arc::ptr_eq(v, vm)) {
                vms.remove(id);
            }
        }
        let _ = std::fs::remove_file(self.api_socket(id));
        // No swtpm outlives its VMM (after an orderly end it is gone
        // already); the next start makes a new one.
        self.stop_tpm(id);
        let mut flags = vm.flags();
        flags.exited = true;
        let intent = flags.intent;
        tracing::info!(
            server = id,
            pid = vm.pid,
            ?status,
            ?intent,
            "kiln-vmm exited"
        );
        let store = &self.store;
        let _ = store.set_pid(id, None);
        match (intent, status) {
            (Intent::Restart | Intent::Delete, _) => {}
            (Intent::Stop, _) | (Intent::None, ExitStatus::Code(0)) => {
                let _ = store.set_status(id, ServerStatus::Shutoff, None);
            }
            (Intent::None, ExitStatus::Code(10)) => {
                let this = self.clone();
                let id = id.to_owned();
                tokio::spawn(async move { this.guest_reboot(&id).await });
            }
            (Intent::None, s) => {
                let fault = match seccomp {
                    Some(k) => seccomp_fault(vm.pid, s, Some(k)),
                    None if s == ExitStatus::Signal(libc::SIGSYS) => seccomp_fault(vm.pid, s, None),
                    None => exit_fault(vm.pid, s, self.exit_detail(id, s).as_deref()),
                };
                let _ = store.set_error(id, &fault);
            }
        }
    }

    /// The guest asked for a reboot: a new VMM, unless an action got there
    /// first.
    async fn guest_reboot(self: &Arc<Self>, id: &str) {
        let lock = self.lock_of(id);
        let _g = lock.lock().await;
        let Ok(server) = self.store_call(id, |s, id| s.get_server(id)).await else {
            return;
        };
        // REBOOT too: a guest that reboots again before its new VMM was
        // marked ACTIVE (a fast guest, a loaded host) must not be left there.
        if !matches!(
            server.status,
            ServerStatus::Active | ServerStatus::Build | ServerStatus::Reboot
        ) || self.vm(id).is_some()
        {
            return;
        }
        let _ = self
            .store_call(id, |s, id| {
                s.set_status(id, ServerStatus::Reboot, Some(TaskState::Rebooting))
            })
            .await;
        match self.spawn(&server).await {
            Ok(vm) => self.activate(id, &vm, &[ServerStatus::Reboot]).await,
            Err(e) => {
                let fault = crate::util::error_chain(&e);
                let _ = self
                    .store_call(id, move |s, id| s.set_error(id, &fault))
                    .await;
            }
        }
    }
}

/// The fault message for an unexpected exit, with what the VMM said about
/// it (`detail`) when there is more.
pub fn exit_fault(pid: u32, s: ExitStatus, detail: Option<&str>) -> String {
    match s {
        ExitStatus::Code(c) => {
            let why = match c {
                1 => "host or VMM error",
                11 => "triple fault",
                12 => "KVM emulation failure",
                13 => "killed through its control API",
                _ => "unexpected exit",
            };
            let detail = detail.map(|d| format!(": {d}")).unwrap_or_default();
            format!(
                "kiln-vmm (pid {pid}) exited with code {c} ({why}){detail}; see vmm.log and the console"
            )
        }
        ExitStatus::Signal(sig) => format!("kiln-vmm (pid {pid}) was killed by signal {sig}"),
        ExitStatus::Unknown => format!(
            "kiln-vmm (pid {pid}) exited while not a child of this kilnd (re-adopted); exit status unknown"
        ),
    }
}

/// The fault message for a VMM its seccomp filter killed (SIGSYS, or a
/// re-adopted VMM the kernel log says was killed so), with the system call
/// from the kernel's audit record when there is one (`kill`).
pub fn seccomp_fault(pid: u32, s: ExitStatus, kill: Option<&seccomp_audit::SeccompKill>) -> String {
    let head = match (s, kill) {
        (ExitStatus::Signal(_), Some(k)) => format!(
            "was killed by its seccomp filter (SIGSYS): {k} is outside that thread's allowlist"
        ),
        (ExitStatus::Signal(_), None) => format!(
            "was killed by SIGSYS, the signal of its seccomp filter; the kernel log has no \
             audit record naming the system call (an audit daemon may have it: \
             `ausearch -m SECCOMP -p {pid}`)"
        ),
        (_, k) => format!(
            "exited while not a child of this kilnd (re-adopted); the kernel log says its \
             seccomp filter killed it: {}",
            k.map_or_else(|| "no system call recorded".to_owned(), |k| k.to_string())
        ),
    };
    format!("kiln-vmm (pid {pid}) {head}; a kiln-vmm bug, see vmm.log")
}
