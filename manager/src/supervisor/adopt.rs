//! Start-up reconciliation: bring the store and the running VMMs back in
//! line after kilnd stopped or was killed.
//!
//! - A `kiln-vmm` whose `--config` lies under our `servers/` directory and
//!   whose server is in the store is re-adopted (pidfd + watcher) if it
//!   answers on its control socket; its status follows what it reports.
//!   One that does not answer is killed and its server goes to ERROR.
//!   Its NICs' links are set as the store has them, and its `vm.json`
//!   (which a reset re-reads) is made to name the kernel's store copy and
//!   its root overlay's backing file, as new ones do.
//! - Such a process without a live server record is killed.
//! - A swtpm ([`super::tpm`]) whose server's VMM was re-adopted is kept
//!   (its pid recorded again); every other swtpm under `servers/` ends.
//! - A server that should be running but has no process goes to ERROR
//!   with a fault saying so; one left in BUILD or REBOOT is booted again;
//!   one left `deleting` is deleted.
//! - A server directory without a live record is removed (its console log
//!   is archived); root disks of servers that are gone, image copies of
//!   images that are gone (lvm) and half-made disks are removed
//!   ([`crate::disks::DiskBackend::reconcile`]), and what cannot be is
//!   logged as a leftover.
//! - Networks: a delete a crash interrupted is finished, a managed bridge
//!   that vanished is recreated, and every tap marked as this kilnd's that
//!   belongs to no live server is deleted; other kilnds' and unmarked
//!   `kt…` links are left alone (see `crate::net::owner`).
//!
//! Store calls and file work run on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kiln_api::compute::{ServerStatus, TaskState};
use kiln_api::control::VmState;

use super::{sys, Supervisor};

impl Supervisor {
    pub async fn reconcile(self: &Arc<Self>) {
        let (servers, networks, me) = self
            .store
            .call(|s| {
                (
                    s.list_servers(None, None),
                    s.all_networks(),
                    s.instance_id(),
                )
            })
            .await;
        let servers = match servers {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot list servers to reconcile");
                return;
            }
        };
        let known: HashSet<String> = servers.iter().map(|s| s.id.clone()).collect();
        let bridges: HashSet<String> = networks
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n.bridge)
            .collect();
        match me {
            Ok(me) => {
                crate::net::owner::sweep(&me, &known, &bridges).await;
            }
            Err(e) => tracing::warn!(error = %e, "no instance id: not sweeping taps"),
        }
        let dir = self.servers_dir().to_owned();
        let procs = tokio::task::spawn_blocking(move || sys::processes_with_config_under(&dir))
            .await
            .unwrap_or_default();
        let mut running: HashMap<String, u32> = HashMap::new();
        for (pid, path) in procs {
            let id = std::path::Path::new(&path)
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if known.contains(&id) && !running.contains_key(&id) {
                running.insert(id, pid);
            } else {
                tracing::warn!(pid, path, "killing a kiln-vmm without a server record");
                if let Ok(fd) = sys::pidfd_open(pid) {
                    let _ = sys::pidfd_kill(&fd, libc::SIGKILL);
                }
            }
        }
        // swtpms: those of servers that are gone end now; the others
        // below, unless their server's VMM is re-adopted.
        let dir = self.servers_dir().to_owned();
        let mut swtpms: HashMap<String, Vec<u32>> = HashMap::new();
        let found = tokio::task::spawn_blocking(move || super::tpm::processes_under(&dir))
            .await
            .unwrap_or_default();
        for (pid, id) in found {
            swtpms.entry(id).or_default().push(pid);
        }
        for s in servers {
            let id = s.id.as_str();
            if let Some(pid) = running.get(id).copied() {
                let (this, server) = (self.clone(), s.clone());
                let _ = tokio::task::spawn_blocking(move || this.pin_files(&server)).await;
                self.readopt(&s, pid).await;
            }
            let pids = swtpms.remove(id).unwrap_or_default();
            if !pids.is_empty() || s.tpm {
                self.readopt_tpm(id, pids).await;
            }
            if s.task_state == Some(TaskState::Deleting) {
                let this = self.clone();
                let id = id.to_owned();
                tokio::spawn(async move { this.delete(&id).await });
                continue;
            }
            if self.vm(id).is_some() {
                continue;
            }
            match s.status {
                ServerStatus::Build | ServerStatus::Reboot => {
                    tracing::info!(
                        server = id,
                        "booting a server left in {}",
                        s.status.as_str()
                    );
                    let this = self.clone();
                    let from = s.status;
                    tokio::spawn(async move {
                        let _g = this.lock_of(&s.id).lock_owned().await;
                        this.boot(&s, &[from], TaskState::Spawning).await;
                    });
                }
                ServerStatus::Active | ServerStatus::Paused => {
                    let pid = s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                    let fault = format!("kiln-vmm{pid} exited while kilnd was not running");
                    let _ = self
                        .store_call(id, move |s, id| s.set_error(id, &fault))
                        .await;
                }
                _ => {
                    let (pid, task) = (s.pid.is_some(), s.task_state.is_some());
                    self.store_call(id, move |s, id| {
                        if pid {
                            let _ = s.set_pid(id, None);
                        }
                        if task {
                            let _ = s.set_task_state(id, None);
                        }
                    })
                    .await;
                }
            }
        }
        for (id, pids) in swtpms {
            tracing::warn!(server = id, ?pids, "ending a swtpm without a server record");
            let dir = super::tpm::state_dir(&self.server_dir(&id));
            let _ = tokio::task::spawn_blocking(move || {
                pids.into_iter().for_each(|p| super::tpm::stop(p, &dir))
            })
            .await;
        }
        // Root disks (and, for lvm, image copies) that belong to nothing.
        let images: HashSet<String> = self
            .store
            .call(|s| s.list_images())
            .await
            .map(|l| l.into_iter().map(|i| i.id).collect())
            .unwrap_or_default();
        let (disks, dir, known2) = (
            self.disks.clone(),
            self.servers_dir().to_owned(),
            known.clone(),
        );
        match tokio::task::spawn_blocking(move || disks.reconcile(&dir, &known2, &images)).await {
            Ok(Ok(r)) => {
                for what in &r.removed {
                    tracing::info!(what, "removed a leftover disk");
                }
                for what in &r.leftovers {
                    tracing::warn!(what, "leftover disk that could not be removed");
                }
            }
            Ok(Err(e)) => tracing::error!(
                error = crate::util::error_chain(&e),
                "cannot reconcile disks"
            ),
            Err(e) => tracing::error!(error = %e, "disk reconcile task failed"),
        }
        // Directories of servers that are gone, and expired archives.
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(rd) = std::fs::read_dir(this.servers_dir()) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !known.contains(&name) {
                        tracing::info!(server = name, "removing leftover server directory");
                        this.remove_files(&name);
                    }
                }
            }
            this.expire();
        })
        .await;
    }

    /// A kiln-vmm started by an older kilnd re-reads its `vm.json` when it
    /// resets (re-exec): point it at the kernel's store copies and name its
    /// root overlay's backing file, as [`Supervisor::vm_config`] now does,
    /// so that a reset neither reads a registered host path again nor
    /// follows an overlay header (kiln-vmm would refuse it). Written whole
    /// (a temporary file renamed over it). Blocking.
    fn pin_files(&self, server: &kiln_api::compute::Server) {
        use kiln_api::compute::ImageKind;
        let path = self.server_dir(&server.id).join("vm.json");
        let Some(mut cfg) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<kiln_api::vm::VmConfig>(&b).ok())
        else {
            return;
        };
        let store_dir = self.config.state_dir.join("images");
        let before = cfg.clone();
        if let (Some(k), Ok(img)) = (cfg.kernel.as_mut(), self.store.get_image(&server.image_id)) {
            if let ImageKind::Kernel { initramfs, .. } = &img.kind {
                let (kp, ip) = crate::image_files::kernels::store_paths(&store_dir, &img.id);
                k.path = kp.display().to_string();
                k.initramfs = initramfs.as_ref().map(|_| ip.display().to_string());
            }
        }
        let disk_image = server
            .disk_image_id
            .as_ref()
            .and_then(|i| self.store.get_image(i).ok());
        if let (Some(d), Some(img)) = (cfg.disks.first_mut(), disk_image) {
            if let ImageKind::Disk {
                path: base, format, ..
            } = &img.kind
            {
                if d.format == kiln_api::vm::DiskFormat::Qcow2
                    && d.backing.is_empty()
                    && !format.is_iso()
                {
                    d.backing = vec![kiln_api::vm::BackingConfig {
                        path: base.clone(),
                        format: format.disk(),
                    }];
                }
            }
        }
        if cfg == before {
            return;
        }
        let tmp = path.with_extension("json.partial");
        let r = serde_json::to_vec_pretty(&cfg)
            .map_err(std::io::Error::other)
            .and_then(|j| std::fs::write(&tmp, j))
            .and_then(|()| std::fs::rename(&tmp, &path));
        match r {
            Ok(()) => tracing::info!(server = server.id, "vm.json names store files only now"),
            Err(e) => tracing::warn!(server = server.id, "cannot update vm.json: {e}"),
        }
    }

    /// A server's swtpms found at start-up (`pids`): the one of a VMM just
    /// re-adopted stays and is recorded again; any other ends (a VMM that
    /// is gone leaves none behind).
    async fn readopt_tpm(self: &Arc<Self>, id: &str, pids: Vec<u32>) {
        let keep = self.vm(id).is_some() && pids.len() == 1;
        let this = self.clone();
        let id = id.to_owned();
        let _ = tokio::task::spawn_blocking(move || {
            if keep {
                tracing::info!(server = id, pid = pids[0], "re-adopted swtpm");
                let _ = this.store.set_tpm_pid(&id, Some(pids[0]));
            } else {
                if !pids.is_empty() {
                    tracing::info!(server = id, ?pids, "ending swtpm whose VMM is gone");
                }
                this.stop_tpm(&id);
            }
        })
        .await;
    }

    /// Re-attaches to a running VMM of this server.
    async fn readopt(self: &Arc<Self>, server: &kiln_api::compute::Server, pid: u32) {
        let (id, status) = (server.id.as_str(), server.status);
        let fd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(_) => return, // exited in between
        };
        let vm = match self.watch(id, pid, fd, false) {
            Ok(vm) => vm,
            Err(e) => {
                tracing::error!(server = id, error = %e, "cannot watch pid {pid}");
                return;
            }
        };
        let mut info = None;
        for _ in 0..20 {
            if let Ok(i) = self.vm_info(id).await {
                info = Some(i);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self
            .store_call(id, move |s, id| s.set_pid(id, Some(pid)))
            .await;
        match info {
            Some(i) => {
                tracing::info!(server = id, pid, state = ?i.state, "re-adopted kiln-vmm");
                let to = match i.state {
                    VmState::Paused => ServerStatus::Paused,
                    _ => ServerStatus::Active,
                };
                let _ = self
                    .store_call(id, move |s, id| {
                        if status != to {
                            let _ = s.set_status(id, to, None);
                        } else {
                            let _ = s.set_task_state(id, None);
                        }
                    })
                    .await;
                // A link change a crash cut off between store and VMM.
                self.sync_links(server, &i).await;
                // Still waiting for readiness: watch again (the time then
                // counts from the re-adoption).
                if server.ready_condition.is_some() && server.ready_after_ms.is_none() {
                    self.watch_readiness(server, &vm, std::time::Instant::now());
                }
            }
            None => {
                vm.set_intent(super::Intent::Delete);
                self.kill(id, &vm).await;
                let fault = format!(
                    "kiln-vmm (pid {pid}) did not answer on its control socket after kilnd restarted"
                );
                let _ = self
                    .store_call(id, move |s, id| s.set_error(id, &fault))
                    .await;
            }
        }
    }
}
