//! Glance's free-form properties of images (migration 22): read one
//! image's or every image's, and set them (with a rename) in one
//! transaction. The SQL only; the patch rules are
//! `crate::openstack::glance_props`.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{OptionalExtension, TransactionBehavior};

use super::{not_found, Store, StoreError};

type Props = BTreeMap<String, String>;

fn parse(json: &str) -> Props {
    serde_json::from_str(json).unwrap_or_default()
}

impl Store {
    /// Image `id`'s properties.
    pub fn image_properties(&self, id: &str) -> Result<Props, StoreError> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT os_properties FROM images WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        json.map(|j| parse(&j))
            .ok_or_else(|| not_found("image", id))
    }

    /// Every image's properties, by id (images without any left out).
    pub fn all_image_properties(&self) -> Result<HashMap<String, Props>, StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT id, os_properties FROM images WHERE os_properties != '{}'")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = HashMap::new();
        for r in rows {
            let (id, json) = r?;
            out.insert(id, parse(&json));
        }
        Ok(out)
    }

    /// Sets image `id`'s properties and, with `name`, renames it (a
    /// name another image has is a conflict), in one transaction.
    pub fn set_image_properties(
        &self,
        id: &str,
        name: Option<&str>,
        props: &Props,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(n) = name {
            let taken = tx
                .query_row(
                    "SELECT 1 FROM images WHERE (name = ?1 OR id = ?1) AND id != ?2",
                    [n, id],
                    |_| Ok(()),
                )
                .optional()?;
            if taken.is_some() {
                return Err(StoreError::Conflict(format!(
                    "an image named {n:?} already exists"
                )));
            }
            tx.execute("UPDATE images SET name = ?2 WHERE id = ?1", [id, n])?;
        }
        let json = serde_json::to_string(props).expect("strings serialize");
        let n = tx.execute(
            "UPDATE images SET os_properties = ?2 WHERE id = ?1",
            [id, json.as_str()],
        )?;
        if n == 0 {
            return Err(not_found("image", id));
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_read_rename() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("k.db")).unwrap();
        let conn = s.conn();
        for (id, name) in [("i1", "one"), ("i2", "two")] {
            conn.execute(
                "INSERT INTO images (id, name, kind, kernel, created_at) VALUES (?1, ?2, 'kernel', '/k', 'now')",
                [id, name],
            )
            .unwrap();
        }
        drop(conn);
        assert_eq!(s.image_properties("i1").unwrap(), Props::new());
        let p: Props = [("k".to_string(), "v".to_string())].into();
        s.set_image_properties("i1", Some("uno"), &p).unwrap();
        assert_eq!(s.image_properties("i1").unwrap(), p);
        assert_eq!(s.get_image("uno").unwrap().id, "i1");
        let all = s.all_image_properties().unwrap();
        assert_eq!((all.len(), &all["i1"]), (1, &p));
        // A taken name changes nothing.
        let q: Props = [("k".to_string(), "w".to_string())].into();
        assert!(matches!(
            s.set_image_properties("i1", Some("two"), &q),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.image_properties("i1").unwrap(), p);
        assert!(s.image_properties("nope").is_err());
        assert!(s.set_image_properties("nope", None, &p).is_err());
    }
}
