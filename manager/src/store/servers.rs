//! The server rows: create (placement checked in the same `BEGIN
//! IMMEDIATE` transaction), status changes, readiness, expiry, delete.

use std::collections::BTreeMap;

use kiln_api::compute::{
    DiskBus, Display, Fault, Firmware, Flavor, Keypair, ReadyCondition, Server, ServerList,
    ServerStatus, TaskState, VirtioModel,
};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{not_found, Store, StoreError};
use crate::placement::{Placement, Resources};
use crate::util::now_rfc3339;

/// A new server as the API resolved it.
pub struct NewServer {
    pub name: String,
    pub flavor: Flavor,
    pub image_id: String,
    pub disk_image_id: Option<String>,
    pub cmdline: String,
    pub user_data: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub ready: Option<ReadyCondition>,
    /// Unix seconds after which the server is deleted.
    pub expires_at: Option<u64>,
    /// Its NICs, in order.
    pub nics: Vec<super::NewNic>,
    /// Firmware boot from `disk_image_id` (None: the kernel image boots
    /// directly).
    pub firmware: Option<Firmware>,
    /// UEFI: the directory of server directories; the row records the
    /// server's NVRAM as `DIR/ID/nvram.fd`.
    pub nvram_under: Option<std::path::PathBuf>,
    /// Its virtio devices (from the image unless the create named one).
    pub virtio_model: VirtioModel,
    /// The key pair named at create, copied (no private key).
    pub keypair: Option<Keypair>,
    pub admin_pass: Option<String>,
    /// It gets a config drive at every start.
    pub config_drive: bool,
    /// It gets a TPM (a swtpm beside its VMM).
    pub tpm: bool,
    pub display: Display,
    /// Its root disk's bus.
    pub disk_bus: DiskBus,
    /// ISO images (ids) on CD-ROMs after its own.
    pub cdroms: Vec<String>,
    /// Its user data as `autounattend.xml` on a CD-ROM.
    pub answer_file: bool,
    /// UEFI Secure Boot on.
    pub secure_boot: bool,
    /// It gets a guest agent channel.
    pub agent: bool,
}

const SERVER_COLS: &str = "id, name, status, task_state, fault, fault_at, flavor_id, image_id, \
     vcpus, ram_mb, disk_gb, cmdline, metadata, pid, created_at, updated_at, \
     ready_condition, ready_after_ms, expires_at, disk_image_id, firmware, nvram, virtio_model, key_name, config_drive, tpm, display, disk_bus, cdroms, answer_file, secure_boot, agent";

impl Store {
    /// Checks placement and records the server as BUILD, atomically.
    pub fn create_server(
        &self,
        placement: &Placement,
        new: NewServer,
    ) -> Result<Server, StoreError> {
        let mut id = uuid::Uuid::new_v4().to_string();
        let now = now_rfc3339();
        let metadata = serde_json::to_string(&new.metadata).unwrap_or_else(|_| "{}".into());
        let ready = new
            .ready
            .as_ref()
            .and_then(|r| serde_json::to_string(r).ok());
        let expires = new.expires_at.map(|e| i64::try_from(e).unwrap_or(i64::MAX));
        let nvram = new.nvram_under.as_ref().map(|d| {
            d.join(&id)
                .join(crate::firmware::NVRAM)
                .display()
                .to_string()
        });
        let keypair = new
            .keypair
            .as_ref()
            .and_then(|k| serde_json::to_string(k).ok());
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Tap names carry the id's first 8 hex digits: keep them unique.
        while super::networks::id_prefix_taken(&tx, &id[..8])? {
            id = uuid::Uuid::new_v4().to_string();
        }
        let used = used_in(&tx)?.0;
        let request = Resources {
            vcpus: new.flavor.vcpus.into(),
            ram_mb: new.flavor.ram_mb,
            disk_gb: new.flavor.disk_gb,
        };
        placement
            .check(used, request)
            .map_err(StoreError::NoCapacity)?;
        // The images must still exist (an image delete checks for users in
        // a transaction of its own).
        for img in std::iter::once(&new.image_id)
            .chain(new.disk_image_id.as_ref())
            .chain(&new.cdroms)
        {
            let status: Option<String> = tx
                .query_row("SELECT status FROM images WHERE id = ?1", [img], |r| {
                    r.get(0)
                })
                .optional()?;
            match status.as_deref() {
                None => return Err(StoreError::Conflict(format!("image {img} was deleted"))),
                Some("active") => {}
                Some(s) => {
                    return Err(StoreError::Conflict(format!(
                        "image {img} is {s}, not active"
                    )))
                }
            }
        }
        tx.execute(
            "INSERT INTO servers (id, name, status, task_state, flavor_id, image_id, vcpus, ram_mb, disk_gb,
                                  cmdline, user_data, metadata, created_at, updated_at, ready_condition, expires_at, disk_image_id,
                                  firmware, nvram, virtio_model, key_name, keypair, admin_pass, config_drive, tpm, display,
                                  disk_bus, cdroms, answer_file, secure_boot, agent)
             VALUES (?1, ?2, 'BUILD', 'scheduling', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)",
            params![
                id,
                new.name,
                new.flavor.id,
                new.image_id,
                new.flavor.vcpus,
                new.flavor.ram_mb,
                new.flavor.disk_gb,
                new.cmdline,
                new.user_data,
                metadata,
                now,
                ready,
                expires,
                new.disk_image_id,
                new.firmware.map(|f| f.as_str()),
                nvram,
                new.virtio_model.as_str(),
                new.keypair.as_ref().map(|k| k.name.as_str()),
                keypair,
                new.admin_pass,
                new.config_drive,
                new.tpm,
                new.display.as_str(),
                new.disk_bus.as_str(),
                serde_json::to_string(&new.cdroms).unwrap_or_else(|_| "[]".into()),
                new.answer_file,
                new.secure_boot,
                new.agent
            ],
        )?;
        super::networks::insert_nics(&tx, &id, &new.nics)?;
        super::extra_specs::copy_to_server(&tx, &id, &new.flavor.extra_specs)?;
        tx.commit()?;
        drop(conn);
        self.get_server(&id)
    }

    pub fn get_server(&self, id: &str) -> Result<Server, StoreError> {
        let conn = self.conn();
        let s = conn
            .query_row(
                &format!("SELECT {SERVER_COLS} FROM servers WHERE id = ?1 AND status != 'DELETED'"),
                [id],
                server_row,
            )
            .optional()?
            .ok_or_else(|| not_found("server", id))?;
        let mut one = [s];
        Store::attach_nics(&conn, &mut one)?;
        let [s] = one;
        Ok(s)
    }

    /// Servers, optionally of one status and/or one name. DELETED ones are
    /// listed only when asked for by status.
    pub fn list_servers(
        &self,
        status: Option<ServerStatus>,
        name: Option<&str>,
    ) -> Result<Vec<Server>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {SERVER_COLS} FROM servers
             WHERE (?1 IS NULL AND status != 'DELETED' OR status = ?1)
               AND (?2 IS NULL OR name = ?2)
             ORDER BY created_at, id"
        ))?;
        let rows = st.query_map(params![status.map(|s| s.as_str()), name], server_row)?;
        let mut servers: Vec<Server> = rows.collect::<Result<_, _>>()?;
        Store::attach_nics(&conn, &mut servers)?;
        Ok(servers)
    }

    /// The unfiltered server list (`GET /v1/servers`) as JSON. It is made
    /// again only when a row changed since the last time: the store is one
    /// connection, and SQLite's `total_changes` counts every row it ever
    /// inserted, updated or deleted, in any table, so an unchanged count
    /// means an unchanged answer. (The count is read before the query: a
    /// change that lands in between makes the next request rebuild.)
    /// Listing 1,000 servers costs the query and serialization once, not
    /// per request.
    pub fn servers_json(&self) -> Result<bytes::Bytes, StoreError> {
        let changes = self.conn().total_changes();
        let mut cache = self.list_json.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, json)) = cache.as_ref() {
            if *at == changes {
                return Ok(json.clone());
            }
        }
        let list = ServerList {
            servers: self.list_servers(None, None)?,
        };
        let json = bytes::Bytes::from(serde_json::to_vec(&list).unwrap_or_default());
        *cache = Some((changes, json.clone()));
        Ok(json)
    }

    /// Sets status and task state (and clears the fault unless ERROR).
    /// Does nothing to a DELETED server; answers whether a row changed.
    pub fn set_status(
        &self,
        id: &str,
        status: ServerStatus,
        task_state: Option<TaskState>,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE servers SET status = ?2, task_state = ?3, updated_at = ?4,
                 fault = CASE WHEN ?2 = 'ERROR' THEN fault ELSE NULL END,
                 fault_at = CASE WHEN ?2 = 'ERROR' THEN fault_at ELSE NULL END
             WHERE id = ?1 AND status != 'DELETED'",
            params![
                id,
                status.as_str(),
                task_state.map(TaskState::as_str),
                now_rfc3339()
            ],
        )?;
        Ok(n > 0)
    }

    /// Moves a server from one of `from` to `to`; answers whether it did.
    pub fn set_status_if(
        &self,
        id: &str,
        from: &[ServerStatus],
        to: ServerStatus,
        task_state: Option<TaskState>,
    ) -> Result<bool, StoreError> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let n = self.conn().execute(
            "UPDATE servers SET status = ?2, task_state = ?3, updated_at = ?4, fault = NULL, fault_at = NULL
             WHERE id = ?1 AND status IN (SELECT value FROM json_each(?5))",
            params![id, to.as_str(), task_state.map(TaskState::as_str), now_rfc3339(), serde_json::to_string(&from).unwrap_or_default()],
        )?;
        Ok(n > 0)
    }

    pub fn set_task_state(
        &self,
        id: &str,
        task_state: Option<TaskState>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE servers SET task_state = ?2, updated_at = ?3 WHERE id = ?1 AND status != 'DELETED'",
            params![id, task_state.map(TaskState::as_str), now_rfc3339()],
        )?;
        Ok(())
    }

    /// Puts a server in ERROR with a fault message.
    pub fn set_error(&self, id: &str, message: &str) -> Result<(), StoreError> {
        let now = now_rfc3339();
        self.conn().execute(
            "UPDATE servers SET status = 'ERROR', task_state = NULL, fault = ?2, fault_at = ?3,
                 updated_at = ?3, pid = NULL
             WHERE id = ?1 AND status != 'DELETED'",
            params![id, message, now],
        )?;
        Ok(())
    }

    pub fn set_pid(&self, id: &str, pid: Option<u32>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE servers SET pid = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, pid, now_rfc3339()],
        )?;
        Ok(())
    }

    /// Records that the current boot became ready after `ms`; `None`
    /// clears it (a new boot).
    pub fn set_ready(&self, id: &str, ms: Option<u64>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE servers SET ready_after_ms = ?2 WHERE id = ?1",
            params![id, ms.map(|m| i64::try_from(m).unwrap_or(i64::MAX))],
        )?;
        Ok(())
    }

    /// Servers whose time to live ran out by `now` (Unix seconds).
    pub fn expired(&self, now: u64) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id FROM servers WHERE status != 'DELETED' AND expires_at IS NOT NULL
               AND expires_at <= ?1 AND COALESCE(task_state, '') != ?2",
        )?;
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let ids = st.query_map(params![now, TaskState::Deleting.as_str()], |r| r.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    /// Marks a server DELETED, which frees its allocation.
    pub fn mark_deleted(&self, id: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE servers SET status = 'DELETED', task_state = NULL, pid = NULL, updated_at = ?2,
                 deleted_at = ?3, user_data = NULL
             WHERE id = ?1",
            params![id, now_rfc3339(), crate::util::now_secs() as i64],
        )?;
        Ok(())
    }

    /// Removes DELETED rows older than `before` (Unix seconds); answers their ids.
    pub fn purge_deleted(&self, before: u64) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "DELETE FROM servers WHERE status = 'DELETED' AND deleted_at < ?1 RETURNING id",
        )?;
        let ids = st.query_map([i64::try_from(before).unwrap_or(i64::MAX)], |r| r.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    /// The allocation of every server not DELETED, and how many they are.
    pub fn used(&self) -> Result<(Resources, u64), StoreError> {
        Ok(used_in(&self.conn())?)
    }
}

fn used_in(conn: &Connection) -> rusqlite::Result<(Resources, u64)> {
    conn.query_row(
        "SELECT COALESCE(SUM(vcpus), 0), COALESCE(SUM(ram_mb), 0), COALESCE(SUM(disk_gb), 0), COUNT(*)
         FROM servers WHERE status != 'DELETED'",
        [],
        |r| {
            Ok((
                Resources {
                    vcpus: r.get::<_, i64>(0)? as u64,
                    ram_mb: r.get::<_, i64>(1)? as u64,
                    disk_gb: r.get::<_, i64>(2)? as u64,
                },
                r.get::<_, i64>(3)? as u64,
            ))
        },
    )
}

fn server_row(r: &Row<'_>) -> rusqlite::Result<Server> {
    let status: String = r.get(2)?;
    let fault: Option<String> = r.get(4)?;
    let fault_at: Option<String> = r.get(5)?;
    let metadata: String = r.get(12)?;
    let status = ServerStatus::parse(&status).unwrap_or(ServerStatus::Error);
    let ready_condition: Option<String> = r.get(16)?;
    let ready_condition = ready_condition.and_then(|c| serde_json::from_str(&c).ok());
    let ready_after_ms: Option<i64> = r.get(17)?;
    let expires_at: Option<i64> = r.get(18)?;
    // Ready: ACTIVE, and the current boot met the condition if there is one.
    let ready =
        status == ServerStatus::Active && (ready_condition.is_none() || ready_after_ms.is_some());
    Ok(Server {
        id: r.get(0)?,
        name: r.get(1)?,
        status,
        task_state: r
            .get::<_, Option<String>>(3)?
            .as_deref()
            .and_then(TaskState::parse),
        fault: fault.map(|message| Fault {
            message,
            created: fault_at.unwrap_or_default(),
        }),
        flavor_id: r.get(6)?,
        image_id: r.get(7)?,
        disk_image_id: r.get(19)?,
        firmware: r
            .get::<_, Option<String>>(20)?
            .map(|f| super::firmware_from(Some(f))),
        nvram: r.get(21)?,
        vcpus: r.get(8)?,
        ram_mb: r.get::<_, i64>(9)? as u64,
        disk_gb: r.get::<_, i64>(10)? as u64,
        cmdline: r.get(11)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        pid: r.get(13)?,
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
        ready_condition,
        ready,
        ready_after_ms: ready_after_ms.map(|m| m as u64),
        expires_at: expires_at.map(|e| crate::util::rfc3339(e as u64)),
        nics: Vec::new(),
        virtio_model: super::virtio_model_from(r.get(22)?),
        key_name: r.get(23)?,
        admin_pass: None,
        config_drive: r.get(24)?,
        tpm: r.get(25)?,
        display: r
            .get::<_, Option<String>>(26)?
            .as_deref()
            .and_then(Display::parse)
            .unwrap_or_default(),
        disk_bus: super::disk_bus_from(r.get(27)?),
        cdroms: serde_json::from_str(&r.get::<_, String>(28)?).unwrap_or_default(),
        answer_file: r.get(29)?,
        secure_boot: r.get(30)?,
        agent: r.get(31)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kiln_api::compute::{Image, ImageKind};

    pub(crate) fn placement(vcpus: u64) -> Placement {
        Placement {
            total: Resources {
                vcpus,
                ram_mb: 100_000,
                disk_gb: 1000,
            },
            reserved: Resources::default(),
            ratio: [1.0, 1.0, 1.0],
        }
    }

    pub(crate) fn new_server(store: &Store, name: &str) -> NewServer {
        if store.get_image("img").is_err() {
            let img = Image {
                id: "img".into(),
                name: "img".into(),
                kind: ImageKind::Kernel {
                    kernel: "/k".into(),
                    initramfs: None,
                    cmdline: String::new(),
                },
                created_at: now_rfc3339(),
                status: Default::default(),
                progress: None,
                fault: None,
                virtio_model: Default::default(),
                tpm: false,
                display: Default::default(),
                disk_bus: Default::default(),
                secure_boot: false,
                agent: false,
            };
            let _ = store.insert_image(&img);
        }
        NewServer {
            name: name.into(),
            flavor: store.get_flavor("k1.probe").unwrap(),
            image_id: "img".into(),
            disk_image_id: None,
            cmdline: String::new(),
            user_data: None,
            metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
            ready: None,
            expires_at: None,
            nics: Vec::new(),
            firmware: None,
            nvram_under: None,
            virtio_model: Default::default(),
            keypair: None,
            admin_pass: None,
            config_drive: false,
            tpm: false,
            display: Default::default(),
            disk_bus: Default::default(),
            cdroms: Vec::new(),
            answer_file: false,
            secure_boot: false,
            agent: false,
        }
    }

    #[test]
    fn servers_hold_allocation_until_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let p = placement(2);
        let a = s.create_server(&p, new_server(&s, "a")).unwrap();
        assert_eq!(a.status, ServerStatus::Build);
        assert_eq!(a.metadata["k"], "v");
        let b = s.create_server(&p, new_server(&s, "b")).unwrap();
        match s.create_server(&p, new_server(&s, "c")) {
            Err(StoreError::NoCapacity(r)) => {
                assert_eq!((r.resource, r.requested, r.free), ("vcpus", 1, 0))
            }
            other => panic!("expected refusal, got {:?}", other.map(|s| s.id)),
        }
        s.set_status(&a.id, ServerStatus::Shutoff, None).unwrap();
        assert!(
            s.create_server(&p, new_server(&s, "c")).is_err(),
            "SHUTOFF still holds"
        );
        s.mark_deleted(&b.id).unwrap();
        assert_eq!(s.used().unwrap().1, 1);
        assert!(s.create_server(&p, new_server(&s, "c")).is_ok());
        assert!(s.get_server(&b.id).is_err());
        assert_eq!(
            s.list_servers(Some(ServerStatus::Deleted), None)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(s.list_servers(None, Some("c")).unwrap().len(), 1);
        assert_eq!(s.list_servers(None, None).unwrap().len(), 2);
        s.set_error(&a.id, "boom").unwrap();
        let a = s.get_server(&a.id).unwrap();
        assert_eq!(a.fault.unwrap().message, "boom");
        assert_eq!(s.purge_deleted(u64::MAX).unwrap(), vec![b.id]);
        // An image in use cannot go; a create on a deleted image fails.
        assert!(matches!(
            s.delete_image("img"),
            Err(StoreError::Conflict(_))
        ));
        let mut orphan = new_server(&s, "o");
        orphan.image_id = "gone".into();
        assert!(matches!(
            s.create_server(&placement(100), orphan),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn cached_server_list_follows_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let p = placement(8);
        let list = |s: &Store| -> Vec<Server> {
            serde_json::from_slice::<ServerList>(&s.servers_json().unwrap())
                .unwrap()
                .servers
        };
        assert!(list(&s).is_empty());
        let a = s.create_server(&p, new_server(&s, "a")).unwrap();
        assert_eq!(list(&s), s.list_servers(None, None).unwrap());
        let first = s.servers_json().unwrap();
        assert_eq!(
            first.as_ptr(),
            s.servers_json().unwrap().as_ptr(),
            "unchanged: the same bytes"
        );
        s.set_status(&a.id, ServerStatus::Active, None).unwrap();
        assert_eq!(list(&s)[0].status, ServerStatus::Active);
        s.set_task_state(&a.id, Some(TaskState::Rebooting)).unwrap();
        assert_eq!(list(&s)[0].task_state, Some(TaskState::Rebooting));
        s.set_error(&a.id, "boom").unwrap();
        assert_eq!(list(&s)[0].fault.as_ref().unwrap().message, "boom");
        s.create_server(&p, new_server(&s, "b")).unwrap();
        assert_eq!(list(&s).len(), 2);
        s.mark_deleted(&a.id).unwrap();
        assert_eq!(list(&s), s.list_servers(None, None).unwrap());
        assert_eq!(list(&s).len(), 1);
    }

    #[test]
    fn concurrent_creates_from_two_connections_never_overcommit() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let stores: Vec<_> = (0..2)
            .map(|_| std::sync::Arc::new(Store::open(&db).unwrap()))
            .collect();
        let p = placement(7);
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let s = stores[i % 2].clone();
                let p = p.clone();
                std::thread::spawn(move || {
                    s.create_server(&p, new_server(&s, &format!("s{i}")))
                        .is_ok()
                })
            })
            .collect();
        let ok = handles
            .into_iter()
            .filter(|_| true)
            .map(|h| h.join().unwrap())
            .filter(|x| *x)
            .count();
        assert_eq!(ok, 7);
        assert_eq!(stores[0].used().unwrap().0.vcpus, 7);
    }
}
