//! ATAPI (MMC-6) commands of a read-only CD-ROM with 2048-byte sectors:
//! what SeaBIOS's El Torito boot and Windows' cdrom.sys ask. A command
//! that fails ends with CHECK CONDITION (status ERR, the sense key in the
//! error register's high nibble), and REQUEST SENSE returns its sense.

use super::drive::{Done, Drive, Xfer, XferError, ABRT, DRDY, DSC, ERR};

pub const BLOCK: u64 = 2048;

/// Sense keys.
const MEDIUM_ERROR: u8 = 0x03;
const ILLEGAL_REQUEST: u8 = 0x05;
const DATA_PROTECT: u8 = 0x07;
const ABORTED_COMMAND: u8 = 0x0b;
/// Additional sense codes.
const INVALID_OPCODE: u8 = 0x20;
const LBA_OUT_OF_RANGE: u8 = 0x21;
const INVALID_FIELD: u8 = 0x24;
const WRITE_PROTECTED: u8 = 0x27;
const UNRECOVERED_READ: u8 = 0x11;

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Run the SCSI command `cdb` (from the command table's ACMD).
pub fn execute(drive: &mut Drive, cdb: &[u8; 16], x: &mut Xfer<'_>) -> Done {
    let blocks = drive.disk.size() / BLOCK;
    let r = match cdb[0] {
        // TEST UNIT READY, PREVENT/ALLOW MEDIUM REMOVAL, START STOP UNIT,
        // SET CD SPEED: the disc is always there and spinning.
        0x00 | 0x1e | 0x1b | 0xbb => Ok(None),
        0x03 => {
            let (key, asc, ascq) = drive.sense;
            let mut s = vec![0u8; 18];
            s[0] = 0x70;
            s[2] = key;
            s[7] = 10;
            s[12] = asc;
            s[13] = ascq;
            s.truncate(usize::from(cdb[4]));
            drive.sense = (0, 0, 0);
            return reply(x, &s, (0, 0, 0), drive);
        }
        0x12 => {
            let mut d = vec![0u8; 36];
            d[0] = 0x05; // CD/DVD
            d[1] = 0x80; // removable
            d[2] = 0x05;
            d[3] = 0x32;
            d[4] = 31;
            d[8..16].copy_from_slice(b"KILN    ");
            d[16..32].copy_from_slice(b"CD-ROM          ");
            d[32..36].copy_from_slice(b"1.0 ");
            d.truncate(usize::from(be16(&cdb[3..5])));
            Ok(Some(d))
        }
        0x25 => {
            let mut d = Vec::with_capacity(8);
            d.extend_from_slice(&(blocks.saturating_sub(1) as u32).to_be_bytes());
            d.extend_from_slice(&(BLOCK as u32).to_be_bytes());
            Ok(Some(d))
        }
        0x28 | 0xa8 => {
            let lba = u64::from(be32(&cdb[2..6]));
            let count = if cdb[0] == 0x28 {
                u64::from(be16(&cdb[7..9]))
            } else {
                u64::from(be32(&cdb[6..10]))
            };
            return read(drive, x, lba, count, blocks);
        }
        0x43 => read_toc(cdb, blocks),
        0x46 => Ok(Some(get_configuration(cdb))),
        0x5a => mode_sense(cdb),
        0x4a => event_status(cdb),
        // WRITE(10), WRITE(12), WRITE AND VERIFY(10): a CD-ROM.
        0x2a | 0xaa | 0x2e => Err((DATA_PROTECT, WRITE_PROTECTED, 0)),
        op => {
            log::debug!("ahci: ATAPI command {op:#04x} refused");
            Err((ILLEGAL_REQUEST, INVALID_OPCODE, 0))
        }
    };
    match r {
        Ok(None) => {
            drive.sense = (0, 0, 0);
            Done::ok()
        }
        Ok(Some(data)) => reply(x, &data, (0, 0, 0), drive),
        Err(sense) => check_condition(drive, sense),
    }
}

fn reply(x: &mut Xfer<'_>, data: &[u8], sense: (u8, u8, u8), drive: &mut Drive) -> Done {
    match x.to_guest(data) {
        Ok(()) => {
            drive.sense = sense;
            Done::ok()
        }
        Err(_) => check_condition(drive, (ABORTED_COMMAND, 0, 0)),
    }
}

/// CHECK CONDITION with `sense` kept for REQUEST SENSE.
pub fn check_condition(drive: &mut Drive, sense: (u8, u8, u8)) -> Done {
    drive.sense = sense;
    Done {
        status: DRDY | DSC | ERR,
        error: (sense.0 << 4) | ABRT,
        pio: false,
        count: None,
    }
}

fn read(drive: &mut Drive, x: &mut Xfer<'_>, lba: u64, count: u64, blocks: u64) -> Done {
    if lba.checked_add(count).is_none_or(|end| end > blocks) {
        return check_condition(drive, (ILLEGAL_REQUEST, LBA_OUT_OF_RANGE, 0));
    }
    match x.disk_to_guest(drive.disk.as_ref(), lba * BLOCK, count * BLOCK) {
        Ok(()) => {
            drive.sense = (0, 0, 0);
            Done::ok()
        }
        Err(XferError::Command(e)) => {
            log::debug!("ahci: CD-ROM transfer refused: {e}");
            check_condition(drive, (ABORTED_COMMAND, 0, 0))
        }
        Err(XferError::Io(e)) => {
            log::warn!("ahci: CD-ROM read failed: {e}");
            check_condition(drive, (MEDIUM_ERROR, UNRECOVERED_READ, 0))
        }
    }
}

type Reply = Result<Option<Vec<u8>>, (u8, u8, u8)>;

fn cut(mut d: Vec<u8>, alloc: u16) -> Reply {
    d.truncate(usize::from(alloc));
    Ok(Some(d))
}

/// An address as READ TOC gives it: LBA, or MSF (with the 2 s lead-in).
fn toc_addr(lba: u64, msf: bool) -> [u8; 4] {
    if !msf {
        return (lba as u32).to_be_bytes();
    }
    let f = lba + 150;
    [
        0,
        (f / (75 * 60)) as u8,
        ((f / 75) % 60) as u8,
        (f % 75) as u8,
    ]
}

/// READ TOC/PMA/ATIP: format 0 (the TOC: one data track and the lead-out)
/// and 1 (multi-session information: one session).
fn read_toc(cdb: &[u8; 16], blocks: u64) -> Reply {
    let msf = cdb[1] & 0x02 != 0;
    let format = match cdb[2] & 0x0f {
        0 => cdb[9] >> 6,
        f => f,
    };
    let alloc = be16(&cdb[7..9]);
    let mut d = vec![0, 0, 1, 1];
    match format {
        0 => {
            let start = cdb[6];
            if start > 1 && start != 0xaa {
                return Err((ILLEGAL_REQUEST, INVALID_FIELD, 0));
            }
            if start <= 1 {
                d.extend_from_slice(&[0, 0x14, 1, 0]);
                d.extend_from_slice(&toc_addr(0, msf));
            }
            d.extend_from_slice(&[0, 0x14, 0xaa, 0]);
            d.extend_from_slice(&toc_addr(blocks, msf));
        }
        1 => {
            d.extend_from_slice(&[0, 0x14, 1, 0]);
            d.extend_from_slice(&toc_addr(0, msf));
        }
        _ => return Err((ILLEGAL_REQUEST, INVALID_FIELD, 0)),
    }
    let len = (d.len() - 2) as u16;
    d[0..2].copy_from_slice(&len.to_be_bytes());
    cut(d, alloc)
}

/// GET CONFIGURATION: the CD-ROM profile and the features a read-only
/// drive has (profile list, core, morphing, removable medium, random
/// readable), filtered by the request type and starting feature.
fn get_configuration(cdb: &[u8; 16]) -> Vec<u8> {
    let rt = cdb[1] & 3;
    let start = be16(&cdb[2..4]);
    let alloc = be16(&cdb[7..9]);
    let features: [(u16, u8, &[u8]); 5] = [
        (0x0000, 0x03, &[0x00, 0x08, 0x01, 0x00]),
        (0x0001, 0x0b, &[0, 0, 0, 2, 0, 0, 0, 0]),
        (0x0002, 0x07, &[0x02, 0, 0, 0]),
        (0x0003, 0x0b, &[0x29, 0, 0, 0]),
        (0x0010, 0x03, &[0, 0, 0x08, 0, 0, 1, 0, 0]),
    ];
    let mut d = vec![0u8; 8];
    d[6..8].copy_from_slice(&0x0008u16.to_be_bytes());
    for (code, flags, body) in features {
        let take = match rt {
            2 => code == start,
            _ => code >= start,
        };
        if take {
            d.extend_from_slice(&code.to_be_bytes());
            d.extend_from_slice(&[flags, body.len() as u8]);
            d.extend_from_slice(body);
        }
    }
    let len = (d.len() - 4) as u32;
    d[0..4].copy_from_slice(&len.to_be_bytes());
    d.truncate(usize::from(alloc));
    d
}

/// MODE SENSE(10): the read error recovery page (0x01) and the CD
/// capabilities page (0x2a), or both (0x3f).
fn mode_sense(cdb: &[u8; 16]) -> Reply {
    let page = cdb[2] & 0x3f;
    let alloc = be16(&cdb[7..9]);
    let recovery: &[u8] = &[0x01, 0x06, 0, 5, 0, 0, 0, 0];
    let caps: &[u8] = &[
        0x2a, 0x14, 0x3b, 0, 0x71, 0x60, 0x29, 0, 0x02, 0xc2, 0, 2, 0x02, 0, 0x02, 0xc2, 0, 0, 0,
        0, 0, 0,
    ];
    let mut d = vec![0u8; 8];
    d[2] = 0x01; // a 120 mm data CD
    match page {
        0x01 => d.extend_from_slice(recovery),
        0x2a => d.extend_from_slice(caps),
        0x3f => {
            d.extend_from_slice(recovery);
            d.extend_from_slice(caps);
        }
        _ => return Err((ILLEGAL_REQUEST, INVALID_FIELD, 0)),
    }
    let len = (d.len() - 2) as u16;
    d[0..2].copy_from_slice(&len.to_be_bytes());
    cut(d, alloc)
}

/// GET EVENT STATUS NOTIFICATION, polled: the media class only (a disc
/// is present and nothing changes).
fn event_status(cdb: &[u8; 16]) -> Reply {
    if cdb[1] & 1 == 0 {
        return Err((ILLEGAL_REQUEST, INVALID_FIELD, 0));
    }
    let alloc = be16(&cdb[7..9]);
    let d = if cdb[4] & 0x10 != 0 {
        vec![0, 6, 0x04, 0x10, 0x00, 0x02, 0, 0]
    } else {
        // No event class asked for that the drive has.
        vec![0, 2, 0x80, 0x10]
    };
    cut(d, alloc)
}

/// A PACKET whose data direction is host to device: refused as a write.
pub fn refuse_write(drive: &mut Drive) -> Done {
    check_condition(drive, (DATA_PROTECT, WRITE_PROTECTED, 0))
}
