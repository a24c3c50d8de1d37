//! Helpers of the API tests: a kilnd whose VMM binary does not exist (so
//! servers go to ERROR at boot; everything before boot is real).

#![allow(dead_code)]

use kiln_api::compute::Image;

use super::Kilnd;

pub const NO_VMM: &str = "[vmm]\nbinary = \"/nonexistent/kiln-vmm\"\n";

pub fn small_host(vcpus: u64, cpu_ratio: f64, ram_mb: u64, disk_gb: u64) -> String {
    format!(
        "[placement]\ntotal_vcpus = {vcpus}\ncpu_allocation_ratio = {cpu_ratio}\ntotal_ram_mb = {ram_mb}\n\
         reserved_host_memory_mb = 512\ntotal_disk_gb = {disk_gb}\n{NO_VMM}"
    )
}

pub fn kernel_image(k: &Kilnd, name: &str) -> Image {
    let path = k.dir.path().join(format!("{name}.vmlinux"));
    std::fs::write(&path, tiny_elf()).unwrap();
    let body = format!(
        r#"{{"type":"kernel","name":"{name}","kernel":"{}","cmdline":"console=ttyS0"}}"#,
        path.display()
    );
    let r = k.req("POST", "/v1/images", Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    r.json().unwrap()
}

pub fn create(k: &Kilnd, name: &str, flavor: &str, image: &str) -> kiln_api::client::Response {
    k.req(
        "POST",
        "/v1/servers",
        Some(&format!(
            r#"{{"name":"{name}","flavor":"{flavor}","image":"{image}"}}"#
        )),
    )
}

/// The smallest kernel kilnd accepts: an x86-64 ELF file with one loadable
/// segment of 16 bytes at 1 MiB (it boots nowhere: these kilnds have no
/// kiln-vmm).
pub fn tiny_elf() -> Vec<u8> {
    let mut elf = vec![0u8; 64 + 56 + 16];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[18] = 62; // x86-64
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = &mut elf[64..120];
    ph[..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
    ph[24..32].copy_from_slice(&(1u64 << 20).to_le_bytes()); // p_paddr
    ph[32..40].copy_from_slice(&16u64.to_le_bytes()); // p_filesz
    ph[40..48].copy_from_slice(&16u64.to_le_bytes()); // p_memsz
    elf
}
