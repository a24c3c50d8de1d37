/*
 * rtcirq: proves that the RTC raises IRQ 8 for an enabled update-ended
 * interrupt. Ring 3 takes no interrupts (no IDT), so the probe keeps the
 * interrupt pending instead of taking it: both 8259 PICs masked, the local
 * APIC software-enabled with its task priority at 0xF0 (every vector held
 * in the IRR), IOAPIC pin 8 routed to vector 0x48 (fixed, edge, CPU 0).
 * It stops the periodic rate (register A rate 0), reads register C to
 * clear it, checks that vector 0x48 is not pending, sets UIE in register B
 * and polls the IRR for vector 0x48 (bounded, about 5 s). Prints
 * `rtcirq: vector 0x48 pending, register C <decimal>` (144 = IRQF | UF),
 * or an error line, then powers off.
 */
        .include "common.inc"

        .set PIC1_DATA, 0x21
        .set PIC2_DATA, 0xa1
        .set LAPIC_TPR, 0x80
        .set LAPIC_SVR, 0xf0
        .set LAPIC_IRR2, 0x220          /* vectors 0x40..0x5f */
        .set VECTOR_BIT, 1 << (0x48 - 0x40)
        .set IOAPIC_WIN, 0x10
        .set REDIR8_LO, 0x10 + 2 * 8
        .set REDIR8_HI, 0x10 + 2 * 8 + 1

        .text
        .code32
pvh_entry:
        jmp common_start32

        .code64
/* rtc_write: register %dil <- %sil. */
rtc_write:
        mov %dil, %al
        out %al, $RTC_INDEX
        mov %sil, %al
        out %al, $RTC_DATA
        ret

/* rtc_read: register %dil -> %al. */
rtc_read:
        mov %dil, %al
        out %al, $RTC_INDEX
        in $RTC_DATA, %al
        ret

/* tsc_now: %rax = the TSC. */
tsc_now:
        rdtsc
        shl $32, %rdx
        or %rdx, %rax
        ret

probe_main:
        DEBUG 0x60
        mov $0xff, %al
        out %al, $PIC1_DATA
        out %al, $PIC2_DATA
        mov $LAPIC_BASE, %rbx
        movl $0xf0, LAPIC_TPR(%rbx)
        movl $0x1ff, LAPIC_SVR(%rbx)
        mov $IOAPIC_BASE, %r12
        movl $REDIR8_HI, (%r12)
        movl $0, IOAPIC_WIN(%r12)
        movl $REDIR8_LO, (%r12)
        movl $0x48, IOAPIC_WIN(%r12)
        /* Register A: normal divider, no periodic rate. */
        mov $0x0a, %dil
        mov $0x20, %sil
        call rtc_write
        mov $0x0c, %dil
        call rtc_read
        testl $VECTOR_BIT, LAPIC_IRR2(%rbx)
        jz 1f
        PRINT "rtcirq error: vector 0x48 pending before UIE was set\n"
        jmp poweroff
1:      mov $0x0b, %dil
        call rtc_read
        or $0x10, %al           /* UIE */
        mov %al, %sil
        mov $0x0b, %dil
        call rtc_write
        DEBUG 0x61
        call tsc_now
        mov $13000000000, %r13  /* about 5 s at 2.6 GHz */
        add %rax, %r13
2:      testl $VECTOR_BIT, LAPIC_IRR2(%rbx)
        jnz 3f
        call tsc_now
        cmp %r13, %rax
        jb 2b
        PRINT "rtcirq error: no interrupt within 5 s\n"
        jmp poweroff
3:      DEBUG 0x62
        mov $0x0c, %dil
        call rtc_read
        movzbl %al, %r14d
        PRINT "rtcirq: vector 0x48 pending, register C "
        mov %r14, %rax
        call put_dec
        mov $'\n', %al
        call putc
        jmp poweroff
