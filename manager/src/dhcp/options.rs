//! What a lease carries: a network's DHCP settings ([`NetParams`], made
//! once when its server starts) and the options of one answer
//! ([`options`]), pure functions of them.
//!
//! Always sent (the essentials, asked for or not): message type (53),
//! server identifier (54), and for a lease: lease time (51), renewal (58)
//! and rebinding (59) times, subnet mask (1), router (3) and the MTU (26;
//! Neutron forces it too: a guest on a smaller MTU than it assumes loses
//! large packets silently). Sent when the client's parameter request list
//! (55) names them, as dnsmasq does: DNS servers (6), hostname (12),
//! domain name (15, if configured), broadcast address (28) and classless
//! static routes (121). The order on the wire is by option code (the
//! encoder's); clients take options in any order.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, DhcpOptions, MessageType, OptionCode};
use ipnet::Ipv4Net;
use kiln_api::compute::{Network, NetworkMode};

use crate::config::DhcpConfig;
use crate::ipam::Subnet;
use crate::store::DhcpPort;

/// One network's DHCP answers, but for the port's own address and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetParams {
    pub network_id: String,
    pub network: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    /// Option 54, and where clients unicast renewals: an address the host
    /// holds on the bridge.
    pub server_id: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: u16,
    pub domain: Option<String>,
    pub lease_secs: u32,
    /// Option 121: (destination, router; 0.0.0.0 = on-link).
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

impl NetParams {
    /// `net`'s settings, or None when kilnd serves no DHCP on it (no
    /// subnet, or `dhcp` off). `host_dns` is the host's own nameservers
    /// ([`resolv_nameservers`]), given when the network names none.
    ///
    /// - Server identifier: the gateway where the host is the gateway
    ///   (`nat`, `isolated`). On a `bridged` network the host has no
    ///   address in the subnet, only `metadata_ip`/32 on the bridge:
    ///   that is the identifier, and option 121 makes it on-link, so a
    ///   client's unicast renewal reaches the host by ARP on the bridge (a
    ///   client that ignores 121 sends it to the uplink's router, fails,
    ///   and rebinds by broadcast at T2, which is answered). kilnd's
    ///   unicast answer leaves by the bridge, the one device its socket
    ///   may use: with no route to the subnet there, Linux sends it on
    ///   link from 169.254.169.254. A host with strict reverse-path
    ///   filtering (`rp_filter=1`) drops a renewal from a bridged subnet
    ///   it routes elsewhere; the client then gets a new lease by
    ///   DISCOVER at expiry (loose mode, Debian's default, lets it in).
    /// - DNS: the network's `dns_nameservers`; if none, on `nat` and
    ///   `isolated` networks the host's non-loopback nameservers (libvirt's
    ///   dnsmasq forwards to those; kilnd runs no DNS forwarder, so it
    ///   hands them over directly; an isolated guest cannot reach them,
    ///   as on libvirt's isolated networks without a forwarder); on
    ///   `bridged` ones nothing (the uplink's network has its own).
    /// - Routes (121): 169.254.169.254/32 first, via the gateway where the
    ///   host is the gateway (explicit, so a guest whose default route
    ///   leaves through another NIC still asks this network's host, which
    ///   names the port by the bridge), on-link on `bridged` networks
    ///   (the host holds it on the bridge and answers ARP for it; the
    ///   uplink's router does not carry it); then 0.0.0.0/0 via the
    ///   gateway, since a client that takes 121 ignores option 3.
    pub fn of(
        net: &Network,
        metadata_ip: Ipv4Addr,
        cfg: &DhcpConfig,
        host_dns: &[Ipv4Addr],
    ) -> Option<NetParams> {
        if !net.dhcp {
            return None;
        }
        let subnet = Subnet::parse(net.cidr.as_deref()?).ok()?;
        let gateway: Ipv4Addr = net.gateway.as_deref()?.parse().ok()?;
        let bridged = net.mode == NetworkMode::Bridged;
        let mut dns: Vec<Ipv4Addr> = net
            .dns_nameservers
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect();
        if dns.is_empty() && !bridged {
            dns = host_dns.to_vec();
        }
        let host = Ipv4Net::new(metadata_ip, 32).ok()?;
        let routes = vec![
            (
                host,
                if bridged {
                    Ipv4Addr::UNSPECIFIED
                } else {
                    gateway
                },
            ),
            (Ipv4Net::default(), gateway),
        ];
        Some(NetParams {
            network_id: net.id.clone(),
            network: net.name.clone(),
            bridge: net.bridge.clone(),
            subnet,
            gateway,
            server_id: if bridged { metadata_ip } else { gateway },
            dns,
            mtu: u16::try_from(net.mtu).unwrap_or(u16::MAX),
            domain: cfg.domain.clone(),
            lease_secs: cfg.lease_secs,
            routes,
        })
    }

    fn mask(&self) -> Ipv4Addr {
        Ipv4Net::new(self.gateway, self.subnet.prefix())
            .map(|n| n.netmask())
            .unwrap_or(Ipv4Addr::BROADCAST)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Net::new(self.gateway, self.subnet.prefix())
            .map(|n| n.broadcast())
            .unwrap_or(Ipv4Addr::BROADCAST)
    }
}

/// The options of an answer of type `kind` (Offer, Ack, Nak) to `port`:
/// an INFORM's Ack (`lease` false) carries no lease times; a Nak only the
/// type and the server identifier.
pub fn options(
    p: &NetParams,
    port: &DhcpPort,
    kind: MessageType,
    lease: bool,
    asked: &[OptionCode],
) -> DhcpOptions {
    let mut o = DhcpOptions::new();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(p.server_id));
    if kind == MessageType::Nak {
        return o;
    }
    if lease {
        o.insert(DhcpOption::AddressLeaseTime(p.lease_secs));
        o.insert(DhcpOption::Renewal(p.lease_secs / 2));
        o.insert(DhcpOption::Rebinding(
            (u64::from(p.lease_secs) * 7 / 8) as u32,
        ));
    }
    o.insert(DhcpOption::SubnetMask(p.mask()));
    o.insert(DhcpOption::Router(vec![p.gateway]));
    o.insert(DhcpOption::InterfaceMtu(p.mtu));
    let wants = |c: OptionCode| asked.contains(&c);
    if wants(OptionCode::DomainNameServer) && !p.dns.is_empty() {
        o.insert(DhcpOption::DomainNameServer(p.dns.clone()));
    }
    if wants(OptionCode::Hostname) {
        o.insert(DhcpOption::Hostname(hostname(
            &port.server_name,
            &port.server_id,
        )));
    }
    if let (true, Some(d)) = (wants(OptionCode::DomainName), &p.domain) {
        o.insert(DhcpOption::DomainName(d.clone()));
    }
    if wants(OptionCode::BroadcastAddr) {
        o.insert(DhcpOption::BroadcastAddr(p.broadcast()));
    }
    if wants(OptionCode::ClasslessStaticRoute) {
        o.insert(DhcpOption::ClasslessStaticRoute(p.routes.clone()));
    }
    o
}

pub use crate::util::hostname;

/// The IPv4 nameservers of a resolv.conf, loopback ones (a local stub
/// resolver the guest cannot reach) left out.
pub fn resolv_nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next())?
        })
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback() && !a.is_unspecified())
        .collect()
}
