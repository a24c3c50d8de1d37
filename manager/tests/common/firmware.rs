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
        "[firmware]\nbios = \"{}\"\nuefi_code = \"{}\"\nuefi_vars_template = \"{}\"\n",
        guest_file("bios.bin").display(),
        guest_file("OVMF_CODE.fd").display(),
        guest_file("OVMF_VARS.fd").display()
    )
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
