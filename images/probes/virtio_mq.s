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
 * powers off. The PCI/virtio driver is virtio_modern.inc, shared with
 * virtio_pci.s.
 */
        .include "common.inc"
        .include "virtio_modern.inc"

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
1:      call net_read_mac
        mov v_devcfg(%rip), %rsi
        movzwl 8(%rsi), %eax            /* max_virtqueue_pairs */
        cmp $2, %eax
        je 3f
        FAIL "virtio-net: max_virtqueue_pairs is not 2"
3:      call print_mac
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
4:
        SETUP_QUEUE 0, r0
        SETUP_QUEUE 1, t0
        SETUP_QUEUE 2, r1
        SETUP_QUEUE 3, t1
        SETUP_QUEUE 4, c
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
        SEND_ARP_REQUEST 3, t1
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
