/*
 * rtc: reads the date and time from the CMOS RTC (ports 0x70/0x71): waits
 * for update-in-progress (register A bit 7) to clear, reads seconds,
 * minutes, hours, day, month and year, and repeats until two reads agree.
 * Converts from BCD unless register B bit 2 (binary) is set, and from 12-
 * hour time unless register B bit 1 (24-hour) is set. Prints
 * `RTC 20YY-MM-DD HH:MM:SS` and `RTC regB 0xNN`, then powers off.
 * `binary` and/or `12h` on the command line first switch register B to
 * binary and/or 12-hour format (and wait for an update cycle).
 */
        .include "common.inc"

        .text
        .code32
pvh_entry:
        jmp common_start32

        .code64
/* cmos_read: register %dil -> %al (NMI stays enabled: bit 7 clear). */
cmos_read:
        mov %dil, %al
        out %al, $RTC_INDEX
        in $RTC_DATA, %al
        ret

/* read_all: waits for UIP clear, then reads the six registers into
 * (%rbx)[0..5] = sec, min, hour, day, month, year. */
read_all:
        call tsc_deadline       /* bounded: a stuck UIP is reported */
1:      mov $0x0a, %dil
        call cmos_read
        test $0x80, %al
        jz 2f
        call past_deadline
        jb 1b
        PRINT "RTC error: update-in-progress never clears\n"
        jmp halt
2:      lea regs(%rip), %r10
        xor %ecx, %ecx
3:      movzbl (%r10, %rcx), %edi
        call cmos_read
        mov %al, (%rbx, %rcx)
        inc %ecx
        cmp $6, %ecx
        jb 3b
        ret

/* tsc_deadline: %r9 = now + about 3 s (8e9 TSC cycles: 3 s at 2.6 GHz). */
tsc_deadline:
        rdtsc
        shl $32, %rdx
        or %rax, %rdx
        mov $8000000000, %r9
        add %rdx, %r9
        ret

/* past_deadline: CF clear once the TSC has passed %r9. */
past_deadline:
        rdtsc
        shl $32, %rdx
        or %rax, %rdx
        cmp %r9, %rdx
        ret

/* wait_update: wait (bounded) until the seconds register changes, so
 * that the time registers have been updated in the current format.
 * Polls the seconds rather than UIP: UIP is up for only 244 us, which a
 * slow poll (each read is a VM exit) can miss. */
wait_update:
        call tsc_deadline
        xor %edi, %edi
        call cmos_read
        mov %al, %r10b
1:      xor %edi, %edi
        call cmos_read
        cmp %al, %r10b
        jne 2f
        call past_deadline
        jb 1b
        PRINT "RTC error: the seconds never changed\n"
2:      ret

/* bcd: %al from BCD to binary. */
bcd:
        mov %al, %cl
        shr $4, %al
        mov $10, %dl
        mul %dl
        and $0x0f, %cl
        add %cl, %al
        ret

probe_main:
        DEBUG 0x50
        /* `binary` / `12h` on the command line: switch register B to that
         * format first, then let one update cycle pass before reading. */
        mov $0x0b, %dil
        call cmos_read
        mov %al, %bl
        lea word_binary(%rip), %rdi
        call cmdline_has
        jz 1f
        or $0x04, %bl
1:      lea word_12h(%rip), %rdi
        call cmdline_has
        jz 2f
        and $~0x02, %bl
2:      mov $0x0b, %al
        out %al, $RTC_INDEX
        mov %bl, %al
        out %al, $RTC_DATA
        call wait_update
        mov $50, %r12d          /* tries until two reads agree */
1:      lea now_a(%rip), %rbx
        call read_all
        lea now_b(%rip), %rbx
        call read_all
        mov now_a(%rip), %eax
        mov now_b(%rip), %ecx
        cmp %eax, %ecx
        jne 2f
        movzwl now_a+4(%rip), %eax
        movzwl now_b+4(%rip), %ecx
        cmp %eax, %ecx
        je 3f
2:      dec %r12d
        jnz 1b
        PRINT "RTC error: the clock never held still\n"
        jmp halt

3:      mov $0x0b, %dil
        call cmos_read
        mov %al, regb(%rip)
        lea now_a(%rip), %rbx
        /* hours: keep the PM flag (bit 7) apart before any conversion */
        movzbl 2(%rbx), %eax
        mov %al, %r13b
        and $0x80, %r13b
        and $0x7f, %al
        mov %al, 2(%rbx)
        testb $0x04, regb(%rip)
        jnz 5f
        xor %r12d, %r12d        /* BCD -> binary, all six */
4:      movzbl (%rbx, %r12), %eax
        call bcd
        mov %al, (%rbx, %r12)
        inc %r12d
        cmp $6, %r12d
        jb 4b
5:      testb $0x02, regb(%rip)
        jnz 6f
        movzbl 2(%rbx), %eax    /* 12-hour: 12 AM = 0, 12 PM = 12 */
        cmp $12, %al
        jne 7f
        xor %eax, %eax
7:      test %r13b, %r13b
        jz 8f
        add $12, %al
8:      mov %al, 2(%rbx)

6:      PRINT "RTC 20"
        movzbl 5(%rbx), %eax
        call put_2d
        mov $'-', %al
        call putc
        movzbl 4(%rbx), %eax
        call put_2d
        mov $'-', %al
        call putc
        movzbl 3(%rbx), %eax
        call put_2d
        mov $' ', %al
        call putc
        movzbl 2(%rbx), %eax
        call put_2d
        mov $':', %al
        call putc
        movzbl 1(%rbx), %eax
        call put_2d
        mov $':', %al
        call putc
        movzbl 0(%rbx), %eax
        call put_2d
        PRINT "\nRTC regB 0x"
        movzbl regb(%rip), %eax
        shl $56, %rax
        call put_hex_byte
        mov $'\n', %al
        call putc
        jmp poweroff

/* put_hex_byte: the top byte of %rax as two hex digits. */
put_hex_byte:
        push %rbx
        mov %rax, %rbx
        mov $2, %r8d
1:      rol $4, %rbx
        mov %ebx, %eax
        and $15, %eax
        cmp $10, %al
        jb 2f
        add $('a' - '0' - 10), %al
2:      add $'0', %al
        push %r8
        call putc
        pop %r8
        dec %r8d
        jnz 1b
        pop %rbx
        ret

        .section .rodata
word_binary: .asciz "binary"
word_12h: .asciz "12h"
regs:   .byte 0x00, 0x02, 0x04, 0x07, 0x08, 0x09

        .data
now_a:  .fill 8, 1, 0
now_b:  .fill 8, 1, 0
regb:   .byte 0
