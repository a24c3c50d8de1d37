//! Where the serial console's bytes go and come from: an append-only log
//! file, the VMM's own stdout/stdin, and any number of clients attached to
//! the console unix socket (`--console-socket`; `socat - UNIX-CONNECT:PATH`
//! attaches a terminal).
//!
//! Output is fanned out by [`ConsoleOutput`], which the UART writes to from
//! a vCPU thread. A slow client never stalls the guest: its socket is
//! non-blocking and bytes it cannot take are dropped for it alone; a client
//! that errors is dropped.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Attached console clients, shared by the output side (vCPU thread) and
/// the control loop (which accepts them and reads their input).
pub type Clients = Arc<Mutex<Vec<UnixStream>>>;

pub struct ConsoleOutput {
    log: Option<File>,
    stdout: bool,
    clients: Clients,
}

impl ConsoleOutput {
    pub fn new(log: Option<&Path>, stdout: bool, clients: Clients) -> io::Result<Self> {
        let log = match log {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        Ok(ConsoleOutput {
            log,
            stdout,
            clients,
        })
    }
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The log is the record of the VM: its errors are reported; the
        // interactive sinks are best effort.
        if let Some(log) = &mut self.log {
            log.write_all(buf)?;
        }
        if self.stdout {
            let mut out = io::stdout().lock();
            let _ = out.write_all(buf).and_then(|_| out.flush());
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain_mut(|c| match c.write(buf) {
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(log) = &mut self.log {
            log.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn output_reaches_log_and_clients_and_drops_dead_clients() {
        let dir = std::env::temp_dir().join(format!("kiln-console-{}", std::process::id()));
        let clients: Clients = Arc::default();
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, b_peer) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        clients.lock().unwrap().extend([a, b]);
        drop(b_peer);
        let mut out = ConsoleOutput::new(Some(&dir), false, clients.clone()).unwrap();
        out.write_all(b"hello\n").unwrap();
        out.write_all(b"again\n").unwrap();
        assert_eq!(std::fs::read_to_string(&dir).unwrap(), "hello\nagain\n");
        let mut got = [0u8; 12];
        a_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello\nagain\n");
        assert_eq!(
            clients.lock().unwrap().len(),
            1,
            "the closed client is dropped"
        );
        std::fs::remove_file(&dir).unwrap();
    }
}
