/*
 * echo: proves the console input path. Prints "echo: ready", then reads
 * bytes from COM1 (polling the line status register) and writes each back
 * in upper case, until a newline; then prints "echo: done" and powers off.
 */
        .include "common.inc"

        .text
        .code32
pvh_entry:
        jmp common_start32

        .code64
probe_main:
        PRINT "echo: ready\n"
        DEBUG 0x10
1:      mov $COM1_LSR, %dx
        in %dx, %al
        test $0x01, %al         /* data ready */
        jnz 2f
        pause
        jmp 1b
2:      mov $COM1, %dx
        in %dx, %al
        cmp $'\n', %al
        je 3f
        cmp $'\r', %al
        je 3f
        cmp $'a', %al
        jb 4f
        cmp $'z', %al
        ja 4f
        sub $0x20, %al
4:      call putc
        jmp 1b
3:      PRINT "\necho: done\n"
        jmp poweroff
