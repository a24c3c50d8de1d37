//! A network namespace for the network tests: created by the test, with a
//! peer at [`PEER_IP`] on a veth pair. For the virtio-net tests
//! ([`NetNs::new`]) it holds a bridge `br0` with the veth's other end on it
//! and the taps the test opens for `kiln-vmm` (as kilnd would); kilnd's
//! network tests ([`NetNs::with_peer`]) run kilnd in it and put the other
//! end on kilnd's bridge. All traffic stays inside it; it is deleted on
//! drop.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::thread::JoinHandle;

/// The peer's address (on `veth1`): the probes send their ARP request for it.
pub const PEER_IP: &str = "10.9.0.1";
/// The address the probes give themselves in their ARP request.
pub const GUEST_IP: &str = "10.9.0.2";

/// `ip -n NS ARGS`: its standard output, or its error output.
pub fn ip_out(ns: &str, args: &[&str]) -> Result<String, String> {
    crate::try_run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// `ip -n NS ARGS`, which must succeed; its standard output.
pub fn ip(ns: &str, args: &[&str]) -> String {
    ip_out(ns, args).unwrap_or_else(|e| panic!("ip -n {ns} {args:?}: {e}"))
}

/// A namespace `kiln-TAG-PID` with `lo` up and the peer [`PEER_IP`]/24 on
/// `veth1`, the other end of veth pair `veth0`. Only the interface holding
/// an address answers ARP for it (else a bridge in the same namespace
/// answers too, with its own MAC). Deleted on drop, also when the test
/// fails.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// The namespace with the peer, `veth0` left for the test to put on a
    /// bridge (kilnd's network tests: kilnd makes the bridge).
    pub fn with_peer(tag: &str) -> NetNs {
        let name = format!("kiln-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        crate::run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ]);
        ns.ip(&["addr", "add", &format!("{PEER_IP}/24"), "dev", "veth1"]);
        ns.ip(&["link", "set", "veth1", "up"]);
        ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"]);
        ns
    }

    /// The namespace with the peer and bridge `br0`, `veth0` on it, and
    /// IPv6 off (no router solicitations on the guest's queues): the
    /// virtio-net tests, which open taps on `br0` with [`NetNs::open_tap`].
    pub fn new(tag: &str) -> NetNs {
        let ns = NetNs::with_peer(tag);
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["link", "set", "br0", "up"]);
        ns.ip(&["link", "set", "veth0", "master", "br0", "up"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <this namespace> ARGS`, which must succeed; its output.
    pub fn ip(&self, args: &[&str]) -> String {
        ip(&self.name, args)
    }

    /// Runs `cmd` inside the namespace (`ip netns exec`); it must succeed.
    /// Its standard output.
    pub fn exec(&self, cmd: &[&str]) -> String {
        crate::run(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(cmd),
        )
    }

    /// `ip -d link show DEV`, or None if there is no such link.
    pub fn link(&self, dev: &str) -> Option<String> {
        ip_out(&self.name, &["-d", "link", "show", "dev", dev]).ok()
    }

    /// The alias (`IFLA_IFALIAS`) of link `dev`, if it exists and has one.
    pub fn alias(&self, dev: &str) -> Option<String> {
        self.link(dev)?
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("alias "))
            .map(|a| a.trim_end().to_owned())
    }

    /// The MAC address of link `dev`.
    pub fn mac_of(&self, dev: &str) -> String {
        let link = self.ip(&["link", "show", dev]);
        link.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC in {link:?}"))
            .to_string()
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
                    // struct ifreq: the name, then the flags (a short).
                    let mut req = [0u8; 40];
                    req[..name.len()].copy_from_slice(name.as_bytes());
                    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
                    if queues > 1 {
                        flags |= libc::IFF_MULTI_QUEUE;
                    }
                    req[16..18].copy_from_slice(&(flags as libc::c_short).to_ne_bytes());
                    // SAFETY: TUNSETIFF reads/writes a 40-byte ifreq, which `req` is.
                    let r =
                        unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
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
        self.mac_of("veth1")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
