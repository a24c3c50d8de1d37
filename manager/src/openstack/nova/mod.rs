//! Nova v2.1's views of Kiln's servers, flavors and key pairs, and Nova's
//! server create and action bodies mapped onto Kiln's
//! ([`kiln_api::compute::ServerCreate`], [`kiln_api::compute::ServerAction`]):
//! the rules stay in `crate::servers`.

use std::collections::BTreeMap;

use kiln_api::compute::{
    Flavor, HostInfo, Keypair, NicRequest, RebootType, Server, ServerAction, ServerCreate,
    ServerStatus, TaskState,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::microversion::Microversion;

pub mod flavors;
mod server_view;

pub use server_view::ServerView;

/// Where links point: the compute endpoint (`http://h/compute/v2.1`) and
/// the request's microversion.
pub struct View<'a> {
    pub base: &'a str,
    pub mv: Microversion,
    pub project_id: &'a str,
    pub user_id: &'a str,
    /// The host's name (`OS-EXT-SRV-ATTR:host`).
    pub host: &'a str,
}

impl View<'_> {
    fn links(&self, kind: &str, id: &str) -> Value {
        json!(self.typed_links(kind, id))
    }

    /// `GET /servers` entries.
    pub fn server_brief(&self, s: &Server) -> Value {
        json!({"id": s.id, "name": s.name, "links": self.links("servers", &s.id)})
    }

    /// `GET /servers/{id}` and `/servers/detail` entries, as JSON.
    pub fn server(&self, s: &Server, flavor: Option<&Flavor>, user_data: Option<&str>) -> Value {
        serde_json::to_value(self.server_view(s, flavor, user_data))
            .expect("a server view serializes")
    }

    pub fn flavor_brief(&self, f: &Flavor) -> Value {
        let mut v = json!({"id": f.id, "name": f.name, "links": self.links("flavors", &f.id)});
        if self.mv.0 >= 55 {
            v["description"] = Value::Null;
        }
        v
    }

    pub fn flavor(&self, f: &Flavor) -> Value {
        let mut v = json!({
            "id": f.id, "name": f.name, "ram": f.ram_mb, "disk": f.disk_gb, "vcpus": f.vcpus,
            "OS-FLV-EXT-DATA:ephemeral": 0,
            "swap": if self.mv.0 >= 75 { json!(0) } else { json!("") },
            "rxtx_factor": 1.0,
            "os-flavor-access:is_public": true,
            "OS-FLV-DISABLED:disabled": false,
            "links": self.links("flavors", &f.id),
        });
        if self.mv.0 >= 55 {
            v["description"] = Value::Null;
        }
        if self.mv.0 >= 61 {
            v["extra_specs"] = json!(f.extra_specs);
        }
        v
    }

    /// A key pair as Nova shows it (`show`: with the fields only `GET
    /// /os-keypairs/{name}` has).
    pub fn keypair(&self, k: &Keypair, show: bool) -> Value {
        let mut v = json!({"name": k.name, "public_key": k.public_key,
                           "fingerprint": k.fingerprint});
        let o = v.as_object_mut().expect("an object");
        if self.mv.0 >= 2 {
            o.insert("type".into(), json!("ssh"));
        }
        if let Some(p) = &k.private_key {
            o.insert("private_key".into(), json!(p));
        }
        if show || k.private_key.is_some() {
            o.insert("user_id".into(), json!(self.user_id));
        }
        if show {
            o.insert("created_at".into(), json!(k.created_at));
            o.insert("deleted".into(), json!(false));
            o.insert("deleted_at".into(), Value::Null);
            o.insert("updated_at".into(), Value::Null);
            o.insert("id".into(), json!(0));
        }
        v
    }

    /// `GET /limits` from placement's numbers: capacity and what servers
    /// hold.
    pub fn limits(&self, h: &HostInfo) -> Value {
        json!({"limits": {"rate": [], "absolute": {
            "maxTotalCores": h.vcpus.capacity, "totalCoresUsed": h.vcpus.used,
            "maxTotalRAMSize": h.ram_mb.capacity, "totalRAMUsed": h.ram_mb.used,
            "maxTotalInstances": -1, "totalInstancesUsed": h.servers,
            "maxServerMeta": 128, "maxTotalKeypairs": -1,
            "maxServerGroups": 0, "maxServerGroupMembers": 0, "totalServerGroupsUsed": 0,
        }}})
    }

    /// One `os-hypervisors` entry: this host; with `detail`, its numbers
    /// (below 2.88, where Nova still has them).
    pub fn hypervisor(&self, id: &str, h: &HostInfo, detail: bool) -> Value {
        let mut v = json!({"id": id, "hypervisor_hostname": self.host, "state": "up",
                           "status": "enabled"});
        if !detail {
            return v;
        }
        let o = v.as_object_mut().expect("an object");
        o.insert("hypervisor_type".into(), json!("kiln"));
        o.insert("hypervisor_version".into(), json!(1));
        o.insert("host_ip".into(), json!("127.0.0.1"));
        o.insert(
            "service".into(),
            json!({"host": self.host, "id": id, "disabled_reason": null}),
        );
        if self.mv.0 < 88 {
            for (k, val) in [
                ("vcpus", h.vcpus.capacity),
                ("vcpus_used", h.vcpus.used),
                ("memory_mb", h.ram_mb.capacity),
                ("memory_mb_used", h.ram_mb.used),
                (
                    "free_ram_mb",
                    h.ram_mb.capacity.saturating_sub(h.ram_mb.used),
                ),
                ("local_gb", h.disk_gb.capacity),
                ("local_gb_used", h.disk_gb.used),
                (
                    "free_disk_gb",
                    h.disk_gb.capacity.saturating_sub(h.disk_gb.used),
                ),
                ("running_vms", h.servers),
            ] {
                o.insert(k.into(), json!(val));
            }
        } else {
            o.insert("uptime".into(), Value::Null);
        }
        v
    }
}

/// Nova's status: Kiln's, but a hard reboot shows as `HARD_REBOOT`.
pub fn status(s: &Server) -> &'static str {
    match (s.status, s.task_state) {
        (_, Some(TaskState::RebootingHard)) => "HARD_REBOOT",
        (st, _) => st.as_str(),
    }
}

pub fn vm_state(s: ServerStatus) -> &'static str {
    match s {
        ServerStatus::Build => "building",
        ServerStatus::Active | ServerStatus::Reboot => "active",
        ServerStatus::Shutoff => "stopped",
        ServerStatus::Paused => "paused",
        ServerStatus::Error => "error",
        ServerStatus::Deleted => "deleted",
    }
}

/// Nova's power states: 0 NOSTATE, 1 RUNNING, 3 PAUSED, 4 SHUTDOWN.
pub fn power_state(s: &Server) -> u8 {
    match s.status {
        ServerStatus::Paused => 3,
        ServerStatus::Shutoff | ServerStatus::Deleted => 4,
        _ if s.pid.is_some() => 1,
        _ => 0,
    }
}

/// An ISO 8601 time as Nova's `changes-since` takes it (RFC 3339, or
/// without an offset: UTC; seconds may be left out).
pub fn parse_time(t: &str) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    let t = t.trim();
    if let Ok(v) = time::OffsetDateTime::parse(t, &Rfc3339) {
        return Some(v);
    }
    let (date, clock) = t.split_once(['T', ' '])?;
    let clock = clock.trim_end_matches('Z');
    let clock = if clock.len() == 5 {
        format!("{clock}:00")
    } else {
        clock.to_owned()
    };
    time::OffsetDateTime::parse(&format!("{date}T{clock}Z"), &Rfc3339).ok()
}

/// `POST /servers`'s body.
#[derive(Debug, Deserialize)]
pub struct CreateBody {
    pub server: NovaServerCreate,
}

/// The members of Nova's server create that Kiln reads; the others that
/// Kiln cannot honour are refused by [`to_kiln`].
#[derive(Debug, Deserialize)]
pub struct NovaServerCreate {
    pub name: String,
    #[serde(rename = "imageRef", default)]
    pub image_ref: Option<String>,
    #[serde(rename = "flavorRef")]
    pub flavor_ref: String,
    #[serde(default)]
    pub networks: Option<Value>,
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(default)]
    pub user_data: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub config_drive: Option<Value>,
    #[serde(rename = "adminPass", default)]
    pub admin_pass: Option<String>,
    #[serde(default)]
    pub min_count: Option<Value>,
    #[serde(default)]
    pub max_count: Option<Value>,
    #[serde(default)]
    pub block_device_mapping_v2: Option<Vec<Value>>,
    #[serde(default)]
    pub security_groups: Option<Vec<Value>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// Members of a create body Nova has and Kiln ignores, as harmless.
const IGNORED: &[&str] = &[
    "availability_zone",
    "OS-DCF:diskConfig",
    "description",
    "hostname",
    "return_reservation_id",
];

/// Nova's create as Kiln's; `default_network` is what `"networks":
/// "auto"` means here (Kiln's `default` network, if it exists).
pub fn to_kiln(
    c: NovaServerCreate,
    default_network: Option<String>,
) -> Result<ServerCreate, String> {
    if let Some(k) = c.rest.keys().find(|k| !IGNORED.contains(&k.as_str())) {
        return Err(format!(
            "Invalid input for field/attribute server: {k:?} is not supported by Kiln"
        ));
    }
    for (what, v) in [("min_count", &c.min_count), ("max_count", &c.max_count)] {
        if let Some(v) = v {
            let n = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
            if n != Some(1) {
                return Err(format!(
                    "{what} must be 1: Kiln creates one server per request"
                ));
            }
        }
    }
    // The one mapping Kiln has: the image as the local root disk, which
    // openstackclient sends beside imageRef.
    let mut bdm_image = None;
    for m in c.block_device_mapping_v2.iter().flatten() {
        let s = |k: &str| m.get(k).and_then(Value::as_str);
        let boot0 = m.get("boot_index").and_then(|b| {
            b.as_i64()
                .or_else(|| b.as_str().and_then(|x| x.parse().ok()))
        }) == Some(0);
        match (s("source_type"), s("destination_type"), s("uuid")) {
            (Some("image"), Some("local") | None, Some(uuid)) if boot0 && bdm_image.is_none() => {
                bdm_image = Some(uuid.to_owned());
            }
            _ => {
                return Err(
                    "block_device_mapping_v2: only the image as the local root disk \
                            (source_type image, destination_type local, boot_index 0) is \
                            supported: Kiln has no volumes"
                        .into(),
                )
            }
        }
    }
    if let Some(groups) = &c.security_groups {
        if groups
            .iter()
            .any(|g| g.get("name").and_then(Value::as_str) != Some("default"))
        {
            return Err("security_groups: only the default group exists in Kiln".into());
        }
    }
    let image = match (c.image_ref.as_deref(), bdm_image) {
        (Some(r), Some(b)) if !r.is_empty() && super::ref_id(r) != b => {
            return Err("imageRef and block_device_mapping_v2 name different images".into())
        }
        (Some(r), _) if !r.is_empty() => super::ref_id(r).to_owned(),
        (_, Some(b)) => b,
        _ => return Err("imageRef is required: Kiln boots servers from images only".into()),
    };
    let networks = match &c.networks {
        None => Vec::new(),
        Some(Value::String(s)) if s == "none" => Vec::new(),
        Some(Value::String(s)) if s == "auto" => default_network
            .into_iter()
            .map(|network| nic(network, None))
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .map(network_entry)
            .collect::<Result<Vec<_>, String>>()?,
        Some(_) => {
            return Err("networks must be \"auto\", \"none\" or a list of {\"uuid\": ...}".into())
        }
    };
    let config_drive = match &c.config_drive {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            _ => return Err(format!("config_drive {s:?} is not a boolean")),
        },
        Some(_) => return Err("config_drive must be a boolean".into()),
    };
    Ok(ServerCreate {
        name: c.name,
        flavor: super::ref_id(&c.flavor_ref).to_owned(),
        image,
        disk_image: None,
        cmdline: None,
        user_data: c.user_data,
        metadata: c.metadata,
        ready: None,
        ttl_s: None,
        networks,
        firmware: None,
        virtio_model: None,
        key_name: c.key_name,
        admin_pass: c.admin_pass,
        config_drive,
        ..ServerCreate::default()
    })
}

fn nic(network: String, ip: Option<String>) -> NicRequest {
    NicRequest {
        network,
        mac: None,
        link: None,
        ip,
    }
}

fn network_entry(v: &Value) -> Result<NicRequest, String> {
    if v.get("port").is_some() {
        return Err("networks: ports are not supported; name the network's uuid".into());
    }
    let uuid = v
        .get("uuid")
        .and_then(Value::as_str)
        .ok_or("networks: each entry needs a uuid")?;
    let ip = v.get("fixed_ip").and_then(Value::as_str).map(str::to_owned);
    Ok(nic(uuid.to_owned(), ip))
}

/// What a `POST /servers/{id}/action` body asks for.
#[derive(Debug)]
pub enum Action {
    Kiln(ServerAction),
    /// `os-getConsoleOutput`, with its `length` (lines from the end).
    ConsoleOutput(Option<usize>),
    /// `os-getVNCConsole`, with its `type` (`novnc`).
    VncConsole(String),
}

/// The one action of an action body (`{"os-start": null}`, `{"reboot":
/// {"type": "HARD"}}`, ...).
pub fn action(body: &Map<String, Value>) -> Result<Action, String> {
    let mut it = body.iter();
    let (Some((name, arg)), None) = (it.next(), it.next()) else {
        return Err("an action body has exactly one member, the action".into());
    };
    Ok(match name.as_str() {
        "os-start" => Action::Kiln(ServerAction::Start),
        "os-stop" => Action::Kiln(ServerAction::Stop),
        "pause" => Action::Kiln(ServerAction::Pause),
        "unpause" => Action::Kiln(ServerAction::Resume),
        "reboot" => {
            let kind = match arg.get("type").and_then(Value::as_str) {
                Some(t) if t.eq_ignore_ascii_case("HARD") => RebootType::Hard,
                Some(t) if t.eq_ignore_ascii_case("SOFT") => RebootType::Soft,
                _ => return Err("reboot needs a type, SOFT or HARD".into()),
            };
            Action::Kiln(ServerAction::Reboot { kind })
        }
        "os-getConsoleOutput" => {
            let length = match arg.get("length") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    let n = v
                        .as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .ok_or("length must be an integer")?;
                    // Nova: -1 means all of it.
                    if n < 0 {
                        None
                    } else {
                        Some(n as usize)
                    }
                }
            };
            Action::ConsoleOutput(length)
        }
        "os-getVNCConsole" => Action::VncConsole(
            arg.get("type")
                .and_then(Value::as_str)
                .ok_or("os-getVNCConsole needs a type (novnc)")?
                .to_owned(),
        ),
        other => return Err(format!("Kiln does not support the server action {other:?}")),
    })
}

#[cfg(test)]
mod tests;
