/*
 * hyperv: what a Windows guest sees of the hypervisor. Prints, for the
 * hypervisor CPUID leaves 0x40000000 (vendor and highest leaf), 0x40000001
 * (interface), 0x40000003 (features), 0x40000004 (recommendations),
 * 0x40000005 (limits) and 0x40000100 (where KVM's own leaves move when
 * Hyper-V's take 0x40000000), one line each:
 *   hyperv: leaf LLLLLLLL eax AAAAAAAA ebx BBBBBBBB ecx CCCCCCCC edx DDDDDDDD sig [xxxxxxxxxxxx]
 * (sig: EBX, ECX, EDX as 12 characters, `.` for unprintable bytes), then
 * powers off.
 *
 * In ring 0, before that, if 0x40000000 says "Microsoft Hv": reads the
 * Hyper-V MSRs that the features leaf offers (VP index, TSC frequency,
 * reference time count) and prints
 *   hyperv: msr vp_index N tsc_freq N time_ref N
 * (an MSR not offered reads as 0 here). With `hvreset` on the command line
 * and the reset MSR offered, writes 1 to HV_X64_MSR_RESET, which resets the
 * VM; if the guest is still running it prints `hyperv: reset MSR ignored`.
 */
        .include "common.inc"

        .set HV_VENDOR_LEAF, 0x40000000
        .set HV_FEATURES_LEAF, 0x40000003
        .set HV_MSR_VP_INDEX, 0x40000002
        .set HV_MSR_RESET, 0x40000003
        .set HV_MSR_TIME_REF_COUNT, 0x40000020
        .set HV_MSR_TSC_FREQUENCY, 0x40000022
        /* features leaf EAX */
        .set HV_TIME_REF_COUNT_AVAILABLE, 1 << 1
        .set HV_VP_INDEX_AVAILABLE, 1 << 6
        .set HV_RESET_AVAILABLE, 1 << 7
        .set HV_ACCESS_FREQUENCY_MSRS, 1 << 11

        .text
        .code32
pvh_entry:
        mov %ebx, start_info_ptr
        lgdt gdt_ptr
        mov $boot_stack_top, %esp
        mov $hyperv_ring0, %ebx
        mov $1, %edi            /* to long mode, staying in ring 0 */
        jmp long_mode32

        .code64
/* Ring 0: MSRs can only be read here. A short straight line (emulated). */
hyperv_ring0:
        mov $HV_VENDOR_LEAF, %eax
        xor %ecx, %ecx
        cpuid
        cmp $0x7263694d, %ebx   /* "Micr" */
        jne 9f
        cmp $0x666f736f, %ecx   /* "osof" */
        jne 9f
        cmp $0x76482074, %edx   /* "t Hv" */
        jne 9f
        mov $HV_FEATURES_LEAF, %eax
        xor %ecx, %ecx
        cpuid
        mov %eax, %r12d
        test $HV_VP_INDEX_AVAILABLE, %r12d
        jz 1f
        mov $HV_MSR_VP_INDEX, %ecx
        rdmsr
        mov %eax, msr_vp_index(%rip)
        mov %edx, msr_vp_index+4(%rip)
1:      test $HV_ACCESS_FREQUENCY_MSRS, %r12d
        jz 2f
        mov $HV_MSR_TSC_FREQUENCY, %ecx
        rdmsr
        mov %eax, msr_tsc_freq(%rip)
        mov %edx, msr_tsc_freq+4(%rip)
2:      test $HV_TIME_REF_COUNT_AVAILABLE, %r12d
        jz 3f
        mov $HV_MSR_TIME_REF_COUNT, %ecx
        rdmsr
        mov %eax, msr_time_ref(%rip)
        mov %edx, msr_time_ref+4(%rip)
3:      movb $1, msrs_read(%rip)
        test $HV_RESET_AVAILABLE, %r12d
        jz 9f
        lea word_hvreset(%rip), %rdi
        call cmdline_has
        jz 9f
        mov $HV_MSR_RESET, %ecx
        mov $1, %eax
        xor %edx, %edx
        wrmsr
        movb $1, reset_ignored(%rip)
9:      mov $probe_main, %ebx
        jmp enter_ring3

/* put_hex32: %eax as 8 hex digits. */
put_hex32:
        push %rbx
        push %r12
        mov %eax, %ebx
        mov $8, %r12d
1:      rol $4, %ebx
        mov %ebx, %eax
        and $15, %eax
        cmp $10, %al
        jb 2f
        add $('a' - '0' - 10), %al
2:      add $'0', %al
        call putc
        dec %r12d
        jnz 1b
        pop %r12
        pop %rbx
        ret

/* show_leaf: CPUID leaf %edi, printed as one line. */
show_leaf:
        push %rbx
        push %r12
        mov %edi, %r12d
        mov %edi, %eax
        xor %ecx, %ecx
        cpuid
        mov %eax, leafbuf(%rip)
        mov %ebx, leafbuf+4(%rip)
        mov %ecx, leafbuf+8(%rip)
        mov %edx, leafbuf+12(%rip)
        PRINT "hyperv: leaf "
        mov %r12d, %eax
        call put_hex32
        PRINT " eax "
        mov leafbuf(%rip), %eax
        call put_hex32
        PRINT " ebx "
        mov leafbuf+4(%rip), %eax
        call put_hex32
        PRINT " ecx "
        mov leafbuf+8(%rip), %eax
        call put_hex32
        PRINT " edx "
        mov leafbuf+12(%rip), %eax
        call put_hex32
        PRINT " sig ["
        lea leafbuf+4(%rip), %rbx
        mov $12, %r12d
1:      movzbl (%rbx), %eax
        cmp $0x20, %al
        jb 2f
        cmp $0x7e, %al
        jbe 3f
2:      mov $'.', %al
3:      call putc
        inc %rbx
        dec %r12d
        jnz 1b
        PRINT "]\n"
        pop %r12
        pop %rbx
        ret

probe_main:
        DEBUG 0x60
        lea leaves(%rip), %rbx
1:      mov (%rbx), %edi
        test %edi, %edi
        jz 2f
        call show_leaf
        add $4, %rbx
        jmp 1b
2:      cmpb $0, msrs_read(%rip)
        je 3f
        PRINT "hyperv: msr vp_index "
        mov msr_vp_index(%rip), %rax
        call put_dec
        PRINT " tsc_freq "
        mov msr_tsc_freq(%rip), %rax
        call put_dec
        PRINT " time_ref "
        mov msr_time_ref(%rip), %rax
        call put_dec
        mov $'\n', %al
        call putc
3:      cmpb $0, reset_ignored(%rip)
        je 4f
        PRINT "hyperv: reset MSR ignored\n"
4:      DEBUG 0x61
        PRINT "hyperv: done\n"
        jmp poweroff

        .section .rodata
word_hvreset: .asciz "hvreset"
        .balign 4
leaves: .long 0x40000000, 0x40000001, 0x40000003, 0x40000004, 0x40000005
        .long 0x40000100, 0

        .data
        .balign 8
msr_vp_index: .quad 0
msr_tsc_freq: .quad 0
msr_time_ref: .quad 0
leafbuf: .fill 16, 1, 0
msrs_read: .byte 0
reset_ignored: .byte 0
