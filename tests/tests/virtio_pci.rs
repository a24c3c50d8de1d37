//! virtio over PCI on real KVM: the `virtio_pci` probe guest enumerates
//! PCI, negotiates, sets up queues and MSI-X, and drives each device;
//! these tests give it a raw disk, a qcow2 disk, the entropy device, and a
//! NIC on a tap bridged (inside a network namespace the test creates) to a
//! peer at 10.9.0.1, then check what the host sees.

use std::fs;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use kiln_tests::disk::{assert_only_sector_1, assert_untouched, blank_raw, sector_pattern};
use kiln_tests::netns::{NetNs, PEER_IP};
use kiln_tests::{kvm_available, probe, ScratchDir, Vm, VmSpec};

const TIMEOUT: Duration = Duration::from_secs(60);

fn run_probe(args: Vec<String>) -> Vm {
    let vm = Vm::run_to_poweroff(&VmSpec::new(probe("virtio_pci")).args(args), TIMEOUT);
    vm.assert_serial_lines(&["virtio: done"]);
    vm
}

/// The probe's pattern on sector 1.
fn pattern() -> Vec<u8> {
    sector_pattern(7, 3)
}

fn assert_blk_lines(vm: &Vm, serial: &str) {
    vm.assert_serial_lines(&[
        "virtio-blk: BAR 0 moved to 0xfebf8000",
        "virtio-blk: capacity 4096 sectors",
        "virtio-blk: wrote sector 1",
        "virtio-blk: MSI-X vector 0x40 pending in the LAPIC",
        "virtio-blk: read back and verified 512 bytes",
        "virtio-blk: MSI-X vector 0x41 pending after reprogramming",
        "virtio-blk: NEEDS_RESET after a bad available index",
        "virtio-blk: reset done",
        &format!("virtio-blk: serial {serial}\n"),
    ]);
    // The BAR move reached the VMM, and the guest's notifications (all
    // after the move) went through KVM ioeventfds, never a vCPU exit; the
    // hostile index was logged.
    let log = vm.vmm_log();
    assert!(log.contains("BAR 0 now at 0xfebf8000"), "{log}");
    assert!(!log.contains("notified through a vCPU exit"), "{log}");
    assert!(log.contains("needs a reset"), "{log}");
}

#[test]
fn virtio_blk_on_a_raw_file() {
    if !kvm_available("virtio_blk_on_a_raw_file") {
        return;
    }
    raw_disk_round_trip("vblk", "", "kiln-raw-disk");
}

/// A blank raw disk with `options` (`,key=value...`) and `serial`: the
/// probe's write lands in sector 1 of the file and nowhere else.
fn raw_disk_round_trip(tag: &str, options: &str, serial: &str) -> Vm {
    let dir = ScratchDir::new(tag).unwrap();
    let img = blank_raw(dir.path(), "disk.raw");
    let vm = run_probe(vec![
        "--disk".into(),
        format!("path={},format=raw{options},serial={serial}", img.display()),
    ]);
    assert_blk_lines(&vm, serial);
    assert_only_sector_1(&fs::read(&img).unwrap(), &pattern());
    vm
}

#[test]
fn virtio_blk_on_a_qcow2_image() {
    if !kvm_available("virtio_blk_on_a_qcow2_image") {
        return;
    }
    let dir = ScratchDir::new("vqcow").unwrap();
    let img = dir.path().join("disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("2M")
        .status()
        .expect("run qemu-img (scripts/setup.sh installs it)");
    assert!(st.success());
    let vm = run_probe(vec![
        "--disk".into(),
        format!("path={},format=qcow2,serial=kiln-qcow2", img.display()),
    ]);
    assert_blk_lines(&vm, "kiln-qcow2");
    // QEMU's own tools agree: the image is consistent and holds the data.
    let check = Command::new("qemu-img")
        .arg("check")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let raw = dir.path().join("out.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&img)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    let data = fs::read(&raw).unwrap();
    assert_eq!(&data[512..1024], &pattern()[..]);
}

#[test]
fn virtio_blk_read_only_disk_is_not_written() {
    if !kvm_available("virtio_blk_read_only_disk_is_not_written") {
        return;
    }
    let dir = ScratchDir::new("vro").unwrap();
    let img = blank_raw(dir.path(), "disk.raw");
    let spec = VmSpec::new(probe("virtio_pci")).args([
        "--disk".into(),
        format!("path={},readonly=on", img.display()),
    ]);
    let vm = Vm::run_to_poweroff(&spec, TIMEOUT);
    assert!(
        vm.serial().contains("virtio: FAIL virtio-blk write status"),
        "the write must fail\n{}",
        vm.describe()
    );
    assert_untouched(&img);
}

#[test]
fn virtio_rng_gives_entropy() {
    if !kvm_available("virtio_rng_gives_entropy") {
        return;
    }
    let vm = run_probe(vec!["--rng".into()]);
    let out = vm.serial();
    let line = out
        .lines()
        .find(|l| l.starts_with("virtio-rng: 64 bytes, first 8: "))
        .unwrap_or_else(|| panic!("{}", vm.describe()));
    let hex = line.rsplit(' ').next().unwrap();
    assert_eq!(hex.len(), 16);
    assert_ne!(hex, "0000000000000000");
    assert!(!out.contains("virtio-blk"), "no disk was given");
}

#[test]
fn virtio_net_talks_to_a_peer_through_a_bridged_tap() {
    if !kvm_available("virtio_net_talks_to_a_peer_through_a_bridged_tap") {
        return;
    }
    let ns = NetNs::new("vnet");
    let tap = ns.open_tap("kt0", 1);
    let mac = "52:54:00:4b:69:6c";
    let vm = run_probe(vec![
        "--net".into(),
        format!("fd={},mac={mac}", tap[0].as_raw_fd()),
    ]);
    drop(tap); // the child has its own copy
               // The MAC the guest saw in the reply is the peer's.
    let peer_mac = ns.peer_mac();
    vm.assert_serial_lines(&[
        &format!("virtio-net: MAC {mac}, link up"),
        &format!("virtio-net: ARP reply from {PEER_IP} at {peer_mac}"),
    ]);
    // The peer learned the guest from its request.
    assert!(ns.peer_knows(mac), "the peer never learned {mac}");
}

/// A NIC configured with its link down (`link=down`): the guest's
/// driver reads VIRTIO_NET_S_LINK_UP clear in the status field at its
/// first look, before it ever sends.
#[test]
fn virtio_net_configured_down_reads_link_down() {
    if !kvm_available("virtio_net_configured_down_reads_link_down") {
        return;
    }
    let ns = NetNs::new("vnetdown");
    let tap = ns.open_tap("kt0", 1);
    let mac = "52:54:00:4b:69:6d";
    let vm = Vm::run_to_poweroff(
        &VmSpec::new(probe("virtio_pci")).args([
            "--net".into(),
            format!("fd={},mac={mac},link=down", tap[0].as_raw_fd()),
        ]),
        TIMEOUT,
    );
    drop(tap);
    let out = vm.serial();
    for line in [
        &format!("virtio-net: MAC {mac}"),
        "virtio: FAIL virtio-net: link down",
    ] {
        assert!(out.contains(line), "missing {line:?}\n{}", vm.describe());
    }
    assert!(!out.contains("ARP"), "{}", vm.describe());
    assert!(
        !ns.peer_knows(mac),
        "a frame got out while the link was down"
    );
}

/// With `direct=on` the probe's 512-byte write goes through kiln-block's
/// O_DIRECT path (a bounce buffer where the file wants 4 KiB alignment,
/// then a lone write, which is a plain `pwrite`).
#[test]
fn virtio_blk_on_a_raw_file_with_o_direct() {
    if !kvm_available("virtio_blk_on_a_raw_file_with_o_direct") {
        return;
    }
    raw_disk_round_trip("vblkd", ",direct=on", "kiln-direct");
}

/// With `poll_us=50` the disk's worker polls the queue after each request
/// with notifications suppressed: the probe's requests (which notify and
/// then wait for the used ring) must all still be served, including the
/// ones that come after the window ran out.
#[test]
fn virtio_blk_on_a_raw_file_with_polling() {
    if !kvm_available("virtio_blk_on_a_raw_file_with_polling") {
        return;
    }
    let vm = raw_disk_round_trip("vblkp", ",poll_us=50", "kiln-polled");
    let log = vm.vmm_log();
    assert!(
        log.contains("activated, polling up to 50 us"),
        "the disk was not polled:\n{log}"
    );
}
