//! The TPM's backend: a running swtpm, reached through its control socket
//! (`swtpm socket --tpm2 --ctrl type=unixio,path=...`, as libvirt starts
//! it). kiln-vmm connects, checks the control commands it needs
//! (`CMD_GET_CAPABILITY`), makes a socket pair and passes one end over
//! the control channel (`CMD_SET_DATAFD`, as QEMU does), sets the
//! TPM's buffer to the CRB's (`CMD_STOP`, `CMD_SET_BUFFERSIZE`) and
//! initialises it (`CMD_INIT`, deleting any volatile state left from a
//! previous run). All of this happens before `/dev/kvm` is opened, at
//! every start; a guest reset re-executes kiln-vmm, so it also
//! re-initialises the TPM there (a real TPM sees `_TPM_Init` on reset).
//!
//! Why the data channel through the control socket rather than a second
//! `--server type=unixio` socket: one path to configure and supervise,
//! the data channel cannot be hijacked by another client of a listening
//! socket, and it is how QEMU and libvirt run swtpm, so the same swtpm
//! command line serves both.
//!
//! At an orderly end ([`Swtpm::shutdown`]) kiln-vmm stores the TPM's
//! volatile state (`CMD_STORE_VOLATILE`: the PCRs the boot extended can
//! be read afterwards by `tpm2_pcrread` against swtpm started with
//! `--flags not-need-init` on the same state directory; the next start
//! deletes it) and then sends `CMD_SHUTDOWN`, after which swtpm exits, as
//! under QEMU. Commands run on the vCPU thread that wrote CTRL_START,
//! with read(2)/write(2) on the socket pair: nothing beyond the vCPU
//! seccomp list; the sockets' time-outs are set here, so a stalled swtpm
//! fails the command instead of hanging the vCPU.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{info, warn};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::devices::tpm::{self, TpmBackend, TpmBackendError, BUFFER_SIZE, HEADER_LEN};

/// Control commands (swtpm's `tpm_ioctl.h`, big-endian on the socket).
const CMD_GET_CAPABILITY: u32 = 1;
const CMD_INIT: u32 = 2;
const CMD_SHUTDOWN: u32 = 3;
const CMD_SET_LOCALITY: u32 = 5;
const CMD_STORE_VOLATILE: u32 = 10;
const CMD_STOP: u32 = 14;
const CMD_SET_DATAFD: u32 = 16;
const CMD_SET_BUFFERSIZE: u32 = 17;

/// Capability bits of the commands kiln-vmm uses.
const CAP_INIT: u64 = 1;
const CAP_SHUTDOWN: u64 = 1 << 1;
const CAP_SET_LOCALITY: u64 = 1 << 3;
const CAP_STORE_VOLATILE: u64 = 1 << 6;
const CAP_STOP: u64 = 1 << 10;
const CAP_SET_DATAFD: u64 = 1 << 12;
const CAP_SET_BUFFERSIZE: u64 = 1 << 13;
const NEEDED: u64 = CAP_INIT
    | CAP_SHUTDOWN
    | CAP_SET_LOCALITY
    | CAP_STORE_VOLATILE
    | CAP_STOP
    | CAP_SET_DATAFD
    | CAP_SET_BUFFERSIZE;

/// `CMD_INIT` flag: forget the volatile state a previous run stored.
const INIT_FLAG_DELETE_VOLATILE: u32 = 1;

/// The largest oversized response read off the channel and dropped.
const MAX_DRAIN: usize = 1 << 16;
/// How long a control command may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TPM command may take (swtpm makes RSA keys in software).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    #[error("cannot connect to swtpm's control socket {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("swtpm did not answer {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("swtpm refused {what}: result {code:#x}")]
    Refused { what: &'static str, code: u32 },
    #[error("swtpm lacks control commands kiln-vmm needs (capabilities {0:#x}, needs {NEEDED:#x}); is it a TPM 2.0 swtpm socket?")]
    Capabilities(u64),
}

struct Channels {
    ctrl: UnixStream,
    data: UnixStream,
    /// The locality swtpm was last told (None: not yet, so the first
    /// command sets it; a previous client may have left another).
    locality: Option<u8>,
}

/// A connection to swtpm; clones share it.
#[derive(Clone)]
pub struct Swtpm {
    inner: Arc<Mutex<Channels>>,
    path: String,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SwtpmError {
    move |source| SwtpmError::Io { what, source }
}

/// Send control command `cmd` with `payload`; read `resp.len()` bytes.
fn control(
    ctrl: &mut UnixStream,
    what: &'static str,
    cmd: u32,
    payload: &[u8],
    resp: &mut [u8],
) -> Result<(), SwtpmError> {
    let mut msg = cmd.to_be_bytes().to_vec();
    msg.extend_from_slice(payload);
    ctrl.write_all(&msg).map_err(io(what))?;
    ctrl.read_exact(resp).map_err(io(what))
}

/// A control command whose answer is a 4-byte result code.
fn control_rc(
    ctrl: &mut UnixStream,
    what: &'static str,
    cmd: u32,
    payload: &[u8],
) -> Result<(), SwtpmError> {
    let mut rc = [0u8; 4];
    control(ctrl, what, cmd, payload, &mut rc)?;
    match u32::from_be_bytes(rc) {
        0 => Ok(()),
        code => Err(SwtpmError::Refused { what, code }),
    }
}

impl Swtpm {
    /// Connect to swtpm's control socket at `path` and initialise the TPM.
    pub fn connect(path: &str) -> Result<Swtpm, SwtpmError> {
        let mut ctrl = UnixStream::connect(path).map_err(|source| SwtpmError::Connect {
            path: path.to_string(),
            source,
        })?;
        let t = Some(CONTROL_TIMEOUT);
        ctrl.set_read_timeout(t)
            .and_then(|()| ctrl.set_write_timeout(t))
            .map_err(io("socket time-outs"))?;
        let mut caps = [0u8; 8];
        control(
            &mut ctrl,
            "CMD_GET_CAPABILITY",
            CMD_GET_CAPABILITY,
            &[],
            &mut caps,
        )?;
        let caps = u64::from_be_bytes(caps);
        if caps & NEEDED != NEEDED {
            return Err(SwtpmError::Capabilities(caps));
        }
        let (data, theirs) = UnixStream::pair().map_err(io("a socket pair"))?;
        let t = Some(COMMAND_TIMEOUT);
        data.set_read_timeout(t)
            .and_then(|()| data.set_write_timeout(t))
            .map_err(io("socket time-outs"))?;
        ctrl.send_with_fd(&CMD_SET_DATAFD.to_be_bytes()[..], theirs.as_raw_fd())
            .map_err(|e| SwtpmError::Io {
                what: "CMD_SET_DATAFD",
                source: std::io::Error::from_raw_os_error(e.errno()),
            })?;
        drop(theirs);
        let mut rc = [0u8; 4];
        ctrl.read_exact(&mut rc).map_err(io("CMD_SET_DATAFD"))?;
        if u32::from_be_bytes(rc) != 0 {
            return Err(SwtpmError::Refused {
                what: "CMD_SET_DATAFD",
                code: u32::from_be_bytes(rc),
            });
        }
        // The buffer size can only change while the TPM is stopped.
        control_rc(&mut ctrl, "CMD_STOP", CMD_STOP, &[])?;
        let mut sizes = [0u8; 16];
        control(
            &mut ctrl,
            "CMD_SET_BUFFERSIZE",
            CMD_SET_BUFFERSIZE,
            &(BUFFER_SIZE as u32).to_be_bytes(),
            &mut sizes,
        )?;
        let code = u32::from_be_bytes(sizes[..4].try_into().expect("4 bytes"));
        if code != 0 {
            return Err(SwtpmError::Refused {
                what: "CMD_SET_BUFFERSIZE",
                code,
            });
        }
        control_rc(
            &mut ctrl,
            "CMD_INIT",
            CMD_INIT,
            &INIT_FLAG_DELETE_VOLATILE.to_be_bytes(),
        )?;
        info!("tpm: swtpm at {path} initialised (CMD_INIT), capabilities {caps:#x}");
        Ok(Swtpm {
            inner: Arc::new(Mutex::new(Channels {
                ctrl,
                data,
                locality: None,
            })),
            path: path.to_string(),
        })
    }

    /// The orderly end: store the volatile state, then shut swtpm down
    /// (it exits). Errors are logged: the VM has ended either way.
    pub fn shutdown(&self) {
        let mut ch = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let r = control_rc(&mut ch.ctrl, "CMD_STORE_VOLATILE", CMD_STORE_VOLATILE, &[])
            .and_then(|()| control_rc(&mut ch.ctrl, "CMD_SHUTDOWN", CMD_SHUTDOWN, &[]));
        match r {
            Ok(()) => info!("tpm: swtpm at {} shut down (CMD_SHUTDOWN)", self.path),
            Err(e) => warn!("tpm: {e}"),
        }
    }

    /// Before a reset's re-execution: stop the TPM (swtpm stays up; the
    /// new process initialises it again).
    pub fn stop(&self) {
        let mut ch = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match control_rc(&mut ch.ctrl, "CMD_STOP", CMD_STOP, &[]) {
            Ok(()) => info!("tpm: swtpm stopped for the reset (CMD_STOP)"),
            Err(e) => warn!("tpm: {e}"),
        }
    }
}

impl TpmBackend for Swtpm {
    fn execute(
        &mut self,
        locality: u8,
        cmd: &[u8],
        resp: &mut [u8],
    ) -> Result<usize, TpmBackendError> {
        let mut ch = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if ch.locality != Some(locality) {
            let mut loc = [0u8; 4];
            loc[0] = locality;
            control_rc(&mut ch.ctrl, "CMD_SET_LOCALITY", CMD_SET_LOCALITY, &loc)
                .map_err(|e| TpmBackendError::Protocol(e.to_string()))?;
            log::debug!("tpm: locality {locality} (CMD_SET_LOCALITY)");
            ch.locality = Some(locality);
        }
        ch.data.write_all(cmd)?;
        let mut header = [0u8; HEADER_LEN];
        ch.data.read_exact(&mut header)?;
        let size = tpm::header_size(&header).unwrap_or(0);
        if size < HEADER_LEN || size > resp.len() {
            // Read what swtpm sends of it, so the next response starts
            // where it should (swtpm keeps to the buffer size it was
            // given; this is for a misbehaving peer).
            if size > HEADER_LEN && size <= MAX_DRAIN {
                let mut rest = vec![0u8; size - HEADER_LEN];
                ch.data.read_exact(&mut rest)?;
            }
            return Err(TpmBackendError::Protocol(format!(
                "a response of {size} bytes (the buffer holds {})",
                resp.len()
            )));
        }
        resp[..HEADER_LEN].copy_from_slice(&header);
        ch.data.read_exact(&mut resp[HEADER_LEN..size])?;
        Ok(size)
    }
}
