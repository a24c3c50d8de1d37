/* A boot sector (MBR) probe that stays up: prints `KILNHOLD` on COM1 and
 * halts with interrupts off, so the VM keeps running with its threads (the
 * disk's worker, which SeaBIOS's activation started, among them) until it
 * is killed. Used by tests/tests/seccomp_paths.rs to look at every thread
 * of a running kiln-vmm. Assembled with GNU as --32, linked flat at 0x7c00.
 */
        .include "common.inc"
        .code16
        .globl _start
_start:
        cli
        xor %ax, %ax
        mov %ax, %ds
        mov $msg, %si
        PRINT_SI
3:      hlt
        jmp 3b
msg:    .asciz "\nKILNHOLD\n"
        .org 510
        .word 0xaa55
