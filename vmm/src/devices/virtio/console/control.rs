//! The control queues of a multiport virtio-console (virtio 1.2, 5.3.6.2):
//! the message format and the ports' state machine.
//!
//! [`Control`] is a plain state machine: the worker feeds it the driver's
//! messages ([`Control::handle`]) and the host side's connects and
//! disconnects ([`Control::set_host_open`]); it queues the messages the
//! device owes the driver, which the worker copies into the control
//! receive queue. The queue is bounded ([`MAX_PENDING`]): a driver that
//! floods PORT_READY without ever reading the answers cannot make the
//! device grow it without limit.

use std::collections::VecDeque;

/// `struct virtio_console_control`: id (le32), event (le16), value (le16).
pub const HEADER_LEN: usize = 8;

pub const DEVICE_READY: u16 = 0;
pub const DEVICE_ADD: u16 = 1;
pub const DEVICE_REMOVE: u16 = 2;
pub const PORT_READY: u16 = 3;
pub const CONSOLE_PORT: u16 = 4;
pub const RESIZE: u16 = 5;
pub const PORT_OPEN: u16 = 6;
pub const PORT_NAME: u16 = 7;

/// The ports: 0, a plain console port (left closed on the host side), and
/// 1, the guest agent's named port.
pub const NR_PORTS: u32 = 2;
pub const CONSOLE: u32 = 0;
pub const AGENT: u32 = 1;
/// The name QEMU gives the guest agent's port; `qemu-ga` opens
/// `/dev/virtio-ports/org.qemu.guest_agent.0` (on Windows, the
/// virtio-serial driver's port of that name).
pub const AGENT_NAME: &str = "org.qemu.guest_agent.0";

/// Messages owed to the driver beyond which more are dropped.
pub const MAX_PENDING: usize = 64;

/// One control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlMsg {
    pub id: u32,
    pub event: u16,
    pub value: u16,
}

impl ControlMsg {
    /// The message at the start of `buf` (extra bytes ignored), or None if
    /// `buf` is shorter than a header.
    pub fn parse(buf: &[u8]) -> Option<ControlMsg> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(ControlMsg {
            id: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
            event: u16::from_le_bytes([h[4], h[5]]),
            value: u16::from_le_bytes([h[6], h[7]]),
        })
    }

    /// The message as the driver reads it, followed by `data`.
    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + data.len());
        v.extend_from_slice(&self.id.to_le_bytes());
        v.extend_from_slice(&self.event.to_le_bytes());
        v.extend_from_slice(&self.value.to_le_bytes());
        v.extend_from_slice(data);
        v
    }
}

/// What the device knows of one port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortState {
    /// The driver reported the port ready (PORT_READY 1).
    pub ready: bool,
    /// The guest has the port open (its PORT_OPEN).
    pub guest_open: bool,
}

/// What a driver message did, for the worker and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Understood; the answers (if any) are queued.
    Ok,
    /// The guest opened or closed the agent port.
    AgentGuestOpen(bool),
    /// Ignored: a port that does not exist, an event a driver does not
    /// send, or a repeat that changes nothing.
    Ignored,
}

/// The device side of the control queues.
#[derive(Debug, Default)]
pub struct Control {
    device_ready: bool,
    ports: [PortState; NR_PORTS as usize],
    /// A client is connected to the agent socket.
    host_open: bool,
    pending: VecDeque<Vec<u8>>,
    /// Messages dropped because [`MAX_PENDING`] were waiting.
    pub dropped: u64,
}

impl Control {
    pub fn new(host_open: bool) -> Control {
        Control {
            host_open,
            ..Control::default()
        }
    }

    pub fn port(&self, id: u32) -> Option<PortState> {
        self.ports.get(id as usize).copied()
    }

    /// The guest has the agent port open and the driver knows it exists.
    pub fn agent_guest_open(&self) -> bool {
        let p = self.ports[AGENT as usize];
        p.ready && p.guest_open
    }

    pub fn host_open(&self) -> bool {
        self.host_open
    }

    fn send(&mut self, id: u32, event: u16, value: u16, data: &[u8]) {
        if self.pending.len() >= MAX_PENDING {
            self.dropped += 1;
            return;
        }
        self.pending
            .push_back(ControlMsg { id, event, value }.encode(data));
    }

    /// Handle one message from the driver (the control transmit queue).
    pub fn handle(&mut self, msg: ControlMsg) -> Handled {
        match msg.event {
            DEVICE_READY => {
                if msg.value == 0 {
                    log::warn!("virtio-console: the driver failed to set the device up");
                    return Handled::Ok;
                }
                if self.device_ready {
                    return Handled::Ignored;
                }
                self.device_ready = true;
                for id in 0..NR_PORTS {
                    self.send(id, DEVICE_ADD, 1, &[]);
                }
                Handled::Ok
            }
            PORT_READY => {
                let Some(port) = self.ports.get_mut(msg.id as usize) else {
                    return Handled::Ignored;
                };
                if msg.value == 0 {
                    log::warn!("virtio-console: the driver failed to add port {}", msg.id);
                    *port = PortState::default();
                    return Handled::Ok;
                }
                if !self.device_ready || port.ready {
                    return Handled::Ignored;
                }
                port.ready = true;
                if msg.id == CONSOLE {
                    self.send(CONSOLE, CONSOLE_PORT, 1, &[]);
                } else {
                    // The name NUL-terminated, as QEMU sends it.
                    let mut name = AGENT_NAME.as_bytes().to_vec();
                    name.push(0);
                    self.send(AGENT, PORT_NAME, 1, &name);
                    if self.host_open {
                        self.send(AGENT, PORT_OPEN, 1, &[]);
                    }
                }
                Handled::Ok
            }
            PORT_OPEN => {
                let Some(port) = self.ports.get_mut(msg.id as usize) else {
                    return Handled::Ignored;
                };
                if !port.ready {
                    return Handled::Ignored;
                }
                port.guest_open = msg.value != 0;
                if msg.id == AGENT {
                    Handled::AgentGuestOpen(port.guest_open)
                } else {
                    Handled::Ok
                }
            }
            // Device-to-driver events, or unknown: a driver does not send
            // them.
            _ => Handled::Ignored,
        }
    }

    /// A client connected to (true) or left (false) the agent socket: the
    /// driver hears PORT_OPEN once the port is ready.
    pub fn set_host_open(&mut self, open: bool) {
        if self.host_open == open {
            return;
        }
        self.host_open = open;
        if self.ports[AGENT as usize].ready {
            self.send(AGENT, PORT_OPEN, u16::from(open), &[]);
        }
    }

    /// The next message owed to the driver.
    pub fn front(&self) -> Option<&[u8]> {
        self.pending.front().map(Vec::as_slice)
    }

    pub fn pop(&mut self) {
        self.pending.pop_front();
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}
