/*
 * agent: a QEMU guest agent (qemu-ga) on kiln-vmm's virtio-console, as
 * kilnd talks to it, answered by a probe guest. It drives the device as
 * the virtio_console probe does (virtio_console.inc) and reads each line
 * on the agent port as a qemu-ga request: prints `agent: got LINE`, finds
 * the value of "execute" and answers one well-formed line:
 *   guest-sync-delimited  0xFF, then {"return": ID} with the "id" of the
 *                         request (the number parsed out of it)
 *   guest-ping            {"return": {}}
 *   guest-info            version 1.0-kiln-probe and its commands
 *   guest-get-osinfo      name "Kiln probe", id "kiln-probe", version 1
 *   guest-get-host-name   "kiln-probe"
 *   guest-network-get-interfaces
 *                         lo (127.0.0.1/8) and, when there is a
 *                         virtio-net (1af4:1041), eth0 with its MAC (read
 *                         from its configuration space at start, printed
 *                         as `agent: eth0 MAC`) and its EUI-64 link-local
 *                         address fe80::.../64
 *   guest-shutdown        no answer (as qemu-ga): prints `agent:
 *                         guest-shutdown, powering off` and powers off
 *                         through ACPI PM1a (the VMM exits 0)
 *   anything else         {"error": {"class": "CommandNotFound", ...}}
 * On the command line: `garbage`: every command but the sync is answered
 * with a line that is not JSON; `silent`: only the sync is answered.
 * The probe never powers off by itself otherwise: it ignores the ACPI
 * power button (PWRBTN_EN stays clear), so a power-off proves the agent's
 * shutdown, and it serves the port with no idle limit.
 */
        .include "common.inc"
        .include "virtio_console.inc"

        .set OUT_MAX, 2048

/* ---- the answer being built ---------------------------------------------- */
/* out_byte: %al to the answer. */
out_byte:
        mov out_len(%rip), %ecx
        cmp $OUT_MAX, %ecx
        jae 1f
        lea out_buf(%rip), %rdx
        mov %al, (%rdx, %rcx)
        incl out_len(%rip)
1:      ret

/* out_str: the NUL-terminated string at %rsi. */
out_str:
        push %rbx
        mov %rsi, %rbx
1:      movzbl (%rbx), %eax
        test %al, %al
        jz 2f
        call out_byte
        inc %rbx
        jmp 1b
2:      pop %rbx
        ret

/* out_dec: %rax as unsigned decimal. */
out_dec:
        push %rbx
        sub $32, %rsp
        lea 31(%rsp), %rbx
        movb $0, (%rbx)
        mov $10, %ecx
1:      xor %edx, %edx
        div %rcx
        add $'0', %dl
        dec %rbx
        mov %dl, (%rbx)
        test %rax, %rax
        jnz 1b
        mov %rbx, %rsi
        call out_str
        add $32, %rsp
        pop %rbx
        ret

/* out_hex2: %al as two lower-case hex digits. */
out_hex2:
        push %rbx
        movzbl %al, %ebx
        mov %ebx, %eax
        shr $4, %eax
        call 1f
        mov %ebx, %eax
        call 1f
        pop %rbx
        ret
1:      and $15, %eax
        cmp $10, %al
        jb 2f
        add $('a' - '0' - 10), %al
2:      add $'0', %al
        jmp out_byte

/* OUT "text": a literal to the answer. */
        .macro OUT str
        .pushsection .rodata
.Lout\@: .asciz "\str"
        .popsection
        lea .Lout\@(%rip), %rsi
        call out_str
        .endm

/* out_send: the answer, then empty it. */
out_send:
        lea out_buf(%rip), %rsi
        mov out_len(%rip), %ecx
        movl $0, out_len(%rip)
        jmp send_data

/* ---- the request ------------------------------------------------------- */
/* find_key: the quoted key at %rdi in line_buf: %rsi = its value (after
 * the colon and blanks), %eax = 0; %eax = 1 if it is not there. */
find_key:
        lea line_buf(%rip), %rsi
1:      cmpb $0, (%rsi)
        je 8f
        xor %ecx, %ecx
2:      movzbl (%rdi, %rcx), %eax
        test %al, %al
        jz 3f
        cmp %al, (%rsi, %rcx)
        jne 4f
        inc %rcx
        jmp 2b
4:      inc %rsi
        jmp 1b
3:      add %rcx, %rsi
5:      movzbl (%rsi), %eax             /* blanks and the colon */
        cmp $' ', %al
        je 6f
        cmp $':', %al
        jne 7f
6:      inc %rsi
        jmp 5b
7:      xor %eax, %eax
        ret
8:      mov $1, %eax
        ret

/* is_name: ZF set if the text at %rsi is the quoted string whose
 * contents are the NUL-terminated %rdi. */
is_name:
        cmpb $'"', (%rsi)
        jne 9f
        xor %ecx, %ecx
1:      movzbl (%rdi, %rcx), %eax
        test %al, %al
        jz 2f
        cmp %al, 1(%rsi, %rcx)
        jne 9f
        inc %rcx
        jmp 1b
2:      cmpb $'"', 1(%rsi, %rcx)
9:      ret

/* ---- the commands -------------------------------------------------------- */
cmd_sync:
        lea key_id(%rip), %rdi
        call find_key
        test %eax, %eax
        jnz .Lbad_id
        xor %eax, %eax                  /* the id, digit by digit */
        xor %ecx, %ecx
1:      movzbl (%rsi), %edx
        sub $'0', %edx
        cmp $9, %edx
        ja 2f
        imul $10, %rax
        add %rdx, %rax
        inc %rsi
        inc %ecx
        jmp 1b
2:      test %ecx, %ecx
        jz .Lbad_id
        push %rax
        mov $0xff, %al
        call out_byte
        OUT "{\"return\": "
        pop %rax
        call out_dec
        OUT "}\n"
        jmp out_send
.Lbad_id:
        OUT "{\"error\": {\"class\": \"GenericError\", \"desc\": \"guest-sync-delimited needs a numeric id\"}}\n"
        jmp out_send

cmd_ping:
        OUT "{\"return\": {}}\n"
        jmp out_send

cmd_info:
        OUT "{\"return\": {\"version\": \"1.0-kiln-probe\", \"supported_commands\": ["
        lea commands(%rip), %rbx
1:      mov (%rbx), %rsi
        test %rsi, %rsi
        jz 2f
        push %rsi
        OUT "{\"enabled\": true, \"name\": \""
        pop %rsi
        call out_str
        OUT "\", \"success-response\": true}"
        add $16, %rbx
        cmpq $0, (%rbx)
        je 1b
        OUT ", "
        jmp 1b
2:      OUT "]}}\n"
        jmp out_send

cmd_osinfo:
        OUT "{\"return\": {\"name\": \"Kiln probe\", \"id\": \"kiln-probe\", \"pretty-name\": \"Kiln probe guest 1\", \"version\": \"1\", \"version-id\": \"1\", \"kernel-release\": \"agent.s\", \"kernel-version\": \"1\", \"machine\": \"x86_64\"}}\n"
        jmp out_send

cmd_host_name:
        OUT "{\"return\": {\"host-name\": \"kiln-probe\"}}\n"
        jmp out_send

cmd_interfaces:
        OUT "{\"return\": [{\"name\": \"lo\", \"hardware-address\": \"00:00:00:00:00:00\", \"ip-addresses\": [{\"ip-address-type\": \"ipv4\", \"ip-address\": \"127.0.0.1\", \"prefix\": 8}]}"
        cmpb $0, have_nic(%rip)
        je 9f
        OUT ", {\"name\": \"eth0\", \"hardware-address\": \""
        lea net_mac(%rip), %rbx
        xor %r12d, %r12d
1:      movzbl (%rbx, %r12), %eax
        call out_hex2
        inc %r12d
        cmp $6, %r12d
        je 2f
        mov $':', %al
        call out_byte
        jmp 1b
        /* EUI-64: fe80::(m0^2)m1:m2ff:fem3:m4m5 */
2:      OUT "\", \"ip-addresses\": [{\"ip-address-type\": \"ipv6\", \"ip-address\": \"fe80::"
        movzbl (%rbx), %eax
        xor $2, %al
        call out_hex2
        movzbl 1(%rbx), %eax
        call out_hex2
        OUT ":"
        movzbl 2(%rbx), %eax
        call out_hex2
        OUT "ff:fe"
        movzbl 3(%rbx), %eax
        call out_hex2
        OUT ":"
        movzbl 4(%rbx), %eax
        call out_hex2
        movzbl 5(%rbx), %eax
        call out_hex2
        OUT "\", \"prefix\": 64}]}"
9:      OUT "]}\n"
        jmp out_send

cmd_shutdown:
        PRINT "agent: guest-shutdown, powering off\n"
        jmp poweroff

/* handle_line: one request in line_buf. */
handle_line:
        push %rbx
        push %r12
        PRINT "agent: got "
        lea line_buf(%rip), %rsi
        call puts
        PRINT "\n"
        lea key_execute(%rip), %rdi
        call find_key
        test %eax, %eax
        jnz .Lnot_json
        mov %rsi, %r12
        lea commands(%rip), %rbx
1:      mov (%rbx), %rdi
        test %rdi, %rdi
        jz .Lunknown
        mov %r12, %rsi
        call is_name
        je 2f
        add $16, %rbx
        jmp 1b
2:      lea cmd_sync(%rip), %rax        /* the sync always works */
        cmp %rax, 8(%rbx)
        je 3f
        cmpb $0, silent_mode(%rip)
        jne 9f
        cmpb $0, garbage_mode(%rip)
        je 3f
        OUT "garbage: this line is not JSON\n"
        call out_send
        jmp 9f
3:      call *8(%rbx)
        jmp 9f
.Lunknown:
        OUT "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"the Kiln probe's agent does not know this command\"}}\n"
        call out_send
        jmp 9f
.Lnot_json:
        OUT "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no execute in the request\"}}\n"
        call out_send
9:      pop %r12
        pop %rbx
        ret

/* ---- main --------------------------------------------------------------- */
probe_main:
        lea garbage_word(%rip), %rdi
        call cmdline_has
        mov %al, garbage_mode(%rip)
        lea silent_word(%rip), %rdi
        call cmdline_has
        mov %al, silent_mode(%rip)
        /* The NIC's MAC, if there is a NIC: read, then the device reset. */
        mov $DEV_NET, %edi
        call find_dev
        cmp $-1, %eax
        je 1f
        mov %eax, %edi
        mov $(1 << 5), %esi             /* VIRTIO_NET_F_MAC */
        call virtio_init
        test %eax, %eax
        jz 2f
        FAIL "virtio-net init"
2:      call net_read_mac
        mov v_common(%rip), %rdi
        movb $0, 0x14(%rdi)
        movb $1, have_nic(%rip)
        PRINT "agent: eth0 "
        lea net_mac(%rip), %rsi
        call put_mac
        PRINT "\n"
1:      xor %edi, %edi
        call console_start
        PRINT "agent: ready\n"
        xor %edi, %edi
        jmp console_serve

        .section .rodata
key_execute:    .asciz "\"execute\""
key_id:         .asciz "\"id\""
garbage_word:   .asciz "garbage"
silent_word:    .asciz "silent"
n_sync:         .asciz "guest-sync-delimited"
n_ping:         .asciz "guest-ping"
n_info:         .asciz "guest-info"
n_osinfo:       .asciz "guest-get-osinfo"
n_host_name:    .asciz "guest-get-host-name"
n_interfaces:   .asciz "guest-network-get-interfaces"
n_shutdown:     .asciz "guest-shutdown"
        .balign 8
commands:
        .quad n_sync, cmd_sync
        .quad n_ping, cmd_ping
        .quad n_info, cmd_info
        .quad n_osinfo, cmd_osinfo
        .quad n_host_name, cmd_host_name
        .quad n_interfaces, cmd_interfaces
        .quad n_shutdown, cmd_shutdown
        .quad 0, 0

        .data
garbage_mode:   .byte 0
silent_mode:    .byte 0
have_nic:       .byte 0
        .balign 4
out_len:        .long 0

        .bss
out_buf:        .skip OUT_MAX
