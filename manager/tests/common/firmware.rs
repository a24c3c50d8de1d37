//! Helpers of the firmware-boot tests: a kilnd configured with the
//! firmware files fetched into cache/guest (scripts/fetch-guest.sh), and
//! disk images imported with a firmware property. The files themselves
//! and the MBR probe's disk come from kiln-tests.

#![allow(dead_code)]

use std::path::Path;

use kiln_api::compute::Image;
use kiln_tests::guest_file;

use super::Kilnd;

/// A `[firmware]` section naming the fetched copies in cache/guest.
pub fn firmware_config() -> String {
    format!(
        "[firmware]\nbios = \"{}\"\nuefi_code = \"{}\"\nuefi_vars_template = \"{}\"\n\
         uefi_code_secboot = \"{}\"\nuefi_vars_secboot_template = \"{}\"\n",
        guest_file("bios.bin").display(),
        guest_file("OVMF_CODE.fd").display(),
        guest_file("OVMF_VARS.fd").display(),
        guest_file("OVMF_CODE_4M.fd").display(),
        guest_file("OVMF_VARS_4M.ms2023.fd").display()
    )
}

/// Creates the `fw.small` flavor (1 vCPU, 256 MiB, 1 GB) the firmware
/// tests' servers use.
pub fn fw_flavor(k: &Kilnd) {
    let r = k.req(
        "POST",
        "/v1/flavors",
        Some(r#"{"name":"fw.small","vcpus":1,"ram_mb":256,"disk_gb":1}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

/// A kilnd with the firmware files and the `fw.small` flavor.
pub fn start_fw_kilnd() -> Kilnd {
    let k = super::vm::start_kilnd(&firmware_config());
    fw_flavor(&k);
    k
}

/// Imports a disk image with a firmware property (`None`: left out) and
/// waits until it is active.
pub fn import_disk_fw(
    k: &Kilnd,
    name: &str,
    path: &Path,
    format: &str,
    firmware: Option<&str>,
) -> Image {
    let fw = firmware
        .map(|f| format!(r#","firmware":"{f}""#))
        .unwrap_or_default();
    k.import_disk_with(name, path, format, &fw)
}
