//! kilnd's client of QEMU's guest agent (`qemu-ga`, in Linux guests and
//! in virtio-win), reached through the unix socket kiln-vmm serves for a
//! server's `org.qemu.guest_agent.0` port (`agent.sock` in its directory).
//!
//! - [`conn`]: one session: connect, resync (`guest-sync-delimited`
//!   with a fresh id), then one command at a time; every read and write
//!   under the session's deadline, answer lines bounded.
//! - [`commands`]: the commands kilnd sends and what their answers become
//!   ([`kiln_api::compute::GuestInfo`]).
//! - [`Agents`] (here): one session at a time per server (a per-server
//!   lock, waited for within the same deadline), so a slow guest only
//!   ever delays calls to itself.
//!
//! A guest that stalls, answers half a line, floods or sends non-JSON
//! costs its caller at most the deadline and never blocks another
//! server's call or kilnd.

pub mod commands;
pub mod conn;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_api::compute::GuestInfo;
use thiserror::Error;
use tokio::time::Instant;

pub use conn::Session;

/// The socket file in a server's directory.
pub const SOCKET: &str = "agent.sock";

/// How long `GET .../guest` waits for the agent, all four commands
/// together.
pub const INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `guest-ping` may take before stop gives up on the agent and
/// presses the ACPI power button (also each readiness poll's bound).
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum AgentError {
    /// Nobody listens on the socket (no channel, or the VMM is gone).
    #[error("cannot connect to the guest agent's socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("the guest agent did not answer in time ({0})")]
    Timeout(&'static str),
    #[error("the guest agent closed the channel ({0})")]
    Closed(&'static str),
    #[error("the guest agent sent a line longer than {0} bytes")]
    TooLong(usize),
    #[error("the guest agent sent {0} bytes without a matching guest-sync-delimited answer")]
    Flood(usize),
    #[error("the guest agent's answer is not the protocol: {0}")]
    Garbage(String),
    #[error("the guest agent refused {command}: {class}: {desc}")]
    Guest {
        command: String,
        class: String,
        desc: String,
    },
    #[error("guest agent channel: {0}")]
    Io(#[source] std::io::Error),
}

impl AgentError {
    /// The agent did not answer (as opposed to answering wrongly).
    pub fn is_silence(&self) -> bool {
        matches!(self, AgentError::Connect(_) | AgentError::Timeout(_))
    }
}

/// The per-server locks: one agent session at a time per server.
#[derive(Default)]
pub struct Agents {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Agents {
    fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// Drops server `id`'s lock (it was deleted).
    pub fn forget(&self, id: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Takes `id`'s lock and opens a session on `path`, both before
    /// `deadline`.
    async fn session(
        &self,
        id: &str,
        path: &Path,
        deadline: Instant,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, Session), AgentError> {
        let guard = tokio::time::timeout_at(deadline, self.lock_of(id).lock_owned())
            .await
            .map_err(|_| AgentError::Timeout("waiting for another call to this guest"))?;
        Ok((guard, Session::open(path, deadline).await?))
    }

    /// `guest-ping`, within `t`.
    pub async fn ping(&self, id: &str, path: &Path, t: Duration) -> Result<(), AgentError> {
        let (_g, mut s) = self.session(id, path, Instant::now() + t).await?;
        s.call("guest-ping", None).await.map(drop)
    }

    /// What the guest says about itself, within `t`.
    pub async fn info(&self, id: &str, path: &Path, t: Duration) -> Result<GuestInfo, AgentError> {
        let (_g, mut s) = self.session(id, path, Instant::now() + t).await?;
        commands::guest_info(&mut s).await
    }

    /// `guest-ping` within `ping`, then `guest-shutdown` (`powerdown`),
    /// waiting up to `linger` for an error answer. `Ok` once sent: the
    /// agent normally never answers it, and the channel closing or
    /// silence means the guest is on its way down.
    pub async fn shutdown(
        &self,
        id: &str,
        path: &Path,
        ping: Duration,
        linger: Duration,
    ) -> Result<(), AgentError> {
        let (_g, mut s) = self.session(id, path, Instant::now() + ping).await?;
        s.call("guest-ping", None).await?;
        commands::shutdown(&mut s, linger).await
    }
}

#[cfg(test)]
mod tests;
