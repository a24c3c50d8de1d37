//! A real kilnd for the benchmarks that drive it (kilnd_bench,
//! openstack_bench): a temporary state directory and socket, requests on
//! the unix socket, and everything it started killed on drop; plus the
//! figures they share (percentiles, fan-out over client threads).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_api::client::{self, Response};
use kiln_api::compute::{Server, ServerCreate, ServerList};

/// Longest one request may take.
pub const REQ_TIMEOUT: Duration = Duration::from_secs(60);

/// A running kilnd on a temporary directory; dropping it kills every VMM
/// it started, then kilnd, and removes the directory.
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    pub fn start(kilnd: &Path, tag: &str, config: &str) -> Result<Daemon, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("kilnd-bench-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut d = Daemon {
            socket: dir.join("kiln.sock"),
            state: dir.join("state"),
            dir,
            child: None,
        };
        let cfg = d.dir.join("kilnd.toml");
        // kilnd registers kernels only from the directories it allows:
        // this daemon's own, where the bench puts the kernels it registers.
        // No `default` network: the bench runs on the host itself.
        let config = format!(
            "{config}[images]\nimport_dirs = [{:?}]\n[networks]\ndefault = false\n",
            d.dir.display().to_string()
        );
        std::fs::write(&cfg, config).map_err(|e| format!("write {}: {e}", cfg.display()))?;
        let log = std::fs::File::create(d.log_path()).map_err(|e| format!("kilnd log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("kilnd log: {e}"))?;
        let mut cmd = Command::new(kilnd);
        // kilnd dies with this benchmark.
        kiln_tests::die_with_parent(&mut cmd);
        let child = cmd
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&d.state)
            .arg("--socket")
            .arg(&d.socket)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("start {}: {e}", kilnd.display()))?;
        d.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.req("GET", "/v1/host", None).is_err() {
            if let Some(Ok(Some(st))) = d.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("kilnd exited with {st}:\n{}", d.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!("kilnd did not come up in 20 s:\n{}", d.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("kilnd.log")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn req(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, String> {
        client::request(&self.socket, method, path, body, REQ_TIMEOUT)
            .map_err(|e| format!("{method} {path}: {e}"))
    }

    /// A request that must answer `want`.
    pub fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        want: u16,
    ) -> Result<Response, String> {
        let r = self.req(method, path, body)?;
        if r.status != want {
            return Err(format!(
                "{method} {path}: HTTP {} (expected {want}): {}",
                r.status,
                r.text()
            ));
        }
        Ok(r)
    }

    pub fn register_kernel(&self, name: &str, kernel: &Path, cmdline: &str) -> Result<(), String> {
        let body = serde_json::json!({
            "type": "kernel", "name": name, "kernel": kernel, "cmdline": cmdline,
        });
        self.expect("POST", "/v1/images", Some(body.to_string().as_bytes()), 201)
            .map(drop)
    }

    pub fn create(&self, name: &str, image: &str) -> Result<Server, String> {
        let body = ServerCreate {
            name: name.to_string(),
            flavor: "k1.probe".to_string(),
            image: image.to_string(),
            disk_image: None,
            cmdline: None,
            user_data: None,
            metadata: Default::default(),
            ready: None,
            ttl_s: None,
            networks: vec![],
            firmware: None,
            virtio_model: None,
            key_name: None,
            admin_pass: None,
            ..Default::default()
        };
        let body = serde_json::to_vec(&body).map_err(|e| format!("encode create: {e}"))?;
        self.expect("POST", "/v1/servers", Some(&body), 202)?
            .json()
            .map_err(|e| format!("create {name}: {e}"))
    }

    pub fn server(&self, id: &str) -> Result<Server, String> {
        self.expect("GET", &format!("/v1/servers/{id}"), None, 200)?
            .json()
            .map_err(|e| format!("server {id}: {e}"))
    }

    /// Polls the server's serial log until it contains `text`.
    pub fn wait_console(&self, id: &str, text: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v: serde_json::Value = self
                .expect("GET", &format!("/v1/servers/{id}/console"), None, 200)?
                .json()
                .map_err(|e| format!("console of {id}: {e}"))?;
            if v["output"].as_str().is_some_and(|o| o.contains(text)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("server {id}: no {text:?} on its console: {v}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn list(&self) -> Result<Vec<Server>, String> {
        let l: ServerList = self
            .expect("GET", "/v1/servers", None, 200)?
            .json()
            .map_err(|e| format!("list: {e}"))?;
        Ok(l.servers)
    }

    pub fn vmm_processes(&self) -> Vec<(u32, String)> {
        kiln_manager::supervisor::sys::processes_with_config_under(&self.state.join("servers"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // VMMs run in sessions of their own and would outlive kilnd.
        for (pid, _) in self.vmm_processes() {
            // SAFETY: kill(2) of a VMM process this benchmark's kilnd started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The nearest-rank percentile of a sorted slice.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "NOT MET"
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Runs `work(i)` for i in 0..n on `clients` threads (thread t takes
/// t, t+clients, ...); the results in order of i.
pub fn fan_out<T: Send + 'static>(
    n: usize,
    clients: usize,
    work: impl Fn(usize) -> Result<T, String> + Send + Sync + 'static,
) -> Result<Vec<T>, String> {
    let work = Arc::new(work);
    let threads: Vec<_> = (0..clients.min(n))
        .map(|t| {
            let work = work.clone();
            std::thread::spawn(move || {
                (t..n)
                    .step_by(clients)
                    .map(|i| work(i).map(|r| (i, r)))
                    .collect::<Result<Vec<_>, String>>()
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    let mut first_err = None;
    for t in threads {
        match t.join() {
            Ok(Ok(v)) => all.extend(v),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert("a client thread panicked".to_string());
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, r)| r).collect())
}
