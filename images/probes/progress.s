/*
 * progress: writes debug-port codes 0x10, 0x11, ... 0x17 with a few
 * milliseconds of ring-3 work between them, then 0x1f, prints
 * `progress done` and halts, so a test can read the codes and their
 * (rising) timestamps from the running VMM's control API. With `flood` on
 * the command line it writes 5000 more codes (0x00, 0x01, ... wrapping)
 * before `progress done`, past the 4096 the VMM keeps.
 */
        .include "common.inc"

        .set FIRST_CODE, 0x10
        .set COUNT, 8
        .set FLOOD_COUNT, 5000

        .text
        .code32
pvh_entry:
        jmp common_start32

        .code64
probe_main:
        PRINT "progress: start\n"
        xor %ebx, %ebx
1:      lea FIRST_CODE(%rbx), %eax
        call debug_code
        PRINT "progress "
        mov %rbx, %rax
        call put_dec
        mov $'\n', %al
        call putc
        mov $20000000, %rcx     /* a few ms of native work */
        call spin
        inc %ebx
        cmp $COUNT, %ebx
        jb 1b
        DEBUG 0x1f
        lea word_flood(%rip), %rdi
        call cmdline_has
        jz 3f
        mov $FLOOD_COUNT, %ebx  /* then FLOOD_COUNT more: 0x00, 0x01, ... */
        xor %eax, %eax
2:      out %al, $DEBUG_PORT
        inc %eax
        dec %ebx
        jnz 2b
3:      PRINT "progress done\n"
        jmp halt

        .section .rodata
word_flood: .asciz "flood"
