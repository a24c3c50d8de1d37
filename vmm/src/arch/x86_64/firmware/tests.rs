//! Firmware loading on a real KVM vCPU: the reset vector, the read-only
//! code, the legacy alias and the variable store's flash.

use super::*;
use kvm_ioctls::{Kvm, VcpuExit};
use std::sync::{Arc, Mutex};

use crate::device_manager::firmware::VarsFlash;

const KIB4: usize = 4096;

/// A 4 KiB real-mode program for the reset vector: port 0x80 gets
/// 0x42, then (after trying to overwrite its own first byte) the byte
/// it reads back there; then it programs 0x77 into 0xFFFFE000 (the
/// variable store when one is mapped) with the flash's byte-program
/// command, sends the status it reads there to port 0x80, returns the
/// flash to read-array mode, sends the byte it reads there, and halts.
fn probe_image() -> Vec<u8> {
    let mut img = vec![0u8; KIB4];
    let code: &[u8] = &[
        0xb0, 0x42, // mov al, 0x42
        0xe6, 0x80, // out 0x80, al
        0x2e, 0xc6, 0x06, 0x00, 0xf0, 0x99, // mov byte [cs:0xf000], 0x99
        0x2e, 0xa0, 0x00, 0xf0, // mov al, [cs:0xf000]
        0xe6, 0x80, // out 0x80, al
        0x2e, 0xc6, 0x06, 0x00, 0xe0, 0x10, // mov byte [cs:0xe000], 0x10
        0x2e, 0xc6, 0x06, 0x00, 0xe0, 0x77, // mov byte [cs:0xe000], 0x77
        0x2e, 0xa0, 0x00, 0xe0, // mov al, [cs:0xe000]
        0xe6, 0x80, // out 0x80, al
        0x2e, 0xc6, 0x06, 0x00, 0xe0, 0xff, // mov byte [cs:0xe000], 0xff
        0x2e, 0xa0, 0x00, 0xe0, // mov al, [cs:0xe000]
        0xe6, 0x80, // out 0x80, al
        0xf4, // hlt
    ];
    img[..code.len()].copy_from_slice(code);
    // Reset vector (CS base 0xffff0000, IP 0xfff0): jmp near 0xf000.
    img[0xff0..0xff3].copy_from_slice(&[0xe9, 0x0d, 0xf0]);
    img
}

fn temp_file(tag: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kiln-fw-{}-{tag}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Out(u16, u8),
    MmioWrite(u64, u8),
    MmioRead(u64),
    /// Handled by the flash device.
    Flash,
    Hlt,
}

/// What the probe does first from a read-only code slot: 0x42 to port
/// 0x80, the write to its own first byte (an MMIO exit), and the byte it
/// reads back there (unchanged).
const ROM_PROLOGUE: [Seen; 3] = [
    Seen::Out(0x80, 0x42),
    Seen::MmioWrite(0xffff_f000, 0x99),
    Seen::Out(0x80, 0xb0),
];

/// Run a one-vCPU VM with 16 MiB of RAM on `images` until HLT; MMIO to
/// the variable store goes to its flash device.
/// Also returns the flash device the device manager would put on the bus.
#[allow(clippy::type_complexity)]
fn run(
    images: FirmwareImages<'_>,
) -> (
    Vec<Seen>,
    Firmware,
    GuestMemoryMmap,
    Option<Arc<Mutex<VarsFlash>>>,
) {
    use crate::devices::bus::BusDevice;
    let kvm = Kvm::new().expect("/dev/kvm (these tests run a real KVM vCPU)");
    let vm = kvm.create_vm().unwrap();
    let mem = crate::memory::create(16, Default::default()).unwrap();
    crate::memory::register(&vm, &mem).unwrap();
    vm.set_tss_address(0xfeff_d000).unwrap();
    let mut fw = load(&vm, &mem, images).unwrap();
    let vars_flash = crate::device_manager::firmware::vars_flash(&vm, &mut fw).unwrap();
    let flash = |addr: u64| {
        let v = fw.vars.as_ref()?;
        let f = vars_flash.as_ref()?;
        (addr >= v.guest_addr && addr - v.guest_addr < v.size)
            .then(|| (f.clone(), addr - v.guest_addr))
    };
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let mut seen = Vec::new();
    for _ in 0..100 {
        match vcpu.run().unwrap() {
            VcpuExit::IoOut(port, data) => seen.push(Seen::Out(port, data[0])),
            VcpuExit::MmioWrite(addr, data) => match flash(addr) {
                Some((f, off)) => {
                    f.lock().unwrap().write(off, data);
                    seen.push(Seen::Flash);
                }
                None => seen.push(Seen::MmioWrite(addr, data[0])),
            },
            VcpuExit::MmioRead(addr, data) => match flash(addr) {
                Some((f, off)) => {
                    f.lock().unwrap().read(off, data);
                    seen.push(Seen::Flash);
                }
                None => {
                    data.fill(0xff);
                    seen.push(Seen::MmioRead(addr));
                }
            },
            VcpuExit::Hlt => {
                seen.push(Seen::Hlt);
                break;
            }
            other => panic!("unexpected exit {other:?} after {seen:?}"),
        }
    }
    (seen, fw, mem, vars_flash)
}

#[test]
fn vcpu_starts_at_the_reset_vector_in_a_read_only_rom() {
    let path = temp_file("rom", &probe_image());
    let (seen, fw, mem, _flash) = run(FirmwareImages {
        code: &path,
        vars: None,
    });
    std::fs::remove_file(&path).unwrap();
    assert_eq!(fw.code.guest_addr, 0xffff_f000);
    assert!(fw.vars.is_none());
    if fw.code.read_only {
        let rest = [
            Seen::MmioWrite(0xffff_e000, 0x10),
            Seen::MmioWrite(0xffff_e000, 0x77),
            Seen::MmioRead(0xffff_e000),
            Seen::Out(0x80, 0xff),
            Seen::MmioWrite(0xffff_e000, 0xff),
            Seen::MmioRead(0xffff_e000),
            Seen::Out(0x80, 0xff),
            Seen::Hlt,
        ];
        assert_eq!(seen, [&ROM_PROLOGUE[..], &rest].concat());
    } else {
        assert_eq!(seen[0], ROM_PROLOGUE[0]);
    }
    // The image's end is copied to end at 1 MiB.
    let mut low = vec![0u8; KIB4];
    mem.read_slice(&mut low, GuestAddress(LEGACY_BIOS_END - KIB4 as u64))
        .unwrap();
    assert_eq!(low, probe_image());
}

#[test]
fn variable_store_is_a_flash_backed_by_its_file() {
    let code = temp_file("code", &probe_image());
    let vars = temp_file("vars", &[0xffu8; KIB4]);
    let (seen, fw, _mem, flash) = run(FirmwareImages {
        code: &code,
        vars: Some(&vars),
    });
    let v = fw.vars.as_ref().unwrap();
    assert_eq!((v.guest_addr, v.size), (0xffff_e000, 4096));
    let on_disk = std::fs::read(&vars).unwrap();
    std::fs::remove_file(&code).unwrap();
    std::fs::remove_file(&vars).unwrap();
    assert_eq!((on_disk[0], on_disk[1]), (0x77, 0xff));
    if !v.read_only {
        // No read-only slots: plain memory, no flash device.
        assert!(flash.is_none());
        return;
    }
    // Program command and data, then a status read, all through the
    // device (the slot is gone meanwhile); the read-array command, and
    // then the byte read straight from the re-added slot (no exit).
    let rest = [
        Seen::Flash,
        Seen::Flash,
        Seen::Flash,
        Seen::Out(0x80, crate::devices::legacy::pflash::SR_READY),
        Seen::Flash,
        Seen::Out(0x80, 0x77),
        Seen::Hlt,
    ];
    assert_eq!(seen, [&ROM_PROLOGUE[..], &rest].concat());
}

#[test]
fn only_the_last_128k_go_below_1m() {
    let kvm = Kvm::new().expect("/dev/kvm");
    let vm = kvm.create_vm().unwrap();
    let mem = crate::memory::create(16, Default::default()).unwrap();
    crate::memory::register(&vm, &mem).unwrap();
    let img: Vec<u8> = (0..0x4_0000u32).map(|i| (i / 4096) as u8).collect();
    let path = temp_file("256k", &img);
    let fw = load(
        &vm,
        &mem,
        FirmwareImages {
            code: &path,
            vars: None,
        },
    )
    .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(fw.code.guest_addr, 0xfffc_0000);
    let mut low = vec![0u8; 0x2_0000];
    mem.read_slice(&mut low, GuestAddress(0xe_0000)).unwrap();
    assert_eq!(low, img[0x2_0000..]);
    // Below the window, RAM is untouched.
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0xd_ffff)).unwrap(), 0);
}

#[test]
fn bad_images_are_refused_with_a_reason() {
    let kvm = Kvm::new().expect("/dev/kvm");
    let vm = kvm.create_vm().unwrap();
    let mem = crate::memory::create(16, Default::default()).unwrap();
    let missing = std::env::temp_dir().join("kiln-fw-does-not-exist");
    let err = load(
        &vm,
        &mem,
        FirmwareImages {
            code: &missing,
            vars: None,
        },
    );
    assert!(matches!(err, Err(FirmwareError::Open { .. })));
    for (tag, len) in [("empty", 0usize), ("odd", 5000)] {
        let p = temp_file(tag, &vec![0; len]);
        let err = load(
            &vm,
            &mem,
            FirmwareImages {
                code: &p,
                vars: None,
            },
        );
        std::fs::remove_file(&p).unwrap();
        assert!(
            matches!(err, Err(FirmwareError::Size { size, .. }) if size == len as u64),
            "{tag}"
        );
    }
    let big = temp_file("big", &vec![0; layout::FIRMWARE_MAX_SIZE as usize]);
    let vars = temp_file("bigvars", &[0; KIB4]);
    let err = load(
        &vm,
        &mem,
        FirmwareImages {
            code: &big,
            vars: Some(&vars),
        },
    );
    assert!(matches!(err, Err(FirmwareError::TooLarge { .. })));
    std::fs::remove_file(&big).unwrap();
    std::fs::remove_file(&vars).unwrap();
    assert_eq!(placement(0x2_0000, 0).unwrap(), (0xfffe_0000, 0xfffe_0000));
    assert_eq!(
        placement(0x1e_0000, 0x2_0000).unwrap(),
        (0xffe2_0000, 0xffe0_0000)
    );
}
