//! The SQLite store under the state directory: flavors, images, servers,
//! networks (`networks.rs`), key pairs (`keypairs.rs`), what the metadata
//! service reads and keeps (`metadata.rs`).
//!
//! One connection in WAL mode behind a mutex. The schema is created by
//! numbered migrations recorded in `schema_migrations`. A server row carries
//! its allocation (vcpus, ram_mb, disk_gb copied from the flavor); every row
//! whose status is not DELETED counts against placement. Creating a server
//! checks placement and inserts the row in one `BEGIN IMMEDIATE` transaction.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_api::compute::{
    DiskBus, Firmware, Flavor, FlavorCreate, Image, ImageKind, ImageStatus, ImportProgress, OsType,
    VirtioModel,
};
#[cfg(test)]
pub(crate) use migrations::connection_at_migration;
use migrations::MIGRATIONS;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use thiserror::Error;

use crate::placement::Refusal;
use crate::util::now_rfc3339;

mod addresses;
mod extra_specs;
mod keypairs;
mod metadata;
mod migrations;
mod networks;
mod os_app_creds;
mod os_image_props;
mod os_tokens;
mod servers;
mod subnets;
mod tpm;

pub use addresses::DhcpPort;
pub use metadata::MAX_PASSWORD;
pub use networks::{NetworkSpec, NewNic};
pub use os_app_creds::AppCredRow;
pub use os_tokens::TokenRow;
/// Test helpers (a new server, a placement) for other modules' tests.
#[cfg(test)]
pub(crate) use servers::tests as test_servers;
pub use servers::NewServer;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NoCapacity(Refusal),
}

/// The flavors a new store starts with.
const SEED_FLAVORS: &[(&str, u32, u64, u64)] = &[
    ("m1.tiny", 1, 512, 1),
    ("m1.small", 1, 2048, 20),
    ("m1.medium", 2, 4096, 40),
    ("m1.large", 4, 8192, 80),
    ("k1.probe", 1, 64, 1),
];

pub struct Store {
    conn: Mutex<Connection>,
    /// The unfiltered server list as JSON and the connection's change count
    /// it was made at (see [`Store::servers_json`]).
    list_json: Mutex<Option<(u64, bytes::Bytes)>>,
}

impl Store {
    /// Runs `f` on the store off the async executor, on tokio's blocking
    /// pool: SQLite calls block (the connection's lock, the disk), so async
    /// code (handlers, the domain) reaches the store through this. A panic
    /// in `f` is the caller's panic.
    pub async fn call<T, F>(self: &Arc<Self>, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> T + Send + 'static,
    {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let store = Store {
            conn: Mutex::new(conn),
            list_json: Mutex::new(None),
        };
        store.migrate()?;
        Ok(store)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every
        // change is in a transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        )?;
        let done: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?;
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= done {
                continue;
            }
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, now_rfc3339()],
            )?;
            if version == 1 {
                for (name, vcpus, ram, disk) in SEED_FLAVORS {
                    tx.execute(
                        "INSERT INTO flavors (id, name, vcpus, ram_mb, disk_gb, created_at)
                         VALUES (?1, ?1, ?2, ?3, ?4, ?5)",
                        params![name, vcpus, ram, disk, now_rfc3339()],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })?)
    }

    // ---- flavors ----

    pub fn list_flavors(&self) -> Result<Vec<Flavor>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, name, vcpus, ram_mb, disk_gb, extra_specs FROM flavors ORDER BY vcpus, ram_mb, name",
        )?;
        let rows = st.query_map([], flavor_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A flavor by id or name.
    pub fn get_flavor(&self, key: &str) -> Result<Flavor, StoreError> {
        self.conn()
            .query_row(
                "SELECT id, name, vcpus, ram_mb, disk_gb, extra_specs FROM flavors WHERE id = ?1 OR name = ?1",
                [key],
                flavor_row,
            )
            .optional()?
            .ok_or_else(|| not_found("flavor", key))
    }

    pub fn create_flavor(&self, req: &FlavorCreate) -> Result<Flavor, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO flavors (id, name, vcpus, ram_mb, disk_gb, created_at, extra_specs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                req.name,
                req.vcpus,
                req.ram_mb,
                req.disk_gb,
                now_rfc3339(),
                extra_specs::to_json(&req.extra_specs)
            ],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "a flavor named {:?} already exists",
                req.name
            )));
        }
        self.get_flavor(&id)
    }

    /// Deletes a flavor; servers made from it keep their allocation.
    pub fn delete_flavor(&self, key: &str) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM flavors WHERE id = ?1 OR name = ?1", [key])?;
        if n == 0 {
            return Err(not_found("flavor", key));
        }
        Ok(())
    }

    // ---- images ----

    pub fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {IMAGE_COLS} FROM images ORDER BY created_at, name"
        ))?;
        let rows = st.query_map([], image_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get_image(&self, key: &str) -> Result<Image, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {IMAGE_COLS} FROM images WHERE id = ?1 OR name = ?1"),
                [key],
                image_row,
            )
            .optional()?
            .ok_or_else(|| not_found("image", key))
    }

    pub fn image_name_taken(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM images WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn insert_image(&self, img: &Image) -> Result<(), StoreError> {
        let (firmware, os_type) = match &img.kind {
            ImageKind::Disk {
                firmware, os_type, ..
            } => (Some(firmware.as_str()), Some(os_type.as_str())),
            ImageKind::Kernel { .. } => (None, None),
        };
        let (kind, kernel, initramfs, cmdline, format, path, size, sha) = match &img.kind {
            ImageKind::Kernel {
                kernel,
                initramfs,
                cmdline,
            } => (
                "kernel",
                Some(kernel.clone()),
                initramfs.clone(),
                Some(cmdline.clone()),
                None,
                None,
                None,
                None,
            ),
            ImageKind::Disk {
                format,
                path,
                size_bytes,
                sha256,
                ..
            } => (
                "disk",
                None,
                None,
                None,
                Some(format.as_str()),
                Some(path.clone()),
                Some(*size_bytes as i64),
                Some(sha256.clone()),
            ),
        };
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO images (id, name, kind, kernel, initramfs, cmdline, format, path, size_bytes, sha256, created_at, status, firmware, os_type, virtio_model, tpm, display, disk_bus, secure_boot, agent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            params![img.id, img.name, kind, kernel, initramfs, cmdline, format, path, size, sha, img.created_at, image_status_str(img.status), firmware, os_type, img.virtio_model.as_str(), img.tpm, img.display.as_str(), img.disk_bus.as_str(), img.secure_boot, img.agent],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "an image named {:?} already exists",
                img.name
            )));
        }
        Ok(())
    }

    /// Deletes an image no server uses; answers the deleted image.
    pub fn delete_image(&self, key: &str) -> Result<Image, StoreError> {
        let img = self.get_image(key)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let users: i64 = tx.query_row(
            "SELECT COUNT(*) FROM servers
             WHERE (image_id = ?1 OR disk_image_id = ?1
                    OR EXISTS (SELECT 1 FROM json_each(servers.cdroms) WHERE json_each.value = ?1))
               AND status != 'DELETED'",
            [&img.id],
            |r| r.get(0),
        )?;
        if users > 0 {
            return Err(StoreError::Conflict(format!(
                "image {:?} is in use by {users} server(s)",
                img.name
            )));
        }
        if img.status == ImageStatus::Importing {
            return Err(StoreError::Conflict(format!(
                "image {:?} is still importing",
                img.name
            )));
        }
        tx.execute("DELETE FROM images WHERE id = ?1", [&img.id])?;
        tx.commit()?;
        Ok(img)
    }

    /// Records how far an import got.
    pub fn set_import_progress(&self, id: &str, bytes_done: u64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE images SET bytes_done = ?2 WHERE id = ?1 AND status = 'importing'",
            params![id, bytes_done as i64],
        )?;
        Ok(())
    }

    /// Marks an import done, with the image's size and sha256.
    pub fn finish_import(&self, id: &str, size: u64, sha256: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE images SET status = 'active', size_bytes = ?2, sha256 = ?3, bytes_done = NULL
             WHERE id = ?1",
            params![id, size as i64, sha256],
        )?;
        Ok(())
    }

    /// Marks an import failed, saying why.
    pub fn fail_import(&self, id: &str, why: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE images SET status = 'error', fault = ?2, bytes_done = NULL WHERE id = ?1",
            params![id, why],
        )?;
        Ok(())
    }

    /// Starts an upload: `queued` becomes `importing` of `total` bytes
    /// (0: unknown). False if the image was not `queued` (a concurrent
    /// upload won, or it is not an upload).
    pub fn start_upload(&self, id: &str, total: u64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE images SET status = 'importing', bytes_done = 0, size_bytes = ?2
             WHERE id = ?1 AND status = 'queued'",
            params![id, total as i64],
        )?;
        Ok(n == 1)
    }

    /// An upload that did not end (client gone, too large): `queued` again,
    /// ready for another try.
    pub fn requeue_upload(&self, id: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE images SET status = 'queued', bytes_done = NULL, size_bytes = 0
             WHERE id = ?1 AND status = 'importing'",
            params![id],
        )?;
        Ok(())
    }

    /// Images left `importing` (by a kilnd that stopped mid-import).
    pub fn importing_images(&self) -> Result<Vec<Image>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {IMAGE_COLS} FROM images WHERE status = 'importing'"
        ))?;
        let rows = st.query_map([], image_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

const IMAGE_COLS: &str =
    "id, name, kind, kernel, initramfs, cmdline, format, path, size_bytes, sha256, \
     created_at, status, bytes_done, fault, firmware, os_type, virtio_model, tpm, display, disk_bus, secure_boot, agent";

fn image_status_str(s: ImageStatus) -> &'static str {
    match s {
        ImageStatus::Active => "active",
        ImageStatus::Importing => "importing",
        ImageStatus::Error => "error",
        ImageStatus::Queued => "queued",
    }
}

pub(crate) fn not_found(kind: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_owned(),
    }
}

/// A firmware column: NULL (rows from before migration 5) is bios.
pub(crate) fn firmware_from(s: Option<String>) -> Firmware {
    match s.as_deref() {
        Some("uefi") => Firmware::Uefi,
        _ => Firmware::Bios,
    }
}

/// A disk_bus column: NULL (rows from before migration 17) is virtio.
pub(crate) fn disk_bus_from(s: Option<String>) -> DiskBus {
    match s.as_deref() {
        Some("sata") => DiskBus::Sata,
        _ => DiskBus::Virtio,
    }
}

/// A virtio_model column: NULL (rows from before migration 8) is modern.
pub(crate) fn virtio_model_from(s: Option<String>) -> VirtioModel {
    match s.as_deref() {
        Some("transitional") => VirtioModel::Transitional,
        _ => VirtioModel::Modern,
    }
}

fn flavor_row(r: &Row<'_>) -> rusqlite::Result<Flavor> {
    Ok(Flavor {
        id: r.get(0)?,
        name: r.get(1)?,
        vcpus: r.get(2)?,
        ram_mb: r.get::<_, i64>(3)? as u64,
        disk_gb: r.get::<_, i64>(4)? as u64,
        extra_specs: extra_specs::from_json(5, &r.get::<_, String>(5)?)?,
    })
}

fn image_row(r: &Row<'_>) -> rusqlite::Result<Image> {
    let status = match r.get::<_, String>(11)?.as_str() {
        "importing" => ImageStatus::Importing,
        "error" => ImageStatus::Error,
        "queued" => ImageStatus::Queued,
        _ => ImageStatus::Active,
    };
    let bytes_done: Option<i64> = r.get(12)?;
    let total: Option<i64> = r.get(8)?;
    let progress = match (status, bytes_done) {
        (ImageStatus::Importing, done) => Some(ImportProgress {
            bytes_done: done.unwrap_or(0) as u64,
            bytes_total: total.unwrap_or(0) as u64,
        }),
        _ => None,
    };
    let kind: String = r.get(2)?;
    let kind = if kind == "kernel" {
        ImageKind::Kernel {
            kernel: r.get(3)?,
            initramfs: r.get(4)?,
            cmdline: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        }
    } else {
        let format: String = r.get(6)?;
        ImageKind::Disk {
            // NULL or unknown (none is written): raw, the first format.
            format: format.parse().unwrap_or_default(),
            path: r.get(7)?,
            size_bytes: r.get::<_, i64>(8)? as u64,
            sha256: r.get(9)?,
            firmware: firmware_from(r.get(14)?),
            os_type: match r.get::<_, Option<String>>(15)?.as_deref() {
                Some("windows") => OsType::Windows,
                _ => OsType::Linux,
            },
        }
    };
    Ok(Image {
        id: r.get(0)?,
        name: r.get(1)?,
        kind,
        created_at: r.get(10)?,
        status,
        progress,
        fault: r.get(13)?,
        virtio_model: virtio_model_from(r.get(16)?),
        tpm: r.get(17)?,
        display: r
            .get::<_, Option<String>>(18)?
            .as_deref()
            .and_then(kiln_api::compute::Display::parse)
            .unwrap_or_default(),
        disk_bus: disk_bus_from(r.get(19)?),
        secure_boot: r.get(20)?,
        agent: r.get(21)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_seed_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kiln.db");
        {
            let s = Store::open(&db).unwrap();
            assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
            let names: Vec<_> = s
                .list_flavors()
                .unwrap()
                .into_iter()
                .map(|f| f.name)
                .collect();
            assert_eq!(
                names,
                ["k1.probe", "m1.tiny", "m1.small", "m1.medium", "m1.large"]
            );
            let f = s.get_flavor("m1.medium").unwrap();
            assert_eq!((f.vcpus, f.ram_mb, f.disk_gb), (2, 4096, 40));
            s.delete_flavor("m1.large").unwrap();
        }
        // Reopening runs no migration twice and does not re-seed.
        let s = Store::open(&db).unwrap();
        assert_eq!(s.list_flavors().unwrap().len(), 4);
        let mode: String = s
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn flavor_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let req = FlavorCreate {
            name: "x1".into(),
            vcpus: 3,
            ram_mb: 5,
            disk_gb: 0,
            extra_specs: [("quota:disk_total_iops_sec".to_string(), "100".to_string())].into(),
        };
        let f = s.create_flavor(&req).unwrap();
        assert_eq!(f.extra_specs, req.extra_specs);
        assert_eq!(s.get_flavor(&f.id).unwrap(), f);
        assert!(matches!(
            s.create_flavor(&req),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.delete_flavor("nope"),
            Err(StoreError::NotFound { .. })
        ));
    }
}
