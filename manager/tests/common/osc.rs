//! The OpenStack clients of the tests (python-openstackclient with
//! osc-placement, and openstacksdk, pinned in `scripts/setup.sh`, in
//! `cache/venv-openstack`), run inside a test's network namespace against
//! a kilnd whose TCP listener is on that namespace's loopback, pointed at
//! it by the `clouds.yaml` that `kilnd --print-clouds-yaml` prints.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::Kilnd;

/// A program of the OpenStack venv (`openstack`, `python`).
pub fn venv_bin(name: &str) -> PathBuf {
    let bin = kiln_tests::cache_dir()
        .join("venv-openstack/bin")
        .join(name);
    assert!(
        bin.exists(),
        "{} missing: run scripts/setup.sh",
        bin.display()
    );
    bin
}

/// `[tcp]` on `addr` of the namespace's loopback, with a bearer token for
/// `/v1` in `dir`.
pub fn tcp_config(dir: &Path, addr: &str) -> String {
    let token = dir.join(format!("api-token-{}", addr.replace([':', '.'], "-")));
    std::fs::write(&token, "v1-bearer-token-0123456789\n").unwrap();
    format!(
        "[tcp]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\n",
        token.display()
    )
}

/// The `clouds.yaml` kilnd prints for itself, written beside its state.
pub fn clouds_yaml(k: &Kilnd) -> PathBuf {
    let out = Command::new(super::kilnd_bin())
        .arg("--config")
        .arg(&k.config)
        .arg("--state-dir")
        .arg(&k.state)
        .arg("--print-clouds-yaml")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("/identity/v3"), "{yaml}");
    let clouds = k.dir.path().join("clouds.yaml");
    std::fs::write(&clouds, yaml).unwrap();
    clouds
}

/// The `openstack` CLI in the namespace, on the clouds.yaml kilnd printed.
pub struct Cli {
    pub ns: String,
    pub clouds: PathBuf,
}

impl Cli {
    pub fn new(k: &Kilnd, ns: &str) -> Cli {
        Cli {
            ns: ns.to_owned(),
            clouds: clouds_yaml(k),
        }
    }

    /// Runs `openstack ARGS` with `env` added: (success, stdout, stderr).
    pub fn try_run_env(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(venv_bin("openstack"))
            .args(args)
            .env("OS_CLIENT_CONFIG_FILE", &self.clouds)
            .env("OS_CLOUD", "kiln")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        self.try_run_env(args, &[])
    }

    pub fn run(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_run(args);
        assert!(ok, "openstack {args:?} failed:\n{out}\n{err}");
        out
    }

    /// Runs with `-f json` and parses the output.
    pub fn json(&self, args: &[&str]) -> Value {
        self.json_env(args, &[])
    }

    pub fn json_env(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-f", "json"]);
        let (ok, out, err) = self.try_run_env(&a, env);
        assert!(ok, "openstack {args:?} failed:\n{out}\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }
}

/// `curl -s -i` in the namespace: (status, headers and body).
pub fn curl(ns: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "-i",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

/// The JSON body of a `curl -i` answer.
pub fn body_json(resp: &str) -> Value {
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or(resp);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}"))
}

/// The `X-Subject-Token` header of a `curl -i` answer.
pub fn subject_token(resp: &str) -> String {
    resp.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-subject-token:")
                .then(|| l.split_once(':').unwrap().1.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no X-Subject-Token in {resp}"))
}

/// A password auth body for the admin user, scoped to project admin.
pub fn password_auth(password: &str) -> String {
    serde_json::json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
    .to_string()
}
