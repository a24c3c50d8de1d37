//! Deleting a managed network's bridge without cutting anyone else off.
//!
//! Deleting a bridge takes every port off it: another kilnd's taps (a
//! kilnd whose network names this bridge, which existed when it made its
//! network, so it does not manage it), a veth or uplink an admin added.
//! Their links survive but their frames go nowhere: another kilnd's VMMs
//! keep running cut off. So before deleting the bridge of a managed
//! network, [`delete_bridge`] lists its ports (links whose controller is
//! the bridge, one rtnetlink dump) and deletes the bridge (by index) only
//! when every port is one of this kilnd's own taps ([`super::owner`]);
//! otherwise it deletes nothing and answers the ports it would have cut
//! off. Callers keep the network then (the delete is refused with 409, or
//! an interrupted delete is rolled back at start), so the bridge stays
//! accounted for: the network that made it still names it, and deleting
//! that network once the ports are gone deletes the bridge.
//!
//! The race: the kernel has no "delete this bridge if it has no ports", so
//! a port that joins between the dump and `RTM_DELLINK` (one netlink round
//! trip) is taken off with the bridge. The link itself is not deleted
//! (another kilnd's tap stays with its VMM, a veth stays), it just is on no
//! bridge. kilnd listens to link events from before the dump, so such a
//! port is named in a warning in its log, not lost silently; nothing puts
//! it back. A kilnd putting a tap on the bridge after it is deleted gets an
//! error (no such controller) and a server fault.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{AsyncSocket, SocketAddr};

use super::link::{self, Link, LinkError};
use super::owner::{owner_of, Owner};

/// The netlink multicast group mask of link events (`RTMGRP_LINK`).
const RTMGRP_LINK: u32 = 1;

/// How long [`delete_bridge`] waits for its delete's own event (it is
/// already queued when the delete is answered, so this is only a bound).
const EVENT_WAIT: Duration = Duration::from_secs(2);

/// What [`delete_bridge`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Teardown {
    /// The bridge had only this kilnd's taps on it (or none) and is gone.
    /// `late`: ports kilnd did not make that joined it between the check
    /// and the delete, and so were taken off it (the race; logged).
    Deleted { late: Vec<Port> },
    /// No bridge of that name: nothing to delete (a link of that name that
    /// is not a bridge is not kilnd's, and is left alone).
    Absent,
    /// Ports that are not this kilnd's: nothing was deleted.
    Kept(Vec<Port>),
}

/// A port of a bridge that is not one of this kilnd's taps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub kind: String,
    pub owner: Owner,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.owner {
            Owner::OtherKilnd(m) => write!(
                f,
                "{} (a tap of another kilnd: instance {}, server {})",
                self.name, m.instance, m.server
            ),
            _ => write!(
                f,
                "{} ({}, no kiln mark)",
                self.name,
                if self.kind.is_empty() {
                    "a device"
                } else {
                    &self.kind
                }
            ),
        }
    }
}

/// The ports of bridge `bridge` (in `links`, one dump) that kilnd
/// instance `instance` did not make.
pub fn foreign_ports(links: &[Link], bridge: &Link, instance: &str) -> Vec<Port> {
    links
        .iter()
        .filter(|l| l.controller == Some(bridge.index) && l.index != bridge.index)
        .filter_map(|l| match owner_of(l, instance) {
            Owner::Ours(_) => None,
            owner => Some(Port {
                name: l.name.clone(),
                kind: l.kind.clone(),
                owner,
            }),
        })
        .collect()
}

/// The ports of bridge `name` that kilnd instance `instance` did not make
/// (none if there is no bridge of that name): a check before a network
/// delete starts, so a refused delete never marks the network `deleting`
/// (a server create meanwhile would be refused). [`delete_bridge`] checks
/// again.
pub async fn foreign_ports_of(instance: &str, name: &str) -> Result<Vec<Port>, LinkError> {
    let links = link::list().await?;
    Ok(match links.iter().find(|l| l.name == name) {
        Some(bridge) if bridge.kind == "bridge" => foreign_ports(&links, bridge, instance),
        _ => Vec::new(),
    })
}

/// Deletes bridge `name` (a managed network's) unless a port that is not
/// one of kilnd instance `instance`'s taps is on it.
pub async fn delete_bridge(instance: &str, name: &str) -> Result<Teardown, LinkError> {
    delete_bridge_between(instance, name, async {}).await
}

/// [`delete_bridge`], running `between` after the port check and before
/// the delete: where the race is (tests put a port on the bridge there).
pub async fn delete_bridge_between(
    instance: &str,
    name: &str,
    between: impl std::future::Future<Output = ()>,
) -> Result<Teardown, LinkError> {
    // Link events from before the port dump on: how a port that joins
    // between the dump and the delete is seen (and logged).
    let (mut conn, _, mut events) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_LINK))
        .map_err(LinkError::Socket)?;
    tokio::spawn(conn);
    let links = link::list().await?;
    let Some(bridge) = links.iter().find(|l| l.name == name) else {
        return Ok(Teardown::Absent);
    };
    if bridge.kind != "bridge" {
        tracing::warn!(
            link = name,
            kind = bridge.kind,
            "the bridge of a managed network is gone and its name is now another link's; \
             leaving that link alone"
        );
        return Ok(Teardown::Absent);
    }
    let foreign = foreign_ports(&links, bridge, instance);
    if !foreign.is_empty() {
        return Ok(Teardown::Kept(foreign));
    }
    let known: HashSet<u32> = links
        .iter()
        .filter(|l| l.controller == Some(bridge.index))
        .map(|l| l.index)
        .collect();
    between.await;
    link::delete_index(bridge.index, name).await?;
    // The kernel sent the events of every change before the delete (ports
    // joining, then the bridge's own RTM_DELLINK) to our socket before it
    // answered the delete; read up to that last one, for a bounded time.
    let mut late: Vec<Link> = Vec::new();
    let drained = tokio::time::timeout(EVENT_WAIT, async {
        while let Some((msg, _)) = events.next().await {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    let l = link::link_of(&m);
                    if l.controller == Some(bridge.index)
                        && !known.contains(&l.index)
                        && !late.iter().any(|x| x.index == l.index)
                    {
                        late.push(l);
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m))
                    if m.header.index == bridge.index =>
                {
                    return true;
                }
                _ => {}
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let late = foreign_ports(&late, bridge, instance);
    if !late.is_empty() {
        tracing::warn!(
            bridge = name,
            "port(s) joined the bridge between kilnd's port check and its delete and were \
             taken off it (the links themselves are kept): {}",
            late.iter()
                .map(Port::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else if !drained {
        tracing::warn!(
            bridge = name,
            "did not see the bridge's delete event; a port that joined just before the \
             delete would not be logged"
        );
    }
    Ok(Teardown::Deleted { late })
}

/// Why network `network`'s bridge `bridge` was kept: the ports, and what
/// to do.
pub fn kept_message(network: &str, bridge: &str, ports: &[Port]) -> String {
    let list: Vec<String> = ports.iter().map(Port::to_string).collect();
    format!(
        "bridge {bridge:?} of network {network:?} has {} port(s) kilnd did not make: {}; \
         deleting the bridge would take them off it. Take them off (ip link set DEV nomaster) \
         or delete them, then delete the network again",
        ports.len(),
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::owner::Mark;

    const INST: &str = "0123456789abcdef0123456789abcdef";

    fn l(index: u32, name: &str, kind: &str, controller: Option<u32>, alias: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            mtu: 1500,
            kind: kind.into(),
            controller,
            up: true,
            alias: alias.map(str::to_owned),
        }
    }

    #[test]
    fn only_ports_of_the_bridge_that_are_not_ours_count() {
        let mark = |instance: &str| {
            Mark {
                instance: instance.into(),
                server: "1a2b3c4d-0000-4000-8000-000000000000".into(),
                nic: 0,
            }
            .alias()
        };
        let other = "f".repeat(32);
        let br = l(5, "br0", "bridge", None, None);
        let links = vec![
            br.clone(),
            l(6, "kt1a2b3c4d0", "tun", Some(5), Some(&mark(INST))),
            l(7, "kt1a2b3c4d1", "tun", Some(5), Some(&mark(&other))),
            l(8, "veth0", "veth", Some(5), Some("uplink")),
            l(9, "eth0", "", Some(5), None),
            // On another bridge, or on none: not ports of this one.
            l(10, "veth2", "veth", Some(11), None),
            l(12, "kt00000000a", "tun", None, None),
        ];
        let ports = foreign_ports(&links, &br, INST);
        let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["kt1a2b3c4d1", "veth0", "eth0"]);
        let msg = kept_message("lan", "br0", &ports);
        assert!(
            msg.contains("3 port(s)")
                && msg.contains(&format!(
                    "kt1a2b3c4d1 (a tap of another kilnd: instance {other}"
                ))
                && msg.contains("veth0 (veth, no kiln mark)")
                && msg.contains("eth0 (a device, no kiln mark)")
                && !msg.contains("kt1a2b3c4d0"),
            "{msg}"
        );
        // Only our own taps: nothing foreign.
        assert!(foreign_ports(&links[..2], &br, INST).is_empty());
    }
}
