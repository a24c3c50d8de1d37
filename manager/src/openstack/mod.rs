//! The OpenStack-compatible API's domain: Keystone's users, projects,
//! tokens and catalog (`identity.rs`, with the token rows in
//! `crate::store`) and application credentials (`app_creds.rs`), and Nova's, Glance's and Neutron's views of Kiln's
//! servers, flavors, key pairs, images and networks (`nova.rs`,
//! `glance.rs` with its free-form properties in `glance_props.rs`,
//! `neutron.rs`), with Nova's microversions
//! (`microversion.rs`), and Placement's read-only view of this host
//! (`placement.rs`). Every rule stays in the domain modules these call
//! (`crate::servers`, `crate::keypairs`, ...); this only translates. Its
//! HTTP side is `crate::http::openstack`.

pub mod app_creds;
pub mod glance;
pub mod glance_props;
pub mod identity;
pub mod microversion;
pub mod neutron;
pub mod nova;
pub mod placement;

/// A UUID-shaped id (8-4-4-4-12 hex) derived from `seed`: stable ids for
/// things Kiln has one of (the admin user and project, a network's
/// subnet), different on every kilnd when the seed has its instance id.
pub fn derived_id(seed: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(seed.as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The last path segment of a reference that may be a URL
/// (`http://h/compute/v2.1/flavors/ID` → `ID`), as Nova takes
/// `flavorRef` and `imageRef`.
pub fn ref_id(r: &str) -> &str {
    r.trim_end_matches('/').rsplit('/').next().unwrap_or(r)
}
