//! The stock Debian kernel (cache/guest/vmlinux, fetched by
//! scripts/fetch-guest.sh) on `kiln-vmm`: it cannot reach init on this
//! nested KVM (testbed.md), but its early messages validate the boot
//! protocol, the command line, the e820 map, the ACPI tables (MADT) and the
//! serial console, and the SMBIOS tables (its `DMI:` line). Measured 56-95 s here with other builds running (load
//! 6-13); bounded at 300 s (`KILN_LINUX_TIMEOUT_SECS` to change).

use std::time::Duration;

use kiln_tests::{guest_file, kvm_available, Vm, VmSpec};

const CMDLINE: &str = "console=ttyS0 earlyprintk=ttyS0 noxsave clearcpuid=cx16 panic=-1";
const MEMORY_MIB: u64 = 512;
const CPUS: u8 = 2;
const MIB: u64 = 1 << 20;

/// `BIOS-e820: [mem 0xSTART-0xEND] KIND` lines: (start, end inclusive, kind).
fn e820_entries(out: &str) -> Vec<(u64, u64, String)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.split_once("BIOS-e820: [mem ")?.1;
            let (range, kind) = rest.split_once("] ")?;
            let (a, b) = range.split_once('-')?;
            let a = u64::from_str_radix(a.strip_prefix("0x")?, 16).ok()?;
            let b = u64::from_str_radix(b.strip_prefix("0x")?, 16).ok()?;
            Some((a, b, kind.trim().to_string()))
        })
        .collect()
}

#[test]
fn debian_kernel_reaches_smp_setup() {
    if !kvm_available("debian_kernel_reaches_smp_setup") {
        return;
    }
    let kernel = guest_file("vmlinux");
    let mut vm = Vm::start(
        &VmSpec::new(kernel)
            .cpus(CPUS)
            .memory_mib(MEMORY_MIB)
            .cmdline(CMDLINE)
            .cpu_template("kvm-nested"),
    );
    // 300 s by default: an idle machine needs about 15 s, one loaded by
    // parallel builds several times that (the kernel's ring-0 code is
    // emulated here, about 1 µs an instruction).
    let secs = std::env::var("KILN_LINUX_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let out = vm.wait_serial_line(
        &format!("smpboot: Allowing {CPUS} CPUs"),
        Duration::from_secs(secs),
    );
    let d = vm.describe();

    assert!(out.contains("Linux version "), "{d}");
    assert!(
        out.lines()
            .any(|l| l.trim_end().ends_with(&format!("Command line: {CMDLINE}"))),
        "command line not passed exactly\n{d}"
    );

    // The e820 map: RAM is exactly the configured size less the legacy hole
    // below 1 MiB, and ends exactly at the configured size.
    let map = e820_entries(&out);
    assert!(!map.is_empty(), "no e820 map\n{d}");
    let usable: Vec<_> = map.iter().filter(|e| e.2 == "usable").collect();
    let total: u64 = usable.iter().map(|e| e.1 + 1 - e.0).sum();
    let top = usable.iter().map(|e| e.1 + 1).max().unwrap_or(0);
    assert_eq!(top, MEMORY_MIB * MIB, "highest RAM address\n{d}");
    assert!(
        ((MEMORY_MIB - 1) * MIB..=MEMORY_MIB * MIB).contains(&total),
        "usable RAM {total:#x} for {MEMORY_MIB} MiB\n{d}"
    );
    assert!(
        usable.iter().any(|e| e.0 == 0) && usable.iter().any(|e| e.0 == MIB),
        "low and high RAM ranges\n{d}"
    );
    for w in map.windows(2) {
        assert!(w[0].1 < w[1].0, "e820 entries overlap or are unsorted\n{d}");
    }

    assert!(
        out.contains("ACPI: Using ACPI (MADT) for SMP configuration information"),
        "{d}"
    );
    assert!(
        out.contains(&format!("smpboot: Allowing {CPUS} CPUs, 0 hotplug CPUs")),
        "{d}"
    );
    // The MADT's interrupt source overrides as the kernel read them: the
    // PIT on GSI 2, the SCI level active-high, and the PCI INTx IRQs of
    // the DSDT's _PRT (10 and 11) level active-low, as a static _PRT entry
    // means. (The _PRT itself is read at PCI enumeration, which this
    // kernel does not reach here; the acpi unit tests decode it.)
    for ovr in [
        "bus_irq 0 global_irq 2 dfl dfl",
        "bus_irq 9 global_irq 9 high level",
        "bus_irq 10 global_irq 10 low level",
        "bus_irq 11 global_irq 11 low level",
    ] {
        assert!(
            out.contains(&format!("ACPI: INT_SRC_OVR (bus 0 {ovr})")),
            "no override {ovr}\n{d}"
        );
    }
    assert_eq!(
        out.matches("ACPI: INT_SRC_OVR").count(),
        4,
        "exactly these overrides\n{d}"
    );

    vm.wait_api(Duration::from_secs(5));
    assert_eq!(vm.put("kill").expect("PUT /v1/vm/kill"), 204);
    assert_eq!(
        vm.wait_exit_code(Duration::from_secs(20)),
        13,
        "{}",
        vm.describe()
    );
}

/// The same kernel through its 64-bit Linux entry point (boot_params, not
/// PVH), with 5 GiB so the e820 map has RAM above 4 GiB: the kernel must
/// print the exact command line and a map that splits RAM around the
/// 32-bit PCI hole. Only the first lines, so it is quick.
#[test]
fn debian_kernel_by_64_bit_entry_sees_memory_above_4g() {
    if !kvm_available("debian_kernel_by_64_bit_entry_sees_memory_above_4g") {
        return;
    }
    let kernel = guest_file("vmlinux");
    let cmdline = "console=ttyS0 earlyprintk=ttyS0 noxsave";
    let mut spec = VmSpec::new(kernel)
        .cpus(1)
        .memory_mib(5 * 1024)
        .cmdline(cmdline)
        .cpu_template("kvm-nested");
    spec.extra_args = vec!["--boot-protocol".into(), "linux".into()];
    let mut vm = Vm::start(&spec);
    let secs = std::env::var("KILN_LINUX_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let out = vm.wait_serial_line("printk: bootconsole", Duration::from_secs(secs));
    let d = vm.describe();
    assert!(vm.vmm_log().contains("entry Linux64("), "{d}");
    assert!(
        out.lines()
            .any(|l| l.trim_end().ends_with(&format!("Command line: {cmdline}"))),
        "{d}"
    );
    let usable: Vec<_> = e820_entries(&out)
        .into_iter()
        .filter(|e| e.2 == "usable")
        .collect();
    assert!(
        usable.contains(&(MIB, 0xbfff_ffff, "usable".to_string())),
        "RAM below the hole\n{d}"
    );
    assert!(
        usable.contains(&(
            1 << 32,
            (1 << 32) + 2 * 1024 * MIB - 1,
            "usable".to_string()
        )),
        "RAM above 4 GiB\n{d}"
    );
    assert_eq!(vm.put("kill").expect("PUT /v1/vm/kill"), 204);
}

#[test]
fn e820_line_parser() {
    let m = e820_entries(
        "[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable\n\
         BIOS-e820: [mem 0x00000000e0000000-0x00000000e00fffff] reserved\nBIOS-e820: junk",
    );
    assert_eq!(
        m,
        vec![
            (0, 0x9fbff, "usable".to_string()),
            (0xe000_0000, 0xe00f_ffff, "reserved".to_string())
        ]
    );
}

/// The kernel finds kiln-vmm's SMBIOS 3.0 entry point in 0xF0000-0xFFFFF
/// and prints its `DMI:` line (system manufacturer and product, baseboard
/// product, BIOS version and date) with the `--smbios` values: what
/// cloud-init's OpenStack datasource detection reads on x86.
#[test]
fn debian_kernel_reads_the_smbios_identity() {
    if !kvm_available("debian_kernel_reads_the_smbios_identity") {
        return;
    }
    let kernel = guest_file("vmlinux");
    let spec = VmSpec::new(kernel)
        .cpus(1)
        .memory_mib(256)
        .cmdline("console=ttyS0 earlyprintk=ttyS0 noxsave clearcpuid=cx16")
        .cpu_template("kvm-nested")
        .args([
            "--smbios",
            "manufacturer=OpenStack Foundation,product=OpenStack Nova,\
             uuid=8a1c2e0e-3b4f-4d5e-9f60-718293a4b5c6,serial=srv-1",
        ]);
    let mut vm = Vm::start(&spec);
    let secs = std::env::var("KILN_LINUX_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let out = vm.wait_serial_line("DMI: ", Duration::from_secs(secs));
    let d = vm.describe();
    assert!(out.contains("SMBIOS 3.0.0 present."), "{d}");
    let version = env!("CARGO_PKG_VERSION");
    let dmi = out.lines().find(|l| l.contains("DMI: ")).unwrap();
    assert!(
        dmi.trim_end().ends_with(&format!(
            "DMI: OpenStack Foundation OpenStack Nova/OpenStack Nova, BIOS {version} 01/01/2026"
        )),
        "{dmi:?}\n{d}"
    );
    assert_eq!(vm.put("kill").expect("PUT /v1/vm/kill"), 204);
}
