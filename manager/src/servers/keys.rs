//! Typing on a server's keyboard (`POST /v1/servers/{id}/keys`): the
//! request goes as it is to the VMM's `POST /v1/vm/keys`, which knows the
//! key names and presses, holds and releases each on the guest's PS/2
//! keyboard. For boot prompts ("Press any key to boot from CD"), boot
//! menus and installers, so that a CI farm needs no viewer.

use std::sync::Arc;
use std::time::Duration;

use kiln_api::client::ClientError;
use kiln_api::compute::ServerStatus;
use kiln_api::control::{KeysRequest, Request};

use super::ServerError;
use crate::store::Store;
use crate::supervisor::{ControlError, Supervisor};

/// Beyond the typing time itself, how long the VMM may take to answer.
const SLACK: Duration = Duration::from_secs(10);

/// Types `keys` on server `id`'s keyboard; answers once all are typed.
pub async fn send_keys(
    store: &Arc<Store>,
    sup: &Supervisor,
    id: String,
    keys: KeysRequest,
) -> Result<(), ServerError> {
    keys.check().map_err(ServerError::Invalid)?;
    let i = id.clone();
    let server = store.call(move |s| s.get_server(&i)).await?;
    if server.status != ServerStatus::Active || sup.vm(&id).is_none() {
        return Err(ServerError::Conflict(format!(
            "server {id:?} is {}, not running: it has no keyboard to type on",
            server.status.as_str()
        )));
    }
    let t = keys.duration() + SLACK;
    match sup.control(&id, Request::Keys(keys), t).await {
        Ok(_) => Ok(()),
        // The VMM checks the names and sizes: its 400 is the caller's.
        Err(ControlError::Refused(ClientError::Status { status, message }))
            if (400..500).contains(&status) =>
        {
            Err(ServerError::Invalid(message))
        }
        Err(e) => Err(ServerError::Conflict(format!(
            "server {id:?}'s keyboard did not answer: {}",
            crate::util::error_chain(&e)
        ))),
    }
}
