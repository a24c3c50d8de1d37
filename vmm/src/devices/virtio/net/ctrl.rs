//! The control queue (virtio 1.2, 5.1.6.5): each chain is a command, a
//! class and command byte followed by its data (device-readable), and one
//! device-writable `ack` byte the device sets to [`CTRL_OK`] or
//! [`CTRL_ERR`]. Only `VIRTIO_NET_CTRL_MQ` / `VQ_PAIRS_SET` is offered;
//! every other command, a short or long header, or a pair count outside
//! `1..=max_virtqueue_pairs` is answered [`CTRL_ERR`]. A chain without a
//! writable byte cannot be answered: it is returned unanswered (length 0).
//! Ring errors (bad chains) are queue errors, as on every queue.

use virtio_queue::Queue;

use crate::devices::virtio::chain::Buffers;
use crate::devices::virtio::queue::{self, QueueError};
use crate::devices::GuestMemoryMmap;

pub const CTRL_OK: u8 = 0;
pub const CTRL_ERR: u8 = 1;

const CLASS_MQ: u8 = 4;
const MQ_VQ_PAIRS_SET: u8 = 0;
/// Bytes of a command we look at; longer ones are refused unread.
const MAX_COMMAND: usize = 16;

/// One parsed control command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtrlCommand {
    /// `VQ_PAIRS_SET` with a count the device accepts.
    SetPairs(u16),
    /// Anything to answer with [`CTRL_ERR`], and why.
    Refused(&'static str),
}

/// Parse a command's readable bytes (`bytes`, at most the first
/// [`MAX_COMMAND`] + 1; `total` is the chain's readable length).
pub fn parse_ctrl(bytes: &[u8], total: u64, mq_acked: bool, max_pairs: u16) -> CtrlCommand {
    let [class, cmd, data @ ..] = bytes else {
        return CtrlCommand::Refused("command shorter than its class/command header");
    };
    match (*class, *cmd) {
        (CLASS_MQ, MQ_VQ_PAIRS_SET) => {
            if !mq_acked {
                return CtrlCommand::Refused("VQ_PAIRS_SET without VIRTIO_NET_F_MQ");
            }
            if total != 4 || data.len() != 2 {
                return CtrlCommand::Refused("VQ_PAIRS_SET data is not one le16");
            }
            let n = u16::from_le_bytes([data[0], data[1]]);
            if n == 0 || n > max_pairs {
                return CtrlCommand::Refused("VQ_PAIRS_SET count out of range");
            }
            CtrlCommand::SetPairs(n)
        }
        (CLASS_MQ, _) => CtrlCommand::Refused("unknown MQ command"),
        _ => CtrlCommand::Refused("unsupported command class"),
    }
}

/// Serve every command queued. `set_pairs(n)` applies an accepted pair
/// count and says whether it worked. Returns whether to interrupt.
pub fn process_ctrl(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    mq_acked: bool,
    max_pairs: u16,
    set_pairs: &mut dyn FnMut(u16) -> bool,
) -> Result<bool, QueueError> {
    let drained = queue::drain(mem, q, |q| {
        while let Some(chain) = queue::pop_chain(mem, q)? {
            let bufs = Buffers { mem, chain: &chain };
            if bufs.writable_len() == 0 {
                log::warn!("virtio-net: control command without an ack byte; not answered");
                queue::complete(q, chain.head, 0)?;
                continue;
            }
            let total = bufs.readable_len();
            let mut cmd = [0u8; MAX_COMMAND + 1];
            let want = total.min(cmd.len() as u64) as usize;
            let ack = match bufs.read(0, &mut cmd[..want]) {
                Err(e) => {
                    log::warn!("virtio-net: reading a control command: {e}");
                    CTRL_ERR
                }
                Ok(n) => match parse_ctrl(&cmd[..n], total, mq_acked, max_pairs) {
                    CtrlCommand::SetPairs(p) if set_pairs(p) => CTRL_OK,
                    CtrlCommand::SetPairs(p) => {
                        log::warn!("virtio-net: switching to {p} queue pairs failed");
                        CTRL_ERR
                    }
                    CtrlCommand::Refused(why) => {
                        log::debug!("virtio-net: control command refused: {why}");
                        CTRL_ERR
                    }
                },
            };
            // The ack is the last writable byte.
            let at = bufs.writable_len() - 1;
            let n = bufs.write(at, &[ack]).unwrap_or(0);
            queue::complete(q, chain.head, n as u32)?;
        }
        Ok(true)
    })?;
    Ok(drained.notify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_set_and_refuses_the_rest() {
        let p = |b: &[u8]| parse_ctrl(b, b.len() as u64, true, 4);
        assert_eq!(p(&[4, 0, 3, 0]), CtrlCommand::SetPairs(3));
        assert_eq!(p(&[4, 0, 4, 0]), CtrlCommand::SetPairs(4));
        for bad in [
            &[][..],
            &[4],
            &[4, 0],
            &[4, 0, 5, 0],
            &[4, 0, 0, 0],
            &[4, 0, 0xff, 0xff],
            &[4, 0, 1, 0, 0],
            &[4, 1, 1, 0],
            &[0, 0, 1],
            &[1, 1, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(matches!(p(bad), CtrlCommand::Refused(_)), "{bad:?}");
        }
        assert!(matches!(
            parse_ctrl(&[4, 0, 1, 0], 4, false, 4),
            CtrlCommand::Refused(_)
        ));
        // A long command (only the start read) is refused by its length.
        assert!(matches!(
            parse_ctrl(&[4, 0, 1, 0], 1 << 30, true, 4),
            CtrlCommand::Refused(_)
        ));
    }
}
