//! TPM test helpers shared by kiln-vmm's and kilnd's TPM tests: tpm2-tools
//! run against a swtpm on a stopped VM's state, and the answers the TPM
//! probe (`images/probes/tpm.s`) prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How a tools session starts the TPM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    /// `tpm2_startup -c`, as firmware does at boot: a TPM Reset, or a TPM
    /// Restart after a `TPM2_Shutdown(STATE)`; every PCR starts fresh.
    Clear,
    /// `tpm2_startup`, a resume: only after a `TPM2_Shutdown(STATE)`,
    /// whose saved PCRs (0-15) come back.
    State,
}

/// Runs each of `cmds` (tpm2-tools) against a new swtpm on TPM state
/// `state`, whose sockets go in `sock_dir`: a data socket for the tools'
/// swtpm TCTI, `not-need-init` (swtpm initialises the TPM itself, as a
/// power-on would), then `tpm2_startup` as `startup` says; after the
/// commands `tpm2_shutdown` (STATE, as kiln-vmm ends a VM's TPM, so the
/// next start sees what this one did) and SIGTERM. Returns each command's
/// stdout; a failing command fails the test.
pub fn tpm_tools(state: &Path, sock_dir: &Path, startup: Startup, cmds: &[&[&str]]) -> Vec<String> {
    session(state, sock_dir, |run| {
        let check = |c: &[&str]| {
            let out = run(c);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{c:?}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            text
        };
        match startup {
            Startup::Clear => check(&["tpm2_startup", "-c"]),
            Startup::State => check(&["tpm2_startup"]),
        };
        let outs = cmds.iter().map(|c| check(c)).collect();
        check(&["tpm2_shutdown"]);
        outs
    })
}

/// `tpm2_startup` (STATE) against a new swtpm on `state`, which must
/// fail (the TPM's last shutdown was not a `TPM2_Shutdown(STATE)`):
/// its stderr.
pub fn tpm_resume_refused(state: &Path, sock_dir: &Path) -> String {
    session(state, sock_dir, |run| {
        let out = run(&["tpm2_startup"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "tpm2_startup (STATE) succeeded: {err}"
        );
        err
    })
}

/// A swtpm on `state` for the tools for as long as `f` runs; `f` gets a
/// function that runs one tools command against it.
fn session<R>(state: &Path, sock_dir: &Path, f: impl FnOnce(&dyn Fn(&[&str]) -> Output) -> R) -> R {
    let data = sock_dir.join("tools.sock");
    let ctrl = PathBuf::from(format!("{}.ctrl", data.display()));
    let _ = std::fs::remove_file(&data);
    let _ = std::fs::remove_file(&ctrl);
    let swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--flags", "not-need-init", "--server"])
        .arg(format!("type=unixio,path={}", data.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", ctrl.display()))
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("swtpm (scripts/setup.sh installs it)");
    let t0 = Instant::now();
    while !data.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{data:?} never came"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Ends swtpm however `f` ends (a failed assertion included).
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) of the swtpm this function started.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    let _swtpm = Kill(swtpm);
    let tcti = format!("swtpm:path={}", data.display());
    let run = |c: &[&str]| {
        Command::new(c[0])
            .args(&c[1..])
            .env("TPM2TOOLS_TCTI", &tcti)
            .output()
            .expect("tpm2-tools (scripts/setup.sh installs it)")
    };
    f(&run)
}

/// Whether the TPM's current start followed an orderly `TPM2_Shutdown`
/// (the `orderly` bit of `TPM2_PT_STARTUP_CLEAR` in `tpm2_getcap
/// properties-variable` output, read right after a `tpm2_startup`).
pub fn orderly(getcap: &str) -> bool {
    let after = getcap
        .split("TPM2_PT_STARTUP_CLEAR:")
        .nth(1)
        .unwrap_or_else(|| panic!("no TPM2_PT_STARTUP_CLEAR in:\n{getcap}"));
    let line = after
        .lines()
        .find(|l| l.trim_start().starts_with("orderly:"))
        .unwrap_or_else(|| panic!("no orderly bit in:\n{getcap}"));
    line.split(':').nth(1).map(str::trim) == Some("1")
}

/// The TPM commands in a swtpm log written at `level=20` (each command
/// and response as ` SWTPM_IO_Read: length N` / ` SWTPM_IO_Write: length
/// N` and hex lines): (command bytes, response bytes) in order.
pub fn logged_commands(log: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cur: Option<(bool, Vec<u8>)> = None;
    let mut cmd: Option<Vec<u8>> = None;
    let mut flush = |cur: &mut Option<(bool, Vec<u8>)>, cmd: &mut Option<Vec<u8>>| match cur.take()
    {
        Some((true, bytes)) => *cmd = Some(bytes),
        Some((false, bytes)) => {
            if let Some(c) = cmd.take() {
                out.push((c, bytes));
            }
        }
        None => {}
    };
    for line in log.lines() {
        let t = line.trim();
        if t.starts_with("SWTPM_IO_Read:") || t.starts_with("SWTPM_IO_Write:") {
            flush(&mut cur, &mut cmd);
            cur = Some((t.starts_with("SWTPM_IO_Read:"), Vec::new()));
            continue;
        }
        let hex: Option<Vec<u8>> = t
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).ok().filter(|_| b.len() == 2))
            .collect();
        match (&mut cur, hex) {
            (Some((_, bytes)), Some(h)) if !t.is_empty() => bytes.extend(h),
            _ => flush(&mut cur, &mut cmd),
        }
    }
    flush(&mut cur, &mut cmd);
    out
}

/// The PCRs of the `TPM2_PCR_Extend` commands in a swtpm log
/// ([`logged_commands`]) that the TPM answered with success.
pub fn extended_pcrs(log: &str) -> Vec<u32> {
    let be32 = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|x| u32::from_be_bytes(x.try_into().unwrap()))
    };
    logged_commands(log)
        .iter()
        .filter(|(c, r)| be32(c, 6) == Some(0x182) && be32(r, 6) == Some(0))
        .filter_map(|(c, _)| be32(c, 10))
        .collect()
}

/// The PCR the TPM probe extends: PCR 8, which has the stateSave
/// attribute (PCRs 0-15 in the PC Client profile), so that a
/// `TPM2_Shutdown(STATE)` keeps it for a resume.
pub const PROBE_PCR: u32 = 8;
/// What the probe extends it with: a SHA-256 digest of 32 bytes 0x11.
pub const PROBE_DIGEST: [u8; 32] = [0x11; 32];

/// A SHA-256 PCR after one extend with `digest` from zero, in hex:
/// SHA-256(32 zero bytes || digest).
pub fn extended_from_zero(digest: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(digest);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 zero bytes in hex: a SHA-256 PCR that nothing extended.
pub const ZERO_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// PCR → hex digest, from `tpm2_pcrread` output.
pub fn pcrs(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .filter_map(|l| {
            let (pcr, value) = l.trim().split_once(": 0x")?;
            Some((pcr.trim().parse().ok()?, value.trim().to_ascii_lowercase()))
        })
        .collect()
}

/// The hex response the TPM probe printed after `tpm: NAME ` (the n-th
/// one) in `out`.
pub fn probe_response(out: &str, name: &str, nth: usize) -> String {
    let prefix = format!("tpm: {name} ");
    out.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .nth(nth)
        .unwrap_or_else(|| panic!("no {name} response #{nth} in:\n{out}"))
        .trim()
        .to_string()
}
