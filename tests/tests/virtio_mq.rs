//! Multiqueue virtio-net and link changes on real KVM: the `virtio_mq`
//! probe guest drives a NIC whose two queue pairs are the two queues of a
//! multi-queue tap (opened by the test inside a network namespace it
//! creates, bridged to a peer at 10.9.0.1, handed over with `fds=A:B`).
//! The guest switches to 2 pairs with VQ_PAIRS_SET, sends on pair 1 and
//! receives on pair 1 (the test sends UDP flows, which the tap spreads over
//! its queues), then sees the configuration interrupt when the test sets
//! the link down through the control API. `GET /v1/vm` reports each NIC's
//! MAC and link, and a link set down stays down (and a random MAC the same)
//! across an in-place reset.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_tests::netns::{NetNs, GUEST_IP, PEER_IP};
use kiln_tests::{kvm_available, probe, Vm, VmSpec};

const TIMEOUT: Duration = Duration::from_secs(90);
const MAC: &str = "52:54:00:4d:51:01";

/// `PUT path` with a JSON body on the control socket; the status code.
fn put_json(sock: &Path, path: &str, body: &str) -> u16 {
    kiln_tests::api::put_json(sock, path, body).unwrap().0
}

#[test]
fn multiqueue_pair_1_and_link_down_on_kvm() {
    if !kvm_available("multiqueue_pair_1_and_link_down_on_kvm") {
        return;
    }
    let ns = NetNs::new("vmq");
    let tap = ns.open_tap("kq0", 2);
    let spec = VmSpec::new(probe("virtio_mq")).args([
        "--net".into(),
        format!(
            "fds={}:{},mac={MAC}",
            tap[0].as_raw_fd(),
            tap[1].as_raw_fd()
        ),
    ]);
    let mut vm = Vm::start(&spec);
    drop(tap); // the child has its own copies

    // Sent on pair 1: the peer learned the guest from its ARP request.
    vm.wait_serial_line("virtio-net: sent an ARP request on pair 1", TIMEOUT);
    let t0 = Instant::now();
    while !ns.peer_knows(MAC) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the peer never learned {MAC}\n{}",
            vm.describe()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Received on pair 1: UDP flows (distinct ports) from the peer until
    // the guest has a frame on rx1.
    vm.wait_serial_line("virtio-net: waiting on pair 1", TIMEOUT);
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let sender = ns.spawn(move || {
        let mut port = 9000u16;
        while !stop.load(Ordering::Relaxed) && port < 60000 {
            let s = UdpSocket::bind((PEER_IP, 0)).unwrap();
            let _ = s.send_to(b"kiln multiqueue", (GUEST_IP, port));
            port += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    vm.wait_serial_line("virtio-net: received a frame on pair 1", TIMEOUT);
    done.store(true, Ordering::Relaxed);
    sender.join().unwrap();

    // The link: refused requests first, then down.
    vm.wait_serial_line("virtio-net: waiting for a link change", TIMEOUT);
    let sock = vm.api_socket.clone().expect("api socket");
    assert_eq!(put_json(&sock, "/v1/vm/net/1", r#"{"link":"down"}"#), 404);
    assert_eq!(
        put_json(&sock, "/v1/vm/net/0", r#"{"link":"sideways"}"#),
        400
    );
    assert_eq!(put_json(&sock, "/v1/vm/net/0", r#"{"link":"down"}"#), 204);
    let code = vm.wait_exit_code(TIMEOUT);
    assert_eq!(code, 0, "exit code\n{}", vm.describe());
    vm.assert_serial_lines(&[
        &format!("virtio-net: MAC {MAC}, 2 queue pairs"),
        "virtio-net: VQ_PAIRS_SET 3 refused",
        "virtio-net: VQ_PAIRS_SET 2 ok",
        "virtio-net: link down after configuration interrupt 0x42, new generation",
        "virtio: done",
    ]);
    let log = vm.vmm_log();
    assert!(log.contains("2 queue pair(s) in use"), "{log}");
    assert!(log.contains("NIC 0: link down"), "{log}");
}

/// `GET /v1/vm` reports each NIC (index, MAC, link); a link set down stays
/// down across `PUT /v1/vm/reset` (the same process boots the guest
/// again), the other stays up, and a NIC with no configured MAC keeps the
/// random one it got.
#[test]
fn link_down_survives_a_reset() {
    if !kvm_available("link_down_survives_a_reset") {
        return;
    }
    use kiln_api::control::{LinkState, NetInfo};
    let ns = NetNs::new("reset");
    let a = ns.open_tap("kq0", 2);
    let b = ns.open_tap("kq1", 1);
    let spec = VmSpec::new(probe("progress")).args([
        "--net".into(),
        format!("fds={}:{},mac={MAC}", a[0].as_raw_fd(), a[1].as_raw_fd()),
        "--net".into(),
        format!("fds={}", b[0].as_raw_fd()),
    ]);
    let mut vm = Vm::start(&spec);
    // The child has its own copies.
    drop((a, b));
    vm.wait_serial("progress done", TIMEOUT);
    let info = vm.info().unwrap();
    let pid = info.pid;
    assert_eq!(info.nets.len(), 2, "{:?}", info.nets);
    assert_eq!(
        info.nets[0],
        NetInfo {
            index: 0,
            mac: MAC.into(),
            link: LinkState::Up
        }
    );
    let random = info.nets[1].mac.clone();
    assert_eq!(info.nets[1].index, 1);
    assert_eq!(info.nets[1].link, LinkState::Up);
    assert!(
        random.len() == 17
            && random
                .split(':')
                .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok()),
        "{random}"
    );
    assert_ne!(random, MAC);

    let sock = vm.api_socket.clone().expect("api socket");
    assert_eq!(put_json(&sock, "/v1/vm/net/0", r#"{"link":"down"}"#), 204);
    let links = |vm: &Vm| -> Vec<(String, LinkState)> {
        vm.info()
            .unwrap()
            .nets
            .into_iter()
            .map(|n| (n.mac, n.link))
            .collect()
    };
    let expected = vec![
        (MAC.to_string(), LinkState::Down),
        (random.clone(), LinkState::Up),
    ];
    assert_eq!(links(&vm), expected);

    assert_eq!(vm.put("reset").unwrap(), 204);
    let t0 = Instant::now();
    while vm.serial().matches("progress done").count() < 2 {
        assert!(t0.elapsed() < TIMEOUT, "no second boot\n{}", vm.describe());
        assert!(
            vm.try_status().is_none(),
            "VMM exited on reset\n{}",
            vm.describe()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    vm.wait_api(TIMEOUT);
    assert_eq!(vm.info().unwrap().pid, pid, "reset is in place");
    assert_eq!(links(&vm), expected, "after the reset");
    let log = vm.vmm_log();
    assert!(
        log.contains("NIC 0: link kept down across the reset"),
        "{log}"
    );

    // Up again, and a second reset keeps it up.
    assert_eq!(put_json(&sock, "/v1/vm/net/0", r#"{"link":"up"}"#), 204);
    assert_eq!(vm.put("reset").unwrap(), 204);
    let t0 = Instant::now();
    while vm.serial().matches("progress done").count() < 3 {
        assert!(t0.elapsed() < TIMEOUT, "no third boot\n{}", vm.describe());
        std::thread::sleep(Duration::from_millis(50));
    }
    vm.wait_api(TIMEOUT);
    assert_eq!(
        links(&vm),
        vec![(MAC.to_string(), LinkState::Up), (random, LinkState::Up)]
    );
    assert_eq!(vm.put("kill").unwrap(), 204);
}

/// `link=down` in a NIC's configuration (`NetConfig::link`, what kilnd
/// sets for a server NIC whose link was set down): the VMM reports it
/// down from the start and the other up; set up through the control API,
/// a reset keeps it up rather than going back to the configured down.
#[test]
fn a_nic_configured_down_starts_down() {
    if !kvm_available("a_nic_configured_down_starts_down") {
        return;
    }
    use kiln_api::control::LinkState;
    let ns = NetNs::new("cfgdown");
    let a = ns.open_tap("kd0", 1);
    let b = ns.open_tap("kd1", 1);
    let spec = VmSpec::new(probe("progress")).args([
        "--net".into(),
        format!("fd={},mac={MAC},link=down", a[0].as_raw_fd()),
        "--net".into(),
        format!("fd={}", b[0].as_raw_fd()),
    ]);
    let mut vm = Vm::start(&spec);
    drop((a, b));
    vm.wait_serial("progress done", TIMEOUT);
    let links = |vm: &Vm| -> Vec<LinkState> {
        vm.info()
            .unwrap()
            .nets
            .into_iter()
            .map(|n| n.link)
            .collect()
    };
    assert_eq!(links(&vm), [LinkState::Down, LinkState::Up]);
    assert!(vm.vmm_log().contains("virtio-net0: link down"));

    let sock = vm.api_socket.clone().expect("api socket");
    assert_eq!(put_json(&sock, "/v1/vm/net/0", r#"{"link":"up"}"#), 204);
    assert_eq!(links(&vm), [LinkState::Up, LinkState::Up]);
    assert_eq!(vm.put("reset").unwrap(), 204);
    let t0 = Instant::now();
    while vm.serial().matches("progress done").count() < 2 {
        assert!(t0.elapsed() < TIMEOUT, "no second boot\n{}", vm.describe());
        std::thread::sleep(Duration::from_millis(50));
    }
    vm.wait_api(TIMEOUT);
    assert_eq!(
        links(&vm),
        [LinkState::Up, LinkState::Up],
        "after the reset"
    );
    assert!(
        vm.vmm_log()
            .contains("NIC 0: link kept up across the reset"),
        "{}",
        vm.vmm_log()
    );
    assert_eq!(vm.put("kill").unwrap(), 204);
}
