/*
 * virtio_pci: drives every virtio device it finds on PCI bus 0 as a guest
 * driver would, from ring 3: enumerates the bus through ports 0xCF8/0xCFC,
 * enables memory decoding and bus mastering, walks the capability list
 * for the virtio common/notify/ISR/device areas and MSI-X, resets the
 * device, negotiates VIRTIO_F_VERSION_1, programs MSI-X vector 0 at the
 * local APIC, sets up split queues in its own memory and sets DRIVER_OK.
 *
 * virtio-blk (1af4:1042): moves BAR 0 to 0xfebf8000 (the old address
 *   must then read all ones), writes a 512-byte pattern to sector 1, checks
 *   that the completion raised MSI-X vector 0x40 (pending in the LAPIC's
 *   IRR: interrupts stay disabled, ring 3 cannot take them on this nested
 *   KVM), reprograms the vector to 0x41, reads the sector back and
 *   compares, reads the serial (GET_ID), then offers an available index
 *   far beyond the queue size and expects DEVICE_NEEDS_RESET.
 * virtio-rng (1af4:1044): reads 64 bytes of entropy.
 * virtio-net (1af4:1041): reads the MAC and link status, sends an ARP
 *   request for 10.9.0.1 (as 10.9.0.2) and waits for the reply.
 *
 * Prints `virtio: FAIL ...` on any failure, `virtio: done` at the end, and
 * powers off.
 */
        .include "common.inc"

        .set VENDOR_VIRTIO, 0x1af4
        .set DEV_NET, 0x1041
        .set DEV_BLK, 0x1042
        .set DEV_RNG, 0x1044
        .set QSIZE, 8
        .set F_NEXT, 1
        .set F_WRITE, 2
        .set LAPIC_SVR, 0xfee000f0
        .set LAPIC_IRR2, 0xfee00220     /* IRR bits 64..95 */
        .set WAIT_LOOPS, 200000000
        .set BLK_BAR, 0xfebf8000        /* where the probe moves the disk's BAR 0: top of the hole, as SeaBIOS would */

/* FAIL "text": report and power off. */
        .macro FAIL str
        PRINT "virtio: FAIL \str\n"
        jmp poweroff
        .endm

        .text
        .code32
pvh_entry:
        jmp common_start32

        .code64
/* ---- PCI configuration mechanism 1 ------------------------------------- */
/* pci_addr: slot %edi, register offset %esi -> CONFIG_ADDRESS in %eax. */
pci_addr:
        mov %edi, %eax
        shl $11, %eax
        or $0x80000000, %eax
        mov %esi, %ecx
        and $0xfc, %ecx
        or %ecx, %eax
        ret

/* pci_rd: slot %edi, offset %esi -> %eax. */
pci_rd:
        call pci_addr
        mov $0xcf8, %dx
        outl %eax, %dx
        mov $0xcfc, %dx
        inl %dx, %eax
        ret

/* pci_wr: slot %edi, offset %esi, value %edx. */
pci_wr:
        mov %edx, %r8d
        call pci_addr
        mov $0xcf8, %dx
        outl %eax, %dx
        mov $0xcfc, %dx
        mov %r8d, %eax
        outl %eax, %dx
        ret

/* find_dev: device id %edi -> slot in %eax, or -1. */
find_dev:
        push %rbx
        push %r12
        mov %edi, %r12d
        shl $16, %r12d
        or $VENDOR_VIRTIO, %r12d
        xor %ebx, %ebx
1:      mov %ebx, %edi
        xor %esi, %esi
        call pci_rd
        cmp %r12d, %eax
        je 2f
        inc %ebx
        cmp $32, %ebx
        jb 1b
        mov $-1, %eax
        jmp 3f
2:      mov %ebx, %eax
3:      pop %r12
        pop %rbx
        ret

/* ---- output helpers ----------------------------------------------------- */
hexdigit:
        and $15, %eax
        cmp $10, %al
        jb 1f
        add $('a' - '0' - 10), %al
1:      add $'0', %al
        jmp putc

/* put_hex2: %al as two hex digits. */
put_hex2:
        push %rbx
        movzbl %al, %ebx
        mov %ebx, %eax
        shr $4, %eax
        call hexdigit
        mov %ebx, %eax
        call hexdigit
        pop %rbx
        ret

/* put_mac: the 6 bytes at %rsi as aa:bb:cc:dd:ee:ff. */
put_mac:
        push %rbx
        push %r12
        mov %rsi, %rbx
        xor %r12d, %r12d
1:      movzbl (%rbx, %r12), %eax
        call put_hex2
        inc %r12d
        cmp $6, %r12d
        je 2f
        mov $':', %al
        call putc
        jmp 1b
2:      pop %r12
        pop %rbx
        ret

/* ---- virtio-pci --------------------------------------------------------- */
/* virtio_init: slot %edi, driver features (low word) %esi. Finds the
 * register areas, enables MSI-X with vector 0 -> LAPIC vector 0x40,
 * negotiates. %eax = 0 on success. */
virtio_init:
        push %rbx
        push %r12
        push %r13
        push %r14
        push %r15
        mov %edi, %ebx
        mov %esi, %r13d
        movq $0, v_common(%rip)
        movq $0, v_notify(%rip)
        movq $0, v_devcfg(%rip)
        movq $0, v_msix(%rip)
        mov %ebx, %edi
        mov $0x10, %esi
        call pci_rd
        and $0xfffffff0, %eax
        mov %rax, v_bar(%rip)
        mov %ebx, %edi
        mov $0x04, %esi
        mov $0x06, %edx                 /* memory space, bus master */
        call pci_wr
        mov %ebx, %edi
        mov $0x34, %esi
        call pci_rd
        movzbl %al, %r12d
        mov $48, %r15d                  /* at most 48 capabilities */
.Lcap:
        test %r12d, %r12d
        jz .Lcaps_done
        dec %r15d
        jz .Lcaps_done
        mov %ebx, %edi
        mov %r12d, %esi
        call pci_rd
        mov %eax, %r14d                 /* id, next, len, cfg_type */
        cmp $0x11, %al
        jne 1f
        mov %r12, v_msix(%rip)
        jmp .Lnext_cap
1:      cmp $0x09, %al
        jne .Lnext_cap
        mov %ebx, %edi
        lea 8(%r12), %esi
        call pci_rd                     /* offset in the BAR */
        add v_bar(%rip), %rax
        mov %r14d, %ecx
        shr $24, %ecx
        cmp $1, %cl
        jne 2f
        mov %rax, v_common(%rip)
        jmp .Lnext_cap
2:      cmp $2, %cl
        jne 3f
        mov %rax, v_notify(%rip)
        mov %ebx, %edi
        lea 16(%r12), %esi
        call pci_rd
        mov %rax, v_mult(%rip)
        jmp .Lnext_cap
3:      cmp $4, %cl
        jne .Lnext_cap
        mov %rax, v_devcfg(%rip)
.Lnext_cap:
        mov %r14d, %eax
        shr $8, %eax
        movzbl %al, %r12d
        jmp .Lcap
.Lcaps_done:
        cmpq $0, v_common(%rip)
        je .Linit_fail
        cmpq $0, v_notify(%rip)
        je .Linit_fail
        cmpq $0, v_msix(%rip)
        je .Linit_fail
        /* MSI-X enable (message control bit 15, the dword's bit 31). */
        mov %ebx, %edi
        mov v_msix(%rip), %esi
        call pci_rd
        or $0x80000000, %eax
        mov %eax, %edx
        mov %ebx, %edi
        mov v_msix(%rip), %esi
        call pci_wr
        mov %ebx, %edi
        mov v_msix(%rip), %esi
        add $4, %esi
        call pci_rd                     /* table offset | BIR 0 */
        and $0xfffffff8, %eax
        add v_bar(%rip), %rax
        mov %rax, v_table(%rip)
        /* Reset, ACKNOWLEDGE | DRIVER, features, FEATURES_OK. */
        mov v_common(%rip), %rdi
        movb $0, 0x14(%rdi)
        movb $3, 0x14(%rdi)
        movl $0, 0x08(%rdi)
        mov %r13d, 0x0c(%rdi)
        movl $1, 0x08(%rdi)
        movl $1, 0x0c(%rdi)             /* VIRTIO_F_VERSION_1 */
        movb $0x0b, 0x14(%rdi)
        movzbl 0x14(%rdi), %eax
        test $0x08, %al
        jz .Linit_fail
        movw $0xffff, 0x10(%rdi)        /* no configuration vector */
        /* MSI-X entry 0: fixed delivery to APIC 0, vector 0x40, unmasked. */
        mov v_table(%rip), %rsi
        movl $0xfee00000, (%rsi)
        movl $0, 4(%rsi)
        movl $0x40, 8(%rsi)
        movl $0, 12(%rsi)
        /* Software-enable the local APIC so it accepts the interrupt. */
        mov $LAPIC_SVR, %eax
        movl $0x1ff, (%rax)
        xor %eax, %eax
        jmp 9f
.Linit_fail:
        mov $1, %eax
9:      pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret

/* setup_queue: queue %edi, descriptor table %rsi, available ring %rdx,
 * used ring %rcx (QSIZE entries), MSI-X vector 0. */
setup_queue:
        mov v_common(%rip), %rax
        mov %di, 0x16(%rax)
        movw $QSIZE, 0x18(%rax)
        movw $0, 0x1a(%rax)
        mov %esi, 0x20(%rax)
        shr $32, %rsi
        mov %esi, 0x24(%rax)
        mov %edx, 0x28(%rax)
        shr $32, %rdx
        mov %edx, 0x2c(%rax)
        mov %ecx, 0x30(%rax)
        shr $32, %rcx
        mov %ecx, 0x34(%rax)
        movzwl 0x1e(%rax), %r9d         /* queue_notify_off */
        imul v_mult(%rip), %r9d
        add v_notify(%rip), %r9
        lea q_notify(%rip), %r10
        mov %edi, %edi
        mov %r9, (%r10, %rdi, 8)
        movw $1, 0x1c(%rax)
        ret

driver_ok:
        mov v_common(%rip), %rdi
        movb $0x0f, 0x14(%rdi)
        ret

/* notify: queue %edi (a 16-bit write of the queue index). */
notify:
        mov %edi, %edi
        lea q_notify(%rip), %rax
        mov (%rax, %rdi, 8), %rax
        mov %di, (%rax)
        ret

/* set_desc: index %edi in table %rsi: addr %rdx, len %ecx, flags %r8d,
 * next %r9d. */
set_desc:
        mov %edi, %edi
        shl $4, %rdi
        add %rdi, %rsi
        mov %rdx, (%rsi)
        mov %ecx, 8(%rsi)
        mov %r8w, 12(%rsi)
        mov %r9w, 14(%rsi)
        ret

/* push_avail: ring %rdi, head %esi. */
push_avail:
        movzwl 2(%rdi), %eax
        mov %eax, %ecx
        and $(QSIZE - 1), %ecx
        mov %si, 4(%rdi, %rcx, 2)
        inc %eax
        mov %ax, 2(%rdi)
        ret

/* wait_used: used ring %rdi until its index reaches %esi (16-bit
 * wrapping); %eax = 0, or 1 on timeout. */
wait_used:
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

/* irr_bit: %eax = LAPIC IRR bits 64..95. */
irr_bits:
        mov $LAPIC_IRR2, %eax
        movl (%rax), %eax
        ret

/* ---- virtio-blk --------------------------------------------------------- */
/* blk_req: request type %edi on sector 1, data buffer %rsi of %edx bytes
 * (0: none), device-writable if %ecx; waits for used index %r8d. Returns
 * the status byte in %eax (0x100 on timeout). */
blk_req:
        push %rbx
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rsi, %r12
        mov %edx, %r13d
        mov %ecx, %r14d
        mov %r8d, %r15d
        lea blk_hdr(%rip), %rax
        mov %edi, (%rax)
        movl $0, 4(%rax)
        movq $1, 8(%rax)
        movb $0xff, blk_status(%rip)
        xor %edi, %edi
        lea blk_desc(%rip), %rsi
        lea blk_hdr(%rip), %rdx
        mov $16, %ecx
        mov $F_NEXT, %r8d
        mov $1, %r9d
        call set_desc
        test %r13d, %r13d
        jz 1f
        mov $1, %edi
        lea blk_desc(%rip), %rsi
        mov %r12, %rdx
        mov %r13d, %ecx
        mov $F_NEXT, %r8d
        test %r14d, %r14d
        jz 2f
        or $F_WRITE, %r8d
2:      mov $2, %r9d
        call set_desc
        mov $2, %edi
        jmp 3f
1:      mov $1, %edi
        lea blk_desc(%rip), %rsi
        mov $0, %r9d
        mov $F_NEXT, %r8d
        call set_desc                   /* overwritten just below */
        mov $1, %edi
3:      lea blk_desc(%rip), %rsi
        lea blk_status(%rip), %rdx
        mov $1, %ecx
        mov $F_WRITE, %r8d
        xor %r9d, %r9d
        call set_desc
        test %r13d, %r13d
        jnz 4f
        /* Header then status: descriptor 0 chains to 1. */
        lea blk_desc(%rip), %rax
        movw $1, 14(%rax)
4:      lea blk_avail(%rip), %rdi
        xor %esi, %esi
        call push_avail
        xor %edi, %edi
        call notify
        lea blk_used(%rip), %rdi
        mov %r15d, %esi
        call wait_used
        test %eax, %eax
        jnz 5f
        movzbl blk_status(%rip), %eax
        jmp 6f
5:      mov $0x100, %eax
6:      pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret

blk_test:
        PRINT "virtio-blk: found at slot "
        mov %ebx, %eax
        call put_dec
        PRINT "\n"
        /* Move BAR 0, as firmware or a kernel may: the VMM must follow
         * (bus mapping and notify ioeventfds). */
        mov %ebx, %edi
        mov $0x10, %esi
        mov $BLK_BAR, %edx
        call pci_wr
        mov %ebx, %edi
        mov $0x10, %esi
        call pci_rd
        and $0xfffffff0, %eax
        cmp $BLK_BAR, %eax
        je 1f
        FAIL "virtio-blk: BAR 0 did not take the new address"
1:      mov $0xc0000000, %eax           /* where it was: nothing now */
        movl (%rax), %eax
        cmp $-1, %eax
        je 1f
        FAIL "virtio-blk: the old BAR address still answers"
1:      PRINT "virtio-blk: BAR 0 moved to 0xfebf8000\n"
        mov %ebx, %edi
        mov $(1 << 9), %esi             /* VIRTIO_BLK_F_FLUSH */
        call virtio_init
        test %eax, %eax
        jz 1f
        FAIL "virtio-blk init"
1:      PRINT "virtio-blk: capacity "
        mov v_devcfg(%rip), %rax
        mov (%rax), %rax
        call put_dec
        PRINT " sectors\n"
        xor %edi, %edi
        lea blk_desc(%rip), %rsi
        lea blk_avail(%rip), %rdx
        lea blk_used(%rip), %rcx
        call setup_queue
        call driver_ok
        /* The pattern: byte i = 7i + 3. */
        lea blk_data(%rip), %rdi
        xor %ecx, %ecx
2:      imul $7, %ecx, %eax
        add $3, %eax
        mov %al, (%rdi, %rcx)
        inc %ecx
        cmp $512, %ecx
        jb 2b
        mov $1, %edi                    /* VIRTIO_BLK_T_OUT */
        lea blk_data(%rip), %rsi
        mov $512, %edx
        xor %ecx, %ecx
        mov $1, %r8d
        call blk_req
        test %eax, %eax
        jz 3f
        FAIL "virtio-blk write status"
3:      PRINT "virtio-blk: wrote sector 1\n"
        call irr_bits
        test $1, %eax
        jnz 4f
        FAIL "virtio-blk: no MSI-X vector 0x40 in the LAPIC IRR"
4:      PRINT "virtio-blk: MSI-X vector 0x40 pending in the LAPIC\n"
        mov v_table(%rip), %rsi
        movl $0x41, 8(%rsi)
        mov $0, %edi                    /* VIRTIO_BLK_T_IN */
        lea blk_rbuf(%rip), %rsi
        mov $512, %edx
        mov $1, %ecx
        mov $2, %r8d
        call blk_req
        test %eax, %eax
        jz 5f
        FAIL "virtio-blk read status"
5:      lea blk_data(%rip), %rsi
        lea blk_rbuf(%rip), %rdi
        mov $512, %ecx
        repe cmpsb
        je 6f
        FAIL "virtio-blk: read back differs"
6:      PRINT "virtio-blk: read back and verified 512 bytes\n"
        call irr_bits
        test $2, %eax
        jnz 7f
        FAIL "virtio-blk: no MSI-X vector 0x41 after reprogramming"
7:      PRINT "virtio-blk: MSI-X vector 0x41 pending after reprogramming\n"
        mov $4, %edi                    /* VIRTIO_BLK_T_FLUSH */
        xor %esi, %esi
        xor %edx, %edx
        xor %ecx, %ecx
        mov $3, %r8d
        call blk_req
        test %eax, %eax
        jz 8f
        FAIL "virtio-blk flush status"
8:      mov $8, %edi                    /* VIRTIO_BLK_T_GET_ID */
        lea blk_id(%rip), %rsi
        mov $20, %edx
        mov $1, %ecx
        mov $4, %r8d
        call blk_req
        test %eax, %eax
        jz 9f
        FAIL "virtio-blk get-id status"
9:      PRINT "virtio-blk: serial "
        lea blk_id(%rip), %rsi
        call puts
        PRINT "\n"
        /* Hostile: an available index 100 past the queue's worth. */
        lea blk_avail(%rip), %rdi
        addw $100, 2(%rdi)
        xor %edi, %edi
        call notify
        mov $WAIT_LOOPS, %ecx
        mov v_common(%rip), %rdi
10:     movzbl 0x14(%rdi), %eax
        test $0x40, %al
        jnz 11f
        pause
        dec %ecx
        jnz 10b
        FAIL "virtio-blk: no NEEDS_RESET after a bad available index"
11:     PRINT "virtio-blk: NEEDS_RESET after a bad available index\n"
        movb $0, 0x14(%rdi)
        movzbl 0x14(%rdi), %eax
        test %al, %al
        jz 12f
        FAIL "virtio-blk: reset"
12:     PRINT "virtio-blk: reset done\n"
        ret

/* ---- virtio-rng --------------------------------------------------------- */
rng_test:
        PRINT "virtio-rng: found at slot "
        mov %ebx, %eax
        call put_dec
        PRINT "\n"
        mov %ebx, %edi
        xor %esi, %esi
        call virtio_init
        test %eax, %eax
        jz 1f
        FAIL "virtio-rng init"
1:      xor %edi, %edi
        lea rng_desc(%rip), %rsi
        lea rng_avail(%rip), %rdx
        lea rng_used(%rip), %rcx
        call setup_queue
        call driver_ok
        xor %edi, %edi
        lea rng_desc(%rip), %rsi
        lea rng_buf(%rip), %rdx
        mov $64, %ecx
        mov $F_WRITE, %r8d
        xor %r9d, %r9d
        call set_desc
        lea rng_avail(%rip), %rdi
        xor %esi, %esi
        call push_avail
        xor %edi, %edi
        call notify
        lea rng_used(%rip), %rdi
        mov $1, %esi
        call wait_used
        test %eax, %eax
        jz 2f
        FAIL "virtio-rng: no completion"
2:      lea rng_used(%rip), %rax
        cmpl $64, 8(%rax)
        je 3f
        FAIL "virtio-rng: short read"
3:      lea rng_buf(%rip), %rsi
        xor %eax, %eax
        xor %ecx, %ecx
4:      or (%rsi, %rcx, 8), %rax
        inc %ecx
        cmp $8, %ecx
        jb 4b
        test %rax, %rax
        jnz 5f
        FAIL "virtio-rng: all zero"
5:      PRINT "virtio-rng: 64 bytes, first 8: "
        mov rng_buf(%rip), %rax
        call put_hex
        PRINT "\n"
        ret

/* ---- virtio-net --------------------------------------------------------- */
net_test:
        PRINT "virtio-net: found at slot "
        mov %ebx, %eax
        call put_dec
        PRINT "\n"
        mov %ebx, %edi
        mov $((1 << 5) | (1 << 16)), %esi       /* MAC, STATUS */
        call virtio_init
        test %eax, %eax
        jz 1f
        FAIL "virtio-net init"
1:      mov v_devcfg(%rip), %rsi
        lea net_mac(%rip), %rdi
        xor %ecx, %ecx
2:      movb (%rsi, %rcx), %al          /* byte reads, as drivers do */
        mov %al, (%rdi, %rcx)
        inc %ecx
        cmp $6, %ecx
        jb 2b
        PRINT "virtio-net: MAC "
        lea net_mac(%rip), %rsi
        call put_mac
        mov v_devcfg(%rip), %rsi
        movzwl 6(%rsi), %eax
        test $1, %al
        jnz 3f
        FAIL "virtio-net: link down"
3:      PRINT ", link up\n"
        xor %edi, %edi
        lea rx_desc(%rip), %rsi
        lea rx_avail(%rip), %rdx
        lea rx_used(%rip), %rcx
        call setup_queue
        mov $1, %edi
        lea tx_desc(%rip), %rsi
        lea tx_avail(%rip), %rdx
        lea tx_used(%rip), %rcx
        call setup_queue
        call driver_ok
        /* Four 2 KiB receive buffers. */
        xor %r12d, %r12d
4:      mov %r12d, %edi
        lea rx_desc(%rip), %rsi
        mov %r12, %rdx
        shl $11, %rdx
        lea rx_bufs(%rip), %rax
        add %rax, %rdx
        mov $2048, %ecx
        mov $F_WRITE, %r8d
        xor %r9d, %r9d
        call set_desc
        lea rx_avail(%rip), %rdi
        mov %r12d, %esi
        call push_avail
        inc %r12d
        cmp $4, %r12d
        jb 4b
        xor %edi, %edi
        call notify
        /* The ARP request: header (zero), Ethernet, ARP. */
        lea tx_frame(%rip), %rdi
        lea net_mac(%rip), %rsi
        movl $0xffffffff, 12(%rdi)
        movw $0xffff, 16(%rdi)
        mov (%rsi), %eax
        mov %eax, 18(%rdi)
        mov 4(%rsi), %ax
        mov %ax, 22(%rdi)
        movw $0x0608, 24(%rdi)          /* ethertype 0x0806 */
        movl $0x00080100, 26(%rdi)      /* htype 1, ptype 0x0800 */
        movl $0x01000406, 30(%rdi)      /* hlen 6, plen 4, op 1 */
        mov (%rsi), %eax
        mov %eax, 34(%rdi)
        mov 4(%rsi), %ax
        mov %ax, 38(%rdi)
        movl $0x0200090a, 40(%rdi)      /* sender 10.9.0.2 */
        movl $0, 44(%rdi)
        movw $0, 48(%rdi)
        movl $0x0100090a, 50(%rdi)      /* target 10.9.0.1 */
        xor %edi, %edi
        lea tx_desc(%rip), %rsi
        lea tx_frame(%rip), %rdx
        mov $(12 + 60), %ecx
        xor %r8d, %r8d
        xor %r9d, %r9d
        call set_desc
        lea tx_avail(%rip), %rdi
        xor %esi, %esi
        call push_avail
        mov $1, %edi
        call notify
        lea tx_used(%rip), %rdi
        mov $1, %esi
        call wait_used
        test %eax, %eax
        jz 5f
        FAIL "virtio-net: transmit not completed"
5:      PRINT "virtio-net: sent an ARP request for 10.9.0.1\n"
        /* Receive until the reply; re-offer other frames' buffers. */
        xor %r12d, %r12d                /* frames seen */
        mov $64, %r13d                  /* at most this many frames */
6:      lea rx_used(%rip), %rdi
        lea 1(%r12), %esi
        call wait_used
        test %eax, %eax
        jz 7f
        FAIL "virtio-net: no ARP reply"
7:      mov %r12d, %eax
        and $(QSIZE - 1), %eax
        lea rx_used(%rip), %rcx
        mov 4(%rcx, %rax, 8), %r14d     /* buffer id */
        mov %r14, %r15
        shl $11, %r15
        lea rx_bufs(%rip), %rax
        add %rax, %r15                  /* the frame */
        cmpw $0x0608, 24(%r15)
        jne 8f
        cmpw $0x0200, 32(%r15)          /* op 2: reply */
        jne 8f
        cmpl $0x0100090a, 40(%r15)      /* from 10.9.0.1 */
        jne 8f
        PRINT "virtio-net: ARP reply from 10.9.0.1 at "
        lea 34(%r15), %rsi
        call put_mac
        PRINT "\n"
        ret
8:      lea rx_avail(%rip), %rdi
        mov %r14d, %esi
        call push_avail
        xor %edi, %edi
        call notify
        inc %r12d
        dec %r13d
        jnz 6b
        FAIL "virtio-net: no ARP reply among 64 frames"

/* ---- main --------------------------------------------------------------- */
probe_main:
        PRINT "virtio: scanning PCI bus 0\n"
        mov $DEV_BLK, %edi
        call find_dev
        cmp $-1, %eax
        je 1f
        mov %eax, %ebx
        call blk_test
1:      mov $DEV_RNG, %edi
        call find_dev
        cmp $-1, %eax
        je 2f
        mov %eax, %ebx
        call rng_test
2:      mov $DEV_NET, %edi
        call find_dev
        cmp $-1, %eax
        je 3f
        mov %eax, %ebx
        call net_test
3:      PRINT "virtio: done\n"
        jmp poweroff

        .data
        .balign 8
v_bar:          .quad 0
v_common:       .quad 0
v_notify:       .quad 0
v_mult:         .quad 0
v_devcfg:       .quad 0
v_msix:         .quad 0
v_table:        .quad 0
q_notify:       .quad 0, 0
net_mac:        .quad 0
blk_id:         .fill 24, 1, 0

        .bss
        .balign 4096
blk_desc:       .skip 4096
blk_avail:      .skip 4096
blk_used:       .skip 4096
blk_hdr:        .skip 16
blk_status:     .skip 16
        .balign 4096
blk_data:       .skip 4096
blk_rbuf:       .skip 4096
rng_desc:       .skip 4096
rng_avail:      .skip 4096
rng_used:       .skip 4096
rng_buf:        .skip 4096
rx_desc:        .skip 4096
rx_avail:       .skip 4096
rx_used:        .skip 4096
tx_desc:        .skip 4096
tx_avail:       .skip 4096
tx_used:        .skip 4096
tx_frame:       .skip 4096
rx_bufs:        .skip 4 * 2048
