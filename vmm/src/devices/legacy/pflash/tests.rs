//! The command sequences OVMF's flash driver uses, against an in-memory
//! store and against a real vars file.

use std::sync::{Arc, Mutex};

use super::*;

/// A store in a Vec, counting flushes.
struct VecStore {
    bytes: Vec<u8>,
    flushes: usize,
}

impl Store for VecStore {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read(&self, offset: u64) -> u8 {
        self.bytes[offset as usize]
    }
    fn write(&mut self, offset: u64, value: u8) {
        self.bytes[offset as usize] = value;
    }
    fn fill(&mut self, offset: u64, len: u64, value: u8) {
        self.bytes[offset as usize..(offset + len) as usize].fill(value);
    }
    fn flush(&mut self) {
        self.flushes += 1;
    }
}

/// Records the mapping changes; `true` means reads bypass the device.
#[derive(Clone, Default)]
struct Mapping(Arc<Mutex<Vec<bool>>>);

impl ArrayMapping for Mapping {
    fn set_mapped(&mut self, mapped: bool) {
        self.0.lock().unwrap().push(mapped);
    }
}

const SIZE: usize = 4 * BLOCK_SIZE as usize;

fn device(bytes: Vec<u8>) -> (PflashDevice<VecStore, Mapping>, Mapping) {
    let m = Mapping::default();
    let store = VecStore { bytes, flushes: 0 };
    (PflashDevice::new(store, m.clone()), m)
}

fn rd<S: Store, M: ArrayMapping>(d: &mut PflashDevice<S, M>, offset: u64) -> u8 {
    let mut b = [0u8];
    d.read(offset, &mut b);
    b[0]
}

fn wr<S: Store, M: ArrayMapping>(d: &mut PflashDevice<S, M>, offset: u64, v: u8) {
    d.write(offset, &[v]);
}

/// OVMF's QemuFlashDetected, as the current EDK2 does it; returns whether
/// it concludes "flash, writable".
fn ovmf_probe<S: Store, M: ArrayMapping>(d: &mut PflashDevice<S, M>) -> bool {
    let mut offset = 0;
    while offset < BLOCK_SIZE {
        let b = rd(d, offset);
        if !matches!(b, 0x50 | 0x70 | 0x00) {
            break;
        }
        offset += 1;
    }
    assert!(offset < BLOCK_SIZE, "no probe location");
    let original = rd(d, offset);
    wr(d, offset, CMD_CLEAR_STATUS);
    let probe = rd(d, offset);
    if original != CMD_CLEAR_STATUS && probe == CMD_CLEAR_STATUS {
        return false; // RAM
    }
    wr(d, offset, CMD_READ_STATUS);
    let probe = rd(d, offset);
    if probe == original || probe == CMD_READ_STATUS || probe != 0 {
        return false; // ROM, RAM, or unknown
    }
    wr(d, offset, CMD_PROGRAM);
    wr(d, offset, original);
    wr(d, offset, CMD_READ_STATUS);
    let status = rd(d, offset);
    wr(d, offset, CMD_READ_ARRAY);
    status & SR_PROGRAM_ERROR == 0
}

fn varstore_like() -> Vec<u8> {
    // The real OVMF_VARS.fd starts with a zero vector (16 bytes of 0) and
    // then a firmware volume GUID.
    let mut v = vec![0xffu8; SIZE];
    v[..16].fill(0);
    v[16..20].copy_from_slice(&[0x8d, 0x2b, 0xf1, 0xff]);
    v
}

#[test]
fn ovmf_detects_a_writable_flash_and_the_store_is_unchanged() {
    let (mut d, m) = device(varstore_like());
    assert!(ovmf_probe(&mut d));
    assert_eq!(d.store().bytes, varstore_like());
    // Back in array mode, with the slot mapped again.
    assert_eq!(d.mode, Mode::ReadArray);
    let changes = m.0.lock().unwrap().clone();
    assert_eq!(changes.last(), Some(&true));
    assert!(
        changes.contains(&false),
        "status reads need the slot removed"
    );
    assert_eq!(rd(&mut d, 16), 0x8d);
}

#[test]
fn clear_status_returns_to_array_mode_without_unmapping() {
    let (mut d, m) = device(varstore_like());
    wr(&mut d, 16, CMD_CLEAR_STATUS);
    assert_eq!(rd(&mut d, 16), 0x8d);
    assert!(m.0.lock().unwrap().is_empty());
}

#[test]
fn byte_program_as_qemu_flash_write_does() {
    let (mut d, m) = device(vec![0xff; SIZE]);
    let data = b"Boot0001";
    let base = 0x1234u64;
    for (i, &b) in data.iter().enumerate() {
        wr(&mut d, base + i as u64, CMD_PROGRAM);
        // Between the command and its data, reads give the status (ready
        // once a first byte was programmed).
        assert_eq!(rd(&mut d, base + i as u64) & !SR_READY, 0);
        wr(&mut d, base + i as u64, b);
        assert_eq!(rd(&mut d, base + i as u64), SR_READY);
    }
    wr(&mut d, base + data.len() as u64 - 1, CMD_READ_ARRAY);
    assert_eq!(&d.store().bytes[base as usize..][..data.len()], data);
    assert_eq!(d.store().bytes[base as usize - 1], 0xff);
    assert_eq!(d.store().bytes[base as usize + data.len()], 0xff);
    // One unmap for the whole sequence, one map at the end, one flush.
    assert_eq!(*m.0.lock().unwrap(), vec![false, true]);
    assert_eq!(d.store().flushes, 1);
    assert_eq!(rd(&mut d, base), b'B');
    // The 0x40 alias and a wide data write.
    wr(&mut d, 0x10, CMD_PROGRAM_ALT);
    d.write(0x10, &[1, 2, 3, 4]);
    wr(&mut d, 0x10, CMD_READ_ARRAY);
    assert_eq!(&d.store().bytes[0x10..0x14], &[1, 2, 3, 4]);
}

#[test]
fn block_erase_fills_one_block() {
    let (mut d, _m) = device(vec![0u8; SIZE]);
    let block = BLOCK_SIZE * 2;
    wr(&mut d, block + 0x10, CMD_BLOCK_ERASE);
    assert_eq!(d.store().bytes[block as usize], 0, "not before confirm");
    wr(&mut d, block + 0x10, CMD_CONFIRM);
    assert_eq!(rd(&mut d, block), SR_READY);
    let b = &d.store().bytes;
    assert!(b[block as usize..(block + BLOCK_SIZE) as usize]
        .iter()
        .all(|&x| x == 0xff));
    assert_eq!(b[block as usize - 1], 0);
    assert_eq!(b[(block + BLOCK_SIZE) as usize], 0);
    wr(&mut d, block, CMD_READ_ARRAY);
    assert_eq!(rd(&mut d, block + 5), 0xff);
    // Status survives until cleared.
    wr(&mut d, 0, CMD_READ_STATUS);
    assert_eq!(rd(&mut d, 0), SR_READY);
    wr(&mut d, 0, CMD_CLEAR_STATUS);
    wr(&mut d, 0, CMD_READ_STATUS);
    assert_eq!(rd(&mut d, 0), 0);
}

#[test]
fn erase_cancelled_by_read_array_erases_nothing() {
    let (mut d, _m) = device(vec![0u8; SIZE]);
    wr(&mut d, 0, CMD_BLOCK_ERASE);
    wr(&mut d, 0, CMD_READ_ARRAY);
    assert!(d.store().bytes.iter().all(|&b| b == 0));
    assert_eq!(d.status, 0);
    assert_eq!(d.mode, Mode::ReadArray);
}

#[test]
fn bogus_commands_set_error_bits_and_touch_nothing() {
    let (mut d, m) = device(vec![0x5a; SIZE]);
    for cmd in [0x01u8, 0x33, 0xe8, 0xaa] {
        wr(&mut d, 0x100, cmd);
        assert_eq!(d.mode, Mode::ReadArray, "{cmd:#x}");
        wr(&mut d, 0x100, CMD_READ_STATUS);
        assert_eq!(
            rd(&mut d, 0x100) & (SR_ERASE_ERROR | SR_PROGRAM_ERROR),
            SR_ERASE_ERROR | SR_PROGRAM_ERROR
        );
        wr(&mut d, 0x100, CMD_CLEAR_STATUS);
    }
    // Erase setup followed by something else than confirm.
    wr(&mut d, 0, CMD_BLOCK_ERASE);
    wr(&mut d, 0, 0x42);
    assert_eq!(d.status, SR_ERASE_ERROR | SR_PROGRAM_ERROR);
    // Lock setup followed by nonsense.
    wr(&mut d, 0, CMD_CLEAR_STATUS);
    wr(&mut d, 0, CMD_LOCK_SETUP);
    wr(&mut d, 0, 0x77);
    assert_eq!(d.status, SR_ERASE_ERROR | SR_PROGRAM_ERROR);
    // Lock and unlock are accepted.
    wr(&mut d, 0, CMD_CLEAR_STATUS);
    wr(&mut d, 0, CMD_LOCK_SETUP);
    wr(&mut d, 0, CMD_CONFIRM);
    assert_eq!(d.status, 0);
    wr(&mut d, 0, CMD_READ_ARRAY);
    assert!(d.store().bytes.iter().all(|&b| b == 0x5a));
    assert_eq!(m.0.lock().unwrap().last(), Some(&true));
    // Empty writes are ignored.
    d.write(0, &[]);
}

#[test]
fn program_past_the_end_is_clipped_with_an_error() {
    let (mut d, _m) = device(vec![0xff; SIZE]);
    let last = SIZE as u64 - 2;
    wr(&mut d, last, CMD_PROGRAM);
    d.write(last, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(rd(&mut d, 0) & SR_PROGRAM_ERROR, SR_PROGRAM_ERROR);
    assert_eq!(&d.store().bytes[SIZE - 2..], &[1, 2]);
    assert_eq!(d.store().bytes.len(), SIZE);
    // Offsets past the end in every mode read safely.
    for cmd in [CMD_READ_ARRAY, CMD_READ_STATUS, CMD_READ_ID, CMD_CFI_QUERY] {
        wr(&mut d, 0, cmd);
        let mut b = [0u8; 8];
        d.read(SIZE as u64 - 4, &mut b);
        d.read(u64::MAX - 2, &mut b);
    }
    wr(&mut d, 0, CMD_PROGRAM);
    d.write(u64::MAX - 1, &[0; 8]);
    assert_eq!(d.store().bytes.len(), SIZE);
    // An erase past the end (only reachable through a larger bus range).
    wr(&mut d, 0, CMD_CLEAR_STATUS);
    let before = d.store().bytes.clone();
    wr(&mut d, SIZE as u64 + 10, CMD_BLOCK_ERASE);
    wr(&mut d, SIZE as u64 + 10, CMD_CONFIRM);
    assert_eq!(rd(&mut d, 0) & SR_ERASE_ERROR, SR_ERASE_ERROR);
    assert_eq!(d.store().bytes, before);
}

#[test]
fn identifier_and_cfi_query() {
    let (mut d, _m) = device(vec![0xff; SIZE]);
    wr(&mut d, 0, CMD_READ_ID);
    assert_eq!((rd(&mut d, 0), rd(&mut d, 1)), (ID_MANUFACTURER, ID_DEVICE));
    wr(&mut d, 0, CMD_CFI_QUERY);
    let q: Vec<u8> = (0x10..0x13).map(|o| rd(&mut d, o)).collect();
    assert_eq!(q, b"QRY");
    assert_eq!(rd(&mut d, 0x13), 1, "Intel command set");
    assert_eq!(1u64 << rd(&mut d, 0x27), SIZE as u64);
    let blocks = u64::from(rd(&mut d, 0x2d)) + (u64::from(rd(&mut d, 0x2e)) << 8) + 1;
    let block = (u64::from(rd(&mut d, 0x2f)) + (u64::from(rd(&mut d, 0x30)) << 8)) * 256;
    assert_eq!(blocks * block, SIZE as u64);
    wr(&mut d, 0, CMD_READ_ARRAY);
    assert_eq!(rd(&mut d, 0x10), 0xff);
}

#[test]
fn writes_reach_the_vars_file() {
    use std::fs::OpenOptions;
    use vm_memory::FileOffset;
    let path = std::env::temp_dir().join(format!("kiln-pflash-{}", std::process::id()));
    std::fs::write(&path, varstore_like()).unwrap();
    {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let region = MmapRegion::<()>::from_file(FileOffset::new(file, 0), SIZE).unwrap();
        let m = Mapping::default();
        let mut d = PflashDevice::new(MmapStore::new(region), m);
        assert!(ovmf_probe(&mut d));
        wr(&mut d, BLOCK_SIZE, CMD_BLOCK_ERASE);
        wr(&mut d, BLOCK_SIZE, CMD_CONFIRM);
        for (i, &b) in b"kiln".iter().enumerate() {
            wr(&mut d, BLOCK_SIZE + i as u64, CMD_PROGRAM);
            wr(&mut d, BLOCK_SIZE + i as u64, b);
        }
        wr(&mut d, BLOCK_SIZE, CMD_READ_ARRAY);
        assert_eq!(rd(&mut d, BLOCK_SIZE), b'k');
        // The device (and its mapping) goes away, as when the VMM
        // re-executes itself for a reset.
    }
    let on_disk = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut want = varstore_like();
    want[BLOCK_SIZE as usize..][..4].copy_from_slice(b"kiln");
    assert_eq!(on_disk, want);
}

#[test]
fn random_accesses_never_panic_or_leave_the_store() {
    let (mut d, m) = device(vec![0xa5; SIZE]);
    // xorshift64: a fixed, reproducible sequence.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let interesting = [
        CMD_READ_ARRAY,
        CMD_CLEAR_STATUS,
        CMD_READ_STATUS,
        CMD_READ_ID,
        CMD_CFI_QUERY,
        CMD_PROGRAM,
        CMD_BLOCK_ERASE,
        CMD_CONFIRM,
        CMD_LOCK_SETUP,
    ];
    for _ in 0..200_000 {
        let r = next();
        let offset = match r % 4 {
            0 => r >> 40,                   // anywhere, mostly far past the end
            _ => (r >> 20) % (SIZE as u64), // inside
        };
        let len = [1usize, 2, 4, 8][(r >> 8) as usize % 4];
        if r & 0x10 != 0 {
            let v = if r & 0x20 != 0 {
                interesting[(r >> 12) as usize % interesting.len()]
            } else {
                (r >> 32) as u8
            };
            d.write(offset, &vec![v; len]);
        } else {
            let mut buf = vec![0u8; len];
            d.read(offset, &mut buf);
        }
    }
    assert_eq!(d.store().bytes.len(), SIZE);
    // Whatever happened, read array brings the slot back.
    wr(&mut d, 0, CMD_READ_ARRAY);
    wr(&mut d, 0, CMD_READ_ARRAY);
    assert_eq!(d.mode, Mode::ReadArray);
    assert!(m.0.lock().unwrap().last().copied().unwrap_or(true));
}
