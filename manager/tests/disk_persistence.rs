//! A server's completed disk writes survive a `stop` (issue #11), with
//! real kilnd and kiln-vmm on KVM: the disk image holds the persistence
//! boot sector (images/mbr/persist.s) set to halt with interrupts off, so
//! the guest ignores the ACPI power button. SeaBIOS boots it; it writes
//! sector 2 of the root disk (kilnd's qcow2 overlay) through int 13h and
//! prints `KILN-WRITE-OK 1`. `stop` presses the power button, waits the
//! stop timeout, then ends the VMM in an orderly way (control API kill or
//! SIGTERM; SIGKILL only if that does not end it): the server goes SHUTOFF
//! and the overlay holds the write (`qemu-img compare`, `qemu-img check`
//! clean). A `start` then boots a VMM that reads it back: the second boot
//! prints `KILN-WRITE-OK 2`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::firmware::{import_disk_fw, start_fw_kilnd};
use common::vm::{action, assert_nothing_left, console, wait_until};
use kiln_api::compute::ServerStatus;
use kiln_tests::disk::{persist_disk, persist_sector, PersistEnd};

/// SeaBIOS takes a few seconds here; much more under load.
const BOOT: Duration = Duration::from_secs(180);

#[test]
fn stop_keeps_a_completed_write_of_a_guest_that_ignores_the_power_button() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("stop_keeps_a_completed_write...: skipped: /dev/kvm is missing (needs KVM)");
        return;
    }
    let k = start_fw_kilnd();
    let disk = persist_disk(k.dir.path(), PersistEnd::Halt);
    let pristine = std::fs::read(&disk).unwrap();
    import_disk_fw(&k, "persist", &disk, "raw", Some("bios"));
    let s = k.create_server(r#"{"name":"p","flavor":"fw.small","image":"persist"}"#);
    k.wait_status(&s.id, ServerStatus::Active, BOOT);
    wait_until("the guest's write", BOOT, || {
        console(&k, &s.id).contains("KILN-WRITE-OK 1")
    });

    let t = Instant::now();
    action(&k, &s.id, r#"{"action":"stop"}"#);
    let done = k.wait_status(&s.id, ServerStatus::Shutoff, BOOT);
    eprintln!("stop -> SHUTOFF in {} ms", t.elapsed().as_millis());
    assert!(done.fault.is_none(), "{done:?}");

    // The overlay is the image with the guest's sector 2.
    let root = k.state_path(&format!("servers/{}/root.qcow2", s.id));
    let mut expected = pristine;
    expected[1024..1536].copy_from_slice(&persist_sector(1));
    let exp = k.dir.path().join("expected.raw");
    std::fs::write(&exp, &expected).unwrap();
    // The overlay is bigger (the flavor's 1 GiB): compare's default
    // accepts zeros past the smaller image.
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&exp)
        .arg(&root)
        .output()
        .expect("qemu-img compare");
    assert!(
        cmp.status.success(),
        "the overlay lost the write: {}{}",
        String::from_utf8_lossy(&cmp.stdout),
        String::from_utf8_lossy(&cmp.stderr)
    );
    let check = Command::new("qemu-img")
        .arg("check")
        .arg(&root)
        .output()
        .expect("qemu-img check");
    assert!(
        check.status.success(),
        "qemu-img check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let vmm_log =
        std::fs::read_to_string(k.state_path(&format!("servers/{}/vmm.log", s.id))).unwrap();
    assert!(
        vmm_log.contains("virtio-blk0: written back in"),
        "{vmm_log}"
    );
    assert!(
        vmm_log.contains("exit status 13"),
        "an orderly end\n{vmm_log}"
    );

    // The next boot reads it back.
    action(&k, &s.id, r#"{"action":"start"}"#);
    wait_until("the second boot's write", BOOT, || {
        console(&k, &s.id).contains("KILN-WRITE-OK 2")
    });
    k.delete_server(&s.id);
    assert_nothing_left(&k);
}
