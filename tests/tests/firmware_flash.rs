//! The OVMF variable store's CFI flash and the PIIX4 PM function, end to
//! end through `kiln-vmm --firmware --firmware-vars`, with a tiny firmware
//! of our own (GNU as, 64 KiB, reset vector at its end) that does what OVMF
//! does on real hardware:
//!
//! 1. first boot: OVMF's flash detection probe (clear status, read back,
//!    read status, read array), a byte program at store offset 0x100, a
//!    status read, back to read-array mode and a read-back; then a reset
//!    through 0xCF9: `kiln-vmm` exits with the reboot status (10), and is
//!    started again on the same files, as kilnd does for a guest reboot;
//! 2. second boot: the byte is still there (it went into the vars file);
//!    then power-off the way an ACPI OS does it on this platform: PMBA
//!    0xB000 and PMIOSE through 00:01.3's configuration space, then S5 in
//!    PM1a_CNT at 0xB004 (exit status 0).
//!
//! The test checks the serial lines and exit status of both boots and the
//! vars file on disk afterwards. A second test does the same with the
//! control API's `reset` (the VMM re-executes itself in place) instead of
//! the guest's: the test sets store byte 0x200 to 1, which makes the first
//! boot halt after programming.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::api::request;
use kiln_tests::asm::assemble_flat;
use kiln_tests::{kiln_vmm, kvm_available, tail_lines, ScratchDir};

/// Where `placement` puts a 4 KiB store under a 64 KiB code image.
const VARS_BASE: u32 = 0xfffe_f000;
const VARS_SIZE: usize = 4096;
const PROGRAMMED_AT: usize = 0x100;
const PROGRAMMED: u8 = 0x77;
/// Store byte the test sets to 1 to make the first boot wait for a reset.
const HOLD_AT: usize = 0x200;

const FIRMWARE_SOURCE: &str = r#"
        .set VARS, 0xfffef000
        .set ALIAS, 0xf0000          /* the image's copy below 1 MiB */
        .code16
        .globl _start
_start:
        cli
        mov $0xf000, %ax
        mov %ax, %ds
        lgdtl gdt_desc
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $0x08, $(ALIAS + pm32)

        .code32
pm32:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $0x7000, %esp
        mov $VARS, %esi
        cmpb $0x77, 0x100(%esi)
        je second_boot
        /* OVMF's QemuFlashDetected at offset 0 (0xff: not 0x00/0x50/0x70) */
        movb $0x50, (%esi)
        movb (%esi), %al
        cmp $0x50, %al
        je as_ram
        movb $0x70, (%esi)
        movb (%esi), %al
        movb $0xff, (%esi)
        test %al, %al
        jnz not_flash
        mov $(ALIAS + msg_detected), %ebp
        call print
        /* QemuFlashWrite of one byte, a status read, read array */
        movb $0x10, 0x100(%esi)
        movb $0x77, 0x100(%esi)
        movb 0x100(%esi), %al
        movb $0xff, 0x100(%esi)
        test $0x80, %al
        jz program_failed
        cmpb $0x77, 0x100(%esi)
        jne program_failed
        mov $(ALIAS + msg_programmed), %ebp
        call print
        /* Store byte 0x200 == 1: wait for a reset from outside. */
        cmpb $0x01, 0x200(%esi)
        je 1f
        mov $0x06, %al
        mov $0xcf9, %dx
        out %al, %dx
1:      hlt
        jmp 1b

second_boot:
        mov $(ALIAS + msg_persisted), %ebp
        call print
poweroff:
        /* PIIX4 PM (00:01.3): PMBA 0xb000, PMREGMISC.PMIOSE */
        mov $0x80000b40, %eax
        mov $0xcf8, %dx
        out %eax, %dx
        mov $0xb001, %eax
        mov $0xcfc, %dx
        out %eax, %dx
        mov $0x80000b80, %eax
        mov $0xcf8, %dx
        out %eax, %dx
        mov $1, %al
        mov $0xcfc, %dx
        out %al, %dx
        /* S5: SLP_TYP 5 | SLP_EN in PM1a_CNT */
        mov $0x3400, %ax
        mov $0xb004, %dx
        out %ax, %dx
2:      hlt
        jmp 2b

as_ram:
        mov $(ALIAS + msg_ram), %ebp
        call print
        jmp poweroff
not_flash:
        mov $(ALIAS + msg_not_flash), %ebp
        call print
        jmp poweroff
program_failed:
        mov $(ALIAS + msg_failed), %ebp
        call print
        jmp poweroff

/* print: the NUL-terminated string at %ebp to COM1 */
print:
        mov $0x3f8, %dx
3:      movb (%ebp), %al
        test %al, %al
        jz 4f
        out %al, %dx
        inc %ebp
        jmp 3b
4:      ret

msg_detected:   .asciz "flash: detected\n"
msg_programmed: .asciz "flash: programmed\n"
msg_persisted:  .asciz "flash: persisted across the reboot\n"
msg_ram:        .asciz "flash: behaves as RAM\n"
msg_not_flash:  .asciz "flash: not detected\n"
msg_failed:     .asciz "flash: program failed\n"

        .balign 8
gdt:
        .quad 0
        .quad 0x00cf9a000000ffff
        .quad 0x00cf92000000ffff
gdt_desc:
        .word 23
        .long ALIAS + gdt

        .org 0xfff0
        .code16
        ljmp $0xf000, $_start
        .org 0x10000
"#;

/// Assemble the firmware (GNU as, ld) into `dir`; returns its path.
fn build_firmware(dir: &Path) -> PathBuf {
    let s = dir.join("fw.s");
    fs::write(&s, FIRMWARE_SOURCE).unwrap();
    let image = assemble_flat(&s, 0, dir);
    assert_eq!(image.len(), 0x10000);
    dir.join("fw.bin")
}

/// A `kiln-vmm` on `firmware` and `vars` (serial log and VMM log in `dir`).
struct FwRun {
    child: Child,
    serial: PathBuf,
    log: PathBuf,
}

impl FwRun {
    fn start(dir: &Path, firmware: &Path, vars: &Path, api: Option<&Path>) -> FwRun {
        let serial = dir.join("serial.log");
        let log = dir.join("vmm.log");
        let mut cmd = Command::new(kiln_vmm());
        cmd.arg("--firmware")
            .arg(firmware)
            .arg("--firmware-vars")
            .arg(vars)
            .args(["--cpus", "1", "--memory", "64M", "--log-level", "info"])
            .arg("--serial-log")
            .arg(&serial);
        if let Some(sock) = api {
            cmd.arg("--api-socket").arg(sock);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn kiln-vmm");
        FwRun { child, serial, log }
    }

    fn serial(&self) -> String {
        fs::read_to_string(&self.serial).unwrap_or_default()
    }

    fn vmm_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!(
            "--- serial ---\n{}\n--- kiln-vmm log ---\n{}",
            self.serial(),
            tail_lines(&self.vmm_log(), 40)
        )
    }

    /// Wait (bounded) until `cond` holds on the serial output.
    fn wait_serial(&self, cond: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !cond(&self.serial()) {
            assert!(Instant::now() < deadline, "timed out\n{}", self.describe());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit code (None: killed after the timeout).
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FwRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TIMEOUT: Duration = Duration::from_secs(60);
const FIRST_BOOT: &str = "flash: detected\nflash: programmed\n";
const SECOND_BOOT: &str = "flash: persisted across the reboot\n";

/// A blank 4 KiB store; `hold` sets byte 0x200 so that the first boot
/// waits for a reset from outside.
fn blank_vars(dir: &Path, hold: bool) -> PathBuf {
    let mut bytes = vec![0xffu8; VARS_SIZE];
    if hold {
        bytes[HOLD_AT] = 1;
    }
    let vars = dir.join("vars.fd");
    fs::write(&vars, bytes).unwrap();
    vars
}

/// A scratch directory `tag` with the firmware and a blank store in it
/// (see [`blank_vars`] for `hold`).
fn firmware_and_store(tag: &str, hold: bool) -> (ScratchDir, PathBuf, PathBuf) {
    let dir = ScratchDir::new(tag).expect("scratch dir");
    let firmware = build_firmware(dir.path());
    let vars = blank_vars(dir.path(), hold);
    (dir, firmware, vars)
}

/// The store after both boots: the programmed byte, the rest as before.
fn check_vars(vars: &Path, hold: bool) {
    let on_disk = fs::read(vars).unwrap();
    assert_eq!(on_disk.len(), VARS_SIZE);
    assert_eq!(on_disk[PROGRAMMED_AT], PROGRAMMED);
    let changed = on_disk
        .iter()
        .enumerate()
        .filter(|&(i, &b)| {
            let before = if hold && i == HOLD_AT { 1 } else { 0xff };
            i != PROGRAMMED_AT && b != before
        })
        .count();
    assert_eq!(changed, 0, "only the programmed byte changed");
}

/// The second boot ends in a power-off (exit 0) through the PM block the
/// firmware placed at 0xB000, with both boots' lines on the serial
/// console and only the programmed byte changed in the store.
fn finish_second_boot(run: &mut FwRun, vars: &Path, hold: bool) {
    assert_eq!(run.wait_exit(), Some(0), "{}", run.describe());
    assert_eq!(
        run.serial(),
        format!("{FIRST_BOOT}{SECOND_BOOT}"),
        "{}",
        run.describe()
    );
    let (vmm, d) = (run.vmm_log(), run.describe());
    assert!(
        vmm.contains(&format!("at {VARS_BASE:#x} (0x1000 bytes, CFI flash)")),
        "{d}"
    );
    assert!(vmm.contains("piix4: ACPI PM block at 0xb000"), "{d}");
    assert!(vmm.contains("guest powered off"), "{d}");
    check_vars(vars, hold);
}

#[test]
fn variables_survive_a_reboot_and_power_off_goes_through_the_piix4_pm_block() {
    if !kvm_available("variables_survive_a_reboot_and_power_off_goes_through_the_piix4_pm_block") {
        return;
    }
    let (dir, firmware, vars) = firmware_and_store("fwflash", false);
    // First boot: detect, program, reboot through 0xCF9 (exit 10).
    let mut run = FwRun::start(dir.path(), &firmware, &vars, None);
    assert_eq!(run.wait_exit(), Some(10), "{}", run.describe());
    assert_eq!(run.serial(), FIRST_BOOT, "{}", run.describe());
    assert_eq!(fs::read(&vars).unwrap()[PROGRAMMED_AT], PROGRAMMED);
    // Second boot on the same files, as kilnd restarts a rebooted guest:
    // the byte is there; power-off (exit 0) through the PM block the
    // firmware placed at 0xB000.
    let mut run = FwRun::start(dir.path(), &firmware, &vars, None);
    finish_second_boot(&mut run, &vars, false);
}

#[test]
fn variables_survive_a_control_api_reset_in_place() {
    if !kvm_available("variables_survive_a_control_api_reset_in_place") {
        return;
    }
    let (dir, firmware, vars) = firmware_and_store("fwflash-api", true);
    let sock = dir.path().join("api.sock");
    let mut run = FwRun::start(dir.path(), &firmware, &vars, Some(&sock));
    run.wait_serial(|s| s.contains("flash: programmed"));
    let (code, body) = request(&sock, "PUT", "/v1/vm/reset").expect("reset through the API");
    assert_eq!(code, 204, "{body}\n{}", run.describe());
    // The same process (re-executed in place) boots again and powers off.
    finish_second_boot(&mut run, &vars, true);
    assert!(
        run.vmm_log().contains("reset: restarting the VMM in place"),
        "{}",
        run.describe()
    );
}
