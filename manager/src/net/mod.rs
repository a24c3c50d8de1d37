//! Networks: servers' virtio-net NICs on Linux bridges.
//!
//! A network names a bridge. kilnd creates the bridge if it is missing
//! (the network is then `managed`: kilnd recreates it at start if it
//! vanished, e.g. after a host reboot, and deletes it with the network
//! unless others' links are on it, see below) or uses one that exists.
//! Each NIC of a server is a tap named
//! [`tap_name`]`(server id, index)` (`kt` + the id's first 8 hex digits +
//! the NIC index, 11 bytes), made by kilnd with `TUNSETIFF` ([`tap`]), put
//! on the bridge with the network's MTU and set up through rtnetlink
//! ([`link`]), and handed to kiln-vmm as an inherited fd (`NetConfig::fd`),
//! so kiln-vmm needs no privilege.
//!
//! # Why the taps are not persistent
//!
//! A non-persistent tap lives exactly as long as an open fd refers to it;
//! the kernel then deletes it and takes it off its bridge. kilnd opens the
//! tap, the one kiln-vmm it starts inherits the fd, and kilnd closes its
//! own copy right after the spawn. So the tap's life is the VMM's life,
//! whatever crashes:
//! - the VMM exits or is killed (power-off, crash, stop, delete): its fds
//!   close and the tap is gone, with nothing for kilnd to undo;
//! - kilnd is killed while making taps, before the VMM exists: kilnd's fds
//!   close and the taps are gone;
//! - kilnd is killed while VMMs run: they keep their fds, so their taps stay
//!   up on the bridge and traffic goes on; the restarted kilnd knows each
//!   tap by its name (derived from the server id, stored with the NIC) and
//!   by its mark;
//! - a guest reset re-executes kiln-vmm in place, and the fd (not
//!   close-on-exec in the VMM) survives it; a guest reboot that kilnd turns
//!   into a new VMM gets new taps of the same names.
//!
//! A persistent tap would outlive every one of these and need sweeping
//! after each crash. What persistence would give (a VMM reopening its tap
//! by name) kiln-vmm does not need.
//!
//! # Whose a tap is
//!
//! Other kilnds (own state dir and socket, as tests and some hosts run
//! them) may share the network namespace and even a bridge, and a tap
//! name carries only 32 bits of the server id, so names collide across
//! kilnds and say nothing about ownership. Every tap kilnd makes carries
//! a mark in its alias (`IFLA_IFALIAS`), `kiln:<instance>:<server
//! id>:<nic>`, with the instance id this kilnd's store made once
//! ([`owner`] says why the alias). kilnd deletes only links with its own
//! mark: at start [`owner::sweep`] deletes those of no live server, and
//! before opening a NIC's tap (and after deleting a server) a leftover of
//! that name with its mark. A `kt…` link with another kilnd's mark or with
//! none (made by hand, or by a kilnd from before marks) is logged and left
//! alone; if it holds the name a NIC's tap needs, starting the server
//! fails with a fault naming it, never deleting it. The tap itself is made
//! with `IFF_TUN_EXCL`, so kilnd never attaches to a tap someone else made
//! between its check and `TUNSETIFF`. The names do not change (servers'
//! stored tap names keep working): no 13 characters can be unique across
//! kilnds that do not know of each other, collisions are rare (32 random
//! bits per server), and each one is a clear fault that deleting and
//! recreating the server (a new id) resolves.
//!
//! # Deleting a network never cuts off anything that is not this kilnd's
//!
//! Deleting a bridge takes all its ports off it, so a managed bridge is
//! deleted only when every port on it is one of this kilnd's own taps
//! (its mark, as above): another kilnd may use the same bridge for its
//! own (unmanaged) network, an admin may have added a veth or an uplink.
//! Otherwise nothing is deleted and the network stays ([`teardown`]; the
//! delete protocol is [`crate::networks`]'s): `DELETE /v1/networks/{id}`
//! answers 409 naming each such port (and the other kilnd's instance and
//! server when the port carries a kiln mark);
//! an interrupted delete that kilnd finishes at start is rolled back (the
//! network is active again) with a warning naming them. Why keep the
//! network rather than drop it and leave the bridge: the bridge stays
//! accounted for (the network that made it names it, and deleting it once
//! the ports are gone deletes the bridge), where a dropped row would leave
//! a bridge nobody owns; and the start path has nothing to retry, so it
//! neither loops nor leaks. A port that joins between the port dump and
//! the delete (one netlink round trip) is taken off with the bridge (the
//! kernel has no conditional delete) and named in a warning: kilnd
//! listens to link events from before its check ([`teardown`]).
//!
//! The netlink crate is `rtnetlink` (rust-netlink): it runs on the tokio
//! runtime kilnd already has, builds bridge and port messages with typed
//! attributes, and is what youki and others use. `neli` is lower level
//! (hand-built attribute lists) and synchronous.

pub mod addr;
pub mod link;
pub mod neigh;
pub mod nft;
pub mod owner;
pub mod routes;
pub mod tap;
pub mod teardown;
pub mod udp;

use std::os::fd::OwnedFd;

use kiln_api::compute::{Network, Server};
use sha2::{Digest, Sha256};
use thiserror::Error;

use link::LinkError;

/// Most NICs one server can have (the index is one hex digit of the tap
/// name).
pub const MAX_NICS: usize = 8;

/// Tap names start with this. The name alone does not make a link
/// kilnd's: its [`owner::Mark`] does.
pub const TAP_PREFIX: &str = "kt";

/// The tap of NIC `index` of server `id`: `kt` + 8 hex digits of the id +
/// the index in hex (`kt1a2b3c4d0`).
pub fn tap_name(id: &str, index: usize) -> String {
    format!("{TAP_PREFIX}{}{index:x}", id_prefix(id))
}

/// The part of a server id its tap names carry: its first 8 hex digits.
pub fn id_prefix(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect()
}

/// The server-id prefix of a kiln tap name, if `name` is one.
pub fn tap_owner(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(TAP_PREFIX)?;
    (rest.len() == 9 && rest.bytes().all(|b| b.is_ascii_hexdigit())).then(|| &rest[..8])
}

/// A locally administered unicast MAC, stable for (server, NIC).
pub fn generated_mac(id: &str, index: usize) -> String {
    let h = Sha256::digest(format!("{id}/{index}").as_bytes());
    let first = (h[0] & 0xfc) | 0x02;
    format!(
        "{first:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        h[1], h[2], h[3], h[4], h[5]
    )
}

/// Checks and normalizes (lower case) a user-given MAC: six `:`-separated
/// hex pairs, unicast, not all zero.
pub fn parse_mac(s: &str) -> Result<String, MacError> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || MacError::Form(s.to_owned());
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut b = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        b[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if b[0] & 1 != 0 {
        return Err(MacError::Multicast(s.to_owned()));
    }
    if b == [0; 6] {
        return Err(MacError::Zero(s.to_owned()));
    }
    Ok(s.to_ascii_lowercase())
}

/// Why [`parse_mac`] refuses a MAC.
#[derive(Debug, Error)]
pub enum MacError {
    #[error("mac {0:?} is not six ':'-separated hex pairs (aa:bb:cc:dd:ee:ff)")]
    Form(String),
    #[error("mac {0:?} is a multicast address")]
    Multicast(String),
    #[error("mac {0:?} is all zero")]
    Zero(String),
}

/// Checks a bridge name: 1 to 15 bytes (IFNAMSIZ) of `A-Z a-z 0-9 _ . -`,
/// not `.`/`..`, not starting with `-`, not `default` or `all` (the
/// kernel refuses them: they name `/proc/sys/net/*/conf/` entries), and
/// not a kiln tap name.
pub fn check_bridge_name(name: &str) -> Result<(), BridgeNameError> {
    let named = || name.to_owned();
    if name.is_empty() || name.len() > 15 {
        return Err(BridgeNameError::Length(named()));
    }
    if let Some(c) = crate::util::bad_name_char(name) {
        return Err(BridgeNameError::Char { name: named(), c });
    }
    if name == "." || name == ".." || name.starts_with('-') {
        return Err(BridgeNameError::NotAllowed(named()));
    }
    if name == "default" || name == "all" {
        return Err(BridgeNameError::Reserved(named()));
    }
    if name.starts_with(TAP_PREFIX) {
        return Err(BridgeNameError::TapPrefix(named()));
    }
    Ok(())
}

/// Why [`check_bridge_name`] refuses a name.
#[derive(Debug, Error)]
pub enum BridgeNameError {
    #[error("bridge name {0:?} must be 1 to 15 bytes long (IFNAMSIZ)")]
    Length(String),
    #[error("bridge name {name:?} has {c:?}; use A-Z a-z 0-9 _ . -")]
    Char { name: String, c: char },
    #[error("bridge name {0:?} is not allowed")]
    NotAllowed(String),
    #[error(
        "bridge name {0:?} is reserved by the kernel (/proc/sys/net/ipv4/conf/{0}): give the network a \"bridge\" of another name"
    )]
    Reserved(String),
    #[error("bridge name {0:?} must not start with {prefix:?} (kiln's tap names)", prefix = TAP_PREFIX)]
    TapPrefix(String),
}

/// The queues of each of a server's NICs (Nova's
/// `hw_vif_multiqueue_enabled`): one per vCPU, at most
/// [`MAX_NIC_QUEUES`]; a single-vCPU server's NICs have one.
pub fn nic_queues(vcpus: u32) -> usize {
    usize::try_from(vcpus).map_or(MAX_NIC_QUEUES, |v| v.clamp(1, MAX_NIC_QUEUES))
}

/// The most queues kilnd gives a NIC.
pub const MAX_NIC_QUEUES: usize = 8;

/// Makes the taps of a server about to start, each marked as this
/// kilnd's (`instance`, [`owner`]), on its network's bridge (`nets`: the
/// network of each NIC, in order) with [`nic_queues`] queues, and answers
/// their queues' fds in NIC order. An error's chain is a fault message.
pub async fn open_taps(
    instance: &str,
    server: &Server,
    nets: &[Network],
) -> Result<Vec<Vec<OwnedFd>>, TapError> {
    let queues = nic_queues(server.vcpus);
    let mut fds = Vec::new();
    for (index, (nic, net)) in server.nics.iter().zip(nets).enumerate() {
        let bridge = match link::get(&net.bridge).await? {
            Some(b) if b.kind == "bridge" => b,
            Some(_) => {
                return Err(TapError::NotBridge {
                    bridge: net.bridge.clone(),
                    network: net.name.clone(),
                })
            }
            None if net.managed => {
                tracing::warn!(bridge = net.bridge, "recreating a missing bridge");
                link::create_bridge(&net.bridge, net.mtu).await?;
                link::get(&net.bridge)
                    .await?
                    .ok_or_else(|| TapError::Vanished(net.bridge.clone()))?
            }
            None => {
                return Err(TapError::Missing {
                    bridge: net.bridge.clone(),
                    network: net.name.clone(),
                })
            }
        };
        // A leftover of the same name is deleted only if this kilnd marked
        // it; anything else of that name is left alone and is the fault.
        owner::clear_name(instance, &nic.tap)
            .await
            .map_err(|source| TapError::Name { index, source })?;
        let name = nic.tap.clone();
        let fd = tokio::task::spawn_blocking(move || tap::create(&name, queues))
            .await?
            .map_err(|source| match source.raw_os_error() {
                Some(libc::EBUSY) => TapError::Raced {
                    index,
                    tap: nic.tap.clone(),
                },
                _ => TapError::Create {
                    tap: nic.tap.clone(),
                    source,
                },
            })?;
        let mark = owner::Mark {
            instance: instance.to_owned(),
            server: server.id.clone(),
            nic: index,
        };
        link::mark_and_attach(&nic.tap, &mark.alias(), &bridge, net.mtu).await?;
        fds.push(fd);
    }
    Ok(fds)
}

/// Why a server's taps could not be made (its chain is the server's
/// fault).
#[derive(Debug, Error)]
pub enum TapError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{bridge} of network {network} is no longer a bridge")]
    NotBridge { bridge: String, network: String },
    #[error("bridge {0} vanished")]
    Vanished(String),
    #[error("bridge {bridge} of network {network} is missing")]
    Missing { bridge: String, network: String },
    #[error("NIC {index}")]
    Name {
        index: usize,
        #[source]
        source: owner::NameError,
    },
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    #[error(
        "NIC {index}: tap name {tap} was taken by another link while kilnd made it; \
         kilnd leaves it alone"
    )]
    Raced { index: usize, tap: String },
    #[error("cannot create tap {tap}")]
    Create {
        tap: String,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_queues_follow_vcpus_up_to_8() {
        for (vcpus, queues) in [(0, 1), (1, 1), (2, 2), (8, 8), (9, 8), (u32::MAX, 8)] {
            assert_eq!(nic_queues(vcpus), queues, "{vcpus} vCPUs");
        }
    }

    #[test]
    fn names_and_macs() {
        let id = "1a2b3c4d-0000-4000-8000-000000000000";
        assert_eq!(tap_name(id, 0), "kt1a2b3c4d0");
        assert_eq!(tap_name(id, 7).len(), 11);
        assert_eq!(tap_owner("kt1a2b3c4d3"), Some("1a2b3c4d"));
        assert_eq!(tap_owner("kt1a2b3c4d"), None);
        assert_eq!(tap_owner("br0"), None);
        let m = generated_mac(id, 0);
        assert_eq!(m, generated_mac(id, 0), "stable");
        assert_ne!(m, generated_mac(id, 1));
        let first = u8::from_str_radix(&m[..2], 16).unwrap();
        assert_eq!(first & 3, 2, "local, unicast: {m}");
        assert_eq!(parse_mac(&m).unwrap(), m);
        assert_eq!(parse_mac("52:54:00:AB:cd:01").unwrap(), "52:54:00:ab:cd:01");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0g",
            "525:4:00:ab:cd:01",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "52-54-00-ab-cd-01",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        for ok in ["br0", "kiln-br_1.x", "a23456789012345"] {
            check_bridge_name(ok).unwrap();
        }
        for bad in [
            "",
            "a234567890123456",
            "br 0",
            "br/0",
            "..",
            "-x",
            "kt1",
            "br\u{e9}",
            "default",
            "all",
        ] {
            assert!(check_bridge_name(bad).is_err(), "{bad}");
        }
    }
}
