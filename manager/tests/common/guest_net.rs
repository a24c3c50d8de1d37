//! Guests played by network namespaces, for kilnd's network tests: a bare
//! namespace ([`Ns`]), UDP senders and listeners, TCP reachability, and
//! raw Ethernet frames (ARP) from a packet socket, each run on a thread
//! inside the namespace.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_tests::netns::ip;

/// A bare namespace `kiln-TAG-PID` (IPv6 off: no router solicitations to
/// count), deleted on drop.
pub struct Ns(pub String);

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = format!("kiln-{tag}-{}", std::process::id());
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        let ns = Ns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        for k in ["all", "default"] {
            let key = format!("net.ipv6.conf.{k}.disable_ipv6=1");
            kiln_tests::run(
                std::process::Command::new("ip")
                    .args(["netns", "exec", &ns.0, "sysctl", "-qw"])
                    .arg(key),
            );
        }
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        ip(&self.0, args)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let nsf = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid netns fd; it affects only this thread.
        let r = unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// A UDP listener on `addr` inside `ns` for `secs`: the (source, payload)
/// of each datagram, answered with an echo when `echo`.
pub fn listen(ns: &str, addr: &str, echo: bool) -> JoinHandle<Vec<(SocketAddr, String)>> {
    let addr: SocketAddr = addr.parse().unwrap();
    let (tx, rx) = mpsc::channel();
    let h = in_ns(ns, move || {
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tx.send(()).unwrap();
        let (mut got, end) = (Vec::new(), Instant::now() + Duration::from_millis(1500));
        let mut buf = [0u8; 1500];
        while Instant::now() < end {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                if echo {
                    let _ = s.send_to(&buf[..n], from);
                }
                got.push((from, String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        }
        got
    });
    rx.recv().unwrap();
    h
}

/// Sends `msg` from `from` (an address to bind, port 0 for any) to `to`
/// inside `ns`, three times; the echo if one came back within a second.
pub fn send(ns: &str, from: &str, to: &str, msg: &str) -> Option<String> {
    let (from, to): (SocketAddr, SocketAddr) = (from.parse().unwrap(), to.parse().unwrap());
    let msg = msg.to_owned();
    in_ns(ns, move || {
        let s = UdpSocket::bind(from).unwrap();
        s.set_broadcast(true).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 1500];
        let mut echo = None;
        for _ in 0..3 {
            let _ = s.send_to(msg.as_bytes(), to);
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                echo = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        echo
    })
    .join()
    .unwrap()
}

/// A TCP connection attempt to `to` from inside `ns`: "answered" (it
/// connected, or was refused) or "silent" (no answer in a second).
pub fn tcp_to(ns: &str, to: &str) -> &'static str {
    let to: SocketAddr = to.parse().unwrap();
    in_ns(ns, move || {
        match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            Ok(_) => "answered",
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "answered",
            Err(_) => "silent",
        }
    })
    .join()
    .unwrap()
}

/// Sends one raw Ethernet `frame` out of `dev` inside `ns` (a packet
/// socket): what no IP stack would send.
pub fn send_raw(ns: &str, dev: &'static str, frame: Vec<u8>) {
    in_ns(ns, move || {
        let ifname = std::ffi::CString::new(dev).unwrap();
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        assert!(index > 0, "no {dev}");
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto.into()) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = proto;
        to.sll_ifindex = index as i32;
        // SAFETY: `frame` and `to` are valid for the lengths given; `fd`
        // is ours and closed right after.
        let n = unsafe {
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::from_ref(&to).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            libc::close(fd);
            n
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    })
    .join()
    .unwrap();
}

/// An ARP request for `tpa` from Ethernet source `src`, naming `sha` and
/// `spa` as its sender.
pub fn arp_request(src: &str, sha: &str, spa: &str, tpa: &str) -> Vec<u8> {
    let mac = |m: &str| -> Vec<u8> {
        m.split(':')
            .map(|x| u8::from_str_radix(x, 16).unwrap())
            .collect()
    };
    let ip4 = |a: &str| a.parse::<std::net::Ipv4Addr>().unwrap().octets().to_vec();
    let mut f = vec![0xff; 6];
    f.extend(mac(src));
    f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend(mac(sha));
    f.extend(ip4(spa));
    f.extend([0; 6]);
    f.extend(ip4(tpa));
    f.resize(60, 0);
    f
}
