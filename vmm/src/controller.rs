//! The control loop: one thread (the main one) runs an `event-manager`
//! loop over the control API socket, the console socket and its clients,
//! stdin, and the eventfd that says the guest has ended.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use event_manager::{EventOps, Events, MutEventSubscriber};
use kiln_api::control::{ExitReason, LinkState, NetInfo, ScreenInfo, VmInfo, VmState};
use log::{debug, info, warn};
use vmm_sys_util::epoll::EventSet;

use crate::control::{self, ActError, Command, ControlTarget};
use crate::vcpu::RunState;
use crate::vm::Vm;

const EXIT: u32 = 0;
const API: u32 = 1;
const CONSOLE: u32 = 2;
const STDIN: u32 = 3;
const CLIENT: u32 = 4;
const SIGNAL: u32 = 5;

/// Signals that end the VM cleanly (sockets removed, exit status 13).
const TERMINATING: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Block the terminating signals in this thread (and so in every thread it
/// starts afterwards) and return a signalfd that reports them.
pub fn terminating_signals_fd() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: sigset_t is plain data, initialised by sigemptyset below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for these calls; results are
    // checked where they can fail.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in TERMINATING {
            libc::sigaddset(&mut set, sig);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: `set` is valid; the returned descriptor is checked.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Ctrl-A, then `x`, on an interactive stdin console ends the VM.
const ESCAPE: u8 = 0x01;

/// How the control loop ended.
#[derive(Debug)]
pub enum Outcome {
    /// The VM ended; exit with this reason.
    Ended(ExitReason),
    /// Restart the VMM in place (same pid, same config).
    Restart,
}

pub struct Controller {
    vm: Vm,
    api: Option<(UnixListener, PathBuf)>,
    console: Option<(UnixListener, PathBuf)>,
    stdin: bool,
    escape_pending: bool,
    pending_input: VecDeque<u8>,
    outcome: Option<Outcome>,
    signals: Option<std::os::fd::OwnedFd>,
    /// The pointing devices, and where the API's pointer last was.
    pointer: (crate::pointer::Pointer, crate::pointer::VncPointer),
}

/// Bind a unix socket, replacing a stale socket file (not any other file).
pub fn bind(path: &str) -> std::io::Result<(UnixListener, PathBuf)> {
    use std::os::unix::fs::FileTypeExt;
    let path = PathBuf::from(path);
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(&path)?;
        }
    }
    let listener = UnixListener::bind(&path)?;
    listener.set_nonblocking(true)?;
    Ok((listener, path))
}

impl Controller {
    pub fn new(
        vm: Vm,
        api: Option<(UnixListener, PathBuf)>,
        console: Option<(UnixListener, PathBuf)>,
    ) -> Self {
        let stdin = vm.config.serial.stdio;
        let pointer = crate::pointer::Pointer::new(
            &vm.devices.platform.keyboard,
            vm.devices.virtio.tablet.clone(),
        );
        Controller {
            vm,
            api,
            console,
            stdin,
            escape_pending: false,
            pending_input: VecDeque::new(),
            outcome: None,
            signals: None,
            pointer: (pointer, Default::default()),
        }
    }

    /// End the VM (as killed) when one of the signals `fd` reports arrives.
    pub fn watch_signals(&mut self, fd: std::os::fd::OwnedFd) {
        self.signals = Some(fd);
    }

    fn read_signal(&mut self) {
        let Some(fd) = &self.signals else { return };
        let mut info = [0u8; 128];
        // SAFETY: reads at most 128 bytes (one signalfd_siginfo) into `info`.
        let n = unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) };
        if n == info.len() as isize {
            let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
            info!("signal {signo}: ending the VM");
            self.vm.shared.end(ExitReason::Killed);
        }
    }

    pub fn outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    pub fn has_pending_input(&self) -> bool {
        !self.pending_input.is_empty()
    }

    /// Socket files to remove when the VMM exits.
    pub fn socket_paths(&self) -> Vec<PathBuf> {
        [&self.api, &self.console]
            .into_iter()
            .flatten()
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Offer queued console input to the UART (it takes what fits).
    pub fn flush_input(&mut self) {
        if self.pending_input.is_empty() {
            return;
        }
        let (a, b) = self.pending_input.as_slices();
        let data = [a, b].concat();
        let taken = self
            .vm
            .devices
            .platform
            .serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enqueue_input(&data);
        self.pending_input.drain(..taken);
    }

    fn queue_input(&mut self, data: &[u8]) {
        // Bound what we hold for a guest that does not read its console.
        let room = (64 * 1024usize).saturating_sub(self.pending_input.len());
        self.pending_input.extend(data.iter().take(room));
        self.flush_input();
    }

    fn read_stdin(&mut self) {
        let mut buf = [0u8; 256];
        let n = match std::io::stdin().lock().read(&mut buf) {
            Ok(n) => n,
            Err(_) => return,
        };
        let mut input = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if self.escape_pending {
                self.escape_pending = false;
                match b {
                    b'x' => {
                        info!("console escape: ending the VM");
                        self.vm.shared.end(ExitReason::Killed);
                        return;
                    }
                    ESCAPE => input.push(ESCAPE),
                    other => input.extend([ESCAPE, other]),
                }
            } else if b == ESCAPE && crate::terminal::is_raw() {
                self.escape_pending = true;
            } else {
                input.push(b);
            }
        }
        self.queue_input(&input);
    }

    fn accept_console(&mut self, ops: &mut EventOps) {
        let Some((listener, _)) = &self.console else {
            return;
        };
        while let Ok((stream, _)) = listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = stream.as_raw_fd();
            if ops
                .add(Events::with_data_raw(
                    fd,
                    CLIENT,
                    EventSet::IN | EventSet::HANG_UP,
                ))
                .is_ok()
            {
                self.vm
                    .console_clients
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(stream);
            }
        }
    }

    fn read_client(&mut self, fd: RawFd, ops: &mut EventOps) {
        let mut buf = [0u8; 256];
        let mut clients = self
            .vm
            .console_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(pos) = clients.iter().position(|c| c.as_raw_fd() == fd) else {
            let _ = ops.remove(Events::empty_raw(fd));
            return;
        };
        match clients[pos].read(&mut buf) {
            Ok(0) => {
                let _ = ops.remove(Events::empty_raw(fd));
                clients.remove(pos);
            }
            Ok(n) => {
                drop(clients);
                self.queue_input(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                let _ = ops.remove(Events::empty_raw(fd));
                clients.remove(pos);
            }
        }
    }

    fn serve_api(&mut self) {
        loop {
            let stream = match &self.api {
                Some((listener, _)) => match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => return,
                },
                None => return,
            };
            match control::serve_connection(stream, self) {
                Some(Command::Kill) => self.vm.shared.end(ExitReason::Killed),
                Some(Command::Reset) => self.outcome = Some(Outcome::Restart),
                _ => {}
            }
        }
    }
}

impl Controller {
    /// Each NIC's MAC and link, in configuration order.
    pub fn nets(&self) -> Vec<NetInfo> {
        self.vm
            .devices
            .virtio
            .nets
            .iter()
            .enumerate()
            .map(|(index, l)| NetInfo {
                index,
                mac: l.mac().to_string(),
                link: if l.is_up() {
                    LinkState::Up
                } else {
                    LinkState::Down
                },
            })
            .collect()
    }
}

impl Controller {
    fn display(&self) -> Result<&crate::device_manager::display::Display, ActError> {
        self.vm.devices.display.as_ref().ok_or_else(|| {
            ActError::NotFound("this VM has no display (start it with --display vga)".into())
        })
    }
}

impl ControlTarget for Controller {
    fn info(&self) -> VmInfo {
        let exit_reason = self.vm.shared.exit_reason();
        let state = match (&exit_reason, self.vm.shared.run_state()) {
            (Some(_), _) => VmState::Shutdown,
            (None, RunState::Paused) => VmState::Paused,
            (None, RunState::Running) => VmState::Running,
        };
        VmInfo {
            state,
            pid: std::process::id(),
            config: self.vm.config.clone(),
            boot_progress: self
                .vm
                .devices
                .platform
                .boot_progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            exit_reason,
            nets: self.nets(),
        }
    }

    fn screenshot(&self) -> Result<Vec<u8>, ActError> {
        let display = self.display()?;
        let t = std::time::Instant::now();
        let frame = crate::screen::capture(&display.vga);
        let png = crate::screen::png(&frame)
            .map_err(|e| ActError::Internal(format!("encoding the screenshot: {e}")))?;
        debug!(
            "screenshot: {}x{}, {} bytes of PNG in {} µs",
            frame.width,
            frame.height,
            png.len(),
            t.elapsed().as_micros()
        );
        Ok(png)
    }

    fn screen(&self) -> Result<ScreenInfo, ActError> {
        Ok(crate::screen::info(&self.display()?.vga))
    }

    fn act(&mut self, cmd: Command) -> Result<(), ActError> {
        if self.vm.shared.exit_reason().is_some() {
            return Err("the VM has already ended".into());
        }
        let state = self.vm.shared.run_state();
        match cmd {
            Command::Info | Command::Screenshot | Command::Screen => {}
            Command::Pause if state == RunState::Paused => {
                return Err("the VM is already paused".into())
            }
            Command::Pause => {
                self.vm.shared.pause(&self.vm.threads);
                info!("paused");
            }
            Command::Resume if state != RunState::Paused => {
                return Err("the VM is not paused".into())
            }
            Command::Resume => {
                self.vm.shared.resume();
                info!("resumed");
            }
            Command::PowerButton if state == RunState::Paused => {
                return Err("the VM is paused; resume it first".into())
            }
            Command::PowerButton => {
                info!("ACPI power button pressed");
                self.vm
                    .devices
                    .platform
                    .pm
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .press_power_button();
            }
            Command::NetLink { index, link } => {
                let nic = self.vm.devices.virtio.nets.get(index).ok_or_else(|| {
                    ActError::NotFound(format!(
                        "no NIC {index}; the VM has {}",
                        self.vm.devices.virtio.nets.len()
                    ))
                })?;
                if nic.set_up(link.is_up()) {
                    info!("NIC {index}: link {}", link.as_str());
                }
            }
            Command::Keys(_) if state == RunState::Paused => {
                return Err("the VM is paused; resume it first".into())
            }
            Command::Keys(keys) => self
                .vm
                .devices
                .platform
                .keyboard
                .type_request(&keys)
                .map_err(ActError::BadRequest)?,
            Command::Pointer(_) if state == RunState::Paused => {
                return Err("the VM is paused; resume it first".into())
            }
            Command::Pointer(p) => {
                // The tablet's scale; without a display there is no tablet.
                let size = self.display().map_or((1, 1), |d| {
                    let s = crate::screen::info(&d.vga);
                    (s.width as usize, s.height as usize)
                });
                let (pointer, last) = &mut self.pointer;
                last.event(pointer, p.x, p.y, p.buttons, size);
            }
            Command::Reset | Command::Kill => {}
        }
        Ok(())
    }
}

impl MutEventSubscriber for Controller {
    fn init(&mut self, ops: &mut EventOps) {
        let mut add = |fd: RawFd, data: u32| {
            if let Err(e) = ops.add(Events::with_data_raw(fd, data, EventSet::IN)) {
                warn!("cannot watch fd {fd}: {e}");
            }
        };
        add(self.vm.shared.exit_evt.as_raw_fd(), EXIT);
        if let Some((l, _)) = &self.api {
            add(l.as_raw_fd(), API);
        }
        if let Some((l, _)) = &self.console {
            add(l.as_raw_fd(), CONSOLE);
        }
        if let Some(fd) = &self.signals {
            add(fd.as_raw_fd(), SIGNAL);
        }
        if self.stdin {
            // A file or /dev/null as stdin cannot be polled: then there is
            // simply no console input from stdin.
            if ops
                .add(Events::with_data_raw(
                    libc::STDIN_FILENO,
                    STDIN,
                    EventSet::IN,
                ))
                .is_err()
            {
                info!("stdin cannot be polled; console input only through the console socket");
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            EXIT => {
                let _ = self.vm.shared.exit_evt.read();
                if let Some(reason) = self.vm.shared.exit_reason() {
                    self.outcome = Some(Outcome::Ended(reason));
                }
            }
            API => self.serve_api(),
            CONSOLE => self.accept_console(ops),
            STDIN => {
                if events.event_set().contains(EventSet::HANG_UP) {
                    let _ = ops.remove(Events::empty_raw(libc::STDIN_FILENO));
                } else {
                    self.read_stdin();
                }
            }
            CLIENT => self.read_client(events.fd(), ops),
            SIGNAL => self.read_signal(),
            _ => {}
        }
    }
}
