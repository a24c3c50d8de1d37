//! kiln-vmm: run one KVM virtual machine, then exit with a status that says
//! how it ended (see `kiln_api::control::ExitReason::exit_code`).

use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use event_manager::{EventManager, SubscriberOps};
use kiln_api::control::ExitReason;
use kiln_vmm::config::Args;
use kiln_vmm::controller::{bind, Controller, Outcome};
use kiln_vmm::disks::DiskSet;
use kiln_vmm::vm::Vm;
use kiln_vmm::{logger, reset_state, terminal};
use log::{error, info};

/// Print an error and its chain of causes, once.
fn report(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut cause = err.source();
    let mut last = String::new();
    while let Some(c) = cause {
        // Some libraries repeat their cause in their own message; say it once.
        let text = c.to_string();
        if !msg.ends_with(&text) && text != last {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        last = text;
        cause = c.source();
    }
    msg
}

/// The VM's disks, once built: every orderly end closes them (writes them
/// back) before the process exits or re-executes itself.
static DISKS: OnceLock<DiskSet> = OnceLock::new();

/// How long the end waits for the disks to be written back. kilnd allows
/// a VMM more than this between its orderly request and a SIGKILL.
const DISK_CLOSE_LIMIT: Duration = Duration::from_secs(8);

/// Write every disk back (see `kiln_vmm::disks`). Nothing before the VM
/// was built; at most [`DISK_CLOSE_LIMIT`].
fn close_disks() {
    if let Some(disks) = DISKS.get() {
        // A failure is logged there; the exit status still says how the
        // VM ended.
        let _ = disks.close(DISK_CLOSE_LIMIT);
    }
}

fn fail(msg: String) -> ! {
    terminal::restore();
    error!("{msg}");
    close_disks();
    eprintln!("kiln-vmm: {msg}");
    std::process::exit(
        ExitReason::HostError {
            message: msg.clone(),
        }
        .exit_code(),
    );
}

/// Write the exit record atomically (a reader sees all of it or nothing).
fn write_exit_record(path: &str, code: i32, reason: ExitReason) {
    let record = kiln_api::control::ExitRecord { code, reason };
    let tmp = format!("{path}.tmp");
    let json = serde_json::to_vec(&record).expect("exit records serialize");
    if let Err(e) = std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, path)) {
        error!("cannot write the exit record {path}: {e}");
    }
}

/// The screen when the VM ends on a fault (a triple fault, an emulation
/// failure, a host error), to `display.last_screenshot`: after the exit
/// nobody can ask for it. Not on a power off, a reboot or a kill (whoever
/// ends a VMM on purpose asks first if it wants the picture).
fn keep_last_screenshot(ctl: &Controller, config: &kiln_api::vm::VmConfig, reason: &ExitReason) {
    use kiln_vmm::control::ControlTarget;
    let Some(path) = config
        .display
        .as_ref()
        .and_then(|d| d.last_screenshot.as_deref())
    else {
        return;
    };
    let fault = matches!(
        reason,
        ExitReason::TripleFault { .. }
            | ExitReason::EmulationFailure { .. }
            | ExitReason::HostError { .. }
    );
    if !fault {
        return;
    }
    let t = Instant::now();
    let kept = ctl.screenshot().map_err(|e| e.to_string()).and_then(|png| {
        kiln_vmm::screen::keep(path, &png)
            .map(|()| png.len())
            .map_err(|e| format!("{path}: {e}"))
    });
    match kept {
        Ok(n) => info!(
            "last screenshot: {n} bytes to {path} in {} µs",
            t.elapsed().as_micros()
        ),
        Err(e) => error!("cannot keep the last screenshot: {e}"),
    }
}

fn main() {
    let start = Instant::now();
    let args = Args::parse();
    logger::init(args.log_level, start);
    kiln_vmm::seccomp::set_mode(args.seccomp);
    // A bad configuration (flags, JSON, a disk or NIC) ends here with
    // status 2, before KVM is touched.
    let mut config = args
        .vm_config()
        .and_then(|c| kiln_vmm::config::check_host(&c).map(|()| c))
        .unwrap_or_else(|e| {
            eprintln!("kiln-vmm: {}", report(&e));
            std::process::exit(2);
        });
    // The TPM's swtpm answers, or the VM does not start (status 2, before
    // KVM is touched); this also initialises the TPM after a reset.
    let tpm = config.tpm.as_ref().map(|t| {
        kiln_vmm::tpm::Swtpm::connect(&t.socket).unwrap_or_else(|e| {
            eprintln!("kiln-vmm: tpm: {}", report(&e));
            std::process::exit(2);
        })
    });
    let tpm_end = tpm.clone();
    // After an in-place reset: the NICs' MACs and links as they were.
    let kept_nets = reset_state::take(&config);
    if let Some(nets) = &kept_nets {
        reset_state::keep_macs(&mut config, nets);
    }
    let api = config.api_socket.as_deref().map(|p| {
        bind(p).unwrap_or_else(|e| fail(format!("cannot listen on the API socket {p}: {e}")))
    });
    let console = config.serial.socket.as_deref().map(|p| {
        bind(p).unwrap_or_else(|e| fail(format!("cannot listen on the console socket {p}: {e}")))
    });
    let vnc = config
        .display
        .as_ref()
        .and_then(|d| d.vnc.as_deref())
        .map(|p| {
            bind(p).unwrap_or_else(|e| fail(format!("cannot listen on the VNC socket {p}: {e}")))
        });
    // Before any thread starts, so that every thread blocks them.
    let signals = kiln_vmm::controller::terminating_signals_fd()
        .unwrap_or_else(|e| fail(format!("cannot set up signal handling: {e}")));
    let mut vm = Vm::build(&config, start, tpm.clone()).unwrap_or_else(|e| fail(report(&e)));
    let _ = DISKS.set(vm.devices.virtio.disks.clone());
    if let Some(nets) = &kept_nets {
        reset_state::keep_links(&vm.devices.virtio.nets, nets);
    }
    if config.serial.stdio {
        terminal::set_raw();
    }
    vm.start().unwrap_or_else(|e| fail(report(&e)));
    let vnc_path = vnc.map(|(listener, path)| {
        let display = vm
            .devices
            .display
            .clone()
            .expect("validated: --vnc needs a display");
        let keyboard = vm.devices.platform.keyboard.clone();
        let pointer = kiln_vmm::pointer::Pointer::new(&keyboard, vm.devices.virtio.tablet.clone());
        kiln_vmm::vnc::spawn(listener, display, keyboard, pointer)
            .unwrap_or_else(|e| fail(format!("cannot start the VNC server: {e}")));
        path
    });
    info!(
        "VM running: {} vCPUs, {} MiB, built in {} µs",
        config.cpus.count,
        config.memory.size_mib,
        vm.build_time.as_micros()
    );

    let mut controller = Controller::new(vm, api, console);
    controller.watch_signals(signals);
    let controller = Arc::new(Mutex::new(controller));
    // Every other thread has started (and installed its own filter).
    kiln_vmm::seccomp::apply(kiln_vmm::seccomp::ThreadKind::Vmm)
        .unwrap_or_else(|e| fail(report(&e)));
    let mut events = EventManager::<Arc<Mutex<Controller>>>::new()
        .unwrap_or_else(|e| fail(format!("cannot create the event loop: {e}")));
    events.add_subscriber(controller.clone());
    let outcome = loop {
        let timeout = if controller.lock().unwrap().has_pending_input() {
            10
        } else {
            -1
        };
        if let Err(e) = events.run_with_timeout(timeout) {
            fail(format!("event loop failed: {e}"));
        }
        let mut ctl = controller.lock().unwrap();
        ctl.flush_input();
        if let Some(outcome) = ctl.outcome() {
            break outcome;
        }
    };
    terminal::restore();
    let ctl = controller.lock().unwrap();
    for path in ctl.socket_paths().iter().chain(&vnc_path) {
        let _ = std::fs::remove_file(path);
    }
    if let Some(a) = &config.agent {
        let _ = std::fs::remove_file(&a.socket);
    }
    match outcome {
        Outcome::Ended(reason) => {
            let code = reason.exit_code();
            match &reason {
                ExitReason::PowerOff => info!("guest powered off"),
                ExitReason::Reboot => info!("guest asked for a reboot"),
                ExitReason::Killed => info!("killed (control API, signal or console escape)"),
                ExitReason::TripleFault { vcpu } => error!("vcpu{vcpu}: triple fault"),
                ExitReason::EmulationFailure { vcpu, registers } => {
                    error!("vcpu{vcpu}: KVM emulation failure at {registers}")
                }
                ExitReason::HostError { message } => error!("host error: {message}"),
            }
            keep_last_screenshot(&ctl, &config, &reason);
            close_disks();
            // A guest reboot ends this VMM and its supervisor starts the
            // next one, which initialises the TPM again: swtpm stays up.
            match (&tpm_end, &reason) {
                (Some(tpm), ExitReason::Reboot) => tpm.stop(),
                (Some(tpm), _) => tpm.shutdown(),
                (None, _) => {}
            }
            info!("exit status {code}");
            if let Some(path) = &config.exit_file {
                write_exit_record(path, code, reason);
            }
            std::process::exit(code);
        }
        Outcome::Restart => {
            info!("reset: restarting the VMM in place");
            close_disks();
            if let Some(tpm) = &tpm_end {
                tpm.stop();
            }
            let mut argv = std::env::args_os();
            let _ = argv.next();
            let err = std::process::Command::new("/proc/self/exe")
                .args(argv)
                .env(reset_state::ENV, reset_state::encode(&ctl.nets()))
                .exec();
            fail(format!("cannot restart: {err}"));
        }
    }
}
