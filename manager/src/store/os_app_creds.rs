//! Keystone application credential rows (migration 21): insert, list,
//! look up, and delete with the tokens issued through them revoked in the
//! same transaction. The SQL only; what a credential grants is
//! `crate::openstack::app_creds`.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use super::{not_found, Store, StoreError};

/// One application credential; its secret only as a hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCredRow {
    pub id: String,
    /// The kilnd that made it (`kiln_instance`).
    pub instance: String,
    pub user_id: String,
    pub project_id: String,
    pub name: String,
    pub description: Option<String>,
    pub secret_hash: String,
    /// Role names.
    pub roles: Vec<String>,
    pub unrestricted: bool,
    /// Unix seconds; `None`: never.
    pub expires_at: Option<u64>,
    pub created_at: u64,
}

const COLS: &str = "id, instance, user_id, project_id, name, description, secret_hash, roles,
                    unrestricted, expires_at, created_at";

fn row(r: &Row<'_>) -> rusqlite::Result<AppCredRow> {
    let roles: String = r.get(7)?;
    Ok(AppCredRow {
        id: r.get(0)?,
        instance: r.get(1)?,
        user_id: r.get(2)?,
        project_id: r.get(3)?,
        name: r.get(4)?,
        description: r.get(5)?,
        secret_hash: r.get(6)?,
        roles: serde_json::from_str(&roles).unwrap_or_default(),
        unrestricted: r.get(8)?,
        expires_at: r.get::<_, Option<i64>>(9)?.map(|e| e as u64),
        created_at: r.get::<_, i64>(10)? as u64,
    })
}

impl Store {
    /// Inserts `c`; a credential of the same user with its name is a
    /// conflict.
    pub fn insert_app_cred(&self, c: &AppCredRow) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&c.roles).expect("strings serialize");
        let r = self.conn().execute(
            &format!("INSERT INTO os_app_creds ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                c.id,
                c.instance,
                c.user_id,
                c.project_id,
                c.name,
                c.description,
                c.secret_hash,
                roles,
                c.unrestricted,
                c.expires_at.map(|e| e as i64),
                c.created_at as i64
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!(
                    "application credential {:?} already exists for this user",
                    c.name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The user's credentials made by kilnd `instance`, by name when
    /// `name` is given, oldest first.
    pub fn list_app_creds(
        &self,
        instance: &str,
        user_id: &str,
        name: Option<&str>,
    ) -> Result<Vec<AppCredRow>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {COLS} FROM os_app_creds
             WHERE instance = ?1 AND user_id = ?2 AND (?3 IS NULL OR name = ?3)
             ORDER BY created_at, id"
        ))?;
        let rows = st.query_map(params![instance, user_id, name], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The credential `id`, whoever it belongs to.
    pub fn get_app_cred(&self, id: &str) -> Result<Option<AppCredRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLS} FROM os_app_creds WHERE id = ?1"),
                [id],
                row,
            )
            .optional()?)
    }

    /// Deletes credential `id` of `user_id` and revokes every token
    /// issued through it, in one transaction; the number revoked.
    pub fn delete_app_cred(&self, user_id: &str, id: &str) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "DELETE FROM os_app_creds WHERE id = ?1 AND user_id = ?2",
            [id, user_id],
        )?;
        if n == 0 {
            return Err(not_found("application credential", id));
        }
        let revoked = tx.execute(
            "UPDATE os_tokens SET revoked = 1 WHERE app_cred_id = ?1 AND revoked = 0",
            [id],
        )?;
        tx.commit()?;
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TokenRow;

    #[test]
    fn insert_list_delete_revokes_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("k.db")).unwrap();
        let inst = s.instance_id().unwrap();
        let c = AppCredRow {
            id: "c1".into(),
            instance: inst.clone(),
            user_id: "u".into(),
            project_id: "p".into(),
            name: "ci".into(),
            description: None,
            secret_hash: "h".into(),
            roles: vec!["member".into()],
            unrestricted: false,
            expires_at: Some(99),
            created_at: 1,
        };
        s.insert_app_cred(&c).unwrap();
        let dup = AppCredRow {
            id: "c2".into(),
            ..c.clone()
        };
        assert!(matches!(
            s.insert_app_cred(&dup),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.list_app_creds(&inst, "u", None).unwrap(), vec![c.clone()]);
        assert_eq!(s.list_app_creds(&inst, "u", Some("x")).unwrap(), vec![]);
        assert_eq!(s.list_app_creds("other", "u", None).unwrap(), vec![]);
        assert_eq!(s.get_app_cred("c1").unwrap(), Some(c));
        let tok = |hash: &str, cred: Option<&str>| TokenRow {
            hash: hash.into(),
            instance: inst.clone(),
            user_id: "u".into(),
            project_id: "p".into(),
            methods: "application_credential".into(),
            audit_id: "a".into(),
            issued_at: 1,
            expires_at: u64::MAX / 4,
            revoked: false,
            app_cred_id: cred.map(str::to_owned),
        };
        s.insert_token(&tok("t1", Some("c1"))).unwrap();
        s.insert_token(&tok("t2", None)).unwrap();
        assert!(s.delete_app_cred("someone-else", "c1").is_err());
        assert_eq!(s.delete_app_cred("u", "c1").unwrap(), 1);
        assert!(s.get_token("t1").unwrap().unwrap().revoked);
        assert!(!s.get_token("t2").unwrap().unwrap().revoked);
        assert_eq!(s.get_app_cred("c1").unwrap(), None);
        assert!(matches!(
            s.delete_app_cred("u", "c1"),
            Err(StoreError::NotFound { .. })
        ));
    }
}
