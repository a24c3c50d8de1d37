/*
 * ahci: drives the AHCI controller (8086:2922) directly, from ring 3, with
 * a SATA disk on port 0 and an ATAPI CD-ROM on port 1 (`--memory 64M`):
 *
 * - finds it on PCI bus 0, checks class 01/06/01 and that BAR 5 (ABAR) is
 *   a memory BAR, enables memory decoding and bus mastering; checks CAP
 *   (six ports, 64-bit), PI (0x3f) and the ports' signatures;
 * - per port: command list, received-FIS area, FRE, ST;
 * - disk: IDENTIFY DEVICE (PIO setup and D2H FISes, the LBA48 sector
 *   count), WRITE DMA EXT of a pattern to sector 1 (the pattern of
 *   `sector_pattern(7, 3)`), READ DMA EXT back into another buffer and
 *   compare;
 * - CD-ROM: IDENTIFY PACKET DEVICE, then PACKET commands INQUIRY, READ
 *   CAPACITY and READ(10) of LBA 16 (the ISO's volume descriptor, CD001);
 * - hostile commands, each of which must end in a task-file error on the
 *   port (PxIS.TFES, PxTFD.ERR) with the VMM running on: a PRD whose data
 *   block is at 1 TiB, a PRDT of 65535 entries in a table whose entries
 *   run past the end of RAM, a command table at 1 TiB, a command list at
 *   1 TiB; then IDENTIFY again, which must work.
 *
 * Prints `ahci: FAIL ...` on any failure, `ahci: done` at the end, and
 * powers off.
 */
        .include "common.inc"
        .include "virtio_common.inc"

        .set AHCI_ID, 0x29228086
        .set RAM_END, 64 << 20          /* the test gives --memory 64M */
        .set FAR, 0x10000000000         /* 1 TiB: no RAM there */
        /* Port registers (from the ABAR). */
        .set P_CLB, 0x00
        .set P_CLBU, 0x04
        .set P_FB, 0x08
        .set P_IS, 0x10
        .set P_CMD, 0x18
        .set P_TFD, 0x20
        .set P_SIG, 0x24
        .set P_CI, 0x38
        .set IS_TFES, 1 << 30
        .set A_FLAG, 1 << 5
        .set W_FLAG, 1 << 6

        .macro FAIL str
        PRINT "ahci: FAIL \str\n"
        jmp poweroff
        .endm

        .text
        .code64
/* preg: the address of port %edi's register %esi -> %rax. */
preg:
        mov %edi, %eax
        shl $7, %eax
        add $0x100, %eax
        add %esi, %eax
        add abar(%rip), %rax
        ret

/* set_cmd: slot 0 of port %edi's list (table %r10): FIS command %esi,
 * LBA %edx, count %ecx, header flags %r8d (PRDTL in the top half), one
 * PRD (data %r9, length %r11d). */
set_cmd:
        lea clb0(%rip), %rax
        test %edi, %edi
        jz 1f
        lea clb1(%rip), %rax
1:      mov %r8d, (%rax)
        orl $5, (%rax)                  /* CFL: 5 dwords */
        movl $0, 4(%rax)
        mov %r10, 8(%rax)
        /* The H2D register FIS. */
        movb $0x27, (%r10)
        movb $0x80, 1(%r10)
        mov %sil, 2(%r10)
        movb $1, 3(%r10)                /* features: DMA (for PACKET) */
        mov %edx, 4(%r10)               /* LBA 0..23 (and the device byte) */
        movb $0x40, 7(%r10)
        movl $0, 8(%r10)
        mov %ecx, 12(%r10)
        /* PRD 0. */
        mov %r9, 0x80(%r10)
        dec %r11d
        movl $0, 0x88(%r10)
        mov %r11d, 0x8c(%r10)
        ret

/* run_cmd: issue slot 0 on port %edi; %eax = PxIS, %edx = PxTFD. */
run_cmd:
        push %rbx
        mov %edi, %ebx
        mov $P_IS, %esi
        call preg
        movl $-1, (%rax)
        mov %ebx, %edi
        mov $P_CI, %esi
        call preg
        movl $1, (%rax)
        mov $WAIT_LOOPS, %ecx
1:      testl $1, (%rax)
        jz 2f
        pause
        dec %ecx
        jnz 1b
2:      mov %ebx, %edi
        mov $P_TFD, %esi
        call preg
        mov (%rax), %edx
        push %rdx
        mov %ebx, %edi
        mov $P_IS, %esi
        call preg
        mov (%rax), %eax
        pop %rdx
        pop %rbx
        ret

/* packet: port 1, SCSI command (12 bytes at %rsi) with the reply (%r11d
 * bytes) into blk_rbuf; %eax = PxIS, %edx = PxTFD. */
packet:
        lea ct(%rip), %r10
        mov (%rsi), %rax
        mov %rax, 0x40(%r10)
        mov 8(%rsi), %eax
        mov %eax, 0x48(%r10)
        mov $1, %edi
        mov $0xa0, %esi
        mov $0x080000, %edx             /* byte count limit 2048 */
        xor %ecx, %ecx
        mov $(A_FLAG | (1 << 16)), %r8d
        lea blk_rbuf(%rip), %r9
        call set_cmd
        mov $1, %edi
        jmp run_cmd

/* expect_tfes: %eax = PxIS, %edx = PxTFD of a hostile command. */
expect_tfes:
        test $IS_TFES, %eax
        jz 1f
        test $1, %dl
        jz 1f
        ret
1:      FAIL "a hostile command gave no task-file error"

/* identify_disk: IDENTIFY DEVICE on port 0 into blk_rbuf; %eax = PxIS. */
identify_disk:
        xor %edi, %edi
        mov $0xec, %esi
        xor %edx, %edx
        xor %ecx, %ecx
        mov $(1 << 16), %r8d
        lea blk_rbuf(%rip), %r9
        mov $512, %r11d
        lea ct(%rip), %r10
        call set_cmd
        xor %edi, %edi
        jmp run_cmd

/* ---- main --------------------------------------------------------------- */
probe_main:
        xor %ebx, %ebx
1:      mov %ebx, %edi
        xor %esi, %esi
        call pci_rd
        cmp $AHCI_ID, %eax
        je 2f
        inc %ebx
        cmp $32, %ebx
        jb 1b
        FAIL "no AHCI controller (8086:2922)"
2:      mov %ebx, %edi
        mov $0x08, %esi
        call pci_rd
        shr $8, %eax
        cmp $0x010601, %eax
        je 1f
        FAIL "class is not 01/06/01"
1:      mov %ebx, %edi
        mov $0x24, %esi
        call pci_rd
        test $1, %eax
        jz 1f
        FAIL "BAR 5 is not a memory BAR"
1:      and $0xfffff000, %eax
        mov %rax, abar(%rip)
        mov %ebx, %edi
        mov $0x04, %esi
        mov $0x06, %edx                 /* memory space, bus master */
        call pci_wr
        mov abar(%rip), %rdi
        mov (%rdi), %eax                /* CAP */
        and $0x8000001f, %eax
        cmp $0x80000005, %eax
        je 1f
        FAIL "CAP: not six ports with 64-bit addressing"
1:      cmpl $0x3f, 0x0c(%rdi)
        je 1f
        FAIL "PI is not 0x3f"
1:      cmpl $0x101, 0x100 + P_SIG(%rdi)
        je 1f
        FAIL "port 0 signature is not a disk's"
1:      cmpl $0xeb140101, 0x180 + P_SIG(%rdi)
        je 1f
        FAIL "port 1 signature is not ATAPI"
1:      PRINT "ahci: ICH9 AHCI, 6 ports, disk on 0, ATAPI on 1\n"
        /* The ports: command list, FIS area, FRE then ST. */
        lea clb0(%rip), %rax
        mov %eax, 0x100 + P_CLB(%rdi)
        lea fb0(%rip), %rax
        mov %eax, 0x100 + P_FB(%rdi)
        lea clb1(%rip), %rax
        mov %eax, 0x180 + P_CLB(%rdi)
        lea fb1(%rip), %rax
        mov %eax, 0x180 + P_FB(%rdi)
        movl $0x10, 0x100 + P_CMD(%rdi)
        movl $0x11, 0x100 + P_CMD(%rdi)
        movl $0x10, 0x180 + P_CMD(%rdi)
        movl $0x11, 0x180 + P_CMD(%rdi)
        testl $0x8000, 0x100 + P_CMD(%rdi)
        jnz 1f
        FAIL "PxCMD.CR is not set after ST"

        /* Disk: IDENTIFY DEVICE. */
1:      call identify_disk
        and $3, %eax
        cmp $3, %eax                    /* PSS | DHRS */
        je 1f
        FAIL "IDENTIFY: no PIO setup and D2H FIS"
1:      test $1, %dl
        jz 1f
        FAIL "IDENTIFY: error"
1:      PRINT "ahci: disk has "
        mov blk_rbuf + 200(%rip), %rax
        call put_dec
        PRINT " sectors\n"
        /* WRITE DMA EXT: sector 1 from blk_data. */
        mov $7, %esi
        mov $3, %edx
        call fill_pattern
        xor %edi, %edi
        mov $0x35, %esi
        mov $1, %edx
        mov $1, %ecx
        mov $(W_FLAG | (1 << 16)), %r8d
        lea blk_data(%rip), %r9
        mov $512, %r11d
        lea ct(%rip), %r10
        call set_cmd
        xor %edi, %edi
        call run_cmd
        test $1, %dl
        jz 1f
        FAIL "WRITE DMA EXT: error"
1:      cmpl $512, clb0 + 4(%rip)
        je 1f
        FAIL "WRITE DMA EXT: PRDBC is not 512"
1:      PRINT "ahci: wrote sector 1\n"
        xor %edi, %edi
        mov $0x25, %esi
        mov $1, %edx
        mov $1, %ecx
        mov $(1 << 16), %r8d
        lea blk_rbuf(%rip), %r9
        mov $512, %r11d
        lea ct(%rip), %r10
        call set_cmd
        xor %edi, %edi
        call run_cmd
        test $1, %dl
        jz 1f
        FAIL "READ DMA EXT: error"
1:      call blk_verify
        je 1f
        FAIL "the sector read back differs"
1:      PRINT "ahci: read back and verified 512 bytes\n"

        /* CD-ROM: IDENTIFY PACKET DEVICE, INQUIRY, READ CAPACITY, READ. */
        mov $1, %edi
        mov $0xa1, %esi
        xor %edx, %edx
        xor %ecx, %ecx
        mov $(1 << 16), %r8d
        lea blk_rbuf(%rip), %r9
        mov $512, %r11d
        lea ct(%rip), %r10
        call set_cmd
        mov $1, %edi
        call run_cmd
        cmpw $0x85c0, blk_rbuf(%rip)
        je 1f
        FAIL "IDENTIFY PACKET DEVICE: word 0 is not 0x85c0"
1:      lea cdb_inquiry(%rip), %rsi
        mov $36, %r11d
        call packet
        test $1, %dl
        jnz 2f
        cmpb $5, blk_rbuf(%rip)
        jne 2f
        cmpl $0x4e4c494b, blk_rbuf + 8(%rip)   /* "KILN" */
        je 1f
2:      FAIL "INQUIRY"
1:      PRINT "ahci: INQUIRY: CD-ROM, vendor KILN\n"
        lea cdb_capacity(%rip), %rsi
        mov $8, %r11d
        call packet
        test $1, %dl
        jz 1f
        FAIL "READ CAPACITY"
1:      PRINT "ahci: CD-ROM last LBA "
        mov blk_rbuf(%rip), %eax
        bswap %eax
        call put_dec
        PRINT ", block "
        mov blk_rbuf + 4(%rip), %eax
        bswap %eax
        call put_dec
        PRINT "\n"
        lea cdb_read10(%rip), %rsi
        mov $2048, %r11d
        call packet
        test $1, %dl
        jnz 2f
        cmpl $0x30444301, blk_rbuf(%rip)   /* 01 "CD0" */
        je 1f
2:      FAIL "READ(10) of the volume descriptor"
1:      PRINT "ahci: READ(10) LBA 16: CD001\n"

        /* Hostile: a PRD data block at 1 TiB. */
        xor %edi, %edi
        mov $0x25, %esi
        mov $1, %edx
        mov $1, %ecx
        mov $(1 << 16), %r8d
        mov $FAR, %r9
        mov $512, %r11d
        lea ct(%rip), %r10
        call set_cmd
        xor %edi, %edi
        call run_cmd
        call expect_tfes
        /* 65535 PRD entries in a table 0x100 below the end of RAM. */
        xor %edi, %edi
        mov $0x25, %esi
        mov $1, %edx
        mov $64, %ecx
        mov $0xffff0000, %r8d
        lea blk_rbuf(%rip), %r9
        mov $2, %r11d
        mov $(RAM_END - 0x100), %r10
        call set_cmd
        xor %edi, %edi
        call run_cmd
        call expect_tfes
        /* A command table at 1 TiB. */
        xor %edi, %edi
        mov $0xec, %esi
        xor %edx, %edx
        xor %ecx, %ecx
        mov $(1 << 16), %r8d
        lea blk_rbuf(%rip), %r9
        mov $512, %r11d
        lea ct(%rip), %r10
        call set_cmd
        movabs $FAR, %rax
        mov %rax, clb0 + 8(%rip)
        xor %edi, %edi
        call run_cmd
        call expect_tfes
        /* A command list at 1 TiB. */
        mov abar(%rip), %rdi
        movl $(FAR >> 32), 0x100 + P_CLBU(%rdi)
        xor %edi, %edi
        call run_cmd
        call expect_tfes
        mov abar(%rip), %rdi
        movl $0, 0x100 + P_CLBU(%rdi)
        PRINT "ahci: hostile command lists and PRDTs: task-file errors\n"
        /* The port still works. */
        call identify_disk
        test $1, %dl
        jz 1f
        FAIL "IDENTIFY after the hostile commands"
1:      PRINT "ahci: done\n"
        jmp poweroff

        .section .rodata
        .balign 8
cdb_inquiry:    .byte 0x12, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0
cdb_capacity:   .byte 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
cdb_read10:     .byte 0x28, 0, 0, 0, 0, 16, 0, 0, 1, 0, 0, 0

        .bss
        .balign 8
abar:   .skip 8
        .balign 1024
clb0:   .skip 1024
clb1:   .skip 1024
fb0:    .skip 256
fb1:    .skip 256
        .balign 128
ct:     .skip 0x100
