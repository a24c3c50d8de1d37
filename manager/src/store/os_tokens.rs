//! Keystone token rows (migrations 19 and 20): insert, look up by hash, revoke,
//! and purge the expired. The SQL only; what a token means is
//! `crate::openstack::tokens`.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// One issued token, by the SHA-256 (hex) of its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub hash: String,
    /// The kilnd that issued it (`kiln_instance`).
    pub instance: String,
    pub user_id: String,
    pub project_id: String,
    /// The auth methods, comma-separated (`password`, `password,token`).
    pub methods: String,
    pub audit_id: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub revoked: bool,
    /// The application credential it was issued through (migration 21),
    /// directly or from a token that was.
    pub app_cred_id: Option<String>,
}

impl Store {
    pub fn insert_token(&self, t: &TokenRow) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO os_tokens (hash, instance, user_id, project_id, methods, audit_id,
                                    issued_at, expires_at, revoked, app_cred_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                t.hash,
                t.instance,
                t.user_id,
                t.project_id,
                t.methods,
                t.audit_id,
                t.issued_at as i64,
                t.expires_at as i64,
                t.revoked,
                t.app_cred_id
            ],
        )?;
        Ok(())
    }

    /// The token whose hash is `hash`, if one was issued here.
    pub fn get_token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT hash, instance, user_id, project_id, methods, audit_id,
                        issued_at, expires_at, revoked, app_cred_id
                 FROM os_tokens WHERE hash = ?1",
                [hash],
                |r| {
                    Ok(TokenRow {
                        hash: r.get(0)?,
                        instance: r.get(1)?,
                        user_id: r.get(2)?,
                        project_id: r.get(3)?,
                        methods: r.get(4)?,
                        audit_id: r.get(5)?,
                        issued_at: r.get::<_, i64>(6)? as u64,
                        expires_at: r.get::<_, i64>(7)? as u64,
                        revoked: r.get(8)?,
                        app_cred_id: r.get(9)?,
                    })
                },
            )
            .optional()?)
    }

    /// Revokes the token; false if it was not there or already revoked.
    pub fn revoke_token(&self, hash: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE os_tokens SET revoked = 1 WHERE hash = ?1 AND revoked = 0",
            [hash],
        )?;
        Ok(n == 1)
    }

    /// Forgets tokens that expired before `before` (unix seconds).
    pub fn purge_tokens(&self, before: u64) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM os_tokens WHERE expires_at < ?1",
            [before as i64],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_revoke_purge() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("k.db")).unwrap();
        let t = TokenRow {
            hash: "h".into(),
            instance: s.instance_id().unwrap(),
            user_id: "u".into(),
            project_id: "p".into(),
            methods: "password".into(),
            audit_id: "a".into(),
            issued_at: 10,
            expires_at: 20,
            revoked: false,
            app_cred_id: None,
        };
        s.insert_token(&t).unwrap();
        assert_eq!(s.get_token("h").unwrap(), Some(t.clone()));
        assert_eq!(s.get_token("x").unwrap(), None);
        assert!(s.revoke_token("h").unwrap());
        assert!(!s.revoke_token("h").unwrap());
        assert!(s.get_token("h").unwrap().unwrap().revoked);
        assert_eq!(s.purge_tokens(20).unwrap(), 0);
        assert_eq!(s.purge_tokens(21).unwrap(), 1);
        assert_eq!(s.get_token("h").unwrap(), None);
    }
}
