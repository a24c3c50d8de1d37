//! The guest agent channel on real KVM: the `virtio_console` probe guest
//! drives kiln-vmm's virtio-console as the Linux driver does (MULTIPORT,
//! DEVICE_READY, PORT_ADD, PORT_NAME `org.qemu.guest_agent.0`, PORT_OPEN)
//! and echoes on the agent port, while the test is the host side on the
//! `--agent` socket, as kilnd's qemu-ga client is: the exact bytes both
//! ways, and the host side's PORT_OPEN on each connect and disconnect. A
//! guest that never reads makes kiln-vmm stop reading the socket, and the
//! VMM still answers its control API. The socket comes back after a reset
//! in place. Bad `--agent` paths fail before KVM.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_tests::{kvm_available, probe, ScratchDir, Vm, VmSpec};

const TIMEOUT: Duration = Duration::from_secs(60);

fn connect(path: &Path) -> UnixStream {
    let c = UnixStream::connect(path).expect("connect to the agent socket");
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c
}

fn read_exact(c: &mut UnixStream, n: usize, vm: &Vm) -> Vec<u8> {
    let mut b = vec![0u8; n];
    if let Err(e) = c.read_exact(&mut b) {
        panic!(
            "reading {n} bytes from the agent socket: {e}\n{}",
            vm.describe()
        );
    }
    b
}

/// Wait until the serial output holds `needle` `n` times (whole lines).
fn wait_count(vm: &mut Vm, needle: &str, n: usize) {
    let t0 = Instant::now();
    loop {
        let out = vm.serial();
        if out.matches(&format!("{needle}\n")).count() >= n {
            return;
        }
        assert!(
            t0.elapsed() < TIMEOUT && vm.try_status().is_none(),
            "{needle:?} not seen {n} times\n{}",
            vm.describe()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn probe_guest_echoes_on_the_agent_port() {
    if !kvm_available("probe_guest_echoes_on_the_agent_port") {
        return;
    }
    let dir = ScratchDir::new("agent").expect("scratch dir");
    let sock = dir.path().join("qga.sock");
    // A stale socket file from an earlier run is replaced.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let spec = VmSpec::new(probe("virtio_console")).args(["--agent", sock.to_str().unwrap()]);
    let mut vm = Vm::start(&spec);
    vm.wait_serial_line("virtio-console: opened port 1", TIMEOUT);
    assert!(
        !vm.serial().contains("host side open"),
        "no client yet: the host side is closed\n{}",
        vm.describe()
    );

    let mut c = connect(&sock);
    wait_count(&mut vm, "virtio-console: host side open", 1);
    c.write_all(b"{\"execute\":\"guest-ping\"}\n").unwrap();
    assert_eq!(read_exact(&mut c, 15, &vm), b"{\"return\": {}}\n");
    c.write_all(b"hello agent\n").unwrap();
    assert_eq!(read_exact(&mut c, 12, &vm), b"hello agent\n");
    drop(c);
    wait_count(&mut vm, "virtio-console: host side closed", 1);

    // A new client: the host side opens again, the session works.
    let mut c = connect(&sock);
    wait_count(&mut vm, "virtio-console: host side open", 2);
    c.write_all(b"quit\n").unwrap();
    assert_eq!(read_exact(&mut c, 4, &vm), b"bye\n");
    assert_eq!(vm.wait_exit_code(TIMEOUT), 0, "{}", vm.describe());
    vm.assert_serial_lines(&[
        "virtio-console: port 0 added",
        "virtio-console: port 1 added",
        "virtio-console: port 0 is a console",
        "virtio-console: port 1 name org.qemu.guest_agent.0",
        "virtio-console: got {\"execute\":\"guest-ping\"}",
        "virtio-console: got hello agent",
        "virtio-console: got quit",
        "virtio: done",
    ]);
    assert!(!sock.exists(), "the agent socket is removed at exit");
}

#[test]
fn a_guest_that_never_reads_stalls_only_the_socket() {
    if !kvm_available("a_guest_that_never_reads_stalls_only_the_socket") {
        return;
    }
    let dir = ScratchDir::new("agent-stall").expect("scratch dir");
    let sock = dir.path().join("qga.sock");
    let spec = VmSpec::new(probe("virtio_console"))
        .cmdline("stall")
        .args(["--agent", sock.to_str().unwrap()]);
    let mut vm = Vm::start(&spec);
    vm.wait_serial_line("virtio-console: opened port 1", TIMEOUT);
    let mut c = connect(&sock);
    wait_count(&mut vm, "virtio-console: host side open", 1);
    // Write until the socket stays full.
    c.set_nonblocking(true).unwrap();
    let chunk = [b'x'; 4096];
    let (mut sent, mut stalls) = (0usize, 0);
    while stalls < 50 {
        match c.write(&chunk) {
            Ok(n) => {
                sent += n;
                stalls = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                stalls += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}\n{}", vm.describe()),
        }
        assert!(
            sent < 4 << 20,
            "kiln-vmm keeps reading for a guest that does not\n{}",
            vm.describe()
        );
    }
    eprintln!("a guest that never reads: the socket took {sent} bytes");
    // The VMM answers, the guest runs on, and a second client waits.
    let t0 = Instant::now();
    let info = vm.info().expect("GET /v1/vm while the agent port is full");
    eprintln!("GET /v1/vm answered in {:?}", t0.elapsed());
    let agent = info.config.agent.expect("the agent in the VM's config");
    assert_eq!(Path::new(&agent.socket), sock);
    let mut second = connect(&sock);
    second
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(second.read(&mut b).is_err(), "the second client waits");
    assert!(vm.try_status().is_none(), "{}", vm.describe());
    assert!(!vm.serial().contains("FAIL"), "{}", vm.describe());
}

/// `PUT /v1/vm/reset` restarts kiln-vmm in place: the client of the old
/// device sees the socket close, the new one listens on the same path, and
/// the guest's new driver hears the host side open when a client connects.
#[test]
fn the_agent_socket_survives_a_reset_in_place() {
    if !kvm_available("the_agent_socket_survives_a_reset_in_place") {
        return;
    }
    let dir = ScratchDir::new("agent-reset").expect("scratch dir");
    let sock = dir.path().join("qga.sock");
    let spec = VmSpec::new(probe("virtio_console")).args(["--agent", sock.to_str().unwrap()]);
    let mut vm = Vm::start(&spec);
    vm.wait_serial_line("virtio-console: opened port 1", TIMEOUT);
    let mut c = connect(&sock);
    wait_count(&mut vm, "virtio-console: host side open", 1);
    assert_eq!(vm.put("reset").unwrap(), 204);
    let mut b = [0u8; 1];
    assert_eq!(c.read(&mut b).unwrap_or(0), 0, "the old client sees EOF");
    wait_count(&mut vm, "virtio-console: opened port 1", 2);
    vm.wait_api(TIMEOUT);
    let mut c = connect(&sock);
    wait_count(&mut vm, "virtio-console: host side open", 2);
    c.write_all(b"{\"execute\":\"guest-ping\"}\n").unwrap();
    assert_eq!(read_exact(&mut c, 15, &vm), b"{\"return\": {}}\n");
    c.write_all(b"quit\n").unwrap();
    assert_eq!(read_exact(&mut c, 4, &vm), b"bye\n");
    assert_eq!(vm.wait_exit_code(TIMEOUT), 0, "{}", vm.describe());
}

#[test]
fn bad_agent_sockets_fail_before_kvm() {
    let dir = ScratchDir::new("agent-bad").expect("scratch dir");
    let kernel = probe("hello");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(kiln_tests::kiln_vmm())
            .args(["--kernel", kernel.to_str().unwrap(), "--memory", "32M"])
            .args(extra)
            .output()
            .expect("run kiln-vmm");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.code().expect("an exit, not a signal"), stderr)
    };
    let file = dir.path().join("not-a-socket");
    fs::write(&file, b"keep me").unwrap();
    let file_s = file.to_str().unwrap();
    let no_dir = dir.path().join("no/such/dir/qga.sock");
    let api = dir.path().join("api.sock");
    let api = api.to_str().unwrap();
    for (args, want) in [
        (&["--agent", ""][..], "agent: socket is empty"),
        (
            &["--agent", api, "--api-socket", api][..],
            "also the api_socket",
        ),
        (
            &["--agent", no_dir.to_str().unwrap()][..],
            "cannot listen on the agent socket",
        ),
        (
            &["--agent", file_s][..],
            "cannot listen on the agent socket",
        ),
    ] {
        let (code, err) = run(args);
        assert_ne!(code, 0, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("KVM"), "{args:?}: fails before KVM: {err}");
    }
    assert_eq!(
        fs::read(&file).unwrap(),
        b"keep me",
        "a file is never replaced"
    );
}
