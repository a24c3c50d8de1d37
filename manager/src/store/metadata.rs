//! What the metadata service reads and keeps beyond a server's row: the
//! NIC a guest's request comes from, and the password the guest posts
//! (Nova's os-server-password).

use rusqlite::{params, OptionalExtension};

use super::{not_found, Store, StoreError};

/// The most a guest may post as its password (Nova's `MAX_SIZE`).
pub const MAX_PASSWORD: usize = 256;

impl Store {
    /// How many rows the store has changed so far (SQLite's
    /// `total_changes` of its one connection): an unchanged count means
    /// nothing was written, not even a server's delete.
    pub fn changes(&self) -> u64 {
        self.conn().total_changes()
    }

    /// The server (not DELETED) and MAC of the NIC holding `ip` on
    /// network `network_id`, if any.
    pub fn nic_at(
        &self,
        network_id: &str,
        ip: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT n.server_id, n.mac FROM nics n JOIN servers s ON s.id = n.server_id
                 WHERE n.network_id = ?1 AND n.ip = ?2 AND s.status != 'DELETED'",
            )?
            .query_row(params![network_id, ip], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// The password server `id`'s guest posted, if any.
    pub fn server_password(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .prepare_cached("SELECT password FROM servers WHERE id = ?1 AND status != 'DELETED'")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .ok_or_else(|| not_found("server", id))
    }

    /// Keeps the password server `id`'s guest posted; 409 when one is
    /// kept already (as Nova: it is cleared through the API first).
    pub fn set_server_password(&self, id: &str, password: &str) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE servers SET password = ?2
             WHERE id = ?1 AND status != 'DELETED' AND COALESCE(password, '') = ''",
            params![id, password],
        )?;
        if n == 0 {
            // Either gone, or a password is set.
            self.server_password(id)?;
            return Err(StoreError::Conflict(format!(
                "server {id} has a password already"
            )));
        }
        Ok(())
    }

    /// Forgets the password of server `id` (os-server-password's clear).
    pub fn clear_server_password(&self, id: &str) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE servers SET password = NULL WHERE id = ?1 AND status != 'DELETED'",
            [id],
        )?;
        if n == 0 {
            return Err(not_found("server", id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_set_once_until_cleared_and_upgrade_from_11() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kiln.db");
        {
            let conn = crate::store::connection_at_migration(&db, 11);
            conn.execute_batch(
                "INSERT INTO servers (id, name, status, flavor_id, image_id, vcpus, ram_mb, disk_gb,
                                      cmdline, metadata, created_at, updated_at, user_data)
                 VALUES ('old', 'old', 'SHUTOFF', 'f', 'i', 1, 64, 0, '', '{}', 't', 't', 'aGk=')",
            )
            .unwrap();
        }
        let s = Store::open(&db).unwrap();
        assert_eq!(s.server_password("old").unwrap(), None);
        assert_eq!(s.server_user_data("old").unwrap().as_deref(), Some("aGk="));
        s.set_server_password("old", "c2VjcmV0").unwrap();
        assert!(matches!(
            s.set_server_password("old", "other"),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            s.server_password("old").unwrap().as_deref(),
            Some("c2VjcmV0")
        );
        s.clear_server_password("old").unwrap();
        assert_eq!(s.server_password("old").unwrap(), None);
        s.set_server_password("old", "again").unwrap();
        assert!(matches!(
            s.set_server_password("gone", "x"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.clear_server_password("gone"),
            Err(StoreError::NotFound { .. })
        ));
    }
}
