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

pub use kiln_tests::tiny_elf;
