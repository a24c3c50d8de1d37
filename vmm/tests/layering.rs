//! The layering rules of kiln-vmm:
//!
//! - `src/devices/` is the lowest layer. Its code depends only on what
//!   `devices/mod.rs` declares and on library crates, never on the VMM's
//!   `arch`, `vm`, `memory`, `seccomp` or `net` modules (the device
//!   manager, `src/device_manager/`, hands devices what those provide).
//! - `src/arch/` never imports `devices` or `device_manager`: the ACPI
//!   tables and fw_cfg contents are built from a plain description
//!   (`arch/x86_64/platform.rs`) that the device manager fills from the
//!   devices it built.
//!
//! This test reads every source file under each folder and fails, naming
//! file and line, when one reaches a forbidden module through `crate::`,
//! a `crate::{..}` group or a `super::` chain that climbs to the crate
//! root.
//!
//! Test-only modules (declared under `#[cfg(test)]`, and everything below
//! them) are exempt: they check code against the real host and platform
//! (devices: a tap, the seccomp filters, the PC layout; arch: the tables
//! built from the device manager's own description, the flash device
//! behind the firmware mapping).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The modules devices must not use.
const DEVICES_FORBIDDEN: [&str; 5] = ["arch", "vm", "memory", "seccomp", "net"];
/// The modules arch must not use.
const ARCH_FORBIDDEN: [&str; 2] = ["devices", "device_manager"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line, without its `//` comment (and doc comments).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The file a `mod name;` in `parent` is.
fn child_file(parent: &Path, name: &str) -> PathBuf {
    let dir = if parent.file_name().is_some_and(|f| f == "mod.rs") {
        parent.parent().unwrap().to_path_buf()
    } else {
        parent.with_extension("")
    };
    let flat = dir.join(format!("{name}.rs"));
    if flat.exists() {
        flat
    } else {
        dir.join(name).join("mod.rs")
    }
}

/// Files of modules declared `#[cfg(test)] mod x;`, and all below them.
fn test_only(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for f in files {
        let text = fs::read_to_string(f).unwrap();
        let mut cfg_test = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with("#[cfg(test)]") {
                cfg_test = true;
                continue;
            }
            if cfg_test {
                let decl = line
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub(super) ")
                    .trim_start_matches("pub ");
                if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                    out.insert(child_file(f, name.trim()));
                }
            }
            cfg_test = false;
        }
    }
    // Below a test-only module: its folder's files.
    let dirs: Vec<PathBuf> = out
        .iter()
        .filter(|p| p.file_name().is_some_and(|f| f == "mod.rs"))
        .map(|p| p.parent().unwrap().to_path_buf())
        .collect();
    out.extend(
        files
            .iter()
            .filter(|f| dirs.iter().any(|d| f.starts_with(d)))
            .cloned(),
    );
    out
}

/// How deep the module of `file` is below the crate root
/// (`devices/mod.rs`: 1, `devices/bus.rs`: 2).
fn depth(rel: &Path) -> usize {
    let parts = rel.components().count();
    if rel.file_name().is_some_and(|f| f == "mod.rs") {
        parts - 1
    } else {
        parts
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `code` with the spaces inside paths and groups taken out
/// (`crate :: { a, b }` → `crate::{a,b}`), words still apart.
fn squeeze(code: &str) -> String {
    let mut s = code.split_whitespace().collect::<Vec<_>>().join(" ");
    for (from, to) in [
        (" ::", "::"),
        (":: ", "::"),
        ("{ ", "{"),
        (" }", "}"),
        (" ,", ","),
        (", ", ","),
    ] {
        while s.contains(from) {
            s = s.replace(from, to);
        }
    }
    s
}

/// The `forbidden` module `code` reaches from a file at `depth`, if any.
fn violation(code: &str, depth: usize, forbidden: &[&str]) -> Option<String> {
    let flat = squeeze(code);
    let mut found = None;
    let mut check = |rest: &str, via: &str| {
        for &m in forbidden {
            if let Some(after) = rest.strip_prefix(m) {
                if !after.starts_with(is_ident) {
                    found = Some(format!("{via}{m}"));
                }
            }
        }
    };
    // `crate::x` and `crate::{.., x, ..}`.
    for (i, _) in flat.match_indices("crate::") {
        if i > 0 && flat[..i].ends_with(is_ident) {
            continue;
        }
        let rest = &flat[i + 7..];
        check(rest, "crate::");
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                check(item, "crate::{..}::");
            }
        }
    }
    // A `super::` chain that climbs to the crate root, then a module.
    for (i, _) in flat.match_indices("super::") {
        if i >= 7 && &flat[i - 7..i] == "super::" {
            continue;
        }
        if i > 0 && flat[..i].ends_with(is_ident) {
            continue;
        }
        let mut rest = &flat[i..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            up += 1;
        }
        if up >= depth {
            check(rest, "super::..::");
        }
    }
    found
}

/// Every import of a `forbidden` module in `src/<folder>/`.
fn violations(src: &Path, folder: &str, forbidden: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rs_files(&src.join(folder), &mut files);
    files.sort();
    let exempt = test_only(&files);
    let mut out = Vec::new();
    for f in &files {
        if exempt.contains(f) {
            continue;
        }
        let rel = f.strip_prefix(src).unwrap();
        let text = fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = code(line);
            let Some(what) = violation(code, depth(rel), forbidden) else {
                continue;
            };
            out.push(format!(
                "src/{}:{}: {what} ({})",
                rel.display(),
                n + 1,
                line.trim()
            ));
        }
    }
    out
}

#[test]
fn devices_import_no_vmm_module() {
    let found = violations(&src(), "devices", &DEVICES_FORBIDDEN);
    assert!(
        found.is_empty(),
        "devices/ must not import arch, vm, memory, seccomp or net \
         (give the device what it needs through a trait in devices/mod.rs \
         and let device_manager/ wire it):\n{}",
        found.join("\n")
    );
}

#[test]
fn arch_imports_no_device() {
    let found = violations(&src(), "arch", &ARCH_FORBIDDEN);
    assert!(
        found.is_empty(),
        "arch/ must not import devices or device_manager (describe what the \
         tables need in arch/x86_64/platform.rs and let \
         device_manager::platform::describe fill it):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_each_way_of_importing() {
    // Depth 4: src/devices/virtio/net/worker.rs.
    for (code, hit) in [
        ("use crate::memory::GuestMemoryMmap;", true),
        ("use crate :: net :: tap::Tap;", true),
        ("use crate::{devices::bus::Bus, seccomp};", true),
        ("let p = crate::arch::x86_64::layout::PM_IO_BASE;", true),
        ("use super::super::super::super::vm::Vm;", true),
        ("use super::super::super::Interrupt;", false),
        ("use crate::devices::GuestMemoryMmap;", false),
        ("use crate::network_thing;", false),
        ("use vm_memory::GuestMemoryMmap;", false),
        ("use kiln_api::vm::NetConfig;", false),
    ] {
        assert_eq!(
            violation(code, 4, &DEVICES_FORBIDDEN).is_some(),
            hit,
            "{code}"
        );
    }
    // Depth 4: src/arch/x86_64/acpi/dsdt.rs.
    for (code, hit) in [
        ("use crate::devices::legacy::pm;", true),
        (
            "use crate::{arch::x86_64::layout, devices::pci::NUM_SLOTS};",
            true,
        ),
        ("use crate::device_manager::platform::describe;", true),
        ("use super::super::super::super::devices::pci;", true),
        ("use super::super::layout;", false),
        ("use crate::arch::x86_64::platform::AcpiPlatform;", false),
        ("use crate::memory::GuestMemoryMmap;", false),
    ] {
        assert_eq!(violation(code, 4, &ARCH_FORBIDDEN).is_some(), hit, "{code}");
    }
    assert_eq!(code("let a = 1; // crate::memory"), "let a = 1; ");
    assert_eq!(depth(Path::new("devices/mod.rs")), 1);
    assert_eq!(depth(Path::new("devices/virtio/net/worker.rs")), 4);
    assert_eq!(depth(Path::new("devices/virtio/net/mod.rs")), 3);
}

#[test]
fn test_only_modules_are_found() {
    let mut files = Vec::new();
    rs_files(&src().join("devices"), &mut files);
    let exempt = test_only(&files);
    let rel: BTreeSet<String> = exempt
        .iter()
        .map(|p| p.strip_prefix(src()).unwrap().display().to_string())
        .collect();
    for f in [
        "devices/virtio/net/tests/mod.rs",
        "devices/virtio/net/tests/mq.rs",
        "devices/virtio/testing/tests.rs",
        "devices/virtio/tests/worker_seccomp.rs",
    ] {
        assert!(rel.contains(f), "{f} is test-only: {rel:?}");
    }
    for f in ["devices/virtio/net/worker.rs", "devices/legacy/pm.rs"] {
        assert!(!rel.contains(f), "{f} is not test-only");
    }
    let mut files = Vec::new();
    rs_files(&src().join("arch"), &mut files);
    let rel: BTreeSet<String> = test_only(&files)
        .iter()
        .map(|p| p.strip_prefix(src()).unwrap().display().to_string())
        .collect();
    for f in [
        "arch/x86_64/acpi/tests/mod.rs",
        "arch/x86_64/acpi/tests/golden.rs",
        "arch/x86_64/firmware/tests.rs",
    ] {
        assert!(rel.contains(f), "{f} is test-only: {rel:?}");
    }
    for f in ["arch/x86_64/acpi/dsdt.rs", "arch/x86_64/fw_cfg/mod.rs"] {
        assert!(!rel.contains(f), "{f} is not test-only");
    }
}
