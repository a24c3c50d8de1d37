/*
 * poweroff: writes SLP_TYP 5 alone to the ACPI PM1a control register
 * (which must not power off) and says it is still running; then powers
 * off with SLP_EN | SLP_TYP 5 (Kiln's \_S5). kiln-vmm must exit 0 at
 * once: the line `poweroff: SLP_TYP 5 ignored` must never appear.
 */
        .include "common.inc"

        .text
        .code32
pvh_entry:
        jmp common_start32

        .code64
probe_main:
        DEBUG 0x20
        /* SLP_TYP without SLP_EN selects a state but does not enter it. */
        mov $PM1A_CNT, %dx
        mov $(KILN_S5 << 10), %ax
        out %ax, %dx
        mov $1000000, %rcx
        call spin
        PRINT "poweroff: SLP_TYP=5 without SLP_EN: still running\n"
        PRINT "poweroff: writing SLP_EN|SLP_TYP=5 to PM1a control (0x604)\n"
        jmp poweroff
