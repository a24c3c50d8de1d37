//! A network's subnet set or cleared after the network was made (what
//! Neutron's `POST /subnets` and `DELETE /subnets/{id}` do to a Kiln
//! network), and the name Neutron gave it (`networks.subnet_name`,
//! migration 20). Both happen only while no server has a NIC on the
//! network: a NIC's address is fixed for its server's life.

use std::collections::HashMap;

use kiln_api::compute::Network;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::networks::user_names;
use super::{not_found, Store, StoreError};
use crate::ipam::{Subnet, SubnetSpec};

impl Store {
    /// Gives network `id` (which has none) its subnet; 409 if it has one,
    /// if servers have NICs on it, or if the subnet overlaps another
    /// network's. `None` takes the subnet away (409 while servers use it).
    pub fn set_network_subnet(
        &self,
        id: &str,
        subnet: Option<(&SubnetSpec, bool, Option<&str>)>,
    ) -> Result<Network, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (name, cidr): (String, Option<String>) = tx
            .query_row(
                "SELECT name, cidr FROM networks WHERE id = ?1 AND status = 'active'",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| not_found("network", id))?;
        let users = user_names(&tx, id)?;
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "network {name:?} has NICs of {} server(s): {}; its subnet is fixed while \
                 servers use it",
                users.len(),
                users.join(", ")
            )));
        }
        match subnet {
            Some((spec, dhcp, subnet_name)) => {
                if let Some(c) = cidr {
                    return Err(StoreError::Conflict(format!(
                        "network {name:?} already has subnet {c}: a Kiln network has one \
                         IPv4 subnet"
                    )));
                }
                let mut st = tx.prepare(
                    "SELECT name, cidr FROM networks WHERE cidr IS NOT NULL AND id != ?1",
                )?;
                let rows = st.query_map([id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?;
                for row in rows {
                    let (other, c) = row?;
                    if Subnet::parse(&c).is_ok_and(|c| c.overlaps(spec.cidr)) {
                        return Err(StoreError::Conflict(format!(
                            "cidr {} overlaps {c} of network {other:?}",
                            spec.cidr
                        )));
                    }
                }
                drop(st);
                let dns: Vec<String> = spec.dns.iter().map(|d| d.to_string()).collect();
                tx.execute(
                    "UPDATE networks SET cidr = ?2, gateway = ?3, dhcp = ?4, dns = ?5,
                                         subnet_name = ?6
                     WHERE id = ?1",
                    params![
                        id,
                        spec.cidr.to_string(),
                        spec.gateway.to_string(),
                        dhcp,
                        serde_json::to_string(&dns).unwrap_or_else(|_| "[]".into()),
                        subnet_name
                    ],
                )?;
            }
            None => {
                if cidr.is_none() {
                    return Err(StoreError::Conflict(format!(
                        "network {name:?} has no subnet"
                    )));
                }
                tx.execute(
                    "UPDATE networks SET cidr = NULL, gateway = NULL, dns = '[]',
                                         subnet_name = NULL
                     WHERE id = ?1",
                    [id],
                )?;
            }
        }
        tx.commit()?;
        drop(conn);
        self.get_network(id)
    }

    /// The names Neutron gave subnets, by network id (networks whose
    /// subnet has none are left out).
    pub fn subnet_names(&self) -> Result<HashMap<String, String>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, subnet_name FROM networks
             WHERE subnet_name IS NOT NULL AND status = 'active'",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
