//! Nova's view of one server (`GET /servers/{id}`, `/servers/detail`) as a
//! typed struct that serializes straight to JSON.
//!
//! A `serde_json::Value` per server (about 40 keys, each a map insert and a
//! string) made `/servers/detail` with 1,000 servers cost ~50 ms, mostly in
//! the allocator; this borrows from the [`Server`] instead. Fields newer
//! microversions add are `Option`s left out below their version;
//! `Option<Option<T>>` is a field that is present and `null`.

use std::collections::BTreeMap;

use kiln_api::compute::{Flavor, Server, ServerStatus, TaskState};
use serde::Serialize;

use super::{power_state, status, vm_state, View};

#[derive(Serialize)]
pub struct Link {
    rel: &'static str,
    href: String,
}

#[derive(Serialize)]
pub struct Ref<'a> {
    id: &'a str,
    links: [Link; 2],
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum FlavorView<'a> {
    /// Microversion 2.47 and later: the flavor's figures inline.
    Inline {
        vcpus: u32,
        ram: u64,
        disk: u64,
        ephemeral: u8,
        swap: u8,
        original_name: &'a str,
        extra_specs: &'a BTreeMap<String, String>,
    },
    Ref(Ref<'a>),
}

#[derive(Serialize)]
pub struct Address<'a> {
    version: u8,
    addr: &'a str,
    #[serde(rename = "OS-EXT-IPS:type")]
    kind: &'static str,
    #[serde(rename = "OS-EXT-IPS-MAC:mac_addr")]
    mac: &'a str,
}

#[derive(Serialize)]
pub struct FaultView<'a> {
    code: u16,
    message: &'a str,
    created: &'a str,
}

#[derive(Serialize)]
pub struct Named {
    name: &'static str,
}

#[derive(Serialize)]
pub struct Empty {}

#[derive(Serialize)]
pub struct ServerView<'a> {
    id: &'a str,
    name: &'a str,
    status: &'static str,
    tenant_id: &'a str,
    user_id: &'a str,
    metadata: &'a BTreeMap<String, String>,
    #[serde(rename = "hostId")]
    host_id: String,
    image: Ref<'a>,
    flavor: FlavorView<'a>,
    created: &'a str,
    updated: &'a str,
    addresses: BTreeMap<&'a str, Vec<Address<'a>>>,
    #[serde(rename = "accessIPv4")]
    access_ipv4: &'static str,
    #[serde(rename = "accessIPv6")]
    access_ipv6: &'static str,
    links: [Link; 2],
    #[serde(rename = "OS-DCF:diskConfig")]
    disk_config: &'static str,
    progress: u8,
    #[serde(rename = "OS-EXT-AZ:availability_zone")]
    availability_zone: &'static str,
    config_drive: &'static str,
    key_name: Option<&'a str>,
    #[serde(rename = "OS-SRV-USG:launched_at")]
    launched_at: Option<String>,
    #[serde(rename = "OS-SRV-USG:terminated_at")]
    terminated_at: Option<&'static str>,
    #[serde(rename = "OS-EXT-SRV-ATTR:host")]
    host: &'a str,
    #[serde(rename = "OS-EXT-SRV-ATTR:instance_name")]
    instance_name: String,
    #[serde(rename = "OS-EXT-SRV-ATTR:hypervisor_hostname")]
    hypervisor_hostname: &'a str,
    #[serde(rename = "OS-EXT-STS:task_state")]
    task_state: Option<&'static str>,
    #[serde(rename = "OS-EXT-STS:vm_state")]
    vm_state: &'static str,
    #[serde(rename = "OS-EXT-STS:power_state")]
    power_state: u8,
    #[serde(rename = "os-extended-volumes:volumes_attached")]
    volumes_attached: [(); 0],
    security_groups: [Named; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<FaultView<'a>>,
    // 2.3
    #[serde(
        rename = "OS-EXT-SRV-ATTR:hostname",
        skip_serializing_if = "Option::is_none"
    )]
    hostname: Option<String>,
    #[serde(
        rename = "OS-EXT-SRV-ATTR:reservation_id",
        skip_serializing_if = "Option::is_none"
    )]
    reservation_id: Option<&'static str>,
    #[serde(
        rename = "OS-EXT-SRV-ATTR:launch_index",
        skip_serializing_if = "Option::is_none"
    )]
    launch_index: Option<u8>,
    #[serde(
        rename = "OS-EXT-SRV-ATTR:root_device_name",
        skip_serializing_if = "Option::is_none"
    )]
    root_device_name: Option<&'static str>,
    #[serde(
        rename = "OS-EXT-SRV-ATTR:user_data",
        skip_serializing_if = "Option::is_none"
    )]
    user_data: Option<Option<&'a str>>,
    // 2.9, 2.16, 2.19, 2.26, 2.73, 2.96, 2.100
    #[serde(skip_serializing_if = "Option::is_none")]
    locked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Option<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<[(); 0]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locked_reason: Option<Option<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pinned_availability_zone: Option<Option<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduler_hints: Option<Empty>,
}

impl View<'_> {
    pub(super) fn typed_links(&self, kind: &str, id: &str) -> [Link; 2] {
        let bookmark = self.base.trim_end_matches("/v2.1");
        [
            Link {
                rel: "self",
                href: format!("{}/{kind}/{id}", self.base),
            },
            Link {
                rel: "bookmark",
                href: format!("{bookmark}/{kind}/{id}"),
            },
        ]
    }

    /// The server as Nova shows it at this view's microversion, with its
    /// user data (base64) as the store has it.
    pub fn server_view<'a>(
        &'a self,
        s: &'a Server,
        flavor: Option<&'a Flavor>,
        user_data: Option<&'a str>,
    ) -> ServerView<'a> {
        let mv = self.mv.0;
        let at = |min: u32| mv >= min;
        let mut addresses: BTreeMap<&str, Vec<Address>> = BTreeMap::new();
        for n in &s.nics {
            let list = addresses.entry(n.network.as_str()).or_default();
            if let Some(ip) = &n.ip {
                list.push(Address {
                    version: 4,
                    addr: ip,
                    kind: "fixed",
                    mac: &n.mac,
                });
            }
        }
        let flavor = match (at(47), flavor) {
            (true, Some(f)) => FlavorView::Inline {
                vcpus: f.vcpus,
                ram: f.ram_mb,
                disk: f.disk_gb,
                ephemeral: 0,
                swap: 0,
                original_name: &f.name,
                extra_specs: &f.extra_specs,
            },
            (true, None) => FlavorView::Inline {
                vcpus: s.vcpus,
                ram: s.ram_mb,
                disk: s.disk_gb,
                ephemeral: 0,
                swap: 0,
                original_name: &s.flavor_id,
                extra_specs: &EMPTY,
            },
            (false, _) => FlavorView::Ref(Ref {
                id: &s.flavor_id,
                links: self.typed_links("flavors", &s.flavor_id),
            }),
        };
        let launched_at = match s.status {
            ServerStatus::Build | ServerStatus::Error if s.pid.is_none() => None,
            _ => Some(s.created_at.trim_end_matches('Z').to_owned() + ".000000"),
        };
        ServerView {
            id: &s.id,
            name: &s.name,
            status: status(s),
            tenant_id: self.project_id,
            user_id: self.user_id,
            metadata: &s.metadata,
            host_id: crate::openstack::derived_id(&format!("{}{}", self.project_id, self.host))
                .replace('-', ""),
            image: Ref {
                id: &s.image_id,
                links: self.typed_links("images", &s.image_id),
            },
            flavor,
            created: &s.created_at,
            updated: &s.updated_at,
            addresses,
            access_ipv4: "",
            access_ipv6: "",
            links: self.typed_links("servers", &s.id),
            disk_config: "MANUAL",
            progress: 0,
            availability_zone: "nova",
            config_drive: if s.config_drive { "True" } else { "" },
            key_name: s.key_name.as_deref(),
            launched_at,
            terminated_at: None,
            host: self.host,
            instance_name: format!("instance-{}", &s.id[..8.min(s.id.len())]),
            hypervisor_hostname: self.host,
            task_state: s.task_state.map(TaskState::as_str),
            vm_state: vm_state(s.status),
            power_state: power_state(s),
            volumes_attached: [],
            security_groups: [Named { name: "default" }],
            fault: s.fault.as_ref().map(|f| FaultView {
                code: 500,
                message: &f.message,
                created: &f.created,
            }),
            hostname: at(3).then(|| crate::util::hostname(&s.name, &s.id)),
            reservation_id: at(3).then_some(""),
            launch_index: at(3).then_some(0),
            root_device_name: at(3).then_some("/dev/vda"),
            user_data: at(3).then_some(user_data),
            locked: at(9).then_some(false),
            host_status: at(16).then_some("UP"),
            description: at(19).then_some(None),
            tags: at(26).then_some([]),
            locked_reason: at(73).then_some(None),
            pinned_availability_zone: at(96).then_some(None),
            scheduler_hints: at(100).then_some(Empty {}),
        }
    }
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();
