//! Helpers of the tests that run real kiln-vmm processes: a kilnd that
//! uses the kiln-vmm built next to it, probe images, waiting.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use kiln_api::client;
use kiln_api::compute::{HostInfo, Server};
use kiln_api::control::{Request, VmInfo};

use super::Kilnd;

pub const T: Duration = Duration::from_secs(30);

pub fn start_kilnd(extra: &str) -> Kilnd {
    start_kilnd_in(None, extra)
}

/// [`start_kilnd`] inside network namespace `netns`.
pub fn start_kilnd_in(netns: Option<&str>, extra: &str) -> Kilnd {
    let vmm = super::vmm_bin();
    Kilnd::start_in(
        netns,
        &format!(
            "[vmm]\nbinary = \"{}\"\nstop_timeout_s = 2\nboot_timeout_s = 20\n{extra}",
            vmm.display()
        ),
    )
}

pub fn register(k: &Kilnd, name: &str, probe: &str, cmdline: &str) {
    let body = format!(
        r#"{{"type":"kernel","name":"{name}","kernel":"{}","cmdline":"{cmdline}"}}"#,
        super::probe(probe).display()
    );
    let r = k.req("POST", "/v1/images", Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
}

pub fn create(k: &Kilnd, name: &str, image: &str) -> Server {
    k.create_server(&format!(
        r#"{{"name":"{name}","flavor":"k1.probe","image":"{image}"}}"#
    ))
}

pub fn action(k: &Kilnd, id: &str, body: &str) {
    let r = k.req("POST", &format!("/v1/servers/{id}/action"), Some(body));
    assert_eq!(r.status, 202, "{body}: {}", r.text());
}

pub fn console(k: &Kilnd, id: &str) -> String {
    k.json("GET", &format!("/v1/servers/{id}/console"), None)["output"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `GET /v1/vm` straight on the VMM's control socket.
pub fn vm_info(k: &Kilnd, id: &str) -> VmInfo {
    let sock = k.state_path(&format!("servers/{id}/api.sock"));
    client::control(&sock, &Request::Info, Duration::from_secs(5))
        .unwrap()
        .json()
        .unwrap()
}

pub fn wait_until(what: &str, t: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + t;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn assert_nothing_left(k: &Kilnd) {
    assert!(
        super::procs_under(&k.state_path("servers")).is_empty(),
        "VMM processes left"
    );
    let dirs: Vec<_> = std::fs::read_dir(k.state_path("servers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(dirs.is_empty(), "server directories left: {dirs:?}");
    let h: HostInfo = k.req("GET", "/v1/host", None).json().unwrap();
    assert_eq!(
        (h.vcpus.used, h.ram_mb.used, h.disk_gb.used, h.servers),
        (0, 0, 0, 0)
    );
}
