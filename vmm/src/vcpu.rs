//! vCPU threads: each runs KVM_RUN in a loop, dispatches port and MMIO
//! exits to the buses, parks while the VM is paused, and reports how the
//! guest ended through [`VmShared`].
//!
//! Kicking: the control thread sends [`kick_signal`] to a vCPU thread; its
//! handler sets `immediate_exit` in that thread's `kvm_run`, so KVM_RUN
//! returns EINTR at once even if the signal lands just before the ioctl.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use kiln_api::control::ExitReason;
use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use log::{debug, error, warn};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable};

use crate::devices::bus::Bus;
use crate::devices::{VmRequest, VmRequests};

/// What the control thread wants the vCPUs to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
}

/// State shared by the vCPU threads and the control thread.
pub struct VmShared {
    state: Mutex<(RunState, usize)>,
    cond: Condvar,
    exit: Mutex<Option<ExitReason>>,
    /// Written once when the guest ends; the control loop waits on it.
    pub exit_evt: EventFd,
}

impl VmShared {
    pub fn new() -> std::io::Result<Self> {
        Ok(VmShared {
            state: Mutex::new((RunState::Running, 0)),
            cond: Condvar::new(),
            exit: Mutex::new(None),
            exit_evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Record how the VM ended (the first reason wins) and wake the
    /// control loop.
    pub fn end(&self, reason: ExitReason) {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if exit.is_none() {
            *exit = Some(reason);
            // A full eventfd counter cannot happen with one write.
            let _ = self.exit_evt.write(1);
        }
    }

    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn run_state(&self) -> RunState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Ask every vCPU to park and wait until `vcpus` of them have.
    pub fn pause(&self, vcpus: &[JoinHandle<()>]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = RunState::Paused;
        drop(st);
        for v in vcpus {
            let _ = v.kill(kick_signal());
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.0 == RunState::Paused && st.1 < vcpus.len() && self.exit_reason().is_none() {
            st = self
                .cond
                .wait_timeout(st, std::time::Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if st.1 < vcpus.len() {
                // A kick can be lost if it raced with a previous resume.
                for v in vcpus {
                    let _ = v.kill(kick_signal());
                }
            }
        }
    }

    pub fn resume(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = RunState::Running;
        self.cond.notify_all();
    }

    /// Called by a vCPU thread between KVM_RUNs: park while paused.
    fn park_if_paused(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.0 != RunState::Paused {
            return;
        }
        st.1 += 1;
        self.cond.notify_all();
        while st.0 == RunState::Paused {
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.1 -= 1;
    }
}

/// Device requests end the VM the same way guest exits do.
impl VmRequests for VmShared {
    fn request(&self, req: VmRequest) {
        self.end(match req {
            VmRequest::PowerOff => ExitReason::PowerOff,
            VmRequest::Reset => ExitReason::Reboot,
        });
    }
}

thread_local! {
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: `run` is this thread's own mmapped kvm_run, set by the
        // thread before its first KVM_RUN and valid while the VcpuFd lives
        // (the thread owns it for its whole life). A byte store is
        // async-signal-safe.
        unsafe { (*run).immediate_exit = 1 };
    }
}

/// Install the kick handler (once per process, before vCPU threads start).
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    register_signal_handler(kick_signal(), handle_kick)
}

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

/// One vCPU and what it needs to run.
pub struct Vcpu {
    pub id: u8,
    pub fd: VcpuFd,
    pub pio: Bus,
    pub mmio: Bus,
    pub shared: Arc<VmShared>,
}

impl Vcpu {
    /// Start the vCPU on its own thread.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("vcpu{}", self.id))
            .spawn(move || {
                let id = self.id;
                let shared = self.shared.clone();
                if let Err(e) = crate::seccomp::apply(crate::seccomp::ThreadKind::Vcpu) {
                    let message = format!("vcpu{id}: {}", e.report());
                    shared.end(ExitReason::HostError { message });
                    return;
                }
                // A bug in a device model must end the VM with a reason, not
                // leave a vCPU thread dead and the VM hung.
                let run = std::panic::AssertUnwindSafe(move || self.run());
                if let Err(panic) = std::panic::catch_unwind(run) {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    shared.end(ExitReason::HostError {
                        message: format!("vcpu{id} thread panicked: {what}"),
                    });
                }
            })
    }

    fn run(mut self) {
        KVM_RUN.with(|r| r.set(self.fd.get_kvm_run() as *mut kvm_run));
        loop {
            self.shared.park_if_paused();
            if self.shared.exit_reason().is_some() {
                break;
            }
            match self.run_once() {
                Ok(()) => {}
                Err(reason) => {
                    self.shared.end(reason);
                    break;
                }
            }
        }
        KVM_RUN.with(|r| r.set(std::ptr::null_mut()));
    }

    /// One KVM_RUN and the handling of its exit. `Err` ends the VM.
    fn run_once(&mut self) -> Result<(), ExitReason> {
        let id = self.id;
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                self.pio.read(u64::from(port), data);
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                if !self.pio.write(u64::from(port), data) {
                    debug!("vcpu{id}: write to unclaimed port {port:#x}");
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                self.mmio.read(addr, data);
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !self.mmio.write(addr, data) {
                    debug!("vcpu{id}: write to unclaimed MMIO {addr:#x}");
                }
            }
            Ok(VcpuExit::Hlt) => {
                debug!("vcpu{id}: HLT exit");
            }
            Ok(VcpuExit::Shutdown) => return Err(ExitReason::TripleFault { vcpu: id }),
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                return Err(match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff,
                    KVM_SYSTEM_EVENT_RESET => ExitReason::Reboot,
                    KVM_SYSTEM_EVENT_CRASH => ExitReason::HostError {
                        message: format!("vcpu{id}: guest reported a crash"),
                    },
                    other => ExitReason::HostError {
                        message: format!("vcpu{id}: unknown system event {other}"),
                    },
                })
            }
            Ok(VcpuExit::InternalError) => {
                return Err(ExitReason::EmulationFailure {
                    vcpu: id,
                    registers: self.describe_registers(),
                })
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Err(ExitReason::HostError {
                    message: format!(
                        "vcpu{id}: KVM entry failed, reason {reason:#x} on host CPU {cpu}"
                    ),
                })
            }
            Ok(VcpuExit::Intr) => {}
            Ok(VcpuExit::Hyperv) => {
                let what = crate::arch::x86_64::hyperv::handle_exit(self.fd.get_kvm_run());
                debug!("vcpu{id}: Hyper-V exit {what:?}");
            }
            Ok(other) => {
                warn!("vcpu{id}: unexpected exit {other:?}");
                return Err(ExitReason::HostError {
                    message: format!("vcpu{id}: unexpected KVM exit {other:?}"),
                });
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
            }
            Err(e) => {
                error!("vcpu{id}: KVM_RUN failed: {e}");
                return Err(ExitReason::HostError {
                    message: format!("vcpu{id}: KVM_RUN failed: {e}"),
                });
            }
        }
        Ok(())
    }

    /// The registers at an emulation failure, for the log and the API.
    fn describe_registers(&self) -> String {
        let mut out = String::new();
        match self.fd.get_regs() {
            Ok(r) => out.push_str(&format!(
                "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}",
                r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi
            )),
            Err(e) => out.push_str(&format!("registers unavailable: {e}")),
        }
        if let Ok(s) = self.fd.get_sregs() {
            out.push_str(&format!(
                " cs={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                s.cs.selector, s.cr0, s.cr3, s.cr4, s.efer
            ));
        }
        out
    }
}
