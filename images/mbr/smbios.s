/* A boot sector probe for firmware boot: it shows that the BIOS installed
 * the VMM's SMBIOS tables. It switches to 32-bit protected mode with flat
 * segments (SeaBIOS may put the table above 1 MiB), scans 0xF0000-0xFFFFF
 * in 16-byte steps for a `_SM3_` (3.0) or `_SM_` (2.1) entry point, walks
 * the structure table it names to the type 1 (system) structure and prints
 *     SMBIOS SM3 UUID <32 hex digits>
 * (or `SM2`), the UUID's 16 bytes in table order, on COM1; then it powers
 * off through ACPI S5. Built by kiln_tests::disk::smbios_probe_disk for
 * tests/tests/smbios_seabios.rs and manager/tests/firmware.rs.
 */
        .include "common.inc"
        .code16
        .globl _start
_start:
        BOOT_SETUP
        mov $hello, %si
        PRINT_SI
        cli
        lgdtl gdt_desc
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $0x08, $pm32

        .code32
.macro PRINT32 msg
        mov $\msg, %esi
        PRINT_SI
.endm
pm32:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $0x7c00, %esp
        mov $0xf0000, %esi
scan:
        cmpl $0x334d535f, (%esi)        /* "_SM3" */
        jne not3
        cmpb $0x5f, 4(%esi)             /* "_" */
        jne not3
        mov 16(%esi), %ebx              /* table address, low 32 bits */
        PRINT32 sm3
        jmp walk_start
not3:
        cmpl $0x5f4d535f, (%esi)        /* "_SM_" */
        jne next
        mov 0x18(%esi), %ebx
        PRINT32 sm2
        jmp walk_start
next:
        add $16, %esi
        cmp $0x100000, %esi
        jb scan
        PRINT32 none
        jmp off

walk_start:
        mov $64, %ecx                   /* at most 64 structures */
walk:
        cmpb $1, (%ebx)
        je type1
        cmpb $127, (%ebx)
        je no_type1
        movzbl 1(%ebx), %eax
        add %eax, %ebx                  /* the strings */
strings:
        cmpw $0, (%ebx)
        je end_strings
        inc %ebx
        jmp strings
end_strings:
        add $2, %ebx
        loop walk
no_type1:
        PRINT32 notype1
        jmp off

type1:
        PRINT32 uuid
        lea 8(%ebx), %esi
        mov $16, %ecx
byte:
        lodsb
        mov %al, %ah
        shr $4, %al
        call hexdigit
        mov %ah, %al
        call hexdigit
        loop byte
        PRINT32 newline
off:
        ACPI_S5_OFF
halt:   hlt
        jmp halt

/* Print the low nibble of AL as a hex digit (clobbers AL, DX). */
hexdigit:
        and $0xf, %al
        cmp $10, %al
        jb digit
        add $('a' - '0' - 10), %al
digit:
        add $'0', %al
        mov $COM1, %dx
        out %al, %dx
        ret

        .p2align 3
gdt:    .quad 0
        .quad 0x00cf9a000000ffff        /* 0x08: code, flat, 32-bit */
        .quad 0x00cf92000000ffff        /* 0x10: data, flat */
gdt_desc:
        .word gdt_desc - gdt - 1
        .long gdt

hello:  .asciz "\nkiln smbios probe\n"
sm3:    .asciz "SMBIOS SM3"
sm2:    .asciz "SMBIOS SM2"
uuid:   .asciz " UUID "
newline: .asciz "\n"
none:   .asciz "SMBIOS none\n"
notype1: .asciz " no type 1\n"
        .org 510
        .word 0xaa55
