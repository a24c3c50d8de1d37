//! Transitional virtio-pci on real KVM: the `virtio_legacy` probe guest
//! finds a `transitional=on` disk by its legacy ID (1af4:1001), moves its
//! I/O BAR, and drives it as a virtio 0.9.5 driver through that BAR and
//! the legacy ring layout; the test checks the pattern in the host file
//! and that the VMM followed the move with its PIO ioeventfd.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use kiln_tests::disk::{assert_only_sector_1, assert_untouched, blank_raw, sector_pattern};
use kiln_tests::{kvm_available, probe, ScratchDir, Vm, VmSpec};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Run probe `name` on a blank raw disk with the `--disk` options `disk`
/// (`,key=value...`) and the further arguments `extra`, to its power-off;
/// returns the VM and the disk file.
fn run(name: &str, disk: &str, extra: &[&str]) -> (Vm, ScratchDir, PathBuf) {
    let dir = ScratchDir::new(name).unwrap();
    let img = blank_raw(dir.path(), "disk.raw");
    let spec = VmSpec::new(probe(name))
        .args(["--disk".into(), format!("path={}{disk}", img.display())])
        .args(extra.iter().copied());
    (Vm::run_to_poweroff(&spec, TIMEOUT), dir, img)
}

/// The probe's pattern on sector 1.
fn pattern() -> Vec<u8> {
    sector_pattern(5, 11)
}

#[test]
fn a_legacy_driver_writes_and_reads_a_transitional_disk() {
    if !kvm_available("a_legacy_driver_writes_and_reads_a_transitional_disk") {
        return;
    }
    // A transitional entropy device too: a second I/O BAR, sharing the
    // disk's INTx GSI (slots 1 and 2 both route to 10).
    let (vm, _dir, img) = run(
        "virtio_legacy",
        ",format=raw,transitional=on",
        &["--rng", "transitional=on"],
    );
    vm.assert_serial_lines(&[
        "virtio-legacy: I/O BAR moved to 0xd000",
        "virtio-legacy: queue 0 has 256 entries",
        "virtio-legacy: capacity 4096 sectors",
        "virtio-legacy: wrote sector 1",
        "virtio-legacy: ISR queue bit set, cleared by the read",
        "virtio-legacy: INTx on GSI 10 left vector 0x50 pending in the LAPIC",
        "virtio-legacy: read back and verified 512 bytes",
        "virtio-legacy: reset done",
        "virtio-legacy: done",
    ]);
    assert_only_sector_1(&fs::read(&img).unwrap(), &pattern());
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
    let (vm, _dir, img) = run("virtio_legacy", "", &[]);
    assert!(
        vm.serial()
            .contains("virtio-legacy: FAIL no transitional virtio-blk (1af4:1001)"),
        "{}",
        vm.describe()
    );
    assert_untouched(&img);
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
    let (vm, _dir, img) = run("virtio_legacy_level", ",format=raw,transitional=on", &[]);
    vm.assert_serial_lines(&[
        "virtio-legacy: level active-low entry delivered, remote IRR set",
        "virtio-legacy: INTx on GSI 10 left vector 0x50 pending in the LAPIC",
        "virtio-legacy: read back and verified 512 bytes",
        "virtio-legacy: done",
    ]);
    assert_only_sector_1(&fs::read(&img).unwrap(), &pattern());
}
