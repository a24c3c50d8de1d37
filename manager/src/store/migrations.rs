//! The store's schema as numbered migrations: each kilnd applies those
//! `schema_migrations` does not list yet, in order, at open
//! (`Store::migrate`). Append only: a migration that shipped is never
//! edited, since databases out there already ran it.

#[cfg(test)]
use rusqlite::Connection;

/// Numbered schema steps; `schema_migrations` records which ran.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE flavors (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
        vcpus INTEGER NOT NULL, ram_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL,
        created_at TEXT NOT NULL);
     CREATE TABLE images (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
        kernel TEXT, initramfs TEXT, cmdline TEXT,
        format TEXT, path TEXT, size_bytes INTEGER, sha256 TEXT,
        created_at TEXT NOT NULL);
     CREATE TABLE servers (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
        task_state TEXT, fault TEXT, fault_at TEXT,
        flavor_id TEXT NOT NULL, image_id TEXT NOT NULL,
        vcpus INTEGER NOT NULL, ram_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL,
        cmdline TEXT NOT NULL, user_data TEXT, metadata TEXT NOT NULL,
        pid INTEGER, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        deleted_at INTEGER);
     CREATE INDEX servers_status ON servers(status);
     CREATE INDEX servers_name ON servers(name);",
    // 2: readiness conditions and time to live.
    "ALTER TABLE servers ADD COLUMN ready_condition TEXT;
     ALTER TABLE servers ADD COLUMN ready_after_ms INTEGER;
     ALTER TABLE servers ADD COLUMN expires_at INTEGER;",
    // 3: root disks on disk images.
    "ALTER TABLE servers ADD COLUMN disk_image_id TEXT;",
    // 4: disk images import in the background.
    "ALTER TABLE images ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
     ALTER TABLE images ADD COLUMN bytes_done INTEGER;
     ALTER TABLE images ADD COLUMN fault TEXT;",
    // 5: networks: bridges, and servers' NICs on them.
    "CREATE TABLE networks (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, bridge TEXT NOT NULL UNIQUE,
        mtu INTEGER NOT NULL, managed INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'active', created_at TEXT NOT NULL);
     CREATE TABLE nics (
        server_id TEXT NOT NULL, idx INTEGER NOT NULL, network_id TEXT NOT NULL,
        mac TEXT NOT NULL, tap TEXT NOT NULL, PRIMARY KEY (server_id, idx));
     CREATE INDEX nics_network ON nics(network_id);
     CREATE INDEX nics_mac ON nics(mac);",
    // 6: firmware boot from disk images (NULL: bios for a disk image), and
    // each UEFI server's NVRAM file; disk images' os_type (NULL: linux).
    "ALTER TABLE images ADD COLUMN firmware TEXT;
     ALTER TABLE images ADD COLUMN os_type TEXT;
     ALTER TABLE servers ADD COLUMN firmware TEXT;
     ALTER TABLE servers ADD COLUMN nvram TEXT;",
    // 7 (taps: tap ownership marks): this kilnd's instance id, made once,
    // which marks every tap it makes (`crate::net::owner`).
    "CREATE TABLE kiln_instance (
        one INTEGER PRIMARY KEY CHECK (one = 1), id TEXT NOT NULL);
     INSERT INTO kiln_instance (one, id) VALUES (1, lower(hex(randomblob(16))));",
    // 8 (nicapi: NIC link state, virtio model): each NIC's link as the
    // guest sees it ('up' | 'down'); images' and servers' virtio_model
    // (NULL: modern).
    "ALTER TABLE nics ADD COLUMN link TEXT NOT NULL DEFAULT 'up';
     ALTER TABLE images ADD COLUMN virtio_model TEXT;
     ALTER TABLE servers ADD COLUMN virtio_model TEXT;",
    // 9 (flavorqos: flavor extra specs): each flavor's extra specs (JSON
    // object), and a copy on each server made from it, as Nova keeps the
    // flavor with the instance (`extra_specs.rs`).
    "ALTER TABLE flavors ADD COLUMN extra_specs TEXT NOT NULL DEFAULT '{}';
     ALTER TABLE servers ADD COLUMN extra_specs TEXT NOT NULL DEFAULT '{}';",
    // 10 (keypairs: key pairs and passwords): SSH key pairs' public
    // halves; each server's copy of the key named at create (JSON
    // `Keypair`) and its admin password, for the guest's metadata.
    "CREATE TABLE keypairs (
        name TEXT PRIMARY KEY, type TEXT NOT NULL, public_key TEXT NOT NULL,
        fingerprint TEXT NOT NULL, created_at TEXT NOT NULL);
     ALTER TABLE servers ADD COLUMN key_name TEXT;
     ALTER TABLE servers ADD COLUMN keypair TEXT;
     ALTER TABLE servers ADD COLUMN admin_pass TEXT;",
    // 11 (ipam: subnets and fixed addresses).
    MIGRATION_11_SUBNETS,
    // 12 (configdrive: config drives): whether a server has one (0/1).
    "ALTER TABLE servers ADD COLUMN config_drive INTEGER NOT NULL DEFAULT 0;",
    // 13 (firewall: the default network): the `default_cidr` kilnd last
    // made the `default` network with (`crate::networks::default_network`):
    // a network deleted by the user is not made again for the same config.
    "CREATE TABLE default_network (
        one INTEGER PRIMARY KEY CHECK (one = 1), cidr TEXT NOT NULL);",
    // 14 (tpmkilnd: TPM 2.0): whether an
    // image's servers and a server get a TPM (0/1), and the pid of the
    // server's swtpm while one runs (next to its VMM's `pid`).
    "ALTER TABLE images ADD COLUMN tpm INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE servers ADD COLUMN tpm INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE servers ADD COLUMN tpm_pid INTEGER;",
    // 15 (metadata: the password the guest posts, Nova's
    // os-server-password).
    "ALTER TABLE servers ADD COLUMN password TEXT;",
    // 16 (displaykilnd: displays): each image's and server's display
    // ('vga' | 'none'; NULL: none, as every one before it had).
    "ALTER TABLE images ADD COLUMN display TEXT;
     ALTER TABLE servers ADD COLUMN display TEXT;",
    // 17 (media: installer ISOs): each image's and server's root disk bus
    // ('virtio' | 'sata'; NULL: virtio), a server's extra CD-ROMs (JSON
    // array of image ids) and its answer-file ISO flag; Secure Boot on
    // images and servers.
    "ALTER TABLE images ADD COLUMN disk_bus TEXT;
     ALTER TABLE servers ADD COLUMN disk_bus TEXT;
     ALTER TABLE servers ADD COLUMN cdroms TEXT NOT NULL DEFAULT '[]';
     ALTER TABLE servers ADD COLUMN answer_file INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE images ADD COLUMN secure_boot INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE servers ADD COLUMN secure_boot INTEGER NOT NULL DEFAULT 0;",
    // 18 (agent-kilnd: the guest agent channel): whether an image's
    // servers and a server get one (0/1; Nova's `hw_qemu_guest_agent`).
    "ALTER TABLE images ADD COLUMN agent INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE servers ADD COLUMN agent INTEGER NOT NULL DEFAULT 0;",
    // 19 (openstack: Keystone tokens): each token by its SHA-256 (the
    // token itself is never stored), the kilnd that issued it, its user,
    // project, auth methods, audit id, issue and expiry times (unix
    // seconds) and whether it was revoked.
    "CREATE TABLE os_tokens (
         hash TEXT PRIMARY KEY,
         instance TEXT NOT NULL,
         user_id TEXT NOT NULL,
         project_id TEXT NOT NULL,
         methods TEXT NOT NULL,
         audit_id TEXT NOT NULL,
         issued_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL,
         revoked INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX os_tokens_expiry ON os_tokens(expires_at);",
    // 20 (os-net: Neutron subnets): the name a network's subnet was
    // given through Neutron (NULL: the network's own).
    "ALTER TABLE networks ADD COLUMN subnet_name TEXT;",
    // 21 (os-more: Keystone application credentials): each by id, the
    // kilnd, user and project it belongs to, its name (unique per user),
    // description, the PBKDF2 hash of its secret (never the secret), role
    // names (JSON array), whether it is unrestricted, expiry (unix
    // seconds; NULL: never) and creation time; a token issued through one
    // names it, so that deleting it revokes them.
    "CREATE TABLE os_app_creds (
         id TEXT PRIMARY KEY,
         instance TEXT NOT NULL,
         user_id TEXT NOT NULL,
         project_id TEXT NOT NULL,
         name TEXT NOT NULL,
         description TEXT,
         secret_hash TEXT NOT NULL,
         roles TEXT NOT NULL,
         unrestricted INTEGER NOT NULL DEFAULT 0,
         expires_at INTEGER,
         created_at INTEGER NOT NULL,
         UNIQUE (user_id, name)
     );
     ALTER TABLE os_tokens ADD COLUMN app_cred_id TEXT;
     CREATE INDEX os_tokens_app_cred ON os_tokens(app_cred_id);",
    // 22 (os-more: Glance properties): each image's free-form string
    // properties (a JSON object), as Glance's API sets and shows them.
    "ALTER TABLE images ADD COLUMN os_properties TEXT NOT NULL DEFAULT '{}';",
];

/// 11 (ipam: subnets): a network's IPv4 subnet (NULL: L2 only), gateway,
/// DHCP flag, nameservers (JSON array) and mode; each NIC's fixed address
/// (NULL on an L2-only network), held while its server is not DELETED.
const MIGRATION_11_SUBNETS: &str = "ALTER TABLE networks ADD COLUMN cidr TEXT;
     ALTER TABLE networks ADD COLUMN gateway TEXT;
     ALTER TABLE networks ADD COLUMN dhcp INTEGER NOT NULL DEFAULT 1;
     ALTER TABLE networks ADD COLUMN dns TEXT NOT NULL DEFAULT '[]';
     ALTER TABLE networks ADD COLUMN mode TEXT NOT NULL DEFAULT 'bridged';
     ALTER TABLE nics ADD COLUMN ip TEXT;
     CREATE INDEX nics_ip ON nics(network_id, ip);";

/// A database at `db` with only the first `n` migrations applied, as an
/// older kilnd left it: for the upgrade tests of later migrations.
#[cfg(test)]
pub(crate) fn connection_at_migration(db: &std::path::Path, n: usize) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .unwrap();
    for (i, sql) in MIGRATIONS[..n].iter().enumerate() {
        conn.execute_batch(sql).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?1, 'then')",
            [i as i64 + 1],
        )
        .unwrap();
    }
    conn
}
