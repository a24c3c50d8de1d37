/*
 * reset: resets the machine through the i8042 (0xFE to port 0x64), or,
 * with `cf9` on the command line, through the reset control register:
 * first 0x02 (SYS_RST alone, which must not reset: it prints `reset: 0x02
 * to port 0xcf9 did not reset`), then 0x06. kiln-vmm exits with the reboot
 * code (10). If the machine is still running afterwards it says so.
 */
        .include "common.inc"

        .text
        .code32
pvh_entry:
        jmp common_start32

        .code64
probe_main:
        DEBUG 0x30
        lea word_cf9(%rip), %rdi
        call cmdline_has
        jnz 1f
        PRINT "reset: through the i8042 (0xfe to port 0x64)\n"
        mov $0xfe, %al
        out %al, $I8042_CMD
        jmp 2f
1:      mov $RESET_CONTROL, %dx /* SYS_RST alone: no reset yet */
        mov $0x02, %al
        out %al, %dx
        mov $1000000, %rcx
        call spin
        PRINT "reset: 0x02 to port 0xcf9 did not reset\n"
        PRINT "reset: through port 0xcf9\n"
        mov $RESET_CONTROL, %dx /* then RST_CPU: a hard reset */
        mov $0x06, %al
        out %al, %dx
2:      mov $1000000, %rcx
        call spin
        PRINT "reset: still running\n"
        jmp halt

        .section .rodata
word_cf9: .asciz "cf9"
