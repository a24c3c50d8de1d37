//! One request, one answer: [`parse`] takes a datagram to a [`Request`]
//! (or says why it is dropped), [`answer`] decides what to send to the
//! port the store named, pure functions of their arguments.
//!
//! - DISCOVER → OFFER of the port's address.
//! - REQUEST naming this server (option 54), or none (INIT-REBOOT,
//!   RENEWING, REBINDING) → ACK if the address asked for (option 50, else
//!   `ciaddr`) is the port's, else NAK. A REQUEST naming another server
//!   (a port taking some other server's offer) → NAK too: kilnd is
//!   authoritative for its ports, whose one right address only it knows,
//!   so it sends the client back to DISCOVER, as dnsmasq does with
//!   `--dhcp-authoritative` ("wrong server-ID"). RFC 2131 §4.3.2 has a
//!   non-authoritative server stay silent there.
//! - INFORM → ACK without `yiaddr` or lease times, to `ciaddr`.
//! - RELEASE, DECLINE: nothing to do (every address is fixed); logged.
//! - Anything else (a BOOTREPLY, other message types, a hardware address
//!   that is not Ethernet's 6 bytes) is dropped, and so is a relayed
//!   request (`giaddr` set): kilnd serves the bridge's own link only, and
//!   a relay would ask for a subnet it does not know.
//!
//! Where to: a NAK, or an answer to a client without an address (or that
//! asks for broadcast), goes to 255.255.255.255:68 out of the bridge;
//! renewals and INFORMs go to `ciaddr`:68.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{
    Decodable, Decoder, DhcpOption, Encodable, HType, Message, MessageType, Opcode, OptionCode,
};

use super::options::{options, NetParams};
use crate::store::DhcpPort;

pub const CLIENT_PORT: u16 = 68;

/// The smallest reply sent: BOOTP's 300 bytes (padded after END), which
/// some clients and relays still expect.
const MIN_REPLY: usize = 300;

/// A request worth a store lookup.
#[derive(Debug)]
pub struct Request {
    pub msg: Message,
    pub kind: MessageType,
    /// The client's hardware address as the store keeps MACs.
    pub mac: String,
}

/// Why a datagram gets no answer before any lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    Malformed,
    NotARequest,
    NotEthernet,
    Relayed(Ipv4Addr),
    NoMessageType,
    Unsupported(MessageType),
}

/// Parses a datagram sent to port 67. Never panics on any input (a panic
/// inside the decoder counts as malformed).
pub fn parse(bytes: &[u8]) -> Result<Request, Dropped> {
    let msg = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)))
        .map_err(|_| Dropped::Malformed)?
        .map_err(|_| Dropped::Malformed)?;
    if msg.opcode() != Opcode::BootRequest {
        return Err(Dropped::NotARequest);
    }
    // `hlen` first: `chaddr()` slices by it.
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err(Dropped::NotEthernet);
    }
    if !msg.giaddr().is_unspecified() {
        return Err(Dropped::Relayed(msg.giaddr()));
    }
    let kind = msg.opts().msg_type().ok_or(Dropped::NoMessageType)?;
    use MessageType as T;
    if !matches!(
        kind,
        T::Discover | T::Request | T::Inform | T::Release | T::Decline
    ) {
        return Err(Dropped::Unsupported(kind));
    }
    let mac = msg
        .chaddr()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(Request { msg, kind, mac })
}

/// What to do with a request from a known port.
#[derive(Debug)]
pub enum Outcome {
    Reply(Box<Reply>),
    /// No answer, and why (for the log).
    Silent(&'static str),
}

#[derive(Debug)]
pub struct Reply {
    pub msg: Message,
    pub to: SocketAddrV4,
}

impl Reply {
    /// The datagram: the encoded message, padded to [`MIN_REPLY`].
    pub fn bytes(&self) -> Vec<u8> {
        let mut b = self.msg.to_vec().unwrap_or_default();
        if b.len() < MIN_REPLY {
            b.resize(MIN_REPLY, 0);
        }
        b
    }
}

/// The answer to `req` from `port` (the NIC with the request's MAC on
/// this network).
pub fn answer(p: &NetParams, req: &Request, port: &DhcpPort) -> Outcome {
    let m = &req.msg;
    let opt_ip = |code| match m.opts().get(code) {
        Some(DhcpOption::RequestedIpAddress(a)) | Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
        _ => None,
    };
    let (kind, yiaddr, lease) = match req.kind {
        MessageType::Discover => (MessageType::Offer, port.ip, true),
        MessageType::Request => {
            let other_server =
                opt_ip(OptionCode::ServerIdentifier).is_some_and(|s| s != p.server_id);
            let wanted = opt_ip(OptionCode::RequestedIpAddress)
                .or((!m.ciaddr().is_unspecified()).then_some(m.ciaddr()));
            match wanted {
                _ if other_server => (MessageType::Nak, Ipv4Addr::UNSPECIFIED, false),
                Some(ip) if ip == port.ip => (MessageType::Ack, port.ip, true),
                Some(_) => (MessageType::Nak, Ipv4Addr::UNSPECIFIED, false),
                None => return Outcome::Silent("a REQUEST that names no address"),
            }
        }
        MessageType::Inform => (MessageType::Ack, Ipv4Addr::UNSPECIFIED, false),
        MessageType::Release => return Outcome::Silent("RELEASE (addresses are fixed)"),
        MessageType::Decline => {
            return Outcome::Silent("DECLINE: the guest found its address in use")
        }
        _ => return Outcome::Silent("unsupported message type"),
    };
    let asked: &[OptionCode] = match m.opts().get(OptionCode::ParameterRequestList) {
        Some(DhcpOption::ParameterRequestList(l)) => l,
        _ => &[],
    };
    let nak = kind == MessageType::Nak;
    let ciaddr = if nak {
        Ipv4Addr::UNSPECIFIED
    } else {
        m.ciaddr()
    };
    let mut msg = Message::new_with_id(
        m.xid(),
        ciaddr,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        m.chaddr(),
    );
    msg.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(m.flags())
        .set_opts(options(p, port, kind, lease, asked));
    let to = if nak || ciaddr.is_unspecified() || m.flags().broadcast() {
        Ipv4Addr::BROADCAST
    } else {
        ciaddr
    };
    Outcome::Reply(Box::new(Reply {
        msg,
        to: SocketAddrV4::new(to, CLIENT_PORT),
    }))
}
