//! One session with a guest agent: connect to the unix socket, resync
//! with `guest-sync-delimited`, then one command and its answer at a time.
//!
//! The wire is QEMU's guest agent protocol: JSON objects, one per line
//! each way. Nothing the guest sends is trusted: every read and write
//! runs under the session's deadline, an answer line is at most
//! [`MAX_LINE`] bytes, and a resync reads at most [`MAX_DISCARD`] bytes
//! of leftovers (an answer to an earlier client, a rebooted guest's
//! noise) before it gives up.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::{timeout_at, Instant};

use super::AgentError;

/// The longest answer line kilnd reads (a guest with many interfaces and
/// addresses stays far below it).
pub const MAX_LINE: usize = 256 * 1024;

/// The most bytes a resync throws away before it gives up on the guest.
pub const MAX_DISCARD: usize = 1024 * 1024;

/// The sentinel byte: sent first to make the agent drop any partial
/// input, and sent by the agent before its answer to
/// `guest-sync-delimited`.
const SENTINEL: u8 = 0xFF;

/// How long to wait before connecting again to a full listener.
const RETRY: Duration = Duration::from_millis(20);

pub struct Session {
    stream: UnixStream,
    buf: Vec<u8>,
    deadline: Instant,
}

impl Session {
    /// Connects to the agent's socket and resyncs, all before `deadline`.
    pub async fn open(path: &Path, deadline: Instant) -> Result<Session, AgentError> {
        // The listener serves one client at a time: while its backlog is
        // full (earlier clients not yet taken) connect says EAGAIN; try
        // again until the deadline.
        let stream = loop {
            match timeout_at(deadline, UnixStream::connect(path)).await {
                Ok(Ok(s)) => break s,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() + RETRY >= deadline {
                        return Err(AgentError::Timeout("connecting (its backlog is full)"));
                    }
                    tokio::time::sleep(RETRY).await;
                }
                Ok(Err(e)) => return Err(AgentError::Connect(e)),
                Err(_) => return Err(AgentError::Timeout("connecting")),
            }
        };
        let mut s = Session {
            stream,
            buf: Vec::new(),
            deadline,
        };
        s.sync().await?;
        Ok(s)
    }

    /// `guest-sync-delimited` with a fresh random id: everything up to the
    /// sentinel is discarded, and so is any delimited answer whose id is
    /// not ours (a stale sync of an earlier client).
    async fn sync(&mut self) -> Result<(), AgentError> {
        let id = fresh_id();
        let mut line = vec![SENTINEL];
        line.extend_from_slice(
            format!(r#"{{"execute":"guest-sync-delimited","arguments":{{"id":{id}}}}}"#).as_bytes(),
        );
        line.push(b'\n');
        self.write(&line).await?;
        let mut discarded = 0usize;
        loop {
            // Up to and including the next sentinel.
            loop {
                if let Some(i) = self.buf.iter().position(|&b| b == SENTINEL) {
                    discarded += i + 1;
                    self.buf.drain(..=i);
                    break;
                }
                discarded += self.buf.len();
                self.buf.clear();
                if discarded > MAX_DISCARD {
                    return Err(AgentError::Flood(discarded));
                }
                self.fill("resyncing").await?;
            }
            let answer = self.read_line("resyncing").await?;
            if serde_json::from_slice::<Value>(&answer)
                .is_ok_and(|v| v.get("return").and_then(Value::as_u64) == Some(id))
            {
                return Ok(());
            }
            discarded += answer.len();
            if discarded > MAX_DISCARD {
                return Err(AgentError::Flood(discarded));
            }
        }
    }

    /// Runs `command` (with `arguments` when given) and returns its
    /// `return` value; an `error` answer is [`AgentError::Guest`].
    pub async fn call(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, AgentError> {
        self.send(command, arguments).await?;
        let line = self.read_line(command_name(command)).await?;
        let v: Value = serde_json::from_slice(&line)
            .map_err(|e| AgentError::Garbage(format!("{command}: answer is not JSON: {e}")))?;
        if let Some(r) = v.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = v.get("error") {
            return Err(AgentError::Guest {
                command: command.to_owned(),
                class: e.get("class").and_then(Value::as_str).unwrap_or("").into(),
                desc: e.get("desc").and_then(Value::as_str).unwrap_or("").into(),
            });
        }
        Err(AgentError::Garbage(format!(
            "{command}: answer has neither \"return\" nor \"error\""
        )))
    }

    /// Moves the session's deadline (a command that may take longer
    /// than the sync before it).
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// Sends `command` without waiting for an answer.
    pub async fn send(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<(), AgentError> {
        let mut req = serde_json::json!({ "execute": command });
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        let mut line = serde_json::to_vec(&req).expect("a JSON value serializes");
        line.push(b'\n');
        self.write(&line).await
    }

    /// Waits up to `t` (within the deadline) for the agent to answer or
    /// close: `guest-shutdown` normally does neither, as the guest goes
    /// down. An `error` answer is returned; silence, a close or any other
    /// answer is `Ok`.
    pub async fn linger(&mut self, command: &str, t: Duration) -> Result<(), AgentError> {
        let until = (Instant::now() + t).min(self.deadline);
        let saved = std::mem::replace(&mut self.deadline, until);
        let r = self.read_line(command_name(command)).await;
        self.deadline = saved;
        match r {
            Ok(line) => match serde_json::from_slice::<Value>(&line) {
                Ok(v) if v.get("error").is_some() => Err(AgentError::Guest {
                    command: command.to_owned(),
                    class: v["error"]["class"].as_str().unwrap_or("").into(),
                    desc: v["error"]["desc"].as_str().unwrap_or("").into(),
                }),
                _ => Ok(()),
            },
            Err(AgentError::Timeout(_) | AgentError::Closed(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), AgentError> {
        match timeout_at(self.deadline, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AgentError::Io(e)),
            Err(_) => Err(AgentError::Timeout("sending")),
        }
    }

    /// Reads more bytes into the buffer.
    async fn fill(&mut self, what: &'static str) -> Result<(), AgentError> {
        let mut chunk = [0u8; 8192];
        match timeout_at(self.deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) => Err(AgentError::Closed(what)),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Ok(Err(e)) => Err(AgentError::Io(e)),
            Err(_) => Err(AgentError::Timeout(what)),
        }
    }

    /// The next line (without its newline), at most [`MAX_LINE`] bytes.
    async fn read_line(&mut self, what: &'static str) -> Result<Vec<u8>, AgentError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).take(i).collect();
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(AgentError::TooLong(MAX_LINE));
            }
            self.fill(what).await?;
        }
    }
}

/// A time-out's "while ..." for the commands kilnd sends (a `'static`
/// name, so that errors stay cheap).
fn command_name(command: &str) -> &'static str {
    match command {
        "guest-ping" => "waiting for guest-ping",
        "guest-info" => "waiting for guest-info",
        "guest-get-osinfo" => "waiting for guest-get-osinfo",
        "guest-get-host-name" => "waiting for guest-get-host-name",
        "guest-network-get-interfaces" => "waiting for guest-network-get-interfaces",
        "guest-shutdown" => "waiting for guest-shutdown",
        _ => "waiting for an answer",
    }
}

/// A sync id no earlier client used: random, and below 2^53 so that any
/// JSON parser on the guest side keeps it exact.
fn fresh_id() -> u64 {
    let u = uuid::Uuid::new_v4().as_u128();
    (u as u64) & ((1 << 53) - 1)
}
