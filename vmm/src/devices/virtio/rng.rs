//! virtio-rng (virtio 1.2, 5.4): one queue of device-writable buffers that
//! the device fills from the host's `getrandom(2)`.
//!
//! [`process_queue`] fills at most [`MAX_PER_REQUEST`] bytes of each
//! buffer (the spec lets the device write less; the driver asks again),
//! so a guest offering gigabytes costs a bounded amount per request.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_queue::Queue;

use super::chain::Buffers;
use super::queue::{self, QueueError};
use super::worker::{Wake, Worker, WorkerHandler};
use super::{ActivateContext, ActivateError, VirtioDevice, VirtioInterrupt, F_VERSION_1, TYPE_RNG};
use crate::devices::GuestMemoryMmap;

pub const MAX_PER_REQUEST: usize = 64 << 10;
const QUEUE_SIZE: u16 = 64;

/// Fill `buf` from the kernel's CSPRNG.
pub fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`,
        // which is valid, writable memory we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Serve every buffer offered on the queue; returns whether to interrupt.
pub fn process_queue(
    mem: &GuestMemoryMmap,
    q: &mut Queue,
    scratch: &mut Vec<u8>,
) -> Result<bool, QueueError> {
    let drained = queue::drain(mem, q, |q| {
        while let Some(chain) = queue::pop_chain(mem, q)? {
            let bufs = Buffers { mem, chain: &chain };
            let n = (bufs.writable_len() as usize).min(MAX_PER_REQUEST);
            scratch.resize(n, 0);
            let written = match getrandom(&mut scratch[..n]) {
                Ok(()) => bufs.write(0, &scratch[..n]).unwrap_or(0),
                Err(e) => {
                    log::error!("virtio-rng: getrandom failed: {e}");
                    0
                }
            };
            queue::complete(q, chain.head, written as u32)?;
        }
        Ok(true)
    })?;
    Ok(drained.notify)
}

pub struct RngDevice {
    worker: Option<Worker>,
}

impl RngDevice {
    /// Checks once that getrandom works here.
    pub fn new() -> io::Result<Self> {
        getrandom(&mut [0u8; 16])?;
        Ok(RngDevice { worker: None })
    }
}

impl VirtioDevice for RngDevice {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn class_code(&self) -> u32 {
        // "Other" (QEMU's virtio-rng-pci).
        0xff0000
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | super::F_INDIRECT_DESC | super::F_EVENT_IDX
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        let queue = ctx
            .queues
            .get_mut(0)
            .and_then(Option::take)
            .ok_or(ActivateError::MissingQueue(0))?;
        let handler = RngWorker {
            mem: ctx.mem,
            queue,
            interrupt: ctx.interrupt,
            scratch: Vec::new(),
            broken: false,
        };
        self.worker = Some(
            Worker::spawn("virtio-rng-io".into(), ctx.queue_evts, handler)
                .map_err(ActivateError::Thread)?,
        );
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
    }
}

struct RngWorker {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<VirtioInterrupt>,
    scratch: Vec<u8>,
    broken: bool,
}

impl WorkerHandler for RngWorker {
    fn extra_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    fn handle(&mut self, _wake: Wake) {
        if self.broken {
            return;
        }
        match process_queue(&self.mem, &mut self.queue, &mut self.scratch) {
            Ok(true) => self.interrupt.signal_queue(0),
            Ok(false) => {}
            Err(e) => {
                log::error!("virtio-rng: {e}; the device needs a reset");
                self.broken = true;
                self.interrupt.set_needs_reset();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{desc, mem_two_regions, GuestQueue};
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn fills_buffers_with_random_bytes_bounded_per_request() {
        let mem = mem_two_regions();
        let gq = GuestQueue::new(&mem, 0x1000, 8);
        let mut q = gq.queue();
        gq.set_desc(0, desc(0x10000, 256, 2, 0));
        gq.set_desc(1, desc(0x100000, 0x100000, 2, 0));
        gq.push_avail(0);
        gq.push_avail(1);
        let mut scratch = Vec::new();
        assert!(process_queue(&mem, &mut q, &mut scratch).unwrap());
        assert_eq!(gq.used_elem(0), (0, 256));
        assert_eq!(gq.used_elem(1), (1, MAX_PER_REQUEST as u32));
        let mut a = [0u8; 256];
        mem.read_slice(&mut a, GuestAddress(0x10000)).unwrap();
        // 256 random bytes are all zero with probability 2^-2048.
        assert!(a.iter().any(|&b| b != 0));
        let distinct: std::collections::HashSet<u8> = a.iter().copied().collect();
        assert!(
            distinct.len() > 64,
            "looks random: {} distinct",
            distinct.len()
        );
        // Beyond the per-request bound the guest memory is untouched.
        let mut tail = [0u8; 16];
        mem.read_slice(&mut tail, GuestAddress(0x100000 + MAX_PER_REQUEST as u64))
            .unwrap();
        assert_eq!(tail, [0u8; 16]);
    }

    #[test]
    fn hostile_chain_is_a_queue_error() {
        let mem = mem_two_regions();
        let gq = GuestQueue::new(&mem, 0x1000, 8);
        let mut q = gq.queue();
        gq.set_desc(0, desc(0x10000, 16, 3, 0));
        gq.push_avail(0);
        assert!(process_queue(&mem, &mut q, &mut Vec::new()).is_err());
    }
}
