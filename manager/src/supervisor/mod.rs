//! The supervisor: one `kiln-vmm` process per running server.
//!
//! How a server runs:
//! 1. [`Supervisor::spawn`] writes `servers/ID/vm.json` (a
//!    [`kiln_api::vm::VmConfig`]: the kernel image, or for a disk image the
//!    firmware with the root disk first (and UEFI's `nvram.fd`, see
//!    [`crate::firmware`]), the config drive second if it has one, built
//!    anew ([`crate::config_drive`]), the flavor's vCPUs and RAM, `serial.log` and
//!    `api.sock` in the server's directory), starts
//!    `kiln-vmm --config vm.json` in a session of its own (so it outlives
//!    kilnd), records its pid, and opens a pidfd on it.
//! 2. A watcher task waits on the pidfd (tokio `AsyncFd`). When the VMM
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
//! 5. Ending a VMM ([`Supervisor::kill`]: stop after its timeout, delete,
//!    hard reboot) is orderly first: the control API's kill, or SIGTERM if
//!    the socket does not answer; kiln-vmm then writes its disks back and
//!    exits. Only a VMM still there [`VMM_END_GRACE`] later is SIGKILLed
//!    (which can lose what the guest had not flushed).

pub mod actions;
pub mod adopt;
mod error;
mod guest;
pub mod nic_link;
pub mod seccomp_audit;
pub mod sys;
pub mod tpm;
mod vm_config;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_api::compute::{Server, ServerStatus, TaskState};
use kiln_api::control::{Request, VmInfo, VmState};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::config::Config;
use crate::store::Store;
pub use error::{Busy, ConfigError, ControlError, NicNetworkError, NotReady, SpawnError};
use kiln_api::client;
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

/// A server's last picture, kept in its directory when its TTL ended.
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

    /// Starts the server's VMM and waits until it answers on its control
    /// socket (or exits, which the watcher handles). An error is the fault
    /// message; the caller puts the server in ERROR.
    pub async fn spawn(self: &Arc<Self>, server: &Server) -> Result<Arc<Vm>, SpawnError> {
        if let Some(vm) = self.vm(&server.id) {
            if !vm.has_exited() {
                return Err(SpawnError::Running(vm.pid));
            }
        }
        // The NICs' taps: kilnd's copies close when this function returns,
        // so from then on each lives exactly as long as the VMM (see
        // `crate::net`).
        let (instance, nets) = {
            let server = server.clone();
            self.store.call(move |s| nic_networks(s, &server)).await?
        };
        let taps = crate::net::open_taps(&instance, server, &nets).await?;
        // The config reads the store and checks the image files: off the
        // executor. The taps go there and back.
        let (cfg, taps, root_disk) = {
            let this = self.clone();
            let server = server.clone();
            tokio::task::spawn_blocking(move || {
                let cfg = this.vm_config(&server, &taps);
                let root_disk = server.disk_image_id.as_ref().map(|img| {
                    this.store
                        .get_image(img)
                        .map_err(|source| SpawnError::DiskImage {
                            id: img.clone(),
                            source,
                        })
                });
                (cfg, taps, root_disk)
            })
            .await
            .map_err(SpawnError::Join)?
        };
        let cfg = cfg?;
        let root_disk = root_disk.transpose()?;
        let disk_gb = server.disk_gb;
        // UEFI: the server's own variable store, copied from the template
        // on its first boot and kept afterwards.
        let nvram = cfg.firmware.as_ref().and_then(|f| f.vars.clone()).map(|v| {
            (
                PathBuf::from(v),
                crate::firmware::vars_template(&self.config.firmware, server.secure_boot),
            )
        });
        let started = Instant::now();
        {
            let id = server.id.clone();
            let _ = self.store.call(move |s| s.set_ready(&id, None)).await;
        }
        let dir = self.server_dir(&server.id);
        let binary = self.config.vmm_binary();
        let sock = self.api_socket(&server.id);
        let console_sock = self.console_socket(&server.id);
        let backend = self.disks.clone();
        let server_id = server.id.clone();
        // Rebuilt from the store at every start, so it is always true.
        let config_drive = server
            .config_drive
            .then(|| (self.store.clone(), server.clone()));
        // Its answer-file ISO, also rebuilt at every start from the store.
        let answer_file = server
            .answer_file
            .then(|| self.store.server_user_data(&server.id));
        // Its TPM: the state made once, a new swtpm for every VMM.
        let tpm = server
            .tpm
            .then(|| (self.config.tpm.clone(), self.store.clone()));
        let child = {
            let dir = dir.clone();
            let sock = sock.clone();
            let binary = binary.clone();
            tokio::task::spawn_blocking(move || -> Result<u32, SpawnError> {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| SpawnError::Dir(dir.display().to_string(), e))?;
                if let Some(img) = &root_disk {
                    backend.ensure_root_disk(&server_id, &dir, img, disk_gb)?;
                }
                if let Some((nvram, template)) = &nvram {
                    crate::firmware::ensure_nvram(nvram, (template.0, &template.1))?;
                }
                if let Some((store, server)) = &config_drive {
                    crate::config_drive::build_for(store, server, &dir)?;
                }
                if let Some(user_data) = answer_file {
                    let out = dir.join(crate::config_drive::ANSWER_FILE);
                    crate::config_drive::build_answer_file(&user_data?.unwrap_or_default(), &out)?;
                }
                let swtpm = match &tpm {
                    None => None,
                    Some((config, store)) => {
                        tpm::ensure_state(config, &dir)?;
                        let pid = tpm::start(config, &dir)?;
                        // Unrecorded, it is still found under servers/.
                        if let Err(e) = store.set_tpm_pid(&server_id, Some(pid)) {
                            tracing::warn!(server = server_id, pid, "cannot record swtpm: {e}");
                        }
                        Some(pid)
                    }
                };
                // A swtpm started for a VMM that never ran ends with it.
                let end_tpm = |e: SpawnError| {
                    if let Some(pid) = swtpm {
                        tpm::stop(pid, &tpm::state_dir(&dir));
                    }
                    e
                };
                let cfg_path = dir.join("vm.json");
                let json = serde_json::to_vec_pretty(&cfg)
                    .map_err(SpawnError::Json)
                    .map_err(end_tpm)?;
                std::fs::write(&cfg_path, json)
                    .map_err(|e| SpawnError::Write(cfg_path.display().to_string(), e))
                    .map_err(end_tpm)?;
                // Left behind by a VMM that was killed, or by the last boot.
                let _ = std::fs::remove_file(&sock);
                let _ = std::fs::remove_file(dir.join(EXIT_FILE));
                let _ = std::fs::remove_file(&console_sock);
                let log = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("vmm.log"))
                    .map_err(SpawnError::Log)
                    .map_err(end_tpm)?;
                let log2 = log.try_clone().map_err(SpawnError::Log).map_err(end_tpm)?;
                let mut cmd = Command::new(&binary);
                cmd.arg("--config")
                    .arg(&cfg_path)
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(log2);
                sys::new_session(&mut cmd);
                sys::inherit_fds(
                    &mut cmd,
                    taps.iter().flatten().map(|t| t.as_raw_fd()).collect(),
                );
                let child = cmd
                    .spawn()
                    .map_err(|e| SpawnError::Start(binary.display().to_string(), e))
                    .map_err(end_tpm)?;
                // The child is reaped through its pidfd, not the handle.
                Ok(child.id())
            })
            .await
            .map_err(SpawnError::Join)??
        };
        let pidfd = sys::pidfd_open(child).map_err(|e| SpawnError::Pidfd(child, e))?;
        {
            let id = server.id.clone();
            self.store
                .call(move |s| s.set_pid(&id, Some(child)))
                .await?;
        }
        let vm = self
            .watch(&server.id, child, pidfd, true)
            .map_err(SpawnError::Watch)?;
        self.wait_ready(&server.id, &vm).await?;
        self.watch_readiness(server, &vm, started);
        Ok(vm)
    }

    /// Records when the current boot meets the server's readiness
    /// condition: a regex on the console, or a debug-port code. Without a
    /// condition it is ready now (its VMM answers).
    fn watch_readiness(self: &Arc<Self>, server: &Server, vm: &Arc<Vm>, started: Instant) {
        let Some(cond) = server.ready_condition.clone() else {
            let (store, id) = (self.store.clone(), server.id.clone());
            let ms = started.elapsed().as_millis() as u64;
            tokio::spawn(async move { store.call(move |s| s.set_ready(&id, Some(ms))).await });
            return;
        };
        let regex = cond
            .console
            .as_deref()
            .and_then(|p| crate::util::console_regex(p).ok());
        let this = self.clone();
        let vm = vm.clone();
        let id = server.id.clone();
        let log = self.server_dir(&id).join("serial.log");
        tokio::spawn(async move {
            while !vm.has_exited() {
                let met = match (&regex, cond.debug_code) {
                    (Some(re), _) => {
                        let log = log.clone();
                        let re = re.clone();
                        tokio::task::spawn_blocking(move || {
                            re.is_match(&crate::util::read_tail(&log, None))
                        })
                        .await
                        .unwrap_or(false)
                    }
                    (None, Some(code)) => this
                        .vm_info(&id)
                        .await
                        .is_ok_and(|i| i.boot_progress.iter().any(|p| p.code == code)),
                    (None, None) if cond.agent => this.agent_answers(&id).await,
                    (None, None) => true,
                };
                if met {
                    let ms = started.elapsed().as_millis() as u64;
                    tracing::info!(server = id, ms, "ready");
                    let _ = this.store.call(move |s| s.set_ready(&id, Some(ms))).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    /// Moves the server from one of `from` to ACTIVE if its VMM still runs
    /// (on the blocking pool: the store write happens under the VM's flags
    /// lock).
    pub async fn activate(&self, id: &str, vm: &Arc<Vm>, from: &[ServerStatus]) {
        let (store, id, vm, from) = (self.store.clone(), id.to_owned(), vm.clone(), from.to_vec());
        store
            .call(move |s| {
                let flags = vm.flags();
                if !flags.exited {
                    let _ = s.set_status_if(&id, &from, ServerStatus::Active, None);
                }
            })
            .await;
    }

    /// Registers a VMM and starts its watcher.
    fn watch(
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

    /// Waits until the VMM answers `GET /v1/vm`, up to the boot timeout.
    async fn wait_ready(&self, id: &str, vm: &Arc<Vm>) -> Result<(), NotReady> {
        let deadline = Instant::now() + Duration::from_secs(self.config.vmm.boot_timeout_s);
        loop {
            if vm.has_exited() {
                return Ok(());
            }
            if let Ok(info) = self.vm_info(id).await {
                if info.state != VmState::Created {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                vm.set_intent(Intent::Delete);
                vm.sigkill();
                vm.wait_exit(Duration::from_secs(5)).await;
                return Err(NotReady {
                    pid: vm.pid,
                    secs: self.config.vmm.boot_timeout_s,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET /v1/vm` on the server's control socket.
    pub async fn vm_info(&self, id: &str) -> Result<VmInfo, ControlError> {
        let r = self
            .control(id, Request::Info, Duration::from_secs(2))
            .await?;
        serde_json::from_slice(&r).map_err(ControlError::Answer)
    }

    /// One control request; the body of a 2xx answer.
    pub async fn control(
        &self,
        id: &str,
        req: Request,
        t: Duration,
    ) -> Result<Vec<u8>, ControlError> {
        let sock = self.api_socket(id);
        let r = tokio::task::spawn_blocking(move || client::control(&sock, &req, t)).await??;
        r.ok().map_err(ControlError::Refused)?;
        Ok(r.body)
    }

    /// Ends the VMM in an orderly way (the control API's kill, or SIGTERM
    /// if the VMM does not answer), so that it writes its disks back before
    /// it exits; SIGKILLs it only if it has not exited [`VMM_END_GRACE`]
    /// later. Waits for the exit.
    pub async fn kill(&self, id: &str, vm: &Vm) {
        if vm.has_exited() {
            return;
        }
        let asked = self
            .control(id, Request::Kill, Duration::from_secs(1))
            .await
            .is_ok();
        if !asked {
            vm.sigterm();
        }
        if vm.wait_exit(VMM_END_GRACE).await.is_none() {
            tracing::warn!(
                server = id,
                pid = vm.pid,
                "kiln-vmm did not end within {} s of being asked; SIGKILL (its disks may miss what its guest had not flushed)",
                VMM_END_GRACE.as_secs()
            );
            vm.sigkill();
            vm.wait_exit(Duration::from_secs(10)).await;
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

/// This kilnd's instance id (its taps' mark) and the network of each of
/// `server`'s NICs, for [`crate::net::open_taps`].
fn nic_networks(
    store: &Store,
    server: &Server,
) -> Result<(String, Vec<kiln_api::compute::Network>), NicNetworkError> {
    if server.nics.is_empty() {
        return Ok((String::new(), Vec::new()));
    }
    let instance = store.instance_id().map_err(NicNetworkError::InstanceId)?;
    let nets = server
        .nics
        .iter()
        .map(|nic| {
            store
                .get_network(&nic.network_id)
                .map_err(|source| NicNetworkError::Network {
                    tap: nic.tap.clone(),
                    source,
                })
        })
        .collect::<Result<_, _>>()?;
    Ok((instance, nets))
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
