//! Glance's free-form image properties on Kiln's images: the string
//! properties a create names beside Glance's own members (openstackclient
//! sends `owner_specified.openstack.*` ones with every upload) are kept
//! (`crate::store`, migration 21), and `PATCH /v2/images/{id}` (a JSON
//! patch, `application/openstack-images-v2.1-json-patch`) adds, replaces
//! and removes them. Of Glance's own members a patch may change `name`
//! (the image is renamed); `visibility` `public`, `protected` and
//! `os_hidden` `false` are what every Kiln image is; the rest are
//! read-only (403, as Glance) or Kiln's settings fixed at create (400).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Glance's own members a create takes (`glance::to_kiln` reads them),
/// and Kiln's image settings, named as Nova's image properties.
const CREATE_MEMBERS: [&str; 10] = [
    "name",
    "disk_format",
    "container_format",
    "visibility",
    "protected",
    "os_hidden",
    "tags",
    "min_disk",
    "min_ram",
    "id",
];
pub const KILN_SETTINGS: [&str; 7] = [
    "hw_firmware_type",
    "os_type",
    "hw_tpm_version",
    "hw_disk_bus",
    "os_secure_boot",
    "hw_qemu_guest_agent",
    "hw_vif_model",
];
/// Members Glance itself sets.
const READ_ONLY: [&str; 16] = [
    "id",
    "status",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "owner",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
    "locations",
    "disk_format",
];

/// The longest property name and value Glance stores.
const MAX_KEY: usize = 255;
const MAX_VALUE: usize = 65535;

/// Why a create's properties or a patch are refused: 400, 403 (a
/// read-only member) or 409 (replacing or removing a property that is
/// not there).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PropError {
    #[error("{0}")]
    Bad(String),
    #[error("{0}")]
    ReadOnly(String),
    #[error("{0}")]
    Conflict(String),
}

fn check_prop(key: &str, v: &Value) -> Result<String, PropError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(PropError::Bad(format!(
            "property names are 1 to {MAX_KEY} characters: {key:?}"
        )));
    }
    match v {
        Value::String(s) if s.len() <= MAX_VALUE => Ok(s.clone()),
        Value::String(_) => Err(PropError::Bad(format!(
            "property {key}: values are at most {MAX_VALUE} characters"
        ))),
        _ => Err(PropError::Bad(format!(
            "property {key}: Glance's extra properties are strings, not {v}"
        ))),
    }
}

/// The free-form properties of a create's body: every member that is not
/// Glance's own or a Kiln setting, each a string.
pub fn from_create(body: &Map<String, Value>) -> Result<BTreeMap<String, String>, PropError> {
    let mut out = BTreeMap::new();
    for (k, v) in body {
        if CREATE_MEMBERS.contains(&k.as_str()) || KILN_SETTINGS.contains(&k.as_str()) {
            continue;
        }
        if READ_ONLY.contains(&k.as_str()) {
            return Err(PropError::ReadOnly(format!(
                "Attribute '{k}' is read-only."
            )));
        }
        out.insert(k.clone(), check_prop(k, v)?);
    }
    Ok(out)
}

/// What a patch changes: the image's new name, if it renames it, and its
/// properties afterwards.
#[derive(Debug, PartialEq, Eq)]
pub struct Patched {
    pub name: Option<String>,
    pub properties: BTreeMap<String, String>,
}

/// Applies the JSON patch `ops` to an image named `name` with
/// `properties`, all or nothing.
pub fn apply(
    ops: &Value,
    name: &str,
    properties: &BTreeMap<String, String>,
) -> Result<Patched, PropError> {
    let bad = |m: String| PropError::Bad(m);
    let ops = ops.as_array().ok_or_else(|| {
        bad("a JSON patch is an array of operations ({\"op\", \"path\", \"value\"})".into())
    })?;
    let mut out = Patched {
        name: None,
        properties: properties.clone(),
    };
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("operation without a path: {op}")))?;
        let key = pointer_key(path)?;
        let value = op.get("value");
        if !matches!(kind, "add" | "replace" | "remove") {
            return Err(bad(format!(
                "operation {kind:?} is not supported: add, replace or remove"
            )));
        }
        if kind != "remove" && value.is_none() {
            return Err(bad(format!("operation {kind} on {path} needs a value")));
        }
        match key.as_str() {
            "name" => match (kind, value) {
                ("remove", _) => {
                    return Err(PropError::ReadOnly(
                        "Attribute 'name' cannot be removed.".into(),
                    ))
                }
                (_, Some(Value::String(n))) => out.name = Some(n.clone()),
                _ => return Err(bad("name is a string".into())),
            },
            "visibility" | "protected" | "os_hidden" => {
                let kiln = match key.as_str() {
                    "visibility" => Value::from("public"),
                    _ => Value::from(false),
                };
                if kind == "remove" || value != Some(&kiln) {
                    let shown = kiln.as_str().map_or(kiln.to_string(), str::to_owned);
                    return Err(bad(format!(
                        "{key} is {shown} for every Kiln image and cannot change"
                    )));
                }
            }
            k if READ_ONLY.contains(&k) => {
                return Err(PropError::ReadOnly(format!(
                    "Attribute '{k}' is read-only."
                )))
            }
            k if KILN_SETTINGS.contains(&k) => {
                return Err(bad(format!(
                    "{k} is a Kiln image setting, fixed when the image is made"
                )))
            }
            k @ ("tags" | "min_disk" | "min_ram" | "container_format") => {
                return Err(bad(format!("{k} is not kept by Kiln's images")))
            }
            k => {
                let there = out.properties.contains_key(k);
                match kind {
                    "remove" | "replace" if !there => {
                        return Err(PropError::Conflict(format!("Property {k} does not exist.")))
                    }
                    "remove" => {
                        out.properties.remove(k);
                    }
                    _ => {
                        let v = check_prop(k, value.expect("checked above"))?;
                        out.properties.insert(k.to_owned(), v);
                    }
                }
            }
        }
    }
    if out.name.as_deref() == Some(name) {
        out.name = None;
    }
    Ok(out)
}

/// The one member a JSON pointer names (`/a~1b` → `a/b`).
fn pointer_key(path: &str) -> Result<String, PropError> {
    let rest = path
        .strip_prefix('/')
        .filter(|r| !r.is_empty() && !r.contains('/'));
    let Some(rest) = rest else {
        return Err(PropError::Bad(format!(
            "path {path:?}: Kiln's images take /NAME of one member or property"
        )));
    };
    Ok(rest.replace("~1", "/").replace("~0", "~"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(p: &[(&str, &str)]) -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn create_keeps_string_properties() {
        let b = json!({"name": "d", "disk_format": "raw", "hw_firmware_type": "bios",
                       "owner_specified.openstack.sha256": "ab", "team": "x"});
        assert_eq!(
            from_create(b.as_object().unwrap()).unwrap(),
            props(&[("owner_specified.openstack.sha256", "ab"), ("team", "x")])
        );
        let b = json!({"name": "d", "n": 5});
        assert!(matches!(
            from_create(b.as_object().unwrap()),
            Err(PropError::Bad(_))
        ));
        let b = json!({"name": "d", "status": "active"});
        assert!(matches!(
            from_create(b.as_object().unwrap()),
            Err(PropError::ReadOnly(_))
        ));
    }

    #[test]
    fn patches_apply_all_or_nothing() {
        let p = props(&[("a", "1"), ("b", "2")]);
        let ops = json!([
            {"op": "add", "path": "/c", "value": "3"},
            {"op": "replace", "path": "/a", "value": "9"},
            {"op": "remove", "path": "/b"},
            {"op": "add", "path": "/x~1y", "value": "slash"},
            {"op": "replace", "path": "/name", "value": "new"},
            {"op": "replace", "path": "/visibility", "value": "public"},
        ]);
        let r = apply(&ops, "old", &p).unwrap();
        assert_eq!(r.name.as_deref(), Some("new"));
        assert_eq!(
            r.properties,
            props(&[("a", "9"), ("c", "3"), ("x/y", "slash")])
        );
        // Renaming to its own name is no rename.
        let same = apply(
            &json!([{"op": "replace", "path": "/name", "value": "old"}]),
            "old",
            &p,
        );
        assert_eq!(same.unwrap().name, None);
        for (op, want) in [
            (json!({"op": "remove", "path": "/zz"}), "Conflict"),
            (
                json!({"op": "replace", "path": "/zz", "value": "1"}),
                "Conflict",
            ),
            (
                json!({"op": "add", "path": "/size", "value": "1"}),
                "ReadOnly",
            ),
            (json!({"op": "remove", "path": "/name"}), "ReadOnly"),
            (
                json!({"op": "add", "path": "/os_type", "value": "linux"}),
                "Bad",
            ),
            (
                json!({"op": "replace", "path": "/visibility", "value": "private"}),
                "Bad",
            ),
            (json!({"op": "add", "path": "/tags", "value": ["t"]}), "Bad"),
            (json!({"op": "add", "path": "/k", "value": 1}), "Bad"),
            (json!({"op": "move", "path": "/k", "from": "/a"}), "Bad"),
            (
                json!({"op": "add", "path": "/locations/-", "value": "u"}),
                "Bad",
            ),
            (json!({"op": "add", "path": "/k"}), "Bad"),
        ] {
            let e = apply(
                &json!([{"op": "add", "path": "/ok", "value": "1"}, op]),
                "old",
                &p,
            )
            .unwrap_err();
            assert!(format!("{e:?}").starts_with(want), "{op}: {e:?}");
        }
        assert!(apply(&json!({"op": "add"}), "old", &p).is_err());
    }
}
