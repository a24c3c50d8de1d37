//! SeaBIOS (Debian's bios.bin) installs the SMBIOS tables kiln-vmm hands
//! it through fw_cfg (`etc/smbios/smbios-anchor`, `etc/smbios/smbios-tables`).
//! Debian's build does not print the machine UUID, so a boot sector probe
//! (images/mbr/smbios.s) finds the entry point SeaBIOS put in
//! 0xF0000-0xFFFFF and prints the type 1 UUID bytes it points at.

use std::fs;
use std::time::Duration;

use kiln_tests::{asm, kvm_available, repo_root, ScratchDir, Vm, VmSpec};

#[test]
fn seabios_installs_the_vmm_smbios_tables() {
    if !kvm_available("seabios_installs_the_vmm_smbios_tables") {
        return;
    }
    let dir = ScratchDir::new("smbios-seabios").unwrap();
    let mut disk = asm::assemble_flat(&repo_root().join("images/mbr/smbios.s"), 0x7c00, dir.path());
    assert_eq!(disk.len(), 512, "the probe is one sector");
    disk.resize(1 << 20, 0);
    let img = dir.path().join("smbios.raw");
    fs::write(&img, &disk).unwrap();
    let spec = VmSpec::seabios().args([
        "--disk".to_string(),
        format!("path={},format=raw", img.display()),
        "--smbios".to_string(),
        "manufacturer=OpenStack Foundation,product=OpenStack Nova,uuid=8a1c2e0e-3b4f-4d5e-9f60-718293a4b5c6".to_string(),
    ]);
    let vm = Vm::run_to_poweroff(&spec, Duration::from_secs(120));
    let out = vm.serial();
    // SMBIOS stores the UUID's first three fields little-endian: the
    // probe prints the table's bytes in order.
    assert!(
        out.contains("SMBIOS SM3 UUID 0e2e1c8a4f3b5e4d9f60718293a4b5c6"),
        "{}",
        vm.describe()
    );
}
