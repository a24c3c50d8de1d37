//! The benchmark's network: a namespace of its own (`ip netns add`,
//! deleted on drop) holding a bridge with the tap and one end of a veth
//! pair as ports, and raw `AF_PACKET` sockets on the peer end.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

use kiln_vmm::net::tap::Tap;

/// Our frames' EtherType (IEEE local experimental).
pub const ETHERTYPE: u16 = 0x88b5;
pub const TAP: &str = "kvtap0";
pub const BRIDGE: &str = "kvbr0";
pub const VETH: &str = "kvv0";
pub const PEER: &str = "kvv1";

pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The benchmark's network namespace; deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn create() -> Result<Netns, String> {
        let name = format!("kiln-vnb-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        Ok(Netns(name))
    }
}

/// Move the calling thread into namespace `name` (threads it spawns, and
/// sockets and taps it creates, then live there too).
pub fn enter_netns(name: &str) -> Result<(), String> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns on an fd we own; it changes only this thread's
    // network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// Bridge, veth pair and tap, all up; returns the tap.
pub fn build_topology(n: &str) -> Result<Tap, String> {
    let st = Command::new("ip")
        .args(["netns", "exec", n, "sysctl", "-qw"])
        .args([
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])
        .status()
        .map_err(|e| format!("sysctl: {e}"))?;
    if !st.success() {
        return Err("disabling IPv6 in the namespace failed".to_string());
    }
    // Bridge netfilter (where br_netfilter is loaded) is not part of the
    // path being measured; off in this namespace, if it is there at all.
    let _ = Command::new("ip")
        .args(["netns", "exec", n, "sysctl", "-qew"])
        .args([
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ])
        .stderr(std::process::Stdio::null())
        .status();
    let tap = Tap::open_named(TAP, false).map_err(|e| format!("tap {TAP}: {e}"))?;
    for args in [
        &["link", "set", "lo", "up"][..],
        &[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ],
        &["link", "add", VETH, "type", "veth", "peer", "name", PEER],
        &["link", "set", VETH, "master", BRIDGE],
        &["link", "set", TAP, "master", BRIDGE],
        &["link", "set", PEER, "address", "02:00:00:00:00:99"],
        &["link", "set", TAP, "txqueuelen", "10000"],
        &["link", "set", BRIDGE, "up"],
        &["link", "set", VETH, "up"],
        &["link", "set", PEER, "up"],
        &["link", "set", TAP, "up"],
    ] {
        let mut full = vec!["-n", n];
        full.extend_from_slice(args);
        ip(&full)?;
    }
    Ok(tap)
}

/// A raw packet socket bound to `ifname` for our EtherType.
pub fn packet_socket(ifname: &str) -> Result<OwnedFd, String> {
    let proto = ETHERTYPE.to_be();
    // SAFETY: plain socket call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        return Err(format!("AF_PACKET: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let cname = std::ffi::CString::new(ifname).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(format!("no interface {ifname}"));
    }
    // SAFETY: an all-zero sockaddr_ll is valid; fields are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    // SAFETY: binds our socket to a sockaddr_ll of the right size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        return Err(format!(
            "bind to {ifname}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let big: libc::c_int = 64 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: setsockopt with an int option value.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&big as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    // SAFETY: setsockopt with a timeval.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    Ok(fd)
}
