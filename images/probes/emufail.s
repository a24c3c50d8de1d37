/*
 * emufail: executes `int3` in ring 0 with an empty IDT. On this nested
 * KVM, where ring 0 runs in KVM's instruction emulator and the emulator
 * lacks int3, that is an emulation failure (kiln-vmm exit 12); on a host
 * with hardware virtualization it is a triple fault (exit 11).
 */
        .include "common.inc"

        .text
        .code32
pvh_entry:
        mov $0x70, %al
        out %al, $DEBUG_PORT
        mov $'!', %al
        mov $COM1, %dx
        out %al, %dx
        lidt null_idt_ptr
        int3
        mov $'?', %al           /* not reached */
        out %al, %dx
        cli
1:      hlt
        jmp 1b

        .code64
probe_main:
        jmp halt
