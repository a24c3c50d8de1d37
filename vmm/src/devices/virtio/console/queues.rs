//! The console's queue handling, plain functions of (memory, queue,
//! state) tested without a thread: the control queues through
//! [`Control`], a port's data queues through bounded byte buffers.
//!
//! Every chain is walked with the checks of [`crate::devices::virtio::chain`];
//! a malformed one is a [`QueueError`] (the device then needs a reset),
//! never a panic. Bytes are bounded both ways: a transmit chain gives at
//! most [`CHAIN_MAX`] bytes (the rest is dropped, with a warning), and the
//! worker takes chains only while its buffer toward the client holds less
//! than [`TX_MAX`]; the receive side is fed from a buffer the worker keeps
//! under [`RX_MAX`].

use std::collections::VecDeque;

use virtio_queue::Queue;

use super::control::{Control, ControlMsg, Handled, HEADER_LEN};
use crate::devices::virtio::chain::Buffers;
use crate::devices::virtio::queue::{self, QueueError};
use crate::devices::GuestMemoryMmap;

/// Bytes from the client waiting for the guest's receive buffers, beyond
/// which the worker stops reading the socket.
pub const RX_MAX: usize = 64 << 10;
/// Bytes from the guest waiting for the client to read them, beyond which
/// the worker stops taking transmit chains.
pub const TX_MAX: usize = 64 << 10;
/// Bytes taken from one transmit chain (Linux sends at most a page or so).
pub const CHAIN_MAX: usize = 64 << 10;

/// Serve the control transmit queue (driver to device): each message goes
/// to `ctrl`; what it did is pushed on `handled`. Returns whether to
/// interrupt.
pub fn process_ctrl_tx(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    ctrl: &mut Control,
    handled: &mut Vec<Handled>,
) -> Result<bool, QueueError> {
    let drained = queue::drain(mem, q, |b| {
        while let Some(chain) = queue::pop_chain(mem, b)? {
            let bufs = Buffers { mem, chain: &chain };
            let mut raw = [0u8; HEADER_LEN];
            let n = bufs.read(0, &mut raw).unwrap_or(0);
            match ControlMsg::parse(&raw[..n]) {
                Some(msg) => handled.push(ctrl.handle(msg)),
                None => {
                    log::warn!("virtio-console: a control message of {n} bytes, ignored");
                    handled.push(Handled::Ignored);
                }
            }
            queue::complete(b, chain.head, 0)?;
        }
        Ok(true)
    })?;
    Ok(drained.notify)
}

/// Copy the messages `ctrl` owes the driver into the control receive
/// queue, one a buffer. A buffer too small for its message takes none (it
/// is returned empty, and the message dropped). Returns whether to
/// interrupt.
pub fn fill_ctrl_rx(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    ctrl: &mut Control,
) -> Result<bool, QueueError> {
    if ctrl.front().is_none() {
        return Ok(false);
    }
    let drained = queue::drain(mem, q, |b| {
        while let Some(msg) = ctrl.front() {
            let Some(chain) = queue::pop_chain(mem, b)? else {
                return Ok(true);
            };
            let bufs = Buffers { mem, chain: &chain };
            let len = if bufs.writable_len() >= msg.len() as u64 {
                bufs.write(0, msg).unwrap_or(0)
            } else {
                log::warn!(
                    "virtio-console: a control buffer of {} bytes is too small for {}",
                    bufs.writable_len(),
                    msg.len()
                );
                0
            };
            ctrl.pop();
            queue::complete(b, chain.head, len as u32)?;
        }
        // Buffers may be left: more messages will come.
        Ok(false)
    })?;
    Ok(drained.notify)
}

/// What a pass over a transmit queue did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxPass {
    pub notify: bool,
    /// Chains are left because `out` reached [`TX_MAX`].
    pub blocked: bool,
    /// Bytes the guest wrote that nobody received.
    pub dropped: u64,
}

/// Serve a port's transmit queue (guest to host): each chain's bytes are
/// appended to `out` (None: nobody listens, the bytes are dropped, as QEMU
/// drops them with no client). With `out`, chains are taken only while it
/// holds less than [`TX_MAX`].
pub fn process_port_tx(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    mut out: Option<&mut Vec<u8>>,
) -> Result<TxPass, QueueError> {
    let mut pass = TxPass::default();
    let drained = queue::drain(mem, q, |b| loop {
        if out.as_ref().is_some_and(|o| o.len() >= TX_MAX) {
            pass.blocked = true;
            return Ok(false);
        }
        let Some(chain) = queue::pop_chain(mem, b)? else {
            return Ok(true);
        };
        let bufs = Buffers { mem, chain: &chain };
        let total = bufs.readable_len();
        let take = total.min(CHAIN_MAX as u64) as usize;
        if (take as u64) < total {
            log::warn!("virtio-console: a transmit chain of {total} bytes, {take} taken");
        }
        pass.dropped += total - take as u64;
        match out.as_deref_mut() {
            Some(o) => {
                let at = o.len();
                o.resize(at + take, 0);
                let n = bufs.read(0, &mut o[at..]).unwrap_or(0);
                o.truncate(at + n);
            }
            None => pass.dropped += take as u64,
        }
        queue::complete(b, chain.head, 0)?;
    })?;
    pass.notify = drained.notify;
    Ok(pass)
}

/// Fill a port's receive queue (host to guest) from `data`, as many
/// buffers as it takes or the queue has. Returns whether to interrupt.
pub fn fill_port_rx(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    data: &mut VecDeque<u8>,
) -> Result<bool, QueueError> {
    if data.is_empty() {
        return Ok(false);
    }
    let drained = queue::drain(mem, q, |b| {
        while !data.is_empty() {
            let Some(chain) = queue::pop_chain(mem, b)? else {
                return Ok(true);
            };
            let bufs = Buffers { mem, chain: &chain };
            let room = bufs.writable_len().min(data.len() as u64) as usize;
            let n = bufs.write(0, &data.make_contiguous()[..room]).unwrap_or(0);
            data.drain(..n);
            queue::complete(b, chain.head, n as u32)?;
        }
        Ok(false)
    })?;
    Ok(drained.notify)
}

/// Return every transmit chain of a port nobody serves (the console port)
/// unread. Returns whether to interrupt.
pub fn discard(mem: &GuestMemoryMmap, q: &mut Queue) -> Result<bool, QueueError> {
    Ok(process_port_tx(mem, q, None)?.notify)
}
