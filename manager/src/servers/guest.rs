//! `GET /v1/servers/{id}/guest`: what a running server's guest agent says
//! about the guest (its OS, hostname, interfaces and addresses), asked
//! through [`crate::agent`] within [`crate::agent::INFO_TIMEOUT`].

use std::sync::Arc;

use kiln_api::compute::{GuestInfo, ServerStatus};

use super::ServerError;
use crate::agent::{AgentError, INFO_TIMEOUT};
use crate::store::Store;
use crate::supervisor::Supervisor;

/// Server `id`'s guest, as its agent tells it: a 409 when it has no
/// agent channel or is not running, a 504 when the agent does not answer
/// in time, a 502 when it answers outside the protocol.
pub async fn guest(
    store: &Arc<Store>,
    sup: &Supervisor,
    id: String,
) -> Result<GuestInfo, ServerError> {
    let i = id.clone();
    let server = store.call(move |s| s.get_server(&i)).await?;
    if !server.agent {
        return Err(ServerError::Conflict(format!(
            "server {:?} has no guest agent channel (agent false): create it, or its image, \
             with \"agent\": true",
            server.name
        )));
    }
    if server.status != ServerStatus::Active || sup.vm(&server.id).is_none() {
        return Err(ServerError::Conflict(format!(
            "server {:?} is {}, not running: its guest agent cannot answer",
            server.name,
            server.status.as_str()
        )));
    }
    sup.agents
        .info(&server.id, &sup.agent_socket(&server.id), INFO_TIMEOUT)
        .await
        .map_err(|e| answer_error(&server.name, e))
}

fn answer_error(name: &str, e: AgentError) -> ServerError {
    let msg = format!(
        "server {name:?}: {} (is qemu-guest-agent running in the guest?)",
        crate::util::error_chain(&e)
    );
    if e.is_silence() {
        ServerError::GuestTimeout(msg)
    } else {
        ServerError::GuestBad(msg)
    }
}
