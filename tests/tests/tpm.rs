//! The TPM 2.0 CRB device against a real swtpm (Debian's `swtpm`, started
//! here as libvirt starts it: `swtpm socket --tpm2 --ctrl type=unixio`),
//! on real KVM, under kiln-vmm's default seccomp filters (`kill`): the
//! `tpm` probe's commands and answers, the state read afterwards by
//! `tpm2-tools` (Debian) against a new swtpm on the same state directory
//! (kiln-vmm's `TPM2_Shutdown(STATE)` at the end: a resume reads the PCR
//! the probe extended, the next boot starts cold; no volatile state; the
//! EK certificates kept), SeaBIOS's measured boot (the PCR extends swtpm
//! logged, PCRs 0-7 read by a resume), re-initialisation at every start
//! after a guest reset (whose `TPM2_Shutdown(CLEAR)` leaves nothing to
//! resume), and clear errors for a swtpm that is not there or does not
//! answer.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::tpm::{
    extended_from_zero, extended_pcrs, orderly, pcrs, probe_response, tpm_resume_refused,
    tpm_tools, Startup, PROBE_DIGEST, PROBE_PCR, ZERO_DIGEST,
};
use kiln_tests::{guest_file, kiln_vmm, kvm_available, probe, ScratchDir, Vm, VmSpec};

/// The probe's PCR after its one extend from zero.
fn probe_extended() -> String {
    extended_from_zero(&PROBE_DIGEST)
}

/// A running swtpm; killed when dropped (a CMD_SHUTDOWN ends it sooner).
struct Swtpm {
    child: Child,
    ctrl: PathBuf,
}

impl Swtpm {
    /// `swtpm socket --tpm2` on `state` with only a control socket, as
    /// libvirt runs it for QEMU.
    fn start(state: &Path, ctrl: &Path) -> Swtpm {
        Swtpm::start_logged(state, ctrl, None)
    }

    /// [`Swtpm::start`], logging every command and response to `log`
    /// (`level=20`) when given.
    fn start_logged(state: &Path, ctrl: &Path, log: Option<&Path>) -> Swtpm {
        std::fs::create_dir_all(state).unwrap();
        let _ = std::fs::remove_file(ctrl);
        let mut cmd = Command::new("swtpm");
        cmd.args(["socket", "--tpm2", "--ctrl"])
            .arg(format!("type=unixio,path={}", ctrl.display()))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()));
        if let Some(log) = log {
            cmd.arg("--log")
                .arg(format!("file={},level=20", log.display()));
        }
        let child = cmd
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm (Debian swtpm; scripts/setup.sh installs it)");
        wait_for(ctrl);
        Swtpm {
            child,
            ctrl: ctrl.to_path_buf(),
        }
    }

    /// Whether swtpm has exited (within `timeout`).
    fn exited(&mut self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(path: &Path) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{path:?} never came"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The volatile state file swtpm would resume at its next CMD_INIT.
const VOLATILE: &str = "tpm2-00.volatilestate";

fn tpm_spec(kernel: PathBuf, ctrl: &Path) -> VmSpec {
    VmSpec::new(kernel).args(["--tpm".to_string(), format!("socket={}", ctrl.display())])
}

#[test]
fn probe_talks_to_swtpm_which_keeps_its_pcr_for_a_resume_and_boots_cold() {
    if !kvm_available("probe_talks_to_swtpm_which_keeps_its_pcr_for_a_resume_and_boots_cold") {
        return;
    }
    let dir = ScratchDir::new("tpm-probe").unwrap();
    let state = dir.path().join("state");
    let mut swtpm = Swtpm::start(&state, &dir.path().join("ctrl.sock"));
    let spec = tpm_spec(probe("tpm"), &swtpm.ctrl);
    let vm = Vm::run_to_poweroff(&spec, Duration::from_secs(60));
    let out = vm.serial();
    let ctx = vm.describe();
    // CRB, version 1, CapCRB, interface selector CRB; IBM's vendor id.
    assert!(out.contains("tpm: intf 0001101400025811"), "{ctx}");
    assert!(out.contains("tpm: cmd size 3968"), "{ctx}");
    // regValid | locAssigned after the byte write; granted; not idle.
    assert!(out.contains("tpm: loc state 0000000000000082"), "{ctx}");
    assert!(out.contains("tpm: loc sts 0000000000000001"), "{ctx}");
    assert!(out.contains("tpm: ctrl sts 0000000000000000"), "{ctx}");
    assert_eq!(
        probe_response(&out, "startup", 0),
        "80010000000a00000000",
        "{ctx}"
    );
    let random = probe_response(&out, "getrandom", 0);
    assert!(
        random.starts_with("8001000000140000000000 08".replace(' ', "").as_str()),
        "{ctx}"
    );
    assert_ne!(&random[24..], "0000000000000000", "{ctx}");
    assert_eq!(
        probe_response(&out, "extend", 0),
        "80020000001300000000000000000000010000",
        "{ctx}"
    );
    let read = probe_response(&out, "pcrread", 0);
    assert!(read.ends_with(&probe_extended()), "{ctx}");
    assert!(out.contains("tpm: done"), "{ctx}");
    let log = vm.vmm_log();
    assert!(log.contains("initialised (CMD_INIT)"), "{log}");
    assert!(log.contains("locality 0 (CMD_SET_LOCALITY)"), "{log}");
    assert!(
        log.contains("TPM2_Shutdown(STATE) sent, response code 0x0"),
        "{log}"
    );
    assert!(log.contains("shut down (CMD_SHUTDOWN)"), "{log}");
    // The orderly end shut swtpm down (it exits, as under QEMU), storing
    // nothing volatile; the TPM's Shutdown(STATE) saved PCRs 0-15 in its
    // NV, so a resume (tpm2_startup without -c) on the same state reads
    // the probe's extend in PCR 8, and starts after an orderly shutdown
    // (the probe sent none; kiln-vmm did).
    assert!(swtpm.exited(Duration::from_secs(5)), "swtpm still running");
    assert!(!state.join(VOLATILE).exists(), "volatile state stored");
    let outs = tpm_tools(
        &state,
        dir.path(),
        Startup::State,
        &[
            &["tpm2_pcrread", &format!("sha256:{PROBE_PCR}")],
            &["tpm2_getcap", "properties-variable"],
        ],
    );
    assert_eq!(pcrs(&outs[0]), vec![(PROBE_PCR, probe_extended())]);
    assert!(orderly(&outs[1]), "{}", outs[1]);
    // The next boot is a cold one: its Startup(CLEAR) (a TPM Restart
    // after a Shutdown(STATE)) succeeds and PCR 8 reads zero before the
    // extend (`reset`: read, extend, read, then the guest resets).
    let swtpm = Swtpm::start(&state, &dir.path().join("ctrl.sock"));
    let spec = tpm_spec(probe("tpm"), &swtpm.ctrl).cmdline("reset");
    let mut vm = Vm::start(&spec);
    assert_eq!(vm.wait_exit_code(Duration::from_secs(60)), 10);
    let out = vm.serial();
    let ctx = vm.describe();
    assert_eq!(
        probe_response(&out, "startup", 0),
        "80010000000a00000000",
        "{ctx}"
    );
    assert!(
        probe_response(&out, "pcrread", 0).ends_with(ZERO_DIGEST),
        "{ctx}"
    );
    assert!(
        probe_response(&out, "pcrread", 1).ends_with(&probe_extended()),
        "{ctx}"
    );
}

#[test]
fn a_tpm_made_by_swtpm_setup_keeps_its_ek_certificate() {
    if !kvm_available("a_tpm_made_by_swtpm_setup_keeps_its_ek_certificate") {
        return;
    }
    let dir = ScratchDir::new("tpm-ek").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // As kilnd would make a server's TPM (Windows Server 2025 wants the
    // EK certificate): swtpm_setup (Debian swtpm-tools) with its local CA.
    let out = Command::new("swtpm_setup")
        .args(["--tpm2", "--tpmstate"])
        .arg(&state)
        .args(["--create-ek-cert", "--create-platform-cert", "--lock-nvram"])
        .output()
        .expect("swtpm_setup (Debian swtpm-tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let swtpm = Swtpm::start(&state, &dir.path().join("ctrl.sock"));
    let vm = Vm::run_to_poweroff(
        &tpm_spec(probe("tpm"), &swtpm.ctrl),
        Duration::from_secs(60),
    );
    let out = vm.serial();
    assert_eq!(
        probe_response(&out, "startup", 0),
        "80010000000a00000000",
        "{}",
        vm.describe()
    );
    assert!(probe_response(&out, "pcrread", 0).ends_with(&probe_extended()));
    // The RSA and ECC EK certificates' NV indices are still defined.
    let text = &tpm_tools(
        &state,
        dir.path(),
        Startup::Clear,
        &[&["tpm2_nvreadpublic"]],
    )[0];
    assert!(
        text.contains("0x1c00002:") && text.contains("0x1c00016:"),
        "{text}"
    );
}

#[test]
fn a_guest_reset_reinitialises_the_tpm() {
    if !kvm_available("a_guest_reset_reinitialises_the_tpm") {
        return;
    }
    let dir = ScratchDir::new("tpm-reset").unwrap();
    let state = dir.path().join("state");
    let mut swtpm = Swtpm::start(&state, &dir.path().join("ctrl.sock"));
    let spec = tpm_spec(probe("tpm"), &swtpm.ctrl).cmdline("reset");
    // Two boots, as a supervisor makes them: the guest's reset ends the
    // VMM with the reboot status and swtpm stays up (CMD_STOP); the next
    // VMM initialises the TPM again (CMD_INIT).
    for boot in 0..2 {
        let mut vm = Vm::start(&spec);
        let code = vm.wait_exit_code(Duration::from_secs(60));
        let out = vm.serial();
        let ctx = vm.describe();
        assert_eq!(code, 10, "boot {boot}: {ctx}");
        // Startup(CLEAR) succeeds (a TPM not re-initialised answers
        // TPM_RC_INITIALIZE), and PCR 8 starts from zero.
        assert_eq!(
            probe_response(&out, "startup", 0),
            "80010000000a00000000",
            "{ctx}"
        );
        assert!(
            probe_response(&out, "pcrread", 0).ends_with(ZERO_DIGEST),
            "{ctx}"
        );
        assert!(
            probe_response(&out, "pcrread", 1).ends_with(&probe_extended()),
            "{ctx}"
        );
        let log = vm.vmm_log();
        assert!(log.contains("initialised (CMD_INIT)"), "{log}");
        assert!(log.contains("stopped for the reset (CMD_STOP)"), "{log}");
        // The probe sent no TPM2_Shutdown before its reset; kiln-vmm did.
        assert!(
            log.contains("TPM2_Shutdown(CLEAR) sent, response code 0x0"),
            "{log}"
        );
        assert!(!swtpm.exited(Duration::ZERO), "boot {boot}: swtpm ended");
    }
    // A reboot is a TPM Reset: after the reset's Shutdown(CLEAR) there is
    // no saved state to resume (TPM_RC_VALUE for Startup(STATE)'s
    // parameter).
    drop(swtpm);
    let err = tpm_resume_refused(&state, dir.path());
    assert!(err.to_ascii_lowercase().contains("0x1c4"), "{err}");
}

#[test]
fn a_reset_through_the_api_reinitialises_the_tpm_in_the_reexecuted_vmm() {
    if !kvm_available("a_reset_through_the_api_reinitialises_the_tpm_in_the_reexecuted_vmm") {
        return;
    }
    let dir = ScratchDir::new("tpm-api-reset").unwrap();
    let state = dir.path().join("state");
    let mut swtpm = Swtpm::start(&state, &dir.path().join("ctrl.sock"));
    let spec = tpm_spec(probe("tpm"), &swtpm.ctrl).cmdline("hold");
    let mut vm = Vm::start(&spec);
    vm.wait_serial("tpm: holding", Duration::from_secs(30));
    let pid = vm.info().unwrap().pid;
    assert_eq!(vm.put("reset").unwrap(), 204);
    // kiln-vmm re-executes itself, under the filters it already has, and
    // connects to swtpm again: the second boot's Startup(CLEAR) succeeds
    // and its one extend of PCR 8 starts from zero.
    let deadline = Instant::now() + Duration::from_secs(30);
    while vm.serial().matches("tpm: holding").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no second boot\n{}",
            vm.describe()
        );
        assert!(vm.try_status().is_none(), "VMM exited\n{}", vm.describe());
        std::thread::sleep(Duration::from_millis(50));
    }
    vm.wait_api(Duration::from_secs(10));
    assert_eq!(vm.info().unwrap().pid, pid, "the same process");
    let out = vm.serial();
    let ctx = vm.describe();
    for boot in 0..2 {
        assert_eq!(
            probe_response(&out, "startup", boot),
            "80010000000a00000000",
            "{ctx}"
        );
        assert!(
            probe_response(&out, "pcrread", boot).ends_with(&probe_extended()),
            "{ctx}"
        );
    }
    let log = vm.vmm_log();
    assert_eq!(log.matches("initialised (CMD_INIT)").count(), 2, "{log}");
    assert!(log.contains("stopped for the reset (CMD_STOP)"), "{log}");
    assert!(!swtpm.exited(Duration::ZERO), "swtpm ended");
    vm.put("kill").unwrap();
    vm.wait_exit(Duration::from_secs(10));
    assert!(
        swtpm.exited(Duration::from_secs(5)),
        "CMD_SHUTDOWN ends swtpm"
    );
}

#[test]
fn seabios_finds_the_tpm_and_measures_the_boot() {
    if !kvm_available("seabios_finds_the_tpm_and_measures_the_boot") {
        return;
    }
    let dir = ScratchDir::new("tpm-seabios").unwrap();
    let state = dir.path().join("state");
    let swtpm_log = dir.path().join("swtpm.log");
    let mut swtpm = Swtpm::start_logged(&state, &dir.path().join("ctrl.sock"), Some(&swtpm_log));
    // bios-256k.bin is Debian's build with TPM support; nothing to boot,
    // so it measures, then says so.
    let mut spec = VmSpec::seabios().args([
        "--tpm".to_string(),
        format!("socket={}", swtpm.ctrl.display()),
    ]);
    spec.boot = kiln_tests::Boot::Firmware(guest_file("bios-256k.bin"));
    let mut vm = Vm::start(&spec);
    vm.wait_serial("No bootable device", Duration::from_secs(120));
    let log = vm.vmm_log();
    // SeaBIOS found the TPM2 table (its signature as a number).
    assert!(log.contains("table(324d5054)"), "{log}");
    vm.put("kill").expect("kill through the control API");
    vm.wait_exit(Duration::from_secs(10));
    assert!(swtpm.exited(Duration::from_secs(5)), "swtpm still running");
    // The TPM's own log shows the measurements: each of PCRs 0-7
    // extended with success (the separators), and PCR 4 (boot manager
    // code) before its separator too.
    let log = std::fs::read_to_string(&swtpm_log).unwrap();
    let extended = extended_pcrs(&log);
    eprintln!("SeaBIOS extended PCRs {extended:?}");
    for pcr in 0..8 {
        assert!(
            extended.contains(&pcr),
            "PCR {pcr} not extended: {extended:?}"
        );
    }
    let pcr4 = extended.iter().filter(|&&p| p == 4).count();
    assert!(pcr4 >= 2, "{extended:?}");
    assert!(!state.join(VOLATILE).exists(), "volatile state stored");
    // kiln-vmm's Shutdown(STATE) kept them: a resume reads PCRs 0-7, none
    // zero.
    let log = vm.vmm_log();
    assert!(
        log.contains("TPM2_Shutdown(STATE) sent, response code 0x0"),
        "{log}"
    );
    let outs = tpm_tools(
        &state,
        dir.path(),
        Startup::State,
        &[&["tpm2_pcrread", "sha256:0,1,2,3,4,5,6,7"]],
    );
    let read = pcrs(&outs[0]);
    assert_eq!(read.len(), 8, "{}", outs[0]);
    for (pcr, value) in read {
        assert_ne!(value, ZERO_DIGEST, "PCR {pcr} is zero");
    }
}

#[test]
fn a_missing_or_silent_swtpm_fails_before_kvm_with_status_2() {
    let dir = ScratchDir::new("tpm-bad").unwrap();
    let kernel = probe("hello");
    let run = |socket: &Path| {
        let out = Command::new(kiln_vmm())
            .arg("--kernel")
            .arg(&kernel)
            .arg("--tpm")
            .arg(format!("socket={}", socket.display()))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let missing = dir.path().join("missing.sock");
    let (code, err) = run(&missing);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("swtpm control socket") && err.contains("missing.sock"),
        "{err}"
    );
    // A socket whose listener accepts and closes without an answer.
    let silent = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&silent).unwrap();
    let t = std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            drop(s);
        }
    });
    let (code, err) = run(&silent);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("swtpm did not answer CMD_GET_CAPABILITY"),
        "{err}"
    );
    assert!(!err.contains("KVM"), "{err}");
    t.join().unwrap();
    // An empty socket path in the flag.
    let out = Command::new(kiln_vmm())
        .args(["--kernel", kernel.to_str().unwrap(), "--tpm", "socket="])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
