//! Windows VM options on real KVM through `kiln-vmm`: what the `hyperv`
//! probe reads from the hypervisor CPUID leaves with and without
//! `--hyperv`, and the RTC in host local time with `--rtc-local-time`.
//!
//! `--hyperv` depends on the host: where KVM emulates Hyper-V
//! (`KVM_CAP_HYPERV_CPUID`), the guest must see "Microsoft Hv" at
//! 0x40000000, the Windows set of features, working Hyper-V MSRs and KVM's
//! leaves at 0x40000100; where it does not (a kernel without
//! CONFIG_KVM_HYPERV, like the nested testbed), kiln-vmm must refuse to
//! start the guest and say why. The test asks /dev/kvm itself which case
//! applies.

use std::os::fd::AsRawFd;
use std::time::Duration;

use kiln_tests::{kvm_available, probe, rtc, Vm, VmSpec};

const EXIT_POWER_OFF: i32 = 0;
const EXIT_REBOOT: i32 = 10;
const EXIT_HOST_ERROR: i32 = 1;
const SHORT: Duration = Duration::from_secs(60);

/// `KVM_CHECK_EXTENSION(KVM_CAP_HYPERV_CPUID)` on /dev/kvm.
fn host_kvm_emulates_hyperv() -> bool {
    const KVM_CHECK_EXTENSION: libc::c_ulong = 0xae03;
    const KVM_CAP_HYPERV_CPUID: libc::c_ulong = 167;
    let kvm = std::fs::File::open("/dev/kvm").expect("open /dev/kvm");
    // SAFETY: KVM_CHECK_EXTENSION takes an integer and touches no memory.
    let r = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CHECK_EXTENSION, KVM_CAP_HYPERV_CPUID) };
    r > 0
}

/// One `hyperv: leaf` line of the probe: EAX..EDX and the signature.
#[derive(Debug)]
struct Leaf {
    regs: [u32; 4],
    sig: String,
}

fn leaf(out: &str, function: u32) -> Option<Leaf> {
    let prefix = format!("hyperv: leaf {function:08x} ");
    let line = out.lines().find(|l| l.starts_with(&prefix))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let hex = |name: &str| {
        let at = f.iter().position(|w| *w == name)?;
        u32::from_str_radix(f.get(at + 1)?, 16).ok()
    };
    let sig = line.split_once("sig [")?.1.strip_suffix(']')?.to_string();
    Some(Leaf {
        regs: [hex("eax")?, hex("ebx")?, hex("ecx")?, hex("edx")?],
        sig,
    })
}

fn run_probe(extra: &[&str], cmdline: &str) -> Vm {
    let mut spec = VmSpec::new(probe("hyperv")).cmdline(cmdline);
    spec.extra_args = extra.iter().map(|s| s.to_string()).collect();
    Vm::start(&spec)
}

#[test]
fn without_hyperv_the_kvm_signature_is_at_0x40000000() {
    if !kvm_available("without_hyperv_the_kvm_signature_is_at_0x40000000") {
        return;
    }
    let mut vm = run_probe(&[], "");
    assert_eq!(
        vm.wait_exit_code(SHORT),
        EXIT_POWER_OFF,
        "{}",
        vm.describe()
    );
    let out = vm.serial();
    let base = leaf(&out, 0x4000_0000).unwrap_or_else(|| panic!("no leaf\n{}", vm.describe()));
    assert_eq!(base.sig, "KVMKVMKVM...", "{}", vm.describe());
    assert!(
        (0x4000_0001..0x4000_0100).contains(&base.regs[0]),
        "KVM's highest leaf {:#x}",
        base.regs[0]
    );
    assert!(!out.contains("Microsoft Hv"), "{}", vm.describe());
    assert!(!out.contains("hyperv: msr"), "{}", vm.describe());
    assert!(out.contains("hyperv: done"), "{}", vm.describe());
}

#[test]
fn with_hyperv_the_guest_sees_microsoft_hv_or_kiln_refuses() {
    if !kvm_available("with_hyperv_the_guest_sees_microsoft_hv_or_kiln_refuses") {
        return;
    }
    let mut vm = run_probe(&["--hyperv"], "");
    let code = vm.wait_exit_code(SHORT);
    let out = vm.serial();
    if !host_kvm_emulates_hyperv() {
        eprintln!("this host's KVM has no Hyper-V emulation: checking that --hyperv is refused");
        assert_eq!(code, EXIT_HOST_ERROR, "{}", vm.describe());
        assert!(
            !out.contains("hyperv: leaf"),
            "the guest ran\n{}",
            vm.describe()
        );
        assert!(
            vm.vmm_log().contains("no Hyper-V emulation"),
            "{}",
            vm.describe()
        );
        return;
    }
    assert_eq!(code, EXIT_POWER_OFF, "{}", vm.describe());
    let base = leaf(&out, 0x4000_0000).expect("leaf 0x40000000");
    assert_eq!(base.sig, "Microsoft Hv", "{}", vm.describe());
    assert!(
        base.regs[0] >= 0x4000_0005,
        "highest leaf {:#x}",
        base.regs[0]
    );
    assert_eq!(
        leaf(&out, 0x4000_0001).expect("interface leaf").regs[0],
        u32::from_le_bytes(*b"Hv#1")
    );
    let features = leaf(&out, 0x4000_0003).expect("features leaf").regs;
    // runtime, time ref count, SynIC, stimer, APIC MSRs, hypercall,
    // VP index, reset, reference TSC, frequency MSRs.
    assert_eq!(features[0] & 0xaff, 0xaff, "features {:#x}", features[0]);
    let recommendations = leaf(&out, 0x4000_0004).expect("recommendations").regs;
    assert_eq!(recommendations[1], 8191, "spinlock retries");
    // relaxed timing, APIC MSRs, remote TLB flush, cluster IPI, ex masks.
    let want = (1 << 5) | (1 << 3) | (1 << 2) | (1 << 10) | (1 << 11);
    assert_eq!(recommendations[0] & want, want);
    let kvm = leaf(&out, 0x4000_0100).expect("leaf 0x40000100");
    assert_eq!(kvm.sig, "KVMKVMKVM...", "{}", vm.describe());
    let msr = out
        .lines()
        .find_map(|l| l.strip_prefix("hyperv: msr "))
        .unwrap_or_else(|| panic!("no MSR line\n{}", vm.describe()));
    let nums: Vec<u64> = msr
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 3, "{msr}");
    assert_eq!(nums[0], 0, "VP index of the boot vCPU");
    assert!(nums[1] > 0, "TSC frequency");

    // HV_X64_MSR_RESET resets the VM.
    let mut vm = run_probe(&["--hyperv"], "hvreset");
    assert_eq!(vm.wait_exit_code(SHORT), EXIT_REBOOT, "{}", vm.describe());
}

/// The rtc probe's clock minus the host's UTC, in seconds.
fn rtc_offset(extra: &[&str]) -> i64 {
    let mut spec = VmSpec::new(probe("rtc"));
    spec.extra_args = extra.iter().map(|s| s.to_string()).collect();
    let mut vm = Vm::start(&spec);
    let rtc::Reading { guest, host, .. } = rtc::read(&mut vm, SHORT);
    assert_eq!(
        vm.wait_exit_code(SHORT),
        EXIT_POWER_OFF,
        "{}",
        vm.describe()
    );
    guest - host
}

#[test]
fn rtc_local_time_follows_the_host_time_zone() {
    if !kvm_available("rtc_local_time_follows_the_host_time_zone") {
        return;
    }
    // A POSIX time zone five hours east of UTC (no tz database needed),
    // for the kiln-vmm processes this test starts.
    std::env::set_var("TZ", "KLN-5");
    let local = rtc_offset(&["--rtc-local-time"]);
    assert!(
        (local - 5 * 3600).abs() <= 3,
        "--rtc-local-time under UTC+5: guest is {local} s from UTC"
    );
    let utc = rtc_offset(&[]);
    assert!(utc.abs() <= 3, "default RTC: guest is {utc} s from UTC");
}
