//! ATA commands of a SATA disk (ACS-3): IDENTIFY DEVICE, the PIO, DMA and
//! NCQ (FPDMA QUEUED) reads and writes in 28- and 48-bit form, READ
//! VERIFY, FLUSH CACHE (EXT), SET FEATURES and the power commands that
//! need no state; anything else is aborted. And the ATA side of an ATAPI
//! device (IDENTIFY DEVICE aborted with its signature, DEVICE RESET).

use super::command::H2dFis;
use super::drive::{
    identify_bytes, put_string, Done, Drive, DriveKind, Xfer, XferError, ABRT, IDNF, UNC,
};

pub const SECTOR: u64 = 512;
pub const IDENTIFY_DEVICE: u8 = 0xec;
pub const IDENTIFY_PACKET_DEVICE: u8 = 0xa1;
pub const PACKET: u8 = 0xa0;
pub const READ_FPDMA_QUEUED: u8 = 0x60;
pub const WRITE_FPDMA_QUEUED: u8 = 0x61;
/// NCQ tags the disk accepts (IDENTIFY word 75 is this minus one).
pub const QUEUE_DEPTH: u16 = 32;

/// How a read or write names its sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rw {
    pub write: bool,
    /// Data moves as PIO (a PIO setup FIS goes first).
    pub pio: bool,
    pub lba: u64,
    pub sectors: u64,
}

/// Decode a read or write command; None: not one.
pub fn decode_rw(fis: &H2dFis) -> Option<Rw> {
    // (write, pio, 48-bit)
    let (write, pio, ext) = match fis.command {
        0x20 | 0x21 => (false, true, false),
        0x24 => (false, true, true),
        0xc8 | 0xc9 => (false, false, false),
        0x25 | READ_FPDMA_QUEUED => (false, false, true),
        0x30 | 0x31 => (true, true, false),
        0x34 => (true, true, true),
        0xca | 0xcb => (true, false, false),
        0x35 | WRITE_FPDMA_QUEUED => (true, false, true),
        _ => return None,
    };
    let ncq = matches!(fis.command, READ_FPDMA_QUEUED | WRITE_FPDMA_QUEUED);
    let raw = if ncq { fis.features } else { fis.count };
    let sectors = match (ext, raw) {
        (false, _) => match raw & 0xff {
            0 => 256,
            n => u64::from(n),
        },
        (true, 0) => 65536,
        (true, n) => u64::from(n),
    };
    let lba = if ext { fis.lba } else { fis.lba28() };
    Some(Rw {
        write,
        pio: pio && !write,
        lba,
        sectors,
    })
}

/// Run an ATA command on a disk (or the ATA side of a CD-ROM).
pub fn execute(drive: &Drive, fis: &H2dFis, x: &mut Xfer<'_>) -> Done {
    if drive.kind == DriveKind::Cdrom {
        return match fis.command {
            IDENTIFY_PACKET_DEVICE => identify(x, identify_packet_words(drive)),
            // DEVICE RESET, SET FEATURES, power and cache commands.
            0x08 | 0xef | 0xe0..=0xe3 | 0xe5 | 0xe6 | 0xe7 | 0xea => Done::ok(),
            // IDENTIFY DEVICE and the rest: aborted; the signature in
            // the LBA registers tells the host it is a packet device.
            _ => Done::error(ABRT),
        };
    }
    let sectors = drive.disk.size() / SECTOR;
    if let Some(rw) = decode_rw(fis) {
        if rw
            .lba
            .checked_add(rw.sectors)
            .is_none_or(|end| end > sectors)
        {
            return Done::error(IDNF);
        }
        let (off, len) = (rw.lba * SECTOR, rw.sectors * SECTOR);
        let r = if rw.write {
            x.guest_to_disk(drive.disk.as_ref(), off, len)
        } else {
            x.disk_to_guest(drive.disk.as_ref(), off, len)
        };
        return match r {
            Ok(()) if rw.pio => Done::pio(),
            Ok(()) => Done::ok(),
            Err(XferError::Command(e)) => {
                log::debug!("ahci: disk transfer refused: {e}");
                Done::error(ABRT)
            }
            Err(XferError::Io(e)) => {
                log::warn!(
                    "ahci: disk {} failed: {e}",
                    if rw.write { "write" } else { "read" }
                );
                Done::error(if rw.write { ABRT } else { UNC })
            }
        };
    }
    match fis.command {
        IDENTIFY_DEVICE => identify(x, identify_disk_words(drive)),
        // READ VERIFY SECTORS (EXT): nothing moves; the range must exist.
        0x40..=0x42 => {
            let lba = if fis.command == 0x42 {
                fis.lba
            } else {
                fis.lba28()
            };
            if lba >= sectors {
                Done::error(IDNF)
            } else {
                Done::ok()
            }
        }
        // FLUSH CACHE (EXT).
        0xe7 | 0xea => match drive.disk.flush() {
            Ok(()) => Done::ok(),
            Err(e) => {
                log::warn!("ahci: flush failed: {e}");
                Done::error(ABRT)
            }
        },
        // CHECK POWER MODE: active.
        0xe5 => Done {
            count: Some(0xff),
            ..Done::ok()
        },
        // SET FEATURES (write cache, transfer mode, SATA features),
        // SET MULTIPLE MODE, INITIALIZE DEVICE PARAMETERS, RECALIBRATE,
        // standby/idle/sleep: accepted, nothing to change.
        0xef | 0xc6 | 0x91 | 0x10 | 0xe0..=0xe3 | 0xe6 => Done::ok(),
        _ => {
            log::debug!("ahci: ATA command {:#04x} aborted", fis.command);
            Done::error(ABRT)
        }
    }
}

fn identify(x: &mut Xfer<'_>, words: [u16; 256]) -> Done {
    match x.to_guest(&identify_bytes(words)) {
        Ok(()) => Done::pio(),
        Err(_) => Done::error(ABRT),
    }
}

/// The words both IDENTIFY replies share: strings and transfer modes.
fn common_words(drive: &Drive, model: &str) -> [u16; 256] {
    let mut w = [0u16; 256];
    put_string(&mut w[10..20], &drive.serial);
    put_string(&mut w[23..27], env!("CARGO_PKG_VERSION"));
    put_string(&mut w[27..47], model);
    w[49] = 0x0b00; // IORDY, LBA, DMA
    w[50] = 0x4000;
    w[53] = 0x0006; // words 64..70 and 88 valid
    w[63] = 0x0007; // multiword DMA 0..2
    w[64] = 0x0003; // PIO 3, 4
    w[65..69].copy_from_slice(&[120, 120, 120, 120]);
    w[80] = 0x01f0; // ATA/ATAPI-4 to ACS-2
    w[88] = 0x203f; // UDMA 0..5, mode 5 selected
    w
}

/// IDENTIFY DEVICE of a disk: LBA48, NCQ, write cache, FLUSH CACHE EXT.
pub fn identify_disk_words(drive: &Drive) -> [u16; 256] {
    let mut w = common_words(drive, "KILN SATA DISK");
    let sectors = drive.disk.size() / SECTOR;
    w[0] = 0x0040;
    // The legacy geometry (16383/16/63 at most).
    let cyls = (sectors / (16 * 63)).min(16383) as u16;
    w[1] = cyls;
    w[3] = 16;
    w[6] = 63;
    w[47] = 0x8010; // READ/WRITE MULTIPLE: 16 sectors
    w[59] = 0x0110;
    let lba28 = sectors.min(0x0fff_ffff) as u32;
    w[60] = lba28 as u16;
    w[61] = (lba28 >> 16) as u16;
    w[75] = QUEUE_DEPTH - 1;
    w[76] = 0x0102; // NCQ, SATA Gen1
    w[82] = 0x4020; // NOP... write cache
    w[83] = 0x7400; // FLUSH CACHE EXT, FLUSH CACHE, 48-bit
    w[84] = 0x4000;
    w[85] = 0x4020;
    w[86] = 0x3400;
    w[87] = 0x4000;
    for (i, word) in w[100..104].iter_mut().enumerate() {
        *word = (sectors >> (16 * i)) as u16;
    }
    w[106] = 0x4000; // 512-byte logical sectors
    w
}

/// IDENTIFY PACKET DEVICE of a CD-ROM: removable, 12-byte packets, DMA.
pub fn identify_packet_words(drive: &Drive) -> [u16; 256] {
    let mut w = common_words(drive, "KILN ATAPI CD-ROM");
    w[0] = 0x85c0; // ATAPI, CD-ROM, removable, DRQ within 50 µs
    w[71] = 30;
    w[72] = 30;
    w[82] = 0x4010; // PACKET feature set
    w[83] = 0x4000;
    w[84] = 0x4000;
    w[85] = 0x4010;
    w[87] = 0x4000;
    w
}
