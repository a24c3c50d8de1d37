//! A network namespace for the virtio-net tests: created by the test,
//! holding a bridge `br0`, a peer at [`PEER_IP`] on a veth pair whose other
//! end is on the bridge, and the taps the test opens for `kiln-vmm` (as
//! kilnd would). All traffic stays inside it; it is deleted on drop.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::thread::JoinHandle;

/// The peer's address (on `veth1`): the probes send their ARP request for it.
pub const PEER_IP: &str = "10.9.0.1";
/// The address the probes give themselves in their ARP request.
pub const GUEST_IP: &str = "10.9.0.2";

/// `ip -n NS ARGS`, which must succeed; its standard output.
fn ip(ns: &str, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace `kiln-TAG-PID` with `lo` up, bridge `br0`, and the peer
/// [`PEER_IP`]/24 on `veth1` (its other end `veth0` on the bridge). Only
/// the interface holding an address answers ARP for it (else the bridge,
/// in the same namespace, answers too, with its own MAC), and IPv6 is off
/// (no router solicitations on the guest's queues). Deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("kiln-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip netns add {name}");
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["link", "set", "br0", "up"]);
        ns.ip(&[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ]);
        ns.ip(&["link", "set", "veth0", "master", "br0", "up"]);
        ns.ip(&["addr", "add", &format!("{PEER_IP}/24"), "dev", "veth1"]);
        ns.ip(&["link", "set", "veth1", "up"]);
        for sysctl in [
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv6.conf.all.disable_ipv6=1",
        ] {
            let st = Command::new("ip")
                .args(["netns", "exec", &ns.name, "sysctl", "-qw", sysctl])
                .status()
                .expect("run ip netns exec sysctl");
            assert!(st.success(), "sysctl {sysctl}");
        }
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <this namespace> ARGS`, which must succeed; its output.
    pub fn ip(&self, args: &[&str]) -> String {
        ip(&self.name, args)
    }

    /// Start `f` on a thread inside the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let nsf = fs::File::open(&path).unwrap();
            // SAFETY: setns on a valid netns fd; it affects only this thread.
            let r = unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Run `f` on a thread inside the namespace and return its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().unwrap()
    }

    /// Open tap `name` inside the namespace with `queues` queues
    /// (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, and IFF_MULTI_QUEUE for more
    /// than one), as kilnd does for a VM, and put it on the bridge. The fds
    /// are inheritable (no CLOEXEC): kiln-vmm gets them with `--net fd=N`
    /// or `fds=A:B`; drop them once it has started.
    pub fn open_tap(&self, name: &'static str, queues: usize) -> Vec<OwnedFd> {
        assert!(name.len() < 16, "interface names have at most 15 bytes");
        let fds = self.run(move || {
            (0..queues)
                .map(|_| {
                    // SAFETY: a NUL-terminated path; the result is checked.
                    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR) };
                    assert!(fd >= 0, "open /dev/net/tun");
                    // SAFETY: `fd` was just opened and is owned by nothing else.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    let mut req = [0u8; 40];
                    req[..name.len()].copy_from_slice(name.as_bytes());
                    let mut flags: i16 = 0x0002 | 0x1000 | 0x4000;
                    if queues > 1 {
                        flags |= 0x0100;
                    }
                    req[16..18].copy_from_slice(&flags.to_ne_bytes());
                    // SAFETY: TUNSETIFF reads/writes a 40-byte ifreq, which `req` is.
                    let r = unsafe { libc::ioctl(fd.as_raw_fd(), 0x4004_54ca, req.as_mut_ptr()) };
                    assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
                    fd
                })
                .collect::<Vec<_>>()
        });
        self.ip(&["link", "set", name, "master", "br0", "up"]);
        fds
    }

    /// Whether the peer's neighbour table has [`GUEST_IP`] at `mac` (it
    /// learns it from the guest's ARP request).
    pub fn peer_knows(&self, mac: &str) -> bool {
        self.ip(&["neigh", "show", GUEST_IP]).contains(mac)
    }

    /// The peer's MAC address (`veth1`).
    pub fn peer_mac(&self) -> String {
        let link = self.ip(&["link", "show", "veth1"]);
        link.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC in {link:?}"))
            .to_string()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
