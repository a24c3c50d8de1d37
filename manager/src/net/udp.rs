//! UDP sockets that see one interface only: kilnd's DHCP server binds
//! 0.0.0.0:67 once per bridge, each socket tied to its bridge with
//! `SO_BINDTODEVICE`, so a request is answered by the socket (the network)
//! of the bridge it arrived on, and a broadcast reply leaves through that
//! bridge alone.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking UDP socket on 0.0.0.0:`port`, bound to device `dev`,
/// with `SO_REUSEADDR` (sockets of other bridges share the port) and
/// `SO_BROADCAST` (replies to 255.255.255.255).
pub fn bind_on_device(dev: &str, port: u16) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(dev.as_bytes()))?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}
