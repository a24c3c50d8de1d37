//! Glance v2's view of Kiln's images: a disk image is `qcow2` or `raw` in
//! a `bare` container, a kernel image an `aki`; Kiln's image properties
//! (`hw_firmware_type`, `os_type`, ...) are Glance properties, named as
//! Nova reads them.

use kiln_api::compute::{
    DiskBus, DiskSource, Firmware, Image, ImageCreate, ImageFormat, ImageKind, ImageStatus, OsType,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Glance's status of a Kiln image.
pub fn status(s: ImageStatus) -> &'static str {
    match s {
        ImageStatus::Queued => "queued",
        ImageStatus::Importing => "saving",
        ImageStatus::Active => "active",
        ImageStatus::Error => "killed",
    }
}

/// `GET /v2/images/{id}` and the list's entries, with the image's
/// free-form `properties` (`glance_props.rs`).
pub fn image(i: &Image, owner: &str, properties: Option<&BTreeMap<String, String>>) -> Value {
    let (disk_format, container_format, size, hash) = match &i.kind {
        ImageKind::Disk {
            format,
            size_bytes,
            sha256,
            ..
        } => (
            format.as_str(),
            "bare",
            json!(size_bytes),
            (!sha256.is_empty()).then(|| sha256.clone()),
        ),
        ImageKind::Kernel { .. } => ("aki", "aki", Value::Null, None),
    };
    let mut v = json!({
        "id": i.id,
        "name": i.name,
        "status": status(i.status),
        "visibility": "public",
        "protected": false,
        "os_hidden": false,
        "disk_format": disk_format,
        "container_format": container_format,
        "size": size,
        "virtual_size": null,
        "checksum": null,
        "os_hash_algo": hash.as_ref().map(|_| "sha256"),
        "os_hash_value": hash,
        "min_disk": 0,
        "min_ram": 0,
        "owner": owner,
        "created_at": i.created_at,
        "updated_at": i.created_at,
        "tags": [],
        "self": format!("/v2/images/{}", i.id),
        "file": format!("/v2/images/{}/file", i.id),
        "schema": "/v2/schemas/image",
        "hw_vif_model": "virtio",
    });
    let o = v.as_object_mut().expect("an object");
    if let ImageKind::Disk {
        firmware, os_type, ..
    } = &i.kind
    {
        o.insert("hw_firmware_type".into(), json!(firmware.as_str()));
        o.insert("os_type".into(), json!(os_type.as_str()));
    }
    if i.tpm {
        o.insert("hw_tpm_version".into(), json!("2.0"));
    }
    for (k, val) in properties.into_iter().flatten() {
        o.entry(k.clone()).or_insert_with(|| json!(val));
    }
    v
}

/// Glance's `POST /v2/images` as Kiln's upload create: a `raw` or
/// `qcow2` disk image in a `bare` container whose bytes come by `PUT
/// .../file`; `hw_firmware_type`, `os_type` and `hw_tpm_version` are
/// Kiln's image settings; other string properties (openstacksdk's
/// `owner_specified.openstack.*`) are kept beside (`glance_props.rs`).
pub fn to_kiln(body: &Map<String, Value>) -> Result<ImageCreate, String> {
    let s = |k: &str| body.get(k).and_then(Value::as_str);
    let name = s("name").ok_or("name is required: Kiln images have names")?;
    if body.contains_key("id") {
        return Err("id: Kiln makes image ids itself".into());
    }
    let format = match s("disk_format") {
        Some("raw") => ImageFormat::Raw,
        Some("qcow2") => ImageFormat::Qcow2,
        Some("iso") => ImageFormat::Iso,
        Some(f) => {
            return Err(format!(
                "disk_format {f:?} is not supported: raw, qcow2 or iso"
            ))
        }
        None => return Err("disk_format is required: raw, qcow2 or iso".into()),
    };
    if let Some(c) = s("container_format").filter(|c| *c != "bare") {
        return Err(format!("container_format {c:?} is not supported: bare"));
    }
    let firmware = match s("hw_firmware_type") {
        None => None,
        Some("bios") => Some(Firmware::Bios),
        Some("uefi") => Some(Firmware::Uefi),
        Some(f) => return Err(format!("hw_firmware_type {f:?}: bios or uefi")),
    };
    let os_type = match s("os_type") {
        None => None,
        Some("linux") => Some(OsType::Linux),
        Some("windows") => Some(OsType::Windows),
        Some(o) => return Err(format!("os_type {o:?}: linux or windows")),
    };
    let tpm = match s("hw_tpm_version") {
        None => None,
        Some("2.0") => Some(true),
        Some(v) => return Err(format!("hw_tpm_version {v:?}: only 2.0")),
    };
    // Nova's image properties for the rest.
    let disk_bus = match s("hw_disk_bus") {
        None => None,
        Some("virtio") => Some(DiskBus::Virtio),
        Some("sata") => Some(DiskBus::Sata),
        Some(b) => return Err(format!("hw_disk_bus {b:?}: virtio or sata")),
    };
    let secure_boot = match s("os_secure_boot") {
        None => None,
        Some("required") => Some(true),
        Some("disabled") | Some("optional") => Some(false),
        Some(v) => {
            return Err(format!(
                "os_secure_boot {v:?}: required, disabled or optional"
            ))
        }
    };
    let agent = match s("hw_qemu_guest_agent") {
        None => None,
        Some("yes") | Some("true") => Some(true),
        Some("no") | Some("false") => Some(false),
        Some(v) => return Err(format!("hw_qemu_guest_agent {v:?}: yes or no")),
    };
    Ok(ImageCreate::Disk {
        name: name.to_owned(),
        path: None,
        format,
        source: DiskSource::Upload,
        firmware,
        os_type,
        virtio_model: None,
        tpm,
        display: None,
        disk_bus,
        secure_boot,
        agent,
    })
}

/// Whether an image's view passes a list's filters (`id`, `name`,
/// `status`, `disk_format`, `container_format`, `visibility`, each a
/// value or Glance's `in:a,b`; other parameters are not filters kilnd
/// knows and match everything).
pub fn matches(v: &Value, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, want)| match k.as_str() {
        "name" | "status" | "disk_format" | "container_format" | "visibility" | "id" => {
            let have = v.get(k).and_then(Value::as_str).unwrap_or("");
            match want.strip_prefix("in:") {
                Some(list) => list.split(',').any(|w| w == have),
                None => have == want,
            }
        }
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let v = json!({"id": "a", "name": "n", "status": "active"});
        let f = |k: &str, w: &str| vec![(k.to_owned(), w.to_owned())];
        assert!(matches(&v, &f("id", "in:b,a")));
        assert!(!matches(&v, &f("id", "in:b,c")));
        assert!(matches(&v, &f("name", "n")));
        assert!(!matches(&v, &f("status", "queued")));
        assert!(matches(&v, &f("limit", "5")));
    }

    #[test]
    fn create_maps_onto_an_upload() {
        let c = |v: Value| to_kiln(v.as_object().unwrap());
        let ok = c(
            json!({"name": "d", "disk_format": "qcow2", "container_format": "bare",
                          "visibility": "public", "hw_firmware_type": "uefi",
                          "owner_specified.openstack.sha256": "x"}),
        )
        .unwrap();
        assert!(matches!(
            ok,
            ImageCreate::Disk {
                format: ImageFormat::Qcow2,
                source: DiskSource::Upload,
                firmware: Some(Firmware::Uefi),
                ..
            }
        ));
        for (v, says) in [
            (json!({"disk_format": "raw"}), "name"),
            (json!({"name": "d", "disk_format": "vmdk"}), "vmdk"),
            (json!({"name": "d"}), "disk_format"),
            (
                json!({"name": "d", "disk_format": "raw", "container_format": "ova"}),
                "ova",
            ),
            (
                json!({"name": "d", "disk_format": "raw", "os_type": "plan9"}),
                "plan9",
            ),
        ] {
            assert!(c(v).unwrap_err().contains(says), "{says}");
        }
    }
}
