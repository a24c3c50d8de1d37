//! What sits on a port (a SATA disk or an ATAPI CD-ROM on a
//! [`kiln_block::Disk`]), what a command ends with ([`Done`]: the task
//! file), and [`Xfer`], the one way a command moves data between a drive
//! and the command's PRDT, in bounded chunks.

use std::sync::Arc;

use kiln_block::Disk;

use super::command::{CommandError, CommandHeader, SgList};
use crate::devices::GuestMemoryMmap;

/// Status register bits.
pub const BSY: u8 = 0x80;
pub const DRDY: u8 = 0x40;
pub const DSC: u8 = 0x10;
pub const DRQ: u8 = 0x08;
pub const ERR: u8 = 0x01;
/// Error register bits.
pub const ABRT: u8 = 0x04;
pub const IDNF: u8 = 0x10;
pub const UNC: u8 = 0x40;

/// Largest bounce buffer a transfer uses at once.
const CHUNK: usize = 1 << 20;

/// What is attached to a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveKind {
    Disk,
    Cdrom,
}

/// A drive: its kind, its image, and (CD-ROM) its pending sense data.
pub struct Drive {
    pub kind: DriveKind,
    pub disk: Arc<dyn Disk>,
    /// The serial number IDENTIFY reports (at most 20 characters).
    pub serial: String,
    /// ATAPI sense: (key, ASC, ASCQ) of the last command.
    pub sense: (u8, u8, u8),
}

impl Drive {
    pub fn new(kind: DriveKind, disk: Arc<dyn Disk>, serial: String) -> Self {
        Drive {
            kind,
            disk,
            serial,
            sense: (0, 0, 0),
        }
    }

    /// The signature a device sends after reset (PxSIG).
    pub fn signature(&self) -> u32 {
        match self.kind {
            DriveKind::Disk => 0x0000_0101,
            DriveKind::Cdrom => 0xeb14_0101,
        }
    }
}

/// How a command ended: the task file the D2H FIS carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    pub status: u8,
    pub error: u8,
    /// A PIO data-in command: a PIO setup FIS goes before the D2H FIS.
    pub pio: bool,
    /// The count field to return (CHECK POWER MODE), if not the command's.
    pub count: Option<u16>,
}

impl Done {
    pub fn ok() -> Self {
        Done {
            status: DRDY | DSC,
            error: 0,
            pio: false,
            count: None,
        }
    }

    pub fn pio() -> Self {
        Done {
            pio: true,
            ..Done::ok()
        }
    }

    pub fn error(error: u8) -> Self {
        Done {
            status: DRDY | ERR,
            error,
            pio: false,
            count: None,
        }
    }

    pub fn failed(&self) -> bool {
        self.status & ERR != 0
    }
}

/// Why a transfer stopped.
#[derive(Debug, thiserror::Error)]
pub enum XferError {
    /// The PRDT is bad (outside memory, too short): a host-side error.
    #[error(transparent)]
    Command(CommandError),
    /// The image failed.
    #[error(transparent)]
    Io(kiln_block::Error),
}

/// The data side of one command: its PRDT, read as far as needed.
pub struct Xfer<'a> {
    mem: &'a GuestMemoryMmap,
    header: CommandHeader,
    /// Bytes moved so far (PRDBC).
    pub moved: u64,
}

impl<'a> Xfer<'a> {
    pub fn new(mem: &'a GuestMemoryMmap, header: CommandHeader) -> Self {
        Xfer {
            mem,
            header,
            moved: 0,
        }
    }

    fn sg(&self, need: u64, exact: bool) -> Result<SgList, XferError> {
        let sg = SgList::read(self.mem, &self.header, need).map_err(XferError::Command)?;
        let have = sg.len();
        if exact && have < need {
            return Err(XferError::Command(CommandError::PrdtShort { have, need }));
        }
        Ok(sg)
    }

    /// Copy `data` to the guest; what the PRDT has no room for is dropped
    /// (ATAPI replies are cut to the buffer the host gave).
    pub fn to_guest(&mut self, data: &[u8]) -> Result<(), XferError> {
        let sg = self.sg(data.len() as u64, false)?;
        self.moved = sg.write_from(self.mem, 0, data) as u64;
        Ok(())
    }

    /// Read `len` bytes of `disk` at `offset` into the guest's buffers,
    /// which must hold them all.
    pub fn disk_to_guest(
        &mut self,
        disk: &dyn Disk,
        offset: u64,
        len: u64,
    ) -> Result<(), XferError> {
        let sg = self.sg(len, true)?;
        let mut buf = vec![0u8; (len as usize).min(CHUNK)];
        let mut done = 0u64;
        while done < len {
            let n = ((len - done) as usize).min(CHUNK);
            disk.read_at(offset + done, &mut buf[..n])
                .map_err(XferError::Io)?;
            sg.write_from(self.mem, done, &buf[..n]);
            done += n as u64;
            self.moved = done;
        }
        Ok(())
    }

    /// Write `len` bytes from the guest's buffers to `disk` at `offset`.
    pub fn guest_to_disk(
        &mut self,
        disk: &dyn Disk,
        offset: u64,
        len: u64,
    ) -> Result<(), XferError> {
        let sg = self.sg(len, true)?;
        let mut buf = vec![0u8; (len as usize).min(CHUNK)];
        let mut done = 0u64;
        while done < len {
            let n = ((len - done) as usize).min(CHUNK);
            sg.read_into(self.mem, done, &mut buf[..n]);
            disk.write_at(offset + done, &buf[..n])
                .map_err(XferError::Io)?;
            done += n as u64;
            self.moved = done;
        }
        Ok(())
    }
}

/// Put `s` into IDENTIFY words as ATA strings: two characters a word,
/// the first in the high byte, padded with spaces.
pub fn put_string(words: &mut [u16], s: &str) {
    let mut bytes = s.bytes().chain(std::iter::repeat(b' '));
    for w in words.iter_mut() {
        let hi = bytes.next().unwrap_or(b' ');
        let lo = bytes.next().unwrap_or(b' ');
        *w = (u16::from(hi) << 8) | u16::from(lo);
    }
}

/// IDENTIFY words as the 512 bytes the host reads, with the integrity
/// word (255: 0xA5 and a checksum making all bytes sum to zero).
pub fn identify_bytes(mut words: [u16; 256]) -> Vec<u8> {
    words[255] = 0x00a5;
    let mut out: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let sum = out[..511].iter().fold(0u8, |a, &b| a.wrapping_add(b));
    out[511] = sum.wrapping_neg();
    out
}
