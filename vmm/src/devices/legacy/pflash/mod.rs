//! OVMF's variable store as a CFI parallel flash (Intel/Sharp command set),
//! behaving as QEMU's `pflash_cfi01` with a bank width of one byte, the
//! device OVMF's `QemuFlashFvbServicesRuntimeDxe` drives.
//!
//! ```text
//! mode         guest reads come from               guest writes
//! read array   the store, through a read-only      exit as MMIO: a command
//!              KVM slot (no exit)                  (first cycle)
//! status, ID,  this device, by MMIO (the slot is   exit as MMIO
//! CFI, program removed while the mode lasts)
//! ```
//!
//! Commands (first cycle, low byte of the write):
//! - `0xFF` read array, `0x50` clear status (and read array, as QEMU),
//!   `0x70` read status, `0x90` read identifier, `0x98` CFI query;
//! - `0x10`/`0x40` byte program: the next write's bytes go into the store;
//! - `0x20` block erase: confirmed by `0xD0` in the next cycle, fills the
//!   4 KiB block ([`BLOCK_SIZE`]) with `0xFF`;
//! - `0x60` lock setup: the next cycle (`0x01` lock, `0xD0` unlock) is
//!   accepted and ignored (the store is never locked).
//!
//! Anything else sets the command-sequence error bits (SR.4 and SR.5) and
//! returns to read-array mode; so does a write reaching past the store's
//! end, whose bytes beyond it are dropped. Status reads return the status
//! register: SR.7 (ready) is always set after a program or erase.
//!
//! The store is the VM's own copy of `OVMF_VARS.fd`, mapped shared: what is
//! programmed or erased lands in that file's page cache at once, so it
//! survives the VMM re-executing itself for a guest reset and the VM
//! powering off. When the guest goes back to read-array mode after a change,
//! the device also flushes the mapping to disk (`msync`), so a host crash
//! right after a variable write does not lose it.
//!
//! The device never touches a byte outside the store: every access is
//! bounds-checked against the store's length.

use vm_memory::mmap::MmapRegion;
use vm_memory::VolatileMemory;

use crate::devices::bus::BusDevice;

/// Erase block size, as QEMU gives OVMF's flash and OVMF assumes
/// (`PcdOvmfFirmwareBlockSize`).
pub const BLOCK_SIZE: u64 = 0x1000;

pub const CMD_READ_ARRAY: u8 = 0xff;
pub const CMD_READ_ARRAY_ALT: u8 = 0x00;
pub const CMD_CLEAR_STATUS: u8 = 0x50;
pub const CMD_READ_STATUS: u8 = 0x70;
pub const CMD_READ_ID: u8 = 0x90;
pub const CMD_CFI_QUERY: u8 = 0x98;
pub const CMD_PROGRAM: u8 = 0x10;
pub const CMD_PROGRAM_ALT: u8 = 0x40;
pub const CMD_BLOCK_ERASE: u8 = 0x20;
pub const CMD_CONFIRM: u8 = 0xd0;
pub const CMD_LOCK_SETUP: u8 = 0x60;

/// Status register: write state machine ready.
pub const SR_READY: u8 = 0x80;
/// Status register: erase error (with SR.4: command sequence error).
pub const SR_ERASE_ERROR: u8 = 0x20;
/// Status register: program error (with SR.5: command sequence error).
pub const SR_PROGRAM_ERROR: u8 = 0x10;

/// Manufacturer and device identifiers (Intel, 28F008SA-like), returned in
/// read-identifier mode at offsets 0 and 1.
const ID_MANUFACTURER: u8 = 0x89;
const ID_DEVICE: u8 = 0x18;

/// Switches the guest's view of the store between a read-only memory slot
/// (read-array mode: reads do not exit) and nothing (other modes: reads
/// exit as MMIO to this device). The KVM implementation re-registers the
/// slot; tests record the calls.
pub trait ArrayMapping: Send {
    fn set_mapped(&mut self, mapped: bool);
}

/// The store's bytes: the shared mapping of the vars file.
pub trait Store: Send {
    /// The store's size in bytes.
    fn size(&self) -> u64;
    fn read(&self, offset: u64) -> u8;
    fn write(&mut self, offset: u64, value: u8);
    /// Fill `[offset, offset + len)` with `value`.
    fn fill(&mut self, offset: u64, len: u64, value: u8);
    /// Push what was written to stable storage.
    fn flush(&mut self);
}

/// [`Store`] on a shared file mapping.
pub struct MmapStore {
    region: MmapRegion<()>,
}

impl MmapStore {
    pub fn new(region: MmapRegion<()>) -> Self {
        MmapStore { region }
    }

    /// The mapping, for the KVM slot that shows it to the guest.
    pub fn region(&self) -> &MmapRegion<()> {
        &self.region
    }
}

impl Store for MmapStore {
    fn size(&self) -> u64 {
        self.region.size() as u64
    }

    fn read(&self, offset: u64) -> u8 {
        self.region
            .get_ref::<u8>(offset as usize)
            .map_or(0xff, |r| r.load())
    }

    fn write(&mut self, offset: u64, value: u8) {
        if let Ok(r) = self.region.get_ref::<u8>(offset as usize) {
            r.store(value);
        }
    }

    fn fill(&mut self, offset: u64, len: u64, value: u8) {
        if let Ok(s) = self.region.get_slice(offset as usize, len as usize) {
            s.copy_from(&vec![value; len as usize][..]);
        }
    }

    fn flush(&mut self) {
        // SAFETY: msync on the whole live mapping this store owns.
        let r = unsafe {
            libc::msync(
                self.region.as_ptr().cast(),
                self.region.size(),
                libc::MS_SYNC,
            )
        };
        if r != 0 {
            log::warn!(
                "pflash: msync of the variable store failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// What the next write means / what reads return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    ReadArray,
    Status,
    Identifier,
    Cfi,
    /// The next write is data to program.
    Program,
    /// The next write must confirm the erase of the block at this offset.
    EraseSetup(u64),
    /// The next write is a lock/unlock confirmation.
    LockSetup,
}

/// The flash device, on the MMIO bus over the whole store.
pub struct PflashDevice<S: Store, M: ArrayMapping> {
    store: S,
    mapping: M,
    mode: Mode,
    status: u8,
    mapped: bool,
    dirty: bool,
    cfi: Vec<u8>,
}

impl<S: Store, M: ArrayMapping> PflashDevice<S, M> {
    /// A device in read-array mode; `mapping` is expected to show the
    /// store read-only already.
    pub fn new(store: S, mapping: M) -> Self {
        let cfi = cfi_table(store.size());
        PflashDevice {
            store,
            mapping,
            mode: Mode::ReadArray,
            status: 0,
            mapped: true,
            dirty: false,
            cfi,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        let want = mode == Mode::ReadArray;
        if want && self.dirty {
            self.store.flush();
            self.dirty = false;
        }
        if want != self.mapped {
            self.mapping.set_mapped(want);
            self.mapped = want;
        }
    }

    fn sequence_error(&mut self, what: &str, value: u8, offset: u64) {
        log::warn!("pflash: {what} {value:#04x} at offset {offset:#x}");
        self.status |= SR_ERASE_ERROR | SR_PROGRAM_ERROR;
        self.set_mode(Mode::ReadArray);
    }

    fn command(&mut self, offset: u64, cmd: u8) {
        let mode = match cmd {
            CMD_READ_ARRAY | CMD_READ_ARRAY_ALT => Mode::ReadArray,
            CMD_CLEAR_STATUS => {
                self.status = 0;
                Mode::ReadArray
            }
            CMD_READ_STATUS => Mode::Status,
            CMD_READ_ID => Mode::Identifier,
            CMD_CFI_QUERY => Mode::Cfi,
            CMD_PROGRAM | CMD_PROGRAM_ALT => Mode::Program,
            CMD_BLOCK_ERASE => Mode::EraseSetup(offset - offset % BLOCK_SIZE),
            CMD_LOCK_SETUP => Mode::LockSetup,
            _ => return self.sequence_error("unknown command", cmd, offset),
        };
        self.set_mode(mode);
    }

    fn program(&mut self, offset: u64, data: &[u8]) {
        let len = self.store.size();
        for (i, &b) in data.iter().enumerate() {
            match offset.checked_add(i as u64).filter(|&a| a < len) {
                Some(a) => self.store.write(a, b),
                None => {
                    log::warn!("pflash: program past the end of the store at {offset:#x}");
                    self.status |= SR_PROGRAM_ERROR;
                    break;
                }
            }
        }
        self.dirty = true;
        self.status |= SR_READY;
        // Reads now return the status until the guest asks for the array.
        self.set_mode(Mode::Status);
    }

    fn erase(&mut self, block: u64, offset: u64, cmd: u8) {
        match cmd {
            CMD_CONFIRM if block >= self.store.size() => {
                // Only through a bus range larger than the store.
                log::warn!("pflash: erase of block {block:#x} past the end of the store");
                self.status |= SR_ERASE_ERROR | SR_READY;
                self.set_mode(Mode::Status);
            }
            CMD_CONFIRM => {
                let len = BLOCK_SIZE.min(self.store.size() - block);
                self.store.fill(block, len, 0xff);
                self.dirty = true;
                self.status |= SR_READY;
                self.set_mode(Mode::Status);
            }
            CMD_READ_ARRAY => self.set_mode(Mode::ReadArray),
            _ => self.sequence_error("erase not confirmed by", cmd, offset),
        }
    }

    fn read_byte(&self, offset: u64) -> u8 {
        match self.mode {
            // Reads in array mode normally do not exit; they do in the
            // window while a mapping change is in flight on another vCPU.
            Mode::ReadArray => {
                if offset < self.store.size() {
                    self.store.read(offset)
                } else {
                    0xff
                }
            }
            Mode::Identifier => match offset {
                0 => ID_MANUFACTURER,
                1 => ID_DEVICE,
                _ => 0,
            },
            Mode::Cfi => usize::try_from(offset)
                .ok()
                .and_then(|o| self.cfi.get(o))
                .copied()
                .unwrap_or(0),
            Mode::Status | Mode::Program | Mode::EraseSetup(_) | Mode::LockSetup => self.status,
        }
    }
}

/// The CFI query structure, byte per address (bank width 1): "QRY", the
/// Intel command set, voltages, timings, the size and one erase-block
/// region of 4 KiB blocks.
fn cfi_table(size: u64) -> Vec<u8> {
    let mut t = vec![0u8; 0x31];
    t[0x10..0x13].copy_from_slice(b"QRY");
    t[0x13] = 0x01; // primary command set: Intel/Sharp extended
    t[0x15] = 0x31; // primary extended table at 0x31
    t[0x1b] = 0x45; // Vcc min 4.5 V
    t[0x1c] = 0x55; // Vcc max 5.5 V
    t[0x1f] = 0x07; // typical byte program time 2^7 µs
    t[0x21] = 0x0a; // typical block erase time 2^10 ms
    t[0x23] = 0x04;
    t[0x25] = 0x04;
    // Device size as a power of two (the store is a multiple of 4 KiB).
    t[0x27] = 63u32.saturating_sub(size.max(1).leading_zeros()) as u8;
    t[0x28] = 0x00; // x8 interface
    t[0x2c] = 0x01; // one erase-block region
    let blocks = (size / BLOCK_SIZE).saturating_sub(1);
    t[0x2d] = blocks as u8;
    t[0x2e] = (blocks >> 8) as u8;
    t[0x2f] = (BLOCK_SIZE / 256) as u8;
    t[0x30] = ((BLOCK_SIZE / 256) >> 8) as u8;
    t
}

impl<S: Store, M: ArrayMapping> BusDevice for PflashDevice<S, M> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_byte(offset.saturating_add(i as u64));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match self.mode {
            Mode::Program => self.program(offset, data),
            Mode::EraseSetup(block) => self.erase(block, offset, value),
            Mode::LockSetup => {
                if !matches!(value, 0x01 | CMD_CONFIRM) {
                    return self.sequence_error("lock setup followed by", value, offset);
                }
                self.set_mode(Mode::Status);
            }
            _ => self.command(offset, value),
        }
    }
}

#[cfg(test)]
mod tests;
