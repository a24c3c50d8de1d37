/*
 * smp: starts every application processor and counts them.
 *
 * The BSP (ring 3) counts the enabled processors in the ACPI MADT (RSDP
 * from the PVH start_info, else found by scanning 0xe0000..0xfffff),
 * enables its LAPIC, copies a real-mode trampoline to 0x10000 and sends
 * INIT, SIPI, SIPI to all but itself. Each AP runs the trampoline to
 * protected and long mode, takes its own stack, and (in ring 0, so it can
 * really halt afterwards) reads its APIC id, prints `cpu N up` under a
 * lock, counts itself and halts. The BSP waits (about two seconds at
 * most) for MADT-count - 1 APs, prints `cpus N` and powers off.
 */
        .include "common.inc"

        .set TRAMPOLINE, 0x10000
        .set LAPIC_ID, 0x20
        .set LAPIC_SVR, 0xf0
        .set LAPIC_ICR_LO, 0x300
        .set LAPIC_ICR_HI, 0x310
        .set ICR_INIT_OTHERS, 0x000c4500
        .set ICR_SIPI_OTHERS, 0x000c4600 | (TRAMPOLINE >> 12)
        .set ICR_BUSY, 1 << 12

        .text
        .code32
pvh_entry:
        jmp common_start32

/* ---- APs ---------------------------------------------------------------- */
        .code16
tramp_start:                    /* copied to TRAMPOLINE; CS = 0x1000 */
        cli
        mov %cs, %ax
        mov %ax, %ds
        lgdtl (tramp_gdt_ptr - tramp_start)
        mov $1, %eax            /* CR0.PE */
        mov %eax, %cr0
        ljmpl $SEL_CODE32, $ap_entry32
tramp_gdt_ptr:
        .word gdt_end - gdt - 1
        .long gdt
tramp_end:

        .code32
ap_entry32:
        mov $SEL_DATA, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov $1, %eax
        lock xadd %eax, ap_next
        cmp $(MAX_CPUS - 1), %eax
        jae 1f
        inc %eax                /* stack slot 1.. (slot 0 is unused) */
        shl $12, %eax
        add $ap_stacks, %eax
        mov %eax, %esp
        mov $ap_main, %ebx
        mov $1, %edi            /* stay in ring 0 */
        jmp long_mode32
1:      cli                     /* more APs than stacks: not counted */
        hlt
        jmp 1b

        .code64
ap_main:
        mov $LAPIC_BASE, %rsi
        mov LAPIC_ID(%rsi), %ebx
        shr $24, %ebx
        call lock_print
        PRINT "cpu "
        mov %rbx, %rax
        call put_dec
        PRINT " up\n"
        call unlock_print
        lock incl ap_count(%rip)
        cli
1:      hlt
        jmp 1b

lock_print:
1:      mov $1, %eax
        xchg %eax, print_lock(%rip)
        test %eax, %eax
        jz 2f
        pause
        jmp 1b
2:      ret

unlock_print:
        movl $0, print_lock(%rip)
        ret

/* ---- BSP, ring 3 --------------------------------------------------------- */
/* wait_tsc: spin for %rcx TSC cycles. */
wait_tsc:
        mov %rcx, %r8
        rdtsc
        shl $32, %rdx
        or %rax, %rdx
        lea (%rdx, %r8), %r8
1:      pause
        rdtsc
        shl $32, %rdx
        or %rax, %rdx
        cmp %r8, %rdx
        jb 1b
        ret

/* icr_send: %eax to the ICR (destination by shorthand), then wait until
 * the LAPIC has sent it. */
icr_send:
        mov $LAPIC_BASE, %rsi
        movl $0, LAPIC_ICR_HI(%rsi)
        mov %eax, LAPIC_ICR_LO(%rsi)
        mov $1000000, %ecx
1:      testl $ICR_BUSY, LAPIC_ICR_LO(%rsi)
        jz 2f
        pause
        dec %ecx
        jnz 1b
2:      ret

/* sum8: %ecx bytes at %rsi -> %al (an ACPI checksum: 0 when valid). */
sum8:
        xor %eax, %eax
1:      add (%rsi), %al
        inc %rsi
        dec %ecx
        jnz 1b
        ret

/* find_rsdp -> %rax (0: none). */
find_rsdp:
        mov start_info_ptr(%rip), %esi
        test %esi, %esi
        jz 1f
        cmpl $PVH_MAGIC, (%rsi)
        jne 1f
        mov 32(%rsi), %rax      /* rsdp_paddr (start_info version 1) */
        test %rax, %rax
        jnz 3f
1:      mov $0xe0000, %eax
        mov rsdp_sig(%rip), %rdx
2:      cmp %rdx, (%rax)
        jne 4f
        mov %rax, %rdi          /* checksum of the first 20 bytes */
        mov %rax, %rsi
        mov $20, %ecx
        call sum8
        test %al, %al
        mov %rdi, %rax
        jz 3f
4:      add $16, %eax
        cmp $0x100000, %eax
        jb 2b
        xor %eax, %eax
3:      ret

/* madt_cpus -> %eax: enabled LAPIC / x2APIC entries of the MADT (0 if
 * there is no usable MADT). Uses the XSDT when the RSDP has one. */
madt_cpus:
        push %rbx
        push %r12
        push %r13
        call find_rsdp
        test %rax, %rax
        jz 9f
        mov $4, %r13d           /* entry size: RSDT 4, XSDT 8 */
        mov 16(%rax), %ebx      /* RSDT */
        cmpb $2, 15(%rax)
        jb 1f
        mov 24(%rax), %rdx      /* XSDT */
        test %rdx, %rdx
        jz 1f
        mov %rdx, %rbx
        mov $8, %r13d
1:      test %rbx, %rbx
        jz 9f
        mov 4(%rbx), %r12d      /* length */
        add %rbx, %r12          /* end */
        add $36, %rbx           /* first entry */
2:      cmp %r12, %rbx
        jae 9f
        mov (%rbx), %eax
        cmp $8, %r13d
        jne 3f
        mov (%rbx), %rax
3:      cmpl $0x43495041, (%rax)        /* "APIC" */
        je 4f
        add %r13, %rbx
        jmp 2b
4:      mov 4(%rax), %r12d      /* the MADT: entries after 44 bytes */
        add %rax, %r12
        lea 44(%rax), %rbx
        xor %r13d, %r13d
5:      cmp %r12, %rbx
        jae 8f
        movzbl 1(%rbx), %ecx    /* entry length */
        cmp $2, %ecx
        jb 8f                   /* malformed: stop */
        cmpb $0, (%rbx)         /* processor local APIC */
        jne 6f
        testb $1, 4(%rbx)
        jz 7f
        inc %r13d
        jmp 7f
6:      cmpb $9, (%rbx)         /* processor local x2APIC */
        jne 7f
        testb $1, 8(%rbx)
        jz 7f
        inc %r13d
7:      add %rcx, %rbx
        jmp 5b
8:      mov %r13d, %eax
        jmp 10f
9:      xor %eax, %eax
10:     pop %r13
        pop %r12
        pop %rbx
        ret

probe_main:
        DEBUG 0x60
        call madt_cpus
        mov %eax, %r14d         /* expected CPUs, 0 if unknown */
        PRINT "smp: MADT lists "
        mov %r14, %rax
        call put_dec
        PRINT " cpus\n"

        mov $LAPIC_BASE, %rsi   /* software-enable the LAPIC */
        movl $0x1ff, LAPIC_SVR(%rsi)
        mov LAPIC_ID(%rsi), %r15d
        shr $24, %r15d

        lea tramp_start(%rip), %rsi     /* the trampoline below 1 MiB */
        mov $TRAMPOLINE, %edi
        mov $(tramp_end - tramp_start), %ecx
        rep movsb

        call lock_print
        PRINT "cpu "
        mov %r15, %rax
        call put_dec
        PRINT " up (bsp)\n"
        call unlock_print

        DEBUG 0x61
        mov $ICR_INIT_OTHERS, %eax
        call icr_send
        mov $20000000, %rcx     /* about 10 ms */
        call wait_tsc
        mov $ICR_SIPI_OTHERS, %eax
        call icr_send
        mov $400000, %rcx       /* about 200 us */
        call wait_tsc
        mov $ICR_SIPI_OTHERS, %eax
        call icr_send
        DEBUG 0x62

        rdtsc                   /* wait for the APs, about 2 s at most */
        shl $32, %rdx
        or %rax, %rdx
        mov $5000000000, %r13
        add %rdx, %r13
1:      mov ap_count(%rip), %eax
        inc %eax
        cmp %r14d, %eax
        je 2f
        pause
        rdtsc
        shl $32, %rdx
        or %rax, %rdx
        cmp %r13, %rdx
        jb 1b
        call lock_print
        PRINT "smp: timed out waiting for the APs\n"
        call unlock_print
2:      DEBUG 0x63
        call lock_print
        PRINT "cpus "
        mov ap_count(%rip), %eax
        inc %eax
        call put_dec
        mov $'\n', %al
        call putc
        call unlock_print
        jmp poweroff

        .section .rodata
rsdp_sig: .ascii "RSD PTR "

        .data
        .balign 4
ap_next:    .long 0
ap_count:   .long 0
print_lock: .long 0

        .bss
        .balign 4096
ap_stacks:
        .skip STACK_SIZE * MAX_CPUS
