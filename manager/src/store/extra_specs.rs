//! Flavor extra specs in the store (migration 8): a JSON object in
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
