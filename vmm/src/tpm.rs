//! The TPM's backend: a running swtpm, reached through its control socket
//! (`swtpm socket --tpm2 --ctrl type=unixio,path=...`, as libvirt starts
//! it). kiln-vmm connects, checks the control commands it needs
//! (`CMD_GET_CAPABILITY`), makes a socket pair and passes one end over
//! the control channel (`CMD_SET_DATAFD`, as QEMU does), sets the
//! TPM's buffer to the CRB's (`CMD_STOP`, `CMD_SET_BUFFERSIZE`) and
//! initialises it (`CMD_INIT`). All of this happens before `/dev/kvm` is
//! opened, at every start; a guest reset re-executes kiln-vmm, so it also
//! re-initialises the TPM there (a real TPM sees `_TPM_Init` on reset).
//!
//! Why the data channel through the control socket rather than a second
//! `--server type=unixio` socket: one path to configure and supervise,
//! the data channel cannot be hijacked by another client of a listening
//! socket, and it is how QEMU and libvirt run swtpm, so the same swtpm
//! command line serves both.
//!
//! Nothing volatile is ever stored: kiln-vmm never sends
//! `CMD_STORE_VOLATILE`, because swtpm's `CMD_INIT` loads a
//! `tpm2-00.volatilestate` it finds *before* honouring
//! `PTM_INIT_FLAG_DELETE_VOLATILE` (the flag deletes the file after the
//! load; it is meant for a migration's incoming state), so a stored one
//! would resume the last run's started TPM at the next boot, whose
//! `TPM2_Startup(CLEAR)` then fails with `TPM_RC_INITIALIZE`. The flag
//! stays, so that a file from elsewhere is resumed at most once.
//!
//! The TPM ends with its own orderly shutdown instead, sent on the data
//! channel unless the guest sent no command (its TPM was never started)
//! or its last command was a `TPM2_Shutdown` (the guest chose):
//! - At an orderly end ([`Swtpm::shutdown`]), `TPM2_Shutdown(STATE)`, as
//!   swtpm 0.8 and later send themselves at `CMD_SHUTDOWN`, falling back
//!   to CLEAR if the TPM refuses it. The TPM writes its orderly state to
//!   its NV, which swtpm keeps in `tpm2-00.permall`, including the PCRs
//!   with the stateSave attribute (libtpms' `s_initAttributes`, the PC
//!   Client profile: PCRs 0-15; 16-23 are not saved). A later
//!   `TPM2_Startup(STATE)` (a resume; `tpm2_startup` without `-c` on the
//!   stopped state) reads the PCR values the guest left; the next boot's
//!   `TPM2_Startup(CLEAR)` is a TPM Restart (libtpms `SU_RESTART`): every
//!   PCR starts fresh, restartCount rather than resetCount counts it.
//! - Before a reset's re-execution ([`Swtpm::stop`]),
//!   `TPM2_Shutdown(CLEAR)`, as an OS sends before it reboots: a reboot
//!   is a TPM Reset (resetCount counts it; the previous boot's saved
//!   contexts die), nothing reads the state in between, and an orderly
//!   shutdown rather than none spares the next boot a disorderly start.
//!
//! Then `CMD_SHUTDOWN` (swtpm exits, as under QEMU) or `CMD_STOP`.
//! Commands run on the vCPU thread that wrote CTRL_START, with
//! read(2)/write(2) on the socket pair: nothing beyond the vCPU seccomp
//! list; the sockets' time-outs are set here, so a stalled swtpm fails
//! the command instead of hanging the vCPU.

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
const CMD_STOP: u32 = 14;
const CMD_SET_DATAFD: u32 = 16;
const CMD_SET_BUFFERSIZE: u32 = 17;

/// Capability bits of the commands kiln-vmm uses.
const CAP_INIT: u64 = 1;
const CAP_SHUTDOWN: u64 = 1 << 1;
const CAP_SET_LOCALITY: u64 = 1 << 3;
const CAP_STOP: u64 = 1 << 10;
const CAP_SET_DATAFD: u64 = 1 << 12;
const CAP_SET_BUFFERSIZE: u64 = 1 << 13;
const NEEDED: u64 =
    CAP_INIT | CAP_SHUTDOWN | CAP_SET_LOCALITY | CAP_STOP | CAP_SET_DATAFD | CAP_SET_BUFFERSIZE;

/// `CMD_INIT` flag: delete a volatile state file once it is loaded
/// (kiln-vmm stores none; see the module's documentation).
const INIT_FLAG_DELETE_VOLATILE: u32 = 1;

/// `TPM2_CC_Shutdown`.
const CC_SHUTDOWN: u32 = 0x145;
/// `TPM_SU_CLEAR` and `TPM_SU_STATE`, `TPM2_Shutdown`'s parameter.
const SU_CLEAR: u16 = 0;
const SU_STATE: u16 = 1;

/// `TPM2_Shutdown(su)`: tag `TPM_ST_NO_SESSIONS`, size 12.
fn shutdown_command(su: u16) -> [u8; 12] {
    let [hi, lo] = su.to_be_bytes();
    [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x45, hi, lo]
}

fn su_name(su: u16) -> &'static str {
    if su == SU_STATE {
        "STATE"
    } else {
        "CLEAR"
    }
}

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
    /// The command code of the guest's last command (None: none yet).
    last_command: Option<u32>,
}

impl Channels {
    /// `TPM2_Shutdown(su)`, unless the guest sent no command (its TPM
    /// was never started) or its last was a `TPM2_Shutdown`; a refused
    /// STATE falls back to CLEAR (libtpms refuses STATE after a PCR
    /// allocation change). Errors are logged: the TPM ends either way.
    fn orderly_shutdown(&mut self, su: u16) {
        match self.last_command {
            None | Some(CC_SHUTDOWN) => return,
            Some(_) => {}
        }
        self.last_command = Some(CC_SHUTDOWN);
        if matches!(self.send_shutdown(su), Some(rc) if rc != 0 && su == SU_STATE) {
            self.send_shutdown(SU_CLEAR);
        }
    }

    /// One `TPM2_Shutdown(su)` on the data channel; its response code
    /// (None: swtpm did not answer).
    fn send_shutdown(&mut self, su: u16) -> Option<u32> {
        let name = su_name(su);
        let mut resp = [0u8; HEADER_LEN];
        let r = self
            .data
            .write_all(&shutdown_command(su))
            .and_then(|()| self.data.read_exact(&mut resp));
        match r {
            Ok(()) => {
                // A response to it is a bare header, success or error,
                // so the channel stays in step for a CLEAR after a
                // refused STATE.
                let rc = u32::from_be_bytes(resp[6..10].try_into().expect("4 bytes"));
                info!("tpm: TPM2_Shutdown({name}) sent, response code {rc:#x}");
                Some(rc)
            }
            Err(e) => {
                warn!("tpm: TPM2_Shutdown({name}): {e}");
                None
            }
        }
    }
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
                last_command: None,
            })),
            path: path.to_string(),
        })
    }

    /// The orderly end: the TPM's own `TPM2_Shutdown(STATE)` (its PCRs
    /// 0-15 kept for a resume), then swtpm's (it exits). Nothing volatile
    /// is stored. Errors are logged: the VM has ended either way.
    pub fn shutdown(&self) {
        let mut ch = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ch.orderly_shutdown(SU_STATE);
        match control_rc(&mut ch.ctrl, "CMD_SHUTDOWN", CMD_SHUTDOWN, &[]) {
            Ok(()) => info!("tpm: swtpm at {} shut down (CMD_SHUTDOWN)", self.path),
            Err(e) => warn!("tpm: {e}"),
        }
    }

    /// Before a reset's re-execution: `TPM2_Shutdown(CLEAR)` (a reboot is
    /// a TPM Reset), then stop the TPM (swtpm stays up; the new process
    /// initialises it again).
    pub fn stop(&self) {
        let mut ch = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ch.orderly_shutdown(SU_CLEAR);
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
        ch.last_command = cmd
            .get(6..10)
            .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    #[test]
    fn shutdown_commands_carry_their_type() {
        let state = shutdown_command(SU_STATE);
        assert_eq!(tpm::header_size(&state[..HEADER_LEN]), Some(12));
        assert_eq!(
            u32::from_be_bytes(state[6..10].try_into().unwrap()),
            CC_SHUTDOWN
        );
        assert_eq!(&state[10..], &[0, 1]);
        assert_eq!(&shutdown_command(SU_CLEAR)[10..], &[0, 0]);
        assert_eq!((su_name(SU_STATE), su_name(SU_CLEAR)), ("STATE", "CLEAR"));
    }

    /// A real swtpm (Debian's, as kilnd starts it: control socket only)
    /// on `dir/state`; killed when dropped.
    struct Tpm {
        child: Child,
        ctrl: String,
    }

    impl Tpm {
        fn start(dir: &Path) -> Tpm {
            let state = dir.join("state");
            std::fs::create_dir_all(&state).unwrap();
            let ctrl = dir.join("ctrl.sock");
            let _ = std::fs::remove_file(&ctrl);
            let child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--ctrl"])
                .arg(format!("type=unixio,path={}", ctrl.display()))
                .arg("--tpmstate")
                .arg(format!("dir={}", state.display()))
                .stderr(Stdio::null())
                .spawn()
                .expect("swtpm (scripts/setup.sh installs it)");
            let t0 = std::time::Instant::now();
            while !ctrl.exists() {
                assert!(t0.elapsed() < Duration::from_secs(10), "no {ctrl:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Tpm {
                child,
                ctrl: ctrl.display().to_string(),
            }
        }
    }

    impl Drop for Tpm {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Runs `cmd` on `tpm` as the CRB device would (locality 0): the
    /// response's code and bytes.
    fn run(tpm: &mut Swtpm, cmd: &[u8]) -> (u32, Vec<u8>) {
        let mut resp = vec![0u8; BUFFER_SIZE];
        let n = tpm.execute(0, cmd, &mut resp).expect("a response");
        resp.truncate(n);
        (u32::from_be_bytes(resp[6..10].try_into().unwrap()), resp)
    }

    const STARTUP_CLEAR: [u8; 12] = [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0];
    const STARTUP_STATE: [u8; 12] = [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 1];
    /// TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES, TPM_PT_STARTUP_CLEAR, 1).
    const GET_STARTUP_CLEAR: [u8; 22] = [
        0x80, 1, 0, 0, 0, 22, 0, 0, 1, 0x7a, 0, 0, 0, 6, 0, 0, 2, 1, 0, 0, 0, 1,
    ];
    /// TPM2_PCR_Allocate(TPM_RH_PLATFORM, empty password; SHA-256: all 24).
    const PCR_ALLOCATE: [u8; 37] = [
        0x80, 2, 0, 0, 0, 37, 0, 0, 1, 0x2b, 0x40, 0, 0, 0x0c, 0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0,
        0, 0, 0, 0, 0, 1, 0, 0x0b, 3, 0xff, 0xff, 0xff,
    ];

    /// One boot of the TPM at `dir`: Startup(CLEAR), `cmds`, then
    /// kiln-vmm's orderly end; then, on a new swtpm, whether a resume
    /// (Startup(STATE)) succeeds and, after Startup(CLEAR) if it did not,
    /// whether the TPM's start followed an orderly shutdown.
    fn boot_then_next(dir: &Path, cmds: &[&[u8]]) -> (u32, bool) {
        let tpm = Tpm::start(dir);
        let mut sw = Swtpm::connect(&tpm.ctrl).unwrap();
        assert_eq!(run(&mut sw, &STARTUP_CLEAR).0, 0);
        for cmd in cmds {
            assert_eq!(run(&mut sw, cmd).0, 0, "{cmd:02x?}");
        }
        sw.shutdown();
        drop(tpm);
        let tpm = Tpm::start(dir);
        let mut sw = Swtpm::connect(&tpm.ctrl).unwrap();
        let resume = run(&mut sw, &STARTUP_STATE).0;
        if resume != 0 {
            assert_eq!(run(&mut sw, &STARTUP_CLEAR).0, 0);
        }
        let (rc, resp) = run(&mut sw, &GET_STARTUP_CLEAR);
        assert_eq!(rc, 0);
        // moreData, capability, count, then the property and its value.
        assert_eq!(&resp[15..23], &[0, 0, 0, 1, 0, 0, 2, 1], "{resp:02x?}");
        let orderly = resp[23] & 0x80 != 0;
        sw.shutdown();
        (resume, orderly)
    }

    #[test]
    fn a_refused_state_shutdown_falls_back_to_clear_on_a_real_swtpm() {
        let dir = std::env::temp_dir().join(format!("kiln-swtpm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Shutdown(STATE) saved the TPM's state: the resume succeeds.
        assert_eq!(boot_then_next(&dir, &[]), (0, true));
        // After TPM2_PCR_Allocate the TPM refuses STATE (TPM_RC_TYPE);
        // kiln-vmm's CLEAR still makes the end orderly: no resume
        // (TPM_RC_VALUE for the parameter), but an orderly start.
        assert_eq!(boot_then_next(&dir, &[&PCR_ALLOCATE]), (0x1c4, true));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
