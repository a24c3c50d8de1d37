//! The kernel's neighbour (ARP) table, read through rtnetlink: which MAC
//! an IPv4 address on a link resolved to. The metadata service names a
//! guest by the MAC its request came from: a TCP connection's SYN-ACK
//! went out only once the kernel had resolved the source address on the
//! bridge, so the entry is there when the connection is accepted.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::AddressFamily;

use super::link::{connect, nl, LinkError};

/// The MAC (`aa:bb:cc:dd:ee:ff`, lower case) `ip` resolves to on link
/// `index`, if the kernel holds a usable entry for it (not failed nor
/// still being resolved).
pub async fn mac_of(index: u32, ip: Ipv4Addr) -> Result<Option<String>, LinkError> {
    let h = connect()?;
    let mut s = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute();
    while let Some(m) = s.try_next().await.map_err(nl("list neighbours"))? {
        if m.header.ifindex != index {
            continue;
        }
        if matches!(
            m.header.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
        ) {
            continue;
        }
        let mut dst = None;
        let mut lladdr = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => dst = Some(*d),
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => lladdr = Some(l),
                _ => {}
            }
        }
        if dst.map(IpAddr::V4) == Some(IpAddr::V4(ip)) {
            return Ok(lladdr.map(|l| {
                l.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }));
        }
    }
    Ok(None)
}
