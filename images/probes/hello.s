/*
 * hello: the smallest probe. Its very first instructions signal both ways
 * (debug-port code 0x01, then '*' on COM1) so a benchmark can time the
 * first guest instruction; then it prints a line and powers off through
 * ACPI PM1a. With `hold` on the command line it prints the same line and
 * `hello: holding` and halts for real (so a benchmark can measure the VMM
 * while the guest is idle, and held guests cost no host CPU): that path
 * stays in ring 0, since ring 3 cannot halt here (see common.inc).
 */
        .include "common.inc"

        .text
        .code32
pvh_entry:
        mov $0x01, %al
        out %al, $DEBUG_PORT
        mov $'*', %al
        mov $COM1, %dx
        out %al, %dx
        mov %ebx, start_info_ptr
        lgdt gdt_ptr
        mov $boot_stack_top, %esp
        mov $hello_ring0, %ebx
        mov $1, %edi            /* to long mode, staying in ring 0 */
        jmp long_mode32

        .code64
hello_ring0:
        lea word_hold(%rip), %rdi
        call cmdline_has
        jnz 1f
        mov $probe_main, %ebx
        jmp enter_ring3
1:      PRINT "\nhello from a kiln probe\n"
        DEBUG 0x02
        PRINT "hello: holding\n"
        DEBUG 0x03
        cli
2:      hlt
        jmp 2b

probe_main:
        PRINT "\nhello from a kiln probe\n"
        DEBUG 0x02
        PRINT "hello: powering off\n"
        jmp poweroff

        .section .rodata
word_hold: .asciz "hold"
