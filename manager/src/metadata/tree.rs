//! A request path to its answer over both trees (as Nova's `lookup`: `/`
//! and any path not under `/openstack` is the EC2 tree), and the files
//! of a config drive.

use serde_json::Value;

use super::{ec2, openstack, Facts};

/// An answer of the metadata service.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

impl Answer {
    pub fn text(body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status: 200,
            content_type: TEXT,
            body: body.into(),
        }
    }

    fn json(v: &Value) -> Answer {
        Answer {
            status: 200,
            content_type: JSON,
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    /// An empty answer with `status` (404 for anything unknown, from
    /// anyone unknown).
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            content_type: TEXT,
            body: Vec::new(),
        }
    }
}

/// The tokens of a path: empty and `.` segments dropped; None if it has
/// `..` (nothing here needs it).
pub fn tokens(path: &str) -> Option<Vec<&str>> {
    let t: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    (!t.contains(&"..")).then_some(t)
}

/// Whether `tokens` name a version's `password` (where cloudbase-init
/// posts): `openstack/<v>/password`, `v` from 2013-04-04 on.
pub fn is_password(f: &Facts, tokens: &[&str]) -> bool {
    matches!(tokens, ["openstack", v, "password"]
        if openstack::known(v) && openstack::has_file(f, v, "password"))
}

/// `GET path` for the server `f`.
pub fn get(f: &Facts, path: &str) -> Answer {
    let Some(t) = tokens(path) else {
        return Answer::status(404);
    };
    match t.as_slice() {
        [] => Answer::text(ec2::version_list()),
        ["openstack"] => Answer::text(openstack::version_list()),
        ["openstack", v] if openstack::known(v) => Answer::text(openstack::listing(f, v)),
        ["openstack", v, file] if openstack::known(v) && openstack::has_file(f, v, file) => {
            openstack_file(f, v, file)
        }
        [v] if ec2::known(v) => {
            let mut l = vec!["meta-data/"];
            if f.user_data.is_some() {
                l.push("user-data");
            }
            Answer::text(l.join("\n"))
        }
        [v, "user-data"] if ec2::known(v) => match &f.user_data {
            Some(u) => Answer::text(u.clone()),
            None => Answer::status(404),
        },
        [v, "meta-data", rest @ ..] if ec2::known(v) => {
            match ec2::item(&ec2::meta_data(f, v), rest) {
                Some(s) => Answer::text(s),
                None => Answer::status(404),
            }
        }
        _ => Answer::status(404),
    }
}

fn openstack_file(f: &Facts, v: &str, file: &str) -> Answer {
    match file {
        "meta_data.json" => Answer::json(&openstack::meta_data(f, v)),
        "network_data.json" => Answer::json(&openstack::network_data(f)),
        "vendor_data.json" | "vendor_data2.json" => Answer::json(&openstack::vendor_data()),
        "user_data" => Answer::text(f.user_data.clone().unwrap_or_default()),
        "password" => Answer::text(f.password.clone().unwrap_or_default()),
        _ => Answer::status(404),
    }
}

/// The EC2 versions a config drive carries (Nova's default
/// `config_drive_skip_versions` leaves out those before 2009-04-04).
const DRIVE_EC2_VERSIONS: &[&str] = &["2009-04-04", "latest"];

/// The files of server `f`'s config drive, at Nova's paths:
/// `ec2/<v>/meta-data.json` and `ec2/<v>/user-data`, then for every
/// OpenStack version and `latest`: `openstack/<v>/meta_data.json`,
/// `user_data`, `vendor_data.json`, `network_data.json`,
/// `vendor_data2.json` (each from the version that has it). The same
/// renderers as the metadata service's, so both say the same.
pub fn drive_files(f: &Facts) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for v in DRIVE_EC2_VERSIONS {
        if let Some(u) = &f.user_data {
            out.push((format!("ec2/{v}/user-data"), u.clone()));
        }
        let md = serde_json::to_vec(&ec2::drive_json(f, v)).unwrap_or_default();
        out.push((format!("ec2/{v}/meta-data.json"), md));
    }
    for v in openstack::VERSIONS.iter().copied().chain(["latest"]) {
        for file in [
            "meta_data.json",
            "user_data",
            "vendor_data.json",
            "network_data.json",
            "vendor_data2.json",
        ] {
            if openstack::has_file(f, v, file) {
                let a = openstack_file(f, v, file);
                out.push((format!("openstack/{v}/{file}"), a.body));
            }
        }
    }
    out
}
