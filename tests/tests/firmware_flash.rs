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
//! vars file on disk afterwards.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::{kiln_vmm, kvm_available, tail_lines, ScratchDir};

/// Where `placement` puts a 4 KiB store under a 64 KiB code image.
const VARS_BASE: u32 = 0xfffe_f000;
const VARS_SIZE: usize = 4096;
const PROGRAMMED_AT: usize = 0x100;
const PROGRAMMED: u8 = 0x77;

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
    let o = dir.join("fw.o");
    let bin = dir.join("fw.bin");
    let st = Command::new("as")
        .args(["--32", "-o"])
        .arg(&o)
        .arg(&s)
        .status()
        .expect("GNU as (binutils)");
    assert!(st.success(), "as");
    let st = Command::new("ld")
        .args(["-m", "elf_i386", "-Ttext", "0", "--oformat", "binary", "-o"])
        .arg(&bin)
        .arg(&o)
        .status()
        .expect("ld (binutils)");
    assert!(st.success(), "ld");
    assert_eq!(fs::metadata(&bin).unwrap().len(), 0x10000);
    bin
}

#[test]
fn variables_survive_a_reboot_and_power_off_goes_through_the_piix4_pm_block() {
    if !kvm_available("variables_survive_a_reboot_and_power_off_goes_through_the_piix4_pm_block") {
        return;
    }
    let dir = ScratchDir::new("fwflash").expect("scratch dir");
    let firmware = build_firmware(dir.path());
    let vars = dir.path().join("vars.fd");
    fs::write(&vars, vec![0xffu8; VARS_SIZE]).unwrap();
    let serial = dir.path().join("serial.log");
    let log = dir.path().join("vmm.log");
    let boot = |expect_code: i32, expect_serial: &str| -> String {
        let mut child = Command::new(kiln_vmm())
            .arg("--firmware")
            .arg(&firmware)
            .arg("--firmware-vars")
            .arg(&vars)
            .args(["--cpus", "1", "--memory", "64M", "--log-level", "info"])
            .arg("--serial-log")
            .arg(&serial)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn kiln-vmm");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = fs::read_to_string(&serial).unwrap_or_default();
        let vmm = fs::read_to_string(&log).unwrap_or_default();
        let d = format!(
            "--- serial ---\n{out}\n--- kiln-vmm log ---\n{}",
            tail_lines(&vmm, 40)
        );
        assert_eq!(status.and_then(|s| s.code()), Some(expect_code), "{d}");
        assert_eq!(out, expect_serial, "{d}");
        assert!(
            vmm.contains(&format!("at {VARS_BASE:#x} (0x1000 bytes, CFI flash)")),
            "{d}"
        );
        vmm
    };
    // First boot: detect, program, reboot (exit 10).
    let first = "flash: detected\nflash: programmed\n";
    boot(10, first);
    assert_eq!(fs::read(&vars).unwrap()[PROGRAMMED_AT], PROGRAMMED);
    // Second boot on the same files: the byte is there; power-off (exit 0)
    // through the PM block the firmware placed at 0xB000.
    let vmm = boot(0, &format!("{first}flash: persisted across the reboot\n"));
    let d = tail_lines(&vmm, 40);
    assert!(vmm.contains("piix4: ACPI PM block at 0xb000"), "{d}");
    assert!(vmm.contains("guest powered off"), "{d}");
    let on_disk = fs::read(&vars).unwrap();
    assert_eq!(on_disk.len(), VARS_SIZE);
    assert_eq!(on_disk[PROGRAMMED_AT], PROGRAMMED);
    let others = on_disk
        .iter()
        .enumerate()
        .filter(|&(i, &b)| i != PROGRAMMED_AT && b != 0xff)
        .count();
    assert_eq!(others, 0, "only the programmed byte changed");
}
