/*
 * powerbutton: proves the ACPI power button path (what the control API's
 * `power-button` does). Enables power button events in PM1a_EN, prints
 * "powerbutton: waiting", polls PM1a_STS until PWRBTN_STS is set, clears
 * it (write 1), prints "powerbutton: pressed" and powers off through PM1a
 * control, as an OS's shutdown would.
 */
        .include "common.inc"

        .set PM1A_STS, 0x600
        .set PM1A_EN, 0x602
        .set PWRBTN, 1 << 8

        .text
        .code32
pvh_entry:
        jmp common_start32

        .code64
probe_main:
        mov $PWRBTN, %ax
        mov $PM1A_EN, %dx
        out %ax, %dx
        PRINT "powerbutton: waiting\n"
        DEBUG 0x20
1:      mov $PM1A_STS, %dx
        in %dx, %ax
        test $PWRBTN, %ax
        jnz 2f
        pause
        jmp 1b
2:      mov $PWRBTN, %ax
        out %ax, %dx
        in %dx, %ax
        test $PWRBTN, %ax
        jz 3f
        PRINT "powerbutton: status did not clear\n"
3:      PRINT "powerbutton: pressed\n"
        DEBUG 0x21
        jmp poweroff
