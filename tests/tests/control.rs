//! The VMM's control API and console on real KVM: pause and resume stop and
//! restart a running guest, the ACPI power button reaches it, reset keeps
//! the process (same pid) and boots again, a signal ends it cleanly, bad
//! requests get 4xx, and a client on the console socket talks to the guest.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use kiln_api::control::VmState;
use kiln_tests::api::request;
use kiln_tests::{kvm_available, probe, Vm, VmSpec};

const SHORT: Duration = Duration::from_secs(20);
const EXIT_KILLED: i32 = 13;

fn codes(vm: &Vm) -> Vec<u8> {
    vm.info()
        .expect("GET /v1/vm")
        .boot_progress
        .iter()
        .map(|p| p.code)
        .collect()
}

#[test]
fn power_button_reaches_the_guest() {
    if !kvm_available("power_button_reaches_the_guest") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("powerbutton")));
    vm.wait_serial("powerbutton: waiting", SHORT);
    assert_eq!(vm.put("power-button").expect("power-button"), 204);
    assert_eq!(vm.wait_exit_code(SHORT), 0, "{}", vm.describe());
    assert!(
        vm.serial().contains("powerbutton: pressed"),
        "{}",
        vm.describe()
    );
    assert!(
        vm.vmm_log().contains("ACPI power button pressed"),
        "{}",
        vm.describe()
    );
}

#[test]
fn pause_stops_the_guest_and_resume_restarts_it() {
    if !kvm_available("pause_stops_the_guest_and_resume_restarts_it") {
        return;
    }
    // The echo probe polls its UART: input typed while the VM is paused is
    // answered only after resume.
    let mut spec = VmSpec::new(probe("echo"));
    let sock = std::env::temp_dir().join(format!("kiln-pause-test-{}.sock", std::process::id()));
    spec.extra_args = vec!["--console-socket".into(), sock.display().to_string()];
    let mut vm = Vm::start(&spec);
    vm.wait_serial("echo: ready", SHORT);
    let mut client = UnixStream::connect(&sock).expect("connect console");
    assert_eq!(vm.put("pause").unwrap(), 204);
    assert_eq!(vm.info().unwrap().state, VmState::Paused);
    assert_eq!(vm.put("pause").unwrap(), 409, "pausing twice is a conflict");
    assert_eq!(
        vm.put("power-button").unwrap(),
        409,
        "no button while paused"
    );
    client.write_all(b"abc").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !vm.serial().contains("ABC"),
        "a paused guest answered\n{}",
        vm.describe()
    );
    assert_eq!(vm.put("resume").unwrap(), 204);
    assert_eq!(
        vm.put("resume").unwrap(),
        409,
        "resuming a running VM is a conflict"
    );
    vm.wait_serial("ABC", SHORT);
    assert_eq!(vm.info().unwrap().state, VmState::Running);
    assert_eq!(vm.put("kill").unwrap(), 204);
    assert_eq!(vm.wait_exit_code(SHORT), EXIT_KILLED);
}

#[test]
fn console_socket_carries_input_and_output() {
    if !kvm_available("console_socket_carries_input_and_output") {
        return;
    }
    let mut spec = VmSpec::new(probe("echo"));
    let sock = std::env::temp_dir().join(format!("kiln-console-test-{}.sock", std::process::id()));
    spec.extra_args = vec!["--console-socket".into(), sock.display().to_string()];
    let mut vm = Vm::start(&spec);
    vm.wait_serial("echo: ready", SHORT);
    let mut client = UnixStream::connect(&sock).expect("connect console");
    client.write_all(b"hello kiln\n").unwrap();
    assert_eq!(vm.wait_exit_code(SHORT), 0, "{}", vm.describe());
    // What the client read: the guest's answer, after it connected.
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut seen = Vec::new();
    let _ = client.read_to_end(&mut seen);
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("HELLO KILN"), "client saw {seen:?}");
    assert!(seen.contains("echo: done"), "client saw {seen:?}");
    assert!(
        vm.serial().contains("HELLO KILN\necho: done"),
        "{}",
        vm.describe()
    );
    assert!(!sock.exists(), "the console socket is removed on exit");
}

#[test]
fn reset_restarts_in_place_and_sigterm_ends_cleanly() {
    if !kvm_available("reset_restarts_in_place_and_sigterm_ends_cleanly") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("progress")));
    vm.wait_serial("progress done", SHORT);
    let first = codes(&vm);
    assert!(!first.is_empty());
    let pid = vm.info().unwrap().pid;
    assert_eq!(vm.put("reset").unwrap(), 204);
    // The same process boots the guest again: the serial log shows the
    // probe's start twice and the API answers with the same pid.
    let deadline = Instant::now() + SHORT;
    while vm.serial().matches("progress done").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no second boot\n{}",
            vm.describe()
        );
        assert!(
            vm.try_status().is_none(),
            "VMM exited on reset\n{}",
            vm.describe()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    vm.wait_api(SHORT);
    let info = vm.info().unwrap();
    assert_eq!(info.pid, pid);
    assert_eq!(info.state, VmState::Running);
    assert_eq!(codes(&vm), first, "boot progress starts over");

    let sock = vm.api_socket.clone().unwrap();
    // SAFETY: sending SIGTERM to our own child process.
    assert_eq!(unsafe { libc::kill(vm.pid() as i32, libc::SIGTERM) }, 0);
    assert_eq!(vm.wait_exit_code(SHORT), EXIT_KILLED, "{}", vm.describe());
    assert!(!sock.exists(), "the API socket is removed on exit");
}

#[test]
fn bad_requests_get_4xx_and_change_nothing() {
    if !kvm_available("bad_requests_get_4xx_and_change_nothing") {
        return;
    }
    let mut vm = Vm::start(&VmSpec::new(probe("echo")));
    vm.wait_serial("echo: ready", SHORT);
    let sock = vm.api_socket.clone().unwrap();
    for (method, path, status) in [
        ("GET", "/v1/nothing", 404),
        ("DELETE", "/v1/vm", 405),
        ("GET", "/v1/vm/pause", 405),
        ("PUT", "/v1/vm/resume", 409),
    ] {
        let (got, body) = request(&sock, method, path).expect("request");
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body.contains("\"error\""), "{method} {path}: {body}");
    }
    // Garbage instead of HTTP.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"\x00\x01 not http\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(vm.info().unwrap().state, VmState::Running);
    assert!(vm.try_status().is_none());
}

#[test]
fn exit_file_records_how_the_vm_ended() {
    if !kvm_available("exit_file_records_how_the_vm_ended") {
        return;
    }
    for (probe_name, code, kind) in [("hello", 0, "power_off"), ("crash", 11, "triple_fault")] {
        let mut spec = VmSpec::new(probe(probe_name));
        let file = std::env::temp_dir().join(format!(
            "kiln-exit-{}-{probe_name}.json",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&file);
        spec.extra_args = vec!["--exit-file".into(), file.display().to_string()];
        let mut vm = Vm::start(&spec);
        assert_eq!(vm.wait_exit_code(SHORT), code, "{}", vm.describe());
        let text = std::fs::read_to_string(&file).expect("exit file written");
        let record: kiln_api::control::ExitRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(record.code, code, "{text}");
        assert!(text.contains(kind), "{text}");
        std::fs::remove_file(&file).unwrap();
    }
}
