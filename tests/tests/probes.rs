//! Probe guests (images/probes) on real KVM through `kiln-vmm`: serial
//! output, debug-port codes through the control API, the RTC against the
//! host clock, reset, power off, triple fault, and four vCPUs.

use std::time::Duration;

use kiln_api::control::VmState;
use kiln_tests::{kvm_available, probe, rtc, Vm, VmSpec};

const EXIT_POWER_OFF: i32 = 0;
const EXIT_REBOOT: i32 = 10;
const EXIT_TRIPLE_FAULT: i32 = 11;
const EXIT_KILLED: i32 = 13;

/// Generous: the machine is shared and often loaded; a passing run is fast.
const SHORT: Duration = Duration::from_secs(60);

#[test]
fn hello_prints_first_and_powers_off() {
    if !kvm_available("hello_prints_first_and_powers_off") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("hello")));
    let code = vm.wait_exit_code(SHORT);
    let out = vm.serial();
    assert_eq!(code, EXIT_POWER_OFF, "exit code\n{}", vm.describe());
    // The probe's very first instructions write '*' to COM1.
    assert!(out.starts_with('*'), "first serial byte\n{}", vm.describe());
    assert!(
        out.contains("hello from a kiln probe\nhello: powering off\n"),
        "{}",
        vm.describe()
    );
    assert!(
        !out.contains("ignored"),
        "S5 write was not acted on\n{}",
        vm.describe()
    );
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn halted_guest_costs_no_host_cpu() {
    if !kvm_available("halted_guest_costs_no_host_cpu") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("hello")).cmdline("hold"));
    vm.wait_serial("hello: holding\n", SHORT);
    vm.wait_api(SHORT);
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(vm.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(vm.pid()) - before;
    // 2 s is 200 ticks at 100 Hz; a halted guest and an idle VMM use ~0.
    assert!(
        used <= 10,
        "kiln-vmm used {used} ticks in 2 s with the guest halted"
    );
    let info = vm.info().expect("GET /v1/vm");
    assert_eq!(info.state, VmState::Running);
    let codes: Vec<u8> = info.boot_progress.iter().map(|p| p.code).collect();
    assert_eq!(codes, [0x01, 0x02, 0x03]);
    assert_eq!(vm.put("kill").expect("PUT /v1/vm/kill"), 204);
    assert_eq!(vm.wait_exit_code(SHORT), EXIT_KILLED, "{}", vm.describe());
}

#[test]
fn debug_port_codes_have_rising_timestamps() {
    if !kvm_available("debug_port_codes_have_rising_timestamps") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("progress")).memory_mib(32));
    vm.wait_serial("progress done\n", SHORT);
    vm.wait_api(SHORT);
    let info = vm
        .info()
        .unwrap_or_else(|e| panic!("GET /v1/vm: {e}\n{}", vm.describe()));
    assert_eq!(info.state, VmState::Running);
    assert_eq!(info.pid, vm.pid());
    assert_eq!(info.config.cpus.count, 1);
    assert_eq!(info.config.memory.size_mib, 32);
    let codes: Vec<u8> = info.boot_progress.iter().map(|p| p.code).collect();
    let mut want: Vec<u8> = (0x10..0x18).collect();
    want.push(0x1f);
    assert_eq!(codes, want, "debug-port codes: {:?}", info.boot_progress);
    for w in info.boot_progress.windows(2) {
        assert!(
            w[1].time_us > w[0].time_us,
            "timestamps do not rise: {:?}",
            info.boot_progress
        );
    }
    // The codes came after the VMM started and within the test's lifetime.
    let elapsed_us = vm.started.elapsed().as_micros() as u64;
    let last = info.boot_progress.last().unwrap().time_us;
    assert!(
        last <= elapsed_us,
        "last code at {last} us, test ran {elapsed_us} us"
    );

    assert_eq!(vm.put("kill").expect("PUT /v1/vm/kill"), 204);
    assert_eq!(vm.wait_exit_code(SHORT), EXIT_KILLED, "{}", vm.describe());
}

#[test]
fn debug_port_record_is_bounded() {
    if !kvm_available("debug_port_record_is_bounded") {
        return;
    }
    // 9 codes, then 5000 more: the VMM keeps the first 4096.
    let mut vm = Vm::start(&VmSpec::new(probe("progress")).cmdline("flood"));
    vm.wait_serial("progress done\n", SHORT);
    vm.wait_api(SHORT);
    let info = vm
        .info()
        .unwrap_or_else(|e| panic!("GET /v1/vm: {e}\n{}", vm.describe()));
    assert_eq!(info.boot_progress.len(), 4096);
    let codes: Vec<u8> = info.boot_progress.iter().map(|p| p.code).collect();
    let mut want: Vec<u8> = (0x10..0x18).collect();
    want.push(0x1f);
    want.extend((0..4096 - 9).map(|i| i as u8));
    assert_eq!(codes, want);
    for w in info.boot_progress.windows(2) {
        assert!(w[1].time_us >= w[0].time_us, "time runs backwards");
    }
    assert_eq!(vm.put("kill").expect("PUT /v1/vm/kill"), 204);
    assert_eq!(vm.wait_exit_code(SHORT), EXIT_KILLED, "{}", vm.describe());
}

/// Run the rtc probe with `cmdline`; check its time against the host's UTC
/// and that register B ended with `binary` and `h24` as asked.
fn check_rtc(cmdline: &str, binary: bool, h24: bool) {
    let mut vm = Vm::start(&VmSpec::new(probe("rtc")).cmdline(cmdline));
    let rtc::Reading { guest, host, out } = rtc::read(&mut vm, SHORT);
    assert!(
        (guest - host).abs() <= 3,
        "{cmdline:?}: guest RTC {guest} vs host UTC {host}: {} s apart\n{}",
        guest - host,
        vm.describe()
    );
    let reg_b = out
        .lines()
        .find_map(|l| l.strip_prefix("RTC regB 0x"))
        .and_then(|v| u8::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no register B\n{}", vm.describe()));
    assert_eq!(
        reg_b & 0x04 != 0,
        binary,
        "{cmdline:?}: register B {reg_b:#x}"
    );
    assert_eq!(reg_b & 0x02 != 0, h24, "{cmdline:?}: register B {reg_b:#x}");
    assert_eq!(
        vm.wait_exit_code(SHORT),
        EXIT_POWER_OFF,
        "{}",
        vm.describe()
    );
}

#[test]
fn rtc_matches_host_utc() {
    if !kvm_available("rtc_matches_host_utc") {
        return;
    }
    check_rtc("", false, true);
}

#[test]
fn rtc_binary_and_12_hour_modes_match_host_utc() {
    if !kvm_available("rtc_binary_and_12_hour_modes_match_host_utc") {
        return;
    }
    check_rtc("binary", true, true);
    check_rtc("12h", false, false);
    check_rtc("binary 12h", true, false);
}

#[test]
fn i8042_reset_exits_with_reboot_code() {
    if !kvm_available("i8042_reset_exits_with_reboot_code") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("reset")));
    let code = vm.wait_exit_code(SHORT);
    let out = vm.serial();
    assert!(
        out.contains("reset: through the i8042"),
        "{}",
        vm.describe()
    );
    assert!(!out.contains("still running"), "{}", vm.describe());
    assert_eq!(code, EXIT_REBOOT, "{}", vm.describe());
}

#[test]
fn cf9_reset_exits_with_reboot_code() {
    if !kvm_available("cf9_reset_exits_with_reboot_code") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("reset")).cmdline("cf9"));
    let code = vm.wait_exit_code(SHORT);
    let out = vm.serial();
    assert!(
        out.contains("reset: 0x02 to port 0xcf9 did not reset\nreset: through port 0xcf9\n"),
        "{}",
        vm.describe()
    );
    assert!(!out.contains("still running"), "{}", vm.describe());
    assert_eq!(code, EXIT_REBOOT, "{}", vm.describe());
}

#[test]
fn pm1a_power_off_exits_zero() {
    if !kvm_available("pm1a_power_off_exits_zero") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("poweroff")));
    let code = vm.wait_exit_code(SHORT);
    let out = vm.serial();
    assert!(
        out.contains("SLP_TYP=5 without SLP_EN: still running\npoweroff: writing SLP_EN|SLP_TYP=5"),
        "{}",
        vm.describe()
    );
    // Kiln's \_S5 type is 5: the probe's fallback (type 0) must not run.
    assert!(!out.contains("ignored"), "{}", vm.describe());
    assert_eq!(code, EXIT_POWER_OFF, "{}", vm.describe());
}

#[test]
fn triple_fault_exits_11() {
    if !kvm_available("triple_fault_exits_11") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("crash")));
    let code = vm.wait_exit_code(SHORT);
    assert!(vm.serial().starts_with('!'), "{}", vm.describe());
    assert!(
        !vm.serial().contains('?'),
        "ran past the fault\n{}",
        vm.describe()
    );
    assert_eq!(code, EXIT_TRIPLE_FAULT, "{}", vm.describe());
}

#[test]
fn four_vcpus_all_report() {
    if !kvm_available("four_vcpus_all_report") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("smp")).cpus(4));
    let code = vm.wait_exit_code(Duration::from_secs(30));
    let out = vm.serial();
    assert!(
        out.contains("smp: MADT lists 4 cpus\n"),
        "{}",
        vm.describe()
    );
    assert!(out.contains("cpu 0 up (bsp)\n"), "{}", vm.describe());
    for id in 1..4 {
        assert!(
            out.contains(&format!("cpu {id} up\n")),
            "AP {id} missing\n{}",
            vm.describe()
        );
    }
    assert_eq!(out.matches(" up").count(), 4, "{}", vm.describe());
    assert!(out.contains("cpus 4\n"), "{}", vm.describe());
    assert!(!out.contains("timed out"), "{}", vm.describe());
    assert_eq!(code, EXIT_POWER_OFF, "{}", vm.describe());
}

#[test]
fn rtc_update_interrupt_reaches_the_ioapic() {
    if !kvm_available("rtc_update_interrupt_reaches_the_ioapic") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("rtcirq")));
    let out = vm.wait_serial_line("rtcirq", SHORT);
    let c = out
        .lines()
        .find_map(|l| l.strip_prefix("rtcirq: vector 0x48 pending, register C "))
        .and_then(|v| v.trim().parse::<u8>().ok())
        .unwrap_or_else(|| panic!("no interrupt seen\n{}", vm.describe()));
    // IRQF and UF, and nothing else (the probe stopped the periodic rate).
    assert_eq!(c, 0x90, "register C {c:#x}\n{}", vm.describe());
    assert_eq!(
        vm.wait_exit_code(SHORT),
        EXIT_POWER_OFF,
        "{}",
        vm.describe()
    );
}
