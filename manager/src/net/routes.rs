//! The host's IPv4 routes, read through rtnetlink: a network's subnet must
//! not overlap one of them (`crate::ipam`).

use std::net::Ipv4Addr;

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
use rtnetlink::RouteMessageBuilder;

use super::link::{connect, nl, LinkError};

/// One route of the main table: destination, prefix length, and its
/// output device's index if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub oif: Option<u32>,
}

/// The unicast IPv4 routes of the main table, the default route(s)
/// (prefix 0) left out: they overlap every subnet.
pub async fn host_routes() -> Result<Vec<Route>, LinkError> {
    let h = connect()?;
    let mut s = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut out = Vec::new();
    while let Some(m) = s.try_next().await.map_err(nl("list IPv4 routes"))? {
        let mut table = u32::from(m.header.table);
        let (mut dst, mut oif) = (Ipv4Addr::UNSPECIFIED, None);
        for a in &m.attributes {
            match a {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        let prefix = m.header.destination_prefix_length;
        if table == u32::from(RouteHeader::RT_TABLE_MAIN)
            && m.header.kind == RouteType::Unicast
            && prefix > 0
        {
            out.push(Route { dst, prefix, oif });
        }
    }
    Ok(out)
}
