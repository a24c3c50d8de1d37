/* A boot sector (MBR) probe of the display (tests/tests/display.rs):
 *  1. prints `KILN VGA PROBE` on the screen through int 10h (teletype),
 *     then `KILNVGA TEXT` on COM1;
 *  2. once the test says go (`GO!!` at the start of the disk's second
 *     sector, which it polls through int 13h: a fixed wait would race
 *     the tests' text-mode screenshots on a loaded host, where the timer
 *     ticks a halted guest missed also arrive in a burst) sets 1024x768x32 through the Bochs VBE
 *     registers (ports 0x1CE/0x1CF), finds the framebuffer (BAR 0 of PCI
 *     1234:1111 on bus 0) and, in unreal mode, draws: pixel (x, y) for
 *     x, y < 256 is red x, green y, blue 0x80; rows 400-409 are red.
 *     Then prints `KILNVGA VBE` on COM1 and halts (the test kills it),
 *     or, when `DIE!` follows `GO!!`, prints `KILNVGA DIE` and
 *     triple-faults (manager/tests/display_last.rs).
 *  `KILNVGA FAIL` on COM1: no 1234:1111 device.
 * Assembled with GNU as --32, linked flat at 0x7c00.
 */
        .include "common.inc"
        .code16
        .globl _start

.macro DISPI index, value
        mov $0x1ce, %dx
        mov $\index, %ax
        out %ax, %dx
        inc %dx
        mov $\value, %ax
        out %ax, %dx
.endm

_start:
        BOOT_SETUP
        mov %dl, drive
        mov $screen_msg, %si
1:      lodsb
        test %al, %al
        jz 2f
        mov $0x0e, %ah
        mov $0x0007, %bx
        int $0x10
        jmp 1b
2:      mov $text_msg, %si
        PRINT_SI
        /* Poll sector 2 (LBA 1) into 0x7e00 until it starts with GO!!. */
3:      mov $0x0201, %ax        /* read one sector */
        mov $0x0002, %cx        /* cylinder 0, sector 2 */
        xor %dh, %dh            /* head 0 */
        mov drive, %dl
        mov $0x7e00, %bx
        int $0x13
        cmpl $0x21214f47, 0x7e00        /* "GO!!" */
        je 4f
        hlt
        jmp 3b
4:

        /* Find 1234:1111 on bus 0: its BAR 0 into %edi. */
        mov $0x80000000, %ebx
41:     mov %ebx, %eax
        mov $0xcf8, %dx
        out %eax, %dx
        mov $0xcfc, %dx
        in %dx, %eax
        cmp $0x11111234, %eax
        je 5f
        add $0x800, %ebx
        cmp $0x80010000, %ebx
        jb 41b
        mov $fail_msg, %si
        PRINT_SI
        jmp halt
5:      lea 0x10(%ebx), %eax
        mov $0xcf8, %dx
        out %eax, %dx
        mov $0xcfc, %dx
        in %dx, %eax
        and $0xfffffff0, %eax
        mov %eax, %edi

        DISPI 4, 0              /* disable */
        DISPI 1, 1024
        DISPI 2, 768
        DISPI 3, 32
        DISPI 4, 0x41           /* enabled, linear framebuffer */

        /* Unreal mode: %fs with a 4 GiB limit. */
        cli
        lgdt gdtr
        mov %cr0, %eax
        or $1, %al
        mov %eax, %cr0
        mov $8, %bx
        mov %bx, %fs
        and $0xfe, %al
        mov %eax, %cr0
        xor %ax, %ax
        mov %ax, %fs
        sti

        xor %ecx, %ecx          /* y */
6:      xor %esi, %esi          /* x */
7:      mov %esi, %eax
        shl $16, %eax
        mov %ecx, %edx
        shl $8, %edx
        or %edx, %eax
        or $0x80, %al
        mov %ecx, %ebx
        shl $10, %ebx
        add %esi, %ebx
        addr32 mov %eax, %fs:(%edi,%ebx,4)
        inc %esi
        cmp $256, %esi
        jb 7b
        inc %ecx
        cmp $256, %ecx
        jb 6b

        lea 400*4096(%edi), %ebx
        mov $10240, %ecx
        mov $0x00ff0000, %eax
8:      addr32 mov %eax, %fs:(%ebx)
        add $4, %ebx
        dec %ecx
        jnz 8b

        mov $vbe_msg, %si
        PRINT_SI
        /* `DIE!` after GO!!: triple-fault, as a crashing guest (kilnd
         * keeps its last picture): protected mode, an empty IDT and a
         * selector past the GDT limit (#GP, no handler: #DF, shutdown). */
        cmpl $0x21454944, 0x7e04        /* "DIE!" */
        jne halt
        mov $die_msg, %si
        PRINT_SI
        cli
        lidt null_idtr
        mov %cr0, %eax
        or $1, %al
        mov %eax, %cr0
        mov $0xfff8, %ax
        mov %ax, %ds
halt:   cli
9:      hlt
        jmp 9b

        .p2align 3
gdt:    .quad 0
        .quad 0x00cf92000000ffff        /* flat 4 GiB data */
gdtr:   .word 15
        .long gdt
null_idtr:  .word 0
        .long 0
drive:      .byte 0x80
screen_msg: .asciz "KILN VGA PROBE"
text_msg:   .asciz "\nKILNVGA TEXT\n"
vbe_msg:    .asciz "\nKILNVGA VBE\n"
fail_msg:   .asciz "\nKILNVGA FAIL\n"
die_msg:    .asciz "KILNVGA DIE\n"
        .org 510
        .word 0xaa55
