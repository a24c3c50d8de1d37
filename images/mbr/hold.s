/* A boot sector (MBR) probe that stays up: prints `KILNHOLD` on COM1 and
 * halts with interrupts off, so the VM keeps running with its threads (the
 * disk's worker, which SeaBIOS's activation started, among them) until it
 * is killed. Used by tests/tests/seccomp_paths.rs to look at every thread
 * of a running kiln-vmm. Assembled with GNU as --32, linked flat at 0x7c00.
 */
        .code16
        .globl _start
_start:
        cli
        xor %ax, %ax
        mov %ax, %ds
        mov $msg, %si
1:      lodsb
        test %al, %al
        jz 2f
        mov $0x3f8, %dx
        out %al, %dx
        jmp 1b
2:      hlt
        jmp 2b
msg:    .asciz "\nKILNHOLD\n"
        .org 510
        .word 0xaa55
