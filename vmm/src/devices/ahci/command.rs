//! What the guest hands the HBA for one command slot, read from guest
//! memory with every address and length checked (AHCI 1.3, 4.2): the
//! command header in the command list, the command table's H2D register
//! FIS and ATAPI command, and the PRDT as a list of guest ranges. And the
//! FISes the HBA writes back into the received-FIS area.
//!
//! Nothing here trusts the guest: a header, table or PRD entry outside
//! guest memory, a FIS that is not a H2D register FIS with its command
//! bit, or a PRDT that needs more entries than its table holds is a
//! [`CommandError`], which the port turns into a task-file error. Guest
//! memory is only ever reached through `vm-memory`'s checked accessors.

use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use crate::devices::GuestMemoryMmap;

/// Bytes of one command header in the command list.
pub const HEADER_LEN: u64 = 32;
/// Offset of the ATAPI command in a command table.
const ACMD_OFFSET: u64 = 0x40;
/// Offset of the PRDT in a command table.
const PRDT_OFFSET: u64 = 0x80;
/// Bytes of one PRD entry.
const PRD_LEN: u64 = 16;
/// The largest data block one PRD entry describes (4 MiB).
pub const MAX_PRD_BYTES: u32 = 4 << 20;
/// FIS type of a host-to-device register FIS.
const FIS_H2D: u8 = 0x27;

/// Why a command could not be read or its data not moved.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command header at {0:#x} is outside guest memory")]
    Header(u64),
    #[error("command table at {0:#x} is outside guest memory")]
    Table(u64),
    #[error("command FIS type {0:#x} is not a H2D register FIS with C set")]
    Fis(u8),
    #[error("PRD entry {0} at {1:#x} is outside guest memory")]
    PrdEntry(u16, u64),
    #[error("PRD entry {index}: data block {addr:#x}+{len:#x} is outside guest memory")]
    PrdData { index: u16, addr: u64, len: u32 },
    #[error("the PRDT describes {have} bytes, the command moves {need}")]
    PrdtShort { have: u64, need: u64 },
}

/// One command header (AHCI 1.3, 4.2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandHeader {
    /// Command FIS length in dwords.
    pub cfl: u8,
    /// The command is an ATAPI PACKET (its ACMD is the SCSI CDB).
    pub atapi: bool,
    /// The data goes from host to device.
    pub write: bool,
    /// Entries in the PRDT.
    pub prdtl: u16,
    /// The command table's address (128-byte aligned).
    pub ctba: u64,
}

impl CommandHeader {
    pub fn parse(b: &[u8; HEADER_LEN as usize]) -> Self {
        let dw =
            |i: usize| u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        let dw0 = dw(0);
        CommandHeader {
            cfl: (dw0 & 0x1f) as u8,
            atapi: dw0 & (1 << 5) != 0,
            write: dw0 & (1 << 6) != 0,
            prdtl: (dw0 >> 16) as u16,
            ctba: (u64::from(dw(3)) << 32) | u64::from(dw(2) & !0x7f),
        }
    }
}

/// The fields of a H2D register FIS (SATA 3.x, 10.5.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2dFis {
    pub command: u8,
    pub features: u16,
    /// LBA bits 0..48 (28-bit commands use the low 24 bits and the
    /// device register's low nibble).
    pub lba: u64,
    pub device: u8,
    pub count: u16,
}

impl H2dFis {
    pub fn parse(b: &[u8; 20]) -> Result<Self, CommandError> {
        if b[0] != FIS_H2D || b[1] & 0x80 == 0 {
            return Err(CommandError::Fis(b[0]));
        }
        let lba = [b[4], b[5], b[6], b[8], b[9], b[10], 0, 0];
        Ok(H2dFis {
            command: b[2],
            features: u16::from_le_bytes([b[3], b[11]]),
            lba: u64::from_le_bytes(lba),
            device: b[7],
            count: u16::from_le_bytes([b[12], b[13]]),
        })
    }

    /// The LBA of a 28-bit command.
    pub fn lba28(&self) -> u64 {
        (self.lba & 0xff_ffff) | (u64::from(self.device & 0xf) << 24)
    }
}

/// A command as read from its slot: header, FIS, and ATAPI command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    pub header: CommandHeader,
    pub fis: H2dFis,
    pub acmd: [u8; 16],
}

/// Read slot `slot`'s command from the command list at `clb`.
pub fn read_command(mem: &GuestMemoryMmap, clb: u64, slot: u32) -> Result<Command, CommandError> {
    let at = clb.wrapping_add(u64::from(slot) * HEADER_LEN);
    let mut h = [0u8; HEADER_LEN as usize];
    mem.read_slice(&mut h, GuestAddress(at))
        .map_err(|_| CommandError::Header(at))?;
    let header = CommandHeader::parse(&h);
    let mut fis = [0u8; 20];
    let mut acmd = [0u8; 16];
    mem.read_slice(&mut fis, GuestAddress(header.ctba))
        .and_then(|()| {
            mem.read_slice(
                &mut acmd,
                GuestAddress(header.ctba.wrapping_add(ACMD_OFFSET)),
            )
        })
        .map_err(|_| CommandError::Table(header.ctba))?;
    Ok(Command {
        header,
        fis: H2dFis::parse(&fis)?,
        acmd,
    })
}

/// Write the byte count a command moved into its header (PRDBC).
pub fn write_prdbc(mem: &GuestMemoryMmap, clb: u64, slot: u32, bytes: u32) {
    let at = clb.wrapping_add(u64::from(slot) * HEADER_LEN + 4);
    // Checked by vm-memory; a header that moved away is simply not updated.
    let _ = mem.write_obj(bytes, GuestAddress(at));
}

/// The data blocks of a command, in order: (guest address, length).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SgList {
    pub ranges: Vec<(u64, u32)>,
}

impl SgList {
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|&(_, l)| u64::from(l)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Read the PRDT of `header` until it describes `want` bytes (or ends),
    /// each entry and each data block checked against guest memory.
    pub fn read(
        mem: &GuestMemoryMmap,
        header: &CommandHeader,
        want: u64,
    ) -> Result<Self, CommandError> {
        let mut sg = SgList::default();
        let mut have = 0u64;
        for i in 0..header.prdtl {
            if have >= want {
                break;
            }
            let at = header
                .ctba
                .wrapping_add(PRDT_OFFSET + u64::from(i) * PRD_LEN);
            let mut e = [0u8; PRD_LEN as usize];
            mem.read_slice(&mut e, GuestAddress(at))
                .map_err(|_| CommandError::PrdEntry(i, at))?;
            let dw =
                |k: usize| u32::from_le_bytes([e[k * 4], e[k * 4 + 1], e[k * 4 + 2], e[k * 4 + 3]]);
            let addr = (u64::from(dw(1)) << 32) | u64::from(dw(0) & !1);
            let len = (dw(3) & 0x3f_ffff) + 1;
            if !range_ok(mem, addr, len) {
                return Err(CommandError::PrdData {
                    index: i,
                    addr,
                    len,
                });
            }
            sg.ranges.push((addr, len));
            have += u64::from(len);
        }
        Ok(sg)
    }

    /// Copy `data` into the blocks from byte `skip` on; returns how many
    /// bytes were written (less than `data` when the blocks end first).
    pub fn write_from(&self, mem: &GuestMemoryMmap, mut skip: u64, data: &[u8]) -> usize {
        let mut done = 0;
        for &(addr, len) in &self.ranges {
            if done == data.len() {
                break;
            }
            let len = u64::from(len);
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = ((len - skip) as usize).min(data.len() - done);
            if mem
                .write_slice(&data[done..done + n], GuestAddress(addr + skip))
                .is_err()
            {
                break;
            }
            done += n;
            skip = 0;
        }
        done
    }

    /// Fill `buf` from the blocks from byte `skip` on; returns how many
    /// bytes were read.
    pub fn read_into(&self, mem: &GuestMemoryMmap, mut skip: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        for &(addr, len) in &self.ranges {
            if done == buf.len() {
                break;
            }
            let len = u64::from(len);
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = ((len - skip) as usize).min(buf.len() - done);
            if mem
                .read_slice(&mut buf[done..done + n], GuestAddress(addr + skip))
                .is_err()
            {
                break;
            }
            done += n;
            skip = 0;
        }
        done
    }
}

/// `len` bytes at `addr` are all guest memory.
fn range_ok(mem: &GuestMemoryMmap, addr: u64, len: u32) -> bool {
    addr.checked_add(u64::from(len)).is_some()
        && mem.check_range(GuestAddress(addr), len as usize, Permissions::ReadWrite)
}

/// Offsets of the FISes in the received-FIS area (AHCI 1.3, 4.2.1).
pub const RFIS_PIO_SETUP: u64 = 0x20;
pub const RFIS_D2H: u64 = 0x40;
pub const RFIS_SDB: u64 = 0x58;

/// A D2H register FIS with the interrupt bit.
pub fn d2h_fis(status: u8, error: u8, fis: &H2dFis) -> [u8; 20] {
    let mut f = [0u8; 20];
    f[0] = 0x34;
    f[1] = 0x40;
    f[2] = status;
    f[3] = error;
    let lba = fis.lba.to_le_bytes();
    f[4..7].copy_from_slice(&lba[0..3]);
    f[7] = fis.device;
    f[8..11].copy_from_slice(&lba[3..6]);
    f[12..14].copy_from_slice(&fis.count.to_le_bytes());
    f
}

/// A PIO setup FIS for a device-to-host transfer of `bytes`: `status`
/// during the transfer, `end_status` after it.
pub fn pio_setup_fis(status: u8, end_status: u8, bytes: u16) -> [u8; 20] {
    let mut f = [0u8; 20];
    f[0] = 0x5f;
    f[1] = 0x60;
    f[2] = status;
    f[15] = end_status;
    f[16..18].copy_from_slice(&bytes.to_le_bytes());
    f
}

/// A Set Device Bits FIS completing the NCQ tags in `done`.
pub fn sdb_fis(status: u8, error: u8, done: u32) -> [u8; 8] {
    let mut f = [0u8; 8];
    f[0] = 0xa1;
    f[1] = 0x40;
    f[2] = status & 0x77;
    f[3] = error;
    f[4..8].copy_from_slice(&done.to_le_bytes());
    f
}
