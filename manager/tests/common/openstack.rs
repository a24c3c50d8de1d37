//! Plain HTTP against kilnd's OpenStack routes: curl in the test's
//! network namespace, on the TCP listener, with a Keystone token; and
//! each service's refusal checked in its error shape.

use std::process::Command;

use kiln_tests::netns::NetNs;
use serde_json::{json, Value};

use super::api::NO_VMM;
use super::Kilnd;

/// curl in a namespace, on a kilnd's TCP listener, with a Keystone token.
pub struct Os {
    ns: String,
    url: String,
    token: String,
}

impl Os {
    /// A token from the kilnd [`kilnd`] started on `port`.
    pub fn new(ns: &str, port: u16) -> Os {
        let mut os = Os {
            ns: ns.to_owned(),
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
        };
        let auth = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": "pw-0123456789"}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}});
        let (code, head, _) = os.raw("POST", "/identity/v3/auth/tokens", Some(&auth));
        assert_eq!(code, 201, "{head}");
        os.token = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("x-subject-token:")
                    .then(|| l.split_once(':').unwrap().1.trim().to_owned())
            })
            .unwrap();
        os
    }

    /// (status, headers, body as JSON or Null).
    pub fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String, Value) {
        self.raw_with(&[], method, path, body)
    }

    /// `GET path` at compute microversion `mv`: (status, body).
    pub fn get_at(&self, mv: &str, path: &str) -> (u16, Value) {
        let h = format!("OpenStack-API-Version: compute {mv}");
        let (c, _, v) = self.raw_with(&[&h], "GET", path, None);
        (c, v)
    }

    fn raw_with(
        &self,
        headers: &[&str],
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, String, Value) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "curl", "-s", "-i", "-X", method]);
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "-w",
            "\n%{http_code}",
        ]);
        if !self.token.is_empty() {
            cmd.args(["-H", &format!("X-Auth-Token: {}", self.token)]);
        }
        for h in headers {
            cmd.args(["-H", h]);
        }
        if let Some(b) = body {
            cmd.args(["-d", &b.to_string()]);
        }
        let out = cmd.arg(format!("{}{path}", self.url)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (resp, code) = text.rsplit_once('\n').unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
        let v = serde_json::from_str(body).unwrap_or(Value::Null);
        (code.trim().parse().unwrap(), head.to_owned(), v)
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (c, _, v) = self.raw(method, path, body.as_ref());
        (c, v)
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (c, v) = self.call(method, path, body);
        assert!((200..300).contains(&c), "{method} {path}: {c} {v}");
        v
    }

    /// A Neutron refusal: `code`, its shape, `why` in the message.
    pub fn neutron_refuses(&self, method: &str, path: &str, body: Value, code: u16, why: &str) {
        let (c, v) = self.call(method, path, Some(body.clone()));
        assert_eq!(c, code, "{path} {body}: {v}");
        let m = v["NeutronError"]["message"].as_str().unwrap_or_default();
        assert!(m.contains(why), "{path} {body}: {v}");
        assert!(v["NeutronError"]["type"].as_str().is_some(), "{v}");
    }

    /// A Nova refusal: `code`, its shape, `why` in the message.
    pub fn nova_refuses(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        code: u16,
        why: &str,
    ) {
        let (c, v) = self.call(method, path, body.clone());
        assert_eq!(c, code, "{path} {body:?}: {v}");
        let (_, fault) = v.as_object().and_then(|o| o.iter().next()).unwrap();
        assert_eq!(fault["code"], code, "{v}");
        assert!(
            fault["message"].as_str().unwrap().contains(why),
            "{path}: {v}"
        );
    }
}

/// A kilnd without a VMM in `ns`, its TCP listener on `port`, admin's
/// password the one [`Os::new`] gives.
pub fn kilnd(ns: &NetNs, port: u16) -> Kilnd {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("t");
    std::fs::write(&token, "v1-bearer-token-0123456789\n").unwrap();
    let k = Kilnd::start_in(
        Some(ns.name()),
        &format!(
            "[tcp]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n{NO_VMM}\
             [openstack]\nadmin_password = \"pw-0123456789\"\n",
            token.display()
        ),
    );
    std::mem::forget(dir);
    k
}
