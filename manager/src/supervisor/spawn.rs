//! Starting a server's VMM: vm.json and what it names (root disk, UEFI
//! variables, config drive, answer file, swtpm, taps), the `kiln-vmm`
//! process in its own session, the wait until its control socket answers
//! (the boot timeout), and the readiness condition afterwards.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_api::compute::{Display, Server, ServerStatus, TaskState};
use kiln_api::control::VmState;

use super::{sys, tpm, Intent, NicNetworkError, NotReady, SpawnError, Supervisor, Vm, EXIT_FILE};
use crate::store::Store;

/// How long kilnd waits for a last screenshot before it ends a VMM.
pub(super) const SCREENSHOT_TIME: Duration = Duration::from_secs(5);

impl Supervisor {
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
                    crate::firmware::ensure_nvram(nvram, template)?;
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
    /// condition it is ready now (its VMM answers). A condition not met
    /// within its `timeout_s` of `started` ends the boot
    /// ([`Supervisor::ready_timed_out`]).
    pub(super) fn watch_readiness(
        self: &Arc<Self>,
        server: &Server,
        vm: &Arc<Vm>,
        started: Instant,
    ) {
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
        let server = server.clone();
        let id = server.id.clone();
        let log = self.server_dir(&id).join("serial.log");
        let deadline = cond.timeout_s.map(|t| started + Duration::from_secs(t));
        tokio::spawn(async move {
            while !vm.has_exited() {
                if deadline.is_some_and(|d| Instant::now() >= d)
                    && this.ready_timed_out(&server, &vm).await
                {
                    return;
                }
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

    /// The server was not ready within its `ready.timeout_s`: its last
    /// screenshot kept (with a display), its VMM ended (in an orderly way),
    /// the server in ERROR. False, to try again shortly, while an action
    /// holds the server's lock (a stop, a reboot: they decide its end).
    async fn ready_timed_out(self: &Arc<Self>, server: &Server, vm: &Arc<Vm>) -> bool {
        let id = &server.id;
        let Ok(_g) = self.lock_of(id).try_lock_owned() else {
            return false;
        };
        if vm.has_exited() {
            return true;
        }
        let secs = server
            .ready_condition
            .as_ref()
            .and_then(|c| c.timeout_s)
            .unwrap_or_default();
        tracing::warn!(server = id, secs, "not ready in time: ending its VMM");
        if server.display != Display::None {
            self.keep_screenshot(id, "not ready in time", SCREENSHOT_TIME)
                .await;
        }
        // Its status is set here, not by the exit watcher.
        vm.set_intent(Intent::Delete);
        self.kill(id, vm).await;
        let shot = match server.display {
            Display::None => String::new(),
            _ => format!(" (its last screenshot: GET /v1/servers/{id}/screenshot?last=true)"),
        };
        let fault = format!(
            "not ready within {secs} s of its start (ready.timeout_s): kilnd ended its \
             kiln-vmm{shot}; see the console"
        );
        let _ = self
            .store_call(id, move |s, id| match s.get_server(id) {
                Ok(cur) if cur.task_state != Some(TaskState::Deleting) => s.set_error(id, &fault),
                _ => Ok(()),
            })
            .await;
        true
    }

    /// Waits until the VMM answers `GET /v1/vm`, up to the boot timeout.
    /// A VMM that never answered has no picture to keep: it serves its
    /// control socket from the moment its vCPUs start.
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
