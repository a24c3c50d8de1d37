//! NICs' IPv4 addresses: picking or checking one inside the
//! server-create transaction ([`address`], called by
//! `networks.rs::insert_nics`). That transaction is `BEGIN IMMEDIATE` on
//! the store's one connection, as placement's check is, so concurrent
//! creates are serialized: each sees the addresses the ones before it
//! wrote, no address is given twice, and a refused create rolls back
//! whole. Addresses of DELETED servers are free again.
//!
//! [`Store::dhcp_port`] is the DHCP server's one question: which server's
//! NIC on a network has a MAC, and its address.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rusqlite::{OptionalExtension, Transaction};

use super::{Store, StoreError};
use crate::ipam::{self, Subnet};

/// A NIC's address on network `net_id` (subnet `cidr`, gateway
/// `gateway`): `want` if it is in the pool and free, else the lowest free
/// one. Reads the addresses held (NICs of servers not DELETED, those this
/// transaction wrote included).
pub(super) fn address(
    tx: &Transaction<'_>,
    net_name: &str,
    net_id: &str,
    cidr: &str,
    gateway: &str,
    want: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, StoreError> {
    let corrupt = |what: &str| {
        StoreError::Conflict(format!(
            "network {net_name:?} has a bad {what} in the store"
        ))
    };
    let sub = Subnet::parse(cidr).map_err(|_| corrupt("cidr"))?;
    let gw: Ipv4Addr = gateway.parse().map_err(|_| corrupt("gateway"))?;
    let mut st = tx.prepare_cached(
        "SELECT n.ip, s.name FROM nics n JOIN servers s ON s.id = n.server_id
         WHERE n.network_id = ?1 AND n.ip IS NOT NULL AND s.status != 'DELETED'",
    )?;
    let rows = st.query_map([net_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut used = HashSet::new();
    for row in rows {
        let (ip, server) = row?;
        let Ok(ip) = ip.parse::<Ipv4Addr>() else {
            continue;
        };
        if want == Some(ip) {
            return Err(StoreError::Conflict(format!(
                "address {ip} on network {net_name:?} is already used by server {server:?}"
            )));
        }
        used.insert(ip);
    }
    match want {
        Some(ip) => {
            ipam::check_ip(sub, gw, ip)
                .map_err(|e| StoreError::Conflict(format!("network {net_name:?}: {e}")))?;
            Ok(ip)
        }
        None => ipam::pick(sub, gw, &used).ok_or_else(|| {
            StoreError::Conflict(format!(
                "network {net_name:?} has no free address (all {} of {sub} are taken)",
                sub.pool_size()
            ))
        }),
    }
}

/// A NIC as DHCP answers it: its fixed address and its server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpPort {
    pub ip: Ipv4Addr,
    pub server_id: String,
    pub server_name: String,
}

impl Store {
    /// The NIC with MAC `mac` (lower case, as stored) on network
    /// `network_id`, of a server not DELETED, if it has an address.
    pub fn dhcp_port(&self, network_id: &str, mac: &str) -> Result<Option<DhcpPort>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT n.ip, s.id, s.name FROM nics n JOIN servers s ON s.id = n.server_id
             WHERE n.mac = ?2 AND n.network_id = ?1 AND n.ip IS NOT NULL
               AND s.status != 'DELETED'
             LIMIT 1",
        )?;
        let row = st
            .query_row([network_id, mac], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        Ok(row.and_then(|(ip, server_id, server_name)| {
            Some(DhcpPort {
                ip: ip.parse().ok()?,
                server_id,
                server_name,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use kiln_api::compute::{LinkState, Network, NetworkMode};

    use crate::ipam;
    use crate::store::servers::tests::{new_server, placement};
    use crate::store::{NetworkSpec, NewNic, Store};

    fn spec(cidr: &str) -> NetworkSpec {
        NetworkSpec {
            subnet: ipam::check_subnet(Some(cidr), None, &[]).unwrap(),
            dhcp: true,
            mode: NetworkMode::Nat,
        }
    }

    fn nic(net: &Network, ip: Option<&str>) -> NewNic {
        NewNic {
            network_id: net.id.clone(),
            mac: None,
            link: LinkState::Up,
            ip: ip.map(|a| a.parse().unwrap()),
        }
    }

    /// Subnets never overlap; addresses are picked lowest first, asked-for
    /// ones checked, an exhausted pool refused naming the network, and a
    /// refused create writes nothing; a DELETED server's address is free.
    #[test]
    fn subnets_and_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let lan = s
            .create_network("lan", "br0", 1500, true, &spec("10.0.0.0/29"))
            .unwrap();
        assert_eq!(
            (
                lan.cidr.as_deref(),
                lan.gateway.as_deref(),
                lan.mode,
                lan.dhcp
            ),
            (
                Some("10.0.0.0/29"),
                Some("10.0.0.1"),
                NetworkMode::Nat,
                true
            )
        );
        let e = s
            .create_network("wan", "br1", 1500, true, &spec("10.0.0.0/24"))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("10.0.0.0/24 overlaps 10.0.0.0/29 of network \"lan\""),
            "{e}"
        );
        let l2 = s
            .create_network("l2", "br2", 1500, true, &NetworkSpec::default())
            .unwrap();
        let p = placement(100);
        let mut a = new_server(&s, "a");
        a.nics = vec![nic(&lan, Some("10.0.0.5")), nic(&lan, None), nic(&l2, None)];
        let a = s.create_server(&p, a).unwrap();
        let ips: Vec<_> = a.nics.iter().map(|n| n.ip.as_deref()).collect();
        assert_eq!(ips, [Some("10.0.0.5"), Some("10.0.0.2"), None]);
        // Taken, and the gateway: refused, nothing written.
        for (want, why) in [
            (
                "10.0.0.5",
                "address 10.0.0.5 on network \"lan\" is already used by server \"a\"",
            ),
            ("10.0.0.1", "is the gateway"),
        ] {
            let mut b = new_server(&s, "b");
            b.nics = vec![nic(&lan, None), nic(&lan, Some(want))];
            let e = s.create_server(&p, b).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
        assert_eq!(s.list_servers(None, None).unwrap().len(), 1);
        // The pool (2..=6 but 1) has 3 left: a server with 4 NICs is refused.
        let mut b = new_server(&s, "b");
        b.nics = (0..4).map(|_| nic(&lan, None)).collect();
        let e = s.create_server(&p, b).unwrap_err();
        assert!(
            e.to_string()
                .contains("network \"lan\" has no free address (all 5 of 10.0.0.0/29 are taken)"),
            "{e}"
        );
        let mut b = new_server(&s, "b");
        b.nics = (0..3).map(|_| nic(&lan, None)).collect();
        let b = s.create_server(&p, b).unwrap();
        let ips: Vec<_> = b.nics.iter().filter_map(|n| n.ip.clone()).collect();
        assert_eq!(ips, ["10.0.0.3", "10.0.0.4", "10.0.0.6"]);
        // Released on delete.
        s.mark_deleted(&a.id).unwrap();
        let mut c = new_server(&s, "c");
        c.nics = vec![nic(&lan, Some("10.0.0.5")), nic(&lan, None)];
        let c = s.create_server(&p, c).unwrap();
        assert_eq!(c.nics[1].ip.as_deref(), Some("10.0.0.2"));

        // DHCP's lookup: by network and MAC, live servers only.
        let mac = &c.nics[0].mac;
        let port = s.dhcp_port(&lan.id, mac).unwrap().unwrap();
        assert_eq!(
            (port.ip.to_string(), port.server_name.as_str()),
            ("10.0.0.5".into(), "c")
        );
        assert_eq!(s.dhcp_port(&l2.id, mac).unwrap(), None);
        assert_eq!(s.dhcp_port(&lan.id, &a.nics[0].mac).unwrap(), None);
        s.mark_deleted(&c.id).unwrap();
        assert_eq!(s.dhcp_port(&lan.id, mac).unwrap(), None);
    }

    /// A store from before the subnets migration: its networks are L2
    /// only (bridged, DHCP on) and its NICs have no address.
    #[test]
    fn upgrade_keeps_old_networks_l2_only() {
        use super::super::MIGRATIONS;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kiln.db");
        {
            let conn = crate::store::connection_at_migration(&db, 10);
            conn.execute_batch(
                "INSERT INTO networks (id, name, bridge, mtu, managed, created_at)
                 VALUES ('n1', 'old', 'brold', 1500, 1, 'then');
                 INSERT INTO servers (id, name, status, flavor_id, image_id, vcpus, ram_mb, disk_gb,
                                      cmdline, metadata, created_at, updated_at)
                 VALUES ('s1', 'old', 'SHUTOFF', 'f1', 'i1', 1, 64, 1, '', '{}', 'then', 'then');
                 INSERT INTO nics (server_id, idx, network_id, mac, tap)
                 VALUES ('s1', 0, 'n1', '52:54:00:00:00:09', 'kts1');",
            )
            .unwrap();
        }
        let s = Store::open(&db).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let n = s.get_network("old").unwrap();
        assert_eq!(
            (n.cidr, n.gateway, n.dhcp, n.mode),
            (None, None, true, NetworkMode::Bridged)
        );
        assert!(n.dns_nameservers.is_empty());
        assert_eq!(s.get_server("s1").unwrap().nics[0].ip, None);
    }

    /// 50 creates from two connections (two stores on one file, as two
    /// kilnd threads would be) on a /28: exactly its 13 addresses are
    /// given, each once; the 37 refused leave no row.
    #[test]
    fn concurrent_creates_from_two_connections_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let stores: Vec<_> = (0..2)
            .map(|_| std::sync::Arc::new(Store::open(&db).unwrap()))
            .collect();
        let lan = stores[0]
            .create_network("lan", "br0", 1500, true, &spec("10.0.0.16/28"))
            .unwrap();
        let p = placement(100);
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let s = stores[i % 2].clone();
                let (p, lan) = (p.clone(), lan.clone());
                std::thread::spawn(move || {
                    let mut new = new_server(&s, &format!("s{i}"));
                    new.nics = vec![nic(&lan, None)];
                    s.create_server(&p, new)
                        .map(|srv| srv.nics[0].ip.clone().unwrap())
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        let (ok, refused): (Vec<_>, Vec<_>) = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .partition(|r| r.is_ok());
        let mut ips: Vec<String> = ok.into_iter().map(Result::unwrap).collect();
        ips.sort_by_key(|a| a.parse::<std::net::Ipv4Addr>().unwrap());
        let want: Vec<String> = (18..31).map(|h| format!("10.0.0.{h}")).collect();
        assert_eq!(ips, want);
        assert_eq!(refused.len(), 37);
        for e in refused {
            assert!(e
                .unwrap_err()
                .contains("network \"lan\" has no free address"));
        }
        assert_eq!(stores[1].list_servers(None, None).unwrap().len(), 13);
    }
}
