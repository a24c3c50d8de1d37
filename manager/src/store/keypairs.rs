//! Key pair rows (migration 10): insert with a unique name, list, get,
//! delete. Servers keep their own copy of the key named at create
//! (`servers.keypair`), so deleting a key pair changes no server.

use kiln_api::compute::{Keypair, KeypairType};
use rusqlite::{params, OptionalExtension, Row};

use super::{not_found, Store, StoreError};

const COLS: &str = "name, public_key, fingerprint, created_at";

impl Store {
    /// Records `k` (its `private_key` is never stored); a 409 if the name
    /// is taken.
    pub fn insert_keypair(&self, k: &Keypair) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO keypairs (name, type, public_key, fingerprint, created_at)
             VALUES (?1, 'ssh', ?2, ?3, ?4)",
            params![k.name, k.public_key, k.fingerprint, k.created_at],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "a key pair named {:?} already exists",
                k.name
            )));
        }
        Ok(())
    }

    pub fn list_keypairs(&self) -> Result<Vec<Keypair>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {COLS} FROM keypairs ORDER BY name"))?;
        let rows = st.query_map([], keypair_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get_keypair(&self, name: &str) -> Result<Keypair, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLS} FROM keypairs WHERE name = ?1"),
                [name],
                keypair_row,
            )
            .optional()?
            .ok_or_else(|| not_found("key pair", name))
    }

    pub fn delete_keypair(&self, name: &str) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM keypairs WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(not_found("key pair", name));
        }
        Ok(())
    }

    /// The key pair and admin password server `id` was created with.
    pub fn server_credentials(
        &self,
        id: &str,
    ) -> Result<(Option<Keypair>, Option<String>), StoreError> {
        let (key, pass): (Option<String>, Option<String>) = self
            .conn()
            .query_row(
                "SELECT keypair, admin_pass FROM servers WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| not_found("server", id))?;
        let key = match key {
            None => None,
            Some(j) => Some(serde_json::from_str(&j).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })?),
        };
        Ok((key, pass))
    }

    /// The `user_data` server `id` was created with (base64, as given).
    pub fn server_user_data(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT user_data FROM servers WHERE id = ?1 AND status != 'DELETED'",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| not_found("server", id))
    }

    /// Every server's user data (base64) that has some, by server id: one
    /// query for Nova's `servers/detail`.
    pub fn servers_user_data(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, user_data FROM servers WHERE user_data IS NOT NULL AND status != 'DELETED'",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn keypair_row(r: &Row<'_>) -> rusqlite::Result<Keypair> {
    Ok(Keypair {
        name: r.get(0)?,
        kind: KeypairType::Ssh,
        public_key: r.get(1)?,
        fingerprint: r.get(2)?,
        private_key: None,
        created_at: r.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Keypair {
        Keypair {
            name: name.into(),
            kind: KeypairType::Ssh,
            public_key: "ssh-ed25519 AAAA x".into(),
            fingerprint: "SHA256:x".into(),
            private_key: Some("secret".into()),
            created_at: "2026-12-07T00:00:00Z".into(),
        }
    }

    #[test]
    fn names_unique_private_key_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        s.insert_keypair(&key("k1")).unwrap();
        assert!(matches!(
            s.insert_keypair(&key("k1")),
            Err(StoreError::Conflict(_))
        ));
        let got = s.get_keypair("k1").unwrap();
        assert_eq!(got.private_key, None);
        assert_eq!(s.list_keypairs().unwrap(), [got]);
        s.delete_keypair("k1").unwrap();
        assert!(matches!(
            s.delete_keypair("k1"),
            Err(StoreError::NotFound { .. })
        ));
    }

    /// A store at migration 9 upgrades: old servers have no key pair.
    #[test]
    fn upgrade_from_9_gives_old_servers_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kiln.db");
        {
            let conn = crate::store::connection_at_migration(&db, 9);
            conn.execute_batch(
                "INSERT INTO servers (id, name, status, flavor_id, image_id, vcpus, ram_mb, disk_gb,
                                      cmdline, metadata, created_at, updated_at)
                 VALUES ('old', 'old', 'SHUTOFF', 'f', 'i', 1, 64, 0, '', '{}', 't', 't')",
            )
            .unwrap();
        }
        let s = Store::open(&db).unwrap();
        assert!(s.schema_version().unwrap() >= 10);
        assert_eq!(s.server_credentials("old").unwrap(), (None, None));
        s.insert_keypair(&key("k")).unwrap();
    }

    /// A store at migration 11 upgrades: old servers have no config drive
    /// and keep their user data.
    #[test]
    fn upgrade_from_11_gives_old_servers_no_config_drive() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kiln.db");
        {
            let conn = crate::store::connection_at_migration(&db, 11);
            conn.execute_batch(
                "INSERT INTO servers (id, name, status, flavor_id, image_id, vcpus, ram_mb, disk_gb,
                                      cmdline, user_data, metadata, created_at, updated_at)
                 VALUES ('old', 'old', 'SHUTOFF', 'f', 'i', 1, 64, 0, '', 'aGk=', '{}', 't', 't')",
            )
            .unwrap();
        }
        let s = Store::open(&db).unwrap();
        assert!(s.schema_version().unwrap() >= 12);
        assert!(!s.get_server("old").unwrap().config_drive);
        assert_eq!(s.server_user_data("old").unwrap().as_deref(), Some("aGk="));
        assert!(matches!(
            s.server_user_data("nope"),
            Err(StoreError::NotFound { .. })
        ));
    }
}
