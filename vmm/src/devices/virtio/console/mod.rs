//! virtio-console (virtio 1.2, 5.3) with `VIRTIO_CONSOLE_F_MULTIPORT`: the
//! guest agent channel, as QEMU's `-chardev socket,server=on,wait=off`
//! with `-device virtserialport,name=org.qemu.guest_agent.0`.
//!
//! Two ports: 0, a plain console port the host leaves closed (its output
//! is dropped), and 1, named [`control::AGENT_NAME`], which the stock
//! `qemu-guest-agent` opens. Queues: 0/1 port 0 receive/transmit, 2/3 the
//! control receive/transmit queues, 4/5 port 1 receive/transmit.
//!
//! Port 1 is joined to a unix socket the VMM listens on ([`AgentSocket`]).
//! One client at a time: while one is connected the listener is not
//! watched, so a second client waits in the listen backlog until the first
//! leaves (as with QEMU). The driver hears PORT_OPEN 1 when a client
//! connects and 0 when it leaves; with no client, what the guest writes is
//! dropped. Host-to-guest bytes are bounded ([`queues::RX_MAX`]): a guest
//! that does not read makes the worker stop reading the socket, and the
//! client's writes block in its kernel buffer, never a vCPU.
//!
//! - `control.rs`: the control messages and the ports' state machine.
//! - `queues.rs`: each queue's handling, a plain function.
//! - `worker.rs`: the worker thread (queues and socket in one epoll set).

pub mod control;
pub mod queues;
mod worker;

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;
use std::thread::JoinHandle;

use vmm_sys_util::epoll::Epoll;
use vmm_sys_util::eventfd::EventFd;

use super::{
    read_config_bytes, ActivateContext, ActivateError, VirtioDevice, F_EVENT_IDX, F_INDIRECT_DESC,
    F_VERSION_1, TYPE_CONSOLE,
};
use control::NR_PORTS;

/// `VIRTIO_CONSOLE_F_MULTIPORT`.
pub const F_MULTIPORT: u64 = 1 << 1;

pub const PORT0_RX: usize = 0;
pub const PORT0_TX: usize = 1;
pub const CTRL_RX: usize = 2;
pub const CTRL_TX: usize = 3;
pub const PORT1_RX: usize = 4;
pub const PORT1_TX: usize = 5;
const NUM_QUEUES: usize = 6;
const QUEUE_SIZE: u16 = 128;

/// The host side of the agent port: the listening socket and the client
/// connected to it, kept across device resets (a client stays connected
/// while the guest resets its driver).
pub struct AgentSocket {
    pub listener: UnixListener,
    pub client: Option<UnixStream>,
}

/// The worker thread and how to reach it.
struct Running {
    cmds: mpsc::Sender<worker::Command>,
    cmd_evt: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Send `cmd` and wake the worker; false if it is gone.
    fn send(&self, cmd: worker::Command) -> bool {
        self.cmds.send(cmd).is_ok() && self.cmd_evt.write(1).is_ok()
    }
}

/// The device. Its worker thread starts with it, not at activation: the
/// socket is served (a client may connect) before the guest's driver
/// comes, and the thread gets its own seccomp filter from a thread that
/// has none yet (a thread started by a vCPU would inherit the vCPU's, which
/// forbids accepting connections).
pub struct ConsoleDevice {
    worker: Running,
}

impl ConsoleDevice {
    /// `listener`: the agent socket, already bound.
    pub fn new(listener: UnixListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let socket = AgentSocket {
            listener,
            client: None,
        };
        let epoll = Epoll::new()?;
        let cmd_evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        let worker_evt = cmd_evt.try_clone()?;
        let (cmds, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("virtio-console".into())
            .spawn(move || {
                if let Err(e) = crate::devices::socket_thread_start() {
                    log::error!("virtio-console worker: {e}");
                    return;
                }
                if let Err(e) = worker::run(worker::Io::new(socket), epoll, worker_evt, rx) {
                    log::error!("virtio-console worker: epoll failed: {e}");
                }
            })?;
        Ok(ConsoleDevice {
            worker: Running {
                cmds,
                cmd_evt,
                thread: Some(thread),
            },
        })
    }
}

impl VirtioDevice for ConsoleDevice {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }

    fn class_code(&self) -> u32 {
        // Simple communication controller, other (QEMU's virtio-serial-pci).
        0x078000
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; NUM_QUEUES]
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_INDIRECT_DESC | F_EVENT_IDX | F_MULTIPORT
    }

    /// cols, rows (unused without F_SIZE), max_nr_ports, emerg_wr.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut cfg = [0u8; 12];
        cfg[4..8].copy_from_slice(&NR_PORTS.to_le_bytes());
        read_config_bytes(&cfg, offset, data);
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        let multiport = ctx.acked_features & F_MULTIPORT != 0;
        let needed: &[usize] = if multiport {
            &[PORT0_RX, PORT0_TX, CTRL_RX, CTRL_TX, PORT1_RX, PORT1_TX]
        } else {
            &[PORT0_RX, PORT0_TX]
        };
        for &q in needed {
            if ctx.queues.get(q).is_none_or(Option::is_none) {
                return Err(ActivateError::MissingQueue(q));
            }
        }
        ctx.queues.resize_with(NUM_QUEUES, || None);
        let active = worker::Active {
            mem: ctx.mem,
            queues: ctx.queues,
            queue_evts: ctx.queue_evts,
            interrupt: ctx.interrupt,
            multiport,
        };
        if !self
            .worker
            .send(worker::Command::Activate(Box::new(active)))
        {
            return Err(ActivateError::Backend(io::Error::other(
                "the virtio-console worker has ended",
            )));
        }
        Ok(())
    }

    fn reset(&mut self) {
        let (done, wait) = mpsc::channel();
        if self.worker.send(worker::Command::Reset(done)) {
            // The worker answers once it holds no queue nor guest memory;
            // an error means it ended (and holds nothing either).
            let _ = wait.recv();
        }
    }
}

impl Drop for ConsoleDevice {
    fn drop(&mut self) {
        self.worker.send(worker::Command::Exit);
        if let Some(t) = self.worker.thread.take() {
            if t.join().is_err() {
                log::error!("virtio-console worker thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests;
