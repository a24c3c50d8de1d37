//! Servers with a TPM 2.0, on real kilnd, real kiln-vmm (default seccomp
//! filters) and a real swtpm (Debian `swtpm`, `swtpm-tools`), with
//! `tpm2-tools` reading the state a stopped server left:
//! - the TPM probe (`images/probes/tpm.s`) gets its swtpm, made by
//!   swtpm_setup with its EK certificate in the server's directory; its
//!   answers reach the console; `kill -9 kilnd` and a restart re-adopt the
//!   VMM and the swtpm (same pids, nothing else running); stop leaves no
//!   swtpm and no volatile state, after kiln-vmm's `TPM2_Shutdown(STATE)`:
//!   the tools' resume (`tpm2_startup` without `-c`) reads the PCR the
//!   guest extended (PCR 8, saved by the shutdown), and the next start is
//!   a cold boot (the guest's Startup(CLEAR) succeeds and its extend
//!   starts from zero); an NV index defined and written on the stopped
//!   state is still there with its data after start and stop (the
//!   permanent state is kept, not made again); delete leaves no swtpm
//!   and no state;
//! - a SeaBIOS server with a TPM boots `bios-256k.bin` (`firmware.bios_tpm`,
//!   by default next to `bios`), which measures the boot: PCRs 0-7 read
//!   by a resume after the server powered off are none of them zero;
//! - Windows images default to a TPM; a server may turn its image's off.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::firmware::{firmware_config, fw_flavor, import_disk_fw};
use common::vm::{action, console, register, start_kilnd, wait_until, T};
use common::Kilnd;
use kiln_api::compute::ServerStatus;
use kiln_api::vm::VmConfig;
use kiln_manager::supervisor::tpm::processes_under;
use kiln_tests::disk::mbr_disk;
use kiln_tests::guest_file;
use kiln_tests::tpm::{
    extended_from_zero, orderly, pcrs, probe_response, tpm_tools, Startup, PROBE_DIGEST, PROBE_PCR,
    ZERO_DIGEST,
};

/// The probe's PCR after its one extend from zero.
fn probe_extended() -> String {
    extended_from_zero(&PROBE_DIGEST)
}
/// The NV index the test defines on a stopped server's state, and what
/// it writes there.
const MARK: &str = "0x1500016";
const MARK_DATA: &str = "kiln-nv!";
/// The volatile state file swtpm would resume at its next CMD_INIT.
const VOLATILE: &str = "tpm2-00.volatilestate";
/// SeaBIOS takes a few seconds here; much more under load.
const BOOT: Duration = Duration::from_secs(180);

fn kvm(test: &str) -> bool {
    let ok = Path::new("/dev/kvm").exists();
    if !ok {
        eprintln!("{test}: skipped: /dev/kvm is missing (needs KVM)");
    }
    ok
}

fn swtpms(k: &Kilnd) -> Vec<(u32, String)> {
    processes_under(&k.state_path("servers"))
}

fn vm_json(k: &Kilnd, id: &str) -> VmConfig {
    let b = std::fs::read(k.state_path(&format!("servers/{id}/vm.json"))).unwrap();
    serde_json::from_slice(&b).unwrap()
}

/// Runs tpm2-tools commands against a new swtpm on a stopped server's
/// state, resumed (`tpm2_startup` without `-c`); each command's stdout.
fn resumed(k: &Kilnd, state: &Path, cmds: &[&[&str]]) -> Vec<String> {
    tpm_tools(state, k.dir.path(), Startup::State, cmds)
}

fn wait_no_swtpm(k: &Kilnd) {
    wait_until("no swtpm left", T, || swtpms(k).is_empty());
}

#[test]
fn a_tpm_server_gets_its_swtpm_which_survives_readoption_and_stop_start() {
    if !kvm("a_tpm_server_gets_its_swtpm_which_survives_readoption_and_stop_start") {
        return;
    }
    let mut k = start_kilnd("");
    register(&k, "tpm", "tpm", "hold");
    let s = k.create_server(r#"{"name":"t","flavor":"k1.probe","image":"tpm","tpm":true}"#);
    assert!(s.tpm, "{s:?}");
    let s = k.wait_status(&s.id, ServerStatus::Active, T);
    wait_until("the probe's hold", T, || {
        console(&k, &s.id).contains("tpm: holding")
    });
    let out = console(&k, &s.id);
    // Startup(CLEAR) rc 0, the extend and the read back of PCR 8.
    assert_eq!(
        probe_response(&out, "startup", 0),
        "80010000000a00000000",
        "{out}"
    );
    assert_eq!(
        probe_response(&out, "extend", 0),
        "80020000001300000000000000000000010000",
        "{out}"
    );
    assert!(
        probe_response(&out, "pcrread", 0).ends_with(&probe_extended()),
        "{out}"
    );
    // One swtpm, on the state in the server's directory, named in vm.json.
    let state = k.state_path(&format!("servers/{}/tpm", s.id));
    assert!(state.join("tpm2-00.permall").exists());
    assert!(!k
        .state_path(&format!("servers/{}/tpm.partial", s.id))
        .exists());
    let tpm = swtpms(&k);
    assert_eq!(tpm.len(), 1, "{tpm:?}");
    assert_eq!(tpm[0].1, s.id);
    let swtpm_pid = tpm[0].0;
    assert_eq!(
        vm_json(&k, &s.id).tpm.expect("tpm in vm.json").socket,
        state.join("ctrl.sock").display().to_string()
    );
    let vmm_pid = s.pid.expect("a VMM pid");
    for l in k
        .log()
        .lines()
        .filter(|l| l.contains("swtpm_setup") || l.contains("swtpm started"))
    {
        eprintln!("{l}");
    }

    // kill -9 kilnd: both keep running and the new kilnd re-adopts both.
    k.kill9();
    assert!(common::alive(vmm_pid) && common::alive(swtpm_pid));
    k.spawn();
    wait_until("re-adoption", T, || {
        k.log().matches("re-adopted swtpm").count() == 1
    });
    let again = k.server(&s.id);
    assert_eq!(again.status, ServerStatus::Active, "{again:?}");
    assert_eq!(again.pid, Some(vmm_pid));
    assert_eq!(swtpms(&k), vec![(swtpm_pid, s.id.clone())], "same swtpm");
    assert_eq!(common::procs_under(&k.state_path("servers")).len(), 1);

    // Stop: the VMM's orderly end (TPM2_Shutdown(STATE), then
    // CMD_SHUTDOWN) ends swtpm, storing nothing volatile; a resume on the
    // state reads the guest's PCR 8, after an orderly shutdown.
    action(&k, &s.id, r#"{"action":"stop"}"#);
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    wait_no_swtpm(&k);
    assert!(!common::alive(swtpm_pid));
    assert!(!state.join(VOLATILE).exists(), "volatile state stored");
    let vmm_log =
        std::fs::read_to_string(k.state_path(&format!("servers/{}/vmm.log", s.id))).unwrap();
    assert!(
        vmm_log.contains("TPM2_Shutdown(STATE) sent, response code 0x0"),
        "{vmm_log}"
    );
    let mark_file = k.dir.path().join("mark.bin");
    std::fs::write(&mark_file, MARK_DATA).unwrap();
    let mark_file = mark_file.to_str().unwrap();
    let nvdefine: &[&str] = &["tpm2_nvdefine", MARK, "-C", "o", "-s", "8"];
    let nvwrite: &[&str] = &["tpm2_nvwrite", MARK, "-C", "o", "-i", mark_file];
    let pcr = format!("sha256:{PROBE_PCR}");
    let outs = resumed(
        &k,
        &state,
        &[
            &["tpm2_pcrread", &pcr],
            &["tpm2_getcap", "properties-variable"],
            &["tpm2_nvreadpublic"],
            nvdefine,
            nvwrite,
        ],
    );
    assert_eq!(pcrs(&outs[0]), vec![(PROBE_PCR, probe_extended())]);
    assert!(orderly(&outs[1]), "{}", outs[1]);
    // swtpm_setup's RSA and ECC EK certificates.
    assert!(
        outs[2].contains("0x1c00002:") && outs[2].contains("0x1c00016:"),
        "{}",
        outs[2]
    );
    assert!(!outs[2].contains(MARK), "{}", outs[2]);

    // Start: a new swtpm on the same state; the guest's TPM works again,
    // from a cold boot: its Startup(CLEAR) succeeds (a resumed TPM would
    // answer TPM_RC_INITIALIZE; after a Shutdown(STATE) it is a TPM
    // Restart, every PCR fresh) and its one extend of PCR 8 starts from
    // zero (not from the value the tools read).
    action(&k, &s.id, r#"{"action":"start"}"#);
    k.wait_status(&s.id, ServerStatus::Active, T);
    wait_until("the second boot's hold", T, || {
        console(&k, &s.id).matches("tpm: holding").count() == 2
    });
    let out = console(&k, &s.id);
    assert_eq!(
        probe_response(&out, "startup", 1),
        "80010000000a00000000",
        "{out}"
    );
    assert!(
        probe_response(&out, "pcrread", 1).ends_with(&probe_extended()),
        "{out}"
    );
    let tpm = swtpms(&k);
    assert_eq!(tpm.len(), 1, "{tpm:?}");
    assert_ne!(tpm[0].0, swtpm_pid, "a new swtpm");
    action(&k, &s.id, r#"{"action":"stop"}"#);
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    wait_no_swtpm(&k);
    // What was defined and written on the stopped state is still there:
    // kept, not made again; no volatile state this time either; PCR 8 is
    // the second boot's one extend.
    assert!(!state.join(VOLATILE).exists(), "volatile state stored");
    let outs = resumed(
        &k,
        &state,
        &[
            &["tpm2_nvreadpublic"],
            &["tpm2_nvread", MARK, "-C", "o", "-s", "8"],
            &["tpm2_pcrread", &pcr],
        ],
    );
    assert!(
        outs[0].contains(&format!("{MARK}:")) && outs[0].contains("0x1c00002:"),
        "{}",
        outs[0]
    );
    assert_eq!(outs[1], MARK_DATA);
    assert_eq!(pcrs(&outs[2]), vec![(PROBE_PCR, probe_extended())]);

    // Started again, hard-rebooted (a new VMM, so a new swtpm, and the
    // guest's TPM starts clean), then deleted while running: no swtpm, no
    // state.
    action(&k, &s.id, r#"{"action":"start"}"#);
    k.wait_status(&s.id, ServerStatus::Active, T);
    wait_until("the third boot's hold", T, || {
        console(&k, &s.id).matches("tpm: holding").count() == 3
    });
    let before = swtpms(&k);
    assert_eq!(before.len(), 1, "{before:?}");
    action(&k, &s.id, r#"{"action":"reboot","type":"hard"}"#);
    wait_until("the hard reboot's hold", T, || {
        console(&k, &s.id).matches("tpm: holding").count() == 4
    });
    k.wait_status(&s.id, ServerStatus::Active, T);
    let out = console(&k, &s.id);
    assert_eq!(
        probe_response(&out, "startup", 3),
        "80010000000a00000000",
        "{out}"
    );
    assert!(
        probe_response(&out, "pcrread", 3).ends_with(&probe_extended()),
        "{out}"
    );
    let after = swtpms(&k);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].0, before[0].0, "a new swtpm for the new VMM");
    assert!(!common::alive(before[0].0));
    k.delete_server(&s.id);
    assert!(swtpms(&k).is_empty(), "swtpm left after delete");
    assert!(!state.exists(), "TPM state left after delete");
    common::vm::assert_nothing_left(&k);
}

#[test]
fn a_seabios_server_with_a_tpm_boots_bios_256k_which_uses_the_tpm() {
    if !kvm("a_seabios_server_with_a_tpm_boots_bios_256k_which_uses_the_tpm") {
        return;
    }
    // bios_tpm by default: bios-256k.bin next to bios (cache/guest).
    let k = start_kilnd(&firmware_config());
    fw_flavor(&k);
    let disk = mbr_disk(k.dir.path());
    import_disk_fw(&k, "mbr", &disk, "raw", Some("bios"));
    let s = k.create_server(r#"{"name":"m","flavor":"fw.small","image":"mbr","tpm":true}"#);
    // The boot sector prints and powers off: SHUTOFF, swtpm gone, having
    // been used (kiln-vmm's TPM2_Shutdown follows the firmware's commands
    // and succeeds only on a TPM the firmware started). Its STATE kept
    // SeaBIOS's measurements: a resume reads PCRs 0-7, none of them zero.
    let t0 = Instant::now();
    let done = k.wait_status(&s.id, ServerStatus::Shutoff, BOOT);
    assert!(done.fault.is_none(), "{done:?}");
    let out = console(&k, &s.id);
    assert!(out.contains("kiln MBR booted from virtio-blk"), "{out}");
    eprintln!("SeaBIOS with TPM to power-off: {:?}", t0.elapsed());
    wait_no_swtpm(&k);
    let fw = vm_json(&k, &s.id).firmware.expect("firmware");
    assert_eq!(fw.path, guest_file("bios-256k.bin").display().to_string());
    let vmm_log =
        std::fs::read_to_string(k.state_path(&format!("servers/{}/vmm.log", s.id))).unwrap();
    assert!(
        vmm_log.contains("TPM2_Shutdown(STATE) sent, response code 0x0"),
        "{vmm_log}"
    );
    let state = k.state_path(&format!("servers/{}/tpm", s.id));
    assert!(!state.join(VOLATILE).exists(), "volatile state stored");
    let outs = resumed(&k, &state, &[&["tpm2_pcrread", "sha256:0,1,2,3,4,5,6,7"]]);
    let read = pcrs(&outs[0]);
    eprintln!("SeaBIOS's PCRs 0-7 after power-off: {read:?}");
    assert_eq!(read.len(), 8, "{}", outs[0]);
    for (pcr, value) in read {
        assert_ne!(value, ZERO_DIGEST, "PCR {pcr} is zero");
    }
    // The same image without a TPM keeps plain bios.bin.
    let plain = k.create_server(r#"{"name":"p","flavor":"fw.small","image":"mbr"}"#);
    assert!(!plain.tpm);
    k.wait_status(&plain.id, ServerStatus::Shutoff, BOOT);
    let fw = vm_json(&k, &plain.id).firmware.expect("firmware");
    assert_eq!(fw.path, guest_file("bios.bin").display().to_string());
    assert!(!k.state_path(&format!("servers/{}/tpm", plain.id)).exists());
    k.delete_server(&s.id);
    k.delete_server(&plain.id);
    common::vm::assert_nothing_left(&k);
}

#[test]
fn windows_images_default_to_a_tpm_which_a_server_may_turn_off() {
    let k = start_kilnd(&firmware_config());
    fw_flavor(&k);
    let disk = mbr_disk(k.dir.path());
    let win = k.import_disk_with("win", &disk, "raw", r#","os_type":"windows""#);
    assert!(win.tpm, "{win:?}");
    let lin = k.import_disk_with("lin", &disk, "raw", "");
    assert!(!lin.tpm, "{lin:?}");
    let off = k.import_disk_with(
        "win-off",
        &disk,
        "raw",
        r#","os_type":"windows","tpm":false"#,
    );
    assert!(!off.tpm, "{off:?}");
    // Kept in the store.
    assert!(k.image(&win.id).tpm);
    let s = k.create_server(r#"{"name":"w","flavor":"fw.small","image":"win","tpm":false}"#);
    assert!(!s.tpm, "the server's choice wins");
    k.delete_server(&s.id);
    common::vm::assert_nothing_left(&k);
}

#[test]
fn no_swtpm_outlives_its_vmm_whatever_ends_it() {
    if !kvm("no_swtpm_outlives_its_vmm_whatever_ends_it") {
        return;
    }
    let mut k = start_kilnd("");
    register(&k, "tpm", "tpm", "hold");
    let create = |name: &str| {
        let s = k.create_server(&format!(
            r#"{{"name":"{name}","flavor":"k1.probe","image":"tpm","tpm":true}}"#
        ));
        k.wait_status(&s.id, ServerStatus::Active, T)
    };
    let kill9 = |pid: u32| {
        // SAFETY: kill(2) of a process this test's kilnd started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    };
    // The VMM SIGKILLed under kilnd: ERROR, and its swtpm ended.
    let a = create("a");
    assert_eq!(swtpms(&k).len(), 1);
    kill9(a.pid.unwrap());
    k.wait_status(&a.id, ServerStatus::Error, T);
    wait_no_swtpm(&k);

    // The VMM SIGKILLed while kilnd is down: the new kilnd ends its swtpm,
    // and one on the state of a server it does not know.
    let b = create("b");
    let tpm = swtpms(&k);
    assert_eq!(tpm.len(), 1, "{tpm:?}");
    k.kill9();
    kill9(b.pid.unwrap());
    let stray = k.state_path("servers/0badc0de-0000-4000-8000-000000000000/tpm");
    std::fs::create_dir_all(&stray).unwrap();
    let st = Command::new("swtpm")
        .args(["socket", "--tpm2", "--daemon", "--ctrl"])
        .arg(format!(
            "type=unixio,path={}",
            stray.join("c.sock").display()
        ))
        .arg("--tpmstate")
        .arg(format!("dir={}", stray.display()))
        .status()
        .unwrap();
    assert!(st.success());
    wait_until("the stray swtpm", T, || swtpms(&k).len() == 2);
    k.spawn();
    k.wait_status(&b.id, ServerStatus::Error, T);
    wait_no_swtpm(&k);
    assert!(!common::alive(tpm[0].0));
    k.delete_server(&a.id);
    k.delete_server(&b.id);
    common::vm::assert_nothing_left(&k);
}
