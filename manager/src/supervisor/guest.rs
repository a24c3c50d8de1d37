//! The supervisor's side of a server's guest agent channel: where its
//! socket is, readiness by `guest-ping`, and the agent's shutdown that
//! stop and delete try before the ACPI power button or the VMM's end.

use std::path::PathBuf;
use std::time::Duration;

use super::{Supervisor, Vm};
use crate::agent::{PING_TIMEOUT, SOCKET};

/// How long kilnd waits after `guest-shutdown` for an error answer before
/// it takes the command as sent.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(500);

impl Supervisor {
    /// The guest agent channel's socket, which the server's kiln-vmm
    /// listens on (`VmConfig::agent`): `agent.sock` in its directory.
    pub fn agent_socket(&self, id: &str) -> PathBuf {
        self.server_dir(id).join(SOCKET)
    }

    /// The server's agent answers `guest-ping` within [`PING_TIMEOUT`].
    pub(super) async fn agent_answers(&self, id: &str) -> bool {
        self.agents
            .ping(id, &self.agent_socket(id), PING_TIMEOUT)
            .await
            .is_ok()
    }

    /// Asks the guest to power itself down through its agent: `guest-ping`
    /// first (within [`PING_TIMEOUT`]), then `guest-shutdown`. True when
    /// the request went out; then waits up to `t` for the VMM to exit and
    /// says whether it did.
    pub(super) async fn agent_shutdown(&self, id: &str, vm: &Vm, t: Duration) -> bool {
        let sock = self.agent_socket(id);
        let r = self
            .agents
            .shutdown(id, &sock, PING_TIMEOUT, SHUTDOWN_LINGER)
            .await;
        match r {
            Ok(()) => {
                tracing::info!(server = id, "guest-shutdown sent");
                vm.wait_exit(t).await.is_some()
            }
            Err(e) => {
                tracing::info!(
                    server = id,
                    error = crate::util::error_chain(&e),
                    "guest agent shutdown not sent"
                );
                false
            }
        }
    }
}
