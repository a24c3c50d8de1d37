/*
 * pointer: the guest side of the pointing devices, from ring 3, polling
 * (used by `tests/tests/pointer.rs`):
 *   - the PS/2 mouse on the i8042's AUX port: command byte with the
 *     keyboard off and no interrupts, AUX enable (0xA8) and test (0xA9,
 *     `mouse: aux test 00`), then through 0xD4: reset (`mouse: reset fa aa
 *     00`), the IntelliMouse knock (sample rates 200, 100, 80) and get ID
 *     (`mouse: id 03`), enable reporting; every answer byte must carry
 *     the status register's AUX flag;
 *   - the virtio-input tablet (1af4:1052, modern transport): its name,
 *     EV_ABS bits and both axes' ranges from the configuration space
 *     (`tablet: name ...`, `tablet: abs bits 03`, `tablet: x 0..N`,
 *     `tablet: y 0..N`), the event queue filled with eight 8-byte
 *     buffers, the status queue set up;
 *     (without one: `tablet: none`, and only the mouse is watched);
 *   - prints `pointer: ready`, then forever prints each mouse packet
 *     (`mouse: packet b0 b1 b2 b3`, hex) and each tablet event
 *     (`tablet: event TYPE CODE VALUE`, decimal), giving each event
 *     buffer back.
 * A failure prints `pointer: FAIL ...` and powers off.
 */
        .include "common.inc"
        .include "virtio_modern.inc"

        .set DEV_INPUT, 0x1052
        .set I8042_DATA, 0x60
        .set I8042_STATUS, 0x64
        .set ST_OBF, 0x01
        .set ST_AUX, 0x20
        .set KBC_LOOPS, 10000000

        .macro PFAIL str
        PRINT "pointer: FAIL \str\n"
        jmp poweroff
        .endm

/* ---- i8042 ---------------------------------------------------------------- */
/* kbc_read: the next output byte in %eax (status in bits 8..15), or -1
 * after KBC_LOOPS polls. */
kbc_read:
        mov $KBC_LOOPS, %ecx
1:      in $I8042_STATUS, %al
        test $ST_OBF, %al
        jnz 2f
        pause
        dec %ecx
        jnz 1b
        mov $-1, %eax
        ret
2:      movzbl %al, %edx
        shl $8, %edx
        in $I8042_DATA, %al
        movzbl %al, %eax
        or %edx, %eax
        ret

/* aux_read: kbc_read, failing unless the byte is the mouse's; byte in %eax. */
aux_read:
        call kbc_read
        cmp $-1, %eax
        jne 1f
        PFAIL "no answer from the mouse"
1:      test $(ST_AUX << 8), %eax
        jnz 2f
        PFAIL "a mouse answer without the AUX flag"
2:      movzbl %al, %eax
        ret

/* mouse_cmd: byte %dil to the mouse (0xD4, then the byte); the ACK is
 * checked. */
mouse_cmd:
        mov $0xd4, %al
        out %al, $I8042_STATUS
        mov %dil, %al
        out %al, $I8042_DATA
        call aux_read
        cmp $0xfa, %eax
        je 1f
        PFAIL "the mouse did not acknowledge"
1:      ret

/* put_sp_hex2: a space, then %al as two hex digits. */
put_sp_hex2:
        push %rax
        mov $' ', %al
        call putc
        pop %rax
        jmp put_hex2

mouse_init:
        /* Flush, then the command byte: SYS | XLATE | keyboard off. */
1:      in $I8042_STATUS, %al
        test $ST_OBF, %al
        jz 2f
        in $I8042_DATA, %al
        jmp 1b
2:      mov $0x60, %al
        out %al, $I8042_STATUS
        mov $0x54, %al
        out %al, $I8042_DATA
        mov $0xa8, %al
        out %al, $I8042_STATUS
        mov $0xa9, %al
        out %al, $I8042_STATUS
        call kbc_read
        mov %eax, %ebx
        PRINT "mouse: aux test"
        mov %ebx, %eax
        call put_sp_hex2
        PRINT "\n"
        mov $0xff, %edi
        call mouse_cmd
        call aux_read
        mov %eax, %ebx
        call aux_read
        mov %eax, %r12d
        PRINT "mouse: reset fa"
        mov %ebx, %eax
        call put_sp_hex2
        mov %r12d, %eax
        call put_sp_hex2
        PRINT "\n"
        lea knock(%rip), %rbx
        mov $3, %r12d
3:      mov $0xf3, %edi
        call mouse_cmd
        movzbl (%rbx), %edi
        call mouse_cmd
        inc %rbx
        dec %r12d
        jnz 3b
        mov $0xf2, %edi
        call mouse_cmd
        call aux_read
        mov %eax, %ebx
        PRINT "mouse: id"
        mov %ebx, %eax
        call put_sp_hex2
        PRINT "\n"
        mov $0xf4, %edi
        call mouse_cmd
        ret

/* ---- virtio-input --------------------------------------------------------- */
/* cfg_select: select %dil, subsel %sil; %rax = the configuration, %ecx =
 * size. */
cfg_select:
        mov v_devcfg(%rip), %rax
        mov %dil, (%rax)
        mov %sil, 1(%rax)
        movzbl 2(%rax), %ecx
        ret

/* put_axis: the range of axis %esi ("0..max"). */
put_axis:
        mov $0x12, %edi
        call cfg_select
        push %rax
        movl 8(%rax), %eax
        call put_dec
        PRINT ".."
        pop %rax
        movl 12(%rax), %eax
        call put_dec
        PRINT "\n"
        ret

tablet_init:
        mov $DEV_INPUT, %edi
        call find_dev
        cmp $-1, %eax
        jne 1f
        PRINT "tablet: none\n"
        ret
1:      movb $1, have_tablet(%rip)
        mov %eax, %edi
        xor %esi, %esi
        call virtio_init
        test %eax, %eax
        jz 2f
        PFAIL "virtio-input: init"
2:      cmpq $0, v_devcfg(%rip)
        jne 3f
        PFAIL "virtio-input: no device configuration"
3:      PRINT "tablet: name "
        mov $1, %edi
        xor %esi, %esi
        call cfg_select
        lea 8(%rax), %rbx
        mov %ecx, %r12d
4:      test %r12d, %r12d
        jz 5f
        movzbl (%rbx), %eax
        call putc
        inc %rbx
        dec %r12d
        jmp 4b
5:      PRINT "\ntablet: abs bits"
        mov $0x11, %edi
        mov $3, %esi
        call cfg_select
        movzbl 8(%rax), %eax
        call put_sp_hex2
        PRINT "\ntablet: x "
        xor %esi, %esi
        call put_axis
        PRINT "tablet: y "
        mov $1, %esi
        call put_axis
        SETUP_QUEUE 0, e
        SETUP_QUEUE 1, s
        call driver_ok
        /* Eight device-writable 8-byte buffers on the event queue. */
        xor %ebx, %ebx
6:      mov %ebx, %edi
        lea e_desc(%rip), %rsi
        lea ev_bufs(%rip), %rdx
        lea (%rdx, %rbx, 8), %rdx
        mov $8, %ecx
        mov $F_WRITE, %r8d
        xor %r9d, %r9d
        call set_desc
        lea e_avail(%rip), %rdi
        mov %ebx, %esi
        call push_avail
        inc %ebx
        cmp $QSIZE, %ebx
        jne 6b
        xor %edi, %edi
        call notify
        ret

/* tablet_poll: print and give back every event the device used since
 * the last call (%r14w counts them). */
tablet_poll:
        movzwl e_used+2(%rip), %eax
        cmp %r14w, %ax
        je 9f
        mov %r14d, %eax
        and $(QSIZE - 1), %eax
        lea e_used(%rip), %rcx
        movl 4(%rcx, %rax, 8), %ebx     /* the buffer's descriptor */
        and $(QSIZE - 1), %ebx
        lea ev_bufs(%rip), %r12
        lea (%r12, %rbx, 8), %r12
        PRINT "tablet: event "
        movzwl (%r12), %eax
        call put_dec
        PRINT " "
        movzwl 2(%r12), %eax
        call put_dec
        PRINT " "
        movl 4(%r12), %eax
        call put_dec
        PRINT "\n"
        lea e_avail(%rip), %rdi
        mov %ebx, %esi
        call push_avail
        xor %edi, %edi
        call notify
        inc %r14d
        jmp tablet_poll
9:      ret

/* mouse_poll: collect AUX bytes into packets of four (%r15d bytes so far
 * in packet); print each. */
mouse_poll:
        in $I8042_STATUS, %al
        test $ST_OBF, %al
        jz 9f
        mov %eax, %ebx
        in $I8042_DATA, %al
        test $ST_AUX, %bl
        jz mouse_poll
        lea packet(%rip), %rcx
        mov %al, (%rcx, %r15, 1)
        inc %r15d
        cmp $4, %r15d
        jne mouse_poll
        xor %r15d, %r15d
        PRINT "mouse: packet"
        xor %ebx, %ebx
1:      lea packet(%rip), %rcx
        movzbl (%rcx, %rbx, 1), %eax
        call put_sp_hex2
        inc %ebx
        cmp $4, %ebx
        jne 1b
        PRINT "\n"
        jmp mouse_poll
9:      ret

/* ---- main ----------------------------------------------------------------- */
probe_main:
        call mouse_init
        call tablet_init
        xor %r14d, %r14d
        xor %r15d, %r15d
        PRINT "pointer: ready\n"
1:      call mouse_poll
        cmpb $0, have_tablet(%rip)
        je 2f
        call tablet_poll
2:      pause
        jmp 1b

        .data
knock:          .byte 200, 100, 80
packet:         .byte 0, 0, 0, 0
have_tablet:    .byte 0

        .bss
        .balign 4096
e_desc:         .skip 4096
e_avail:        .skip 4096
e_used:         .skip 4096
s_desc:         .skip 4096
s_avail:        .skip 4096
s_used:         .skip 4096
ev_bufs:        .skip 8 * QSIZE
