//! One AHCI port (AHCI 1.3, 3.3): its registers, and the commands the
//! guest issues through PxCI (and PxSACT for NCQ), run synchronously on
//! the vCPU thread that wrote PxCI. Each command ends with the FISes the
//! spec asks for in the received-FIS area (PIO setup for PIO data-in,
//! D2H register, or Set Device Bits for NCQ) and the matching PxIS bits;
//! a command list, command table or PRDT the HBA cannot use ends in a
//! task-file error on this port (PxIS.TFES), never a panic.

use vm_memory::{Bytes, GuestAddress};

use super::ata::{self, READ_FPDMA_QUEUED, WRITE_FPDMA_QUEUED};
use super::atapi;
use super::command::{
    d2h_fis, pio_setup_fis, read_command, sdb_fis, write_prdbc, RFIS_D2H, RFIS_PIO_SETUP, RFIS_SDB,
};
use super::drive::{Done, Drive, DriveKind, Xfer, ABRT, BSY, DRDY, DRQ, DSC, ERR};
use crate::devices::GuestMemoryMmap;

/// PxIS bits.
pub const IS_DHRS: u32 = 1 << 0;
pub const IS_PSS: u32 = 1 << 1;
pub const IS_SDBS: u32 = 1 << 3;
pub const IS_TFES: u32 = 1 << 30;
/// The PxIS bits that exist (and PxIE's writable ones).
const IS_MASK: u32 = 0xfdc0_00ff;
/// PxCMD bits.
pub const CMD_ST: u32 = 1 << 0;
const CMD_SUD: u32 = 1 << 1;
const CMD_POD: u32 = 1 << 2;
const CMD_CLO: u32 = 1 << 3;
pub const CMD_FRE: u32 = 1 << 4;
const CMD_FR: u32 = 1 << 14;
const CMD_CR: u32 = 1 << 15;
/// PxSSTS of a port with a device: present, Gen1, active.
const SSTS_PRESENT: u32 = 0x113;
/// The bits of PxCMD the guest sets and reads back.
const CMD_WRITABLE: u32 = CMD_ST | CMD_SUD | CMD_POD | CMD_FRE | 0xf000_0000;

/// Port register offsets.
const P_CLB: u64 = 0x00;
const P_CLBU: u64 = 0x04;
const P_FB: u64 = 0x08;
const P_FBU: u64 = 0x0c;
const P_IS: u64 = 0x10;
const P_IE: u64 = 0x14;
const P_CMD: u64 = 0x18;
const P_TFD: u64 = 0x20;
const P_SIG: u64 = 0x24;
const P_SSTS: u64 = 0x28;
const P_SCTL: u64 = 0x2c;
const P_SERR: u64 = 0x30;
const P_SACT: u64 = 0x34;
const P_CI: u64 = 0x38;

/// One port and the drive on it, if any.
#[derive(Default)]
pub struct Port {
    pub drive: Option<Drive>,
    clb: u64,
    fb: u64,
    pub is: u32,
    pub ie: u32,
    cmd: u32,
    tfd: u32,
    sctl: u32,
    serr: u32,
    sact: u32,
    ci: u32,
    /// Bad command lists reported in the log (a few, then quiet).
    warned: u32,
}

impl Port {
    pub fn new(drive: Option<Drive>) -> Self {
        let mut p = Port {
            drive,
            ..Port::default()
        };
        p.reset();
        p
    }

    /// The port after a reset (HBA reset or COMRESET): stopped, no
    /// interrupts, the device ready. The memory addresses stay.
    pub fn reset(&mut self) {
        self.is = 0;
        self.ie = 0;
        self.cmd = 0;
        self.serr = 0;
        self.sact = 0;
        self.ci = 0;
        self.tfd = if self.drive.is_some() {
            0x0100 | u32::from(DRDY | DSC)
        } else {
            0x7f
        };
    }

    fn sig(&self) -> u32 {
        self.drive.as_ref().map_or(u32::MAX, Drive::signature)
    }

    /// The guest reads the register at `off`.
    pub fn read(&self, off: u64) -> u32 {
        match off {
            P_CLB => self.clb as u32,
            P_CLBU => (self.clb >> 32) as u32,
            P_FB => self.fb as u32,
            P_FBU => (self.fb >> 32) as u32,
            P_IS => self.is,
            P_IE => self.ie,
            P_CMD => {
                let mut c = self.cmd;
                if c & CMD_ST != 0 {
                    c |= CMD_CR;
                }
                if c & CMD_FRE != 0 {
                    c |= CMD_FR;
                }
                c
            }
            P_TFD => self.tfd,
            P_SIG => self.sig(),
            P_SSTS if self.drive.is_some() && self.sctl & 0xf != 1 => SSTS_PRESENT,
            P_SCTL => self.sctl,
            P_SERR => self.serr,
            P_SACT => self.sact,
            P_CI => self.ci,
            _ => 0,
        }
    }

    /// The guest writes `v` to the register at `off`; commands it issues
    /// run now, against `mem`.
    pub fn write(&mut self, mem: &GuestMemoryMmap, off: u64, v: u32) {
        match off {
            P_CLB => self.clb = (self.clb & !0xffff_ffff) | u64::from(v & !0x3ff),
            P_CLBU => self.clb = (self.clb & 0xffff_ffff) | (u64::from(v) << 32),
            P_FB => self.fb = (self.fb & !0xffff_ffff) | u64::from(v & !0xff),
            P_FBU => self.fb = (self.fb & 0xffff_ffff) | (u64::from(v) << 32),
            P_IS => self.is &= !v,
            P_IE => self.ie = v & IS_MASK,
            P_CMD => self.write_cmd(mem, v),
            P_SCTL => {
                let was = self.sctl;
                self.sctl = v & 0xfff;
                // DET 1 → 0 ends a COMRESET: the device sends its signature.
                if was & 0xf == 1 && v & 0xf != 1 {
                    self.comreset(mem);
                }
            }
            P_SERR => self.serr &= !v,
            P_SACT if self.cmd & CMD_ST != 0 => self.sact |= v,
            P_CI if self.cmd & CMD_ST != 0 => {
                self.ci |= v;
                self.run_issued(mem);
            }
            _ => {}
        }
    }

    fn write_cmd(&mut self, mem: &GuestMemoryMmap, v: u32) {
        let was = self.cmd;
        self.cmd = v & CMD_WRITABLE;
        if v & CMD_CLO != 0 {
            self.tfd &= !u32::from(BSY | DRQ);
        }
        if was & CMD_ST != 0 && v & CMD_ST == 0 {
            // Stopping the list drops what was issued.
            self.ci = 0;
            self.sact = 0;
        }
        if v & CMD_ST != 0 {
            self.run_issued(mem);
        }
    }

    fn comreset(&mut self, mem: &GuestMemoryMmap) {
        let cmd = self.cmd;
        self.reset();
        self.cmd = cmd & CMD_FRE;
        if let Some(d) = &self.drive {
            let sig = d.signature().to_le_bytes();
            let mut f = [0u8; 20];
            f[0] = 0x34;
            f[2] = (self.tfd & 0xff) as u8;
            f[3] = 1;
            f[12] = sig[0];
            f[4..7].copy_from_slice(&sig[1..4]);
            self.post(mem, RFIS_D2H, &f);
        }
    }

    /// Copy a FIS into the received-FIS area (when FIS receive is on).
    fn post(&self, mem: &GuestMemoryMmap, at: u64, fis: &[u8]) {
        if self.cmd & CMD_FRE != 0 {
            // Checked by vm-memory: an area outside memory gets nothing.
            let _ = mem.write_slice(fis, GuestAddress(self.fb.wrapping_add(at)));
        }
    }

    /// Run every issued command, lowest slot first.
    fn run_issued(&mut self, mem: &GuestMemoryMmap) {
        while self.cmd & CMD_ST != 0 && self.ci != 0 {
            let slot = self.ci.trailing_zeros();
            self.run(mem, slot);
            self.ci &= !(1 << slot);
        }
    }

    /// A task-file error for a command the HBA could not even read.
    fn host_error(&mut self, why: &dyn std::fmt::Display) {
        if self.warned < 8 {
            self.warned += 1;
            log::warn!("ahci: port command refused: {why}");
        }
        self.tfd = (u32::from(ABRT) << 8) | u32::from(DRDY | ERR);
        self.is |= IS_TFES;
    }

    fn run(&mut self, mem: &GuestMemoryMmap, slot: u32) {
        let c = match read_command(mem, self.clb, slot) {
            Ok(c) => c,
            Err(e) => return self.host_error(&e),
        };
        let Some(drive) = self.drive.as_mut() else {
            return self.host_error(&"no device on the port");
        };
        let mut x = Xfer::new(mem, c.header);
        let ncq = drive.kind == DriveKind::Disk
            && matches!(c.fis.command, READ_FPDMA_QUEUED | WRITE_FPDMA_QUEUED);
        let done = match (drive.kind, c.fis.command) {
            (DriveKind::Cdrom, ata::PACKET) if c.header.write => atapi::refuse_write(drive),
            (DriveKind::Cdrom, ata::PACKET) => atapi::execute(drive, &c.acmd, &mut x),
            _ => ata::execute(drive, &c.fis, &mut x),
        };
        write_prdbc(mem, self.clb, slot, x.moved.min(u64::from(u32::MAX)) as u32);
        self.tfd = (u32::from(done.error) << 8) | u32::from(done.status);
        if ncq {
            self.complete_ncq(mem, &done, u32::from(c.fis.count >> 3) & 31);
        } else {
            self.complete(mem, &done, &c.fis, x.moved);
        }
    }

    fn complete(
        &mut self,
        mem: &GuestMemoryMmap,
        done: &Done,
        fis: &super::command::H2dFis,
        moved: u64,
    ) {
        if done.pio && !done.failed() {
            let f = pio_setup_fis(done.status | DRQ, done.status, moved.min(0xffff) as u16);
            self.post(mem, RFIS_PIO_SETUP, &f);
            self.is |= IS_PSS;
        }
        let mut reply = *fis;
        if let Some(count) = done.count {
            reply.count = count;
        }
        let packet_device = self
            .drive
            .as_ref()
            .is_some_and(|d| d.kind == DriveKind::Cdrom);
        if packet_device && done.failed() && fis.command != ata::PACKET {
            // An aborted ATA command on a packet device: its signature.
            let sig = self.sig().to_le_bytes();
            reply.count = u16::from(sig[0]);
            reply.lba = u64::from_le_bytes([sig[1], sig[2], sig[3], 0, 0, 0, 0, 0]);
        }
        self.post(mem, RFIS_D2H, &d2h_fis(done.status, done.error, &reply));
        self.is |= IS_DHRS;
        if done.failed() {
            self.is |= IS_TFES;
        }
    }

    fn complete_ncq(&mut self, mem: &GuestMemoryMmap, done: &Done, tag: u32) {
        let bit = 1u32 << tag;
        self.sact &= !bit;
        if done.failed() {
            self.is |= IS_TFES;
            self.post(mem, RFIS_SDB, &sdb_fis(done.status, done.error, 0));
        } else {
            self.post(mem, RFIS_SDB, &sdb_fis(done.status, 0, bit));
            self.is |= IS_SDBS;
        }
    }

    /// This port asks for an interrupt.
    pub fn pending(&self) -> bool {
        self.is & self.ie != 0
    }
}
