//! The pid of each server's swtpm (its TPM 2.0), next to its VMM's.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

impl Store {
    /// Records the pid of server `id`'s swtpm; `None` once it is gone.
    pub fn set_tpm_pid(&self, id: &str, pid: Option<u32>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE servers SET tpm_pid = ?2 WHERE id = ?1",
            params![id, pid],
        )?;
        Ok(())
    }

    /// The pid recorded for server `id`'s swtpm, if any.
    pub fn tpm_pid(&self, id: &str) -> Result<Option<u32>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT tpm_pid FROM servers WHERE id = ?1", [id], |r| {
                r.get::<_, Option<u32>>(0)
            })
            .optional()?
            .flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::super::servers::tests::{new_server, placement};
    use super::*;

    #[test]
    fn tpm_flag_and_pid_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let mut new = new_server(&s, "t");
        new.tpm = true;
        let a = s.create_server(&placement(2), new).unwrap();
        assert!(a.tpm);
        assert_eq!(s.tpm_pid(&a.id).unwrap(), None);
        s.set_tpm_pid(&a.id, Some(4242)).unwrap();
        assert_eq!(s.tpm_pid(&a.id).unwrap(), Some(4242));
        s.set_tpm_pid(&a.id, None).unwrap();
        assert_eq!(s.tpm_pid(&a.id).unwrap(), None);
        let b = s.create_server(&placement(2), new_server(&s, "u")).unwrap();
        assert!(!b.tpm);
    }

    #[test]
    fn upgrade_gives_old_rows_no_tpm() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        // As migration 13 left it, before the TPM columns.
        let conn = super::super::connection_at_migration(&db, 13);
        conn.execute_batch(
            "INSERT INTO images (id, name, kind, kernel, created_at) VALUES ('i', 'i', 'kernel', '/k', 'then');",
        )
        .unwrap();
        drop(conn);
        let s = Store::open(&db).unwrap();
        assert!(!s.get_image("i").unwrap().tpm);
    }
}
