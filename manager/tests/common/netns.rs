//! A network namespace a test creates, with a peer on a veth pair to put
//! on a bridge: where the network tests run kilnd, its bridges and taps.

#![allow(dead_code)]

use std::process::Command;

/// A network namespace with `lo` up and a peer: veth `veth1` holding
/// 10.9.0.1/24, whose other end `veth0` the test puts on a bridge. Deleted
/// on drop, also when the test fails.
pub struct NetNs {
    pub name: String,
}

/// `ip -n NS ARGS`: its output, or its error.
pub fn ip_out(ns: &str, args: &[&str]) -> Result<String, String> {
    super::try_run(Command::new("ip").arg("-n").arg(ns).args(args))
}

pub fn ip(ns: &str, args: &[&str]) -> String {
    ip_out(ns, args).unwrap_or_else(|e| panic!("ip -n {ns} {args:?}: {e}"))
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("kiln-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        super::run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        for args in [
            &["link", "set", "lo", "up"][..],
            &[
                "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            ],
            &["addr", "add", "10.9.0.1/24", "dev", "veth1"],
            &["link", "set", "veth1", "up"],
        ] {
            ip(&ns.name, args);
        }
        // Only the interface holding 10.9.0.1 answers ARP for it.
        ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"]);
        ns
    }

    /// Runs `cmd` inside the namespace (`ip netns exec`); it must succeed.
    pub fn exec(&self, cmd: &[&str]) -> String {
        super::run(
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

    pub fn mac_of(&self, dev: &str) -> String {
        let l = self.link(dev).unwrap();
        l.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap()
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
