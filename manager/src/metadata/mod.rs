//! What a guest learns about itself, as Nova tells it: the facts of one
//! server ([`Facts`], read from the store) rendered as Nova's OpenStack
//! and EC2 metadata trees, for the metadata service at
//! `http://169.254.169.254` ([`service`]) and for the config drive
//! ([`drive_files`]).
//!
//! - `openstack.rs`: `/openstack/...` (`meta_data.json`,
//!   `network_data.json`, `vendor_data*.json`, `user_data`, `password`)
//!   and its versions.
//! - `ec2.rs`: the EC2 tree (`/latest/meta-data/...`, `/2009-04-04/...`).
//! - `tree.rs`: a request path to an answer, over both trees; the config
//!   drive's file list.
//! - `service.rs`: which server a request comes from (the serving
//!   bridge's network, the source address, the MAC the kernel resolved
//!   it to), and the guest's password post.
//!
//! The HTTP side (listener per bridge, keep-alive) is `http/metadata.rs`:
//! only `http/` speaks HTTP.

mod ec2;
mod openstack;
pub mod service;
mod tree;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::ipam;
use crate::store::{Store, StoreError};

pub use service::{Identity, Metadata};
pub use tree::{drive_files, Answer};

/// Nova's default availability zone, which Kiln's servers are all in.
pub const AVAILABILITY_ZONE: &str = "nova";

/// The domain Nova appends to a guest's hostname (its `dhcp_domain`
/// default).
pub const DHCP_DOMAIN: &str = "novalocal";

/// Everything the trees say about one server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    pub id: String,
    pub name: String,
    /// `name` made a hostname as Nova does, with [`DHCP_DOMAIN`].
    pub hostname: String,
    pub availability_zone: String,
    pub launch_index: u32,
    pub project_id: String,
    /// The flavor's name (its id if the flavor was deleted since).
    pub flavor: String,
    pub image_id: String,
    pub key: Option<Key>,
    pub admin_pass: Option<String>,
    /// The user data's bytes (given base64 at create, as Nova's).
    pub user_data: Option<Vec<u8>>,
    pub meta: BTreeMap<String, String>,
    pub nics: Vec<NicFacts>,
    /// What the guest posted to `.../password` (cloudbase-init's
    /// encrypted admin password).
    pub password: Option<String>,
    /// 512 random bytes for `random_seed` (None: left out, as in tests).
    pub random_seed: Option<Vec<u8>>,
}

/// The key pair the server was created with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Key {
    pub name: String,
    /// Nova's key type: `ssh`.
    pub kind: String,
    pub public_key: String,
}

/// One NIC as the guest is to configure it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NicFacts {
    pub mac: String,
    /// The link's id in `network_data.json`: the host tap's name, as Nova
    /// names a link by its VIF's device.
    pub link: String,
    pub network_id: String,
    pub mtu: u32,
    /// Its fixed address (None on an L2-only network).
    pub ip: Option<Ipv4Addr>,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Whether the guest gets the address by DHCP.
    pub dhcp: bool,
}

impl Facts {
    /// The facts of server `id` (not DELETED), through the store's
    /// functions: call it on the blocking pool (`Store::call`), as every
    /// store call. The config drive renders these with [`drive_files`].
    pub fn load(s: &Store, id: &str) -> Result<Facts, StoreError> {
        let server = s.get_server(id)?;
        let (keypair, admin_pass) = s.server_credentials(id)?;
        let user_data = s.server_user_data(id)?.map(decode_user_data);
        let password = s.server_password(id)?.filter(|p| !p.is_empty());
        let flavor = s
            .get_flavor(&server.flavor_id)
            .map_or_else(|_| server.flavor_id.clone(), |f| f.name);
        let mut nics = Vec::new();
        for nic in &server.nics {
            let net = s.get_network(&nic.network_id)?;
            let sub = net
                .cidr
                .as_deref()
                .and_then(|c| ipam::Subnet::parse(c).ok());
            nics.push(NicFacts {
                mac: nic.mac.clone(),
                link: nic.tap.clone(),
                network_id: net.id.clone(),
                mtu: net.mtu,
                ip: nic.ip.as_deref().and_then(|i| i.parse().ok()),
                prefix: sub.map_or(0, |s| s.prefix()),
                gateway: net.gateway.as_deref().and_then(|g| g.parse().ok()),
                dns: net
                    .dns_nameservers
                    .iter()
                    .filter_map(|d| d.parse().ok())
                    .collect(),
                dhcp: net.dhcp,
            });
        }
        Ok(Facts {
            hostname: hostname(&server.name, &server.id),
            id: server.id,
            name: server.name,
            availability_zone: AVAILABILITY_ZONE.into(),
            launch_index: 0,
            project_id: String::new(),
            flavor,
            image_id: server.disk_image_id.unwrap_or(server.image_id),
            key: keypair.map(|k| Key {
                name: k.name,
                kind: "ssh".into(),
                public_key: k.public_key,
            }),
            admin_pass,
            user_data,
            meta: server.metadata,
            nics,
            password,
            random_seed: Some(random_seed()),
        })
    }
}

/// Stored user data to bytes: base64 as given at create; a row from
/// before user data was base64 is served as it is.
fn decode_user_data(stored: String) -> Vec<u8> {
    crate::util::decode_user_data(&stored).unwrap_or_else(|_| stored.into_bytes())
}

/// A server's hostname as Nova makes it from the display name
/// ([`crate::util::hostname`], the one DHCP hands out), then `.`
/// [`DHCP_DOMAIN`].
pub fn hostname(name: &str, id: &str) -> String {
    format!("{}.{DHCP_DOMAIN}", crate::util::hostname(name, id))
}

/// 512 bytes from the kernel's random source, as Nova's `random_seed`.
pub(crate) fn random_seed() -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; 512];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b
}
