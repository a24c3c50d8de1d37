//! Server lifecycle work: build after create, the actions of
//! `POST /v1/servers/{id}/action`, and delete.
//!
//! An action first checks, under the server's lock (taken without
//! waiting: a busy server answers 409), that the status allows it, records
//! its task state, and then runs in the background holding the lock; the
//! API answers 202 in between. Delete does not wait for a running action:
//! it kills the VMM first, then takes the lock, so it always finishes.
//!
//! Every store call here runs on the blocking pool
//! ([`Supervisor::store_call`]).

use std::sync::Arc;
use std::time::Duration;

use kiln_api::compute::{Display, RebootType, Server, ServerAction, ServerStatus, TaskState};
use kiln_api::control::Request;
use thiserror::Error;
use tokio::sync::OwnedMutexGuard;

use super::{Busy, Intent, Supervisor, Vm};
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum ActionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error("server {0} is being deleted")]
    Deleting(String),
    #[error("cannot {action} server {server} while it is {status}")]
    NotAllowed {
        action: &'static str,
        server: String,
        status: &'static str,
    },
    #[error("server {0} still has a running kiln-vmm")]
    StillRunning(String),
    #[error("server {0} boots without UEFI, so it has no variable store to reset")]
    NoNvram(String),
}

impl Supervisor {
    /// Boots a server just recorded as BUILD.
    pub fn build(self: &Arc<Self>, server: Server) {
        let this = self.clone();
        tokio::spawn(async move {
            let _g = this.lock_of(&server.id).lock_owned().await;
            this.boot(&server, &[ServerStatus::Build], TaskState::Spawning)
                .await;
        });
    }

    /// Starts the VMM and moves the server to ACTIVE, or ERROR with the
    /// reason.
    pub(crate) async fn boot(
        self: &Arc<Self>,
        server: &Server,
        from: &[ServerStatus],
        task: TaskState,
    ) {
        let id = &server.id;
        // A delete may have come first.
        let Ok(current) = self.store_call(id, |s, id| s.get_server(id)).await else {
            return;
        };
        if current.task_state == Some(TaskState::Deleting) {
            return;
        }
        let _ = self
            .store_call(id, move |s, id| s.set_task_state(id, Some(task)))
            .await;
        match self.spawn(&current).await {
            Ok(vm) => self.activate(id, &vm, from).await,
            Err(e) => {
                let fault = crate::util::error_chain(&e);
                tracing::warn!(server = id.as_str(), fault, "boot failed");
                let _ = self
                    .store_call(id, move |s, id| s.set_error(id, &fault))
                    .await;
            }
        }
    }

    /// Validates an action against the server's status and starts it.
    pub async fn action(
        self: &Arc<Self>,
        id: &str,
        action: ServerAction,
    ) -> Result<(), ActionError> {
        let server = self.store_call(id, |s, id| s.get_server(id)).await?;
        let guard = self.try_lock(&server)?;
        // Re-read under the lock.
        let server = self.store_call(id, |s, id| s.get_server(id)).await?;
        if server.task_state == Some(TaskState::Deleting) {
            return Err(ActionError::Deleting(server.name));
        }
        if action == ServerAction::ResetNvram && server.nvram.is_none() {
            return Err(ActionError::NoNvram(server.name));
        }
        use ServerStatus::*;
        let allowed: &[ServerStatus] = match action {
            ServerAction::Start => &[Shutoff, Error],
            ServerAction::Stop => &[Active, Paused, Error],
            ServerAction::Reboot {
                kind: RebootType::Soft,
            } => &[Active],
            ServerAction::Reboot {
                kind: RebootType::Hard,
            } => &[Active, Paused, Shutoff, Error],
            ServerAction::Pause => &[Active],
            ServerAction::Resume => &[Paused],
            ServerAction::ResetNvram => &[Shutoff, Error],
        };
        if !allowed.contains(&server.status) {
            return Err(ActionError::NotAllowed {
                action: action_name(action),
                server: server.name,
                status: server.status.as_str(),
            });
        }
        let running = self.vm(id).filter(|vm| !vm.has_exited());
        if action == ServerAction::Start && running.is_some() {
            return Err(ActionError::StillRunning(server.name));
        }
        if action == ServerAction::Start {
            // Before the 202, so a client polling right after it never
            // sees the old SHUTOFF with no task as the outcome.
            self.store_call(id, |s, id| {
                s.set_task_state(id, Some(TaskState::PoweringOn))
            })
            .await?;
        }
        let this = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { this.run_action(guard, &id, server, action, running).await });
        Ok(())
    }

    async fn run_action(
        self: Arc<Self>,
        _guard: OwnedMutexGuard<()>,
        id: &str,
        server: Server,
        action: ServerAction,
        vm: Option<Arc<Vm>>,
    ) {
        match action {
            ServerAction::ResetNvram => {
                // Copied again from the template by the next start.
                if let Some(nvram) = &server.nvram {
                    match std::fs::remove_file(nvram) {
                        Ok(()) => tracing::info!(server = id, "variable store reset"),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => tracing::warn!(server = id, "cannot reset {nvram}: {e}"),
                    }
                }
            }
            ServerAction::Start => {
                self.boot(
                    &server,
                    &[ServerStatus::Shutoff, ServerStatus::Error],
                    TaskState::PoweringOn,
                )
                .await
            }
            ServerAction::Stop => {
                let _ = self
                    .store_call(id, |s, id| {
                        s.set_task_state(id, Some(TaskState::PoweringOff))
                    })
                    .await;
                match vm {
                    Some(vm) => {
                        vm.set_intent(Intent::Stop);
                        let graceful = server.status != ServerStatus::Paused;
                        let agent = graceful && server.agent;
                        self.shut_down(id, &vm, graceful, agent, &server).await;
                    }
                    None => {
                        let _ = self
                            .store_call(id, |s, id| s.set_status(id, ServerStatus::Shutoff, None))
                            .await;
                    }
                }
            }
            ServerAction::Reboot { kind } => {
                let task = match kind {
                    RebootType::Soft => TaskState::Rebooting,
                    RebootType::Hard => TaskState::RebootingHard,
                };
                let _ = self
                    .store_call(id, move |s, id| {
                        s.set_status(id, ServerStatus::Reboot, Some(task))
                    })
                    .await;
                if let Some(vm) = vm {
                    vm.set_intent(Intent::Restart);
                    let soft = kind == RebootType::Soft;
                    self.shut_down(id, &vm, soft, soft && server.agent, &server)
                        .await;
                }
                self.boot(&server, &[ServerStatus::Reboot], task).await;
            }
            ServerAction::Pause | ServerAction::Resume => {
                let (req, from, to, task) = if action == ServerAction::Pause {
                    (
                        Request::Pause,
                        ServerStatus::Active,
                        ServerStatus::Paused,
                        TaskState::Pausing,
                    )
                } else {
                    (
                        Request::Resume,
                        ServerStatus::Paused,
                        ServerStatus::Active,
                        TaskState::Unpausing,
                    )
                };
                let _ = self
                    .store_call(id, move |s, id| s.set_task_state(id, Some(task)))
                    .await;
                match self.control(id, req, Duration::from_secs(5)).await {
                    Ok(_) => {
                        // Under the VM's flags lock, so an exit meanwhile
                        // (SHUTOFF, ERROR) is not overwritten.
                        let _ = self
                            .store_call(id, move |s, id| match &vm {
                                Some(vm) => {
                                    let flags = vm.flags();
                                    if !flags.exited {
                                        let _ = s.set_status_if(id, &[from], to, None);
                                    }
                                }
                                None => {
                                    let _ = s.set_task_state(id, None);
                                }
                            })
                            .await;
                    }
                    Err(e) => {
                        let _ = self
                            .store_call(id, |s, id| s.set_task_state(id, None))
                            .await;
                        tracing::warn!(
                            server = id,
                            error = crate::util::error_chain(&e),
                            "{} failed",
                            task.as_str()
                        );
                    }
                }
            }
        }
    }

    /// Ends a VMM: when `graceful`, the guest agent's `guest-shutdown`
    /// first (with `agent`: when it answers `guest-ping` at once; the
    /// guest then has half the stop timeout), then the ACPI power button;
    /// the kill once the stop timeout is over (keeping the last screenshot
    /// of a `server` with a display first: the guest ignored the button).
    async fn shut_down(&self, id: &str, vm: &Vm, graceful: bool, agent: bool, server: &Server) {
        if graceful {
            let t = Duration::from_secs(self.config.vmm.stop_timeout_s);
            let deadline = tokio::time::Instant::now() + t;
            if agent && self.agent_shutdown(id, vm, t / 2).await {
                return;
            }
            let pressed = self
                .control(id, Request::PowerButton, Duration::from_secs(2))
                .await
                .is_ok();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if pressed && vm.wait_exit(left).await.is_some() {
                return;
            }
            if server.display != Display::None && !vm.has_exited() {
                self.keep_screenshot(id, "the stop timed out", super::spawn::SCREENSHOT_TIME)
                    .await;
            }
        }
        self.kill(id, vm).await;
    }

    /// Deletes a server: its VMM, its files (the console log goes to the
    /// archive) and its allocation. Waits until done.
    pub async fn delete(self: &Arc<Self>, id: &str) -> Result<(), ActionError> {
        let server = self
            .store_call(id, |s, id| {
                let server = s.get_server(id)?;
                s.set_task_state(id, Some(TaskState::Deleting))?;
                Ok::<_, StoreError>(server)
            })
            .await?;
        if let Some(vm) = self.vm(id) {
            vm.set_intent(Intent::Delete);
            // A running guest with an agent that answers at once is asked
            // to power down first (its own orderly end), within the stop
            // timeout; the VMM's orderly end follows in any case.
            if server.agent && server.status == ServerStatus::Active {
                let t = Duration::from_secs(self.config.vmm.stop_timeout_s);
                self.agent_shutdown(id, &vm, t).await;
            }
            self.kill(id, &vm).await;
        }
        let _g = self.lock_of(id).lock_owned().await;
        // An action that held the lock may have started a new VMM.
        if let Some(vm) = self.vm(id) {
            vm.set_intent(Intent::Delete);
            self.kill(id, &vm).await;
        }
        // The VMM's exit took its taps away (they are not persistent);
        // this only removes a leftover of the same name that this kilnd
        // marked.
        let (server, me) = self
            .store_call(id, |s, id| (s.get_server(id), s.instance_id()))
            .await;
        if let (Ok(server), Ok(me)) = (server, me) {
            for nic in &server.nics {
                crate::net::owner::remove_leftover(&me, &nic.tap).await;
            }
        }
        let this = self.clone();
        let id2 = id.to_owned();
        let _ = tokio::task::spawn_blocking(move || this.remove_files(&id2)).await;
        self.store_call(id, |s, id| s.mark_deleted(id)).await?;
        self.forget_lock(id);
        self.agents.forget(id);
        Ok(())
    }
}

fn action_name(a: ServerAction) -> &'static str {
    match a {
        ServerAction::Start => "start",
        ServerAction::Stop => "stop",
        ServerAction::Reboot { .. } => "reboot",
        ServerAction::Pause => "pause",
        ServerAction::Resume => "resume",
        ServerAction::ResetNvram => "reset the variable store of",
    }
}
