/* An El Torito no-emulation boot image for the ATAPI CD-ROM test
 * (tests/tests/ahci_seabios.rs): the BIOS loads its four 512-byte
 * sectors at 0x7c00 and jumps there with DL the CD-ROM's drive number.
 * It prints `KILN-CD-BOOT`, reads the ISO's primary volume descriptor
 * (2048-byte LBA 16) through int 13h AH=42h into 0x8000, prints
 * `KILN-CD-PVD-OK` if it carries "CD001" (else `KILN-CD-FAIL`), and
 * powers the VM off through ACPI S5. Assembled with GNU as --32 and linked
 * flat at 0x7c00.
 */
        .include "common.inc"
        .code16
        .globl _start
_start:
        BOOT_SETUP
        mov %dl, dap_drive
        mov $boot_msg, %si
        PRINT_SI
        mov $dap, %si
        mov dap_drive, %dl
        mov $0x4200, %ax
        int $0x13
        jc fail
        cmpl $0x30444301, 0x8000
        jne fail
        cmpw $0x3130, 0x8004        /* "01" */
        jne fail
        mov $ok_msg, %si
        jmp out
fail:   mov $fail_msg, %si
out:    PRINT_SI
        ACPI_S5_OFF
3:      hlt
        jmp 3b

        .balign 4
dap:    .byte 0x10, 0
        .word 1                 /* one 2048-byte sector */
        .word 0x8000, 0         /* offset, segment */
        .long 16, 0             /* the primary volume descriptor */
dap_drive:
        .byte 0
boot_msg:
        .asciz "\nKILN-CD-BOOT\n"
ok_msg: .asciz "\nKILN-CD-PVD-OK\n"
fail_msg:
        .asciz "\nKILN-CD-FAIL\n"
        .org 2047
        .byte 0
