//! Flavor extra specs in the store (migration 9): a JSON object in
//! `flavors.extra_specs`, copied into `servers.extra_specs` when a server
//! is created, so a server keeps its flavor's limits (`crate::qos`) after
//! the flavor is deleted, as Nova keeps the flavor with the instance.

use std::collections::BTreeMap;

use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension};

use super::{not_found, Store, StoreError};

pub(super) fn to_json(specs: &BTreeMap<String, String>) -> String {
    serde_json::to_string(specs).unwrap_or_else(|_| "{}".into())
}

/// A stored JSON object back; a column that is not one is an error of the
/// row (never silently no limits).
pub(super) fn from_json(col: usize, json: &str) -> rusqlite::Result<BTreeMap<String, String>> {
    serde_json::from_str(json)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(col, Type::Text, Box::new(e)))
}

/// Records a new server's copy of its flavor's extra specs (in the
/// transaction that inserts the server).
pub(super) fn copy_to_server(
    conn: &Connection,
    server_id: &str,
    specs: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE servers SET extra_specs = ?2 WHERE id = ?1",
        params![server_id, to_json(specs)],
    )?;
    Ok(())
}

impl Store {
    /// Replaces flavor `id`'s extra specs (checked by the caller,
    /// `crate::flavors::update_extra_specs`).
    pub fn set_flavor_extra_specs(
        &self,
        id: &str,
        specs: &BTreeMap<String, String>,
    ) -> Result<kiln_api::compute::Flavor, StoreError> {
        let n = self.conn().execute(
            "UPDATE flavors SET extra_specs = ?2 WHERE id = ?1",
            params![id, to_json(specs)],
        )?;
        if n == 0 {
            return Err(not_found("flavor", id));
        }
        self.get_flavor(id)
    }

    /// The extra specs of the flavor a server was made from, as they were
    /// when it was made.
    pub fn server_extra_specs(&self, id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let conn = self.conn();
        let json: String = conn
            .query_row(
                "SELECT extra_specs FROM servers WHERE id = ?1 AND status != 'DELETED'",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| not_found("server", id))?;
        Ok(from_json(0, &json)?)
    }
}

#[cfg(test)]
mod tests {
    use kiln_api::compute::FlavorCreate;

    use super::super::MIGRATIONS;
    use super::*;

    /// A store made before migration 9: its flavors and servers get no
    /// extra specs (no limits), and new flavors keep theirs.
    #[test]
    fn upgrade_from_8_gives_old_rows_none() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kiln.db");
        {
            let conn = crate::store::connection_at_migration(&db, 8);
            conn.execute_batch(
                "INSERT INTO flavors (id, name, vcpus, ram_mb, disk_gb, created_at)
                 VALUES ('f1', 'old', 1, 64, 1, 'then');
                 INSERT INTO servers (id, name, status, flavor_id, image_id, vcpus, ram_mb, disk_gb,
                                      cmdline, metadata, created_at, updated_at)
                 VALUES ('s1', 'old', 'SHUTOFF', 'f1', 'i1', 1, 64, 1, '', '{}', 'then', 'then');",
            )
            .unwrap();
        }
        let s = Store::open(&db).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert!(s.get_flavor("old").unwrap().extra_specs.is_empty());
        assert!(s.server_extra_specs("s1").unwrap().is_empty());
        assert!(matches!(
            s.server_extra_specs("nope"),
            Err(StoreError::NotFound { .. })
        ));
        let specs: BTreeMap<String, String> =
            [("quota:vif_inbound_average".into(), "100".into())].into();
        let f = s
            .create_flavor(&FlavorCreate {
                name: "new".into(),
                vcpus: 1,
                ram_mb: 64,
                disk_gb: 1,
                extra_specs: specs.clone(),
            })
            .unwrap();
        let listed = s.list_flavors().unwrap();
        assert_eq!(
            listed.iter().find(|f| f.name == "new").unwrap().extra_specs,
            specs
        );
        assert_eq!(s.get_flavor(&f.id).unwrap().extra_specs, specs);
        // A row that is not a JSON object is an error, never no limits.
        s.conn()
            .execute(
                "UPDATE servers SET extra_specs = 'junk' WHERE id = 's1'",
                [],
            )
            .unwrap();
        assert!(matches!(
            s.server_extra_specs("s1"),
            Err(StoreError::Sqlite(_))
        ));
    }
}
