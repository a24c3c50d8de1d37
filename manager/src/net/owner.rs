//! Which taps are this kilnd's, and the only ways kilnd deletes a tap.
//!
//! Several kilnds can share a network namespace and even a bridge (each
//! with its own state dir; a network may name a bridge that exists), and a
//! tap's name carries only 32 bits of its server's id, so a `kt…` name
//! says nothing about who made the link. Every tap kilnd makes therefore
//! carries a [`Mark`] in its `IFLA_IFALIAS`, set before it joins a bridge:
//! `kiln:<instance>:<server id>:<nic index>`, where the instance is 32 hex
//! digits made once per store ([`crate::store::Store::instance_id`]) and
//! kept across restarts. kilnd deletes a link only when its mark names this
//! instance:
//! - [`sweep`] at start: every link marked by this kilnd whose server is
//!   not live (on any bridge or none);
//! - [`clear_name`] before a NIC's tap is made, and [`remove_leftover`]
//!   when a server is deleted: the link of that name, only if marked by
//!   this kilnd. Any other link of the name (another kilnd's tap whose name
//!   collides, or one made by hand) is left alone and the NIC start fails
//!   with a fault that says so.
//!
//! Unmarked and foreign links are logged, never touched. Deletes go by
//! link index, not name, so a name that passed to another link in between
//! is not hit. Why the alias: it is free text of up to 255 bytes on any
//! link, kept by the kernel for the link's life, visible to admins (`ip
//! link show` prints it), and readable in the same netlink dump kilnd
//! already makes; the other per-link facts (MAC, group, ifindex, tun
//! owner uid) are either visible to the guest, shared by every process of
//! one user, or not stable across restarts. A copy of a state directory
//! run as a second kilnd would share the instance id: do not do that.

use std::collections::HashSet;

use thiserror::Error;

use super::link::{self, Link, LinkError};
use super::tap_owner;

/// Every mark starts with this.
pub const MARK_PREFIX: &str = "kiln:";

/// What kilnd writes into the alias of each tap it makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The kilnd instance (32 hex digits).
    pub instance: String,
    /// The server's full id.
    pub server: String,
    /// The NIC's index in the server's NIC list.
    pub nic: usize,
}

impl Mark {
    /// The alias text: `kiln:<instance>:<server>:<nic>`.
    pub fn alias(&self) -> String {
        format!(
            "{MARK_PREFIX}{}:{}:{}",
            self.instance, self.server, self.nic
        )
    }

    /// The mark an alias holds, if it is one.
    pub fn parse(alias: &str) -> Option<Mark> {
        let mut parts = alias.strip_prefix(MARK_PREFIX)?.split(':');
        let (instance, server, nic) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        let ok = parts.next().is_none()
            && instance.len() == 32
            && hex(instance)
            && !server.is_empty()
            && server.len() <= 64
            && server.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
            && !nic.is_empty()
            && nic.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return None;
        }
        Some(Mark {
            instance: instance.to_owned(),
            server: server.to_owned(),
            nic: nic.parse().ok()?,
        })
    }
}

/// Who a link belongs to, as far as this kilnd can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Marked by this kilnd instance.
    Ours(Mark),
    /// Marked by another kilnd instance.
    OtherKilnd(Mark),
    /// No kiln mark: made by hand, by another program, or by a kilnd from
    /// before marks.
    Unmarked,
}

/// Whose `l` is, for kilnd instance `instance`.
pub fn owner_of(l: &Link, instance: &str) -> Owner {
    match l.alias.as_deref().and_then(Mark::parse) {
        Some(m) if m.instance == instance => Owner::Ours(m),
        Some(m) => Owner::OtherKilnd(m),
        None => Owner::Unmarked,
    }
}

/// Before making tap `name`: deletes a link of that name that this kilnd
/// marked (a leftover of its own); any other link of that name is left
/// alone and the answer is an error saying whose it is.
pub async fn clear_name(instance: &str, name: &str) -> Result<(), NameError> {
    let Some(l) = link::get(name).await? else {
        return Ok(());
    };
    match owner_of(&l, instance) {
        Owner::Ours(m) => {
            tracing::info!(
                tap = name,
                server = m.server,
                "deleting a leftover tap of ours"
            );
            Ok(link::delete_index(l.index, name).await?)
        }
        other => Err(NameError::Taken(taken(name, &l, &other))),
    }
}

/// Why a tap's name could not be cleared for it.
#[derive(Debug, Error)]
pub enum NameError {
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Held by a link this kilnd does not own ([`taken`] says whose).
    #[error("{0}")]
    Taken(String),
}

/// The fault when tap name `name` is held by link `l`, which this kilnd
/// does not own.
pub fn taken(name: &str, l: &Link, owner: &Owner) -> String {
    let whose = match owner {
        Owner::OtherKilnd(m) => format!(
            "a tap of another kilnd (instance {}, server {})",
            m.instance, m.server
        ),
        _ => format!(
            "a link kilnd did not make ({}{})",
            if l.kind.is_empty() {
                "a device".to_owned()
            } else {
                format!("kind {}", l.kind)
            },
            l.alias
                .as_deref()
                .map(|a| format!(", alias {a:?}"))
                .unwrap_or_default()
        ),
    };
    format!(
        "tap name {name} is taken by {whose}; kilnd leaves it alone. \
         Remove that link, or delete this server and create it again \
         (a new server id gives new tap names)"
    )
}

/// When a server is deleted: its VMM's exit took its taps away, so this
/// only removes a leftover named `name` that this kilnd marked; any other
/// link of that name is logged and kept.
pub async fn remove_leftover(instance: &str, name: &str) {
    match link::get(name).await {
        Ok(None) => {}
        Ok(Some(l)) => match owner_of(&l, instance) {
            Owner::Ours(_) => {
                if let Err(e) = link::delete_index(l.index, name).await {
                    tracing::warn!(tap = name, error = %e, "cannot delete tap");
                }
            }
            other => tracing::info!(
                tap = name,
                owner = ?other,
                "leaving alone a link of a deleted server's tap name that kilnd did not make"
            ),
        },
        Err(e) => tracing::warn!(tap = name, error = %e, "cannot look up tap"),
    }
}

/// Deletes every link marked by kilnd `instance` whose server is not in
/// `live` (full ids of servers that are not DELETED); answers the names
/// deleted. Unmarked tap-named links on one of `bridges` (kilnd's
/// networks') and other kilnds' taps are logged and left alone.
pub async fn sweep(
    instance: &str,
    live: &HashSet<String>,
    bridges: &HashSet<String>,
) -> Vec<String> {
    let links = match link::list().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list links to sweep taps");
            return Vec::new();
        }
    };
    let on_ours: HashSet<u32> = links
        .iter()
        .filter(|l| l.kind == "bridge" && bridges.contains(&l.name))
        .map(|l| l.index)
        .collect();
    let mut gone = Vec::new();
    for l in links {
        let on_our_bridge = l.controller.is_some_and(|c| on_ours.contains(&c));
        match owner_of(&l, instance) {
            Owner::Ours(m) if live.contains(&m.server) => {}
            Owner::Ours(m) => {
                tracing::info!(
                    tap = l.name,
                    server = m.server,
                    "deleting a tap of no live server"
                );
                match link::delete_index(l.index, &l.name).await {
                    Ok(()) => gone.push(l.name),
                    Err(e) => tracing::warn!(tap = l.name, error = %e, "cannot delete tap"),
                }
            }
            Owner::OtherKilnd(m) if on_our_bridge => tracing::debug!(
                tap = l.name,
                instance = m.instance,
                "leaving alone another kilnd's tap"
            ),
            Owner::Unmarked if on_our_bridge && tap_owner(&l.name).is_some() => tracing::info!(
                tap = l.name,
                "leaving alone a tap-named link kilnd did not make (no kiln mark)"
            ),
            _ => {}
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    const INST: &str = "0123456789abcdef0123456789abcdef";
    const SERVER: &str = "1a2b3c4d-0000-4000-8000-000000000000";

    fn link(alias: Option<&str>) -> Link {
        Link {
            index: 7,
            name: "kt1a2b3c4d0".into(),
            mtu: 1500,
            kind: "tun".into(),
            controller: None,
            up: true,
            alias: alias.map(str::to_owned),
        }
    }

    #[test]
    fn marks_round_trip_and_reject_junk() {
        let m = Mark {
            instance: INST.into(),
            server: SERVER.into(),
            nic: 3,
        };
        let a = m.alias();
        assert_eq!(a, format!("kiln:{INST}:{SERVER}:3"));
        assert!(a.len() < 256, "IFALIASZ");
        assert_eq!(Mark::parse(&a), Some(m));
        for bad in [
            "",
            "kiln:",
            "kiln::x:0",
            &format!("kiln:{INST}:{SERVER}"),
            &format!("kiln:{INST}:{SERVER}:"),
            &format!("kiln:{INST}:{SERVER}:0:9"),
            &format!("kiln:{INST}:{SERVER}:-1"),
            &format!("kiln:{INST}:{SERVER}:99999999999999999999999"),
            &format!("kiln:{}:{SERVER}:0", &INST[1..]),
            &format!("kiln:{INST}x:{SERVER}:0"),
            &format!("kiln:{INST}::0"),
            &format!("kiln:{INST}:a b:0"),
            &format!("KILN:{INST}:{SERVER}:0"),
            "uplink to the lab",
        ] {
            assert_eq!(Mark::parse(bad), None, "{bad:?}");
        }
    }

    /// The collision case: a link named like one of our taps is ours only
    /// if our instance marked it; another kilnd's tap of the same name or
    /// an unmarked one is not, and the fault says whose it is.
    #[test]
    fn only_our_mark_makes_a_link_ours() {
        let ours = Mark {
            instance: INST.into(),
            server: SERVER.into(),
            nic: 0,
        };
        let theirs = Mark {
            instance: "f".repeat(32),
            server: "1a2b3c4d-ffff-4fff-8fff-ffffffffffff".into(),
            nic: 0,
        };
        assert_eq!(
            owner_of(&link(Some(&ours.alias())), INST),
            Owner::Ours(ours.clone())
        );
        let l = link(Some(&theirs.alias()));
        let o = owner_of(&l, INST);
        assert_eq!(o, Owner::OtherKilnd(theirs.clone()));
        let msg = taken(&l.name, &l, &o);
        assert!(
            msg.contains("another kilnd")
                && msg.contains(&theirs.instance)
                && msg.contains(&l.name),
            "{msg}"
        );
        for alias in [None, Some("uplink")] {
            let l = link(alias);
            let o = owner_of(&l, INST);
            assert_eq!(o, Owner::Unmarked);
            let msg = taken(&l.name, &l, &o);
            assert!(
                msg.contains("did not make") && msg.contains("kind tun"),
                "{msg}"
            );
        }
        // Our mark under another instance id is someone else's.
        assert!(matches!(
            owner_of(&link(Some(&ours.alias())), &"e".repeat(32)),
            Owner::OtherKilnd(_)
        ));
    }
}
