/*
 * virtio_console: drives a multiport virtio-console (1af4:1043) from
 * ring 3 as the Linux driver does (virtio_console.inc), and echoes on its
 * guest agent port:
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
 * Prints `virtio: FAIL ...` on any failure, and when nothing happens for
 * about a minute.
 */
        .include "common.inc"
        .include "virtio_console.inc"

        .set IDLE_LOOPS, 4000000000

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

/* ---- main --------------------------------------------------------------- */
probe_main:
        lea stall_word(%rip), %rdi
        call cmdline_has
        mov %eax, %edi
        call console_start
        mov $IDLE_LOOPS, %rdi
        jmp console_serve

        .section .rodata
ping_line:      .asciz "{\"execute\":\"guest-ping\"}"
pong_line:      .ascii "{\"return\": {}}\n"
        .set pong_len, . - pong_line
quit_line:      .asciz "quit"
bye_line:       .ascii "bye\n"
stall_word:     .asciz "stall"
