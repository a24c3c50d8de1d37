/* A boot sector (MBR) probe for disk persistence: BIOS loads it at 0x7c00
 * in real mode from the first disk. Through the BIOS's int 13h it reads
 * sector 2 (LBA 2 = CHS 0/0/3), counts the boots that wrote it (a sector
 * that starts with "KILNPERS" holds the count in byte 8; any other counts
 * as none), writes sector 2 again with the count plus one, reads it back
 * and compares, then prints "KILN-WRITE-OK n" (n the new count, a digit)
 * or "KILN-WRITE-FAIL" on COM1.
 *
 * Sector 2 afterwards: "KILNPERS", the count, then byte i (9..511) is
 * (i & 0xff) ^ 0xa5. tests/tests/disk_persistence.rs and kilnd's
 * manager/tests/disk_persistence.rs build it into a disk (assembled with
 * GNU as --32, linked flat at 0x7c00) and check that sector in the image.
 *
 * What it does then is the byte at offset 440 (`mode`, where a partition
 * table's disk signature would be), patched by the test:
 *   0: halt with interrupts off (ignores the ACPI power button),
 *   1: power off through ACPI S5 (PM1a control at port 0x604),
 *   2: reboot through the reset control register (port 0xcf9).
 */
        .include "common.inc"
        .code16
        .globl _start
        .set buf, 0x8000        /* what is written */
        .set back, 0x8200       /* what is read back */
_start:
        BOOT_SETUP
        cld
        mov %dl, drive
        mov $hello, %si
        call print

        /* Read sector 2 as it is. */
        mov $back, %bx
        call read2
        jc fail
        mov $back, %si
        mov $magic, %di
        mov $8, %cx
        repe cmpsb
        mov $1, %al
        jne 1f
        mov back+8, %al
        inc %al
1:      mov %al, count

        /* Build the new sector 2 in buf. */
        mov $buf, %di
        mov $magic, %si
        mov $8, %cx
        rep movsb
        mov count, %al
        stosb
        mov $9, %bx
2:      mov %bl, %al
        xor $0xa5, %al
        stosb
        inc %bx
        cmp $512, %bx
        jb 2b

        /* Write it: AH=3 write, AL=1 sector, cylinder 0, sector 3, head 0. */
        mov $0x0301, %ax
        mov $0x0003, %cx
        xor %dh, %dh
        mov drive, %dl
        mov $buf, %bx
        int $0x13
        jc fail

        /* Read it back and compare. */
        mov $back, %di
        xor %al, %al
        mov $512, %cx
        rep stosb
        mov $back, %bx
        call read2
        jc fail
        mov $buf, %si
        mov $back, %di
        mov $512, %cx
        repe cmpsb
        jne fail

        mov count, %al
        add $'0', %al
        mov %al, digit
        mov $ok, %si
        call print

        mov mode, %al
        cmp $1, %al
        je poweroff
        cmp $2, %al
        je reboot
halt:   cli
        hlt
        jmp halt

poweroff:
        ACPI_S5_OFF
        jmp halt

reboot:
        mov $0xcf9, %dx
        mov $0x06, %al          /* full reset */
        out %al, %dx
        jmp halt

fail:   mov $bad, %si
        call print
        jmp halt

/* Read sector 2 into ES:BX; CF on error. */
read2:  mov $0x0201, %ax
        mov $0x0003, %cx
        xor %dh, %dh
        mov drive, %dl
        int $0x13
        ret

/* Print the NUL-terminated string at DS:SI on COM1. */
print:  PRINT_SI
        ret

drive:  .byte 0
count:  .byte 0
magic:  .ascii "KILNPERS"
hello:  .asciz "\nkiln persist probe\n"
ok:     .ascii "\nKILN-WRITE-OK "
digit:  .asciz "0\n"
bad:    .asciz "\nKILN-WRITE-FAIL\n"
        .org 440
mode:   .byte 0
        .org 510
        .word 0xaa55
