//! A server's screen: the display's picture now (the VMM's
//! `GET /v1/vm/screenshot`, a PNG), and the last one kept when it ended
//! on a guest fault (written by kiln-vmm), when kilnd ended it on a
//! time-out or when its TTL ended (`last-screenshot.png` in its directory,
//! moved beside its archived console log, `ID.png`, when its files go:
//! kept as long as that log).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_api::compute::{Display, ServerStatus};
use kiln_api::control::Request;

use super::ServerError;
use crate::store::{Store, StoreError};
use crate::supervisor::Supervisor;

use crate::supervisor::LAST_SCREENSHOT as LAST;

/// How long a picture may take (the VMM encodes it on its control thread).
const TIMEOUT: Duration = Duration::from_secs(10);

/// The PNG the server's display shows now; `last`: the one kept when it
/// last ended on a fault, a time-out or its TTL, also after it is deleted.
pub async fn screenshot(
    store: &Arc<Store>,
    sup: &Supervisor,
    id: String,
    last: bool,
) -> Result<Vec<u8>, ServerError> {
    let i = id.clone();
    let server = match store.call(move |s| s.get_server(&i)).await {
        Ok(s) => Some(s),
        Err(StoreError::NotFound { .. }) if last && uuid::Uuid::parse_str(&id).is_ok() => None,
        Err(e) => return Err(e.into()),
    };
    if last {
        if let Some(s) = server.as_ref().filter(|s| s.display == Display::None) {
            return Err(ServerError::Conflict(format!(
                "server {id:?} has no display (display \"none\"): no screenshot is kept of it; \
                 its console log is GET /v1/servers/{}/console",
                s.id
            )));
        }
        let path = match &server {
            Some(_) => sup.server_dir(&id).join(LAST),
            None => archived(sup, &id),
        };
        return match tokio::fs::read(&path).await {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ServerError::NotFound(format!(
                    "server {id:?} has no kept screenshot (one is kept when it ends on a guest \
                     fault, when kilnd ends it on a ready or stop time-out, or when its TTL \
                     ends)"
                )))
            }
            Err(e) => Err(ServerError::Internal(format!("{}: {e}", path.display()))),
        };
    }
    let server = server.expect("found unless last");
    if server.display == Display::None {
        return Err(ServerError::Conflict(format!(
            "server {id:?} has no display (display \"none\"): create it with display \"vga\""
        )));
    }
    if !matches!(server.status, ServerStatus::Active | ServerStatus::Paused)
        || sup.vm(&id).is_none()
    {
        return Err(ServerError::Conflict(format!(
            "server {id:?} is {}, not running: it has no picture",
            server.status.as_str()
        )));
    }
    sup.control(&id, Request::Screenshot, TIMEOUT)
        .await
        .map_err(|e| {
            ServerError::Conflict(format!(
                "server {id:?}'s display did not answer: {}",
                crate::util::error_chain(&e)
            ))
        })
}

/// Keeps the picture of a server with a display that is about to end
/// (its TTL ran out) as `last-screenshot.png`; a VMM that does not answer
/// leaves nothing (logged).
pub async fn keep_last(store: &Arc<Store>, sup: &Supervisor, id: &str) {
    let i = id.to_string();
    let Ok(server) = store.call(move |s| s.get_server(&i)).await else {
        return;
    };
    if server.display == Display::None || sup.vm(id).is_none() {
        return;
    }
    sup.keep_screenshot(id, "its TTL ended", TIMEOUT).await;
}

/// Where a deleted server's kept picture is: beside its console log.
pub fn archived(sup: &Supervisor, id: &str) -> PathBuf {
    sup.archived_console(id).with_extension("png")
}
