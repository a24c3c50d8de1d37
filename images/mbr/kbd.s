/* A boot sector (MBR) probe of the PS/2 keyboard (tests/tests/keyboard.rs):
 * prints `KILNKBD READY` on COM1, then forever reads a key through the
 * BIOS (int 16h AH=10h, the enhanced read: AH the scan code, AL the
 * character, 0xE0 for the extended keys such as the arrows), echoes a
 * printable character on the screen through int 10h, and prints
 * `KEY ss cc` (hex scan code and character) on COM1.
 * Assembled with GNU as --32, linked flat at 0x7c00.
 */
        .include "common.inc"
        .code16
        .globl _start

_start:
        BOOT_SETUP
        mov $ready_msg, %si
        PRINT_SI
next:
        mov $0x10, %ah
        int $0x16
        mov %ax, %bp
        /* Echo printable characters on the screen. */
        cmp $0x20, %al
        jb 1f
        cmp $0x7e, %al
        ja 1f
        mov $0x0e, %ah
        mov $0x0007, %bx
        int $0x10
1:      mov $key_msg, %si
        PRINT_SI
        mov %bp, %ax
        mov %ah, %al
        call hex
        mov $' ', %al
        call putc
        mov %bp, %ax
        call hex
        mov $'\r', %al
        call putc
        mov $'\n', %al
        call putc
        jmp next

/* Print AL as two hex digits on COM1 (clobbers AX, CX, DX). */
hex:    mov %al, %cl
        shr $4, %al
        call digit
        mov %cl, %al
        and $0x0f, %al
digit:  add $'0', %al
        cmp $'9', %al
        jbe putc
        add $('A' - '9' - 1), %al
putc:   mov $COM1, %dx
        out %al, %dx
        ret

ready_msg: .asciz "KILNKBD READY\r\n"
key_msg:   .asciz "KEY "

        .org 510
        .word 0xaa55
