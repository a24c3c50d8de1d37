//! A property test of the OpenStack routes (the issue's "schemathesis or
//! an equivalent"): for a bounded time, every Keystone, Nova, Glance,
//! Neutron and Placement route of a real kilnd gets generated requests
//! (valid bodies mutated member by member: types swapped, members
//! dropped or added, huge and odd values, garbage bytes; path parameters
//! that exist, do not, or are odd; random microversion, content type and
//! token headers; other methods) and must never answer 5xx, must answer
//! a JSON body with every error, and must stay up without a panic in
//! its log. The seed is printed (`KILN_OS_FUZZ_SEED` replays one).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::api::{kernel_image, small_host};
use common::Kilnd;
use kiln_tests::netns::NetNs;
use serde_json::{json, Value};

/// xorshift64*: the generator (no dependency, replayable by seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One request over the unix socket: (status, body).
fn send(
    sock: &Path,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    let _ = s.write_all(&out);
    let mut resp = vec![];
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no answer to {method} {path}: {text}"));
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |i| i + 4);
    (status, resp[at..].to_vec())
}

const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/identity/v3", ""),
    ("POST", "/identity/v3/auth/tokens", "auth"),
    ("GET", "/identity/v3/auth/tokens", ""),
    ("HEAD", "/identity/v3/auth/tokens", ""),
    ("DELETE", "/identity/v3/auth/tokens", ""),
    (
        "POST",
        "/identity/v3/users/{user}/application_credentials",
        "appcred",
    ),
    (
        "GET",
        "/identity/v3/users/{user}/application_credentials",
        "",
    ),
    (
        "GET",
        "/identity/v3/users/{user}/application_credentials/{cred}",
        "",
    ),
    (
        "DELETE",
        "/identity/v3/users/{user}/application_credentials/{cred}",
        "",
    ),
    ("GET", "/compute/", ""),
    ("GET", "/compute/v2.1/flavors", ""),
    ("GET", "/compute/v2.1/flavors/detail", ""),
    ("GET", "/compute/v2.1/flavors/{flavor}", ""),
    ("GET", "/compute/v2.1/flavors/{flavor}/os-extra_specs", ""),
    ("GET", "/compute/v2.1/os-keypairs", ""),
    ("POST", "/compute/v2.1/os-keypairs", "keypair"),
    ("GET", "/compute/v2.1/os-keypairs/{keypair}", ""),
    ("DELETE", "/compute/v2.1/os-keypairs/{keypair}", ""),
    ("GET", "/compute/v2.1/limits", ""),
    ("GET", "/compute/v2.1/os-hypervisors", ""),
    ("GET", "/compute/v2.1/os-hypervisors/detail", ""),
    ("GET", "/compute/v2.1/os-availability-zone", ""),
    ("GET", "/compute/v2.1/servers", ""),
    ("POST", "/compute/v2.1/servers", "server"),
    ("GET", "/compute/v2.1/servers/detail", ""),
    ("GET", "/compute/v2.1/servers/{server}", ""),
    ("DELETE", "/compute/v2.1/servers/{server}", ""),
    ("POST", "/compute/v2.1/servers/{server}/action", "action"),
    ("GET", "/image/", ""),
    ("GET", "/image/v2/images", ""),
    ("POST", "/image/v2/images", "image"),
    ("GET", "/image/v2/images/{image}", ""),
    ("PATCH", "/image/v2/images/{image}", "patch"),
    ("DELETE", "/image/v2/images/{image}", ""),
    ("PUT", "/image/v2/images/{image}/file", "bytes"),
    ("GET", "/image/v2/schemas/image", ""),
    ("GET", "/network/", ""),
    ("GET", "/network/v2.0/networks", ""),
    ("GET", "/network/v2.0/networks/{network}", ""),
    ("GET", "/network/v2.0/subnets", ""),
    ("GET", "/network/v2.0/subnets/{network}", ""),
    ("GET", "/placement/", ""),
    ("GET", "/placement/resource_providers", ""),
    ("GET", "/placement/resource_providers/{rp}", ""),
    ("GET", "/placement/resource_providers/{rp}/inventories", ""),
    (
        "GET",
        "/placement/resource_providers/{rp}/inventories/{class}",
        "",
    ),
    ("GET", "/placement/resource_providers/{rp}/usages", ""),
    ("GET", "/placement/resource_providers/{rp}/allocations", ""),
    ("GET", "/placement/allocations/{server}", ""),
    ("GET", "/placement/usages", ""),
];

/// A valid body of `kind`.
fn template(kind: &str, r: &mut Rng, user: &str) -> Value {
    let name = format!("f{}", r.below(6));
    match kind {
        "auth" => r
            .pick(&[
                json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
                    "name": "admin", "domain": {"id": "default"}, "password": "secret-pw-f"}}},
                    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}),
                json!({"auth": {"identity": {"methods": ["application_credential"],
                    "application_credential": {"name": "f1", "user": {"id": user}, "secret": "s"}}}}),
                json!({"auth": {"identity": {"methods": ["token"], "token": {"id": "0"}}}}),
            ])
            .clone(),
        "appcred" => json!({"application_credential": {"name": name, "secret": "s",
            "roles": [{"name": "reader"}], "expires_at": "2099-01-01T00:00:00", "unrestricted": true}}),
        "keypair" => json!({"keypair": {"name": name}}),
        "server" => json!({"server": {"name": name, "imageRef": "tiny", "flavorRef": "k1.probe",
            "networks": "none", "metadata": {"a": "b"}, "user_data": "aGVsbG8=",
            "config_drive": false, "key_name": "f1"}}),
        "action" => r
            .pick(&[
                json!({"os-start": null}),
                json!({"os-stop": null}),
                json!({"reboot": {"type": "HARD"}}),
                json!({"pause": null}),
                json!({"unpause": null}),
                json!({"os-getConsoleOutput": {"length": 5}}),
                json!({"createImage": {"name": "x"}}),
            ])
            .clone(),
        "image" => json!({"name": name, "disk_format": "raw", "container_format": "bare",
            "team": "blue", "hw_firmware_type": "bios"}),
        "patch" => json!([{"op": "add", "path": "/team", "value": "red"},
                          {"op": "replace", "path": "/name", "value": name}]),
        _ => Value::Null,
    }
}

/// An odd value of any type.
fn odd(r: &mut Rng) -> Value {
    match r.below(12) {
        0 => Value::Null,
        1 => json!(r.chance(50)),
        2 => json!(u64::MAX),
        3 => json!(-1),
        4 => json!(1e308),
        5 => json!("x".repeat(r.below(5000))),
        6 => json!("\u{0}ü/../%00\u{202e}"),
        7 => json!([]),
        8 => json!({}),
        9 => json!([odd(r), odd(r)]),
        10 => json!({"k": odd(r)}),
        _ => json!(""),
    }
}

/// `v` with a few members mutated.
fn mutate(v: &mut Value, r: &mut Rng, depth: u32) {
    if depth > 0 && r.chance(20) {
        *v = odd(r);
        return;
    }
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if r.chance(15) {
                    m.remove(&k);
                } else if let Some(x) = m.get_mut(&k) {
                    mutate(x, r, depth + 1);
                }
            }
            if r.chance(15) {
                m.insert(format!("extra{}", r.below(3)), odd(r));
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                mutate(x, r, depth + 1);
            }
            if r.chance(15) {
                a.push(odd(r));
            }
        }
        _ => {}
    }
}

#[test]
fn openstack_routes_never_answer_5xx() {
    let seed: u64 = std::env::var("KILN_OS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("KILN_OS_FUZZ_SEED={seed}");
    let mut r = Rng(seed);
    // In a namespace of its own: the network it makes has a bridge.
    let ns = NetNs::with_peer("osfuzz");
    let k = Kilnd::start_in(
        Some(ns.name()),
        &format!(
            "{}[openstack]\nadmin_password = \"secret-pw-f\"\n",
            small_host(4, 1.0, 4096, 20)
        ),
    );
    kernel_image(&k, "tiny");
    let sock = k.socket.clone();
    let net = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"lan","cidr":"10.63.0.0/24","mode":"isolated"}"#),
    );
    assert_eq!(net.status, 201, "{}", net.text());
    let token = |sock: &Path| {
        let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": "secret-pw-f"}}}}});
        // The token is in a header: a raw read.
        let mut s = UnixStream::connect(sock).unwrap();
        let b = body.to_string();
        write!(s, "POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: l\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()).unwrap();
        let mut t = String::new();
        s.read_to_string(&mut t).unwrap();
        t.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-subject-token: ")
                    .map(|v| v.trim().to_owned())
            })
            .unwrap()
    };
    let tok = token(&sock);
    let auth_doc: Value = {
        let (_, b) = send(
            &sock,
            "GET",
            "/identity/v3/auth/tokens",
            &[
                ("X-Auth-Token".into(), tok.clone()),
                ("X-Subject-Token".into(), tok.clone()),
            ],
            b"",
        );
        serde_json::from_slice(&b).unwrap()
    };
    let user = auth_doc["token"]["user"]["id"].as_str().unwrap().to_owned();
    let rp = {
        let (_, b) = send(
            &sock,
            "GET",
            "/placement/resource_providers",
            &[("X-Auth-Token".into(), tok.clone())],
            b"",
        );
        let v: Value = serde_json::from_slice(&b).unwrap();
        v["resource_providers"][0]["uuid"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut n, mut by_status) = (0u32, std::collections::BTreeMap::<u16, u32>::new());
    while Instant::now() < deadline {
        n += 1;
        // What exists now, for path parameters.
        let servers: Vec<String> = k.json("GET", "/v1/servers", None)["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        let images: Vec<String> = k.json("GET", "/v1/images", None)["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        let nets: Vec<String> = k.json("GET", "/v1/networks", None)["networks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        for _ in 0..10 {
            let &(method, tmpl, kind) = r.pick(ROUTES);
            let param = |r: &mut Rng, real: &[String]| -> String {
                let junk = [
                    "nope",
                    "%00",
                    "..%2F..",
                    "%E2%80%AE",
                    "a%20b",
                    &"z".repeat(300),
                    "f1",
                    "k1.probe",
                    "VCPU",
                ];
                if !real.is_empty() && r.chance(60) {
                    r.pick(real).clone()
                } else {
                    r.pick(&junk).to_string()
                }
            };
            let mut path = tmpl.to_owned();
            for (ph, real) in [
                ("{user}", vec![user.clone()]),
                ("{cred}", vec![]),
                (
                    "{flavor}",
                    vec!["k1.probe".to_owned(), "m1.tiny".to_owned()],
                ),
                ("{keypair}", vec!["f1".to_owned()]),
                ("{server}", servers.clone()),
                ("{image}", images.clone()),
                ("{network}", nets.clone()),
                ("{rp}", vec![rp.clone()]),
                ("{class}", vec!["VCPU".to_owned(), "DISK_GB".to_owned()]),
            ] {
                if path.contains(ph) {
                    path = path.replace(ph, &param(&mut r, &real));
                }
            }
            if r.chance(30) {
                let q = [
                    "name",
                    "status",
                    "project_id",
                    "resources",
                    "uuid",
                    "limit",
                    "marker",
                    "in_tree",
                    "member_of",
                    "required",
                    "user_id",
                    "visibility",
                    "id",
                ];
                let vals = [
                    "f1", "ACTIVE", "VCPU:1", "VCPU:x", "in:a,b", "%FF", "", "-1", "!T", &rp,
                ];
                path.push_str(&format!("?{}={}", r.pick(&q), r.pick(&vals)));
            }
            let method = if r.chance(8) {
                *r.pick(&["GET", "POST", "PUT", "PATCH", "DELETE"])
            } else {
                method
            };
            let mut headers: Vec<(String, String)> = vec![];
            if !r.chance(5) {
                let t = if r.chance(5) {
                    "0".repeat(64)
                } else {
                    tok.clone()
                };
                headers.push(("X-Auth-Token".into(), t));
            }
            if r.chance(40) {
                let v = [
                    "compute 2.1",
                    "compute 2.100",
                    "compute 2.101",
                    "compute latest",
                    "compute 3.0",
                    "compute x",
                    "placement 1.39",
                    "placement 1.40",
                    "placement 1.0",
                    "placement latest",
                    "placement 1.-1",
                    "",
                ];
                headers.push(("OpenStack-API-Version".into(), r.pick(&v).to_string()));
            }
            if r.chance(10) {
                headers.push((
                    "X-OpenStack-Nova-API-Version".into(),
                    r.pick(&["2.60", "latest", "junk"]).to_string(),
                ));
            }
            if method == "DELETE" && tmpl.ends_with("auth/tokens")
                || method == "GET" && tmpl.ends_with("auth/tokens") && r.chance(50)
            {
                headers.push((
                    "X-Subject-Token".into(),
                    r.pick(&["junk", &"1".repeat(64)]).to_string(),
                ));
            }
            let ct = if kind == "patch" && r.chance(80) {
                "application/openstack-images-v2.1-json-patch"
            } else if kind == "bytes" {
                "application/octet-stream"
            } else {
                *r.pick(&[
                    "application/json",
                    "application/json",
                    "text/plain",
                    "application/openstack-images-v2.1-json-patch",
                ])
            };
            headers.push(("Content-Type".into(), ct.into()));
            let body: Vec<u8> = match kind {
                "" => {
                    if r.chance(10) {
                        odd(&mut r).to_string().into_bytes()
                    } else {
                        vec![]
                    }
                }
                "bytes" => (0..r.below(70_000)).map(|_| r.next() as u8).collect(),
                _ if r.chance(10) => {
                    let mut b = template(kind, &mut r, &user).to_string().into_bytes();
                    b.truncate(r.below(b.len().max(1)));
                    b
                }
                _ => {
                    let mut v = template(kind, &mut r, &user);
                    if r.chance(75) {
                        mutate(&mut v, &mut r, 0);
                    }
                    v.to_string().into_bytes()
                }
            };
            let (status, resp) = send(&sock, method, &path, &headers, &body);
            *by_status.entry(status).or_default() += 1;
            assert!(
                status < 500,
                "{method} {path} answered {status} (seed {seed}):\nheaders {headers:?}\nbody {}\nanswer {}",
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&resp)
            );
            if status >= 400 && method != "HEAD" {
                assert!(
                    serde_json::from_slice::<Value>(&resp).is_ok(),
                    "{method} {path} answered {status} without JSON: {}",
                    String::from_utf8_lossy(&resp)
                );
            }
        }
    }
    eprintln!("{} requests: {by_status:?}", n * 10);
    assert!(n * 10 >= 300, "too few requests in the time: {}", n * 10);
    assert!(
        by_status.keys().any(|s| (200..300).contains(s)),
        "{by_status:?}"
    );
    assert!(
        by_status.keys().filter(|s| (400..500).contains(*s)).count() >= 4,
        "{by_status:?}"
    );
    assert_eq!(k.req("GET", "/v1/servers", None).status, 200);
    assert!(!k.log().contains("panicked"), "{}", k.log());
}
