//! A TPM 2.0 with the Command Response Buffer (CRB) interface of the TCG
//! PC Client Platform TPM Profile (PTP), laid out as QEMU's `tpm-crb`:
//! one 4 KiB MMIO page at [`CRB_BASE`] (locality 0 only) holding the
//! registers in its first 0x80 bytes and the command/response buffer in
//! the rest.
//!
//! ```text
//! 0x00 LOC_STATE   ro  tpmRegValidSts(7) activeLocality(2..5) locAssigned(1)
//! 0x08 LOC_CTRL    wo  requestAccess(0) relinquish(1) seize(2) resetEst(3)
//! 0x0C LOC_STS     ro  granted(0) beenSeized(1)
//! 0x30 INTF_ID     ro  64 bits: CRB, version 1, CapCRB, VID:DID 1014:0001
//! 0x38 CTRL_EXT    ro  0
//! 0x40 CTRL_REQ    rw  cmdReady(0) goIdle(1)
//! 0x44 CTRL_STS    ro  tpmSts (fatal error)(0) tpmIdle(1)
//! 0x48 CTRL_CANCEL rw  1: cancel
//! 0x4C CTRL_START  rw  1: execute the command in the buffer; 0 when done
//! 0x58 CTRL_CMD_SIZE, 0x5C CTRL_CMD_LADDR, 0x60 CTRL_CMD_HADDR,
//! 0x64 CTRL_RSP_SIZE, 0x68 CTRL_RSP_ADDR (64 bits)   ro  the buffer
//! 0x80 .. 0x1000   the command/response buffer (3968 bytes)
//! ```
//!
//! Any access width at any offset works: a write merges its bytes into the
//! 32-bit registers it covers and each register acts on its new value;
//! reads of write-only and reserved bytes return 0. A command runs
//! synchronously on the vCPU thread that wrote CTRL_START, through a
//! [`TpmBackend`] (swtpm, `crate::tpm`); a command whose header size does
//! not fit the buffer, or a backend that fails, gets a TPM error response
//! in the buffer and never reaches past the window.

#[cfg(test)]
mod tests;

use crate::devices::bus::BusDevice;

/// Guest-physical base of the CRB page (the PTP's locality 0 address).
pub const CRB_BASE: u64 = 0xfed4_0000;
/// Size of the MMIO window: registers and buffer.
pub const CRB_SIZE: u64 = 0x1000;
/// Guest-physical address of the control area (CTRL_REQ), which the ACPI
/// TPM2 table names.
pub const CRB_CONTROL_AREA: u64 = CRB_BASE + CTRL_REQ as u64;
/// Where the command/response buffer starts in the window.
pub const DATA_BUFFER: usize = 0x80;
/// Size of the command/response buffer (the backend's buffer size too).
pub const BUFFER_SIZE: usize = CRB_SIZE as usize - DATA_BUFFER;

const LOC_STATE: usize = 0x00;
const LOC_CTRL: usize = 0x08;
const LOC_STS: usize = 0x0c;
const INTF_ID: usize = 0x30;
const INTF_ID_HI: usize = 0x34;
const CTRL_REQ: usize = 0x40;
const CTRL_STS: usize = 0x44;
const CTRL_CANCEL: usize = 0x48;
const CTRL_START: usize = 0x4c;
const CTRL_CMD_SIZE: usize = 0x58;
const CTRL_CMD_LADDR: usize = 0x5c;
const CTRL_CMD_HADDR: usize = 0x60;
const CTRL_RSP_SIZE: usize = 0x64;
const CTRL_RSP_ADDR: usize = 0x68;
const CTRL_RSP_ADDR_HI: usize = 0x6c;

const LOC_STATE_ASSIGNED: u32 = 1 << 1;
const LOC_STATE_REG_VALID: u32 = 1 << 7;
const LOC_CTRL_REQUEST_ACCESS: u32 = 1 << 0;
const LOC_CTRL_RELINQUISH: u32 = 1 << 1;
const LOC_STS_GRANTED: u32 = 1 << 0;
const CTRL_REQ_CMD_READY: u32 = 1 << 0;
const CTRL_REQ_GO_IDLE: u32 = 1 << 1;
const CTRL_STS_FATAL: u32 = 1 << 0;
const CTRL_STS_IDLE: u32 = 1 << 1;

/// INTF_ID: InterfaceType 1 (CRB), InterfaceVersion 1 (bits 4..8),
/// CapDataXferSizeSupport 3 (64 bytes, bits 11..13), CapCRB (bit 14),
/// InterfaceSelector 1 (CRB, bits 17..19); no idle bypass, no FIFO, no
/// other localities.
const INTF_ID_LO: u32 = 1 | (1 << 4) | (3 << 11) | (1 << 14) | (1 << 17);
/// Vendor 0x1014 (IBM, as swtpm's), device 0x0001.
const INTF_ID_VID_DID: u32 = 0x1014 | (0x0001 << 16);

/// TPM2 response codes the device makes itself.
pub const TPM_RC_FAILURE: u32 = 0x101;
pub const TPM_RC_COMMAND_SIZE: u32 = 0x142;
/// A TPM2 command or response header: tag (2), size (4), code (4).
pub const HEADER_LEN: usize = 10;

/// Why a backend could not run a command.
#[derive(Debug, thiserror::Error)]
pub enum TpmBackendError {
    #[error("the TPM backend's I/O failed")]
    Io(#[from] std::io::Error),
    #[error("the TPM backend answered with {0}")]
    Protocol(String),
}

/// Runs TPM commands (swtpm's data channel).
pub trait TpmBackend: Send {
    /// Run `cmd` at `locality`; write the response into `resp` and return
    /// its length. A response longer than `resp` is an error.
    fn execute(
        &mut self,
        locality: u8,
        cmd: &[u8],
        resp: &mut [u8],
    ) -> Result<usize, TpmBackendError>;
}

/// The size field of a TPM2 header (bytes 2..6, big-endian), if there is
/// a whole header.
pub fn header_size(buf: &[u8]) -> Option<usize> {
    let b: [u8; 4] = buf.get(2..6)?.try_into().ok()?;
    Some(u32::from_be_bytes(b) as usize)
}

/// A response of only a header with `rc`.
pub fn error_response(rc: u32) -> [u8; HEADER_LEN] {
    let mut r = [0u8; HEADER_LEN];
    r[..2].copy_from_slice(&0x8001u16.to_be_bytes()); // TPM_ST_NO_SESSIONS
    r[2..6].copy_from_slice(&(HEADER_LEN as u32).to_be_bytes());
    r[6..].copy_from_slice(&rc.to_be_bytes());
    r
}

/// The CRB device.
pub struct TpmCrb {
    /// Registers, as 32-bit words over [0, DATA_BUFFER).
    regs: [u32; DATA_BUFFER / 4],
    buffer: Box<[u8; BUFFER_SIZE]>,
    backend: Box<dyn TpmBackend>,
    /// Commands run, for tests and the log.
    pub commands: u64,
}

impl TpmCrb {
    pub fn new(backend: Box<dyn TpmBackend>) -> Self {
        let mut d = TpmCrb {
            regs: [0; DATA_BUFFER / 4],
            buffer: Box::new([0; BUFFER_SIZE]),
            backend,
            commands: 0,
        };
        d.reset();
        d
    }

    /// The registers' power-on values.
    pub fn reset(&mut self) {
        self.regs = [0; DATA_BUFFER / 4];
        self.buffer.fill(0);
        let buf = (CRB_BASE + DATA_BUFFER as u64) as u32;
        self.set(LOC_STATE, LOC_STATE_REG_VALID);
        self.set(INTF_ID, INTF_ID_LO);
        self.set(INTF_ID_HI, INTF_ID_VID_DID);
        self.set(CTRL_STS, CTRL_STS_IDLE);
        self.set(CTRL_CMD_SIZE, BUFFER_SIZE as u32);
        self.set(CTRL_CMD_LADDR, buf);
        self.set(CTRL_CMD_HADDR, 0);
        self.set(CTRL_RSP_SIZE, BUFFER_SIZE as u32);
        self.set(CTRL_RSP_ADDR, buf);
        self.set(CTRL_RSP_ADDR_HI, 0);
    }

    fn get(&self, reg: usize) -> u32 {
        self.regs[reg / 4]
    }

    fn set(&mut self, reg: usize, v: u32) {
        self.regs[reg / 4] = v;
    }

    /// What a read of register `reg` returns (write-only ones read 0).
    fn read_reg(&self, reg: usize) -> u32 {
        match reg {
            LOC_CTRL => 0,
            _ => self.get(reg),
        }
    }

    /// The guest wrote `v` to register `reg`.
    fn write_reg(&mut self, reg: usize, v: u32) {
        match reg {
            LOC_CTRL => {
                if v & LOC_CTRL_REQUEST_ACCESS != 0 {
                    // Locality 0 is the only one, and always free.
                    self.set(LOC_STATE, self.get(LOC_STATE) | LOC_STATE_ASSIGNED);
                    self.set(LOC_STS, LOC_STS_GRANTED);
                } else if v & LOC_CTRL_RELINQUISH != 0 {
                    self.set(LOC_STATE, self.get(LOC_STATE) & !LOC_STATE_ASSIGNED);
                    self.set(LOC_STS, 0);
                }
            }
            CTRL_REQ => {
                let sts = self.get(CTRL_STS);
                if v & CTRL_REQ_CMD_READY != 0 {
                    self.set(CTRL_STS, sts & !CTRL_STS_IDLE);
                } else if v & CTRL_REQ_GO_IDLE != 0 {
                    self.set(CTRL_STS, sts | CTRL_STS_IDLE);
                }
            }
            // Commands run to completion before the write returns, so
            // there is never one to cancel; the register reads back.
            CTRL_CANCEL => self.set(CTRL_CANCEL, v & 1),
            CTRL_START if v & 1 != 0 && self.get(CTRL_START) == 0 => {
                self.set(CTRL_START, 1);
                self.run_command();
                self.set(CTRL_START, 0);
            }
            _ => {}
        }
    }

    /// Hand the command in the buffer to the backend and put its response
    /// (or an error response) in the buffer.
    fn run_command(&mut self) {
        self.commands += 1;
        let len = match header_size(&self.buffer[..]) {
            Some(n) if (HEADER_LEN..=BUFFER_SIZE).contains(&n) => n,
            other => {
                log::warn!("tpm: command size {other:?} does not fit the CRB buffer");
                self.put_response(&error_response(TPM_RC_COMMAND_SIZE));
                return;
            }
        };
        let cmd = self.buffer[..len].to_vec();
        let mut resp = vec![0u8; BUFFER_SIZE];
        match self.backend.execute(0, &cmd, &mut resp) {
            Ok(n) if (HEADER_LEN..=BUFFER_SIZE).contains(&n) => self.put_response(&resp[..n]),
            Ok(n) => {
                log::error!("tpm: the backend's response of {n} bytes does not fit");
                self.put_response(&error_response(TPM_RC_FAILURE));
            }
            Err(e) => {
                log::error!("tpm: {e}");
                self.set(CTRL_STS, self.get(CTRL_STS) | CTRL_STS_FATAL);
                self.put_response(&error_response(TPM_RC_FAILURE));
            }
        }
    }

    fn put_response(&mut self, r: &[u8]) {
        self.buffer[..r.len()].copy_from_slice(r);
    }

    fn read_byte(&self, offset: usize) -> u8 {
        if offset < DATA_BUFFER {
            self.read_reg(offset & !3).to_le_bytes()[offset & 3]
        } else {
            self.buffer.get(offset - DATA_BUFFER).copied().unwrap_or(0)
        }
    }
}

impl BusDevice for TpmCrb {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset.saturating_add(i as u64)).map_or(0, |o| self.read_byte(o));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        // Bytes for the buffer land there; bytes for registers are merged
        // into each register's current value, which then acts once.
        let mut reg: Option<(usize, [u8; 4])> = None;
        for (i, &b) in data.iter().enumerate() {
            let o = start.saturating_add(i);
            if o >= DATA_BUFFER {
                if let Some(slot) = self.buffer.get_mut(o - DATA_BUFFER) {
                    *slot = b;
                }
                continue;
            }
            let r = o & !3;
            if reg.is_some_and(|(cur, _)| cur != r) {
                let (cur, bytes) = reg.take().expect("checked");
                self.write_reg(cur, u32::from_le_bytes(bytes));
            }
            let (_, bytes) = reg.get_or_insert_with(|| (r, self.read_reg(r).to_le_bytes()));
            bytes[o & 3] = b;
        }
        if let Some((cur, bytes)) = reg {
            self.write_reg(cur, u32::from_le_bytes(bytes));
        }
    }
}
