/*
 * tpm: drives the TPM 2.0 CRB interface at 0xfed40000 (locality 0) from
 * ring 3: prints INTF_ID, requests the locality with a byte write to
 * LOC_CTRL and prints LOC_STATE and LOC_STS, sets cmdReady, then runs
 * TPM2_Startup(SU_CLEAR), TPM2_GetRandom(8), TPM2_PCR_Extend of PCR 8
 * (SHA-256 digest of 32 bytes 0x11, password session) and TPM2_PCR_Read
 * of PCR 8, each written into the buffer a byte at a time, started with
 * a byte write of 1 to CTRL_START and polled until CTRL_START reads 0.
 * PCR 8 has the stateSave attribute (PCRs 0-15 in the PC Client
 * profile): a TPM2_Shutdown(STATE) keeps it for a Startup(STATE).
 * Each response is printed as `tpm: NAME <hex bytes>`; then it powers
 * off (with `hold` on the command line it prints `tpm: holding` and
 * spins instead, for a reset through the control API). With `reset` on
 * the command line it prints PCR 8 after the startup, extends and reads
 * it, and resets through the i8042 (kiln-vmm re-executes itself; the
 * probe runs again): a TPM that was re-initialised prints startup rc 0
 * and PCR 8 zero again each time. */
        .include "common.inc"

        /* Registers as offsets from %r12, which holds the base (an
         * absolute 32-bit address would be sign-extended in long mode). */
        .set CRB, 0xfed40000
        .set LOC_STATE, 0x00
        .set LOC_CTRL, 0x08
        .set LOC_STS, 0x0c
        .set INTF_ID, 0x30
        .set CTRL_REQ, 0x40
        .set CTRL_STS, 0x44
        .set CTRL_START, 0x4c
        .set CTRL_CMD_SIZE, 0x58
        .set BUFFER, 0x80

        .text
        .code32
pvh_entry:
        jmp common_start32

        .code64
probe_main:
        DEBUG 0x40
        mov $CRB, %r12d
        PRINT "tpm: intf "
        mov INTF_ID(%r12), %rax
        call put_hex
        PRINT "\ntpm: cmd size "
        mov CTRL_CMD_SIZE(%r12), %eax
        call put_dec
        movb $1, LOC_CTRL(%r12)               /* requestAccess, a byte write */
        PRINT "\ntpm: loc state "
        movzbl LOC_STATE(%r12), %eax
        call put_hex
        PRINT "\ntpm: loc sts "
        mov LOC_STS(%r12), %eax
        call put_hex
        movl $1, CTRL_REQ(%r12)               /* cmdReady */
        PRINT "\ntpm: ctrl sts "
        mov CTRL_STS(%r12), %eax
        call put_hex
        PRINT "\n"

        PRINT "tpm: startup "
        lea cmd_startup(%rip), %rsi
        mov $12, %ecx
        call tpm_cmd
        lea word_reset(%rip), %rdi
        call cmdline_has
        jnz reset_mode

        PRINT "tpm: getrandom "
        lea cmd_getrandom(%rip), %rsi
        mov $12, %ecx
        call tpm_cmd
        PRINT "tpm: extend "
        lea cmd_extend(%rip), %rsi
        mov $cmd_extend_len, %ecx
        call tpm_cmd
        PRINT "tpm: pcrread "
        lea cmd_pcrread(%rip), %rsi
        mov $20, %ecx
        call tpm_cmd
        PRINT "tpm: done\n"
        lea word_hold(%rip), %rdi
        call cmdline_has
        jz poweroff
        PRINT "tpm: holding\n"
        jmp halt

reset_mode:
        PRINT "tpm: pcrread "
        lea cmd_pcrread(%rip), %rsi
        mov $20, %ecx
        call tpm_cmd
        PRINT "tpm: extend "
        lea cmd_extend(%rip), %rsi
        mov $cmd_extend_len, %ecx
        call tpm_cmd
        PRINT "tpm: pcrread "
        lea cmd_pcrread(%rip), %rsi
        mov $20, %ecx
        call tpm_cmd
        PRINT "tpm: resetting\n"
        mov $0xfe, %al
        out %al, $I8042_CMD
        mov $1000000, %rcx
        call spin
        PRINT "tpm: still running\n"
        jmp halt

/* tpm_cmd: the %ecx bytes at %rsi into the buffer, start, wait, print the
 * response (its header's size, at most 64 bytes) in hex, and a newline. */
tpm_cmd:
        push %rbx
        lea BUFFER(%r12), %rdi
1:      movb (%rsi), %al
        movb %al, (%rdi)
        inc %rsi
        inc %rdi
        dec %ecx
        jnz 1b
        movb $1, CTRL_START(%r12)
2:      mov CTRL_START(%r12), %eax
        test $1, %al
        jnz 2b
        mov BUFFER+2(%r12), %ebx            /* size, big-endian */
        bswap %ebx
        cmp $64, %ebx
        jbe 3f
        mov $64, %ebx
3:      lea BUFFER(%r12), %rdi
4:      test %ebx, %ebx
        jz 5f
        movzbl (%rdi), %eax
        push %rdi
        call put_byte
        pop %rdi
        inc %rdi
        dec %ebx
        jmp 4b
5:      mov $'\n', %al
        call putc
        pop %rbx
        ret

/* put_byte: %al as two hex digits. */
put_byte:
        push %rax
        shr $4, %al
        call put_nibble
        pop %rax
        and $15, %al
put_nibble:
        and $15, %eax
        cmp $10, %al
        jb 1f
        add $('a' - '0' - 10), %al
1:      add $'0', %al
        jmp putc

        .section .rodata
word_reset: .asciz "reset"
word_hold: .asciz "hold"
cmd_startup:
        .byte 0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0
cmd_getrandom:
        .byte 0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8
cmd_extend:
        .byte 0x80, 0x02, 0, 0, 0, 0x41, 0, 0, 0x01, 0x82
        .byte 0, 0, 0, 8                /* PCR 8 */
        .byte 0, 0, 0, 9                /* authorization size */
        .byte 0x40, 0, 0, 9             /* TPM_RS_PW */
        .byte 0, 0, 0, 0, 0             /* no nonce, attributes, no hmac */
        .byte 0, 0, 0, 1, 0, 0x0b       /* one digest, SHA-256 */
        .fill 32, 1, 0x11
        .set cmd_extend_len, . - cmd_extend
cmd_pcrread:
        .byte 0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7e
        .byte 0, 0, 0, 1, 0, 0x0b, 3, 0, 1, 0   /* SHA-256, PCR 8 */
