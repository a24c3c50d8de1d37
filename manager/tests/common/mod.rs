//! Test harness: a real `kilnd` process on a temporary state dir and socket.

#![allow(dead_code)]

pub mod api;
pub mod firmware;
pub mod guest_net;
pub mod openstack;
pub mod osc;
pub mod screen;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_api::client::{self, Response};
use kiln_api::compute::{Image, ImageKind, ImageStatus, Server, ServerStatus};

pub struct Kilnd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    /// The network namespace kilnd runs in (`ip netns exec`), if any.
    pub netns: Option<String>,
    child: Option<Child>,
}

/// The kilnd binary cargo built for these tests.
pub fn kilnd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kilnd"))
}

/// kiln-vmm as kilnd finds it by default: next to the kilnd binary. The
/// first call builds it (`cargo build -p kiln-vmm` into the same target
/// directory; a no-op when it is up to date).
pub fn vmm_bin() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let bin = kilnd_bin().with_file_name("kiln-vmm");
    BUILD.call_once(|| {
        let profile_dir = kilnd_bin().parent().unwrap().to_owned();
        let target_dir = profile_dir.parent().unwrap().to_owned();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "kiln-vmm"])
            .env("CARGO_TARGET_DIR", &target_dir);
        if profile_dir.file_name().unwrap() == "release" {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo to build kiln-vmm");
        assert!(st.success(), "cargo build -p kiln-vmm failed");
    });
    assert!(
        bin.exists(),
        "{} missing after building kiln-vmm",
        bin.display()
    );
    bin
}

/// `extra` with `images.import_dirs` set to `dirs` (the test's own
/// directory and the guest material cache, where tests keep the files they
/// import by path), unless `extra` sets it itself.
pub fn with_import_dirs(extra: &str, dirs: &[&Path]) -> String {
    if extra.contains("import_dirs") {
        return extra.to_owned();
    }
    let list: Vec<String> = dirs
        .iter()
        .map(|d| format!("{:?}", d.display().to_string()))
        .collect();
    let line = format!("import_dirs = [{}]\n", list.join(", "));
    match extra.find("[images]\n") {
        Some(at) => {
            let at = at + "[images]\n".len();
            format!("{}{line}{}", &extra[..at], &extra[at..])
        }
        None => format!("{extra}\n[images]\n{line}"),
    }
}

/// A guest probe built by scripts/build-probes.sh (built if missing).
pub use kiln_tests::probe;

impl Kilnd {
    /// Starts kilnd with `extra` TOML appended to a config that sets the
    /// state dir and socket.
    pub fn start(extra: &str) -> Kilnd {
        Kilnd::start_in(None, extra)
    }

    /// Like [`Kilnd::start`], with kilnd (and so its VMMs and taps) inside
    /// network namespace `netns` when given.
    pub fn start_in(netns: Option<&str>, extra: &str) -> Kilnd {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let socket = dir.path().join("kiln.sock");
        let config = dir.path().join("kilnd.toml");
        // No `default` network (bridge kilnbr0, an nft table) unless the
        // test asks for one: many kilnds run on the host itself.
        let extra = if extra.contains("[networks]") {
            extra.to_owned()
        } else {
            format!("{extra}\n[networks]\ndefault = false\n")
        };
        std::fs::write(
            &config,
            with_import_dirs(&extra, &[dir.path(), &kiln_tests::cache_dir()]),
        )
        .unwrap();
        let mut k = Kilnd {
            dir,
            socket,
            state,
            config,
            netns: netns.map(str::to_owned),
            child: None,
        };
        k.spawn();
        k
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kilnd.log"))
            .unwrap();
        let mut cmd = match &self.netns {
            None => Command::new(kilnd_bin()),
            Some(ns) => {
                // `ip netns exec` execs kilnd in place: same pid.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(kilnd_bin());
                c
            }
        };
        // If the test (thread) that started kilnd dies, kilnd dies too.
        kiln_tests::die_with_parent(&mut cmd);
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--socket")
            .arg(&self.socket)
            .env("KILN_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.try_req("GET", "/v1/host", None).is_err() {
            assert!(
                Instant::now() < deadline,
                "kilnd did not come up:\n{}",
                self.log()
            );
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kilnd exited with {s}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// kill -9 kilnd.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kilnd.log")).unwrap_or_default()
    }

    pub fn try_req(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, client::ClientError> {
        client::request(
            &self.socket,
            method,
            path,
            body.map(str::as_bytes),
            Duration::from_secs(60),
        )
    }

    pub fn req(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        self.try_req(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        let r = self.req(method, path, body);
        assert!(
            (200..300).contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.text()
        );
        serde_json::from_slice(&r.body).unwrap()
    }

    pub fn server(&self, id: &str) -> Server {
        self.req("GET", &format!("/v1/servers/{id}"), None)
            .json()
            .unwrap()
    }

    /// Polls until the server has `status` (panics with its state after `t`).
    pub fn wait_status(&self, id: &str, status: ServerStatus, t: Duration) -> Server {
        let deadline = Instant::now() + t;
        loop {
            let s = self.server(id);
            if s.status == status && s.task_state.is_none() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "server {id} not {status:?} after {t:?}: {s:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Imports a disk image (202, `importing`) and waits until it is active.
    pub fn import_disk(&self, name: &str, path: &Path, format: &str) -> Image {
        self.import_disk_with(name, path, format, "")
    }

    /// [`Kilnd::import_disk`] with `extra` JSON members in the request
    /// (`,"firmware":"bios"`).
    pub fn import_disk_with(&self, name: &str, path: &Path, format: &str, extra: &str) -> Image {
        let body = format!(
            r#"{{"type":"disk","name":"{name}","path":"{}","format":"{format}"{extra}}}"#,
            path.display()
        );
        let r = self.req("POST", "/v1/images", Some(&body));
        assert_eq!(r.status, 202, "{}", r.text());
        let img: Image = r.json().unwrap();
        assert_eq!(img.status, ImageStatus::Importing);
        let total = std::fs::metadata(path).unwrap().len();
        assert_eq!(img.progress.unwrap().bytes_total, total);
        // A minute, and a second more per 10 MiB (a busy disk copies and
        // hashes slowly).
        let deadline = Instant::now() + Duration::from_secs(60 + (total >> 20) / 10);
        loop {
            let img = self.image(&img.id);
            match img.status {
                ImageStatus::Active => return img,
                ImageStatus::Error | ImageStatus::Queued => panic!("import failed: {img:?}"),
                ImageStatus::Importing => {
                    let p = img.progress.unwrap();
                    assert!(p.bytes_done <= p.bytes_total);
                }
            }
            assert!(Instant::now() < deadline, "import of {name} not done");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn image(&self, id: &str) -> Image {
        self.req("GET", &format!("/v1/images/{id}"), None)
            .json()
            .unwrap()
    }

    /// `POST /v1/servers` with `body`, which must be accepted (202).
    pub fn create_server(&self, body: &str) -> Server {
        let r = self.req("POST", "/v1/servers", Some(body));
        assert_eq!(r.status, 202, "{body}: {}", r.text());
        r.json().unwrap()
    }

    /// `DELETE /v1/servers/{id}`, which must succeed (204).
    pub fn delete_server(&self, id: &str) {
        let r = self.req("DELETE", &format!("/v1/servers/{id}"), None);
        assert_eq!(r.status, 204, "delete {id}: {}", r.text());
    }

    /// Runs the `kiln` CLI on this kilnd's socket: (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn state_path(&self, rel: &str) -> PathBuf {
        self.state.join(rel)
    }
}

impl Drop for Kilnd {
    fn drop(&mut self) {
        // Kill every VMM this kilnd started (they are in sessions of their
        // own and would outlive it).
        let servers = self.state.join("servers");
        for (pid, _) in procs_under(&servers) {
            // SAFETY: plain kill(2) of a process the test's kilnd started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        // And their swtpms (daemons of their own).
        for (pid, _) in kiln_manager::supervisor::tpm::processes_under(&servers) {
            // SAFETY: plain kill(2) of a swtpm the test's kilnd started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        self.kill9();
    }
}

/// Processes with `--config` under `dir`.
pub fn procs_under(dir: &Path) -> Vec<(u32, String)> {
    kiln_manager::supervisor::sys::processes_with_config_under(dir)
}

pub fn alive(pid: u32) -> bool {
    // A zombie counts as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Runs a command, which must succeed; answers its stdout.
pub use kiln_tests::run;

/// The `p` quantile (0 to 1) of `sorted`, the nearest-rank way.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `qemu-img create -f qcow2 PATH SIZE`.
pub fn qemu_img_create(path: &Path, size: &str) {
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size));
}

/// `qemu-img info` of an image (also one a running VMM holds open).
pub fn qemu_img_info(path: &Path) -> serde_json::Value {
    let out = run(Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(path));
    serde_json::from_str(&out).unwrap()
}

/// The host's `sha256sum` of a file.
pub fn sha256sum(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A disk image's (path, size_bytes, sha256).
pub fn disk_of(img: &Image) -> (&str, u64, &str) {
    match &img.kind {
        ImageKind::Disk {
            path,
            size_bytes,
            sha256,
            ..
        } => (path, *size_bytes, sha256),
        ImageKind::Kernel { .. } => panic!("not a disk image: {img:?}"),
    }
}

/// The `name`s of the objects in a list reply's array `key`.
pub fn names(list: &serde_json::Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect()
}
