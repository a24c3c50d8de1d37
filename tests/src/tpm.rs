//! TPM test helpers shared by kiln-vmm's and kilnd's TPM tests: tpm2-tools
//! run against a swtpm on a stopped VM's state, and the answers the TPM
//! probe (`images/probes/tpm.s`) prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs each of `cmds` (tpm2-tools) against a new swtpm on TPM state
/// `state`, whose sockets go in `sock_dir`: a data socket for the tools'
/// swtpm TCTI, and `not-need-init`, so it resumes the volatile state
/// kiln-vmm stored at its end. Ends that swtpm with SIGTERM. Returns each
/// command's stdout; a failing command fails the test.
pub fn tpm_tools(state: &Path, sock_dir: &Path, cmds: &[&[&str]]) -> Vec<String> {
    let data = sock_dir.join("tools.sock");
    let ctrl = PathBuf::from(format!("{}.ctrl", data.display()));
    let _ = std::fs::remove_file(&data);
    let _ = std::fs::remove_file(&ctrl);
    let mut swtpm = Command::new("swtpm")
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
    let outs = cmds
        .iter()
        .map(|c| {
            let out = Command::new(c[0])
                .args(&c[1..])
                .env("TPM2TOOLS_TCTI", format!("swtpm:path={}", data.display()))
                .output()
                .expect("tpm2-tools (scripts/setup.sh installs it)");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{c:?}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            text
        })
        .collect();
    // SAFETY: kill(2) of the swtpm this function started.
    unsafe { libc::kill(swtpm.id() as i32, libc::SIGTERM) };
    let _ = swtpm.wait();
    outs
}

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
