/*
 * virtio_console: drives a multiport virtio-console (1af4:1043) from
 * ring 3 as the Linux driver does, and echoes on its guest agent port:
 *   - negotiates VIRTIO_CONSOLE_F_MULTIPORT, checks max_nr_ports (2), sets
 *     up port 0's queues (0, 1), the control queues (2 receive, 3
 *     transmit) and port 1's (4, 5), offers control receive buffers;
 *   - sends DEVICE_READY; for each DEVICE_ADD prints
 *     `virtio-console: port N added` and answers PORT_READY; prints
 *     CONSOLE_PORT and PORT_NAME (`virtio-console: port 1 name NAME`); on
 *     port 1's name opens the port (PORT_OPEN 1): `virtio-console: opened
 *     port 1`; prints each PORT_OPEN from the host side
 *     (`virtio-console: host side open` / `closed`);
 *   - reads lines on port 1: prints `virtio-console: got LINE`; answers
 *     `{"execute":"guest-ping"}` with `{"return": {}}`, `quit` with `bye`
 *     (then prints `virtio: done` and powers off), anything else with the
 *     line itself.
 * `stall` on the command line: port 1 gets no receive buffers (a guest
 * that never reads); the probe only serves the control queue.
 * Prints `virtio: FAIL ...` on any failure.
 */
        .include "common.inc"
        .include "virtio_modern.inc"

        .set DEV_CONSOLE, 0x1043
        .set F_MULTIPORT, 1 << 1
        .set DEVICE_READY, 0
        .set DEVICE_ADD, 1
        .set PORT_READY, 3
        .set CONSOLE_PORT, 4
        .set PORT_OPEN, 6
        .set PORT_NAME, 7
        .set CTRL_BUF, 64
        .set DATA_BUF, 256
        .set LINE_MAX, 255
        .set IDLE_LOOPS, 4000000000

/* send_ctrl: control message id %edi, event %esi, value %edx on queue 3;
 * waits until it is used. */
send_ctrl:
        push %rbx
        push %r12
        movzwl ct_next(%rip), %ebx
        mov %ebx, %r12d
        and $(QSIZE - 1), %r12d
        lea ct_bufs(%rip), %r8
        lea (%r8, %r12, 8), %r8
        mov %edi, (%r8)
        mov %si, 4(%r8)
        mov %dx, 6(%r8)
        mov %r12d, %edi
        lea ct_desc(%rip), %rsi
        mov %r8, %rdx
        mov $8, %ecx
        xor %r8d, %r8d
        xor %r9d, %r9d
        call set_desc
        lea ct_avail(%rip), %rdi
        mov %r12d, %esi
        call push_avail
        mov $3, %edi
        call notify
        inc %ebx
        mov %bx, ct_next(%rip)
        lea ct_used(%rip), %rdi
        mov %ebx, %esi
        call wait_used
        test %eax, %eax
        jz 1f
        FAIL "virtio-console: control message not taken"
1:      pop %r12
        pop %rbx
        ret

/* send_data: %ecx bytes at %rsi on port 1 (queue 5); waits until used. */
send_data:
        push %rbx
        push %r12
        movzwl pt_next(%rip), %ebx
        mov %ebx, %r12d
        and $(QSIZE - 1), %r12d
        lea pt_bufs(%rip), %rdi
        mov %r12d, %eax
        shl $8, %eax                    /* DATA_BUF bytes each */
        add %rax, %rdi
        mov %rdi, %rdx
        mov %ecx, %r8d
        rep movsb
        mov %r12d, %edi
        lea pt_desc(%rip), %rsi
        mov %r8d, %ecx
        xor %r8d, %r8d
        xor %r9d, %r9d
        call set_desc
        lea pt_avail(%rip), %rdi
        mov %r12d, %esi
        call push_avail
        mov $5, %edi
        call notify
        inc %ebx
        mov %bx, pt_next(%rip)
        lea pt_used(%rip), %rdi
        mov %ebx, %esi
        call wait_used
        test %eax, %eax
        jz 1f
        FAIL "virtio-console: port 1 transmit not completed"
1:      pop %r12
        pop %rbx
        ret

/* offer: QSIZE buffers of %ecx bytes from %rdx on the queue with table
 * %rsi and ring %rdi; notify queue %r8d. */
offer:
        push %rbx
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rdi, %r12
        mov %rsi, %r13
        mov %rdx, %r14
        mov %ecx, %r15d
        push %r8
        xor %ebx, %ebx
1:      mov %ebx, %edi
        mov %r13, %rsi
        mov %ebx, %eax
        imul %r15d, %eax
        lea (%r14, %rax), %rdx
        mov %r15d, %ecx
        mov $F_WRITE, %r8d
        xor %r9d, %r9d
        call set_desc
        mov %r12, %rdi
        mov %ebx, %esi
        call push_avail
        inc %ebx
        cmp $QSIZE, %ebx
        jb 1b
        pop %rdi
        call notify
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret

/* streq: ZF set if the NUL-terminated strings at %rsi and %rdi match. */
streq:
        xor %ecx, %ecx
1:      movzbl (%rsi, %rcx), %eax
        cmp (%rdi, %rcx), %al
        jne 2f
        inc %rcx
        test %al, %al
        jnz 1b
2:      ret

/* handle_ctrl: the control message in used element %ebx of queue 2. */
handle_ctrl:
        push %r12
        push %r13
        lea cr_used(%rip), %rax
        and $(QSIZE - 1), %ebx
        mov 4(%rax, %rbx, 8), %r12d     /* buffer index */
        mov %r12d, %eax
        shl $6, %eax                    /* CTRL_BUF bytes each */
        lea cr_bufs(%rip), %r13
        add %rax, %r13
        movzwl 4(%r13), %eax
        cmp $DEVICE_ADD, %eax
        jne 1f
        PRINT "virtio-console: port "
        mov (%r13), %eax
        call put_dec
        PRINT " added\n"
        mov (%r13), %edi
        mov $PORT_READY, %esi
        mov $1, %edx
        call send_ctrl
        jmp 9f
1:      cmp $CONSOLE_PORT, %eax
        jne 2f
        PRINT "virtio-console: port "
        mov (%r13), %eax
        call put_dec
        PRINT " is a console\n"
        jmp 9f
2:      cmp $PORT_NAME, %eax
        jne 3f
        movb $0, CTRL_BUF - 1(%r13)     /* a terminated name whatever came */
        PRINT "virtio-console: port "
        mov (%r13), %eax
        call put_dec
        PRINT " name "
        lea 8(%r13), %rsi
        call puts
        PRINT "\n"
        lea 8(%r13), %rsi
        lea agent_name(%rip), %rdi
        call streq
        jz 21f
        FAIL "virtio-console: not the agent's name"
21:     mov (%r13), %edi
        mov $PORT_OPEN, %esi
        mov $1, %edx
        call send_ctrl
        PRINT "virtio-console: opened port 1\n"
        jmp 9f
3:      cmp $PORT_OPEN, %eax
        jne 4f
        cmpw $0, 6(%r13)
        je 31f
        PRINT "virtio-console: host side open\n"
        jmp 9f
31:     PRINT "virtio-console: host side closed\n"
        jmp 9f
4:      PRINT "virtio-console: control event "
        movzwl 4(%r13), %eax
        call put_dec
        PRINT "\n"
9:      lea cr_avail(%rip), %rdi
        mov %r12d, %esi
        call push_avail
        mov $2, %edi
        call notify
        pop %r13
        pop %r12
        ret

/* handle_line: the line in line_buf (NUL-terminated, no newline). */
handle_line:
        PRINT "virtio-console: got "
        lea line_buf(%rip), %rsi
        call puts
        PRINT "\n"
        lea line_buf(%rip), %rsi
        lea quit_line(%rip), %rdi
        call streq
        jnz 1f
        lea bye_line(%rip), %rsi
        mov $4, %ecx
        call send_data
        PRINT "virtio: done\n"
        jmp poweroff
1:      lea line_buf(%rip), %rsi
        lea ping_line(%rip), %rdi
        call streq
        jnz 2f
        lea pong_line(%rip), %rsi
        mov $pong_len, %ecx
        jmp send_data
2:      /* Anything else comes back as it came. */
        mov line_len(%rip), %ecx
        lea line_buf(%rip), %rsi
        movb $'\n', (%rsi, %rcx)
        inc %ecx
        jmp send_data

/* handle_data: the bytes in used element %ebx of queue 4. */
handle_data:
        push %r12
        push %r13
        push %r14
        lea pr_used(%rip), %rax
        and $(QSIZE - 1), %ebx
        mov 4(%rax, %rbx, 8), %r12d     /* buffer index */
        mov 8(%rax, %rbx, 8), %r14d     /* length */
        mov %r12d, %eax
        shl $8, %eax
        lea pr_bufs(%rip), %r13
        add %rax, %r13
1:      test %r14d, %r14d
        jz 9f
        movzbl (%r13), %eax
        inc %r13
        dec %r14d
        mov line_len(%rip), %ecx
        lea line_buf(%rip), %rdx
        cmp $'\n', %al
        jne 2f
        movb $0, (%rdx, %rcx)
        call handle_line
        movl $0, line_len(%rip)
        jmp 1b
2:      cmp $LINE_MAX - 1, %ecx
        jae 1b
        mov %al, (%rdx, %rcx)
        incl line_len(%rip)
        jmp 1b
9:      lea pr_avail(%rip), %rdi
        mov %r12d, %esi
        call push_avail
        mov $4, %edi
        call notify
        pop %r14
        pop %r13
        pop %r12
        ret

/* ---- main --------------------------------------------------------------- */
probe_main:
        mov $DEV_CONSOLE, %edi
        call find_dev
        cmp $-1, %eax
        jne 1f
        FAIL "no virtio-console device"
1:      mov %eax, %ebx
        PRINT "virtio-console: found at slot "
        mov %ebx, %eax
        call put_dec
        PRINT "\n"
        mov %ebx, %edi
        mov $F_MULTIPORT, %esi
        call virtio_init
        test %eax, %eax
        jz 2f
        FAIL "virtio-console init (MULTIPORT)"
2:      mov v_devcfg(%rip), %rsi
        mov 4(%rsi), %eax               /* max_nr_ports */
        cmp $2, %eax
        je 3f
        FAIL "virtio-console: max_nr_ports is not 2"
3:      SETUP_QUEUE 0, p0r
        SETUP_QUEUE 1, p0t
        SETUP_QUEUE 2, cr
        SETUP_QUEUE 3, ct
        SETUP_QUEUE 4, pr
        SETUP_QUEUE 5, pt
        call driver_ok
        mov v_common(%rip), %rdi
        movzbl 0x14(%rdi), %eax
        cmp $0x0f, %eax
        je 4f
        FAIL "virtio-console: DRIVER_OK not kept"
4:      lea cr_avail(%rip), %rdi
        lea cr_desc(%rip), %rsi
        lea cr_bufs(%rip), %rdx
        mov $CTRL_BUF, %ecx
        mov $2, %r8d
        call offer
        lea stall_word(%rip), %rdi
        call cmdline_has
        jnz 5f
        lea pr_avail(%rip), %rdi
        lea pr_desc(%rip), %rsi
        lea pr_bufs(%rip), %rdx
        mov $DATA_BUF, %ecx
        mov $4, %r8d
        call offer
        jmp 6f
5:      PRINT "virtio-console: port 1 gets no receive buffers\n"
6:      xor %edi, %edi
        mov $DEVICE_READY, %esi
        mov $1, %edx
        call send_ctrl
        PRINT "virtio-console: device ready\n"
        /* Serve the control and port 1 receive queues, polling. */
.Lloop:
        mov $IDLE_LOOPS, %r15
.Lpoll:
        movzwl cr_used+2(%rip), %eax
        movzwl cr_seen(%rip), %ebx
        cmp %ax, %bx
        je 7f
        incw cr_seen(%rip)
        call handle_ctrl
        jmp .Lloop
7:      movzwl pr_used+2(%rip), %eax
        movzwl pr_seen(%rip), %ebx
        cmp %ax, %bx
        je 8f
        incw pr_seen(%rip)
        call handle_data
        jmp .Lloop
8:      pause
        dec %r15
        jnz .Lpoll
        FAIL "virtio-console: nothing happened for too long"

        .section .rodata
agent_name:     .asciz "org.qemu.guest_agent.0"
ping_line:      .asciz "{\"execute\":\"guest-ping\"}"
pong_line:      .ascii "{\"return\": {}}\n"
        .set pong_len, . - pong_line
quit_line:      .asciz "quit"
bye_line:       .ascii "bye\n"
stall_word:     .asciz "stall"

        .data
        .balign 8
ct_next:        .word 0
pt_next:        .word 0
cr_seen:        .word 0
pr_seen:        .word 0
line_len:       .long 0

        .bss
        .balign 4096
p0r_desc:       .skip 4096
p0r_avail:      .skip 4096
p0r_used:       .skip 4096
p0t_desc:       .skip 4096
p0t_avail:      .skip 4096
p0t_used:       .skip 4096
cr_desc:        .skip 4096
cr_avail:       .skip 4096
cr_used:        .skip 4096
ct_desc:        .skip 4096
ct_avail:       .skip 4096
ct_used:        .skip 4096
pr_desc:        .skip 4096
pr_avail:       .skip 4096
pr_used:        .skip 4096
pt_desc:        .skip 4096
pt_avail:       .skip 4096
pt_used:        .skip 4096
ct_bufs:        .skip 8 * QSIZE
cr_bufs:        .skip CTRL_BUF * QSIZE
pr_bufs:        .skip DATA_BUF * QSIZE
pt_bufs:        .skip DATA_BUF * QSIZE
line_buf:       .skip LINE_MAX + 1
