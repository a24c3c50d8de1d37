//! The netlink side of networks (rtnetlink on kilnd's tokio runtime):
//! looking links up, creating bridges, deleting links by index (a bridge
//! only through [`super::teardown`]), marking a tap and putting it on a
//! bridge. Each call opens its own short-lived rtnetlink
//! connection, so nothing here holds state across requests.

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LinkError {
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("netlink: {what}: {msg}")]
    Netlink { what: String, msg: String },
}

pub(super) fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |e| LinkError::Netlink {
        what,
        msg: match e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            e => e.to_string(),
        },
    }
}

/// What kilnd needs to know about one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// The `IFLA_INFO_KIND`, e.g. `bridge`, `tun`; empty for a physical NIC.
    pub kind: String,
    /// Index of the bridge it is a port of.
    pub controller: Option<u32>,
    pub up: bool,
    /// The `IFLA_IFALIAS`: on a tap kilnd made, its owner mark (see
    /// [`super::owner`]).
    pub alias: Option<String>,
}

pub(super) fn connect() -> Result<Handle, LinkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The facts kilnd uses of a link message (a dump's or an event's).
pub(super) fn link_of(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        kind: String::new(),
        controller: None,
        up: m.header.flags.contains(LinkFlags::Up),
        alias: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(m) => l.mtu = *m,
            LinkAttribute::Controller(c) => l.controller = Some(*c),
            LinkAttribute::IfAlias(a) if !a.is_empty() => l.alias = Some(a.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = match k {
                            InfoKind::Bridge => "bridge".into(),
                            InfoKind::Tun => "tun".into(),
                            other => format!("{other:?}").to_lowercase(),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// The link named `name`, if there is one.
pub async fn get(name: &str) -> Result<Option<Link>, LinkError> {
    let h = connect()?;
    let mut s = h.link().get().match_name(name.to_owned()).execute();
    match s.try_next().await {
        Ok(m) => Ok(m.map(|m| link_of(&m))),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl(format!("get link {name}"))(e)),
    }
}

/// Every link of kilnd's network namespace.
pub async fn list() -> Result<Vec<Link>, LinkError> {
    let h = connect()?;
    let mut s = h.link().get().execute();
    let mut out = Vec::new();
    while let Some(m) = s.try_next().await.map_err(nl("list links"))? {
        out.push(link_of(&m));
    }
    Ok(out)
}

/// Creates bridge `name` with `mtu`, up. The MTU is set again once the
/// bridge exists: only an MTU set on an existing bridge counts as the
/// user's, which the kernel keeps when ports with other MTUs join. If that
/// fails, the new bridge is deleted again.
pub async fn create_bridge(name: &str, mtu: u32) -> Result<(), LinkError> {
    let h = connect()?;
    h.link()
        .add(LinkBridge::new(name).mtu(mtu).build())
        .execute()
        .await
        .map_err(nl(format!("create bridge {name}")))?;
    let l = get(name).await?.ok_or_else(|| LinkError::Netlink {
        what: format!("create bridge {name}"),
        msg: "gone right after creation".into(),
    })?;
    let set = h
        .link()
        .set(LinkUnspec::new_with_index(l.index).mtu(mtu).build())
        .execute()
        .await
        .map_err(nl(format!("set MTU of bridge {name}")));
    if set.is_err() {
        // Nothing may hold the new bridge yet: take it away again, so a
        // failed network create leaves no bridge behind.
        if let Err(e) = delete_index(l.index, name).await {
            tracing::warn!(bridge = name, error = %e, "cannot remove a half-made bridge");
        }
    }
    set
}

/// Deletes the link with index `index` (not by name: the name may have
/// passed to another link since it was listed); a missing link is not an
/// error.
pub async fn delete_index(index: u32, name: &str) -> Result<(), LinkError> {
    let h = connect()?;
    match h.link().del(index).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
        r => r.map_err(nl(format!("delete link {name} (index {index})"))),
    }
}

/// Sets the alias (`IFLA_IFALIAS`) of link `port` to `alias`, then puts it
/// on bridge `bridge` with `mtu` (the network's) and sets it up: a tap
/// kilnd made carries its mark before it joins a bridge.
pub async fn mark_and_attach(
    port: &str,
    alias: &str,
    bridge: &Link,
    mtu: u32,
) -> Result<(), LinkError> {
    let l = get(port).await?.ok_or_else(|| LinkError::Netlink {
        what: format!("attach {port}"),
        msg: "no such link".into(),
    })?;
    let h = connect()?;
    h.link()
        .set(LinkUnspec::new_with_index(l.index).alias(alias).build())
        .execute()
        .await
        .map_err(nl(format!("set the alias of {port}")))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(l.index)
                .controller(bridge.index)
                .mtu(mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("put {port} on bridge {}", bridge.name)))
}
