/* A boot sector (MBR) probe: writes a sector through the BIOS disk
 * services (int 13h AH=43h, LBA), reads it back (AH=42h) and compares,
 * for LBA 1 (in the disk's first 64 KiB cluster) and LBA 130 (second
 * cluster); prints `KILNRW-OK` or `KILNRW-FAIL <step>` on COM1 and powers
 * the VM off through ACPI S5, or, with the byte at offset 509 set (the
 * test patches it), halts there instead (for a reset from outside). Used by tests/tests/seccomp_paths.rs, where
 * the disk is a qcow2 overlay over a compressed image: each write makes the
 * VMM's disk worker inflate a compressed cluster for copy-on-write.
 * Assembled with GNU as --32 and linked flat at 0x7c00.
 */
        .include "common.inc"
        .code16
        .globl _start
_start:
        BOOT_SETUP
        mov %dl, drive
        mov $start_msg, %si
        call puts

        /* The pattern: byte i of the sector is i ^ 0xa5 (never all zero,
         * and not the boot sector's bytes). */
        mov $0x8000, %di
        xor %cx, %cx
1:      mov %cl, %al
        xor $0xa5, %al
        stosb
        inc %cx
        cmp $512, %cx
        jne 1b

        movw $1, dap_lba
        call write_read
        movw $130, dap_lba
        call write_read

        mov $ok_msg, %si
        call puts
        cmpb $0, hold_flag
        je poweroff
        cli
5:      hlt
        jmp 5b

/* Write the pattern at dap_lba, read the sector back into 0x9000, compare. */
write_read:
        movw $0x8000, dap_buf
        mov $0x4300, %ax
        mov $'W', %bl
        call disk
        /* Clear the read buffer so a read that does nothing is caught. */
        mov $0x9000, %di
        mov $512, %cx
        xor %al, %al
        rep stosb
        movw $0x9000, dap_buf
        mov $0x4200, %ax
        mov $'R', %bl
        call disk
        mov $0x8000, %si
        mov $0x9000, %di
        mov $512, %cx
        cld
        repe cmpsb
        jne 2f
        ret
2:      mov $'C', %bl
        jmp fail

/* int 13h with AX as given and the DAP; BL names the step on failure. */
disk:
        mov $dap, %si
        mov drive, %dl
        int $0x13
        jc fail
        ret

fail:
        mov $fail_msg, %si
        call puts
        mov %bl, %al
        call putc
        mov $'\n', %al
        call putc
poweroff:
        ACPI_S5_OFF
3:      hlt
        jmp 3b

puts:
        lodsb
        test %al, %al
        jz 4f
        call putc
        jmp puts
4:      ret

putc:
        push %dx
        mov $0x3f8, %dx
        out %al, %dx
        pop %dx
        ret

        .balign 4
dap:    .byte 0x10, 0
        .word 1                 /* one sector */
dap_buf:
        .word 0x8000, 0         /* offset, segment */
dap_lba:
        .long 0, 0
drive:  .byte 0x80
start_msg:
        .asciz "\nKILNRW-START\n"
ok_msg: .asciz "\nKILNRW-OK\n"
fail_msg:
        .asciz "\nKILNRW-FAIL "
        .org 509
hold_flag:
        .byte 0
        .word 0xaa55
