//! **Interim** content of a config drive, until the metadata module's
//! renderer (the files the metadata service serves) replaces it: only
//! `openstack/latest/meta_data.json` (uuid, name, hostname, public_keys,
//! admin_pass, meta), `openstack/latest/user_data` and
//! `ec2/latest/meta-data.json`. Called from exactly one place,
//! [`super::build_for`]; swap [`files_for`] there.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::ServerFacts;

/// The drive's files for a server: (path from the drive's root, content).
pub fn files_for(f: &ServerFacts) -> Vec<(String, Vec<u8>)> {
    let s = &f.server;
    let hostname = hostname(&s.name);
    let keys: BTreeMap<&str, &str> = f
        .keypair
        .iter()
        .map(|k| (k.name.as_str(), k.public_key.as_str()))
        .collect();
    let mut meta = json!({
        "uuid": s.id,
        "name": s.name,
        "hostname": hostname,
        "launch_index": 0,
        "public_keys": keys,
        "meta": s.metadata,
    });
    if let Some(p) = &f.admin_pass {
        meta["admin_pass"] = Value::from(p.as_str());
    }
    let mut ec2 = json!({
        "instance-id": s.id,
        "hostname": hostname,
        "local-hostname": hostname,
        "ami-launch-index": 0,
    });
    if let Some(k) = &f.keypair {
        ec2["public-keys"] = json!({"0": {"openssh-key": k.public_key}});
    }
    let mut files = vec![
        (
            "openstack/latest/meta_data.json".to_owned(),
            meta.to_string().into_bytes(),
        ),
        (
            "ec2/latest/meta-data.json".to_owned(),
            ec2.to_string().into_bytes(),
        ),
    ];
    if let Some(u) = &f.user_data {
        files.push(("openstack/latest/user_data".to_owned(), u.clone()));
    }
    files
}

/// A host name from a server name, as Nova's `sanitize_hostname`:
/// lowercase, `_` and spaces to `-`, other characters dropped, at most 63.
fn hostname(name: &str) -> String {
    let h: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '_' || c == ' ' { '-' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    let h = h.trim_matches(|c| c == '-' || c == '.');
    let h: String = h.chars().take(63).collect();
    if h.is_empty() {
        "server".into()
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostnames() {
        assert_eq!(super::hostname("Web_1.Example"), "web-1.example");
        assert_eq!(super::hostname("-é-"), "server");
        assert_eq!(super::hostname(&"a".repeat(70)).len(), 63);
    }
}
