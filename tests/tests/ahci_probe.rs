//! The AHCI controller driven directly on real KVM: the `ahci` probe guest
//! (images/probes/ahci.s) finds it, identifies a SATA disk and an ATAPI
//! CD-ROM, writes sector 1 with WRITE DMA EXT and reads it back, sends the
//! CD-ROM INQUIRY, READ CAPACITY and READ(10), then hostile command lists
//! and PRDTs (data at 1 TiB, 65535 PRD entries running past RAM, a command
//! table and a command list at 1 TiB), each of which must end in a
//! task-file error on the port while the VMM runs on. The test checks the
//! sector in the host file and that the VMM logged the refusals.

use std::fs;
use std::process::Command;
use std::time::Duration;

use kiln_tests::disk::{assert_only_sector_1, blank_raw, sector_pattern};
use kiln_tests::{kvm_available, probe, ScratchDir, Vm, VmSpec};

#[test]
fn a_probe_drives_the_ahci_disk_and_cdrom_and_survives_hostile_commands() {
    if !kvm_available("a_probe_drives_the_ahci_disk_and_cdrom_and_survives_hostile_commands") {
        return;
    }
    let dir = ScratchDir::new("ahciprobe").unwrap();
    let img = blank_raw(dir.path(), "disk.raw");
    let root = dir.path().join("iso");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("HELLO.TXT"), "kiln\n").unwrap();
    let iso = dir.path().join("cd.iso");
    let st = Command::new("genisoimage")
        .args(["-quiet", "-V", "KILNPROBE", "-o"])
        .arg(&iso)
        .arg(&root)
        .status()
        .expect("genisoimage (scripts/setup.sh installs it)");
    assert!(st.success());
    let blocks = fs::metadata(&iso).unwrap().len() / 2048;
    let spec = VmSpec::new(probe("ahci")).memory_mib(64).args([
        "--disk".to_string(),
        format!("path={},format=raw,bus=sata", img.display()),
        "--cdrom".to_string(),
        iso.display().to_string(),
    ]);
    let vm = Vm::run_to_poweroff(&spec, Duration::from_secs(180));
    let last = format!("ahci: CD-ROM last LBA {}, block 2048", blocks - 1);
    vm.assert_serial_lines(&[
        "ahci: ICH9 AHCI, 6 ports, disk on 0, ATAPI on 1",
        "ahci: disk has 4096 sectors",
        "ahci: wrote sector 1",
        "ahci: read back and verified 512 bytes",
        "ahci: INQUIRY: CD-ROM, vendor KILN",
        &last,
        "ahci: READ(10) LBA 16: CD001",
        "ahci: hostile command lists and PRDTs: task-file errors",
        "ahci: done",
    ]);
    assert_only_sector_1(&fs::read(&img).unwrap(), &sector_pattern(7, 3));
    let log = vm.vmm_log();
    for refusal in [
        "disk transfer refused: PRD entry 0: data block 0x10000000000+0x200 is outside guest memory",
        "disk transfer refused: PRD entry 8 at 0x4000000 is outside guest memory",
        "command table at 0x10000000000 is outside guest memory",
        "command header at 0x10000",
    ] {
        assert!(log.contains(refusal), "{refusal}\n{}", vm.describe());
    }
}
