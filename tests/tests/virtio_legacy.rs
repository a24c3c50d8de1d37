//! Transitional virtio-pci on real KVM: the `virtio_legacy` probe guest
//! finds a `transitional=on` disk by its legacy ID (1af4:1001), moves its
//! I/O BAR, and drives it as a virtio 0.9.5 driver through that BAR and
//! the legacy ring layout; the test checks the pattern in the host file
//! and that the VMM followed the move with its PIO ioeventfd.

use std::fs;
use std::time::Duration;

use kiln_tests::{kvm_available, probe, ScratchDir, Vm, VmSpec};

const TIMEOUT: Duration = Duration::from_secs(60);

fn start(disk: String, extra: &[&str]) -> Vm {
    let mut spec = VmSpec::new(probe("virtio_legacy"));
    spec.extra_args = vec!["--disk".into(), disk];
    spec.extra_args.extend(extra.iter().map(|s| s.to_string()));
    let mut vm = Vm::start(&spec);
    let code = vm.wait_exit_code(TIMEOUT);
    assert_eq!(code, 0, "exit code\n{}", vm.describe());
    vm
}

#[test]
fn a_legacy_driver_writes_and_reads_a_transitional_disk() {
    if !kvm_available("a_legacy_driver_writes_and_reads_a_transitional_disk") {
        return;
    }
    let dir = ScratchDir::new("vlegacy").unwrap();
    let img = dir.path().join("disk.raw");
    fs::File::create(&img).unwrap().set_len(2 << 20).unwrap();
    // A transitional entropy device too: a second I/O BAR, sharing the
    // disk's INTx GSI (slots 1 and 2 both route to 10).
    let vm = start(
        format!("path={},format=raw,transitional=on", img.display()),
        &["--rng", "transitional=on"],
    );
    let out = vm.serial();
    assert!(!out.contains("FAIL"), "{}", vm.describe());
    for line in [
        "virtio-legacy: I/O BAR moved to 0xd000",
        "virtio-legacy: queue 0 has 256 entries",
        "virtio-legacy: capacity 4096 sectors",
        "virtio-legacy: wrote sector 1",
        "virtio-legacy: ISR queue bit set, cleared by the read",
        "virtio-legacy: INTx on GSI 10 left vector 0x50 pending in the LAPIC",
        "virtio-legacy: read back and verified 512 bytes",
        "virtio-legacy: reset done",
        "virtio-legacy: done",
    ] {
        assert!(out.contains(line), "missing {line:?}\n{}", vm.describe());
    }
    let pattern: Vec<u8> = (0..512u32).map(|i| (i * 5 + 11) as u8).collect();
    let data = fs::read(&img).unwrap();
    assert_eq!(&data[512..1024], &pattern[..], "sector 1 on the host");
    assert!(data[..512].iter().all(|&b| b == 0), "sector 0 untouched");
    assert!(data[1024..].iter().all(|&b| b == 0), "the rest untouched");
    // The VMM placed the I/O BAR, followed the guest's move, and every
    // notify (all after the move) went through the PIO ioeventfd.
    let log = vm.vmm_log();
    assert!(
        log.contains("virtio type 2 is transitional: I/O BAR 0 at port 0xc000, INTx GSI 10"),
        "{log}"
    );
    assert!(
        log.contains("virtio type 4 is transitional: I/O BAR 0 at port 0xc100, INTx GSI 10"),
        "{log}"
    );
    assert!(log.contains("I/O BAR now at 0xd000"), "{log}");
    assert!(log.contains("uses the Legacy interface"), "{log}");
    assert!(!log.contains("notified through a vCPU exit"), "{log}");
}

#[test]
fn a_disk_is_modern_only_by_default() {
    if !kvm_available("a_disk_is_modern_only_by_default") {
        return;
    }
    let dir = ScratchDir::new("vmodern").unwrap();
    let img = dir.path().join("disk.raw");
    fs::File::create(&img).unwrap().set_len(2 << 20).unwrap();
    let vm = start(format!("path={}", img.display()), &[]);
    assert!(
        vm.serial()
            .contains("virtio-legacy: FAIL no transitional virtio-blk (1af4:1001)"),
        "{}",
        vm.describe()
    );
    assert!(fs::read(&img).unwrap().iter().all(|&b| b == 0));
}

/// The same driver, with the disk's IOAPIC pin programmed as an OS
/// programs it from Kiln's ACPI tables (the DSDT's static _PRT entry and
/// the MADT's override for GSI 10: level triggered, active low; probe
/// `virtio_legacy_level`): KVM's IOAPIC still delivers the resampling
/// irqfd's assertion, since it ignores the polarity bit, and delivers it
/// as a level interrupt (remote IRR set until an EOI).
#[test]
fn intx_reaches_a_level_active_low_ioapic_entry() {
    if !kvm_available("intx_reaches_a_level_active_low_ioapic_entry") {
        return;
    }
    let dir = ScratchDir::new("vlevel").unwrap();
    let img = dir.path().join("disk.raw");
    fs::File::create(&img).unwrap().set_len(2 << 20).unwrap();
    let mut spec = VmSpec::new(probe("virtio_legacy_level"));
    spec.extra_args = vec![
        "--disk".into(),
        format!("path={},format=raw,transitional=on", img.display()),
    ];
    let mut vm = Vm::start(&spec);
    let code = vm.wait_exit_code(TIMEOUT);
    assert_eq!(code, 0, "exit code\n{}", vm.describe());
    let out = vm.serial();
    assert!(!out.contains("FAIL"), "{}", vm.describe());
    for line in [
        "virtio-legacy: level active-low entry delivered, remote IRR set",
        "virtio-legacy: INTx on GSI 10 left vector 0x50 pending in the LAPIC",
        "virtio-legacy: read back and verified 512 bytes",
        "virtio-legacy: done",
    ] {
        assert!(out.contains(line), "missing {line:?}\n{}", vm.describe());
    }
    let pattern: Vec<u8> = (0..512u32).map(|i| (i * 5 + 11) as u8).collect();
    assert_eq!(&fs::read(&img).unwrap()[512..1024], &pattern[..]);
}
