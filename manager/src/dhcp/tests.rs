//! The DHCP server's answers and options, and its parser against hostile
//! bytes, with dhcproto building the requests as a client would.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{
    Decodable, Decoder, DhcpOption, Encodable, Flags, Message, MessageType, Opcode, OptionCode,
};
use kiln_api::compute::{Network, NetworkMode};

use super::options::{hostname, resolv_nameservers, NetParams};
use super::reply::{answer, parse, Dropped, Outcome, Reply};
use crate::config::DhcpConfig;
use crate::store::DhcpPort;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const MD: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn network(mode: NetworkMode, dns: &[&str]) -> Network {
    let j = serde_json::json!({
        "id": "n1", "name": "lan", "bridge": "brlan", "mtu": 1450, "managed": true,
        "created_at": "now", "servers": [], "cidr": "10.61.0.0/24", "gateway": "10.61.0.1",
        "dhcp": true, "dns_nameservers": dns, "mode": mode,
    });
    serde_json::from_value(j).unwrap()
}

fn params(mode: NetworkMode, dns: &[&str]) -> NetParams {
    let cfg = DhcpConfig {
        lease_secs: 3600,
        domain: None,
    };
    NetParams::of(&network(mode, dns), MD, &cfg, &[ip("192.0.2.53")]).unwrap()
}

fn port() -> DhcpPort {
    DhcpPort {
        ip: ip("10.61.0.5"),
        server_id: "0b9e".into(),
        server_name: "Web_1.example".into(),
    }
}

/// A client's message of type `kind` with `opts` besides.
fn request(kind: MessageType, ciaddr: Ipv4Addr, opts: Vec<DhcpOption>) -> Vec<u8> {
    let mut m = Message::new_with_id(
        0x1234_5678,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &MAC,
    );
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m.to_vec().unwrap()
}

fn prl(codes: &[u8]) -> DhcpOption {
    DhcpOption::ParameterRequestList(codes.iter().map(|c| OptionCode::from(*c)).collect())
}

fn reply(p: &NetParams, bytes: &[u8]) -> Reply {
    let req = parse(bytes).unwrap();
    assert_eq!(req.mac, "52:54:00:12:34:56");
    match answer(p, &req, &port()) {
        Outcome::Reply(r) => *r,
        Outcome::Silent(why) => panic!("no answer: {why}"),
    }
}

fn silent(p: &NetParams, bytes: &[u8]) -> &'static str {
    match answer(p, &parse(bytes).unwrap(), &port()) {
        Outcome::Reply(r) => panic!("answered: {r:?}"),
        Outcome::Silent(why) => why,
    }
}

/// What the client decodes from the datagram.
fn on_wire(r: &Reply) -> Message {
    let b = r.bytes();
    assert!(b.len() >= 300, "{} bytes", b.len());
    Message::decode(&mut Decoder::new(&b)).unwrap()
}

fn opt(m: &Message, code: u8) -> Option<&DhcpOption> {
    m.opts().get(OptionCode::from(code))
}

const BCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);

#[test]
fn offer_on_a_nat_network_carries_the_lease_and_what_was_asked() {
    let p = params(NetworkMode::Nat, &[]);
    let r = reply(
        &p,
        &request(
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            vec![prl(&[1, 3, 6, 12, 15, 28, 121])],
        ),
    );
    assert_eq!(r.to, BCAST);
    let m = on_wire(&r);
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!((m.xid(), m.chaddr()), (0x1234_5678, &MAC[..]));
    assert_eq!(m.yiaddr(), ip("10.61.0.5"));
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    let want = [
        (1, DhcpOption::SubnetMask(ip("255.255.255.0"))),
        (3, DhcpOption::Router(vec![ip("10.61.0.1")])),
        // No nameservers on the network: the host's.
        (6, DhcpOption::DomainNameServer(vec![ip("192.0.2.53")])),
        (12, DhcpOption::Hostname("web-1-example".into())),
        (26, DhcpOption::InterfaceMtu(1450)),
        (28, DhcpOption::BroadcastAddr(ip("10.61.0.255"))),
        (51, DhcpOption::AddressLeaseTime(3600)),
        (54, DhcpOption::ServerIdentifier(ip("10.61.0.1"))),
        (58, DhcpOption::Renewal(1800)),
        (59, DhcpOption::Rebinding(3150)),
        (
            121,
            DhcpOption::ClasslessStaticRoute(vec![
                ("169.254.169.254/32".parse().unwrap(), ip("10.61.0.1")),
                ("0.0.0.0/0".parse().unwrap(), ip("10.61.0.1")),
            ]),
        ),
    ];
    for (code, o) in &want {
        assert_eq!(opt(&m, *code), Some(o), "option {code}");
    }
    // 53 and the above; no domain name (none configured).
    assert_eq!(m.opts().len(), want.len() + 1, "{m:?}");
}

#[test]
fn bridged_networks_name_the_metadata_address_and_reach_it_on_link() {
    let p = params(NetworkMode::Bridged, &[]);
    let m = on_wire(&reply(
        &p,
        &request(
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            vec![prl(&[1, 3, 6, 121])],
        ),
    ));
    assert_eq!(opt(&m, 54), Some(&DhcpOption::ServerIdentifier(MD)));
    assert_eq!(
        opt(&m, 121),
        Some(&DhcpOption::ClasslessStaticRoute(vec![
            ("169.254.169.254/32".parse().unwrap(), Ipv4Addr::UNSPECIFIED),
            ("0.0.0.0/0".parse().unwrap(), ip("10.61.0.1")),
        ]))
    );
    // No host nameservers on a provider network; its own if it has some.
    assert_eq!(opt(&m, 6), None);
    let p = params(NetworkMode::Bridged, &["10.61.0.2", "10.61.0.3"]);
    let m = on_wire(&reply(
        &p,
        &request(
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            vec![prl(&[6])],
        ),
    ));
    assert_eq!(
        opt(&m, 6),
        Some(&DhcpOption::DomainNameServer(vec![
            ip("10.61.0.2"),
            ip("10.61.0.3")
        ]))
    );
}

#[test]
fn without_a_request_list_only_the_essentials_and_a_configured_domain() {
    let net = network(NetworkMode::Isolated, &[]);
    let cfg = DhcpConfig {
        lease_secs: 86400,
        domain: Some("lab.example".into()),
    };
    let p = NetParams::of(&net, MD, &cfg, &[]).unwrap();
    let m = on_wire(&reply(
        &p,
        &request(MessageType::Discover, Ipv4Addr::UNSPECIFIED, vec![]),
    ));
    let mut codes: Vec<u8> = m.opts().iter().map(|(c, _)| u8::from(*c)).collect();
    codes.sort_unstable();
    assert_eq!(codes, [1, 3, 26, 51, 53, 54, 58, 59]);
    let m = on_wire(&reply(
        &p,
        &request(
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            vec![prl(&[15])],
        ),
    ));
    assert_eq!(
        opt(&m, 15),
        Some(&DhcpOption::DomainName("lab.example".into()))
    );
    // No subnet, or DHCP off: nothing served.
    let mut off = net.clone();
    off.dhcp = false;
    assert!(NetParams::of(&off, MD, &cfg, &[]).is_none());
    let mut l2 = net;
    l2.cidr = None;
    assert!(NetParams::of(&l2, MD, &cfg, &[]).is_none());
}

#[test]
fn requests_are_acked_or_naked_as_an_authoritative_server() {
    let p = params(NetworkMode::Nat, &[]);
    let none = Ipv4Addr::UNSPECIFIED;
    let sid = |a: &str| DhcpOption::ServerIdentifier(ip(a));
    let want = |a: &str| DhcpOption::RequestedIpAddress(ip(a));
    // SELECTING, our offer: ACK, broadcast.
    let r = reply(
        &p,
        &request(
            MessageType::Request,
            none,
            vec![sid("10.61.0.1"), want("10.61.0.5")],
        ),
    );
    let m = on_wire(&r);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!((m.yiaddr(), r.to), (ip("10.61.0.5"), BCAST));
    assert_eq!(opt(&m, 51), Some(&DhcpOption::AddressLeaseTime(3600)));
    // Our server id and another address, or another server's offer
    // (even of the port's own address): NAK with type and server id only.
    for bytes in [
        request(
            MessageType::Request,
            none,
            vec![sid("10.61.0.9"), want("10.61.0.77")],
        ),
        request(
            MessageType::Request,
            none,
            vec![sid("10.61.0.9"), want("10.61.0.5")],
        ),
        request(
            MessageType::Request,
            none,
            vec![sid("10.61.0.1"), want("10.61.0.6")],
        ),
        // INIT-REBOOT with an address from elsewhere.
        request(MessageType::Request, none, vec![want("192.168.1.9")]),
        // RENEWING with the wrong address.
        request(MessageType::Request, ip("10.61.0.6"), vec![]),
    ] {
        let r = reply(&p, &bytes);
        let m = on_wire(&r);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!((m.yiaddr(), m.ciaddr(), r.to), (none, none, BCAST));
        assert_eq!(m.opts().len(), 2, "{m:?}");
    }
    // INIT-REBOOT with the right address: ACK, broadcast.
    let r = reply(
        &p,
        &request(MessageType::Request, none, vec![want("10.61.0.5")]),
    );
    assert_eq!(on_wire(&r).opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(r.to, BCAST);
    // RENEWING: unicast to ciaddr; with the broadcast flag, broadcast.
    let renew = request(MessageType::Request, ip("10.61.0.5"), vec![]);
    let r = reply(&p, &renew);
    let m = on_wire(&r);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!((m.ciaddr(), m.yiaddr()), (ip("10.61.0.5"), ip("10.61.0.5")));
    assert_eq!(r.to, SocketAddrV4::new(ip("10.61.0.5"), 68));
    let mut flagged = Message::decode(&mut Decoder::new(&renew)).unwrap();
    flagged.set_flags(Flags::default().set_broadcast());
    let r = reply(&p, &flagged.to_vec().unwrap());
    assert_eq!(r.to, BCAST);
    assert!(on_wire(&r).flags().broadcast());
    // Nothing named at all.
    let why = silent(&p, &request(MessageType::Request, none, vec![]));
    assert!(why.contains("names no address"), "{why}");
}

#[test]
fn inform_release_and_decline() {
    let p = params(NetworkMode::Nat, &[]);
    let r = reply(
        &p,
        &request(MessageType::Inform, ip("10.61.0.5"), vec![prl(&[1, 3, 6])]),
    );
    let m = on_wire(&r);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.to, SocketAddrV4::new(ip("10.61.0.5"), 68));
    for code in [51, 58, 59] {
        assert_eq!(
            opt(&m, code),
            None,
            "lease option {code} in an INFORM's ACK"
        );
    }
    assert!(opt(&m, 6).is_some() && opt(&m, 1).is_some());
    for kind in [MessageType::Release, MessageType::Decline] {
        silent(&p, &request(kind, ip("10.61.0.5"), vec![]));
    }
}

#[test]
fn parse_drops_what_is_not_a_plain_ethernet_request() {
    let good = request(MessageType::Discover, Ipv4Addr::UNSPECIFIED, vec![]);
    assert!(parse(&good).is_ok());
    let with = |at: usize, v: &[u8]| {
        let mut b = good.clone();
        b[at..at + v.len()].copy_from_slice(v);
        parse(&b).unwrap_err()
    };
    assert_eq!(with(0, &[2]), Dropped::NotARequest);
    assert_eq!(with(1, &[6]), Dropped::NotEthernet);
    // hlen beyond chaddr's 16 bytes (dhcproto's chaddr() would panic).
    for hlen in [0, 5, 16, 17, 255] {
        assert_eq!(with(2, &[hlen]), Dropped::NotEthernet);
    }
    assert_eq!(with(24, &[10, 0, 0, 1]), Dropped::Relayed(ip("10.0.0.1")));
    let offer = request(MessageType::Offer, Ipv4Addr::UNSPECIFIED, vec![]);
    assert_eq!(
        parse(&offer).unwrap_err(),
        Dropped::Unsupported(MessageType::Offer)
    );
    // The magic cookie and nothing after: no message type.
    assert_eq!(parse(&good[..240]).unwrap_err(), Dropped::NoMessageType);
    assert_eq!(parse(&good[..239]).unwrap_err(), Dropped::Malformed);
    assert_eq!(parse(&[]).unwrap_err(), Dropped::Malformed);
}

/// A small xorshift generator: the same bytes on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Whatever arrives, the parser and the answer neither panic nor loop:
/// random datagrams, every truncation of a full request, and requests
/// whose bytes (option lengths among them) are randomly rewritten.
#[test]
fn hostile_datagrams_never_panic() {
    let p = params(NetworkMode::Bridged, &[]);
    let try_one = |b: &[u8]| {
        if let Ok(req) = parse(b) {
            if let Outcome::Reply(r) = answer(&p, &req, &port()) {
                let _ = r.bytes();
            }
        }
    };
    let full = request(
        MessageType::Request,
        Ipv4Addr::UNSPECIFIED,
        vec![
            prl(&[1, 3, 6, 12, 15, 26, 28, 121, 255]),
            DhcpOption::RequestedIpAddress(ip("10.61.0.5")),
            DhcpOption::ServerIdentifier(MD),
            DhcpOption::ClasslessStaticRoute(vec![(
                "10.0.0.0/8".parse().unwrap(),
                ip("10.61.0.1"),
            )]),
            DhcpOption::Hostname("guest".into()),
            DhcpOption::ClientIdentifier(vec![1, 2, 3]),
        ],
    );
    for n in 0..=full.len() {
        try_one(&full[..n]);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let mut b = full.clone();
        for _ in 0..1 + rng.below(8) {
            let at = 236 + rng.below(b.len() - 236);
            b[at] = rng.next() as u8;
        }
        let cut = 236 + rng.below(b.len() - 235);
        try_one(&b[..cut]);
    }
    for _ in 0..20_000 {
        let n = rng.below(700);
        let mut b: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        // Often a plausible header, so the options parser is reached.
        if n > 240 && rng.below(2) == 0 {
            b[..240].copy_from_slice(&full[..240]);
        }
        try_one(&b);
    }
}

#[test]
fn hostnames_as_nova_derives_them() {
    for (name, want) in [
        ("Web_1.example", "web-1-example"),
        ("  my server ", "my-server"),
        ("-é-", "server-0b9e"),
        ("db:01!", "db01"),
    ] {
        assert_eq!(hostname(name, "0b9e"), want, "{name}");
    }
    assert_eq!(hostname(&"a".repeat(70), "x").len(), 63);
    assert_eq!(hostname("", &"f".repeat(80)).len(), 63);
}

#[test]
fn host_nameservers_leave_out_loopback() {
    let t = "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.1\n\
             nameserver ::1\nnameserver 2001:db8::1\nsearch x\nnameserver   198.51.100.7 \n";
    assert_eq!(resolv_nameservers(t), [ip("192.0.2.1"), ip("198.51.100.7")]);
}
