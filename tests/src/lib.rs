//! The end-to-end test harness: builds and finds the real `kiln-vmm` binary
//! and the probe guests, runs a VM in its own scratch directory (serial log,
//! control socket, stderr log), waits for serial output or the exit with a
//! timeout, and talks to the VMM's control API over its unix socket.
//!
//! Nothing here is mocked: a [`Vm`] is a `kiln-vmm` process on `/dev/kvm`.
//! Environment: `KILN_VMM` (a kiln-vmm binary to test instead of building
//! one), `KILN_CACHE` (the guest material cache, default `<repo>/cache`).
//! Tests that need KVM call [`kvm_available`] first; it says why they skip
//! where `/dev/kvm` is absent (never on the development machines, which all
//! have it).

pub mod api;
pub mod asm;
pub mod disk;
pub mod netns;
pub mod qemu_vga;
pub mod rfb;
pub mod rtc;
pub mod screen;
pub mod tpm;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

pub use api::ApiError;

/// The smallest kernel kilnd accepts: an x86-64 ELF file with one loadable
/// segment of 16 bytes at 1 MiB (it boots nowhere; for kilnds whose
/// servers never run, in tests and benchmarks).
pub fn tiny_elf() -> Vec<u8> {
    let mut elf = vec![0u8; 64 + 56 + 16];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[18] = 62; // x86-64
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = &mut elf[64..120];
    ph[..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
    ph[24..32].copy_from_slice(&(1u64 << 20).to_le_bytes()); // p_paddr
    ph[32..40].copy_from_slice(&16u64.to_le_bytes()); // p_filesz
    ph[40..48].copy_from_slice(&16u64.to_le_bytes()); // p_memsz
    elf
}

/// The workspace root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// True if `/dev/kvm` exists. Otherwise prints why the calling test skips.
pub fn kvm_available(test: &str) -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    eprintln!("SKIP {test}: /dev/kvm is absent on this machine (this test runs a real KVM guest)");
    false
}

/// The cargo target directory and profile directory this test binary was
/// built in: `<target>/<profile>/deps/<test exe>`, or for a benchmark
/// (a `[[bin]]`) `<target>/<profile>/<exe>`.
fn target_dirs() -> (PathBuf, String) {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("the binary's folder");
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .expect("test binary lives in <target>/<profile>/deps")
    } else {
        dir
    };
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let target = profile_dir
        .parent()
        .expect("<target>/<profile> has a parent")
        .to_path_buf();
    (target, profile)
}

/// The `kiln-vmm` binary to test: `$KILN_VMM` if set, else built (once per
/// test process, incrementally) with `cargo build -p kiln-vmm` into the same
/// target directory and profile as this test binary. Cargo releases its
/// build lock before it runs tests, so this nested build does not wait.
pub fn kiln_vmm() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("KILN_VMM") {
            return PathBuf::from(p);
        }
        let (target, profile) = target_dirs();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root())
            .args(["build", "--quiet", "-p", "kiln-vmm", "--bin", "kiln-vmm"])
            .arg("--target-dir")
            .arg(&target);
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p kiln-vmm");
        assert!(status.success(), "cargo build -p kiln-vmm failed: {status}");
        let bin = target.join(&profile).join("kiln-vmm");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// The probe guest `name` (images/probes/NAME.s), built by
/// scripts/build-probes.sh (once per test process; it only rebuilds what
/// changed) into cache/probes/NAME.elf.
pub fn probe(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/build-probes.sh"))
            .output()
            .expect("run scripts/build-probes.sh");
        assert!(
            out.status.success(),
            "scripts/build-probes.sh failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let path = cache_dir().join("probes").join(format!("{name}.elf"));
    assert!(path.exists(), "no probe {}", path.display());
    path
}

/// The guest material cache (`$KILN_CACHE` or `<repo>/cache`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("cache"))
}

/// `NAME` in the guest material cache's `guest/` (firmware, kernels),
/// which must be there.
pub fn guest_file(name: &str) -> PathBuf {
    let p = cache_dir().join("guest").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-guest.sh",
        p.display()
    );
    p
}

/// Makes the process `cmd` spawns die (SIGKILL) when the thread that
/// spawned it does: a kilnd started by a test or a benchmark never
/// outlives it.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl between fork and exec is async-signal-safe; it takes
    // no pointers.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Runs `cmd`, which must succeed; answers its stdout.
pub fn run(cmd: &mut Command) -> String {
    try_run(cmd).unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs `cmd`: its stdout if it succeeds, else its stderr.
pub fn try_run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// A scratch directory, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> io::Result<ScratchDir> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        // Unix socket paths are limited to 108 bytes: keep this short.
        let dir = std::env::temp_dir().join(format!("kiln-e2e-{}-{n}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        Ok(ScratchDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What a VM boots.
#[derive(Clone, Debug)]
pub enum Boot {
    /// A kernel or probe ELF, directly (`--kernel`).
    Kernel(PathBuf),
    /// Firmware (`--firmware`), which boots from the VM's disks.
    Firmware(PathBuf),
}

/// How to start a VM.
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub boot: Boot,
    pub cmdline: Option<String>,
    pub cpus: u8,
    pub memory_mib: u64,
    pub cpu_template: Option<String>,
    /// Start with `--api-socket`.
    pub api: bool,
    pub extra_args: Vec<String>,
}

impl VmSpec {
    /// One vCPU, 64 MiB, control socket on.
    pub fn new(kernel: impl Into<PathBuf>) -> VmSpec {
        VmSpec::booting(Boot::Kernel(kernel.into()))
    }

    /// Debian's SeaBIOS (from the guest material cache), booting from the
    /// disks given with [`VmSpec::args`]; 128 MiB.
    pub fn seabios() -> VmSpec {
        VmSpec::booting(Boot::Firmware(guest_file("bios.bin"))).memory_mib(128)
    }

    fn booting(boot: Boot) -> VmSpec {
        VmSpec {
            boot,
            cmdline: None,
            cpus: 1,
            memory_mib: 64,
            cpu_template: None,
            api: true,
            extra_args: Vec::new(),
        }
    }

    pub fn cpus(mut self, n: u8) -> Self {
        self.cpus = n;
        self
    }

    pub fn memory_mib(mut self, m: u64) -> Self {
        self.memory_mib = m;
        self
    }

    pub fn cmdline(mut self, c: &str) -> Self {
        self.cmdline = Some(c.to_string());
        self
    }

    pub fn cpu_template(mut self, t: &str) -> Self {
        self.cpu_template = Some(t.to_string());
        self
    }

    /// Appends `args` to the `kiln-vmm` command line.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running (or ended) `kiln-vmm` process. Dropping it kills the process.
pub struct Vm {
    child: Child,
    status: Option<ExitStatus>,
    dir: ScratchDir,
    pub serial_log: PathBuf,
    pub api_socket: Option<PathBuf>,
    pub stderr_log: PathBuf,
    pub started: Instant,
}

impl Vm {
    /// Start `kiln-vmm` for `spec`; its serial output goes to a log file,
    /// its own log (stderr) to another.
    pub fn start(spec: &VmSpec) -> Vm {
        let dir = ScratchDir::new("vm").expect("scratch dir");
        let serial_log = dir.path().join("serial.log");
        let stderr_log = dir.path().join("vmm.log");
        let api_socket = spec.api.then(|| dir.path().join("api.sock"));
        let mut cmd = Command::new(kiln_vmm());
        match &spec.boot {
            Boot::Kernel(k) => cmd.arg("--kernel").arg(k),
            Boot::Firmware(f) => cmd.arg("--firmware").arg(f),
        };
        cmd.arg("--cpus")
            .arg(spec.cpus.to_string())
            .arg("--memory")
            .arg(format!("{}M", spec.memory_mib))
            .arg("--serial-log")
            .arg(&serial_log)
            .arg("--log-level")
            .arg("debug");
        if let Some(c) = &spec.cmdline {
            cmd.arg("--cmdline").arg(c);
        }
        if let Some(t) = &spec.cpu_template {
            cmd.arg("--cpu-template").arg(t);
        }
        if let Some(s) = &api_socket {
            cmd.arg("--api-socket").arg(s);
        }
        cmd.args(&spec.extra_args);
        let stderr = fs::File::create(&stderr_log).expect("create vmm.log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn kiln-vmm");
        Vm {
            child,
            status: None,
            dir,
            serial_log,
            api_socket,
            stderr_log,
            started,
        }
    }

    /// Start `spec` and wait (at most `timeout`) for the guest to power
    /// off: exit code 0, or a panic with the logs.
    pub fn run_to_poweroff(spec: &VmSpec, timeout: Duration) -> Vm {
        let mut vm = Vm::start(spec);
        let code = vm.wait_exit_code(timeout);
        assert_eq!(code, 0, "exit code\n{}", vm.describe());
        vm
    }

    /// The serial output has every one of `lines` and no `FAIL`.
    pub fn assert_serial_lines(&self, lines: &[&str]) {
        assert_lines(&self.serial(), lines, &self.describe());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the guest wrote to its serial port so far.
    pub fn serial(&self) -> String {
        fs::read(&self.serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The VMM's own log so far.
    pub fn vmm_log(&self) -> String {
        fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The exit status, if the process has ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Wait for the process to end, at most `timeout`; on timeout, kill it
    /// and panic with the serial output and the VMM log.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "kiln-vmm did not exit within {timeout:?}\n{}",
                    self.describe()
                );
            }
            sleep(Duration::from_millis(5));
        }
    }

    /// Wait for the exit and return its code (panics on death by signal).
    pub fn wait_exit_code(&mut self, timeout: Duration) -> i32 {
        let s = self.wait_exit(timeout);
        s.code()
            .unwrap_or_else(|| panic!("kiln-vmm died by a signal: {s}\n{}", self.describe()))
    }

    /// Wait until the serial output contains `needle`; returns the whole
    /// output. Panics (with the logs) on timeout or if the VMM exits first.
    pub fn wait_serial(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.serial();
            if out.contains(needle) {
                return out;
            }
            if let Some(s) = self.try_status() {
                // One last look: the output may have landed just before.
                let out = self.serial();
                if out.contains(needle) {
                    return out;
                }
                panic!(
                    "kiln-vmm exited ({s}) before the guest printed {needle:?}\n{}",
                    self.describe()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {needle:?} on the serial console within {timeout:?}\n{}",
                    self.describe()
                );
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// Wait until a whole line (newline included) containing `needle` is on
    /// the serial console; returns the whole output. The guest writes one
    /// byte at a time, so a bare [`Vm::wait_serial`] may see half a line.
    pub fn wait_serial_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let out = self.wait_serial(needle, timeout);
        let at = out.find(needle).expect("wait_serial found it");
        let mut out = out;
        while !out[at..].contains('\n') {
            if Instant::now() >= deadline || self.try_status().is_some() {
                panic!("the line with {needle:?} never ended\n{}", self.describe());
            }
            sleep(Duration::from_millis(10));
            out = self.serial();
        }
        out
    }

    /// Wait until the control socket accepts connections.
    pub fn wait_api(&mut self, timeout: Duration) {
        let sock = self
            .api_socket
            .clone()
            .expect("VM started without an api socket");
        let deadline = Instant::now() + timeout;
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Some(s) = self.try_status() {
                panic!(
                    "kiln-vmm exited ({s}) before its api socket came up\n{}",
                    self.describe()
                );
            }
            assert!(
                Instant::now() < deadline,
                "api socket {} not up within {timeout:?}\n{}",
                sock.display(),
                self.describe()
            );
            sleep(Duration::from_millis(5));
        }
    }

    /// `GET /v1/vm`.
    pub fn info(&self) -> Result<kiln_api::control::VmInfo, ApiError> {
        let sock = self.api_socket.as_ref().ok_or(ApiError::NoSocket)?;
        let r = kiln_api::client::control(sock, &kiln_api::control::Request::Info, api::TIMEOUT)?;
        if r.status != 200 {
            return Err(ApiError::Status(r.status, r.text()));
        }
        serde_json::from_slice(&r.body).map_err(|e| ApiError::Json(e.to_string(), r.text()))
    }

    /// `PUT /v1/vm/<action>`; returns the status code.
    pub fn put(&self, action: &str) -> Result<u16, ApiError> {
        let sock = self.api_socket.as_ref().ok_or(ApiError::NoSocket)?;
        let (status, _) = api::request(sock, "PUT", &format!("/v1/vm/{action}"))?;
        Ok(status)
    }

    /// The end of the serial output and of the VMM log, for failure
    /// messages.
    pub fn describe(&self) -> String {
        format!(
            "--- serial (end) ---\n{}\n--- kiln-vmm log (end) ---\n{}",
            tail_lines(&self.serial(), 60),
            tail_lines(&self.vmm_log(), 40)
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A probe's output `out` has every one of `lines` and no `FAIL`;
/// `context` (logs) goes into the panic message.
pub fn assert_lines(out: &str, lines: &[&str], context: &str) {
    assert!(!out.contains("FAIL"), "{context}");
    for line in lines {
        assert!(out.contains(line), "missing {line:?}\n{context}");
    }
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("[{skip} lines before]\n"));
    }
    out.push_str(&lines[skip..].join("\n"));
    out
}
