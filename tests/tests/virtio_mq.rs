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

use std::fs;
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_tests::{kvm_available, probe, Vm, VmSpec};

const TIMEOUT: Duration = Duration::from_secs(90);
const MAC: &str = "52:54:00:4d:51:01";

fn ip(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with a bridge, the peer 10.9.0.1 on a veth, and the
/// two-queue tap `kq0` on the bridge. Removed on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    /// `tag` tells apart the namespaces of tests running at once.
    fn new(tag: &str) -> NetNs {
        let name = format!("kiln-vmq-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add");
        let ns = NetNs { name };
        let n = ns.name.as_str();
        ip(n, &["link", "set", "lo", "up"]);
        ip(n, &["link", "add", "br0", "type", "bridge"]);
        ip(n, &["link", "set", "br0", "up"]);
        ip(
            n,
            &[
                "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            ],
        );
        ip(n, &["link", "set", "veth0", "master", "br0", "up"]);
        ip(n, &["addr", "add", "10.9.0.1/24", "dev", "veth1"]);
        ip(n, &["link", "set", "veth1", "up"]);
        for sysctl in [
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv6.conf.all.disable_ipv6=1",
        ] {
            let st = Command::new("ip")
                .args(["netns", "exec", n, "sysctl", "-qw", sysctl])
                .status()
                .unwrap();
            assert!(st.success(), "sysctl {sysctl}");
        }
        ns
    }

    /// Run `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let nsf = fs::File::open(&path).unwrap();
            // SAFETY: setns on a valid netns fd; affects only this thread.
            let r =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&nsf), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }

    /// Open the two queues of tap `kq0` (IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR | IFF_MULTI_QUEUE), inheritable, as kilnd would.
    fn open_mq_tap(&self) -> Vec<RawFd> {
        self.open_tap("kq0", 2)
    }

    /// Open `queues` queues of multi-queue tap `name` (up to 15 bytes),
    /// on the bridge.
    fn open_tap(&self, name: &'static str, queues: usize) -> Vec<RawFd> {
        let fds = self.run(move || {
            (0..queues)
                .map(|_| {
                    // SAFETY: a NUL-terminated path; the result is checked.
                    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR) };
                    assert!(fd >= 0, "open /dev/net/tun");
                    let mut req = [0u8; 40];
                    req[..name.len()].copy_from_slice(name.as_bytes());
                    let flags: i16 = 0x0002 | 0x1000 | 0x4000 | 0x0100;
                    req[16..18].copy_from_slice(&flags.to_ne_bytes());
                    // SAFETY: TUNSETIFF reads/writes a 40-byte ifreq.
                    let r = unsafe { libc::ioctl(fd, 0x4004_54ca, req.as_mut_ptr()) };
                    assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
                    fd
                })
                .collect::<Vec<_>>()
        });
        ip(&self.name, &["link", "set", name, "master", "br0", "up"]);
        fds
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `PUT path` with a JSON body on the control socket; the status code.
fn put_json(sock: &Path, path: &str, body: &str) -> u16 {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    kiln_tests::api::parse_answer(&answer).unwrap().0
}

#[test]
fn multiqueue_pair_1_and_link_down_on_kvm() {
    if !kvm_available("multiqueue_pair_1_and_link_down_on_kvm") {
        return;
    }
    let ns = NetNs::new("mq");
    let fds = ns.open_mq_tap();
    let mut spec = VmSpec::new(probe("virtio_mq"));
    spec.extra_args = vec![
        "--net".into(),
        format!("fds={}:{},mac={MAC}", fds[0], fds[1]),
    ];
    let mut vm = Vm::start(&spec);
    for fd in &fds {
        // SAFETY: the fds are ours (the child has its own copies).
        unsafe { libc::close(*fd) };
    }

    // Sent on pair 1: the peer learned the guest from its ARP request.
    vm.wait_serial_line("virtio-net: sent an ARP request on pair 1", TIMEOUT);
    let t0 = Instant::now();
    loop {
        let neigh = Command::new("ip")
            .args(["-n", &ns.name, "neigh", "show", "10.9.0.2"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&neigh.stdout).contains(MAC) {
            break;
        }
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
    let path = format!("/var/run/netns/{}", ns.name);
    let sender = std::thread::spawn(move || {
        let nsf = fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid netns fd; affects only this thread.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&nsf), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let mut port = 9000u16;
        while !stop.load(Ordering::Relaxed) && port < 60000 {
            let s = UdpSocket::bind(("10.9.0.1", 0)).unwrap();
            let _ = s.send_to(b"kiln multiqueue", ("10.9.0.2", port));
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
    let out = vm.serial();
    assert_eq!(code, 0, "exit code\n{}", vm.describe());
    assert!(!out.contains("FAIL"), "{}", vm.describe());
    for line in [
        &format!("virtio-net: MAC {MAC}, 2 queue pairs")[..],
        "virtio-net: VQ_PAIRS_SET 3 refused",
        "virtio-net: VQ_PAIRS_SET 2 ok",
        "virtio-net: link down after configuration interrupt 0x42, new generation",
        "virtio: done",
    ] {
        assert!(out.contains(line), "missing {line:?}\n{}", vm.describe());
    }
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
    let a = ns.open_mq_tap();
    let b = ns.open_tap("kq1", 1);
    let mut spec = VmSpec::new(probe("progress"));
    spec.extra_args = vec![
        "--net".into(),
        format!("fds={}:{},mac={MAC}", a[0], a[1]),
        "--net".into(),
        format!("fds={}", b[0]),
    ];
    let mut vm = Vm::start(&spec);
    for fd in a.iter().chain(&b) {
        // SAFETY: the fds are ours (the child has its own copies).
        unsafe { libc::close(*fd) };
    }
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
