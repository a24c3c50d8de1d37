//! The console's worker thread: the queues and the agent socket in one
//! level-triggered epoll set. Its own loop rather than
//! [`crate::devices::virtio::worker::Worker`]: the socket's interest
//! changes with the state (the listener is watched only while no client
//! is connected, the client for reading only while the guest has the port
//! open and the receive buffer has room, for writing only while bytes wait
//! for it), which a fixed, edge-triggered set cannot express.
//!
//! After any wake-up the worker makes one pass over everything
//! ([`Io::service`]); a stalled side leaves its fd out of the set, so the
//! worker sleeps instead of spinning. It runs under the device threads'
//! hook ([`crate::devices::socket_thread_start`]), which installs a
//! seccomp filter allowing the socket calls.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};

use virtio_queue::Queue;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::control::{Control, Handled};
use super::queues::{self, RX_MAX};
use super::{AgentSocket, CTRL_RX, CTRL_TX, PORT0_TX, PORT1_RX, PORT1_TX};
use crate::devices::virtio::queue::QueueError;
use crate::devices::virtio::VirtioInterrupt;
use crate::devices::GuestMemoryMmap;

const CMD: u64 = 1 << 32;
const LISTENER: u64 = CMD + 1;
const CLIENT: u64 = CMD + 2;

/// What the worker serves while the driver has the device activated.
pub(super) struct Active {
    pub mem: GuestMemoryMmap,
    /// By queue index; None where the driver did not enable one (without
    /// MULTIPORT only port 0's).
    pub queues: Vec<Option<Queue>>,
    pub queue_evts: Vec<EventFd>,
    pub interrupt: Arc<VirtioInterrupt>,
    pub multiport: bool,
}

/// What the device asks of its worker.
pub(super) enum Command {
    /// Serve these queues (DRIVER_OK).
    Activate(Box<Active>),
    /// Let go of the queues and guest memory, then answer (device reset).
    Reset(mpsc::Sender<()>),
    /// End the thread (the device is dropped).
    Exit,
}

/// Everything the worker serves.
pub(super) struct Io {
    pub active: Option<Active>,
    pub ctrl: Control,
    pub socket: AgentSocket,
    /// Client bytes for the guest, and guest bytes for the client.
    pub rx: VecDeque<u8>,
    pub tx: Vec<u8>,
    pub broken: bool,
    /// Counts connections (an fd number may be reused by the next one).
    pub conn: u64,
}

impl Io {
    pub(super) fn new(socket: AgentSocket) -> Io {
        Io {
            active: None,
            ctrl: Control::new(false),
            socket,
            rx: VecDeque::new(),
            tx: Vec::new(),
            broken: false,
            conn: 0,
        }
    }

    fn multiport(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.multiport)
    }

    fn queue_op<T: Default>(
        &mut self,
        q: usize,
        f: impl FnOnce(&GuestMemoryMmap, &mut Queue, &mut Self) -> Result<T, QueueError>,
    ) -> T {
        let Some(a) = &mut self.active else {
            return T::default();
        };
        let Some(mut queue) = a.queues.get_mut(q).and_then(Option::take) else {
            return T::default();
        };
        let mem = a.mem.clone();
        let r = f(&mem, &mut queue, self);
        if let Some(a) = &mut self.active {
            a.queues[q] = Some(queue);
        }
        match r {
            Ok(v) => v,
            Err(e) => {
                log::error!("virtio-console: queue {q}: {e}; the device needs a reset");
                self.broken = true;
                if let Some(a) = &self.active {
                    a.interrupt.set_needs_reset();
                }
                T::default()
            }
        }
    }

    fn signal(&self, q: usize, notify: bool) {
        if let (true, Some(a)) = (notify, &self.active) {
            a.interrupt.signal_queue(q);
        }
    }

    pub(super) fn connect(&mut self, client: UnixStream) {
        if let Err(e) = client.set_nonblocking(true) {
            log::warn!("virtio-console: agent client refused: {e}");
            return;
        }
        log::info!("virtio-console: agent client connected");
        self.socket.client = Some(client);
        self.conn += 1;
        self.ctrl.set_host_open(true);
    }

    pub(super) fn disconnect(&mut self) {
        if self.socket.client.take().is_some() {
            log::info!("virtio-console: agent client left");
            self.tx.clear();
            self.ctrl.set_host_open(false);
        }
    }

    fn accept(&mut self) {
        if self.socket.client.is_some() {
            return;
        }
        match self.socket.listener.accept() {
            Ok((c, _)) => self.connect(c),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => log::warn!("virtio-console: accepting an agent client: {e}"),
        }
    }

    /// Write what waits for the client; a client gone is disconnected.
    fn flush(&mut self) {
        let Some(c) = &mut self.socket.client else {
            return;
        };
        while !self.tx.is_empty() {
            match c.write(&self.tx) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => return self.disconnect(),
            }
        }
    }

    /// Read the client while the guest can take its bytes; false at EOF.
    fn read_client(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        while self.wants_client_input() {
            let Some(c) = &mut self.socket.client else {
                return true;
            };
            let room = (RX_MAX - self.rx.len()).min(buf.len());
            match c.read(&mut buf[..room]) {
                Ok(0) => return false,
                Ok(n) => self.rx.extend(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }

    /// Only while the bytes can go somewhere: a device not activated or
    /// broken, or a port the guest has not opened, leaves them in the
    /// socket (level-triggered: wanting them then would spin).
    fn wants_client_input(&self) -> bool {
        self.socket.client.is_some()
            && self.active.is_some()
            && !self.broken
            && self.ctrl.agent_guest_open()
            && self.rx.len() < RX_MAX
    }

    /// One pass over the queues and the socket.
    pub(super) fn service(&mut self) {
        // What waits for the client goes whatever the device's state.
        self.flush();
        if self.broken || self.active.is_none() {
            return;
        }
        let n = self.queue_op(PORT0_TX, |m, q, _| queues::discard(m, q));
        self.signal(PORT0_TX, n);
        if self.multiport() {
            let mut handled = Vec::new();
            let n = self.queue_op(CTRL_TX, |m, q, io| {
                queues::process_ctrl_tx(m, q, &mut io.ctrl, &mut handled)
            });
            self.signal(CTRL_TX, n);
            if handled.contains(&Handled::AgentGuestOpen(true)) {
                log::info!("virtio-console: the guest opened the agent port");
            }
            // Guest to client, as far as the client takes it.
            loop {
                let pass = self.queue_op(PORT1_TX, |m, q, io| {
                    let out = io.socket.client.is_some().then_some(&mut io.tx);
                    queues::process_port_tx(m, q, out)
                });
                self.signal(PORT1_TX, pass.notify);
                let before = self.tx.len();
                self.flush();
                if !pass.blocked || self.tx.len() == before {
                    break;
                }
            }
            // Client to guest, as far as the guest takes it.
            loop {
                if !self.read_client() {
                    self.disconnect();
                }
                let before = self.rx.len();
                let n = self.queue_op(PORT1_RX, |m, q, io| queues::fill_port_rx(m, q, &mut io.rx));
                self.signal(PORT1_RX, n);
                if self.rx.len() == before || !self.wants_client_input() {
                    break;
                }
            }
            let n = self.queue_op(CTRL_RX, |m, q, io| queues::fill_ctrl_rx(m, q, &mut io.ctrl));
            self.signal(CTRL_RX, n);
        }
    }

    /// The events wanted on the listener and on the client.
    fn interest(&self) -> (EventSet, EventSet) {
        let mut client = EventSet::empty();
        if self.wants_client_input() {
            client |= EventSet::IN;
        }
        if !self.tx.is_empty() {
            client |= EventSet::OUT;
        }
        let listener = if self.socket.client.is_none() {
            EventSet::IN
        } else {
            EventSet::empty()
        };
        (listener, client)
    }
}

/// The worker thread: from the device's creation to its drop, serving
/// the socket always and the queues while activated. `epoll` and `cmd_evt`
/// are made by the caller (the thread's filter has no `epoll_create1` nor
/// `eventfd2`).
pub(super) fn run(
    mut io: Io,
    epoll: Epoll,
    cmd_evt: EventFd,
    cmds: mpsc::Receiver<Command>,
) -> io::Result<()> {
    let ctl = |op, fd: RawFd, set, token| epoll.ctl(op, fd, EpollEvent::new(set, token));
    ctl(
        ControlOperation::Add,
        cmd_evt.as_raw_fd(),
        EventSet::IN,
        CMD,
    )?;
    let lfd = io.socket.listener.as_raw_fd();
    ctl(ControlOperation::Add, lfd, EventSet::empty(), LISTENER)?;
    let mut watched: Option<(RawFd, u64)> = None;
    let mut events = vec![EpollEvent::default(); 16];
    loop {
        let (l, c) = io.interest();
        ctl(ControlOperation::Modify, lfd, l, LISTENER)?;
        let cfd = io.socket.client.as_ref().map(|s| (s.as_raw_fd(), io.conn));
        if watched != cfd {
            if let Some((old, _)) = watched.take() {
                // Closed already, mostly (then epoll dropped it).
                let _ = ctl(ControlOperation::Delete, old, EventSet::empty(), CLIENT);
            }
            if let Some((fd, _)) = cfd {
                ctl(ControlOperation::Add, fd, c, CLIENT)?;
                watched = cfd;
            }
        } else if let Some((fd, _)) = cfd {
            ctl(ControlOperation::Modify, fd, c, CLIENT)?;
        }
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for ev in &events[..n] {
            match ev.data() {
                CMD => {
                    let _ = cmd_evt.read();
                    while let Ok(cmd) = cmds.try_recv() {
                        match cmd {
                            Command::Activate(a) => {
                                for (i, e) in a.queue_evts.iter().enumerate() {
                                    ctl(
                                        ControlOperation::Add,
                                        e.as_raw_fd(),
                                        EventSet::IN,
                                        i as u64,
                                    )?;
                                }
                                io.ctrl = Control::new(io.socket.client.is_some());
                                io.broken = false;
                                io.active = Some(*a);
                            }
                            Command::Reset(done) => {
                                if let Some(a) = io.active.take() {
                                    // Duplicates: closing ours would leave
                                    // the registration behind.
                                    for e in &a.queue_evts {
                                        let _ = ctl(
                                            ControlOperation::Delete,
                                            e.as_raw_fd(),
                                            EventSet::empty(),
                                            0,
                                        );
                                    }
                                }
                                io.ctrl = Control::new(io.socket.client.is_some());
                                let _ = done.send(());
                            }
                            Command::Exit => return Ok(()),
                        }
                    }
                }
                LISTENER => io.accept(),
                CLIENT => {
                    let set = ev.event_set();
                    if set.intersects(EventSet::HANG_UP | EventSet::ERROR)
                        && !(set.contains(EventSet::IN) && io.wants_client_input())
                    {
                        // Gone, and nothing more will be read from it: a
                        // hang-up stays reported, so drop it now.
                        io.disconnect();
                    }
                }
                q => {
                    if let Some(e) = io
                        .active
                        .as_ref()
                        .and_then(|a| a.queue_evts.get(q as usize))
                    {
                        let _ = e.read();
                    }
                }
            }
        }
        io.service();
    }
}
