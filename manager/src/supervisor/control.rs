//! Talking to a running VMM over its control socket, and ending it in an
//! orderly way; the last screenshot kilnd takes before it ends a VMM
//! itself (a TTL, a time-out).

use std::time::Duration;

use kiln_api::client;
use kiln_api::control::{Request, VmInfo};

use super::{ControlError, Supervisor, Vm, LAST_SCREENSHOT, VMM_END_GRACE};

impl Supervisor {
    /// Keeps the screen of server `id`'s running VMM as its last screenshot
    /// (`last-screenshot.png`, written whole or not at all), before kilnd
    /// ends that VMM itself (`why`, for the log): afterwards nobody can
    /// ask. Waits at most `t` for the picture; a VMM that does not answer
    /// leaves nothing (logged). Only for servers with a display.
    pub async fn keep_screenshot(&self, id: &str, why: &str, t: Duration) -> bool {
        let png = match self.control(id, Request::Screenshot, t).await {
            Ok(png) => png,
            Err(e) => {
                tracing::warn!(
                    server = id,
                    error = crate::util::error_chain(&e),
                    "no last screenshot ({why}): the VMM did not answer"
                );
                return false;
            }
        };
        let path = self.server_dir(id).join(LAST_SCREENSHOT);
        let tmp = path.with_extension("png.tmp");
        let written = tokio::fs::write(&tmp, &png).await;
        match written.and(tokio::fs::rename(&tmp, &path).await) {
            Ok(()) => {
                tracing::info!(
                    server = id,
                    bytes = png.len(),
                    "last screenshot kept ({why})"
                );
                true
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                tracing::warn!(server = id, error = %e, "cannot keep the last screenshot");
                false
            }
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
}
