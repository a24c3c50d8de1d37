/*
 * crash: triple-faults on purpose, from its 32-bit entry: it loads an
 * empty IDT and then a segment selector past the GDT limit (#GP, no
 * handler: #DF, no handler: shutdown). kiln-vmm exits with the
 * triple-fault code (11).
 */
        .include "common.inc"

        .text
        .code32
pvh_entry:
        mov $0x40, %al
        out %al, $DEBUG_PORT
        mov $'!', %al
        mov $COM1, %dx
        out %al, %dx
        lidt null_idt_ptr
        mov $0xfff8, %eax
        mov %eax, %ds
        mov $'?', %al           /* not reached */
        out %al, %dx
        cli
1:      hlt
        jmp 1b

        .code64
probe_main:
        jmp halt
