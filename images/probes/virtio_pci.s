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
        .include "virtio_modern.inc"

        .set DEV_BLK, 0x1042
        .set DEV_RNG, 0x1044
        .set BLK_BAR, 0xfebf8000        /* where the probe moves the disk's BAR 0: top of the hole, as SeaBIOS would */

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
        call blk_header
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
        call blk_result
        pop %r15
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
        SETUP_QUEUE 0, blk
        call driver_ok
        /* The pattern: byte i = 7i + 3. */
        mov $7, %esi
        mov $3, %edx
        call fill_pattern
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
5:      call blk_verify
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
1:
        SETUP_QUEUE 0, rng
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
1:      call net_read_mac
        call print_mac
        mov v_devcfg(%rip), %rsi
        movzwl 6(%rsi), %eax
        test $1, %al
        jnz 3f
        FAIL "virtio-net: link down"
3:      PRINT ", link up\n"
        SETUP_QUEUE 0, rx
        SETUP_QUEUE 1, tx
        call driver_ok
        lea rx_avail(%rip), %rdi
        lea rx_desc(%rip), %rsi
        lea rx_bufs(%rip), %rdx
        call offer_rx
        xor %edi, %edi
        call notify
        SEND_ARP_REQUEST 1, tx
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
blk_id:         .fill 24, 1, 0

        .bss
        .balign 4096
blk_desc:       .skip 4096
blk_avail:      .skip 4096
blk_used:       .skip 4096
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
