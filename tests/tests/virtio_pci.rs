//! virtio over PCI on real KVM: the `virtio_pci` probe guest enumerates
//! PCI, negotiates, sets up queues and MSI-X, and drives each device;
//! these tests give it a raw disk, a qcow2 disk, the entropy device, and a
//! NIC on a tap bridged (inside a network namespace the test creates) to a
//! peer at 10.9.0.1, then check what the host sees.

use std::fs;
use std::os::fd::RawFd;
use std::process::Command;
use std::time::Duration;

use kiln_tests::{kvm_available, probe, ScratchDir, Vm, VmSpec};

const TIMEOUT: Duration = Duration::from_secs(60);

fn run_probe(args: Vec<String>) -> Vm {
    let mut spec = VmSpec::new(probe("virtio_pci"));
    spec.extra_args = args;
    let mut vm = Vm::start(&spec);
    let code = vm.wait_exit_code(TIMEOUT);
    assert_eq!(code, 0, "exit code\n{}", vm.describe());
    let out = vm.serial();
    assert!(!out.contains("FAIL"), "{}", vm.describe());
    assert!(out.contains("virtio: done"), "{}", vm.describe());
    vm
}

/// Byte i of the probe's pattern on sector 1.
fn pattern() -> Vec<u8> {
    (0..512u32).map(|i| (i * 7 + 3) as u8).collect()
}

fn assert_blk_lines(vm: &Vm, serial: &str) {
    let out = vm.serial();
    for line in [
        "virtio-blk: BAR 0 moved to 0xfebf8000",
        "virtio-blk: capacity 4096 sectors",
        "virtio-blk: wrote sector 1",
        "virtio-blk: MSI-X vector 0x40 pending in the LAPIC",
        "virtio-blk: read back and verified 512 bytes",
        "virtio-blk: MSI-X vector 0x41 pending after reprogramming",
        "virtio-blk: NEEDS_RESET after a bad available index",
        "virtio-blk: reset done",
    ] {
        assert!(out.contains(line), "missing {line:?}\n{}", vm.describe());
    }
    assert!(
        out.contains(&format!("virtio-blk: serial {serial}\n")),
        "{}",
        vm.describe()
    );
    // The BAR move reached the VMM, and the guest's notifications (all
    // after the move) went through KVM ioeventfds, never a vCPU exit; the
    // hostile index was logged.
    let log = vm.vmm_log();
    assert!(log.contains("BAR 0 now at 0xfebf8000"), "{log}");
    assert!(!log.contains("notified through a vCPU exit"), "{log}");
    assert!(log.contains("needs a reset"), "{log}");
}

#[test]
fn virtio_blk_on_a_raw_file() {
    if !kvm_available("virtio_blk_on_a_raw_file") {
        return;
    }
    let dir = ScratchDir::new("vblk").unwrap();
    let img = dir.path().join("disk.raw");
    fs::File::create(&img).unwrap().set_len(2 << 20).unwrap();
    let vm = run_probe(vec![
        "--disk".into(),
        format!("path={},format=raw,serial=kiln-raw-disk", img.display()),
    ]);
    assert_blk_lines(&vm, "kiln-raw-disk");
    let data = fs::read(&img).unwrap();
    assert_eq!(&data[512..1024], &pattern()[..], "sector 1 on the host");
    assert!(data[..512].iter().all(|&b| b == 0), "sector 0 untouched");
    assert!(data[1024..].iter().all(|&b| b == 0), "the rest untouched");
}

#[test]
fn virtio_blk_on_a_qcow2_image() {
    if !kvm_available("virtio_blk_on_a_qcow2_image") {
        return;
    }
    let dir = ScratchDir::new("vqcow").unwrap();
    let img = dir.path().join("disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("2M")
        .status()
        .expect("run qemu-img (scripts/setup.sh installs it)");
    assert!(st.success());
    let vm = run_probe(vec![
        "--disk".into(),
        format!("path={},format=qcow2,serial=kiln-qcow2", img.display()),
    ]);
    assert_blk_lines(&vm, "kiln-qcow2");
    // QEMU's own tools agree: the image is consistent and holds the data.
    let check = Command::new("qemu-img")
        .arg("check")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let raw = dir.path().join("out.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&img)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    let data = fs::read(&raw).unwrap();
    assert_eq!(&data[512..1024], &pattern()[..]);
}

#[test]
fn virtio_blk_read_only_disk_is_not_written() {
    if !kvm_available("virtio_blk_read_only_disk_is_not_written") {
        return;
    }
    let dir = ScratchDir::new("vro").unwrap();
    let img = dir.path().join("disk.raw");
    fs::File::create(&img).unwrap().set_len(2 << 20).unwrap();
    let mut spec = VmSpec::new(probe("virtio_pci"));
    spec.extra_args = vec![
        "--disk".into(),
        format!("path={},readonly=on", img.display()),
    ];
    let mut vm = Vm::start(&spec);
    assert_eq!(vm.wait_exit_code(TIMEOUT), 0, "{}", vm.describe());
    assert!(
        vm.serial().contains("virtio: FAIL virtio-blk write status"),
        "the write must fail\n{}",
        vm.describe()
    );
    assert!(fs::read(&img).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn virtio_rng_gives_entropy() {
    if !kvm_available("virtio_rng_gives_entropy") {
        return;
    }
    let vm = run_probe(vec!["--rng".into()]);
    let out = vm.serial();
    let line = out
        .lines()
        .find(|l| l.starts_with("virtio-rng: 64 bytes, first 8: "))
        .unwrap_or_else(|| panic!("{}", vm.describe()));
    let hex = line.rsplit(' ').next().unwrap();
    assert_eq!(hex.len(), 16);
    assert_ne!(hex, "0000000000000000");
    assert!(!out.contains("virtio-blk"), "no disk was given");
}

/// A network namespace with a bridge, a peer at 10.9.0.1 on a veth whose
/// other end is on the bridge, and a tap `kt0` on the bridge. Removed on
/// drop.
struct NetNs {
    name: String,
}

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

impl NetNs {
    fn new() -> NetNs {
        let name = format!("kiln-vnet-{}", std::process::id());
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
        // Only the interface holding 10.9.0.1 answers ARP for it (else the
        // bridge, in the same namespace, answers too, with its own MAC).
        let st = Command::new("ip")
            .args([
                "netns",
                "exec",
                n,
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.arp_ignore=1",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "sysctl arp_ignore");
        ns
    }

    /// Open tap `kt0` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) inside the
    /// namespace, as kilnd does for a VM, and put it on the bridge. The fd
    /// is inheritable (no CLOEXEC): kiln-vmm gets it with `--net fd=N`.
    fn open_tap(&self) -> RawFd {
        let path = format!("/var/run/netns/{}", self.name);
        let fd = std::thread::spawn(move || {
            let nsf = fs::File::open(&path).unwrap();
            // SAFETY: setns on a valid netns fd; affects only this thread.
            let r =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&nsf), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            // SAFETY: a NUL-terminated path; the result is checked.
            let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR) };
            assert!(fd >= 0, "open /dev/net/tun");
            let mut req = [0u8; 40];
            req[..3].copy_from_slice(b"kt0");
            let flags: i16 = 0x0002 | 0x1000 | 0x4000;
            req[16..18].copy_from_slice(&flags.to_ne_bytes());
            // SAFETY: TUNSETIFF reads/writes a 40-byte ifreq, which `req` is.
            let r = unsafe { libc::ioctl(fd, 0x4004_54ca, req.as_mut_ptr()) };
            assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
            fd
        })
        .join()
        .unwrap();
        ip(&self.name, &["link", "set", "kt0", "master", "br0", "up"]);
        fd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn virtio_net_talks_to_a_peer_through_a_bridged_tap() {
    if !kvm_available("virtio_net_talks_to_a_peer_through_a_bridged_tap") {
        return;
    }
    let ns = NetNs::new();
    let fd = ns.open_tap();
    let mac = "52:54:00:4b:69:6c";
    let vm = run_probe(vec!["--net".into(), format!("fd={fd},mac={mac}")]);
    // SAFETY: `fd` is ours (the child has its own copy).
    unsafe { libc::close(fd) };
    let out = vm.serial();
    assert!(
        out.contains(&format!("virtio-net: MAC {mac}, link up")),
        "{}",
        vm.describe()
    );
    assert!(
        out.contains("virtio-net: ARP reply from 10.9.0.1 at "),
        "{}",
        vm.describe()
    );
    // The peer learned the guest from its request.
    let neigh = Command::new("ip")
        .args(["-n", &ns.name, "neigh", "show", "10.9.0.2"])
        .output()
        .unwrap();
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    assert!(neigh.contains(mac), "peer's neighbour table: {neigh:?}");
    // And the MAC the guest saw in the reply is the peer's.
    let link = Command::new("ip")
        .args(["-n", &ns.name, "link", "show", "veth1"])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    let peer_mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .to_string();
    assert!(
        out.contains(&format!("ARP reply from 10.9.0.1 at {peer_mac}")),
        "peer {peer_mac} ({link})\n{}",
        vm.describe()
    );
}

/// With `direct=on` the probe's 512-byte write goes through kiln-block's
/// O_DIRECT path (a bounce buffer where the file wants 4 KiB alignment,
/// then a lone write, which is a plain `pwrite`).
#[test]
fn virtio_blk_on_a_raw_file_with_o_direct() {
    if !kvm_available("virtio_blk_on_a_raw_file_with_o_direct") {
        return;
    }
    let dir = ScratchDir::new("vblkd").unwrap();
    let img = dir.path().join("disk.raw");
    fs::File::create(&img).unwrap().set_len(2 << 20).unwrap();
    let vm = run_probe(vec![
        "--disk".into(),
        format!(
            "path={},format=raw,direct=on,serial=kiln-direct",
            img.display()
        ),
    ]);
    assert_blk_lines(&vm, "kiln-direct");
    let data = fs::read(&img).unwrap();
    assert_eq!(&data[512..1024], &pattern()[..], "sector 1 on the host");
    assert!(data[..512].iter().all(|&b| b == 0), "sector 0 untouched");
    assert!(data[1024..].iter().all(|&b| b == 0), "the rest untouched");
}
