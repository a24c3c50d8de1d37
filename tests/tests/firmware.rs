//! Firmware boot on `kiln-vmm` (`--firmware`), with Debian's SeaBIOS and
//! OVMF from cache/guest (scripts/fetch-guest.sh):
//!
//! - SeaBIOS finds Kiln's fw_cfg (DMA), RAM from `etc/e820`, the vCPUs, the
//!   i440FX host bridge, prints its banner on COM1 (fw_cfg NOGRAPHIC makes
//!   COM1 its console) and ends with "No bootable device." (no disk). Its
//!   debug log (port 0x402) lands in the VMM log. Then the ACPI tables it
//!   installed through `etc/table-loader` are read from the live guest's
//!   RAM (/proc/PID/mem) and walked like an OS would. About 5 s here.
//! - SeaBIOS boots a boot sector from a qcow2 overlay over virtio-blk; the
//!   boot sector prints on COM1 and powers the VM off through ACPI S5.
//! - OVMF: on these nested-KVM machines it stops in its 64-bit SEC on an
//!   x87 instruction (testbed.md), right after its ACPI timer library
//!   programmed the PIIX4 PM function (PM block moved to 0xB000); the test
//!   checks exactly that, and on a host where it runs further, that it is
//!   still running.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use kiln_tests::{guest_file, kiln_vmm, kvm_available, tail_lines, ScratchDir};

const MIB: u64 = 1 << 20;

/// A `kiln-vmm` booted through firmware; killed on drop.
struct FwVm {
    child: Child,
    _dir: ScratchDir,
    serial: PathBuf,
    log: PathBuf,
}

impl FwVm {
    fn start(firmware: &Path, vars: Option<&Path>, cpus: u8, memory_mib: u64) -> FwVm {
        let mut args: Vec<OsString> = vec![
            "--firmware".into(),
            firmware.into(),
            "--cpus".into(),
            cpus.to_string().into(),
            "--memory".into(),
            format!("{memory_mib}M").into(),
        ];
        if let Some(v) = vars {
            args.extend(["--firmware-vars".into(), v.into()]);
        }
        FwVm::spawn(ScratchDir::new("fw").expect("scratch dir"), args, true)
    }

    /// Run `kiln-vmm` with `args` (plus the serial log unless the
    /// configuration names it: `serial_flag`), logging into `dir`.
    fn spawn(dir: ScratchDir, args: Vec<OsString>, serial_flag: bool) -> FwVm {
        let serial = dir.path().join("serial.log");
        let log = dir.path().join("vmm.log");
        let mut cmd = Command::new(kiln_vmm());
        cmd.args(args).arg("--log-level").arg("info");
        if serial_flag {
            cmd.arg("--serial-log").arg(&serial);
        }
        let stderr = fs::File::create(&log).expect("create vmm.log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().expect("spawn kiln-vmm");
        FwVm {
            child,
            _dir: dir,
            serial,
            log,
        }
    }

    fn serial(&self) -> String {
        fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn vmm_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!(
            "--- serial ---\n{}\n--- kiln-vmm log ---\n{}",
            tail_lines(&self.serial(), 40),
            tail_lines(&self.vmm_log(), 80)
        )
    }

    /// Wait until `cond(serial, log)` holds; panics on timeout or exit.
    fn wait_for(&mut self, what: &str, timeout: Duration, cond: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(&self.serial(), &self.vmm_log()) {
                return;
            }
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                panic!("kiln-vmm exited ({s}) before {what}\n{}", self.describe());
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}\n{}",
                self.describe()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// Wait at most `timeout` for the process to end; its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s.code();
            }
            sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for FwVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Guest RAM below 4 GiB, read from the VMM process: the one mapping of
/// exactly `size` bytes in its address space.
struct GuestRam {
    mem: fs::File,
    host_base: u64,
    size: u64,
}

impl GuestRam {
    fn open(pid: u32, size: u64) -> GuestRam {
        let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
        let bases: Vec<u64> = maps
            .lines()
            .filter_map(|l| {
                let (a, b) = l.split_whitespace().next()?.split_once('-')?;
                let (a, b) = (
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                );
                (b - a == size).then_some(a)
            })
            .collect();
        assert_eq!(bases.len(), 1, "one {size:#x}-byte mapping in\n{maps}");
        GuestRam {
            mem: fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem"),
            host_base: bases[0],
            size,
        }
    }

    fn read(&mut self, gpa: u64, len: usize) -> Vec<u8> {
        assert!(gpa + len as u64 <= self.size, "{gpa:#x}+{len} outside RAM");
        let mut buf = vec![0u8; len];
        self.mem
            .seek(SeekFrom::Start(self.host_base + gpa))
            .unwrap();
        self.mem.read_exact(&mut buf).expect("read guest RAM");
        buf
    }

    /// An ACPI table: its header's length, then the whole table.
    fn table(&mut self, gpa: u64) -> Vec<u8> {
        let hdr = self.read(gpa, 8);
        let len = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
        assert!(
            (36..=1 << 20).contains(&len),
            "table length {len} at {gpa:#x}"
        );
        self.read(gpa, len as usize)
    }
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
}

/// Walk the ACPI tables SeaBIOS installed: the RSDP in the BIOS area, the
/// XSDT, every table's checksum, the FADT's FACS and DSDT, the MADT's
/// vCPUs. Returns the XSDT's signatures.
fn walk_acpi(ram: &mut GuestRam, cpus: u8) -> Vec<String> {
    let area = ram.read(0xe_0000, 0x2_0000);
    let at = (0..area.len() - 36)
        .step_by(16)
        .find(|&o| &area[o..o + 8] == b"RSD PTR " && sum(&area[o..o + 20]) == 0)
        .expect("an RSDP with a valid checksum in 0xE0000..0x100000");
    let rsdp = &area[at..at + 36];
    assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
    assert_eq!(
        &rsdp[9..15],
        b"KILN  ",
        "Kiln's RSDP, not one SeaBIOS built"
    );
    let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
    let xsdt = ram.table(xsdt_addr);
    assert_eq!((&xsdt[..4], sum(&xsdt)), (&b"XSDT"[..], 0));
    let mut seen = Vec::new();
    for e in xsdt[36..].chunks(8) {
        let t = ram.table(u64::from_le_bytes(e.try_into().unwrap()));
        let sig = String::from_utf8_lossy(&t[..4]).into_owned();
        assert_eq!(sum(&t), 0, "{sig} checksum");
        if sig == "FACP" {
            let facs = le32(&t, 36);
            assert_eq!(facs % 64, 0);
            assert_eq!(ram.read(facs, 4), b"FACS");
            let dsdt = ram.table(le32(&t, 40));
            assert_eq!((&dsdt[..4], sum(&dsdt)), (&b"DSDT"[..], 0));
            // PM1a_EVT, PM1a_CNT, PM_TMR: where SeaBIOS put the PM block
            // through the PIIX4 PM function (0x600 with a table loader).
            assert_eq!(
                (le32(&t, 56), le32(&t, 64), le32(&t, 76)),
                (0x600, 0x604, 0x608),
                "FADT PM blocks"
            );
        }
        if sig == "APIC" {
            let (mut o, mut n) = (44, 0);
            while o + 2 <= t.len() {
                n += u8::from(t[o] == 0);
                o += usize::from(t[o + 1]).max(2);
            }
            assert_eq!(n, cpus, "local APICs in the MADT");
        }
        seen.push(sig);
    }
    seen
}

#[test]
fn seabios_finds_fw_cfg_and_installs_kiln_acpi_tables() {
    if !kvm_available("seabios_finds_fw_cfg_and_installs_kiln_acpi_tables") {
        return;
    }
    const CPUS: u8 = 2;
    const MEMORY_MIB: u64 = 200;
    let bios = guest_file("bios.bin");
    let mut vm = FwVm::start(&bios, None, CPUS, MEMORY_MIB);
    let t0 = Instant::now();
    vm.wait_for("\"No bootable device\"", Duration::from_secs(90), |s, _| {
        s.contains("No bootable device")
    });
    let took = t0.elapsed();
    let (serial, log) = (vm.serial(), vm.vmm_log());
    let d = vm.describe();
    assert!(serial.contains("SeaBIOS (version "), "banner on COM1\n{d}");
    assert!(serial.contains("Booting from Hard Disk..."), "{d}");

    let fw: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("firmware: ").map(|x| x.1))
        .collect();
    let has = |s: &str| fw.iter().any(|l| l.contains(s));
    assert!(
        has("SeaBIOS (version "),
        "debug console in the VMM log\n{d}"
    );
    for needed in [
        "Found QEMU fw_cfg",
        "QEMU fw_cfg DMA interface supported",
        "Moving pm_base to 0x600",
        "PCI: init bdf=00:00.0 id=8086:1237",
        "PCI: init bdf=00:01.0 id=8086:7000",
        "PIIX3/PIIX4 init: elcr=00 0c",
        "PCI: init bdf=00:01.3 id=8086:7113",
        "sercon: using ioport 0x3f8",
    ] {
        assert!(has(needed), "{needed:?} missing\n{d}");
    }
    // RAM from etc/e820: below and above 1 MiB.
    let high = format!(
        "qemu/e820: addr 0x{:016x} len 0x{:016x} [RAM]",
        MIB,
        (MEMORY_MIB - 1) * MIB
    );
    assert!(has(&high), "{high:?} missing\n{d}");
    assert!(
        has("qemu/e820: addr 0x0000000000000000 len 0x000000000009fc00 [RAM]"),
        "{d}"
    );
    let cpus = format!("Found {CPUS} cpu(s) max supported {CPUS} cpu(s)");
    assert!(has(&cpus), "{cpus:?} missing\n{d}");
    assert!(
        log.contains("piix4: ACPI PM block at 0x600"),
        "the PM block follows the PIIX4 PM function\n{d}"
    );
    // SeaBIOS warns when the table loader fails or finds no RSDP.
    assert!(!fw.iter().any(|l| l.contains("WARNING")), "{d}");

    let mut ram = GuestRam::open(vm.child.id(), MEMORY_MIB * MIB);
    let tables = walk_acpi(&mut ram, CPUS);
    assert_eq!(tables, ["FACP", "APIC", "MCFG"], "{d}");
    eprintln!(
        "SeaBIOS: \"No bootable device\" after {:.1} s, {} debug lines, tables {tables:?}",
        took.as_secs_f64(),
        fw.len()
    );
}

#[test]
fn ovmf_runs_until_what_this_host_cannot_emulate() {
    if !kvm_available("ovmf_runs_until_what_this_host_cannot_emulate") {
        return;
    }
    let code = guest_file("OVMF_CODE.fd");
    let scratch = ScratchDir::new("ovmf").expect("scratch dir");
    let vars = scratch.path().join("vars.fd");
    fs::copy(guest_file("OVMF_VARS.fd"), &vars).expect("copy the variable store");
    let image = fs::read(&code).unwrap();
    let code_base = (1u64 << 32) - image.len() as u64;
    let mut vm = FwVm::start(&code, Some(&vars), 1, 512);
    let code_rc = vm.wait_exit(Duration::from_secs(30));
    let (log, d) = (vm.vmm_log(), vm.describe());
    assert!(
        log.contains(&format!("mapped at {code_base:#x}")),
        "code ends at 4 GiB\n{d}"
    );
    let Some(rc) = code_rc else {
        // A host that runs OVMF further (hardware virtualization).
        eprintln!("OVMF still running after 30 s: this host emulates further");
        return;
    };
    // Here (nested KVM through PVM): an emulation failure in 64-bit code.
    assert_eq!(rc, 12, "exit for a KVM emulation failure\n{d}");
    let line = log
        .lines()
        .find(|l| l.contains("KVM emulation failure"))
        .unwrap_or_else(|| panic!("no emulation failure logged\n{d}"));
    let field = |name: &str| -> u64 {
        let v = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=0x")))
            .unwrap_or_else(|| panic!("no {name} in {line}"));
        u64::from_str_radix(v, 16).unwrap()
    };
    let (rip, efer) = (field("rip"), field("efer"));
    assert!(
        efer & (1 << 10) != 0,
        "long mode active (SEC/PEI 64-bit)\n{line}"
    );
    assert!(
        (code_base..1 << 32).contains(&rip),
        "stopped inside OVMF's code at {rip:#x}\n{line}"
    );
    // The instruction there is x87 (FWAIT prefix or an 0xD8..0xDF opcode).
    let op = &image[(rip - code_base) as usize..][..3];
    let x87 = |b: u8| (0xd8..=0xdf).contains(&b);
    assert!(
        x87(op[0]) || (op[0] == 0x9b && x87(op[1])),
        "instruction {op:02x?} at {rip:#x} is not x87\n{line}"
    );
    // The variable store is the CFI flash device, and before the x87
    // instruction OVMF's SEC (its ACPI timer library) programmed the PIIX4
    // PM function: the PM block moved to 0xB000.
    assert!(log.contains("CFI flash"), "vars as a pflash device\n{d}");
    let pm = log
        .find("piix4: ACPI PM block at 0xb000")
        .unwrap_or_else(|| panic!("OVMF did not program PMBA 0xB000\n{d}"));
    assert!(
        pm < log.find("KVM emulation failure").unwrap(),
        "PM block placed before the emulation failure\n{d}"
    );
    // OVMF's flash driver runs in DXE, which this host never reaches: the
    // store is as it was.
    assert_eq!(
        fs::read(&vars).unwrap(),
        fs::read(guest_file("OVMF_VARS.fd")).unwrap(),
        "variable store untouched before DXE"
    );
    eprintln!("OVMF: stopped at {rip:#x} on x87 {op:02x?} (long mode, efer {efer:#x})");
    drop(vm);
    drop(scratch);
}

/// A boot sector (real mode, loaded at 0x7c00): print [`MBR_MESSAGE`] on
/// COM1, then power off through ACPI (PM1a_CNT at 0x604: SLP_TYP 5 and
/// SLP_EN), then halt.
///
/// ```text
/// cli; xor ax,ax; mov ds,ax; mov dx,0x3f8; mov si,0x7c1d
/// 1: lodsb; test al,al; jz 2f; out dx,al; jmp 1b
/// 2: mov dx,0x604; mov ax,0x3400; out dx,ax
/// 3: hlt; jmp 3b
/// 0x1d: the message, NUL-terminated;  0x1fe: 0x55 0xaa
/// ```
fn boot_sector() -> [u8; 512] {
    const CODE: [u8; 0x1d] = [
        0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0xba, 0xf8, 0x03, 0xbe, 0x1d, 0x7c, 0xac, 0x84, 0xc0, 0x74,
        0x03, 0xee, 0xeb, 0xf8, 0xba, 0x04, 0x06, 0xb8, 0x00, 0x34, 0xef, 0xf4, 0xeb, 0xfd,
    ];
    let mut s = [0u8; 512];
    s[..CODE.len()].copy_from_slice(&CODE);
    let msg = format!("{MBR_MESSAGE}\r\n");
    s[CODE.len()..CODE.len() + msg.len()].copy_from_slice(msg.as_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

const MBR_MESSAGE: &str = "KILN MBR: booted by SeaBIOS from virtio-blk";

#[test]
fn seabios_boots_a_boot_sector_from_qcow2_over_virtio_blk() {
    if !kvm_available("seabios_boots_a_boot_sector_from_qcow2_over_virtio_blk") {
        return;
    }
    let dir = ScratchDir::new("mbr").expect("scratch dir");
    let base = dir.path().join("base.raw");
    let mut disk = vec![0u8; MIB as usize];
    disk[..512].copy_from_slice(&boot_sector());
    fs::write(&base, &disk).unwrap();
    let overlay = dir.path().join("overlay.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&base)
        .arg(&overlay)
        .output()
        .expect("run qemu-img (scripts/setup.sh installs it)");
    assert!(out.status.success(), "qemu-img: {out:?}");
    let serial = dir.path().join("serial.log");
    let config = serde_json::json!({
        "cpus": {"count": 1, "template": "host"},
        "memory": {"size_mib": 128},
        "firmware": {"path": guest_file("bios.bin")},
        "serial": {"log": serial},
        "disks": [{"path": overlay, "format": "qcow2", "backing": [{"path": base, "format": "raw"}]}],
    });
    let cfg = dir.path().join("vm.json");
    fs::write(&cfg, config.to_string()).unwrap();
    let mut vm = FwVm::spawn(dir, vec!["--config".into(), cfg.into()], false);
    let rc = vm.wait_exit(Duration::from_secs(90));
    let d = vm.describe();
    assert_eq!(rc, Some(0), "powered off through ACPI\n{d}");
    let out = vm.serial();
    assert!(out.contains("SeaBIOS (version "), "{d}");
    assert!(out.contains("Booting from Hard Disk"), "{d}");
    assert!(out.contains(MBR_MESSAGE), "{d}");
    let log = vm.vmm_log();
    assert!(log.contains("firmware: found virtio-blk at 00:"), "{d}");
    assert!(log.contains("guest powered off"), "{d}");
    assert_eq!(
        fs::read(&base).unwrap(),
        disk,
        "the base image is untouched"
    );
}
