//! Network rows and servers' NICs.
//!
//! A network row names a bridge and says whether kilnd created it
//! (`managed`). Deleting one is two steps so that a crash in between is
//! finished at the next start: [`Store::begin_delete_network`] checks, in
//! one transaction, that no server (not DELETED) has a NIC on it and marks
//! it `deleting` (server creates then refuse it); the caller removes the
//! bridge and [`Store::finish_delete_network`] drops the row, or, when
//! ports kilnd did not make keep the bridge (`crate::net::teardown`),
//! [`Store::cancel_delete_network`] makes the network active again.
//!
//! A network may have an IPv4 subnet (`cidr`); subnets of networks never
//! overlap (checked in the create transaction).
//!
//! A NIC row (`nics`) is written with its server in the create
//! transaction: network, MAC, tap name and, on a network with a subnet,
//! its IPv4 address are fixed for the server's life. The address is
//! picked or checked in that transaction ([`insert_nics`]), which is
//! `BEGIN IMMEDIATE` on the store's one connection, so concurrent creates
//! are serialized and never share an address; a DELETED server's
//! addresses are free again;
//! its link (`up`/`down`) changes with [`Store::set_nic_link`].
//! The store's instance id ([`Store::instance_id`]) marks the taps this
//! kilnd makes.

use std::net::Ipv4Addr;

use kiln_api::compute::{LinkState, Network, NetworkMode, Nic, Server};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::{not_found, Store, StoreError};
use crate::ipam::{Subnet, SubnetSpec};
use crate::util::now_rfc3339;

/// A NIC as the API resolved it for a new server.
pub struct NewNic {
    pub network_id: String,
    /// Given by the user, else generated from the server id.
    pub mac: Option<String>,
    /// The link the guest first sees.
    pub link: LinkState,
    /// The address asked for (networks with a subnet only); else the
    /// lowest free one is picked.
    pub ip: Option<Ipv4Addr>,
}

/// A new network's layer 3 settings, checked.
#[derive(Clone, Debug, Default)]
pub struct NetworkSpec {
    pub subnet: Option<SubnetSpec>,
    pub dhcp: bool,
    pub mode: NetworkMode,
}

const NET_COLS: &str = "id, name, bridge, mtu, managed, created_at, cidr, gateway, dhcp, dns, mode";

impl Store {
    /// Records a network; 409 if the name or the bridge is taken or its
    /// subnet overlaps another network's.
    pub fn create_network(
        &self,
        name: &str,
        bridge: &str,
        mtu: u32,
        managed: bool,
        spec: &NetworkSpec,
    ) -> Result<Network, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let clash: Option<(String, String)> = tx
            .query_row(
                "SELECT name, bridge FROM networks WHERE name = ?1 OR bridge = ?2",
                params![name, bridge],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((n, b)) = clash {
            return Err(StoreError::Conflict(if n == name {
                format!("a network named {name:?} already exists")
            } else {
                format!("network {n:?} already uses bridge {b:?}")
            }));
        }
        if let Some(sub) = &spec.subnet {
            let mut st = tx.prepare("SELECT name, cidr FROM networks WHERE cidr IS NOT NULL")?;
            let rows =
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (other, cidr) = row?;
                if Subnet::parse(&cidr).is_ok_and(|c| c.overlaps(sub.cidr)) {
                    return Err(StoreError::Conflict(format!(
                        "cidr {} overlaps {cidr} of network {other:?}",
                        sub.cidr
                    )));
                }
            }
        }
        let dns: Vec<String> = spec
            .subnet
            .iter()
            .flat_map(|s| s.dns.iter().map(|d| d.to_string()))
            .collect();
        tx.execute(
            "INSERT INTO networks (id, name, bridge, mtu, managed, status, created_at,
                                   cidr, gateway, dhcp, dns, mode)
             VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                id,
                name,
                bridge,
                mtu,
                managed,
                now_rfc3339(),
                spec.subnet.as_ref().map(|s| s.cidr.to_string()),
                spec.subnet.as_ref().map(|s| s.gateway.to_string()),
                spec.dhcp,
                serde_json::to_string(&dns).unwrap_or_else(|_| "[]".into()),
                spec.mode.as_str()
            ],
        )?;
        tx.commit()?;
        drop(conn);
        self.get_network(&id)
    }

    /// A network (not being deleted) by id or name, with its servers.
    pub fn get_network(&self, key: &str) -> Result<Network, StoreError> {
        let conn = self.conn();
        let mut n = conn
            .query_row(
                &format!(
                    "SELECT {NET_COLS} FROM networks
                     WHERE (id = ?1 OR name = ?1) AND status = 'active'"
                ),
                [key],
                network_row,
            )
            .optional()?
            .ok_or_else(|| not_found("network", key))?;
        n.servers = users(&conn, &n.id)?;
        Ok(n)
    }

    pub fn list_networks(&self) -> Result<Vec<Network>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {NET_COLS} FROM networks WHERE status = 'active' ORDER BY created_at, name"
        ))?;
        let mut nets: Vec<Network> = st.query_map([], network_row)?.collect::<Result<_, _>>()?;
        for n in &mut nets {
            n.servers = users(&conn, &n.id)?;
        }
        Ok(nets)
    }

    /// Every network row, including those being deleted: (network,
    /// deleting).
    pub fn all_networks(&self) -> Result<Vec<(Network, bool)>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {NET_COLS}, status FROM networks ORDER BY created_at"
        ))?;
        let rows = st.query_map([], |r| {
            Ok((network_row(r)?, r.get::<_, String>(11)? == "deleting"))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks a network no server uses as `deleting`; 409 naming the
    /// servers if some do.
    pub fn begin_delete_network(&self, key: &str) -> Result<Network, StoreError> {
        let net = self.get_network(key)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let names = user_names(&tx, &net.id)?;
        if !names.is_empty() {
            return Err(StoreError::Conflict(format!(
                "network {:?} is in use by {} server(s): {}; delete them first",
                net.name,
                names.len(),
                names.join(", ")
            )));
        }
        let n = tx.execute(
            "UPDATE networks SET status = 'deleting' WHERE id = ?1 AND status = 'active'",
            [&net.id],
        )?;
        if n == 0 {
            return Err(not_found("network", key));
        }
        tx.commit()?;
        Ok(net)
    }

    /// Undoes [`Store::begin_delete_network`] when the bridge must stay
    /// (ports kilnd did not make are on it): the network is active again.
    /// Its name and bridge are still its own (rows being deleted keep them).
    pub fn cancel_delete_network(&self, id: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE networks SET status = 'active' WHERE id = ?1 AND status = 'deleting'",
            [id],
        )?;
        Ok(())
    }

    pub fn finish_delete_network(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM networks WHERE id = ?1", [id])?;
        Ok(())
    }

    /// This kilnd's instance id (32 hex digits), made once with the store
    /// and kept: the mark on the taps it makes (`crate::net::owner`).
    pub fn instance_id(&self) -> Result<String, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT id FROM kiln_instance WHERE one = 1", [], |r| {
                r.get(0)
            })?)
    }

    /// The `default_cidr` the `default` network was last made with, if
    /// kilnd made it (and the config has not turned it off since).
    pub fn default_network_mark(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT cidr FROM default_network WHERE one = 1", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Records (`Some`) or forgets (`None`) that the `default` network was
    /// made with `cidr`.
    pub fn set_default_network_mark(&self, cidr: Option<&str>) -> Result<(), StoreError> {
        let conn = self.conn();
        match cidr {
            Some(c) => conn.execute(
                "INSERT INTO default_network (one, cidr) VALUES (1, ?1)
                 ON CONFLICT (one) DO UPDATE SET cidr = excluded.cidr",
                [c],
            )?,
            None => conn.execute("DELETE FROM default_network", [])?,
        };
        Ok(())
    }

    /// Fills in the NICs of `servers` (one query).
    pub(crate) fn attach_nics(conn: &Connection, servers: &mut [Server]) -> rusqlite::Result<()> {
        if servers.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = servers.iter().map(|s| s.id.as_str()).collect();
        let mut st = conn.prepare_cached(
            "SELECT n.server_id, n.network_id, COALESCE(w.name, ''), n.mac, n.tap, n.idx, n.link,
                    n.ip
             FROM nics n LEFT JOIN networks w ON w.id = n.network_id
             WHERE n.server_id IN (SELECT value FROM json_each(?1))
             ORDER BY n.server_id, n.idx",
        )?;
        let ids = serde_json::to_string(&ids).unwrap_or_default();
        let rows = st.query_map([ids], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Nic {
                    index: r.get(5)?,
                    network_id: r.get(1)?,
                    network: r.get(2)?,
                    mac: r.get(3)?,
                    tap: r.get(4)?,
                    link: link_from(&r.get::<_, String>(6)?),
                    ip: r.get(7)?,
                },
            ))
        })?;
        let mut by_id: std::collections::HashMap<String, Vec<Nic>> = Default::default();
        for row in rows {
            let (sid, nic) = row?;
            by_id.entry(sid).or_default().push(nic);
        }
        for s in servers {
            if let Some(n) = by_id.remove(&s.id) {
                s.nics = n;
            }
        }
        Ok(())
    }

    /// Sets the link of NIC `index` of server `id` (not DELETED); answers
    /// the link it had. NotFound for no such server or NIC.
    pub fn set_nic_link(
        &self,
        id: &str,
        index: u32,
        link: LinkState,
    ) -> Result<LinkState, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old: Option<String> = tx
            .query_row(
                "SELECT n.link FROM nics n JOIN servers s ON s.id = n.server_id
                 WHERE n.server_id = ?1 AND n.idx = ?2 AND s.status != 'DELETED'",
                params![id, index],
                |r| r.get(0),
            )
            .optional()?;
        let Some(old) = old else {
            return Err(not_found("NIC", &format!("{id}/{index}")));
        };
        tx.execute(
            "UPDATE nics SET link = ?3 WHERE server_id = ?1 AND idx = ?2",
            params![id, index, link.as_str()],
        )?;
        tx.execute(
            "UPDATE servers SET updated_at = ?2 WHERE id = ?1",
            params![id, now_rfc3339()],
        )?;
        tx.commit()?;
        Ok(link_from(&old))
    }
}

/// A link column: anything but 'down' is up.
fn link_from(s: &str) -> LinkState {
    if s == "down" {
        LinkState::Down
    } else {
        LinkState::Up
    }
}

/// Inside the server-create transaction: checks that each network is still
/// there and no MAC is taken, gives each NIC on a network with a subnet
/// its address (the one asked for if free, else the lowest free one; 409
/// naming the network when none is), and writes the NIC rows.
pub(crate) fn insert_nics(
    tx: &Transaction<'_>,
    server_id: &str,
    nics: &[NewNic],
) -> Result<(), StoreError> {
    for (i, nic) in nics.iter().enumerate() {
        let net: Option<(String, String, Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT status, name, cidr, gateway FROM networks WHERE id = ?1",
                [&nic.network_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((status, net_name, cidr, gateway)) = net else {
            return Err(StoreError::Conflict(format!(
                "network {} was deleted",
                nic.network_id
            )));
        };
        if status != "active" {
            return Err(StoreError::Conflict(format!(
                "network {} was deleted",
                nic.network_id
            )));
        }
        let mac = nic
            .mac
            .clone()
            .unwrap_or_else(|| crate::net::generated_mac(server_id, i));
        let taken: Option<String> = tx
            .query_row(
                "SELECT s.name FROM nics n JOIN servers s ON s.id = n.server_id
                 WHERE n.mac = ?1 AND s.status != 'DELETED'",
                [&mac],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = taken {
            return Err(StoreError::Conflict(format!(
                "MAC {mac} is already used by server {other:?}"
            )));
        }
        let ip = match (cidr, gateway) {
            (Some(c), Some(g)) => Some(super::addresses::address(
                tx,
                &net_name,
                &nic.network_id,
                &c,
                &g,
                nic.ip,
            )?),
            _ if nic.ip.is_some() => {
                return Err(StoreError::Conflict(format!(
                    "network {net_name:?} has no subnet: its NICs get no address"
                )))
            }
            _ => None,
        };
        tx.execute(
            "INSERT INTO nics (server_id, idx, network_id, mac, tap, link, ip)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                server_id,
                i as i64,
                nic.network_id,
                mac,
                crate::net::tap_name(server_id, i),
                nic.link.as_str(),
                ip.map(|a| a.to_string())
            ],
        )?;
    }
    Ok(())
}

/// Whether a server not DELETED has an id starting with `prefix` (tap
/// names carry 8 hex digits of the server id, so these must be unique).
pub(crate) fn id_prefix_taken(tx: &Transaction<'_>, prefix: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM servers WHERE substr(id, 1, 8) = ?1 AND status != 'DELETED'",
            [prefix],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn users(conn: &Connection, network_id: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare_cached(
        "SELECT DISTINCT s.id FROM nics n JOIN servers s ON s.id = n.server_id
         WHERE n.network_id = ?1 AND s.status != 'DELETED' ORDER BY s.created_at, s.id",
    )?;
    let rows = st.query_map([network_id], |r| r.get(0))?;
    rows.collect()
}

pub(super) fn user_names(conn: &Connection, network_id: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare_cached(
        "SELECT DISTINCT s.name FROM nics n JOIN servers s ON s.id = n.server_id
         WHERE n.network_id = ?1 AND s.status != 'DELETED' ORDER BY s.name",
    )?;
    let rows = st.query_map([network_id], |r| r.get(0))?;
    rows.collect()
}

fn network_row(r: &Row<'_>) -> rusqlite::Result<Network> {
    Ok(Network {
        id: r.get(0)?,
        name: r.get(1)?,
        bridge: r.get(2)?,
        mtu: r.get(3)?,
        managed: r.get(4)?,
        created_at: r.get(5)?,
        servers: Vec::new(),
        cidr: r.get(6)?,
        gateway: r.get(7)?,
        dhcp: r.get(8)?,
        dns_nameservers: serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default(),
        mode: match r.get::<_, String>(10)?.as_str() {
            "nat" => NetworkMode::Nat,
            "isolated" => NetworkMode::Isolated,
            _ => NetworkMode::Bridged,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::servers::tests::{new_server, placement};

    /// The instance id that marks this kilnd's taps: made once, kept
    /// across reopening, different for another store.
    #[test]
    fn instance_id_is_made_once_per_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let first = Store::open(&db).unwrap().instance_id().unwrap();
        assert_eq!(first.len(), 32, "{first}");
        assert!(first
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(Store::open(&db).unwrap().instance_id().unwrap(), first);
        let other = Store::open(&dir.path().join("db2")).unwrap();
        assert_ne!(other.instance_id().unwrap(), first);
    }

    #[test]
    fn networks_nics_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let lan = s
            .create_network("lan", "br0", 1500, true, &NetworkSpec::default())
            .unwrap();
        assert!(lan.managed && lan.servers.is_empty());
        for (name, bridge) in [("lan", "br9"), ("other", "br0")] {
            assert!(matches!(
                s.create_network(name, bridge, 1500, false, &NetworkSpec::default()),
                Err(StoreError::Conflict(_))
            ));
        }
        // A server with two NICs: tap names from its id, a given MAC kept,
        // a generated one stable.
        let p = placement(100);
        let mut new = new_server(&s, "a");
        new.nics = vec![
            NewNic {
                network_id: lan.id.clone(),
                mac: Some("52:54:00:00:00:01".into()),
                link: LinkState::Up,
                ip: None,
            },
            NewNic {
                network_id: lan.id.clone(),
                mac: None,
                link: LinkState::Down,
                ip: None,
            },
        ];
        let a = s.create_server(&p, new).unwrap();
        assert_eq!(a.nics.len(), 2);
        assert_eq!(a.nics[0].tap, crate::net::tap_name(&a.id, 0));
        assert_eq!(a.nics[1].tap, crate::net::tap_name(&a.id, 1));
        assert_eq!(a.nics[0].mac, "52:54:00:00:00:01");
        assert_eq!(a.nics[1].mac, crate::net::generated_mac(&a.id, 1));
        assert_eq!(a.nics[0].network, "lan");
        assert_eq!(s.list_servers(None, None).unwrap()[0].nics, a.nics);
        // Links: as created, then changed one at a time and kept.
        assert_eq!((a.nics[0].index, a.nics[1].index), (0, 1));
        assert_eq!(
            (a.nics[0].link, a.nics[1].link),
            (LinkState::Up, LinkState::Down)
        );
        assert_eq!(
            s.set_nic_link(&a.id, 0, LinkState::Down).unwrap(),
            LinkState::Up
        );
        assert_eq!(
            s.set_nic_link(&a.id, 1, LinkState::Up).unwrap(),
            LinkState::Down
        );
        let links: Vec<_> = s
            .get_server(&a.id)
            .unwrap()
            .nics
            .iter()
            .map(|n| n.link)
            .collect();
        assert_eq!(links, [LinkState::Down, LinkState::Up]);
        assert!(matches!(
            s.set_nic_link(&a.id, 2, LinkState::Up),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.set_nic_link("nope", 0, LinkState::Up),
            Err(StoreError::NotFound { .. })
        ));
        // A MAC another live server has: refused, nothing written.
        let mut dup = new_server(&s, "b");
        dup.nics = vec![NewNic {
            network_id: lan.id.clone(),
            mac: Some("52:54:00:00:00:01".into()),
            link: LinkState::Up,
            ip: None,
        }];
        assert!(
            matches!(s.create_server(&p, dup), Err(StoreError::Conflict(m)) if m.contains("already used by server \"a\""))
        );
        assert_eq!(s.list_servers(None, None).unwrap().len(), 1);
        // In use: no delete.
        assert_eq!(s.get_network("lan").unwrap().servers, vec![a.id.clone()]);
        assert!(
            matches!(s.begin_delete_network("lan"), Err(StoreError::Conflict(m)) if m.contains("in use by 1 server(s): a"))
        );
        s.mark_deleted(&a.id).unwrap();
        // Being deleted: hidden, and no server can join it.
        let gone = s.begin_delete_network("br0").err();
        assert!(
            matches!(gone, Some(StoreError::NotFound { .. })),
            "by bridge name: not a key"
        );
        // Begun, then undone (the bridge had to stay): active again,
        // under its name; a second cancel changes nothing.
        let net = s.begin_delete_network(&lan.id).unwrap();
        s.cancel_delete_network(&lan.id).unwrap();
        s.cancel_delete_network(&lan.id).unwrap();
        assert_eq!(s.get_network("lan").unwrap().id, lan.id);
        assert_eq!(s.all_networks().unwrap(), vec![(net.clone(), false)]);
        let net = s.begin_delete_network(&lan.id).unwrap();
        assert!(s.get_network("lan").is_err());
        assert_eq!(s.all_networks().unwrap(), vec![(net.clone(), true)]);
        let mut late = new_server(&s, "c");
        late.nics = vec![NewNic {
            network_id: lan.id.clone(),
            mac: None,
            link: LinkState::Up,
            ip: None,
        }];
        assert!(matches!(
            s.create_server(&p, late),
            Err(StoreError::Conflict(_))
        ));
        s.finish_delete_network(&lan.id).unwrap();
        assert!(s.all_networks().unwrap().is_empty());
    }
}
