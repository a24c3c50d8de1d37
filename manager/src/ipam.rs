//! IPv4 subnets and address picking (IPAM), as pure functions like
//! `placement.rs`: parsing a network's `cidr`, `gateway` and
//! `dns_nameservers`, overlap checks, and choosing a NIC's address. The store calls [`pick`] and [`check_ip`]
//! inside the server-create transaction (`store/networks.rs`), so two
//! creates never get one address.
//!
//! A subnet's pool is its host addresses (network and broadcast excluded)
//! other than the gateway: a /28 has 13.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 subnet with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    net: u32,
    prefix: u8,
}

/// The smallest and largest prefix a network may have: /31 and /32 leave
/// no pool once the gateway is taken.
pub const PREFIX_RANGE: std::ops::RangeInclusive<u8> = 8..=30;

impl Subnet {
    /// The prefix length.
    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// The network address (`10.77.0.0` of `10.77.0.0/24`).
    pub fn addr(self) -> Ipv4Addr {
        Ipv4Addr::from(self.net)
    }

    /// Parses `A.B.C.D/N` (N in [`PREFIX_RANGE`], host bits zero).
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let bad = || format!("cidr {s:?} is not an IPv4 subnet A.B.C.D/N");
        let (a, n) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        if n.is_empty() || n.len() > 2 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = n.parse().map_err(|_| bad())?;
        if !PREFIX_RANGE.contains(&prefix) {
            return Err(format!(
                "cidr {s:?}: the prefix must be /{} to /{}",
                PREFIX_RANGE.start(),
                PREFIX_RANGE.end()
            ));
        }
        let sub = Subnet::of(addr, prefix);
        if sub.net != u32::from(addr) {
            return Err(format!(
                "cidr {s:?} has host bits set (the subnet is {sub})"
            ));
        }
        Ok(sub)
    }

    /// The subnet of prefix `prefix` (0 to 32) that holds `addr`.
    pub fn of(addr: Ipv4Addr, prefix: u8) -> Subnet {
        Subnet {
            net: u32::from(addr) & mask(prefix),
            prefix,
        }
    }

    fn broadcast(self) -> u32 {
        self.net | !mask(self.prefix)
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.net
    }

    /// Whether the two share an address (one then holds the other).
    pub fn overlaps(self, other: Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        self.net & mask(p) == other.net & mask(p)
    }

    /// A host address: in the subnet, neither its network nor broadcast
    /// address.
    pub fn is_host(self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        self.contains(ip) && v != self.net && v != self.broadcast()
    }

    pub fn first_host(self) -> Ipv4Addr {
        Ipv4Addr::from(self.net + 1)
    }

    /// How many addresses the pool has with the gateway taken out.
    pub fn pool_size(self) -> u32 {
        self.broadcast() - self.net - 2
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.net), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// A dotted-quad IPv4 address; `what` names the field in the message.
pub fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{what} {s:?} is not an IPv4 address"))
}

/// A network's subnet as checked at create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetSpec {
    pub cidr: Subnet,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
}

/// Checks a create's `cidr`, `gateway` and `dns_nameservers`. Without a
/// cidr, neither gateway nor nameservers may be given.
pub fn check_subnet(
    cidr: Option<&str>,
    gateway: Option<&str>,
    dns: &[String],
) -> Result<Option<SubnetSpec>, String> {
    let Some(cidr) = cidr else {
        if gateway.is_some() || !dns.is_empty() {
            return Err("gateway and dns_nameservers need a cidr".into());
        }
        return Ok(None);
    };
    let sub = Subnet::parse(cidr)?;
    let gateway = match gateway {
        None => sub.first_host(),
        Some(g) => {
            let g = parse_ip("gateway", g)?;
            if !sub.is_host(g) {
                return Err(format!(
                    "gateway {g} is not a host address of the subnet {sub}"
                ));
            }
            g
        }
    };
    let dns = dns
        .iter()
        .map(|d| parse_ip("dns_nameservers entry", d))
        .collect::<Result<_, _>>()?;
    Ok(Some(SubnetSpec {
        cidr: sub,
        gateway,
        dns,
    }))
}

/// Whether `ip` may be given to a NIC: a host address of `sub`, not its
/// gateway. (Whether another NIC holds it is the store's question.)
pub fn check_ip(sub: Subnet, gateway: Ipv4Addr, ip: Ipv4Addr) -> Result<(), String> {
    if !sub.is_host(ip) {
        return Err(format!("{ip} is not a host address of the subnet {sub}"));
    }
    if ip == gateway {
        return Err(format!("{ip} is the gateway of the subnet {sub}"));
    }
    Ok(())
}

/// The lowest address of the pool not in `used`; None when the pool is
/// exhausted.
pub fn pick(sub: Subnet, gateway: Ipv4Addr, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    (sub.net + 1..sub.broadcast())
        .map(Ipv4Addr::from)
        .find(|ip| *ip != gateway && !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_subnets_and_refuses_malformed_ones() {
        let s = Subnet::parse("10.77.0.0/24").unwrap();
        assert_eq!(s.to_string(), "10.77.0.0/24");
        assert_eq!(s.first_host(), ip("10.77.0.1"));
        assert_eq!(Subnet::parse("10.0.0.16/28").unwrap().pool_size(), 13);
        for (bad, why) in [
            ("10.77.0.0", "not an IPv4 subnet"),
            ("10.77.0/24", "not an IPv4 subnet"),
            ("10.77.0.0/", "not an IPv4 subnet"),
            ("10.77.0.0/+4", "not an IPv4 subnet"),
            ("10.77.0.0/24/1", "not an IPv4 subnet"),
            ("fd00::/64", "not an IPv4 subnet"),
            ("10.77.0.0/31", "prefix must be /8 to /30"),
            ("10.0.0.0/7", "prefix must be /8 to /30"),
            ("10.77.0.1/24", "host bits set (the subnet is 10.77.0.0/24)"),
        ] {
            let e = Subnet::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn overlaps_both_ways() {
        let a = Subnet::parse("10.77.0.0/16").unwrap();
        let b = Subnet::parse("10.77.5.0/24").unwrap();
        let c = Subnet::parse("10.78.0.0/24").unwrap();
        assert!(a.overlaps(b) && b.overlaps(a));
        assert!(!a.overlaps(c) && !c.overlaps(b));
        assert!(Subnet::of(ip("10.77.5.9"), 32).overlaps(b));
    }

    #[test]
    fn gateway_and_dns_are_checked() {
        let s = check_subnet(Some("10.77.0.0/24"), None, &[])
            .unwrap()
            .unwrap();
        assert_eq!(s.gateway, ip("10.77.0.1"));
        let s = check_subnet(
            Some("10.77.0.0/24"),
            Some("10.77.0.254"),
            &["1.1.1.1".into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.gateway, s.dns), (ip("10.77.0.254"), vec![ip("1.1.1.1")]));
        for (gw, why) in [
            ("10.78.0.1", "not a host address"),
            ("10.77.0.0", "not a host address"),
            ("10.77.0.255", "not a host address"),
            ("x", "not an IPv4 address"),
        ] {
            let e = check_subnet(Some("10.77.0.0/24"), Some(gw), &[]).unwrap_err();
            assert!(e.contains(why), "{gw}: {e}");
        }
        assert!(check_subnet(Some("10.77.0.0/24"), None, &["dns".into()]).is_err());
        assert!(check_subnet(None, Some("10.0.0.1"), &[]).is_err());
        assert_eq!(check_subnet(None, None, &[]), Ok(None));
    }

    #[test]
    fn picks_the_lowest_free_address_of_the_pool() {
        let s = Subnet::parse("10.0.0.0/29").unwrap();
        let gw = s.first_host();
        let mut used = HashSet::new();
        let mut got = Vec::new();
        while let Some(a) = pick(s, gw, &used) {
            used.insert(a);
            got.push(a.to_string());
        }
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(got.len() as u32, s.pool_size());
        assert!(check_ip(s, gw, ip("10.0.0.1"))
            .unwrap_err()
            .contains("gateway"));
        assert!(check_ip(s, gw, ip("10.0.0.7")).is_err());
        assert!(check_ip(s, gw, ip("10.0.0.9")).is_err());
        assert!(check_ip(s, gw, ip("10.0.0.6")).is_ok());
    }
}
