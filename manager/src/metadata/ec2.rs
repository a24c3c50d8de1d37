//! The EC2 tree, as Nova renders it (`get_ec2_metadata` in
//! `nova/api/metadata/base.py`): the meta-data of a version as a JSON
//! value (the config drive's `meta-data.json`), and a path in it as the
//! service answers it (`ec2_md_print`: a directory lists its keys
//! sorted, sub-directories with `/`, and `public-keys/` as `0=name`).

use serde_json::{json, Map, Value};

use super::Facts;

/// Nova's EC2 versions, oldest first.
pub const VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
];

/// Whether `v` is a version this tree answers (`latest` included).
pub fn known(v: &str) -> bool {
    v == "latest" || VERSIONS.contains(&v)
}

fn since(v: &str, since: &str) -> bool {
    // The dated versions sort as strings; "1.0" is before all.
    v == "latest" || (v != "1.0" && v >= since)
}

/// `GET /`: the versions, then `latest`.
pub fn version_list() -> String {
    let mut v: Vec<&str> = VERSIONS.to_vec();
    v.push("latest");
    v.join("\n")
}

/// `i-` and 8 hex digits, as Nova's EC2 ids (Kiln's are the server id's
/// first 8 hex digits, unique among a kilnd's servers as its tap names).
pub fn instance_id(f: &Facts) -> String {
    format!("i-{}", crate::net::id_prefix(&f.id))
}

/// The meta-data of version `v` (known), as Nova's dict: `public-keys`
/// entries carry Nova's `_name` for the listing (the config drive's JSON
/// drops it).
pub fn meta_data(f: &Facts, v: &str) -> Value {
    let hostname = &f.hostname;
    let local_ipv4 = f
        .nics
        .iter()
        .find_map(|n| n.ip)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let mut m = Map::new();
    m.insert(
        "ami-id".into(),
        json!(format!("ami-{}", crate::net::id_prefix(&f.image_id))),
    );
    m.insert("ami-launch-index".into(), json!(f.launch_index));
    m.insert("ami-manifest-path".into(), json!("FIXME"));
    m.insert("instance-id".into(), json!(instance_id(f)));
    m.insert("hostname".into(), json!(hostname));
    m.insert("local-ipv4".into(), json!(local_ipv4));
    m.insert(
        "reservation-id".into(),
        json!(format!("r-{}", reservation(&f.id))),
    );
    m.insert("security-groups".into(), json!([]));
    if let Some(k) = &f.key {
        m.insert(
            "public-keys".into(),
            json!({"0": {"_name": format!("0={}", k.name), "openssh-key": k.public_key}}),
        );
    }
    if since(v, "2007-01-19") {
        m.insert("local-hostname".into(), json!(hostname));
        m.insert("public-hostname".into(), json!(hostname));
        m.insert("public-ipv4".into(), json!(""));
    }
    if since(v, "2007-08-29") {
        m.insert("instance-type".into(), json!(f.flavor));
    }
    if since(v, "2007-12-15") {
        m.insert(
            "block-device-mapping".into(),
            json!({"ami": "vda", "root": "/dev/vda"}),
        );
    }
    if since(v, "2008-02-01") {
        m.insert(
            "placement".into(),
            json!({"availability-zone": f.availability_zone}),
        );
    }
    if since(v, "2008-09-01") {
        m.insert("instance-action".into(), json!("none"));
    }
    Value::Object(m)
}

/// A reservation id for the server: 8 characters of `[0-9a-z]` derived
/// from its id, stable across requests (Nova draws one per boot request).
fn reservation(id: &str) -> String {
    use sha2::{Digest, Sha256};
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    Sha256::digest(id.as_bytes())
        .iter()
        .take(8)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// The meta-data as the config drive's `ec2/<v>/meta-data.json` holds it
/// (Nova deletes the listing's `_name`).
pub fn drive_json(f: &Facts, v: &str) -> Value {
    let mut m = meta_data(f, v);
    if let Some(k) = m
        .pointer_mut("/public-keys/0")
        .and_then(Value::as_object_mut)
    {
        k.remove("_name");
    }
    m
}

/// The item at `path` (tokens after `meta-data`) in `tree`, printed as
/// Nova prints it; None when there is none.
pub fn item(tree: &Value, path: &[&str]) -> Option<String> {
    let mut at = tree;
    for t in path {
        at = at.as_object()?.get(*t)?;
    }
    Some(print(at))
}

fn print(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| *k != "_name")
            .map(|(k, v)| match v.get("_name").and_then(Value::as_str) {
                Some(name) if v.is_object() => name.to_owned(),
                _ if v.is_object() => format!("{k}/"),
                _ => k.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Array(a) => a.iter().map(print).collect::<Vec<_>>().join("\n"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
