//! Nova's flavor create body as Kiln's [`FlavorCreate`]: what a Kiln
//! flavor has (name, vCPUs, RAM, root disk) is taken; what it has not
//! (a chosen id, ephemeral or swap disks, private flavors, an rxtx
//! factor, a description) is refused with a message for a 400.

use kiln_api::compute::FlavorCreate;
use serde_json::{Map, Value};

/// A number member, given as a number or a string of one (novaclient
/// sent strings).
fn number(m: &Map<String, Value>, k: &str) -> Result<Option<u64>, String> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .map(Some)
            .ok_or_else(|| {
                format!("Invalid input for field/attribute {k}: {v} is not a whole number")
            }),
    }
}

/// `POST /flavors`'s `flavor`.
pub fn flavor_create(m: &Map<String, Value>) -> Result<FlavorCreate, String> {
    for (k, v) in m {
        let why = match k.as_str() {
            "name" | "ram" | "vcpus" | "disk" => None,
            "id" if v.is_null() || v.as_str() == Some("auto") => None,
            "id" => Some("Kiln picks a flavor's id (a UUID): leave id out"),
            "OS-FLV-EXT-DATA:ephemeral" | "swap" if number(m, k)?.unwrap_or(0) == 0 => None,
            "OS-FLV-EXT-DATA:ephemeral" => Some("Kiln's servers have no ephemeral disk"),
            "swap" => Some("Kiln's servers have no swap disk"),
            "os-flavor-access:is_public" if v.as_bool() != Some(false) => None,
            "os-flavor-access:is_public" => Some("every Kiln flavor is public"),
            "rxtx_factor" if v.is_null() || v.as_f64() == Some(1.0) => None,
            "rxtx_factor" => Some("set quota:vif_* extra specs for a NIC's rate instead"),
            "description" if v.is_null() || v.as_str() == Some("") => None,
            "description" => Some("Kiln's flavors have no description"),
            _ => Some("Kiln's flavors have a name, vcpus, ram and disk only"),
        };
        if let Some(why) = why {
            return Err(format!("{k} {v} is not supported: {why}"));
        }
    }
    let name = match m.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err("Invalid input for field/attribute flavor: name is required".into()),
    };
    let need = |k: &str| {
        number(m, k)?
            .ok_or_else(|| format!("Invalid input for field/attribute flavor: {k} is required"))
    };
    let vcpus = need("vcpus")?;
    Ok(FlavorCreate {
        name,
        vcpus: u32::try_from(vcpus).map_err(|_| "vcpus must be 1 to 255".to_owned())?,
        ram_mb: need("ram")?,
        disk_gb: number(m, "disk")?.unwrap_or(0),
        extra_specs: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn what_openstackclient_sends_is_taken() {
        let m = json!({"name": "f1", "ram": 256, "vcpus": 1, "disk": 1, "id": null,
                       "OS-FLV-EXT-DATA:ephemeral": 0, "swap": 0,
                       "os-flavor-access:is_public": true});
        let f = flavor_create(m.as_object().unwrap()).unwrap();
        assert_eq!(
            (f.name.as_str(), f.vcpus, f.ram_mb, f.disk_gb),
            ("f1", 1, 256, 1)
        );
        for (k, v, why) in [
            ("id", json!("42"), "id"),
            ("swap", json!(512), "swap"),
            ("OS-FLV-EXT-DATA:ephemeral", json!(1), "ephemeral"),
            ("os-flavor-access:is_public", json!(false), "public"),
            ("rxtx_factor", json!(2.0), "quota:vif"),
            ("description", json!("d"), "description"),
            ("vcpus", json!("x"), "whole number"),
            ("extra", json!(1), "extra"),
        ] {
            let mut m = m.as_object().unwrap().clone();
            m.insert(k.into(), v);
            let e = flavor_create(&m).unwrap_err();
            assert!(e.contains(why), "{k}: {e}");
        }
        let e = flavor_create(json!({"name": "f", "vcpus": 1}).as_object().unwrap()).unwrap_err();
        assert!(e.contains("ram is required"), "{e}");
    }
}
