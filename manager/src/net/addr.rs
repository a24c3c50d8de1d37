//! IPv4 addresses on kilnd's bridges (rtnetlink): the host side of a
//! network with a subnet. [`ensure`] makes a bridge carry exactly the
//! addresses asked for, so a changed gateway or a crash between two steps
//! converges at the next call; [`set_up`] brings a bridge up.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::LinkUnspec;

use super::link::{connect, nl, LinkError};

/// One IPv4 address with its prefix length, as on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfAddr {
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

/// The IPv4 addresses on link `index`, with their netlink messages (for
/// deleting them).
async fn list(index: u32) -> Result<Vec<(IfAddr, AddressMessage)>, LinkError> {
    let h = connect()?;
    let mut s = h.address().get().set_link_index_filter(index).execute();
    let mut out = Vec::new();
    while let Some(m) = s.try_next().await.map_err(nl("list addresses"))? {
        // The dump filter is applied by rtnetlink, not the kernel: check.
        if m.header.index != index {
            continue;
        }
        let ip = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = ip {
            out.push((
                IfAddr {
                    ip,
                    prefix: m.header.prefix_len,
                },
                m,
            ));
        }
    }
    Ok(out)
}

/// The IPv4 addresses on link `index`.
pub async fn addresses(index: u32) -> Result<Vec<IfAddr>, LinkError> {
    Ok(list(index).await?.into_iter().map(|(a, _)| a).collect())
}

/// Makes link `index` (named `name` in errors) carry exactly the IPv4
/// addresses `want`: adds the missing ones and removes any other.
pub async fn ensure(index: u32, name: &str, want: &[IfAddr]) -> Result<(), LinkError> {
    let have = list(index).await?;
    let h = connect()?;
    for (a, m) in &have {
        if !want.contains(a) {
            h.address()
                .del(m.clone())
                .execute()
                .await
                .map_err(nl(format!("remove {}/{} from {name}", a.ip, a.prefix)))?;
        }
    }
    for a in want {
        if !have.iter().any(|(h, _)| h == a) {
            h.address()
                .add(index, IpAddr::V4(a.ip), a.prefix)
                .execute()
                .await
                .map_err(nl(format!("add {}/{} to {name}", a.ip, a.prefix)))?;
        }
    }
    Ok(())
}

/// Removes the addresses `gone` from link `index` (named `name` in
/// errors); ones it does not carry are not an error.
pub async fn remove(index: u32, name: &str, gone: &[IfAddr]) -> Result<(), LinkError> {
    let h = connect()?;
    for (a, m) in list(index).await? {
        if gone.contains(&a) {
            h.address()
                .del(m)
                .execute()
                .await
                .map_err(nl(format!("remove {}/{} from {name}", a.ip, a.prefix)))?;
        }
    }
    Ok(())
}

/// Sets link `index` (named `name` in errors) up.
pub async fn set_up(index: u32, name: &str) -> Result<(), LinkError> {
    connect()?
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {name} up")))
}
