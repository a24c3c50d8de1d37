//! TPM test helpers shared by kiln-vmm's and kilnd's TPM tests: tpm2-tools
//! run against a swtpm on a stopped VM's state, and the answers the TPM
//! probe (`images/probes/tpm.s`) prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs each of `cmds` (tpm2-tools) against a new swtpm on TPM state
/// `state`, whose sockets go in `sock_dir`: a data socket for the tools'
/// swtpm TCTI, `not-need-init` (swtpm initialises the TPM itself, as a
/// power-on would), then `tpm2_startup -c`, as firmware would. Ends that
/// swtpm with SIGTERM. Returns each command's stdout; a failing command
/// fails the test.
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
    let startup: &[&str] = &["tpm2_startup", "-c"];
    let outs: Vec<String> = std::iter::once(startup)
        .chain(cmds.iter().copied())
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
    outs.into_iter().skip(1).collect()
}

/// Whether the TPM's current start followed an orderly `TPM2_Shutdown`
/// (the `orderly` bit of `TPM2_PT_STARTUP_CLEAR` in `tpm2_getcap
/// properties-variable` output, read right after a `tpm2_startup -c`).
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
