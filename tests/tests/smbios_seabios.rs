//! SeaBIOS (Debian's bios.bin) installs the SMBIOS tables kiln-vmm hands
//! it through fw_cfg (`etc/smbios/smbios-anchor`, `etc/smbios/smbios-tables`).
//! Debian's build does not print the machine UUID, so a boot sector probe
//! (images/mbr/smbios.s) finds the entry point SeaBIOS put in
//! 0xF0000-0xFFFFF and prints the type 1 UUID bytes it points at.

use std::time::Duration;

use kiln_tests::disk::{smbios_probe_disk, smbios_uuid_hex};
use kiln_tests::{kvm_available, ScratchDir, Vm, VmSpec};

const UUID: &str = "8a1c2e0e-3b4f-4d5e-9f60-718293a4b5c6";

#[test]
fn seabios_installs_the_vmm_smbios_tables() {
    if !kvm_available("seabios_installs_the_vmm_smbios_tables") {
        return;
    }
    let dir = ScratchDir::new("smbios-seabios").unwrap();
    let img = smbios_probe_disk(dir.path());
    let spec = VmSpec::seabios().args([
        "--disk".to_string(),
        format!("path={},format=raw", img.display()),
        "--smbios".to_string(),
        format!("manufacturer=OpenStack Foundation,product=OpenStack Nova,uuid={UUID}"),
    ]);
    let vm = Vm::run_to_poweroff(&spec, Duration::from_secs(120));
    let out = vm.serial();
    // SMBIOS stores the UUID's first three fields little-endian: the
    // probe prints the table's bytes in order.
    assert_eq!(smbios_uuid_hex(UUID), "0e2e1c8a4f3b5e4d9f60718293a4b5c6");
    assert!(
        out.contains(&format!("SMBIOS SM3 UUID {}", smbios_uuid_hex(UUID))),
        "{}",
        vm.describe()
    );
}
