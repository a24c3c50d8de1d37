//! The firmware configuration device (fw_cfg), compatible with what SeaBIOS
//! and OVMF read from QEMU's, on I/O ports:
//!
//! ```text
//! 0x510  selector (16-bit write, little-endian): choose an item, offset 0
//! 0x511  data (byte reads): the selected item's next byte, 0 past its end
//! 0x514  DMA address, high 32 bits (big-endian)
//! 0x518  DMA address, low 32 bits (big-endian); writing it runs the DMA
//!        (reading 0x514..0x51c gives the DMA signature "QEMU CFG")
//! ```
//!
//! An item is a byte blob under a 16-bit key: the fixed legacy keys
//! ([`keys`]) or a named file. Files are listed in the file directory (key
//! [`keys::FILE_DIR`]): a big-endian count, then per file a big-endian size,
//! selector key and reserved word and a 56-byte NUL-padded name, sorted by
//! name, with keys from [`keys::FILE_FIRST`] in that order.
//!
//! DMA: the guest writes the address of a 16-byte `FWCfgDmaAccess`
//! (big-endian `control: u32, length: u32, address: u64`). `control` may
//! select an item (bit 3, key in bits 16..32), then read (bit 1), skip
//! (bit 2) or write (bit 4) `length` bytes at `address` from the current
//! offset. The device writes back `control` as 0 on success or with the
//! error bit (bit 0): on an address outside guest memory, a write to a
//! read-only item or past an item's end. Reads past an item's end give
//! zeros. A malformed request never panics and never allocates more than
//! a fixed chunk.
//!
//! `device_manager::fw_cfg::build` fills a device with what a PC firmware
//! needs, as `arch::x86_64::fw_cfg` assembles it (RAM size, CPUs, e820,
//! ACPI tables through its `table_loader`, boot order).
//!
//! A file may have a refresh function ([`FwCfg::set_refresh`]), called each
//! time the guest selects the file, that rebuilds its contents from the
//! VM's state at that moment (QEMU rebuilds its ACPI tables the same way):
//! the ACPI tables then name the PM block where the firmware has put it by
//! the time it reads them. A refresh keeps the file's size (the directory
//! already told the guest); one that would change it is ignored.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use log::debug;
use vm_memory::{Bytes, GuestAddress};

use crate::devices::bus::BusDevice;
use crate::devices::GuestMemoryMmap;

/// First I/O port of the device.
pub const FW_CFG_PORT: u16 = 0x510;
/// Ports the device decodes: selector, data, and the DMA address at +4.
pub const FW_CFG_PORT_LEN: u64 = 12;
/// Offset of the DMA address register from [`FW_CFG_PORT`].
const DMA_OFFSET: u64 = 4;

/// The legacy item keys (QEMU's `FW_CFG_*`).
pub mod keys {
    pub const SIGNATURE: u16 = 0x00;
    pub const ID: u16 = 0x01;
    pub const UUID: u16 = 0x02;
    pub const RAM_SIZE: u16 = 0x03;
    pub const NOGRAPHIC: u16 = 0x04;
    pub const NB_CPUS: u16 = 0x05;
    pub const BOOT_MENU: u16 = 0x0e;
    pub const MAX_CPUS: u16 = 0x0f;
    pub const FILE_DIR: u16 = 0x19;
    /// Key of the first file; files take consecutive keys.
    pub const FILE_FIRST: u16 = 0x20;
    /// Set in a selector to ask for write access (legacy, ignored).
    pub const WRITE_CHANNEL: u16 = 0x4000;
    /// Architecture-specific keys.
    pub const ARCH_LOCAL: u16 = 0x8000;
    pub const IRQ0_OVERRIDE: u16 = ARCH_LOCAL + 2;
    /// Selects nothing.
    pub const INVALID: u16 = 0xffff;
}

/// Bits of the ID item.
pub const ID_TRADITIONAL: u32 = 1 << 0;
pub const ID_DMA: u32 = 1 << 1;

/// The DMA register's read-back signature.
pub const DMA_SIGNATURE: [u8; 8] = *b"QEMU CFG";

/// Bits of `FWCfgDmaAccess.control`.
pub const DMA_CTL_ERROR: u32 = 1 << 0;
pub const DMA_CTL_READ: u32 = 1 << 1;
pub const DMA_CTL_SKIP: u32 = 1 << 2;
pub const DMA_CTL_SELECT: u32 = 1 << 3;
pub const DMA_CTL_WRITE: u32 = 1 << 4;

/// Size of a file directory entry.
pub const FILE_ENTRY_LEN: usize = 64;
/// Longest file name (the 56-byte field holds a terminating NUL).
pub const FILE_NAME_MAX: usize = 55;
/// Most files the selector space holds.
pub const MAX_FILES: usize = (keys::WRITE_CHANNEL - keys::FILE_FIRST) as usize;
/// Zeros written per step when a DMA read runs past an item's end.
const ZERO_CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    #[error("fw_cfg file name {0:?} is empty, longer than {FILE_NAME_MAX} bytes or holds a NUL")]
    FileName(String),
    #[error("fw_cfg file {0:?} is already present")]
    DuplicateFile(String),
    #[error("fw_cfg has no file {0:?}")]
    NoSuchFile(String),
    #[error("fw_cfg already holds {MAX_FILES} files")]
    TooManyFiles,
    #[error("fw_cfg item of {0} bytes is larger than 4 GiB")]
    TooLarge(usize),
    #[error("fw_cfg key {0:#x} is not a legacy item key")]
    Key(u16),
}

/// One item: its bytes, and whether the guest may write them by DMA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Item {
    data: Vec<u8>,
    writable: bool,
}

/// What the selector currently points at.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Selected {
    None,
    Legacy(u16),
    File(String),
}

/// Rebuilds a file's contents when the guest selects it.
pub type Refresh = Box<dyn FnMut() -> Option<Vec<u8>> + Send>;

/// The fw_cfg device.
pub struct FwCfg {
    legacy: BTreeMap<u16, Item>,
    /// Files by name: the map's order is the directory's order.
    files: BTreeMap<String, Item>,
    refresh: BTreeMap<String, Refresh>,
    selected: Selected,
    offset: u64,
    dma_high: u32,
    mem: GuestMemoryMmap,
}

fn item_len(data: &[u8]) -> Result<(), FwCfgError> {
    u32::try_from(data.len())
        .map(|_| ())
        .map_err(|_| FwCfgError::TooLarge(data.len()))
}

impl FwCfg {
    /// A device with the signature and the ID item (traditional and DMA
    /// interfaces), doing DMA into `mem`.
    pub fn new(mem: GuestMemoryMmap) -> Self {
        let mut dev = FwCfg {
            legacy: BTreeMap::new(),
            files: BTreeMap::new(),
            refresh: BTreeMap::new(),
            selected: Selected::None,
            offset: 0,
            dma_high: 0,
            mem,
        };
        let fixed = [
            (keys::SIGNATURE, b"QEMU".to_vec()),
            (keys::ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec()),
        ];
        for (key, data) in fixed {
            dev.legacy.insert(
                key,
                Item {
                    data,
                    writable: false,
                },
            );
        }
        dev.update_dir();
        dev
    }

    /// Set a legacy item (a key below [`keys::FILE_FIRST`], or an
    /// architecture key), replacing any previous value.
    pub fn set_item(&mut self, key: u16, data: Vec<u8>) -> Result<(), FwCfgError> {
        let index = key & !keys::ARCH_LOCAL;
        if key == keys::FILE_DIR || index >= keys::FILE_FIRST {
            return Err(FwCfgError::Key(key));
        }
        item_len(&data)?;
        self.legacy.insert(
            key,
            Item {
                data,
                writable: false,
            },
        );
        Ok(())
    }

    /// Add a read-only file.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<(), FwCfgError> {
        self.insert_file(name, data, false)
    }

    /// Add a file the guest may also write by DMA (within its size).
    pub fn add_writable_file(&mut self, name: &str, data: Vec<u8>) -> Result<(), FwCfgError> {
        self.insert_file(name, data, true)
    }

    fn insert_file(&mut self, name: &str, data: Vec<u8>, writable: bool) -> Result<(), FwCfgError> {
        if name.is_empty() || name.len() > FILE_NAME_MAX || name.contains('\0') {
            return Err(FwCfgError::FileName(name.to_string()));
        }
        if self.files.contains_key(name) {
            return Err(FwCfgError::DuplicateFile(name.to_string()));
        }
        if self.files.len() >= MAX_FILES {
            return Err(FwCfgError::TooManyFiles);
        }
        item_len(&data)?;
        self.files.insert(name.to_string(), Item { data, writable });
        self.update_dir();
        Ok(())
    }

    /// Change the contents of file `name` (e.g. `bootorder` once the disks
    /// are known), keeping its key and writability.
    pub fn replace_file(&mut self, name: &str, data: Vec<u8>) -> Result<(), FwCfgError> {
        item_len(&data)?;
        let item = self
            .files
            .get_mut(name)
            .ok_or_else(|| FwCfgError::NoSuchFile(name.to_string()))?;
        item.data = data;
        self.update_dir();
        Ok(())
    }

    /// Call `refresh` each time the guest selects file `name`, and take
    /// what it returns (if anything, and of the file's current size) as
    /// the file's new contents.
    pub fn set_refresh(&mut self, name: &str, refresh: Refresh) -> Result<(), FwCfgError> {
        if !self.files.contains_key(name) {
            return Err(FwCfgError::NoSuchFile(name.to_string()));
        }
        self.refresh.insert(name.to_string(), refresh);
        Ok(())
    }

    fn refresh_file(&mut self, name: &str) {
        let (Some(refresh), Some(item)) = (self.refresh.get_mut(name), self.files.get_mut(name))
        else {
            return;
        };
        match refresh() {
            Some(data) if data.len() == item.data.len() => item.data = data,
            Some(data) => log::warn!(
                "fw_cfg: refreshed {name:?} is {} bytes, not {}; keeping the old contents",
                data.len(),
                item.data.len()
            ),
            None => {}
        }
    }

    /// The selector key of file `name`, as the directory lists it.
    pub fn file_key(&self, name: &str) -> Option<u16> {
        let index = self.files.keys().position(|n| n == name)?;
        // Cannot overflow: the number of files is bounded by MAX_FILES.
        Some(keys::FILE_FIRST + index as u16)
    }

    /// The current bytes of file `name` (a writable file may have been
    /// changed by the guest).
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|i| i.data.as_slice())
    }

    /// Rebuild the directory item from the files.
    fn update_dir(&mut self) {
        let mut dir = Vec::with_capacity(4 + self.files.len() * FILE_ENTRY_LEN);
        dir.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for (i, (name, item)) in self.files.iter().enumerate() {
            dir.extend_from_slice(&(item.data.len() as u32).to_be_bytes());
            dir.extend_from_slice(&(keys::FILE_FIRST + i as u16).to_be_bytes());
            dir.extend_from_slice(&0u16.to_be_bytes());
            let mut field = [0u8; FILE_ENTRY_LEN - 8];
            field[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&field);
        }
        self.legacy.insert(
            keys::FILE_DIR,
            Item {
                data: dir,
                writable: false,
            },
        );
    }

    /// Point the selector at `key` (the write-channel bit is ignored) and
    /// rewind to its start.
    pub fn select(&mut self, selector: u16) {
        let key = selector & !keys::WRITE_CHANNEL;
        let index = key & !keys::ARCH_LOCAL;
        self.offset = 0;
        self.selected = if selector == keys::INVALID {
            Selected::None
        } else if key & keys::ARCH_LOCAL == 0 && index >= keys::FILE_FIRST {
            match self.files.keys().nth(usize::from(index - keys::FILE_FIRST)) {
                Some(name) => {
                    let name = name.clone();
                    self.refresh_file(&name);
                    Selected::File(name)
                }
                None => Selected::None,
            }
        } else if self.legacy.contains_key(&key) {
            Selected::Legacy(key)
        } else {
            Selected::None
        };
    }

    fn current(&self) -> Option<&Item> {
        match &self.selected {
            Selected::None => None,
            Selected::Legacy(k) => self.legacy.get(k),
            Selected::File(n) => self.files.get(n),
        }
    }

    fn current_mut(&mut self) -> Option<&mut Item> {
        match &self.selected {
            Selected::None => None,
            Selected::Legacy(k) => self.legacy.get_mut(k),
            Selected::File(n) => self.files.get_mut(n),
        }
    }

    /// The next byte of the selected item through the data port; 0 past
    /// its end or with nothing selected.
    fn read_data_byte(&mut self) -> u8 {
        let offset = self.offset;
        let byte = self
            .current()
            .and_then(|i| usize::try_from(offset).ok().and_then(|o| i.data.get(o)))
            .copied();
        if byte.is_some() {
            self.offset += 1;
        }
        byte.unwrap_or(0)
    }

    /// Run the DMA request whose descriptor is at `addr`.
    pub fn dma(&mut self, addr: u64) {
        let mut desc = [0u8; 16];
        if self.mem.read_slice(&mut desc, GuestAddress(addr)).is_err() {
            // Nowhere to report the error: the descriptor itself is not in
            // guest memory.
            debug!("fw_cfg: DMA descriptor at {addr:#x} is outside guest memory");
            return;
        }
        let control = u32::from_be_bytes(desc[0..4].try_into().expect("4 bytes"));
        let length = u32::from_be_bytes(desc[4..8].try_into().expect("4 bytes"));
        let address = u64::from_be_bytes(desc[8..16].try_into().expect("8 bytes"));
        let status = self.dma_transfer(control, length, address);
        if status & DMA_CTL_ERROR != 0 {
            debug!("fw_cfg: DMA control {control:#x} length {length} at {address:#x} failed");
        }
        // If this fails the descriptor vanished: nothing more to do.
        let _ = self
            .mem
            .write_slice(&status.to_be_bytes(), GuestAddress(addr));
    }

    /// Carry out one DMA request; returns the control word to write back.
    fn dma_transfer(&mut self, control: u32, length: u32, address: u64) -> u32 {
        if control & DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let (read, write, skip) = (
            control & DMA_CTL_READ != 0,
            control & DMA_CTL_WRITE != 0,
            control & DMA_CTL_SKIP != 0,
        );
        if !(read || write || skip) || length == 0 {
            return 0;
        }
        let length = u64::from(length);
        let offset = self.offset;
        let (item_len, writable) = match self.current() {
            Some(i) => (i.data.len() as u64, i.writable),
            None => (0, false),
        };
        let available = item_len.saturating_sub(offset).min(length);
        if read {
            if address.checked_add(length).is_none() {
                return DMA_CTL_ERROR;
            }
            if available > 0 {
                let item = self.current().expect("an item has bytes");
                let data = &item.data[offset as usize..(offset + available) as usize];
                if self.mem.write_slice(data, GuestAddress(address)).is_err() {
                    return DMA_CTL_ERROR;
                }
            }
            if self
                .write_zeros(address + available, length - available)
                .is_err()
            {
                return DMA_CTL_ERROR;
            }
        } else if write {
            if !writable || available < length {
                return DMA_CTL_ERROR;
            }
            let mem = self.mem.clone();
            let item = self.current_mut().expect("a writable item exists");
            let dst = &mut item.data[offset as usize..(offset + length) as usize];
            if mem.read_slice(dst, GuestAddress(address)).is_err() {
                return DMA_CTL_ERROR;
            }
        }
        // Read, write and skip all move the offset past the bytes that
        // exist; a skip past the end stops at the end.
        self.offset = offset + available;
        0
    }

    fn write_zeros(&self, mut addr: u64, mut len: u64) -> Result<(), ()> {
        let zeros = [0u8; ZERO_CHUNK];
        while len > 0 {
            let n = len.min(ZERO_CHUNK as u64);
            self.mem
                .write_slice(&zeros[..n as usize], GuestAddress(addr))
                .map_err(|_| ())?;
            addr = addr.checked_add(n).ok_or(())?;
            len -= n;
        }
        Ok(())
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            // The selector reads as data too, as QEMU's combined port does.
            0 | 1 => {
                for b in data.iter_mut() {
                    *b = self.read_data_byte();
                }
            }
            _ => {
                for (i, b) in data.iter_mut().enumerate() {
                    let at = (offset + i as u64).checked_sub(DMA_OFFSET);
                    *b = at
                        .and_then(|a| DMA_SIGNATURE.get(a as usize))
                        .copied()
                        .unwrap_or(0);
                }
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            // Data port writes were dropped from QEMU 2.4 on; DMA writes
            // replace them.
            (0 | 1, _) => {}
            (4, 4) => self.dma_high = u32::from_be_bytes(data.try_into().expect("4 bytes")),
            (8, 4) => {
                let low = u32::from_be_bytes(data.try_into().expect("4 bytes"));
                let addr = (u64::from(self.dma_high) << 32) | u64::from(low);
                self.dma_high = 0;
                self.dma(addr);
            }
            (4, 8) => {
                self.dma_high = 0;
                self.dma(u64::from_be_bytes(data.try_into().expect("8 bytes")));
            }
            _ => debug!("fw_cfg: ignored {}-byte write at +{offset}", data.len()),
        }
    }
}
