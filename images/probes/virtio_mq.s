/*
 * virtio_mq: drives a multiqueue virtio-net NIC (1af4:1041 offering
 * VIRTIO_NET_F_MQ with 2 queue pairs) from ring 3, then watches its link:
 *   - negotiates MAC | STATUS | CTRL_VQ | MQ, reads max_virtqueue_pairs,
 *     sets up rx0, tx0, rx1, tx1 and the control queue (queue 4), queue
 *     interrupts on MSI-X vector 0 (LAPIC 0x40), configuration changes on
 *     MSI-X vector 1 (LAPIC 0x42);
 *   - control queue: VQ_PAIRS_SET 3 must be refused (VIRTIO_NET_ERR),
 *     VQ_PAIRS_SET 2 accepted (VIRTIO_NET_OK);
 *   - sends an ARP request for 10.9.0.1 (as 10.9.0.2) on tx1 (pair 1);
 *   - prints `virtio-net: waiting on pair 1` and waits for a frame on rx1
 *     (the test sends UDP flows to 10.9.0.2, spread over the tap's queues);
 *   - prints `virtio-net: waiting for a link change` and waits for LAPIC
 *     vector 0x42 (the test sets the link down through the control API),
 *     then checks the status (link down) and config_generation (changed).
 * Prints `virtio: FAIL ...` on any failure, `virtio: done` at the end, and
 * powers off. The PCI/virtio helpers are those of virtio_pci.s.
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

        .set CFG_VECTOR_IRR_BIT, 2      /* LAPIC vector 0x42 in IRR bits 64..95 */
        .set LINK_WAIT_LOOPS, 4000000000

/* ---- virtio-net, multiqueue --------------------------------------------- */
/* ctrl_cmd: VQ_PAIRS_SET %edi on the control queue; the ack in %eax
 * (0x100 on timeout). Uses descriptors 0, 1; waits for used index %esi. */
ctrl_cmd:
        push %rbx
        mov %esi, %ebx
        lea ctrl_buf(%rip), %rax
        movb $4, (%rax)                 /* VIRTIO_NET_CTRL_MQ */
        movb $0, 1(%rax)                /* VQ_PAIRS_SET */
        mov %di, 2(%rax)
        movb $0xaa, 8(%rax)             /* the ack, until the device writes it */
        xor %edi, %edi
        lea c_desc(%rip), %rsi
        lea ctrl_buf(%rip), %rdx
        mov $4, %ecx
        mov $F_NEXT, %r8d
        mov $1, %r9d
        call set_desc
        mov $1, %edi
        lea c_desc(%rip), %rsi
        lea ctrl_buf(%rip), %rdx
        add $8, %rdx
        mov $1, %ecx
        mov $F_WRITE, %r8d
        xor %r9d, %r9d
        call set_desc
        lea c_avail(%rip), %rdi
        xor %esi, %esi
        call push_avail
        mov $4, %edi
        call notify
        lea c_used(%rip), %rdi
        mov %ebx, %esi
        call wait_used
        test %eax, %eax
        jz 1f
        mov $0x100, %eax
        jmp 2f
1:      lea ctrl_buf(%rip), %rax
        movzbl 8(%rax), %eax
2:      pop %rbx
        ret

/* offer_rx: 4 receive buffers of 2 KiB at %rdx in table %rsi, ring %rdi. */
offer_rx:
        push %rbx
        push %r12
        push %r13
        push %r14
        mov %rdi, %r13
        mov %rsi, %r14
        mov %rdx, %rbx
        xor %r12d, %r12d
1:      mov %r12d, %edi
        mov %r14, %rsi
        mov %r12, %rdx
        shl $11, %rdx
        add %rbx, %rdx
        mov $2048, %ecx
        mov $F_WRITE, %r8d
        xor %r9d, %r9d
        call set_desc
        mov %r13, %rdi
        mov %r12d, %esi
        call push_avail
        inc %r12d
        cmp $4, %r12d
        jb 1b
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret

net_mq_test:
        PRINT "virtio-net: found at slot "
        mov %ebx, %eax
        call put_dec
        PRINT "\n"
        mov %ebx, %edi
        mov $((1 << 5) | (1 << 16) | (1 << 17) | (1 << 22)), %esi
        call virtio_init
        test %eax, %eax
        jz 1f
        FAIL "virtio-net init (MQ)"
1:      mov v_devcfg(%rip), %rsi
        lea net_mac(%rip), %rdi
        xor %ecx, %ecx
2:      movb (%rsi, %rcx), %al
        mov %al, (%rdi, %rcx)
        inc %ecx
        cmp $6, %ecx
        jb 2b
        movzwl 8(%rsi), %eax            /* max_virtqueue_pairs */
        cmp $2, %eax
        je 3f
        FAIL "virtio-net: max_virtqueue_pairs is not 2"
3:      PRINT "virtio-net: MAC "
        lea net_mac(%rip), %rsi
        call put_mac
        PRINT ", 2 queue pairs\n"
        /* MSI-X entry 1: LAPIC vector 0x42, for configuration changes. */
        mov v_table(%rip), %rsi
        movl $0xfee00000, 16(%rsi)
        movl $0, 20(%rsi)
        movl $0x42, 24(%rsi)
        movl $0, 28(%rsi)
        mov v_common(%rip), %rdi
        movw $1, 0x10(%rdi)
        cmpw $1, 0x10(%rdi)
        je 4f
        FAIL "virtio-net: configuration vector not taken"
4:      xor %edi, %edi
        lea r0_desc(%rip), %rsi
        lea r0_avail(%rip), %rdx
        lea r0_used(%rip), %rcx
        call setup_queue
        mov $1, %edi
        lea t0_desc(%rip), %rsi
        lea t0_avail(%rip), %rdx
        lea t0_used(%rip), %rcx
        call setup_queue
        mov $2, %edi
        lea r1_desc(%rip), %rsi
        lea r1_avail(%rip), %rdx
        lea r1_used(%rip), %rcx
        call setup_queue
        mov $3, %edi
        lea t1_desc(%rip), %rsi
        lea t1_avail(%rip), %rdx
        lea t1_used(%rip), %rcx
        call setup_queue
        mov $4, %edi
        lea c_desc(%rip), %rsi
        lea c_avail(%rip), %rdx
        lea c_used(%rip), %rcx
        call setup_queue
        call driver_ok
        mov v_common(%rip), %rdi
        movzbl 0x14(%rdi), %eax
        cmp $0x0f, %eax
        je 5f
        FAIL "virtio-net: DRIVER_OK not kept"
5:      lea r0_avail(%rip), %rdi
        lea r0_desc(%rip), %rsi
        lea r0_bufs(%rip), %rdx
        call offer_rx
        xor %edi, %edi
        call notify
        lea r1_avail(%rip), %rdi
        lea r1_desc(%rip), %rsi
        lea r1_bufs(%rip), %rdx
        call offer_rx
        mov $2, %edi
        call notify
        /* Control queue: 3 pairs refused, 2 accepted. */
        mov $3, %edi
        mov $1, %esi
        call ctrl_cmd
        cmp $1, %eax
        je 6f
        FAIL "virtio-net: VQ_PAIRS_SET 3 not refused"
6:      PRINT "virtio-net: VQ_PAIRS_SET 3 refused\n"
        mov $2, %edi
        mov $2, %esi
        call ctrl_cmd
        test %eax, %eax
        jz 7f
        FAIL "virtio-net: VQ_PAIRS_SET 2 not accepted"
7:      PRINT "virtio-net: VQ_PAIRS_SET 2 ok\n"
        /* The ARP request on tx1: header (zero), Ethernet, ARP. */
        lea tx_frame(%rip), %rdi
        lea net_mac(%rip), %rsi
        movl $0xffffffff, 12(%rdi)
        movw $0xffff, 16(%rdi)
        mov (%rsi), %eax
        mov %eax, 18(%rdi)
        mov 4(%rsi), %ax
        mov %ax, 22(%rdi)
        movw $0x0608, 24(%rdi)
        movl $0x00080100, 26(%rdi)
        movl $0x01000406, 30(%rdi)
        mov (%rsi), %eax
        mov %eax, 34(%rdi)
        mov 4(%rsi), %ax
        mov %ax, 38(%rdi)
        movl $0x0200090a, 40(%rdi)      /* sender 10.9.0.2 */
        movl $0, 44(%rdi)
        movw $0, 48(%rdi)
        movl $0x0100090a, 50(%rdi)      /* target 10.9.0.1 */
        xor %edi, %edi
        lea t1_desc(%rip), %rsi
        lea tx_frame(%rip), %rdx
        mov $(12 + 60), %ecx
        xor %r8d, %r8d
        xor %r9d, %r9d
        call set_desc
        lea t1_avail(%rip), %rdi
        xor %esi, %esi
        call push_avail
        mov $3, %edi
        call notify
        lea t1_used(%rip), %rdi
        mov $1, %esi
        call wait_used
        test %eax, %eax
        jz 8f
        FAIL "virtio-net: transmit on pair 1 not completed"
8:      PRINT "virtio-net: sent an ARP request on pair 1\n"
        PRINT "virtio-net: waiting on pair 1\n"
        mov $60, %r12d                  /* up to 60 waits */
9:      lea r1_used(%rip), %rdi
        mov $1, %esi
        call wait_used
        test %eax, %eax
        jz 10f
        dec %r12d
        jnz 9b
        FAIL "virtio-net: nothing received on pair 1"
10:     movl r1_used+4(%rip), %eax      /* first used element: id */
        movl r1_used+8(%rip), %ecx      /* and length */
        cmp $(12 + 14), %ecx
        jae 11f
        FAIL "virtio-net: short frame on pair 1"
11:     PRINT "virtio-net: received a frame on pair 1\n"
        /* The link: wait for the configuration interrupt. */
        mov v_common(%rip), %rdi
        movzbl 0x15(%rdi), %r13d        /* config_generation */
        PRINT "virtio-net: waiting for a link change\n"
        mov $LINK_WAIT_LOOPS, %r12
12:     call irr_bits
        test $(1 << CFG_VECTOR_IRR_BIT), %eax
        jnz 13f
        pause
        dec %r12
        jnz 12b
        FAIL "virtio-net: no configuration interrupt"
13:     mov v_devcfg(%rip), %rsi
        movzwl 6(%rsi), %eax
        test $1, %al
        jz 14f
        FAIL "virtio-net: configuration interrupt but the link is up"
14:     mov v_common(%rip), %rdi
        movzbl 0x15(%rdi), %eax
        cmp %r13d, %eax
        jne 15f
        FAIL "virtio-net: config_generation did not change"
15:     PRINT "virtio-net: link down after configuration interrupt 0x42, new generation\n"
        ret

/* ---- main --------------------------------------------------------------- */
probe_main:
        PRINT "virtio: scanning PCI bus 0\n"
        mov $DEV_NET, %edi
        call find_dev
        cmp $-1, %eax
        jne 1f
        FAIL "no virtio-net device"
1:      mov %eax, %ebx
        call net_mq_test
        PRINT "virtio: done\n"
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
q_notify:       .quad 0, 0, 0, 0, 0, 0, 0, 0
net_mac:        .quad 0
ctrl_buf:       .quad 0, 0

        .bss
        .balign 4096
r0_desc:        .skip 4096
r0_avail:       .skip 4096
r0_used:        .skip 4096
t0_desc:        .skip 4096
t0_avail:       .skip 4096
t0_used:        .skip 4096
r1_desc:        .skip 4096
r1_avail:       .skip 4096
r1_used:        .skip 4096
t1_desc:        .skip 4096
t1_avail:       .skip 4096
t1_used:        .skip 4096
c_desc:         .skip 4096
c_avail:        .skip 4096
c_used:         .skip 4096
tx_frame:       .skip 4096
r0_bufs:        .skip 4 * 2048
r1_bufs:        .skip 4 * 2048
