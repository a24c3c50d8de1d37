/* A boot sector probe for config drives: booted by SeaBIOS from the first
 * virtio-blk disk, it reads the second hard disk (BIOS drive 0x81, the
 * config drive) through int 13h AH=42h at 512-byte LBA 64, which is ISO
 * 9660 block 16, the primary volume descriptor, and prints on COM1
 *     KILNCD-DISKS <n>            the BIOS's hard disk count (BDA 0x475)
 *     KILNCD-PVD <id>             if the block starts 01 "CD001": the
 *                                 volume id (32 bytes at offset 40)
 *     KILNCD-RO | KILNCD-WRITABLE whether writing that sector back
 *                                 (AH=43h) fails, as a read-only disk must
 * or `KILNCD-FAIL <step>`; then it powers the VM off through ACPI S5.
 * Built by kiln_tests::disk::config_drive_probe_disk for
 * manager/tests/config_drive.rs.
 */
        .include "common.inc"
        .code16
        .globl _start
_start:
        BOOT_SETUP
        mov $start_msg, %si
        PRINT_SI
        mov $disks_msg, %si
        PRINT_SI
        mov 0x475, %al
        add $'0', %al
        call putc
        mov $'\n', %al
        call putc

        /* Read the primary volume descriptor's first 512 bytes. */
        mov $0x4200, %ax
        mov $'R', %bl
        call disk
        cmpb $1, 0x8000
        jne bad_pvd
        cmpl $0x30304443, 0x8001        /* "CD00", little-endian */
        jne bad_pvd
        cmpb $'1', 0x8005
        jne bad_pvd
        mov $pvd_msg, %si
        PRINT_SI
        movb $0, 0x8000 + 40 + 32       /* end the volume id */
        mov $0x8000 + 40, %si
        PRINT_SI
        mov $'\n', %al
        call putc

        /* Write the same bytes back: a read-only disk refuses. */
        mov $0x4300, %ax
        mov $dap, %si
        mov $0x81, %dl
        int $0x13
        mov $ro_msg, %si
        jc 1f
        mov $rw_msg, %si
1:      PRINT_SI
        jmp off

bad_pvd:
        mov $'V', %bl
fail:
        mov $fail_msg, %si
        PRINT_SI
        mov %bl, %al
        call putc
        mov $'\n', %al
        call putc
off:
        ACPI_S5_OFF
3:      hlt
        jmp 3b

/* int 13h on drive 0x81 with AX as given and the DAP; BL names the step. */
disk:
        mov $dap, %si
        mov $0x81, %dl
        int $0x13
        jc fail
        ret

putc:
        mov $COM1, %dx
        out %al, %dx
        ret

        .balign 4
dap:    .byte 0x10, 0
        .word 1                 /* one 512-byte sector */
        .word 0x8000, 0         /* offset, segment */
        .long 64, 0             /* LBA 64: ISO block 16 */
start_msg:
        .asciz "\nKILNCD-START\n"
disks_msg:
        .asciz "KILNCD-DISKS "
pvd_msg:
        .asciz "KILNCD-PVD "
ro_msg: .asciz "KILNCD-RO\n"
rw_msg: .asciz "KILNCD-WRITABLE\n"
fail_msg:
        .asciz "KILNCD-FAIL "
        .org 510
        .word 0xaa55
