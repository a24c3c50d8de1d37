/*
 * virtio_legacy: drives a transitional virtio-blk device (1af4:1001,
 * `--disk ...,transitional=on`) as a legacy (virtio 0.9.5) driver does,
 * from ring 3, through its I/O BAR only:
 *
 * - finds it on PCI bus 0, checks revision 0, subsystem 1af4:0002, INTA#
 *   and that BAR 0 is an I/O BAR; moves BAR 0 to port 0xd000 (the old
 *   ports must then read all ones) and enables I/O decoding and bus
 *   mastering;
 * - resets the device, ACKNOWLEDGE | DRIVER, reads the host features and
 *   takes none, reads the (fixed) size of queue 0 and lays the queue out
 *   in the legacy split-ring format (used ring at the next 4 KiB), gives
 *   its PFN, reads the PFN back, sets DRIVER_OK;
 * - reads the capacity from the device configuration at 0x14 (MSI-X off);
 * - writes a 512-byte pattern to sector 1 (header, data and status in
 *   separate descriptors), notifying with a 16-bit write to the notify
 *   port, checks the status and the ISR (queue bit, then cleared by the
 *   read), and that the INTx (the GSI in the interrupt line register,
 *   routed at the IOAPIC to vector 0x50) left 0x50 pending in the local
 *   APIC's IRR (interrupts stay disabled); reads the sector back into
 *   another buffer and compares;
 * - resets the device (status 0 reads back 0).
 *
 * Prints `virtio-legacy: FAIL ...` on any failure, `virtio-legacy: done`
 * at the end, and powers off.
 */
        .include "common.inc"
        .include "virtio_common.inc"

        .set DEV_BLK_LEGACY, 0x1001
        .set NEW_IO, 0xd000             /* where the probe moves the I/O BAR */
        /* Legacy registers (offsets in the I/O BAR). */
        .set R_HOST_F, 0x00
        .set R_GUEST_F, 0x04
        .set R_PFN, 0x08
        .set R_QNUM, 0x0c
        .set R_QSEL, 0x0e
        .set R_NOTIFY, 0x10
        .set R_STATUS, 0x12
        .set R_ISR, 0x13
        .set R_CONFIG, 0x14             /* without MSI-X */
        .set IOAPIC, 0xfec00000
        .set INTX_VECTOR, 0x50

        .macro FAIL str
        PRINT "virtio-legacy: FAIL \str\n"
        jmp poweroff
        .endm

        .text
        .code64
/* ---- the legacy queue --------------------------------------------------- */
/* set_desc: index %edi: addr %rdx, len %ecx, flags %r8d, next %r9d. */
set_desc:
        mov %edi, %edi
        shl $4, %rdi
        lea lq(%rip), %rsi
        add %rdi, %rsi
        mov %rdx, (%rsi)
        mov %ecx, 8(%rsi)
        mov %r8w, 12(%rsi)
        mov %r9w, 14(%rsi)
        ret

/* push_avail: head %esi into the available ring (after the table). */
push_avail:
        mov q_avail(%rip), %rdi
        movzwl 2(%rdi), %eax
        movzwl q_size(%rip), %ecx
        dec %ecx
        and %eax, %ecx
        mov %si, 4(%rdi, %rcx, 2)
        inc %eax
        mov %ax, 2(%rdi)
        ret

/* wait_used: until the used index reaches %esi; %eax = 0, 1 on timeout. */
wait_used:
        mov q_used(%rip), %rdi
        mov $WAIT_LOOPS, %ecx
1:      movzwl 2(%rdi), %eax
        sub %si, %ax
        jns 2f
        pause
        dec %ecx
        jnz 1b
        mov $1, %eax
        ret
2:      xor %eax, %eax
        ret

/* blk_req: type %edi on sector 1, data %rsi (512 bytes, device-writable
 * if %edx), then wait for used index %ecx. %eax = status (0x100: timeout). */
blk_req:
        push %rbx
        push %r12
        push %r13
        mov %rsi, %r12
        mov %edx, %r13d
        mov %ecx, %ebx
        call blk_header
        xor %edi, %edi
        lea blk_hdr(%rip), %rdx
        mov $16, %ecx
        mov $F_NEXT, %r8d
        mov $1, %r9d
        call set_desc
        mov $1, %edi
        mov %r12, %rdx
        mov $512, %ecx
        mov $F_NEXT, %r8d
        test %r13d, %r13d
        jz 1f
        or $F_WRITE, %r8d
1:      mov $2, %r9d
        call set_desc
        mov $2, %edi
        lea blk_status(%rip), %rdx
        mov $1, %ecx
        mov $F_WRITE, %r8d
        xor %r9d, %r9d
        call set_desc
        xor %esi, %esi
        call push_avail
        mov io_base(%rip), %edx
        add $R_NOTIFY, %edx
        xor %eax, %eax
        outw %ax, %dx                   /* queue 0 */
        mov %ebx, %esi
        call wait_used
        call blk_result
        pop %r13
        pop %r12
        pop %rbx
        ret

/* ---- main --------------------------------------------------------------- */
probe_main:
        PRINT "virtio-legacy: scanning PCI bus 0\n"
        mov $DEV_BLK_LEGACY, %edi
        call find_dev
        cmp $-1, %eax
        jne 1f
        FAIL "no transitional virtio-blk (1af4:1001)"
1:      mov %eax, %ebx
        PRINT "virtio-legacy: 1af4:1001 at slot "
        mov %ebx, %eax
        call put_dec
        PRINT "\n"
        /* Revision 0, subsystem 1af4:0002, INTA#. */
        mov %ebx, %edi
        mov $0x08, %esi
        call pci_rd
        test $0xff, %al
        jz 1f
        FAIL "revision is not 0"
1:      mov %ebx, %edi
        mov $0x2c, %esi
        call pci_rd
        cmp $0x00021af4, %eax
        je 1f
        FAIL "subsystem is not 1af4:0002"
1:      mov %ebx, %edi
        mov $0x3c, %esi
        call pci_rd
        cmp $1, %ah
        je 1f
        FAIL "interrupt pin is not INTA#"
1:      /* BAR 0: I/O. */
        mov %ebx, %edi
        mov $0x10, %esi
        call pci_rd
        test $1, %eax
        jnz 1f
        FAIL "BAR 0 is not an I/O BAR"
1:      and $0xfffc, %eax
        mov %eax, %r12d                 /* the VMM's address */
        /* Move it, as firmware or a kernel may. */
        mov %ebx, %edi
        mov $0x10, %esi
        mov $NEW_IO, %edx
        call pci_wr
        mov %ebx, %edi
        mov $0x10, %esi
        call pci_rd
        and $0xfffc, %eax
        cmp $NEW_IO, %eax
        je 1f
        FAIL "BAR 0 did not take the new port"
1:      lea R_QNUM(%r12), %edx
        inw %dx, %ax
        cmp $0xffff, %ax
        je 1f
        FAIL "the old ports still answer"
1:      movl $NEW_IO, io_base(%rip)
        PRINT "virtio-legacy: I/O BAR moved to 0xd000\n"
        mov %ebx, %edi
        mov $0x04, %esi
        mov $0x05, %edx                 /* I/O space, bus master */
        call pci_wr

        /* Reset, ACKNOWLEDGE | DRIVER, features. */
        mov io_base(%rip), %r13d
        lea R_STATUS(%r13), %edx
        xor %eax, %eax
        outb %al, %dx
        mov $3, %al
        outb %al, %dx
        lea R_HOST_F(%r13), %edx
        inl %dx, %eax
        PRINT "virtio-legacy: host features 0x"
        lea R_HOST_F(%r13), %edx
        inl %dx, %eax
        call put_hex
        PRINT "\n"
        lea R_GUEST_F(%r13), %edx
        xor %eax, %eax
        outl %eax, %dx
        /* Queue 0: its fixed size, the legacy layout, its PFN. */
        lea R_QSEL(%r13), %edx
        xor %eax, %eax
        outw %ax, %dx
        lea R_QNUM(%r13), %edx
        inw %dx, %ax
        movzwl %ax, %eax
        test %eax, %eax
        jz 2f
        cmp $256, %eax
        jbe 1f
2:      FAIL "queue 0 size is 0 or above 256"
1:      mov %ax, q_size(%rip)
        PRINT "virtio-legacy: queue 0 has "
        movzwl q_size(%rip), %eax
        call put_dec
        PRINT " entries\n"
        lea lq(%rip), %rax
        movzwl q_size(%rip), %ecx
        shl $4, %ecx
        lea (%rax, %rcx), %rdx          /* avail = table + 16 n */
        mov %rdx, q_avail(%rip)
        movzwl q_size(%rip), %ecx
        lea 6(%rdx, %rcx, 2), %rdx      /* + 6 + 2 n */
        add $4095, %rdx
        and $~4095, %rdx                /* used: next 4 KiB */
        mov %rdx, q_used(%rip)
        shr $12, %rax
        mov %eax, %r14d                 /* the PFN */
        lea R_PFN(%r13), %edx
        outl %eax, %dx
        inl %dx, %eax
        cmp %r14d, %eax
        je 1f
        FAIL "the queue PFN does not read back"
1:      lea R_STATUS(%r13), %edx
        mov $7, %al                     /* DRIVER_OK */
        outb %al, %dx
        inb %dx, %al
        cmp $7, %al
        je 1f
        FAIL "status after DRIVER_OK"
1:      PRINT "virtio-legacy: capacity "
        lea R_CONFIG(%r13), %edx
        inl %dx, %eax
        mov %eax, %eax
        call put_dec
        PRINT " sectors\n"

        /* INTx (MSI-X stays off): route the device's GSI, which the VMM
         * wrote into the interrupt line register, at the IOAPIC to vector
         * 0x50 (fixed, edge, APIC 0, unmasked), and software-enable the
         * local APIC; the completion must leave 0x50 pending in its IRR. */
        mov %ebx, %edi
        mov $0x3c, %esi
        call pci_rd
        movzbl %al, %r15d
        cmp $24, %r15d
        jb 1f
        FAIL "interrupt line is not an IOAPIC pin"
1:      mov $IOAPIC, %edi
        lea 0x11(%r15, %r15), %eax      /* redirection entry, high half */
        mov %eax, (%rdi)
        movl $0, 0x10(%rdi)
        lea 0x10(%r15, %r15), %eax      /* low half */
        mov %eax, (%rdi)
        .ifdef INTX_LEVEL_LOW
        /* As an OS programs the pin from Kiln's _PRT and MADT: level
         * triggered (bit 15), active low (bit 13). */
        movl $(INTX_VECTOR | 0xa000), 0x10(%rdi)
        .else
        movl $INTX_VECTOR, 0x10(%rdi)
        .endif
        mov $LAPIC_SVR, %eax
        movl $0x1ff, (%rax)

        /* The pattern: byte i = 5i + 11. */
        mov $5, %esi
        mov $11, %edx
        call fill_pattern
        mov $1, %edi                    /* VIRTIO_BLK_T_OUT */
        lea blk_data(%rip), %rsi
        xor %edx, %edx
        mov $1, %ecx
        call blk_req
        test %eax, %eax
        jz 1f
        FAIL "write status"
1:      PRINT "virtio-legacy: wrote sector 1\n"
        lea R_ISR(%r13), %edx
        inb %dx, %al
        test $1, %al
        jnz 1f
        FAIL "ISR queue bit not set after the write"
1:      inb %dx, %al
        test %al, %al
        jz 1f
        FAIL "ISR not cleared by reading it"
1:      PRINT "virtio-legacy: ISR queue bit set, cleared by the read\n"
        mov $LAPIC_IRR2, %eax
        movl (%rax), %eax
        test $(1 << (INTX_VECTOR - 64)), %eax
        jnz 1f
        FAIL "no INTx: vector 0x50 not pending in the LAPIC"
1:
        .ifdef INTX_LEVEL_LOW
        /* Delivered as a level interrupt: the IOAPIC set the entry's
         * remote IRR (bit 14) and holds it until an EOI. */
        mov $IOAPIC, %edi
        lea 0x10(%r15, %r15), %eax
        mov %eax, (%rdi)
        mov 0x10(%rdi), %eax
        test $(1 << 14), %eax
        jnz 2f
        FAIL "remote IRR clear: the level entry did not deliver"
2:      PRINT "virtio-legacy: level active-low entry delivered, remote IRR set\n"
        .endif
        PRINT "virtio-legacy: INTx on GSI "
        mov %r15, %rax
        call put_dec
        PRINT " left vector 0x50 pending in the LAPIC\n"
        xor %edi, %edi                  /* VIRTIO_BLK_T_IN */
        lea blk_rbuf(%rip), %rsi
        mov $1, %edx
        mov $2, %ecx
        call blk_req
        test %eax, %eax
        jz 1f
        FAIL "read status"
1:      call blk_verify
        je 1f
        FAIL "read back differs"
1:      PRINT "virtio-legacy: read back and verified 512 bytes\n"
        lea R_STATUS(%r13), %edx
        xor %eax, %eax
        outb %al, %dx
        inb %dx, %al
        test %al, %al
        jz 1f
        FAIL "status after reset"
1:      PRINT "virtio-legacy: reset done\n"
        PRINT "virtio-legacy: done\n"
        jmp poweroff

        .data
        .balign 8
io_base:        .quad 0
q_avail:        .quad 0
q_used:         .quad 0
q_size:         .quad 0

        .bss
        .balign 4096
lq:             .skip 3 * 4096          /* a 256-entry legacy queue */
