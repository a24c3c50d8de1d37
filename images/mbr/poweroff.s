/* A boot sector (MBR) probe for firmware boot: BIOS loads it at 0x7c00 in
 * real mode from the first disk; it prints one line on COM1 and powers the
 * VM off through ACPI S5 (PM1a control at port 0x604, SLP_TYP 5). Used by
 * kilnd's firmware tests (manager/tests/firmware.rs) and by
 * tests/tests/virtio_seabios.rs, which assemble it with GNU as --32 and
 * link it flat at 0x7c00 into a 512-byte sector.
 */
        .include "common.inc"
        .code16
        .globl _start
_start:
        cli
        xor %ax, %ax
        mov %ax, %ds
        mov $msg, %si
        PRINT_SI
        ACPI_S5_OFF
3:      hlt
        jmp 3b
msg:    .asciz "kiln MBR booted from virtio-blk\n"
        .org 510
        .word 0xaa55
